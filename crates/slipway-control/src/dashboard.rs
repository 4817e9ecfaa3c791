//! The web dashboard on the admin listener, and the admin token that guards changes made
//! through that listener.
//!
//! Any local user can reach a TCP port, so requests without a token get only the read-only
//! API (`api::read_only_router`) and the dashboard's static files, as before. At each start
//! the server writes a fresh random token to `<data_dir>/admin.token`. The file has mode
//! 0600, so only the owner of the data dir can read it. The server then prints the dashboard
//! URL with the token in the fragment (`http://127.0.0.1:8081/#token=…`). Browsers never send
//! a fragment to a server and never put it in a `Referer`, so the token stays out of logs.
//! The page keeps the token in `sessionStorage`. A request that carries
//! `Authorization: Bearer <token>` reaches the full API, which is the same one the CLI uses
//! on the Unix socket.
//!
//! The dashboard is three files embedded in the binary (`dashboard/index.html`, `app.js`,
//! `style.css`). It needs no network and no build step.

use std::fmt;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use axum::extract::{Request, State};
use axum::handler::Handler;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any_service, get};
use axum::{Json, Router};

use crate::api::{self, ApiState};
use crate::dto;

/// The dashboard page.
const INDEX_HTML: &str = include_str!("dashboard/index.html");
/// The page's script: polling, charts, events, logs and rollback.
const APP_JS: &str = include_str!("dashboard/app.js");
/// The page's styles.
const STYLE_CSS: &str = include_str!("dashboard/style.css");

/// The token's length in random bytes. It is written as 64 hex characters.
const TOKEN_BYTES: usize = 32;

/// Where the server writes the admin token inside a data dir.
pub fn token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("admin.token")
}

/// Sets up everything the admin listener needs. It makes a fresh admin token, writes it to
/// `<data_dir>/admin.token` (mode 0600), and returns the listener's router together with
/// the dashboard URL to print, which carries the token in its fragment.
///
/// # Errors
/// No randomness available, or the token file cannot be written. Each error names the
/// file and says what to do.
pub fn admin_app(
    state: ApiState,
    data_dir: &Path,
    admin: SocketAddr,
) -> anyhow::Result<(Router, String)> {
    let token = AdminToken::generate()?;
    let path = token_path(data_dir);
    token.write_to(&path).with_context(|| {
        format!(
            "cannot write the admin token to {}\n  hint: check that the data directory is writable by this user, or pass another --data-dir",
            path.display()
        )
    })?;
    let url = dashboard_url(admin, &token);
    Ok((admin_router(state, token, path), url))
}

/// The dashboard's address with the token in the fragment. A wildcard listen address
/// becomes loopback, because a browser cannot open `0.0.0.0`.
pub fn dashboard_url(admin: SocketAddr, token: &AdminToken) -> String {
    let ip = match admin.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!(
        "http://{}/#token={}",
        SocketAddr::new(ip, admin.port()),
        token.as_str()
    )
}

/// The router of the admin listener. It serves the dashboard and the read-only API to
/// everyone, and the full API to requests that carry the admin token.
pub fn admin_router(state: ApiState, token: AdminToken, token_path: PathBuf) -> Router {
    let full = api::router(state.clone()).merge(assets());
    let path = token_path.clone();
    let connection_path = token_path.clone();
    let public = api::read_only_router(state)
        .merge(assets())
        // The reads that only the full API serves (secret names and versions, a database's
        // password): without the token they get the 401 that changes get, not the 404 of an
        // unknown path.
        .route(
            "/v1/apps/{app}/secrets",
            get(move |method: Method, uri: axum::http::Uri| async move {
                unauthorized(needs_token(&method, uri.path(), "lists secrets", &path))
            }),
        )
        .route(
            "/v1/apps/{app}/databases/{name}/connection",
            get(move |method: Method, uri: axum::http::Uri| async move {
                unauthorized(needs_token(
                    &method,
                    uri.path(),
                    "shows a database's password",
                    &connection_path,
                ))
            }),
        );
    Gate::new(token, token_path, full, public).into_router()
}

/// The error of a request that needs the admin token and came without one.
/// `what` says what the request does (`changes state`).
fn needs_token(method: &Method, path: &str, what: &str, token_path: &Path) -> String {
    format!(
        "{method} {path} {what}, and on the admin listener that needs the admin token\n  hint: send `Authorization: Bearer <token>` with the token from {} (only the data directory's owner can read it), open the dashboard URL the server printed at start (it ends in #token=…), or use the slipway CLI, which talks to the Unix socket",
        token_path.display()
    )
}

/// A 401 answer with a JSON error and the `WWW-Authenticate` header.
fn unauthorized(error: String) -> Response {
    let mut response = (StatusCode::UNAUTHORIZED, Json(dto::ApiError { error })).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"slipway admin\""),
    );
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

