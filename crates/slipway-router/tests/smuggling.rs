//! Bad input at the router's front door: request smuggling (conflicting `Content-Length` and
//! `Transfer-Encoding`, two different lengths, obfuscated codings), huge headers, invalid
//! chunk sizes, garbage request lines, pipelining and slowloris.
//!
//! Each case sends raw bytes over a socket to a real router in front of a real backend that
//! records every request it parses and every byte it receives. The expectations, for every
//! case: the backend never parses the smuggled second request (its path is `/smuggled`), no
//! request reaches the backend with both framing headers, the connection is closed after the
//! malformed request, and the router keeps serving other clients. A request the router
//! cannot frame is refused with a 4xx and never forwarded; one it can frame without doubt
//! (RFC 9112 §6.3: `Transfer-Encoding` wins over `Content-Length`) is forwarded once,
//! re-framed, and the connection closed. A chunked body found broken after the head was
//! forwarded is answered 400, never 2xx or 5xx.

#[allow(dead_code)]
mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use support::*;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// The path of every smuggled request: the backend must never parse a request for it.
const SMUGGLED: &str = "/smuggled";

/// One request as the backend parsed it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    /// The body, or why reading it failed.
    body: Result<String, String>,
}

/// A real HTTP/1.1 backend that records what it parsed and the raw bytes it received.
struct Recorder {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    raw: Arc<Mutex<Vec<u8>>>,
}

impl Recorder {
    async fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("local addr");
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let raw: Arc<Mutex<Vec<u8>>> = Arc::default();
        let (seen_by_task, raw_by_task) = (seen.clone(), raw.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let seen = seen_by_task.clone();
                let io = Tee {
                    inner: stream,
                    log: raw_by_task.clone(),
                };
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let seen = seen.clone();
                        async move { Ok::<_, Infallible>(record(req, &seen).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(io), service)
                        .await;
                });
            }
        });
        Recorder { addr, seen, raw }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen").clone()
    }

    fn raw(&self) -> String {
        String::from_utf8_lossy(&self.raw.lock().expect("raw")).into_owned()
    }

    /// Forgets what was recorded, between cases.
    fn clear(&self) {
        self.seen.lock().expect("seen").clear();
        self.raw.lock().expect("raw").clear();
    }
}

async fn record(req: Request<Incoming>, seen: &Mutex<Vec<Seen>>) -> Response<Full<Bytes>> {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let body = match req.into_body().collect().await {
        Ok(body) => Ok(String::from_utf8_lossy(&body.to_bytes()).into_owned()),
        Err(err) => Err(err.to_string()),
    };
    let answer = format!(
        "seen {method} {path} {}",
        body.as_ref().map_or(0, String::len)
    );
    seen.lock().expect("seen").push(Seen { method, path, body });
    Response::new(Full::new(Bytes::from(answer)))
}

/// A socket that copies every byte it reads into `log`.
struct Tee {
    inner: TcpStream,
    log: Arc<Mutex<Vec<u8>>>,
}

impl AsyncRead for Tee {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let new = buf.filled()[before..].to_vec();
            self.log.lock().expect("raw").extend_from_slice(&new);
        }
        polled
    }
}

