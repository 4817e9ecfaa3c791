//! The admin listener: the web dashboard's static files, a liveness endpoint, and the gate
//! that lets API calls through only with a token of the right role (see [`crate::access`]).
//!
//! Any local user, and whoever the listen address lets in, can reach a TCP port, so every
//! `/v1` call and `/metrics` needs `Authorization: Bearer <token>`; only `/healthz` and the
//! page's three files are open. Tokens are made with `slipway token create` over the Unix
//! socket (the local administrator's) and kept hashed in the store; no token value is
//! written to the data directory. The page asks for a token and keeps it in the tab's
//! `sessionStorage`.
//!
//! A refused attempt is logged with the peer's address and the reason, never the value,
//! and an address with too many of them in a minute gets 429 for the rest of it.
//!
//! The dashboard is three files embedded in the binary (`dashboard/index.html`, `app.js`,
//! `style.css`). It needs no network and no build step.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::extract::{ConnectInfo, Request, State};
use axum::handler::Handler;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any_service, get};
use axum::{Json, Router};
use slipway_state::{Store, TokenRow};

use crate::access::limiter::Limiter;
use crate::access::token::{self, TokenValue};
use crate::access::{self, Caller, Class, Role};
use crate::api::{self, ApiState};
use crate::dto;

/// The dashboard page.
const INDEX_HTML: &str = include_str!("dashboard/index.html");
/// The page's script: sign-in, polling, charts, events, logs and rollback.
const APP_JS: &str = include_str!("dashboard/app.js");
/// The page's styles.
const STYLE_CSS: &str = include_str!("dashboard/style.css");

/// Failed attempts an address may make per [`FAILURE_WINDOW`] before it gets 429. Generous
/// enough for a person or a test suite mistyping, far too few for guessing 256 bits.
const MAX_FAILURES: u32 = 100;
const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// How many addresses the limiter remembers at most.
const LIMITER_CAPACITY: usize = 4096;
/// How stale a token's `last used` may get before a use is written to the store: a page
/// polling every second must not cost a write each time.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// Where servers before tokens wrote the admin token in plain text; removed at start.
const LEGACY_TOKEN_FILE: &str = "admin.token";

/// Sets up the admin listener: removes the plain-text token file an older server left in
/// the data directory, and returns the listener's router with the dashboard's URL to print.
///
/// # Errors
/// The old token file exists and cannot be removed.
pub fn admin_app(
    state: ApiState,
    data_dir: &Path,
    admin: SocketAddr,
) -> anyhow::Result<(Router, String)> {
    let legacy = data_dir.join(LEGACY_TOKEN_FILE);
    match std::fs::remove_file(&legacy) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| {
                format!(
                    "cannot remove {}, the admin token an older slipway wrote in plain text\n  hint: remove it by hand; access is now granted with `slipway token create`",
                    legacy.display()
                )
            });
        }
        _ => {}
    }
    Ok((admin_router(state), dashboard_url(admin)))
}

/// The dashboard's address. A wildcard listen address becomes loopback, because a browser
/// cannot open `0.0.0.0`.
pub fn dashboard_url(admin: SocketAddr) -> String {
    let ip = match admin.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}/", SocketAddr::new(ip, admin.port()))
}

/// The router of the admin listener: the API behind the gate, the page and `/healthz`.
/// Serve it with `into_make_service_with_connect_info::<SocketAddr>()`, so that refused
/// attempts are counted per address.
pub fn admin_router(state: ApiState) -> Router {
    let store = state.controller.shared_store();
    let full = api::router(state)
        .merge(assets())
        .route("/healthz", get(healthz));
    Gate::new(store, full).into_router()
}

/// The liveness endpoint: the server answers.
async fn healthz() -> &'static str {
    "ok\n"
}

/// The error answer of a refused call, with the header each status wants.
fn refusal(status: StatusCode, error: String) -> Response {
    let mut response = (status, Json(dto::ApiError { error })).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"slipway\""),
        );
    }
    response
}

/// The dashboard's static files: `/` and `/dashboard/{app.js,style.css}`.
pub fn assets() -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/dashboard/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/dashboard/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
}

/// One embedded file, with headers that keep the page from loading anything foreign,
/// from being framed, and from leaking its URL in a `Referer`.
fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

// === impl Gate ===

/// Why a request's token was not accepted (401).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    /// No `Authorization` header.
    Missing,
    /// A header that is no bearer token, or a token that is not one of this server's.
    Invalid,
    Revoked {
        name: String,
    },
    Expired {
        name: String,
        at: String,
    },
}

impl Failure {
    /// For the server's log: never the value.
    fn reason(&self) -> String {
        match self {
            Failure::Missing => "no token".into(),
            Failure::Invalid => "a token that is not valid".into(),
            Failure::Revoked { name } => format!("revoked token {name}"),
            Failure::Expired { name, .. } => format!("expired token {name}"),
        }
    }

    /// For the client.
    fn message(&self, method: &Method, path: &str) -> String {
        const HINT: &str = "  hint: send `Authorization: Bearer <token>` with a token made on the server by its data directory's owner (`slipway token create NAME --role viewer|deployer|admin`), or use the slipway CLI there, which talks to the Unix socket";
        match self {
            Failure::Missing => {
                format!("{method} {path} needs a token on the admin listener\n{HINT}")
            }
            Failure::Invalid => format!(
                "the bearer token is not valid on this server (mistyped, cut short, or never made here)\n{HINT}"
            ),
            Failure::Revoked { name } => format!("token {name} was revoked\n{HINT}"),
            Failure::Expired { name, at } => format!("token {name} expired at {at}\n{HINT}"),
        }
    }
}

