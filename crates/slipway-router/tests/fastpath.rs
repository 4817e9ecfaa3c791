//! The HTTP/1.1 fast path against a scripted raw backend: every framing a backend may use
//! (sized, chunked with trailers, until close, none for `HEAD`), informational answers,
//! broken answers, connection reuse on both sides, the hand-over to hyper in the middle of a
//! connection, and the same upstream head as hyper's path for the same request.

#[allow(dead_code)]
mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use slipway_router::RouterConfig;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A raw HTTP/1.1 backend answering by path with fixed bytes, recording every request head
/// (and body) it reads and counting its connections.
struct Scripted {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
}

/// The answer to a path, and whether the backend closes the connection after sending it.
fn answer(path: &str) -> (&'static str, bool) {
    match path {
        "/chunked" => (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
             5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n",
            false,
        ),
        "/until-close" => ("HTTP/1.1 200 OK\r\nX-Kind: close\r\n\r\nuntil close", true),
        "/head" => ("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", false),
        "/hints" => (
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n\
             HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            false,
        ),
        "/bad-length" => (
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
            false,
        ),
        "/closing" => (
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
            true,
        ),
        "/hop" => (
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: X-Private\r\nX-Private: 1\r\n\
             Keep-Alive: timeout=5\r\nX-Request-Id: backend-made\r\nX-Public: 2\r\n\r\nok",
            false,
        ),
        _ => ("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false),
    }
}

impl Scripted {
    async fn start() -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (count, seen) = (connections.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_scripted(stream, seen.clone()));
            }
        });
        Scripted {
            addr,
            connections,
            requests,
        }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("lock").clone()
    }
}

