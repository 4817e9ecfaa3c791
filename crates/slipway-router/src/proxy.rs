//! The router itself: accepts client connections (HTTP/1.1 keep-alive and h2c prior
//! knowledge on one listener), finds the target in the published route table, gets a backend
//! slot (see `admit.rs`, which may hold the request in its revision's queue), rewrites headers
//! and forwards the request over a pooled HTTP/1.1 upstream connection, and streams the
//! response back. Upgrades (WebSocket and friends) become raw byte tunnels. Each request that
//! reaches a revision's pool is measured in that revision's stats.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::poll_fn;
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::task::Poll;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{
    CONNECTION, COOKIE, EXPECT, HOST, SET_COOKIE, TE, TRAILER, TRANSFER_ENCODING, UPGRADE,
};
use http::{
    Extensions, HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode, Uri, Version,
};
use hyper::body::{Body, Incoming};
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::admit::{Admitted, Outcome};
use crate::backend::{Backend, InFlight, Upstream};
use crate::body::{self, Guarded, Lease, Refused, ResponseBody, UpstreamBody};
use crate::conn::{Connections, Rewind, Signal};
use crate::error::{ProxyError, error_response};
use crate::table::{REVISION_HEADER, Route, RouteTable, normalize_host};
use crate::timer::{HyperTimer, Timers};
use crate::{h1, h2};

/// How long `serve` waits for open requests after shutdown was requested.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Hyper's default read buffer limit (`8192 + 4096 * 100` bytes).
const HYPER_MAX_BUF: usize = 8192 + 4096 * 100;

/// An idempotent body-less request sent on a reused connection is replayed on a fresh
/// connection if the old one dies before answering. That covers a backend's keep-alive
/// timeout closing an idle connection under our feet, and an instance that was killed a
/// moment ago (its pooled connections are reset; the fresh connect is refused and the
/// request fails over to another instance).
const REPLAY_AFTER_IDLE: Duration = Duration::ZERO;

/// Where ACME HTTP-01 challenges are fetched (RFC 8555, section 8.3).
pub(crate) const ACME_CHALLENGE_PATH: &str = "/.well-known/acme-challenge/";

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
const PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Tunables of the data plane.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    /// How long a backend may take to send response headers before the client gets a 504.
    pub upstream_timeout: Duration,
    /// How long connecting to a backend may take before the next backend is tried.
    pub connect_timeout: Duration,
    /// Idle keep-alive connections kept per backend.
    pub max_idle_per_backend: usize,
    /// Whether requests are recorded in their revision's [`crate::RevisionStats`]. Turning it
    /// off skips the clock reads and counters entirely (to measure their overhead).
    pub metrics: bool,
    /// How long a request may wait in its revision's queue for a backend (all at their
    /// concurrency limit, or none ready yet) before it gets a 503 `queue-timeout`.
    pub queue_timeout: Duration,
    /// How many requests may wait in one revision's queue; one more gets a 503 `queue-full`.
    pub queue_limit: usize,
    /// Whether plain HTTP/1.1 requests take the router's own forwarding path (see `h1.rs`)
    /// instead of hyper's. Off, every connection is served by hyper (to compare the two).
    pub h1_fast_path: bool,
    /// The longest HTTP/1 request head (request line and header fields) taken, in bytes; a
    /// longer one is answered 431 and the connection closed. At least 1 KiB.
    pub max_head_bytes: usize,
    /// The most header fields an HTTP/1 request may have; more are answered 431.
    pub max_headers: usize,
    /// How long a client may take to send a request head, counted from the connection's
    /// start or the end of the previous answer (so it also bounds an idle keep-alive
    /// connection). A client that sent part of a head by then gets a 408; an idle one, or one
    /// that sent part of the HTTP/2 preface, is disconnected. An HTTP/2 connection that
    /// moves no bytes for a whole period of this length is closed if it has no stream open or
    /// a write to it is waiting (see `h2.rs`).
    pub head_timeout: Duration,
    /// The longest pause allowed while a client sends a request body; after it, the client
    /// gets a 408 (if the answer has not started) and the connection is closed.
    pub body_timeout: Duration,
    /// The port of the router's HTTPS listener, if it has one: where plain requests of a
    /// target with [`crate::Target::redirect_https`] are sent (no port in the URL for 443).
    pub https_port: Option<u16>,
}

/// The smallest [`RouterConfig::max_head_bytes`]: room for a request line and a few headers.
pub const MIN_HEAD_BYTES: usize = 1024;

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            upstream_timeout: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(2),
            max_idle_per_backend: 64,
            metrics: true,
            queue_timeout: Duration::from_secs(30),
            queue_limit: 1000,
            h1_fast_path: true,
            max_head_bytes: 64 * 1024,
            max_headers: 100,
            head_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(30),
            https_port: None,
        }
    }
}

/// The control plane's hook to start an instance of a revision that has none ready while
/// requests wait for one: called with the app, the service and the revision.
///
/// It is called on the request path, once per wait episode of a revision (an episode ends
/// when a held request gets an instance, or when no request is held any more), so it must
/// return quickly and never block: hand the work to a task.
pub type Activator = Arc<dyn Fn(&str, &str, u64) + Send + Sync>;