/// Judges each request on the admin listener and passes the ones it accepts on, with their
/// [`Caller`], to the full API.
struct Gate {
    store: Arc<Store>,
    // Wrapped as a method router, because axum can call that directly (through `Handler`)
    // without the tower traits.
    full: MethodRouter,
    limiter: Limiter,
}

impl Gate {
    fn new(store: Arc<Store>, full: Router) -> Gate {
        Gate {
            store,
            full: any_service(full),
            limiter: Limiter::new(MAX_FAILURES, FAILURE_WINDOW, LIMITER_CAPACITY),
        }
    }

    /// A router that sends every request through this gate.
    fn into_router(self) -> Router {
        Router::new()
            .fallback(|State(gate): State<Arc<Gate>>, req: Request| async move {
                gate.dispatch(req).await
            })
            .with_state(Arc::new(self))
    }

    /// Answers one request: open routes at once; others need a valid token (401) whose
    /// role and environments allow the call (403).
    async fn dispatch(&self, mut req: Request) -> Response {
        let class = access::classify(req.method(), req.uri().path(), req.uri().query());
        if class == Class::Open {
            return self.full.clone().call(req, ()).await;
        }
        let peer = req
            .extensions()
            .get::<ConnectInfo<Peer>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |c| c.0.0.ip());
        let now = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        if let Some(wait) = self.limiter.blocked(peer, now) {
            let secs = wait.as_secs().max(1);
            let mut response = refusal(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "too many refused tokens from {peer} in the last minute; try again in {secs} s"
                ),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
            return response;
        }
        let (row, role) = match self.authenticate(req.headers()) {
            Ok(found) => found,
            Err(failure) => {
                if failure != Failure::Missing {
                    self.limiter.fail(peer, now);
                }
                tracing::warn!(%peer, %method, %path, reason = %failure.reason(), "refused a call on the admin listener");
                return refusal(StatusCode::UNAUTHORIZED, failure.message(&method, &path));
            }
        };
        if let Err(access::Denied(why)) = access::authorize(role, &row.environments, &class) {
            tracing::warn!(%peer, %method, %path, token = %row.name, reason = %why, "refused a call on the admin listener");
            return refusal(
                StatusCode::FORBIDDEN,
                format!(
                    "{method} {path} is not allowed with token {}: {why}\n  hint: ask the server's administrator for a token with the role and environments this needs (`slipway token create`)",
                    row.name
                ),
            );
        }
        self.touch(&row);
        req.extensions_mut().insert(Caller::Token {
            name: row.name,
            role,
            environments: row.environments,
        });
        self.full.clone().call(req, ()).await
    }

    /// The token a request's `Authorization: Bearer …` header carries (the scheme name is
    /// case-insensitive, RFC 7235), if it is one of this server's, valid now.
    fn authenticate(&self, headers: &HeaderMap) -> Result<(TokenRow, Role), Failure> {
        let value = headers.get(header::AUTHORIZATION).ok_or(Failure::Missing)?;
        let presented = value
            .to_str()
            .ok()
            .and_then(|v| v.trim().split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, t)| t.trim())
            .ok_or(Failure::Invalid)?;
        let id = TokenValue::id_of(presented).ok_or(Failure::Invalid)?;
        let row = match self.store.token(id) {
            Ok(Some(row)) => row,
            Ok(None) => return Err(Failure::Invalid),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the tokens from the store");
                return Err(Failure::Invalid);
            }
        };
        if !token::matches(presented, &row.hash) {
            return Err(Failure::Invalid);
        }
        if row.revoked_at.is_some() {
            return Err(Failure::Revoked { name: row.name });
        }
        if let Some(at) = &row.expires_at
            && expired(at, jiff::Timestamp::now())
        {
            return Err(Failure::Expired {
                name: row.name.clone(),
                at: at.clone(),
            });
        }
        let role = Role::parse(&row.role).map_err(|e| {
            tracing::error!(token = %row.name, error = %e, "a stored token has an unknown role");
            Failure::Invalid
        })?;
        Ok((row, role))
    }

    /// Records that the token was used, at most once per [`TOUCH_EVERY`].
    fn touch(&self, row: &TokenRow) {
        let now = jiff::Timestamp::now();
        let stale = row.last_used_at.as_deref().is_none_or(|at| {
            at.parse::<jiff::Timestamp>().map_or(true, |at| {
                now.duration_since(at)
                    >= jiff::SignedDuration::try_from(TOUCH_EVERY).unwrap_or_default()
            })
        });
        if stale && let Err(e) = self.store.touch_token(&row.id, &format!("{now:.3}")) {
            tracing::warn!(token = %row.name, error = %e, "cannot record a token's use");
        }
    }
}

/// Whether a token that expires at `at` (RFC 3339) has expired at `now`. A stored time
/// that does not parse counts as expired.
fn expired(at: &str, now: jiff::Timestamp) -> bool {
    at.parse::<jiff::Timestamp>().map_or(true, |at| now >= at)
}

/// The address of the peer of an admin connection, plain or over TLS: the gate limits refused
/// tokens per address. Serve the admin app with `into_make_service_with_connect_info::<Peer>()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub SocketAddr);

impl
    axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, tokio::net::TcpListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::TcpListener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

impl
    axum::extract::connect_info::Connected<
        axum::serve::IncomingStream<'_, crate::tls::AdminTlsListener>,
    > for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, crate::tls::AdminTlsListener>) -> Peer {
        Peer(*stream.remote_addr())
    }
}

#[cfg(test)]
mod tests;