// === impl AdminToken ===

/// A secret that lets whoever holds it change state over the admin listener. It is made
/// fresh at every server start and never logged: `Debug` prints it redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken {
    hex: String,
}

impl AdminToken {
    /// Makes a token from 32 bytes of `/dev/urandom`.
    ///
    /// # Errors
    /// `/dev/urandom` cannot be read, which happens only in a broken chroot or sandbox.
    pub fn generate() -> anyhow::Result<AdminToken> {
        let mut bytes = [0u8; TOKEN_BYTES];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut bytes))
            .context(
                "cannot read random bytes from /dev/urandom for the admin token\n  hint: run the server where /dev/urandom exists (not in a bare chroot)",
            )?;
        Ok(AdminToken::from_bytes(bytes))
    }

    /// The token for these bytes, as lowercase hex. For example, `[0xab, 0x01, …]` becomes
    /// `"ab01…"`.
    pub fn from_bytes(bytes: [u8; TOKEN_BYTES]) -> AdminToken {
        let hex = bytes.iter().map(|b| format!("{b:02x}")).collect();
        AdminToken { hex }
    }

    /// The token as it goes in `Authorization: Bearer …` and in the dashboard URL.
    pub fn as_str(&self) -> &str {
        &self.hex
    }

    /// Whether `presented` is this token. The comparison takes the same time wherever the
    /// first wrong character is, so timing does not reveal a correct prefix.
    pub fn matches(&self, presented: &str) -> bool {
        constant_time_eq(self.hex.as_bytes(), presented.as_bytes())
    }

    /// Writes the token and a newline to `path` with mode 0600, replacing any older file in
    /// one step. The token goes to a temporary file next to `path`, which is then renamed,
    /// so a reader never sees half a token and the file is never readable by others, even
    /// for a moment.
    pub fn write_to(&self, path: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = path.with_extension("token.tmp");
        // A temporary file left by a crash may have any mode; start from nothing.
        let _ = std::fs::remove_file(&tmp);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(format!("{}\n", self.hex).as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    }
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

/// Compares every byte even after a difference, so the time taken does not depend on
/// where the first difference is. The length is not secret, because every token has 64
/// characters.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| std::hint::black_box(acc | (x ^ y)));
    diff == 0
}

// === impl Gate ===

/// What a request may do on the admin listener, judged from its `Authorization` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// There is no `Authorization` header. The request may read but not change state.
    Anonymous,
    /// The request carries the admin token and may use the full API.
    Admin,
    /// The request carries a token that is not this server's. Maybe it is from before a
    /// restart, or it was mistyped.
    WrongToken,
}

/// Judges a request's `Authorization` header against the token. The header must be
/// `Bearer <token>`; the scheme name is case-insensitive (RFC 7235).
fn access(headers: &HeaderMap, token: &AdminToken) -> Access {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Access::Anonymous;
    };
    let presented = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    match presented {
        Some(t) if token.matches(t) => Access::Admin,
        _ => Access::WrongToken,
    }
}

/// Sends each request to the full API or to the public one, according to its token.
#[derive(Clone)]
struct Gate {
    token: AdminToken,
    token_path: PathBuf,
    // The two routers are wrapped as method routers, because axum can call those directly
    // (through `Handler`) without the tower traits.
    full: MethodRouter,
    public: MethodRouter,
}

impl Gate {
    /// `full` answers requests that carry `token`. `public` answers the reads of everyone
    /// else. `token_path` is named in the error a request without the token gets.
    fn new(token: AdminToken, token_path: PathBuf, full: Router, public: Router) -> Gate {
        Gate {
            token,
            token_path,
            full: any_service(full),
            public: any_service(public),
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

    /// Answers one request. An admin request goes to the full API. An anonymous GET or
    /// HEAD goes to the public router. Anything else gets 401 with a JSON error that says
    /// how to get the token.
    async fn dispatch(&self, req: Request) -> Response {
        match access(req.headers(), &self.token) {
            Access::Admin => self.full.clone().call(req, ()).await,
            Access::Anonymous if matches!(*req.method(), Method::GET | Method::HEAD) => {
                self.public.clone().call(req, ()).await
            }
            Access::Anonymous => unauthorized(needs_token(
                req.method(),
                req.uri().path(),
                "changes state",
                &self.token_path,
            )),
            Access::WrongToken => unauthorized(format!(
                "the bearer token is not this server's admin token (the server makes a new one at every start)\n  hint: read the current one from {}, or open the dashboard URL the server printed at its last start",
                self.token_path.display()
            )),
        }
    }
}

#[cfg(test)]
mod tests;