/// The HTTP reverse proxy. Build one with [`Router::new`], [`Router::publish`] a route table
/// (again whenever routes change) and run [`Router::serve`] on a listener.
pub struct Router {
    pub(crate) config: RouterConfig,
    pub(crate) table: ArcSwap<RouteTable>,
    pub(crate) ids: RequestIds,
    /// ACME HTTP-01 challenges being validated: token -> key authorization.
    http_challenges: ArcSwap<HashMap<String, String>>,
    /// Read only when a revision has no ready backend.
    activator: RwLock<Option<Activator>>,
    /// Open client connections, all `serve` calls together.
    client_connections: Arc<AtomicUsize>,
}

/// One client connection, as its requests see it.
pub(crate) struct Client {
    /// The client's IP address, for `X-Forwarded-For`.
    pub(crate) addr: HeaderValue,
    /// The recycled upstream timeouts of the `serve` call that accepted the connection.
    timers: Arc<Timers>,
    /// Whether the client connected over TLS (`X-Forwarded-Proto: https`).
    https: bool,
}

/// The outcome of one attempt to send a request to one backend, when it failed.
// The request travels by value on the rare failover path; boxing it would cost an allocation.
#[allow(clippy::large_enum_variant)]
enum Failure {
    /// Nothing was sent; the request is handed back so another backend can take it.
    Unreachable(Request<UpstreamBody>, io::Error),
    /// The request was (possibly partly) sent and the backend failed to answer.
    Failed(hyper::Error),
}

impl Router {
    /// A router with an empty route table.
    pub fn new(config: RouterConfig) -> Arc<Router> {
        Arc::new(Router {
            config,
            table: ArcSwap::from_pointee(RouteTable::new()),
            ids: RequestIds::new(),
            http_challenges: ArcSwap::from_pointee(HashMap::new()),
            activator: RwLock::new(None),
            client_connections: Arc::default(),
        })
    }

    /// How many client connections are open, on every listener this router serves.
    pub fn client_connections(&self) -> usize {
        self.client_connections.load(Ordering::Relaxed)
    }

    /// The configuration this router was built with.
    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

    /// Atomically replaces the route table. Requests already running keep their backend;
    /// requests waiting in a revision's queue look at the new table at once (it may give
    /// their revision a ready backend, or route them elsewhere).
    pub fn publish(&self, table: RouteTable) {
        let table = Arc::new(table);
        let old = self.table.swap(table.clone());
        for pool in old.pools().chain(table.pools()) {
            pool.stats.queue().wake_head();
        }
    }

    /// Replaces the ACME HTTP-01 challenges the plain listener answers (token -> key
    /// authorization) at `/.well-known/acme-challenge/<token>`, for any host.
    pub fn publish_http_challenges(&self, challenges: HashMap<String, String>) {
        self.http_challenges.store(Arc::new(challenges));
    }

    /// The answer the router gives itself, before routing, to a request for `host` and
    /// `target` (path and query) on the plain listener (`https` false) or the TLS one: the
    /// key authorization of a pending ACME HTTP-01 challenge, or the redirect of a target
    /// that asks for HTTPS. `None` for every other request.
    pub(crate) fn own_answer(
        &self,
        table: &RouteTable,
        host: &str,
        target: &str,
        https: bool,
    ) -> Option<ProxyError> {
        if https {
            return None;
        }
        if let Some(token) = target.strip_prefix(ACME_CHALLENGE_PATH) {
            // Challenge paths are never redirected: a validator may not follow to HTTPS
            // before the host has a certificate.
            let key_authorization = self.http_challenges.load().get(token).cloned()?;
            return Some(ProxyError::AcmeChallenge { key_authorization });
        }
        if !table.redirects() {
            return None;
        }
        let port = self.config.https_port?;
        let path = target.split_once('?').map_or(target, |(path, _)| path);
        let route = table.route(host, path)?;
        if !route.target.redirect_https {
            return None;
        }
        let target = if target.starts_with('/') { target } else { "/" };
        let location = if port == 443 {
            format!("https://{host}{target}")
        } else {
            format!("https://{host}:{port}{target}")
        };
        let location = HeaderValue::from_str(&location).ok()?;
        Some(ProxyError::RedirectHttps { location })
    }

    /// Installs the hook that starts an instance of a revision without a ready one (scale
    /// from zero), replacing any earlier one. From then on, a request for such a revision
    /// waits in the revision's queue (up to [`RouterConfig::queue_timeout`]) for a backend to
    /// become ready, instead of getting a 503 at once. Held requests are released the moment
    /// a backend of the revision is marked ready with [`Backend::set_ready`] or a table giving
    /// the revision a ready backend is published.
    pub fn set_activator(&self, activator: Activator) {
        *self
            .activator
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(activator);
    }