impl AsyncWrite for Tee {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// What the client saw after sending one raw case.
#[derive(Debug)]
struct Exchange {
    /// The status code of every response, in order.
    statuses: Vec<u16>,
    /// Whether the router closed the connection (else it went quiet, keeping it open).
    closed: bool,
    /// Everything the router sent.
    text: String,
}

/// Sends `bytes` on a fresh connection, then reads until the router closes the connection or
/// stays silent for `quiet`.
async fn exchange(proxy: SocketAddr, bytes: &[u8], quiet: Duration) -> Exchange {
    let mut stream = TcpStream::connect(proxy).await.expect("connect to proxy");
    // The router may close while we are still writing (a huge head); that is an answer too.
    let _ = stream.write_all(bytes).await;
    let mut received = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let closed = loop {
        match tokio::time::timeout(quiet, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    let text = String::from_utf8_lossy(&received).into_owned();
    Exchange {
        statuses: statuses(&received),
        closed,
        text,
    }
}

/// The status codes of the responses in `received`, read one after the other by their
/// framing (`Content-Length` or chunked), so a body never passes for a status line.
fn statuses(mut received: &[u8]) -> Vec<u16> {
    let mut found = Vec::new();
    while let Some(end) = find(received, b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&received[..end]).to_ascii_lowercase();
        let Some(code) = head
            .strip_prefix("http/1.1 ")
            .and_then(|rest| rest.get(..3)?.parse().ok())
        else {
            break;
        };
        found.push(code);
        let mut rest = &received[end + 4..];
        if head.contains("\ntransfer-encoding: chunked") {
            // Chunked bodies end with a zero-size chunk and an empty line.
            if rest.starts_with(b"0\r\n\r\n") {
                rest = &rest[5..];
            } else {
                match find(rest, b"\r\n0\r\n\r\n") {
                    Some(at) => rest = &rest[at + 7..],
                    None => break,
                }
            }
        } else if let Some(length) = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length: "))
            .and_then(|n| n.trim().parse::<usize>().ok())
        {
            rest = &rest[length.min(rest.len())..];
        }
        received = rest;
    }
    found
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The request heads in `raw` (the bytes the backend received) that carry both framing
/// headers. Heads are found by their request line; a smuggled payload that travels as a body
/// has neither header, so it cannot count here by mistake.
fn ambiguous_heads(raw: &str) -> Vec<String> {
    let lower = raw.to_ascii_lowercase();
    lower
        .match_indices(" http/1.1\r\n")
        .filter_map(|(at, _)| {
            let start = lower[..at].rfind('\n').map_or(0, |i| i + 1);
            let end = lower[at..].find("\r\n\r\n").map_or(lower.len(), |i| at + i);
            let head = &lower[start..end];
            (head.contains("\ncontent-length:") && head.contains("\ntransfer-encoding:"))
                .then(|| head.to_owned())
        })
        .collect()
}

/// A router in front of a recording backend, on host `app.test`.
async fn setup() -> (Proxy, Recorder) {
    let backend = Recorder::start().await;
    let proxy = Proxy::with_table(host_table(
        "app.test",
        vec![ready_backend(backend.addr, "recorder")],
    ))
    .await;
    (proxy, backend)
}

/// Asserts the router still serves a well-formed request from another client.
async fn still_serves(proxy: SocketAddr) {
    let reply = get(proxy, "app.test", "/healthy").await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.body, "seen GET /healthy 0");
}

/// What the router must do with one malformed input.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// Refuse it: a 4xx (or a closed connection) and nothing reaches the backend.
    Refused,
    /// Forward the first request once, framed without doubt, answer it, and close the
    /// connection (RFC 9112 §6.3), so the bytes after it are never read as a request.
    Reframed,
    /// A chunked body that turns out to be broken after the head was forwarded: the
    /// connection closes and the request is not answered with a 2xx.
    ///
    /// A chunked body found broken after the head was forwarded: the client's fault, so
    /// the router answers 400 (`bad-request-body`), never 2xx or a 5xx that would count
    /// against the revision.
    BrokenBody,
}

/// One malformed-input case.
struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    expect: Expect,
}

fn case(name: &'static str, bytes: &str, expect: Expect) -> Case {
    Case {
        name,
        bytes: bytes.as_bytes().to_vec(),
        expect,
    }
}

