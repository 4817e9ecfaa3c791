//! The router's limits on what a client sends: the size of a request head and its number of
//! header fields (431), the `Host` header HTTP/1.1 requires (400), a service's request body
//! limit (413), and how slowly a client may send a head or a body (408, or a closed
//! connection). Each case runs on the HTTP/1.1 fast path and on hyper's path, over raw
//! sockets to a real router in front of a real backend that counts the requests it gets.

#[allow(dead_code)]
mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use slipway_router::{RouteTable, RouterConfig};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A backend that reads each request body whole, then answers `got <n> bytes`; it counts the
/// requests it parsed.
struct Counter {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
}

impl Counter {
    async fn start() -> Counter {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let counted = counted.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        counted.fetch_add(1, Ordering::SeqCst);
                        async move {
                            let body = req.into_body().collect().await;
                            let text = match body {
                                Ok(body) => format!("got {} bytes", body.to_bytes().len()),
                                Err(err) => format!("body failed: {err}"),
                            };
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .max_headers(1000)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Counter { addr, requests }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// A router with `config` (fast path on or off) in front of a counting backend, on host
/// `app.test`, whose service takes bodies of at most `max_body` bytes.
async fn setup(config: RouterConfig, max_body: Option<u64>) -> (Proxy, Counter) {
    let backend = Counter::start().await;
    let mut table = RouteTable::new();
    table.add_host(
        "app.test",
        target_with(
            "web",
            vec![(100, vec![ready_backend(backend.addr, "counter")])],
            |t| t.max_body = max_body,
        ),
    );
    (Proxy::with_config(config, table).await, backend)
}

fn config(fast: bool) -> RouterConfig {
    RouterConfig {
        h1_fast_path: fast,
        ..RouterConfig::default()
    }
}

/// What the router sent on one connection, and how it ended.
#[derive(Debug)]
struct Answer {
    status: Option<u16>,
    head: String,
    body: String,
    /// Whether the router closed the connection (rather than going quiet for `quiet`).
    closed: bool,
    /// When the first byte or the close came, from the moment the request was written.
    after: Duration,
    /// When the reading ended (the close, or the end of the quiet wait).
    ended: Duration,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        let prefix = format!("\r\n{name}: ");
        let lower = self.head.to_ascii_lowercase();
        let at = lower.find(&prefix)? + prefix.len();
        let end = lower[at..].find("\r\n").map_or(lower.len(), |i| at + i);
        Some(self.head[at..end].to_owned())
    }
}

/// Writes `bytes` on a new connection (what the router will not read may fail to be sent;
/// that is fine), then reads until the router closes or stays quiet for `quiet`.
async fn send(proxy: SocketAddr, bytes: &[u8], quiet: Duration) -> Answer {
    let mut stream = TcpStream::connect(proxy).await.expect("connect");
    let _ = stream.write_all(bytes).await;
    read_answer(&mut stream, quiet).await
}

async fn read_answer(stream: &mut TcpStream, quiet: Duration) -> Answer {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    let mut after = None;
    let closed = loop {
        match tokio::time::timeout(quiet, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => {
                after.get_or_insert(started.elapsed());
                received.extend_from_slice(&buf[..n]);
            }
            Err(_) => break false,
        }
    };
    let text = String::from_utf8_lossy(&received).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Answer {
        status: head.split(' ').nth(1).and_then(|code| code.parse().ok()),
        head: head.to_owned(),
        body: body.to_owned(),
        closed,
        after: after.unwrap_or_else(|| started.elapsed()),
        ended: started.elapsed(),
    }
}

/// Asserts the router's own answer: `status` with `x-slipway-error: <kind>`.
fn assert_refused(answer: &Answer, status: u16, kind: &str) {
    assert_eq!(answer.status, Some(status), "{answer:?}");
    assert_eq!(
        answer.header("x-slipway-error").as_deref(),
        Some(kind),
        "{answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heads_over_the_limits_get_431_and_reach_no_backend() {
    bounded(async {
        for fast in [true, false] {
            let (proxy, backend) = setup(config(fast), None).await;
            let big = "a".repeat(200_000);
            let many: String = (0..200).map(|i| format!("X-H{i}: {i}\r\n")).collect();
            let huge = format!("GET / HTTP/1.1\r\nHost: app.test\r\nX-Big: {big}\r\n\r\n");
            let crowded = format!("GET / HTTP/1.1\r\nHost: app.test\r\n{many}\r\n");
            for (what, raw, kind) in [
                ("a 200 kB header", &huge, "head-too-large"),
                ("200 headers", &crowded, "too-many-headers"),
            ] {
                let answer = send(proxy.addr, raw.as_bytes(), Duration::from_secs(5)).await;
                if fast {
                    // The fast path reads every new connection's first head: the router's
                    // own answer, and the connection closed.
                    assert_refused(&answer, 431, kind);
                    assert!(answer.closed, "{what}: {answer:?}");
                } else {
                    // Hyper's own 431 (without the router's header).
                    assert_eq!(answer.status, Some(431), "{what}: {answer:?}");
                }
            }
            assert_eq!(backend.requests(), 0, "fast path {fast}");
            // A head just within the limits is forwarded.
            let fits = format!(
                "GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\nX-Big: {}\r\n\r\n",
                "a".repeat(60_000)
            );
            let answer = send(proxy.addr, fits.as_bytes(), Duration::from_secs(5)).await;
            assert_eq!(answer.status, Some(200), "{answer:?}");
            assert_eq!(backend.requests(), 1);
        }
        // HTTP/2 heads have the same room (h2's own default is 16 KiB).
        let (proxy, backend) = setup(config(true), None).await;
        let mut h2 = h2_client(proxy.addr).await;
        let req = with_body(
            request("GET", "app.test", "http://app.test/").header("x-big", "a".repeat(40_000)),
            "",
        );
        let reply = read(h2.send_request(req).await.expect("h2 response")).await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        assert_eq!(backend.requests(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_head_limits_can_be_changed() {
    bounded(async {
        let config = RouterConfig {
            max_head_bytes: 2048,
            max_headers: 150,
            ..RouterConfig::default()
        };
        let (proxy, backend) = setup(config, None).await;
        let long = format!(
            "GET / HTTP/1.1\r\nHost: app.test\r\nX-Long: {}\r\n\r\n",
            "a".repeat(3000)
        );
        let answer = send(proxy.addr, long.as_bytes(), Duration::from_secs(5)).await;
        assert_refused(&answer, 431, "head-too-large");
        assert!(answer.body.contains("2 KiB"), "{answer:?}");
        // 120 short headers are more than the fast path reads itself, but within the limit.
        let headers = |n: usize| -> String { (0..n).map(|i| format!("X{i}: {i}\r\n")).collect() };
        let within = format!(
            "GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n{}\r\n",
            headers(120)
        );
        let answer = send(proxy.addr, within.as_bytes(), Duration::from_secs(5)).await;
        assert_eq!(answer.status, Some(200), "{answer:?}");
        let over = format!("GET / HTTP/1.1\r\nHost: app.test\r\n{}\r\n", headers(160));
        let answer = send(proxy.addr, over.as_bytes(), Duration::from_secs(5)).await;
        assert_refused(&answer, 431, "too-many-headers");
        assert_eq!(backend.requests(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http11_request_needs_exactly_one_host() {
    bounded(async {
        for fast in [true, false] {
            let (proxy, backend) = setup(config(fast), None).await;
            let none = send(
                proxy.addr,
                b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n",
                Duration::from_secs(2),
            )
            .await;
            assert_refused(&none, 400, "bad-host");
            assert!(none.body.contains("Host header"), "{none:?}");
            let two = send(
                proxy.addr,
                b"GET / HTTP/1.1\r\nHost: app.test\r\nHost: app.test\r\n\r\n",
                Duration::from_secs(2),
            )
            .await;
            assert_refused(&two, 400, "bad-host");
            let absolute = send(
                proxy.addr,
                b"GET http://app.test/ HTTP/1.1\r\n\r\n",
                Duration::from_secs(2),
            )
            .await;
            assert_refused(&absolute, 400, "bad-host");
            // HTTP/1.0 has no such rule: without a host there is simply no route.
            let old = send(
                proxy.addr,
                b"GET / HTTP/1.0\r\n\r\n",
                Duration::from_secs(2),
            )
            .await;
            assert_refused(&old, 404, "no-route");
            assert_eq!(backend.requests(), 0, "fast path {fast}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_service_limit_get_413() {
    bounded(async {
        for fast in [true, false] {
            let (proxy, backend) = setup(config(fast), Some(1000)).await;
            let sized = |n: usize| {
                format!(
                    "POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: {n}\r\n\r\n{}",
                    "b".repeat(n)
                )
            };
            // Said too long by its Content-Length, small or large: refused before it is
            // forwarded, and read to its end so the connection stays usable.
            for n in [1001, 300_000] {
                let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
                stream.write_all(sized(n).as_bytes()).await.expect("write");
                let answer = read_head_and_body(&mut stream).await;
                assert_refused(&answer, 413, "body-too-large");
                assert!(answer.body.contains("at most 1000 bytes"), "{answer:?}");
                // The next request on the same connection is served.
                stream.write_all(sized(10).as_bytes()).await.expect("write");
                let next = read_head_and_body(&mut stream).await;
                assert_eq!(next.status, Some(200), "{n}: {next:?}");
            }
            assert_eq!(backend.requests(), 2, "fast path {fast}");
            // Chunked: refused once it grows past the limit.
            let chunked = |chunks: usize| {
                let mut raw = String::from(
                    "POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n",
                );
                for _ in 0..chunks {
                    raw.push_str(&format!("1f4\r\n{}\r\n", "c".repeat(500)));
                }
                raw.push_str("0\r\n\r\n");
                raw
            };
            let answer = send(proxy.addr, chunked(6).as_bytes(), Duration::from_secs(5)).await;
            assert_refused(&answer, 413, "body-too-large");
            let answer = send(proxy.addr, chunked(2).as_bytes(), Duration::from_secs(1)).await;
            assert_eq!(answer.status, Some(200), "{answer:?}");
            assert_eq!(answer.body, "got 1000 bytes");
        }
        // HTTP/2: the same limit from `content-length`.
        let (proxy, backend) = setup(config(true), Some(1000)).await;
        let mut h2 = h2_client(proxy.addr).await;
        let req = with_body(
            request("POST", "app.test", "http://app.test/"),
            vec![b'd'; 1001],
        );
        let reply = read(h2.send_request(req).await.expect("h2 response")).await;
        assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE, "{reply:?}");
        assert_eq!(reply.header("x-slipway-error"), Some("body-too-large"));
        assert_eq!(backend.requests(), 0);
    })
    .await;
}

/// Reads one response with a `Content-Length` body from a connection that stays open.
async fn read_head_and_body(stream: &mut TcpStream) -> Answer {
    let head = read_head(stream).await;
    let length = head
        .to_ascii_lowercase()
        .lines()
        .find_map(|line| line.strip_prefix("content-length: ").map(str::to_owned))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.expect("read body");
    let head = head.trim_end().to_owned();
    Answer {
        status: head.split(' ').nth(1).and_then(|code| code.parse().ok()),
        head,
        body: String::from_utf8_lossy(&body).into_owned(),
        closed: false,
        after: Duration::ZERO,
        ended: Duration::ZERO,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_sending_its_body_gets_408() {
    bounded(async {
        for fast in [true, false] {
            let config = RouterConfig {
                body_timeout: Duration::from_millis(500),
                ..config(fast)
            };
            let (proxy, backend) = setup(config, None).await;
            // A small body (read whole by the fast path) and a large one (streamed).
            for length in [100, 200_000] {
                let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
                let head = format!(
                    "POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: {length}\r\n\r\n"
                );
                stream.write_all(head.as_bytes()).await.expect("write");
                stream.write_all(&[b'e'; 10]).await.expect("write");
                let answer = read_answer(&mut stream, Duration::from_secs(5)).await;
                assert_refused(&answer, 408, "request-timeout");
                assert!(answer.closed, "{answer:?}");
                assert!(
                    answer.after >= Duration::from_millis(400)
                        && answer.after < Duration::from_secs(3),
                    "{length}: {answer:?}"
                );
            }
            // The fast path forwards a small body only once it has all of it.
            if fast {
                assert!(backend.requests() <= 1);
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_heads_and_half_prefaces_are_cut_at_the_head_timeout() {
    bounded(async {
        for fast in [true, false] {
            let config = RouterConfig {
                head_timeout: Duration::from_secs(1),
                ..config(fast)
            };
            let (proxy, backend) = setup(config, None).await;
            let partial = send(
                proxy.addr,
                b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Slow: a",
                Duration::from_secs(5),
            )
            .await;
            assert!(partial.closed, "{partial:?}");
            assert!(
                partial.after >= Duration::from_millis(900)
                    && partial.after < Duration::from_secs(4),
                "{partial:?}"
            );
            if fast {
                assert_refused(&partial, 408, "request-timeout");
            }
            for start in [&b"PRI * HTTP/2.0\r\n"[..], b""] {
                let cut = send(proxy.addr, start, Duration::from_secs(5)).await;
                assert!(cut.closed && cut.status.is_none(), "{cut:?}");
                assert!(
                    cut.after >= Duration::from_millis(900) && cut.after < Duration::from_secs(4),
                    "{cut:?}"
                );
            }
            // The whole preface and then silence: HTTP/2 pings go unanswered.
            let silent = send(
                proxy.addr,
                b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
                Duration::from_secs(8),
            )
            .await;
            assert!(
                silent.closed && silent.ended < Duration::from_secs(6),
                "{silent:?}"
            );
            assert_eq!(backend.requests(), 0);
        }
    })
    .await;
}

/// A router with a head timeout of 1 s in front of a support backend, on host `app.test`.
async fn one_second_heads() -> (TestBackend, Proxy) {
    let server = TestBackend::start("a").await;
    let config = RouterConfig {
        head_timeout: Duration::from_secs(1),
        ..RouterConfig::default()
    };
    let proxy = Proxy::with_config(config, host_table("app.test", vec![server.backend()])).await;
    (server, proxy)
}

/// HTTP/2 without pings (see `h2.rs`): a stream waiting longer than several head timeouts for
/// its answer keeps its connection, and the connection, once it has no stream open, is closed
/// within about two head timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_http2_connections_close_but_slow_answers_arrive() {
    bounded(async {
        let (_server, proxy) = one_second_heads().await;
        let mut sender = h2_client(proxy.addr).await;
        sender.ready().await.expect("h2 ready");
        let req = http::Request::get("http://app.test/sleep/3500")
            .body(empty())
            .expect("request");
        let reply = read(sender.send_request(req).await.expect("h2 response")).await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        assert!(!sender.is_closed());
        let idle = Instant::now();
        wait_until("the idle connection is closed", || sender.is_closed()).await;
        let after = idle.elapsed();
        assert!(
            after >= Duration::from_millis(900) && after < Duration::from_secs(4),
            "{after:?}"
        );
    })
    .await;
}

/// An h2c client that asks for a large answer, grants all the flow-control window it can and
/// then stops reading: once the router's writes have waited a whole head timeout, the
/// connection is closed, so the client gets the end of the stream long before the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_that_stops_reading_is_cut() {
    bounded(async {
        let (_server, proxy) = one_second_heads().await;
        const SIZE: usize = 256 << 20;
        let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
        let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        // SETTINGS: INITIAL_WINDOW_SIZE = 2^31 - 1.
        out.extend_from_slice(&[0, 0, 6, 0x4, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&[0, 4, 0x7f, 0xff, 0xff, 0xff]);
        // WINDOW_UPDATE of the connection up to 2^31 - 1.
        out.extend_from_slice(&[0, 0, 4, 0x8, 0, 0, 0, 0, 0]);
        out.extend_from_slice(&(0x7fff_ffffu32 - 65_535).to_be_bytes());
        // HEADERS of stream 1 (END_STREAM | END_HEADERS): GET http://app.test/bytes/SIZE.
        let path = format!("/bytes/{SIZE}");
        let mut block = vec![0x82, 0x86, 0x04, path.len() as u8];
        block.extend_from_slice(path.as_bytes());
        block.extend_from_slice(&[0x01, 8]);
        block.extend_from_slice(b"app.test");
        let len = block.len() as u32;
        out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, 0x1, 0x5]);
        out.extend_from_slice(&1u32.to_be_bytes());
        out.extend_from_slice(&block);
        stream.write_all(&out).await.expect("send the request");
        // Not reading: the router's socket fills up and its writes wait.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let mut received = 0;
        let mut buf = vec![0u8; 1 << 20];
        let cut = loop {
            match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break true,
                Ok(Ok(n)) => received += n,
                Err(_) => break false,
            }
        };
        assert!(cut, "the connection stayed open after {received} bytes");
        assert!(received < SIZE / 2, "{received} bytes of {SIZE} arrived");
    })
    .await;
}