    /// The activation hook, if one is installed.
    pub(crate) fn activator(&self) -> Option<Activator> {
        self.activator
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The route table currently in use.
    pub fn table(&self) -> Arc<RouteTable> {
        self.table.load_full()
    }

    /// Serves clients accepted on `listener` until `shutdown` completes, then stops accepting,
    /// lets open requests finish (for at most 10 seconds) and returns. Upgraded tunnels are
    /// not waited for; they keep running and stay counted in their backend's `in_flight`.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        self.accept_loop(listener, None, shutdown).await
    }

    /// Serves HTTPS clients accepted on `listener` with `tls` (see [`crate::tls`]) until
    /// `shutdown` completes, like [`Router::serve`] does plain ones: HTTP/2 when the client
    /// chose it over ALPN, else HTTP/1.1 (hyper's path; the fast path reads plain sockets).
    /// A handshake must finish within the head timeout.
    pub async fn serve_tls(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Arc<rustls::ServerConfig>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        self.accept_loop(listener, Some(acceptor), shutdown).await
    }

    /// The accept loop of [`Router::serve`] (`tls` is `None`) and [`Router::serve_tls`].
    async fn accept_loop(
        self: Arc<Self>,
        listener: TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        // The sleeps of this call's connections are recycled (see `timer.rs`): hyper's and
        // the upstream timeouts' apart, so that each set only ever moves its sleeps to later
        // deadlines, which is the cheap case.
        let hyper_timer = HyperTimer(Arc::new(Timers::default()));
        let upstream_timers = Arc::new(Timers::default());
        let protocols = Arc::new(Protocols::new(&self.config, hyper_timer));
        let head_timeout = self.config.head_timeout;
        let connections = Arc::new(Connections::counted_in(self.client_connections.clone()));
        let mut shutdown = pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                biased;
                () = &mut shutdown => break,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        tracing::warn!(error = %err, "accepting a client connection failed");
                        // Out of file descriptors or memory: back off instead of spinning.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            // Small writes (headers, SSE events) must not wait for Nagle's algorithm.
            let _ = stream.set_nodelay(true);
            let client = Arc::new(Client {
                addr: HeaderValue::from_str(&peer.ip().to_canonical().to_string())
                    .unwrap_or_else(|_| HeaderValue::from_static("unknown")),
                timers: upstream_timers.clone(),
                https: tls.is_some(),
            });
            let router = self.clone();
            let protocols = protocols.clone();
            let tls = tls.clone();
            let guard = connections.open();
            // A task's future is as large as its largest state. The TLS handshake, the TLS
            // stream and hyper's connection state (several KiB) are boxed apart, so that the
            // common plain HTTP/1.1 connection holds a task of ~2 KiB instead of ~8.5 KiB.
            tokio::spawn(async move {
                let result = if let Some(acceptor) = tls {
                    Box::pin(async move {
                        let handshake = acceptor.accept(stream);
                        let tls = match tokio::time::timeout(head_timeout, handshake).await {
                            Ok(Ok(tls)) => tls,
                            Ok(Err(err)) => {
                                tracing::debug!(%peer, error = %err, "TLS handshake failed");
                                return Ok(());
                            }
                            Err(_) => return Ok(()),
                        };
                        let alpn = tls.get_ref().1.alpn_protocol();
                        if alpn == Some(crate::tls::ACME_TLS_ALPN) {
                            // A TLS-ALPN-01 validation: the handshake was all it wanted.
                            let mut tls = tls;
                            let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
                            return Ok(());
                        }
                        let is_h2 = alpn == Some(b"h2");
                        let io = TokioIo::new(tls);
                        protocols
                            .serve(router, client, io, is_h2, &guard.signal)
                            .await
                    })
                    .await
                } else {
                    let handoff = if router.config.h1_fast_path {
                        h1::serve(&router, stream, &client, &guard.signal).await
                    } else {
                        // Without the fast path, hyper reads from the first byte; the fast
                        // path's wait for the first request head also bounds a client that
                        // sends nothing, or only part of the HTTP/2 preface.
                        let mut stream = stream;
                        let mut buf = bytes::BytesMut::with_capacity(1024);
                        let sniffed =
                            tokio::time::timeout(head_timeout, h1::sniff(&mut stream, &mut buf));
                        let Ok(Some(h2)) = sniffed.await else {
                            return;
                        };
                        h1::Handoff::Hyper { stream, buf, h2 }
                    };
                    let h1::Handoff::Hyper {
                        stream,
                        buf,
                        h2: is_h2,
                    } = handoff
                    else {
                        return;
                    };
                    let io = TokioIo::new(Rewind::new(buf.freeze(), stream));
                    Box::pin(protocols.serve(router, client, io, is_h2, &guard.signal)).await
                };
                if let Err(err) = result {
                    tracing::debug!(%peer, error = %err, "client connection ended with an error");
                }
            });
        }
        drop(listener);
        connections.close_all();
        if tokio::time::timeout(SHUTDOWN_GRACE, connections.wait_closed())
            .await
            .is_err()
        {
            tracing::warn!(
                "client connections still open {}s after shutdown; returning anyway",
                SHUTDOWN_GRACE.as_secs()
            );
        }
        Ok(())
    }

    /// Answers one client request: proxies it, or explains why not. Every response carries
    /// the request id that was sent upstream.
    async fn handle(&self, mut req: Request<Incoming>, client: &Client) -> Response<ResponseBody> {
        let request_id = match req.headers().get(X_REQUEST_ID) {
            Some(id) => id.clone(),
            None => {
                let id = self.ids.next();
                req.headers_mut().insert(X_REQUEST_ID, id.clone());
                id
            }
        };
        let mut outcome = Outcome::default();
        let mut response = match self.proxy(req, client, &mut outcome).await {
            Ok(mut response) => {
                if let Some(cookie) = outcome.set_cookie.take() {
                    response.headers_mut().append(SET_COOKIE, cookie);
                }
                response
            }
            Err(err) => error_response(&err),
        };
        if let Some(measure) = outcome.measure {
            // Answers with nothing left to stream (the router's own 502/503/504, a 101 for an
            // upgrade, a 204) are recorded now; proxied bodies when they end.
            let status = response.status();
            response.body_mut().measure(measure, status);
        }
        response.headers_mut().insert(X_REQUEST_ID, request_id);
        response
    }

    /// Routes and forwards one request. Once a revision's pool is chosen, `outcome` holds the
    /// request's measurement (if metrics are on) and sticky cookie for the caller.
    async fn proxy(
        &self,
        mut req: Request<Incoming>,
        client: &Client,
        outcome: &mut Outcome,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let table = self.table.load_full();

        // HTTP/2 (and HTTP/1.1 absolute-form) requests name the host in the URI; the
        // others in the Host header.
        let (host_value, host_from_uri) = match req.uri().authority() {
            Some(authority) => {
                let host = authority.as_str().rsplit('@').next().unwrap_or_default();
                (HeaderValue::from_str(host).ok(), true)
            }
            None => (req.headers().get(HOST).cloned(), false),
        };
        if req.version() == Version::HTTP_11 {
            // RFC 9112, section 3.2: exactly one Host header, even with a host in the URI.
            let mut hosts = req.headers().get_all(HOST).iter();
            if hosts.next().is_none() || hosts.next().is_some() {
                let count = req.headers().get_all(HOST).iter().count();
                return Err(ProxyError::BadHost { count });
            }
        }
        let host_text = host_value
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let host = normalize_host(host_text);
        let target_text = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        if let Some(answer) = self.own_answer(&table, &host, target_text, client.https) {
            return Err(answer);
        }
        let body_len = req.body().size_hint().exact().unwrap_or(0);
        let admitted = self
            .admit(
                &table,
                &host,
                req.uri().path(),
                req.headers(),
                body_len,
                outcome,
            )
            .await;
        let Admitted {
            route,
            pool,
            index,
            in_flight,
        } = match admitted {
            Ok(admitted) => admitted,
            Err(err) => {
                if matches!(err, ProxyError::BodyTooLarge { .. })
                    && !req.headers().contains_key(EXPECT)
                {
                    // The client may be sending the body before it reads the answer.
                    body::drain(req.into_body());
                }
                return Err(err);
            }
        };
        let target = &route.target;

        let upgrade = is_upgrade_request(&req).then(|| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        // Most requests carry none of the headers to drop: one pass over the names finds
        // that, where removing each by name would hash every one of them.
        if parts
            .headers
            .keys()
            .any(|name| is_hop_by_hop(name) || name == EXPECT || name == REVISION_HEADER)
        {
            strip_hop_by_hop(&mut parts.headers, upgrade.is_some());
            // The client's `Expect: 100-continue` was answered by our server side already.
            parts.headers.remove(EXPECT);
            // A routing instruction for the proxy, not the application.
            parts.headers.remove(REVISION_HEADER);
        }
        if host_from_uri && let Some(host) = &host_value {
            parts.headers.insert(HOST, host.clone());
        }
        if parts.version == Version::HTTP_2 {
            merge_cookies(&mut parts.headers);
        }
        append_forwarded_for(&mut parts.headers, &client.addr);
        parts.headers.insert(
            X_FORWARDED_PROTO,
            HeaderValue::from_static(if client.https { "https" } else { "http" }),
        );
        if let Some(host) = host_value {
            parts.headers.insert(X_FORWARDED_HOST, host);
        }
        if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
            parts.uri = match parts.uri.path_and_query() {
                Some(pq) => Uri::from(pq.clone()),
                None => Uri::from_static("/"),
            };
        }
        parts.version = Version::HTTP_11;
        parts.extensions = Extensions::new();
        let body = if body.is_end_stream() {
            UpstreamBody::Incoming(body)
        } else {
            UpstreamBody::Guarded(Guarded::new(
                body,
                target.max_body,
                self.config.body_timeout,
                client.timers.clone(),
            ))
        };
        let req = Request::from_parts(parts, body);

        let mut current = in_flight.backend().addr();
        let timeout = self.config.upstream_timeout;
        let result = {
            let mut forwarded =
                pin!(self.forward(&route, pool, index, in_flight, req, upgrade, &mut current));
            let mut deadline = client
                .timers
                .sleep_until(tokio::time::Instant::now() + timeout);
            poll_fn(|cx| match forwarded.as_mut().poll(cx) {
                Poll::Ready(result) => Poll::Ready(Some(result)),
                Poll::Pending => Pin::new(&mut deadline).poll(cx).map(|()| None),
            })
            .await
        };
        let mut result = result.unwrap_or_else(|| {
            Err(ProxyError::Timeout {
                target: target.clone(),
                addr: current,
                after: timeout,
            })
        });
        if client.https
            && let Some(hsts) = &target.hsts
            && let Ok(response) = &mut result
        {
            response
                .headers_mut()
                .insert(http::header::STRICT_TRANSPORT_SECURITY, hsts.clone());
        }
        result
    }

    /// Sends the request to the chosen backend, moving on to the next ready backend of the
    /// same pool when one cannot be connected to, and turns the answer into the client's
    /// response. `current` tracks the backend being tried, for the timeout message.
    #[allow(clippy::too_many_arguments)]
    async fn forward(
        &self,
        route: &Route,
        pool: usize,
        mut index: usize,
        mut in_flight: InFlight,
        mut req: Request<UpstreamBody>,
        upgrade: Option<OnUpgrade>,
        current: &mut SocketAddr,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let mut tried: Vec<usize> = Vec::new();
        let (response, conn) = loop {
            let backend = in_flight.backend().clone();
            *current = backend.addr();
            let attempt = if upgrade.is_some() {
                Box::pin(self.send_fresh(&backend, req, true)).await
            } else {
                self.send_pooled(&backend, req).await
            };
            match attempt {
                Ok(sent) => break sent,
                Err(Failure::Unreachable(back, error)) => {
                    tried.push(index);
                    let Some((next, next_in_flight)) = route.acquire(pool, &tried) else {
                        return Err(ProxyError::Unreachable {
                            target: route.target.clone(),
                            addr: backend.addr(),
                            error,
                        });
                    };
                    tracing::debug!(addr = %backend.addr(), %error, "backend unreachable; trying the next one");
                    index = next;
                    in_flight = next_in_flight;
                    req = back;
                }
                // The client's own request body broke (a malformed chunk, a hang-up
                // mid-upload) or was refused (too long, too slow): that is the client's
                // doing, not the revision's, so it is answered 400, 413 or 408 and does not
                // count against the revision's error rate.
                Err(Failure::Failed(error)) if error.is_user() => {
                    return Err(match Refused::behind(&error) {
                        Some(Refused::TooLarge { limit }) => ProxyError::BodyTooLarge {
                            target: route.target.clone(),
                            limit,
                        },
                        Some(Refused::Stalled { after }) => ProxyError::RequestTimeout {
                            what: "body",
                            after,
                        },
                        None => ProxyError::BadRequestBody {
                            error: Box::new(error),
                        },
                    });
                }
                Err(Failure::Failed(error)) => {
                    return Err(ProxyError::UpstreamFailed {
                        target: route.target.clone(),
                        addr: backend.addr(),
                        error: Box::new(error),
                    });
                }
            }
        };
        self.respond(route, response, conn, in_flight, upgrade)
    }

    /// Sends a request over an idle pooled connection of `backend`, or a new one.
    async fn send_pooled(
        &self,
        backend: &Backend,
        mut req: Request<UpstreamBody>,
    ) -> Result<(Response<Incoming>, Option<Upstream>), Failure> {
        while let Some((mut conn, idle_for)) = backend.take_idle() {
            if conn.ready().await.is_err() {
                continue;
            }
            let replay = if idle_for >= REPLAY_AFTER_IDLE {
                replay_copy(&req)
            } else {
                None
            };
            match conn.send(req).await {
                Ok(response) => return Ok((response, Some(conn))),
                Err(mut err) => match err.take_message() {
                    // The connection was found closed before anything was written: the request
                    // is untouched and simply goes out on another connection.
                    Some(back) => req = back,
                    None => match replay {
                        Some(copy) => {
                            tracing::debug!(
                                addr = %backend.addr(),
                                error = %err.into_error(),
                                "idle upstream connection failed; replaying on a fresh one"
                            );
                            req = copy;
                            break;
                        }
                        None => return Err(Failure::Failed(err.into_error())),
                    },
                },
            }
        }
        // Connecting is the rare path and its future is large (connect, timeout, handshake);
        // boxed, it does not make every request's future bigger.
        Box::pin(self.send_fresh(backend, req, false)).await
    }

    /// Sends a request over a new connection to `backend`. Only connections without
    /// `upgrades` are returned for pooling.
    async fn send_fresh(
        &self,
        backend: &Backend,
        req: Request<UpstreamBody>,
        upgrades: bool,
    ) -> Result<(Response<Incoming>, Option<Upstream>), Failure> {
        // Held until the response head has arrived: the instance has accepted the connection.
        let _permit = backend.new_connection_permit().await;
        let mut conn = match backend.connect(self.config.connect_timeout, upgrades).await {
            Ok(conn) => conn,
            Err(err) => return Err(Failure::Unreachable(req, err)),
        };
        if let Err(err) = conn.ready().await {
            return Err(Failure::Unreachable(req, io::Error::other(err)));
        }
        match conn.send(req).await {
            Ok(response) => Ok((response, (!upgrades).then_some(conn))),
            Err(mut err) => match err.take_message() {
                Some(back) => Err(Failure::Unreachable(
                    back,
                    io::Error::other(err.into_error()),
                )),
                None => Err(Failure::Failed(err.into_error())),
            },
        }
    }

    /// Turns the backend's response into the client's: strips hop-by-hop headers and wraps
    /// the body so the connection returns to the pool when it ends. A `101 Switching
    /// Protocols` answer to an upgrade request starts a tunnel between both sockets.
    fn respond(
        &self,
        route: &Route,
        mut response: Response<Incoming>,
        conn: Option<Upstream>,
        in_flight: InFlight,
        upgrade: Option<OnUpgrade>,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(downstream) = upgrade else {
                return Err(ProxyError::UpstreamFailed {
                    target: route.target.clone(),
                    addr: in_flight.backend().addr(),
                    error:
                        "it answered 101 Switching Protocols to a request that asked for no upgrade"
                            .into(),
                });
            };
            let upstream = hyper::upgrade::on(&mut response);
            let (mut parts, _) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers, true);
            tokio::spawn(tunnel(downstream, upstream, in_flight));
            return Ok(Response::from_parts(parts, ResponseBody::empty()));
        }
        let (mut parts, body) = response.into_parts();
        let mut reuse = true;
        if parts.headers.keys().any(is_hop_by_hop) {
            // The connection still delivers this body (it is driven by it), but is not pooled.
            if connection_has_token(&parts.headers, "close") {
                reuse = false;
            }
            strip_hop_by_hop(&mut parts.headers, false);
        }
        let lease = Lease {
            in_flight,
            conn,
            reuse,
            max_idle: self.config.max_idle_per_backend,
        };
        Ok(Response::from_parts(
            parts,
            ResponseBody::upstream(body, lease),
        ))
    }
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("config", &self.config)
            .field("table", &self.table.load())
            .finish_non_exhaustive()
    }
}