async fn serve_scripted(mut stream: TcpStream, seen: Arc<Mutex<Vec<String>>>) {
    let mut buf = Vec::new();
    loop {
        let Some(end) = read_until_head_end(&mut stream, &mut buf).await else {
            return;
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or(0);
        while buf.len() < length {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = String::from_utf8_lossy(&buf[..length]).into_owned();
        buf.drain(..length);
        let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
        seen.lock().expect("lock").push(format!("{head}{body}"));
        let (bytes, close) = answer(&path);
        if stream.write_all(bytes.as_bytes()).await.is_err() || close {
            return;
        }
    }
}

/// Reads into `buf` until it holds a whole head; returns the head's length.
async fn read_until_head_end(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(at + 4);
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

async fn proxy_to(backend: &Scripted, fast: bool) -> Proxy {
    Proxy::with_config(
        RouterConfig {
            h1_fast_path: fast,
            ..RouterConfig::default()
        },
        host_table("app.test", vec![ready_backend(backend.addr, "scripted")]),
    )
    .await
}

/// A scripted backend, a fast-path proxy in front of it, and a raw client connection to the
/// proxy.
async fn connected() -> (Scripted, Proxy, TcpStream) {
    let backend = Scripted::start().await;
    let proxy = proxy_to(&backend, true).await;
    let stream = TcpStream::connect(proxy.addr).await.expect("connect");
    (backend, proxy, stream)
}

/// Sends raw bytes and reads what comes back until `done` says the answer is complete, or
/// the connection closes.
async fn exchange_raw(
    stream: &mut TcpStream,
    request: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut got = Vec::new();
    while !done(&String::from_utf8_lossy(&got)) {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut chunk)).await {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => got.extend_from_slice(&chunk[..n]),
            Ok(Err(err)) => panic!("read failed: {err}"),
            Err(_) => panic!(
                "no complete answer; got {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_bodies_pass_through_unchanged_and_both_connections_stay_open() {
    bounded(async {
        let (backend, _proxy, mut stream) = connected().await;
        let got = exchange_raw(
            &mut stream,
            "GET /chunked HTTP/1.1\r\nHost: app.test\r\n\r\n",
            |got| got.ends_with("0\r\nX-Trailer: 1\r\n\r\n"),
        )
        .await;
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        assert!(got.contains("\r\nTransfer-Encoding: chunked\r\n"), "{got}");
        assert!(
            got.ends_with("\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n"),
            "{got}"
        );
        // The same client connection and the same upstream connection take the next request.
        let got = exchange_raw(
            &mut stream,
            "GET / HTTP/1.1\r\nHost: app.test\r\n\r\n",
            |got| got.ends_with("\r\n\r\nok"),
        )
        .await;
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        assert_eq!(backend.connections.load(Ordering::SeqCst), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_delimited_by_close_closes_the_client_connection_too() {
    bounded(async {
        let (_backend, _proxy, mut stream) = connected().await;
        // Nothing marks the end of this body but the close, so `done` never says it is done.
        let got = exchange_raw(
            &mut stream,
            "GET /until-close HTTP/1.1\r\nHost: app.test\r\n\r\n",
            |_| false,
        )
        .await;
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        assert!(got.contains("\r\nconnection: close\r\n"), "{got}");
        assert!(got.ends_with("\r\n\r\nuntil close"), "{got}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_answers_have_no_body_and_early_hints_are_forwarded_but_continue_is_not() {
    bounded(async {
        let (backend, _proxy, mut stream) = connected().await;
        let got = exchange_raw(
            &mut stream,
            "HEAD /head HTTP/1.1\r\nHost: app.test\r\n\r\n",
            |got| got.ends_with("\r\n\r\n"),
        )
        .await;
        assert!(got.contains("Content-Length: 5\r\n"), "{got}");
        let got = exchange_raw(
            &mut stream,
            "GET /hints HTTP/1.1\r\nHost: app.test\r\n\r\n",
            |got| got.ends_with("\r\n\r\nok"),
        )
        .await;
        assert!(
            got.starts_with(
                "HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\n"
            ),
            "{got}"
        );
        assert!(!got.contains("100 Continue"), "{got}");
        assert_eq!(backend.connections.load(Ordering::SeqCst), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_with_conflicting_lengths_is_a_502_and_its_connection_is_dropped() {
    bounded(async {
        let backend = Scripted::start().await;
        let proxy = proxy_to(&backend, true).await;
        let reply = get(proxy.addr, "app.test", "/bad-length").await;
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{reply:?}");
        assert_eq!(reply.header("x-slipway-error"), Some("upstream-failed"));
        assert!(
            reply.body.contains("conflicting Content-Length values"),
            "{}",
            reply.body
        );
        let reply = get(proxy.addr, "app.test", "/").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(backend.connections.load(Ordering::SeqCst), 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_connection_closed_after_its_answer_is_not_reused() {
    bounded(async {
        let backend = Scripted::start().await;
        let proxy = proxy_to(&backend, true).await;
        let mut client = Client::connect(proxy.addr).await;
        for _ in 0..3 {
            let reply = client.get("app.test", "/closing").await;
            assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "ok"));
            // The backend's `Connection: close` is about its own connection, not the client's.
            assert_eq!(reply.header("connection"), None);
        }
        assert_eq!(backend.connections.load(Ordering::SeqCst), 3);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_bodies_go_with_their_head_and_large_ones_move_the_connection_to_hyper() {
    bounded(async {
        let backend = Scripted::start().await;
        let proxy = proxy_to(&backend, true).await;
        let mut client = Client::connect(proxy.addr).await;
        let req = with_body(request("POST", "app.test", "/orders"), "order=1");
        let reply = read(client.send(req).await).await;
        assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "ok"));
        // Over 64 KiB: hyper serves the connection from here on, streaming the body.
        let large = "x".repeat(100_000);
        let req = with_body(request("PUT", "app.test", "/upload"), large.clone());
        let reply = read(client.send(req).await).await;
        assert_eq!((reply.status, reply.body.as_str()), (StatusCode::OK, "ok"));
        assert_eq!(client.get("app.test", "/").await.body, "ok");
        let requests = backend.requests();
        assert_eq!(requests.len(), 3);
        assert!(requests[0].starts_with("POST /orders HTTP/1.1\r\n"));
        assert!(requests[0].ends_with("\r\n\r\norder=1"), "{}", requests[0]);
        assert!(requests[1].starts_with("PUT /upload HTTP/1.1\r\n"));
        assert!(requests[1].ends_with(&format!("\r\n\r\n{large}")));
        assert!(requests[2].starts_with("GET / HTTP/1.1\r\n"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_sent_in_pieces_is_gathered_before_it_is_forwarded() {
    bounded(async {
        let (backend, _proxy, mut stream) = connected().await;
        stream
            .write_all(b"PUT /doc HTTP/1.1\r\nHost: app.test\r\nContent-Length: 10\r\n\r\nhello")
            .await
            .expect("write");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let got = exchange_raw(
            &mut stream,
            "worldGET /next HTTP/1.1\r\nHost: app.test\r\n\r\n",
            |got| got.matches("\r\n\r\nok").count() == 2,
        )
        .await;
        assert_eq!(got.matches("HTTP/1.1 200 OK\r\n").count(), 2, "{got}");
        let requests = backend.requests();
        assert!(
            requests[0].ends_with("\r\n\r\nhelloworld"),
            "{}",
            requests[0]
        );
        assert!(
            requests[1].starts_with("GET /next HTTP/1.1\r\n"),
            "{}",
            requests[1]
        );
        assert_eq!(backend.connections.load(Ordering::SeqCst), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_idled_past_its_buffer_hold_takes_long_heads_and_bodies() {
    bounded(async {
        let (backend, _proxy, mut stream) = connected().await;
        let ok = |got: &str| got.ends_with("\r\n\r\nok");
        let got = exchange_raw(&mut stream, "GET / HTTP/1.1\r\nHost: app.test\r\n\r\n", ok).await;
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        // Idle for longer than the connection keeps its buffers (one second): it reads the
        // next requests into new ones, here a head five times the first buffer's size with a
        // body, sent in two pieces, then a short request.
        tokio::time::sleep(Duration::from_millis(1300)).await;
        let cookie = "c".repeat(10_000);
        let long = format!(
            "POST /form HTTP/1.1\r\nHost: app.test\r\nCookie: {cookie}\r\nContent-Length: 5\r\n\r\nhello"
        );
        let (first, rest) = long.split_at(1000);
        stream.write_all(first.as_bytes()).await.expect("write");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let got = exchange_raw(&mut stream, rest, ok).await;
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        let got = exchange_raw(&mut stream, "GET /after HTTP/1.1\r\nHost: app.test\r\n\r\n", ok).await;
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
        let requests = backend.requests();
        assert_eq!(requests.len(), 3, "{requests:?}");
        assert!(requests[1].starts_with("POST /form HTTP/1.1\r\n"), "{}", &requests[1][..40]);
        assert!(requests[1].contains(&format!("\r\ncookie: {cookie}\r\n")) || requests[1].contains(&format!("\r\nCookie: {cookie}\r\n")));
        assert!(requests[1].ends_with("\r\n\r\nhello"));
        assert!(requests[2].starts_with("GET /after HTTP/1.1\r\n"), "{}", requests[2]);
        // The fast path served all three over one upstream connection.
        assert_eq!(backend.connections.load(Ordering::SeqCst), 1);
    })
    .await;
}

/// The request heads a backend saw, with header names lowercased and the lines sorted, the
/// request id's value left out.
fn normalized(head: &str) -> Vec<String> {
    let mut lines: Vec<String> = head
        .lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (name, value) = l.split_once(':').expect("header line");
            let name = name.to_ascii_lowercase();
            if name == "x-request-id" {
                name
            } else {
                format!("{name}:{}", value.trim())
            }
        })
        .collect();
    lines.sort();
    lines
}

/// The header names a client saw, lowercased and sorted, without `date`.
fn response_names(got: &str) -> Vec<String> {
    let head = got.split("\r\n\r\n").next().unwrap_or_default();
    let mut names: Vec<String> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':').map(|(n, _)| n.to_ascii_lowercase()))
        .filter(|n| n != "date")
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_paths_send_the_same_head_upstream_and_the_same_headers_back() {
    bounded(async {
        let request = "GET /hop?q=1 HTTP/1.1\r\nHost: app.test\r\nAccept: */*\r\n\
                       Connection: keep-alive\r\nKeep-Alive: 5\r\nTE: trailers\r\n\
                       X-Forwarded-For: 1.1.1.1\r\nX-Forwarded-Proto: https\r\n\
                       X-Request-Id: client-made\r\nCookie: a=1\r\n\r\n";
        let mut seen = Vec::new();
        let mut answered = Vec::new();
        for fast in [true, false] {
            let backend = Scripted::start().await;
            let proxy = proxy_to(&backend, fast).await;
            let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
            let got = exchange_raw(&mut stream, request, |got| got.ends_with("\r\n\r\nok")).await;
            assert!(got.contains("\r\nx-request-id: client-made\r\n"), "{got}");
            assert!(!got.contains("X-Private"), "{got}");
            answered.push(response_names(&got));
            let requests = backend.requests();
            assert!(requests[0].starts_with("GET /hop?q=1 HTTP/1.1\r\n"));
            seen.push(normalized(&requests[0]));
        }
        assert_eq!(seen[0], seen[1], "fast path first, hyper second");
        assert_eq!(answered[0], answered[1], "fast path first, hyper second");
        assert!(seen[0].contains(&"x-forwarded-for:1.1.1.1, 127.0.0.1".to_owned()));
        assert!(seen[0].contains(&"x-forwarded-proto:http".to_owned()));
        assert!(
            !seen[0]
                .iter()
                .any(|l| l.starts_with("te:") || l.starts_with("keep-alive"))
        );
    })
    .await;
}
