//! A trivial backend for benchmarks: answers every request with a fixed 13-byte body,
//! HTTP/1.1 keep-alive, on a single-threaded runtime (so it can be pinned to one core).
//! `/ready` and `/health` answer too, so Slipway can run it as a service.
//!
//! Two paths serve the control-plane benchmarks (`bench/deploy`, `bench/scaleup`):
//! - `/version` answers `$VERSION`, or `$SLIPWAY_REVISION` when `VERSION` is unset (Slipway
//!   sets it per revision), so a client can tell which revision answered.
//! - `/sleep/MS` answers after MS milliseconds with the instance's name (`$SLIPWAY_INSTANCE`,
//!   else `127.0.0.1:PORT`). The wait is a timer, so one instance holds any number of such
//!   requests at once without blocking its single thread.
//!
//! `READY_DELAY_MS` (default 0) makes it sleep that long before it binds its port, like an
//! app that needs time to start.
//!
//! Usage: `slipway-bench-backend [PORT]` (default: $PORT, else 9000). It listens on
//! 127.0.0.1, or on `$HOST`.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// The longest `/sleep/MS` honoured: ten minutes. Longer asks sleep this long.
const MAX_SLEEP_MS: u64 = 600_000;

fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("PORT").ok())
        .and_then(|p| p.parse().ok())
        .unwrap_or(9000);
    let ready_delay = match ready_delay(std::env::var("READY_DELAY_MS").ok().as_deref()) {
        Ok(delay) => delay,
        Err(message) => {
            eprintln!("slipway-bench-backend: {message}");
            std::process::exit(2);
        }
    };
    let version = Bytes::from(
        std::env::var("VERSION")
            .or_else(|_| std::env::var("SLIPWAY_REVISION"))
            .unwrap_or_default(),
    );
    let instance = Bytes::from(format!(
        "{}\n",
        std::env::var("SLIPWAY_INSTANCE").unwrap_or_else(|_| format!("127.0.0.1:{port}"))
    ));
    // Loopback, unless `$HOST` says otherwise (`0.0.0.0` in a container, whose published
    // port the engine forwards from the host's loopback).
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".to_owned());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        // Slipway probes the port from the moment the process starts, so the delay is
        // spent before the bind: the instance is not ready until it has passed.
        if !ready_delay.is_zero() {
            tokio::time::sleep(ready_delay).await;
        }
        let listener = tokio::net::TcpListener::bind((host.as_str(), port)).await?;
        println!("bench backend listening on {host}:{port}");
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let (version, instance) = (version.clone(), instance.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let reply = route(req.uri().path(), &version, &instance);
                    async move {
                        Ok::<_, Infallible>(match reply {
                            Reply::Now(response) => response,
                            Reply::After(wait, body) => {
                                tokio::time::sleep(wait).await;
                                Response::new(Full::new(body))
                            }
                        })
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}

/// The answer to one request: at once, or a body after a wait.
#[derive(Debug)]
enum Reply {
    Now(Response<Full<Bytes>>),
    After(Duration, Bytes),
}

/// Chooses the answer to a request path: `/version`, `/sleep/MS`, or the fixed 13-byte body
/// for every other path. The fixed body is static, so the common path copies nothing.
fn route(path: &str, version: &Bytes, instance: &Bytes) -> Reply {
    if path == "/version" {
        return Reply::Now(Response::new(Full::new(version.clone())));
    }
    if let Some(ms) = path.strip_prefix("/sleep/") {
        let Ok(ms) = ms.parse::<u64>() else {
            let mut bad = Response::new(Full::new(Bytes::from_static(
                b"/sleep/MS takes a whole number of milliseconds, e.g. /sleep/100\n",
            )));
            *bad.status_mut() = StatusCode::BAD_REQUEST;
            return Reply::Now(bad);
        };
        return Reply::After(
            Duration::from_millis(ms.min(MAX_SLEEP_MS)),
            instance.clone(),
        );
    }
    Reply::Now(Response::new(Full::new(Bytes::from_static(
        b"hello, world\n",
    ))))
}

/// Reads `READY_DELAY_MS`: unset or empty is no delay, "50" is 50 ms.
fn ready_delay(value: Option<&str>) -> Result<Duration, String> {
    match value.map(str::trim) {
        None | Some("") => Ok(Duration::ZERO),
        Some(text) => text.parse::<u64>().map(Duration::from_millis).map_err(|_| {
            format!(
                "READY_DELAY_MS must be a whole number of milliseconds, got {text:?}; \
                 hint: set READY_DELAY_MS=50 to wait 50 ms before listening, or unset it"
            )
        }),
    }
}

#[cfg(test)]
mod tests;