/// How hyper serves a client connection (plain after the fast path's hand-off, or TLS): its
/// HTTP/1.1 builder, the timer for its sleeps, and the limits the HTTP/2 side gets.
struct Protocols {
    http1: hyper::server::conn::http1::Builder,
    timer: HyperTimer,
    head_timeout: Duration,
    h2_max_head: u32,
}

impl Protocols {
    fn new(config: &RouterConfig, timer: HyperTimer) -> Protocols {
        let max_head = config.max_head_bytes.max(MIN_HEAD_BYTES);
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(timer.clone())
            .header_read_timeout(config.head_timeout)
            .max_header_size(max_head)
            .max_headers(config.max_headers.max(1))
            // Hyper's read buffer (about 400 KiB by default) must hold the longest head.
            .max_buf_size(max_head.saturating_add(8 * 1024).max(HYPER_MAX_BUF));
        Protocols {
            http1,
            timer,
            head_timeout: config.head_timeout,
            h2_max_head: u32::try_from(max_head).unwrap_or(u32::MAX),
        }
    }

    /// Serves one client connection with hyper, HTTP/2 or HTTP/1.1 (with upgrades), until it
    /// ends or `signal` closes it.
    async fn serve<I>(
        &self,
        router: Arc<Router>,
        client: Arc<Client>,
        io: I,
        is_h2: bool,
        signal: &Signal,
    ) -> Result<(), hyper::Error>
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let service = service_fn(move |req| {
            let router = router.clone();
            let client = client.clone();
            async move { Ok::<_, Infallible>(router.handle(req, &client).await) }
        });
        if is_h2 {
            // Each connection gets its own executor: its streams run in this task.
            let streams = h2::Streams::default();
            let mut http2 = hyper::server::conn::http2::Builder::new(streams.clone());
            // Request heads are held to the same limit as HTTP/1's (h2 answers 431 itself).
            // No keep-alive pings: `h2::serve` ends quiet connections (see there).
            http2
                .timer(self.timer.clone())
                .max_header_list_size(self.h2_max_head);
            let (io, progress) = h2::Watched::new(io);
            let conn = http2.serve_connection(io, service);
            h2::serve(conn, streams, progress, self.head_timeout, signal, |conn| {
                conn.graceful_shutdown()
            })
            .await
        } else {
            until_closed(
                self.http1.serve_connection(io, service).with_upgrades(),
                signal,
                |conn| conn.graceful_shutdown(),
            )
            .await
        }
    }
}