/// Runs every case against one router, checks each against its expectation and the common
/// ones (nothing smuggled, no ambiguous head forwarded, the router keeps serving), and
/// reports every case that went wrong at once.
async fn run_cases(cases: Vec<Case>) {
    let (proxy, backend) = setup().await;
    let sent = cases.len();
    let mut failures = Vec::new();
    for case in cases {
        backend.clear();
        let got = exchange(proxy.addr, &case.bytes, Duration::from_millis(1500)).await;
        // The backend records a broken body when its read fails, which may be just after the
        // router closed the client's connection.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let seen = backend.seen();
        let raw = backend.raw();
        eprintln!(
            "{}: answered {:?}, closed {}, backend parsed {:?}",
            case.name,
            got.statuses,
            got.closed,
            seen.iter()
                .map(|s| format!(
                    "{} {} body {:?}",
                    s.method,
                    s.path,
                    s.body.as_ref().map(String::len)
                ))
                .collect::<Vec<_>>(),
        );
        let mut wrong = Vec::new();
        if seen.iter().any(|s| s.path == SMUGGLED) {
            wrong.push(format!(
                "the backend parsed the smuggled request; raw:\n{raw}"
            ));
        }
        if !ambiguous_heads(&raw).is_empty() {
            wrong.push(format!(
                "a request reached the backend with both Content-Length and Transfer-Encoding:\n{raw}"
            ));
        }
        if !got.closed {
            wrong.push("the connection stayed open after a malformed request".to_owned());
        }
        match case.expect {
            Expect::Refused => {
                if !seen.is_empty() {
                    wrong.push(format!(
                        "forwarded a request it should have refused: {seen:?}"
                    ));
                }
                if got.statuses.iter().any(|s| !(400..500).contains(s)) {
                    wrong.push(format!("answered other than 4xx: {}", got.text));
                }
            }
            Expect::Reframed => {
                let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
                if paths != ["/first"] || got.statuses != [200] {
                    wrong.push(format!(
                        "expected /first forwarded once and answered 200, got {paths:?} and {:?}",
                        got.statuses
                    ));
                }
            }
            Expect::BrokenBody => {
                if got
                    .statuses
                    .iter()
                    .any(|s| (200..300).contains(s) || *s >= 500)
                {
                    wrong.push(format!(
                        "a broken body was answered 2xx or 5xx: {}",
                        got.text
                    ));
                }
            }
        }
        failures.extend(wrong.into_iter().map(|w| format!("{}: {w}", case.name)));
        still_serves(proxy.addr).await;
    }
    eprintln!(
        "scenario: sent {sent} malformed cases (each followed by a good request), failed {} (wrong handling)",
        failures.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_framing_headers_never_smuggle_a_second_request() {
    bounded(async {
        let smuggled = "GET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n";
        let cases = vec![
            // CL.TE: a front end trusting Content-Length would forward the smuggled request as
            // the body; one trusting Transfer-Encoding sees an empty body and then the
            // smuggled request. RFC 9112 §6.3: Transfer-Encoding wins, Content-Length is
            // removed, and the connection is closed after the answer.
            case(
                "CL.TE",
                &format!(
                    "POST /first HTTP/1.1\r\nHost: app.test\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}",
                    5 + smuggled.len()
                ),
                Expect::Reframed,
            ),
            // TE.CL: the chunk carries the smuggled request as data; Content-Length says 4.
            case(
                "TE.CL",
                &format!(
                    "POST /first HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n{:x}\r\n{smuggled}\r\n0\r\n\r\n",
                    smuggled.len()
                ),
                Expect::Reframed,
            ),
            case(
                "two different Content-Length headers",
                &format!(
                    "POST /first HTTP/1.1\r\nHost: app.test\r\nContent-Length: 0\r\nContent-Length: {}\r\n\r\n{smuggled}",
                    smuggled.len()
                ),
                Expect::Refused,
            ),
            case(
                "a Content-Length list with two values",
                &format!(
                    "POST /first HTTP/1.1\r\nHost: app.test\r\nContent-Length: 0, {}\r\n\r\n{smuggled}",
                    smuggled.len()
                ),
                Expect::Refused,
            ),
            case(
                "a signed Content-Length",
                &format!("POST /first HTTP/1.1\r\nHost: app.test\r\nContent-Length: +0\r\n\r\n{smuggled}"),
                Expect::Refused,
            ),
            case(
                "Transfer-Encoding that does not end in chunked",
                &format!(
                    "POST /first HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{smuggled}"
                ),
                Expect::Refused,
            ),
            case(
                "an unknown Transfer-Encoding next to Content-Length",
                &format!(
                    "POST /first HTTP/1.1\r\nHost: app.test\r\nContent-Length: 0\r\nTransfer-Encoding: xchunked\r\n\r\n{smuggled}"
                ),
                Expect::Refused,
            ),
            case(
                "a space before the colon of Transfer-Encoding",
                &format!(
                    "POST /first HTTP/1.1\r\nHost: app.test\r\nContent-Length: 0\r\nTransfer-Encoding : chunked\r\n\r\n{smuggled}"
                ),
                Expect::Refused,
            ),
            case(
                "a Content-Length folded onto a second line",
                &format!(
                    "POST /first HTTP/1.1\r\nHost: app.test\r\nX-Pad: a\r\n Content-Length: 0\r\nContent-Length: {}\r\n\r\n{smuggled}",
                    smuggled.len()
                ),
                Expect::Refused,
            ),
            case(
                "Transfer-Encoding on HTTP/1.0",
                &format!(
                    "POST /first HTTP/1.0\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{smuggled}"
                ),
                Expect::Refused,
            ),
        ];
        run_cases(cases).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_chunked_bodies_close_the_connection_and_smuggle_nothing() {
    bounded(async {
        let smuggled = "GET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n";
        let chunked =
            "POST /first HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n";
        let broken = |name, chunks: &str| {
            case(
                name,
                &format!("{chunked}{chunks}{smuggled}"),
                Expect::BrokenBody,
            )
        };
        let cases = vec![
            broken("a chunk size that is not hex", "zz\r\nhello\r\n0\r\n\r\n"),
            broken("a negative chunk size", "-5\r\nhello\r\n0\r\n\r\n"),
            broken(
                "a chunk size that overflows 64 bits",
                "1ffffffffffffffff\r\nhello\r\n0\r\n\r\n",
            ),
            broken("a chunk longer than its size", "2\r\nhello\r\n0\r\n\r\n"),
        ];
        run_cases(cases).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_request_lines_and_header_bytes_get_400() {
    bounded(async {
        let smuggled = "GET /smuggled HTTP/1.1\r\nHost: app.test\r\n\r\n";
        let refused = |name, head: &str| case(name, &format!("{head}{smuggled}"), Expect::Refused);
        let cases = vec![
            refused(
                "a request line with a space in the target",
                "GET /a b HTTP/1.1\r\nHost: app.test\r\n\r\n",
            ),
            refused("a request line of garbage", "\x01\x02garbage\r\n\r\n"),
            refused(
                "a request line with extra words",
                "GET / HTTP/1.1 extra\r\nHost: app.test\r\n\r\n",
            ),
            refused(
                "an unknown protocol version",
                "GET / HTTP/9.9\r\nHost: app.test\r\n\r\n",
            ),
            refused(
                "a NUL byte in a header value",
                "GET / HTTP/1.1\r\nHost: app.test\r\nX-A: a\0b\r\n\r\n",
            ),
            refused(
                "a bare CR in a header value",
                "GET / HTTP/1.1\r\nHost: app.test\r\nX-A: a\rb\r\n\r\n",
            ),
            refused(
                "a header line without a colon",
                "GET / HTTP/1.1\r\nHost app.test\r\n\r\n",
            ),
        ];
        run_cases(cases).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_headers_are_refused_and_the_router_keeps_serving() {
    bounded(async {
        let one_mib = "a".repeat(1 << 20);
        let many: String = (0..500).map(|i| format!("X-H{i}: {i}\r\n")).collect();
        let cases = vec![
            case(
                "one 1 MiB header value",
                &format!("GET /first HTTP/1.1\r\nHost: app.test\r\nX-Big: {one_mib}\r\n\r\n"),
                Expect::Refused,
            ),
            case(
                "a 1 MiB request target",
                &format!("GET /{one_mib} HTTP/1.1\r\nHost: app.test\r\n\r\n"),
                Expect::Refused,
            ),
            case(
                "500 headers",
                &format!("GET /first HTTP/1.1\r\nHost: app.test\r\n{many}\r\n"),
                Expect::Refused,
            ),
        ];
        run_cases(cases).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_and_a_bad_one_ends_the_connection() {
    bounded(async {
        let (proxy, backend) = setup().await;
        let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n\r\n");
        // Three good requests in one write: three answers, in order.
        let three = format!("{}{}{}", get("/one"), get("/two"), get("/three"));
        let got = exchange(proxy.addr, three.as_bytes(), Duration::from_millis(1000)).await;
        assert_eq!(got.statuses, vec![200, 200, 200], "{got:?}");
        let order: Vec<usize> = ["seen GET /one", "seen GET /two", "seen GET /three"]
            .iter()
            .map(|needle| got.text.find(needle).expect("every answer"))
            .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{}", got.text);
        let paths: Vec<String> = backend.seen().into_iter().map(|s| s.path).collect();
        assert_eq!(paths, vec!["/one", "/two", "/three"]);
        eprintln!("scenario: sent 3 pipelined requests, failed 0");

        // A good request, a malformed one, then the smuggled one: the good one is answered,
        // the malformed one gets a 400 and the connection closes before the third is read.
        backend.clear();
        let mixed = format!(
            "{}GET / HTTP/1.1\r\nHost app.test\r\n\r\n{}",
            get("/one"),
            get(SMUGGLED)
        );
        let got = exchange(proxy.addr, mixed.as_bytes(), Duration::from_millis(1000)).await;
        assert_eq!(got.statuses, vec![200, 400], "{got:?}");
        assert!(got.closed, "{got:?}");
        let paths: Vec<String> = backend.seen().into_iter().map(|s| s.path).collect();
        assert_eq!(paths, vec!["/one"]);
        eprintln!("scenario: sent 3 pipelined requests (second malformed), failed 1 (the malformed one got 400; the third was never read)");
        still_serves(proxy.addr).await;
    })
    .await;
}

/// How many slow clients the slowloris test opens.
const SLOW_CLIENTS: usize = 16;

/// The router's header read timeout (the default `RouterConfig::head_timeout`).
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_clients_are_cut_at_the_header_timeout_while_others_are_served() {
    // Not under `bounded`: this test waits out the 30 s header timeout on purpose.
    let (proxy, backend) = setup().await;
    let started = Instant::now();
    // Each slow client sends a request head one byte per second and never finishes it.
    let slow: Vec<_> = (0..SLOW_CLIENTS)
        .map(|_| {
            let addr = proxy.addr;
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(addr).await.expect("connect");
                stream
                    .write_all(b"GET /slow HTTP/1.1\r\nHost: app.test\r\nX-Slow: ")
                    .await
                    .expect("write");
                let mut buf = [0u8; 1024];
                let limit = HEADER_TIMEOUT + Duration::from_secs(15);
                while started.elapsed() < limit {
                    if stream.write_all(b"a").await.is_err() {
                        return Some(started.elapsed());
                    }
                    match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await
                    {
                        Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
                        // Whatever the router says (a 408, say), it must then close.
                        Ok(Ok(_)) | Err(_) => {}
                    }
                }
                None
            })
        })
        .collect();
    // A client that connects and sends nothing at all is cut by the same bound.
    let silent = {
        let addr = proxy.addr;
        tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            let mut buf = [0u8; 16];
            let limit = HEADER_TIMEOUT + Duration::from_secs(15);
            match tokio::time::timeout(limit, stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => Some(started.elapsed()),
                _ => None,
            }
        })
    };
    // So is one that starts an HTTP/2 preface and stops half-way.
    let half_preface = {
        let addr = proxy.addr;
        tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            stream
                .write_all(b"PRI * HTTP/2.0\r\n")
                .await
                .expect("write");
            let mut buf = [0u8; 16];
            let limit = HEADER_TIMEOUT + Duration::from_secs(15);
            match tokio::time::timeout(limit, stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => Some(started.elapsed()),
                _ => None,
            }
        })
    };
    // Meanwhile a normal client is served, every half second, without delay from them.
    let mut served = 0;
    while slow.iter().any(|task| !task.is_finished()) {
        let reply =
            tokio::time::timeout(Duration::from_secs(5), get(proxy.addr, "app.test", "/ok"))
                .await
                .expect("a normal client was kept waiting while slow clients trickled");
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        served += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut cut_at = Vec::new();
    for task in slow {
        cut_at.push(task.await.expect("slow client task"));
    }
    eprintln!(
        "scenario: sent {served} normal requests beside {SLOW_CLIENTS} slowloris clients, failed 0; slow clients cut at {cut_at:?}"
    );
    // Every slow client was cut, and by the header timeout (not earlier, by something else).
    for at in &cut_at {
        let at = at.expect("a slow client was never cut off");
        assert!(
            at >= HEADER_TIMEOUT - Duration::from_secs(1),
            "cut after {at:?}"
        );
    }
    for (task, who) in [
        (silent, "a client that sent nothing"),
        (half_preface, "a client that sent half an HTTP/2 preface"),
    ] {
        let cut = task.await.expect("client task");
        let cut = cut.unwrap_or_else(|| panic!("{who} was never cut off"));
        assert!(
            cut >= HEADER_TIMEOUT - Duration::from_secs(1),
            "{who}: cut after {cut:?}"
        );
    }
    assert!(served >= 10, "only {served} normal requests were served");
    assert!(backend.seen().iter().all(|s| s.path == "/ok"));
}