/// Serves a hyper connection to its end; when `signal` asks the connection to close, `close`
/// starts hyper's graceful shutdown of it (finish the requests in progress, take no more).
async fn until_closed<C, E>(conn: C, signal: &Signal, close: impl Fn(Pin<&mut C>)) -> Result<(), E>
where
    C: Future<Output = Result<(), E>>,
{
    let mut conn = pin!(conn);
    let mut asked = false;
    poll_fn(|cx| {
        if !asked && signal.poll_closing(cx) {
            asked = true;
            close(conn.as_mut());
        }
        conn.as_mut().poll(cx)
    })
    .await
}

/// Copies bytes both ways between the client and the backend once both sides switched
/// protocols. The backend stays counted as busy until the tunnel closes.
async fn tunnel(downstream: OnUpgrade, upstream: OnUpgrade, in_flight: InFlight) {
    let addr = in_flight.backend().addr();
    match tokio::try_join!(downstream, upstream) {
        Ok((downstream, upstream)) => {
            let mut downstream = TokioIo::new(downstream);
            let mut upstream = TokioIo::new(upstream);
            if let Err(err) = tokio::io::copy_bidirectional(&mut downstream, &mut upstream).await {
                tracing::debug!(%addr, error = %err, "upgraded connection ended with an error");
            }
        }
        Err(err) => tracing::debug!(%addr, error = %err, "protocol upgrade failed"),
    }
    drop(in_flight);
}

/// A body-less copy of an idempotent request without a body, for a replay.
fn replay_copy(req: &Request<UpstreamBody>) -> Option<Request<UpstreamBody>> {
    if !req.method().is_idempotent() || !req.body().is_end_stream() {
        return None;
    }
    let mut copy = Request::new(UpstreamBody::Empty);
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}

/// Whether an HTTP/1.1 request asks to switch protocols (`Connection: upgrade` + `Upgrade`).
fn is_upgrade_request(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(UPGRADE)
        && connection_has_token(req.headers(), "upgrade")
}

/// Whether a `Connection` header lists `token` (case-insensitively).
fn connection_has_token(headers: &HeaderMap, token: &str) -> bool {
    headers.get_all(CONNECTION).iter().any(|value| {
        value
            .to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

/// Whether `name` is one of the hop-by-hop headers that are always removed (RFC 9110, section
/// 7.6.1): `Connection`, `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`,
/// `Transfer-Encoding` and `Upgrade`. Headers named in `Connection` are hop-by-hop too, but
/// only with a `Connection` header present.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == CONNECTION
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
        || name == TE
        || name == TRAILER
        || name == TRANSFER_ENCODING
        || name == UPGRADE
}

/// Removes the headers that only concern one connection: those named in `Connection` and the
/// standard hop-by-hop set. For upgrades, `Upgrade` stays and `Connection: upgrade` is set.
fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let mut named: Vec<HeaderName> = Vec::new();
    for value in headers.get_all(CONNECTION) {
        let Ok(value) = value.to_str() else { continue };
        for token in value.split(',').map(str::trim) {
            if token.is_empty()
                || token.eq_ignore_ascii_case("close")
                || token.eq_ignore_ascii_case("keep-alive")
                || token.eq_ignore_ascii_case("upgrade")
            {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                named.push(name);
            }
        }
    }
    for name in named {
        headers.remove(name);
    }
    for name in [
        CONNECTION,
        KEEP_ALIVE,
        PROXY_CONNECTION,
        TE,
        TRAILER,
        TRANSFER_ENCODING,
    ] {
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(UPGRADE);
    }
}

/// Appends the client address to `X-Forwarded-For`, folding earlier values into one line.
fn append_forwarded_for(headers: &mut HeaderMap, client: &HeaderValue) {
    let mut values = headers.get_all(X_FORWARDED_FOR).iter().peekable();
    if values.peek().is_none() {
        headers.insert(X_FORWARDED_FOR, client.clone());
        return;
    }
    let mut line = Vec::with_capacity(64);
    for value in values {
        line.extend_from_slice(value.as_bytes());
        line.extend_from_slice(b", ");
    }
    line.extend_from_slice(client.as_bytes());
    let value = HeaderValue::from_bytes(&line).unwrap_or_else(|_| client.clone());
    headers.insert(X_FORWARDED_FOR, value);
}

/// HTTP/2 may split `Cookie` into several fields; HTTP/1.1 needs one, joined by `; `.
fn merge_cookies(headers: &mut HeaderMap) {
    let mut values = headers.get_all(COOKIE).iter();
    if values.next().is_none() || values.next().is_none() {
        return;
    }
    let mut line = Vec::with_capacity(256);
    for (i, value) in headers.get_all(COOKIE).iter().enumerate() {
        if i > 0 {
            line.extend_from_slice(b"; ");
        }
        line.extend_from_slice(value.as_bytes());
    }
    if let Ok(value) = HeaderValue::from_bytes(&line) {
        headers.insert(COOKIE, value);
    }
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Generates unique request ids in UUID layout: a random per-router half and a scrambled
/// counter half, so ids never repeat within a process and practically never across restarts.
pub(crate) struct RequestIds {
    seed: u64,
    salt: u64,
    counter: AtomicU64,
}

impl RequestIds {
    fn new() -> RequestIds {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let state = RandomState::new();
        RequestIds {
            seed: state.hash_one((now, std::process::id(), 1u8)),
            salt: state.hash_one((now, std::process::id(), 2u8)),
            counter: AtomicU64::new(0),
        }
    }

    fn next(&self) -> HeaderValue {
        // Owned bytes make the copy for the response a reference count instead of a second
        // allocation.
        HeaderValue::from_maybe_shared(Bytes::from_owner(self.next_text()))
            .unwrap_or_else(|_| HeaderValue::from_static("invalid"))
    }

    /// The next id as text.
    pub(crate) fn next_text(&self) -> [u8; 36] {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        // Multiplying by an odd constant is a bijection on u64, so distinct counters stay
        // distinct while consecutive ids do not look alike.
        let low = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ self.salt;
        let id = (u128::from(self.seed) << 64) | u128::from(low);
        // Two hex digits per byte, most significant first, with the dashes of the 8-4-4-4-12
        // layout before bytes 4, 6, 8 and 10 (text positions 8, 13, 18 and 23).
        let mut text = [b'-'; 36];
        let mut at = 0;
        for (i, byte) in id.to_be_bytes().into_iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                at += 1;
            }
            text[at] = HEX_DIGITS[usize::from(byte >> 4)];
            text[at + 1] = HEX_DIGITS[usize::from(byte & 0xf)];
            at += 2;
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_unique_and_uuid_shaped() {
        let ids = RequestIds::new();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..10_000 {
            let id = ids.next();
            let text = id.to_str().expect("ascii");
            assert_eq!(text.len(), 36);
            assert_eq!(text.matches('-').count(), 4);
            assert!(seen.insert(text.to_owned()), "duplicate id {text}");
        }
    }

    #[test]
    fn request_ids_put_the_seed_first_and_the_scrambled_counter_last() {
        let ids = RequestIds {
            seed: 0x0123_4567_89ab_cdef,
            salt: 0,
            counter: AtomicU64::new(0),
        };
        assert_eq!(ids.next(), "01234567-89ab-cdef-0000-000000000000");
        // Counter 1 times the odd constant 0x9E3779B97F4A7C15 is the constant itself.
        assert_eq!(ids.next(), "01234567-89ab-cdef-9e37-79b97f4a7c15");
    }

    #[test]
    fn only_hop_by_hop_names_are_found_by_the_quick_scan() {
        for name in [
            CONNECTION,
            KEEP_ALIVE,
            PROXY_CONNECTION,
            TE,
            TRAILER,
            TRANSFER_ENCODING,
            UPGRADE,
        ] {
            assert!(is_hop_by_hop(&name), "{name}");
        }
        for name in [HOST, COOKIE, X_FORWARDED_FOR, X_REQUEST_ID, EXPECT] {
            assert!(!is_hop_by_hop(&name), "{name}");
        }
        let custom = HeaderName::from_static("keep-alive-x");
        assert!(!is_hop_by_hop(&custom));
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(CONNECTION, HeaderValue::from_static("keep-alive, X-Secret"));
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert(KEEP_ALIVE, HeaderValue::from_static("timeout=5"));
        headers.insert(TE, HeaderValue::from_static("trailers"));
        headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert("x-kept", HeaderValue::from_static("1"));
        let mut upgrade = headers.clone();
        strip_hop_by_hop(&mut headers, false);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert!(headers.contains_key("x-kept"));
        strip_hop_by_hop(&mut upgrade, true);
        assert_eq!(
            upgrade.get(UPGRADE).map(|v| v.as_bytes()),
            Some(&b"websocket"[..])
        );
        assert_eq!(
            upgrade.get(CONNECTION).map(|v| v.as_bytes()),
            Some(&b"upgrade"[..])
        );
        assert!(!upgrade.contains_key("x-secret"));
    }

    #[test]
    fn forwarded_for_is_folded_into_one_line() {
        let client = HeaderValue::from_static("10.0.0.9");
        let mut headers = HeaderMap::new();
        append_forwarded_for(&mut headers, &client);
        assert_eq!(headers.get(X_FORWARDED_FOR), Some(&client));
        let mut headers = HeaderMap::new();
        headers.append(X_FORWARDED_FOR, HeaderValue::from_static("1.1.1.1"));
        headers.append(
            X_FORWARDED_FOR,
            HeaderValue::from_static("2.2.2.2, 3.3.3.3"),
        );
        append_forwarded_for(&mut headers, &client);
        let all: Vec<_> = headers.get_all(X_FORWARDED_FOR).iter().collect();
        assert_eq!(all, vec!["1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.9"]);
    }

    #[test]
    fn split_cookies_are_joined() {
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, HeaderValue::from_static("a=1"));
        headers.append(COOKIE, HeaderValue::from_static("b=2"));
        merge_cookies(&mut headers);
        let all: Vec<_> = headers.get_all(COOKIE).iter().collect();
        assert_eq!(all, vec!["a=1; b=2"]);
    }
}
