//! The router's limits on what clients send, end to end: the real `slipway` binary in front of
//! a Python stdlib app (`http.server`) that writes down every request line it starts to read.
//! A head too large or with too many headers gets Slipway's 431, a request without `Host` its
//! 400, a body over the service's `limits.body` its 413, all before the app sees them; a
//! client that sends a head, a body or the HTTP/2 preface too slowly is cut off within the
//! server's timeouts.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use support::*;

/// Records each request line before `http.server` reads the headers (which it refuses itself
/// with a 431 when there are over 100 or a line is over 64 KiB), answers `ok` to GET and
/// `got <n> bytes` to POST, reading sized and chunked bodies.
const APP: &str = r#"
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
seen = open(os.environ["SEEN"], "a", buffering=1)
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def parse_request(self):
        seen.write(self.raw_requestline.decode("latin-1").split(" ")[1] + "\n")
        return super().parse_request()
    def answer(self, body):
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_GET(self):
        self.answer(b"ok")
    def do_POST(self):
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    break
                data += self.rfile.read(size)
                self.rfile.readline()
        else:
            data = self.rfile.read(int(self.headers.get("content-length", "0")))
        self.answer(f"got {len(data)} bytes".encode())
    def log_message(self, *a):
        pass
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

const HOST: &str = "web.limits.localhost";

/// The bound the slow-client test starts the server with, for heads and for pauses in bodies.
const TIMEOUT: Duration = Duration::from_secs(2);

/// A server started with `server_args`, running the app with `limits` (if not empty) in its
/// service.
fn start(server_args: &[&str], limits: &str) -> (Slipway, std::path::PathBuf) {
    let s = Slipway::start_with(server_args);
    let dir = s.dir.path().join("limits");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("app.py"), APP).unwrap();
    // The app runs from a snapshot of its folder: it writes down what it saw here.
    let mut spec = format!(
        "app: limits\nservices:\n  web:\n    run: [\"python3\", \"app.py\"]\n    env: {{ SEEN: \"{}\" }}\n",
        path_str(&dir.join("seen.log"))
    );
    if !limits.is_empty() {
        spec.push_str(&format!("    limits: {limits}\n"));
    }
    std::fs::write(dir.join("slipway.yaml"), spec).unwrap();
    s.ok(&["up", &path_str(&dir), "--detach"]);
    s.wait_body(HOST, "/", "ok", Duration::from_secs(15));
    (s, dir)
}

/// What came back on one connection.
#[derive(Debug)]
struct Answer {
    status: Option<u16>,
    head: String,
    body: String,
    /// From the first byte written to the first byte of the answer, or to the close if
    /// nothing came.
    took: Duration,
    /// From the first byte written to the close.
    closed: Duration,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }

    /// Asserts Slipway's own answer: `status` with `x-slipway-error: <kind>`.
    fn assert_slipway(&self, status: u16, kind: &str) {
        assert_eq!(self.status, Some(status), "{self:?}");
        assert_eq!(
            self.header("x-slipway-error").as_deref(),
            Some(kind),
            "{self:?}"
        );
    }

    /// The same for an answer that hyper gives itself when the whole suite runs without the
    /// router's fast path (`SLIPWAY_TEST_SERVER_ARG=--no-fast-path`): a head over the limits
    /// gets hyper's bare 431, and a slow head a closed connection.
    fn assert_slipway_or_hyper(&self, status: u16, kind: &str) {
        if std::env::var("SLIPWAY_TEST_SERVER_ARG").is_ok_and(|a| a == "--no-fast-path") {
            assert!(self.status.is_none_or(|s| s == status), "{self:?}");
        } else {
            self.assert_slipway(status, kind);
        }
    }
}

/// Writes the pieces of a request with `pause` between them (a write the router refuses to
/// read may fail: that is an answer too) while reading until the router closes the
/// connection.
fn exchange(router: SocketAddr, pieces: &[&[u8]], pause: Duration) -> Answer {
    let mut stream = TcpStream::connect(router).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let mut reader = stream.try_clone().unwrap();
    let started = Instant::now();
    let read = std::thread::spawn(move || {
        let mut received = Vec::new();
        let mut first = None;
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = reader.read(&mut buf) {
            if n == 0 {
                break;
            }
            first.get_or_insert_with(|| started.elapsed());
            received.extend_from_slice(&buf[..n]);
        }
        (received, first, started.elapsed())
    });
    for (i, piece) in pieces.iter().enumerate() {
        if i > 0 {
            std::thread::sleep(pause);
        }
        if read.is_finished() || stream.write_all(piece).is_err() {
            break;
        }
    }
    let (received, first, closed) = read.join().unwrap();
    let text = String::from_utf8_lossy(&received).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    Answer {
        status: head.split(' ').nth(1).and_then(|code| code.parse().ok()),
        head: head.to_owned(),
        body: body.to_owned(),
        took: first.unwrap_or(closed),
        closed,
    }
}

fn send(router: SocketAddr, raw: &str) -> Answer {
    exchange(router, &[raw.as_bytes()], Duration::ZERO)
}

/// The request paths the app started to read.
fn seen(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("seen.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn oversized_heads_and_requests_without_host_are_refused_by_slipway() {
    // The defaults: heads up to 64 KiB with up to 100 header fields.
    let (s, dir) = start(&[], "");
    let big = "a".repeat(200_000);
    let answer = send(
        s.router,
        &format!("GET /big HTTP/1.1\r\nHost: {HOST}\r\nX-Big: {big}\r\n\r\n"),
    );
    answer.assert_slipway_or_hyper(431, "head-too-large");
    if answer.header("x-slipway-error").is_some() {
        assert!(answer.body.contains("longer than 64 KiB"), "{answer:?}");
    }

    let many: String = (0..200).map(|i| format!("X-Header-{i}: {i}\r\n")).collect();
    let answer = send(
        s.router,
        &format!("GET /crowded HTTP/1.1\r\nHost: {HOST}\r\n{many}\r\n"),
    );
    answer.assert_slipway_or_hyper(431, "too-many-headers");

    let answer = send(
        s.router,
        "GET /no-host HTTP/1.1\r\nConnection: close\r\n\r\n",
    );
    answer.assert_slipway(400, "bad-host");

    // Within the limits, the same kinds of request reach the app.
    let fits = format!(
        "GET /fits HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\nX-Big: {}\r\n{}\r\n",
        "a".repeat(30_000),
        (0..90)
            .map(|i| format!("X-Header-{i}: {i}\r\n"))
            .collect::<String>()
    );
    let answer = send(s.router, &fits);
    assert_eq!(
        (answer.status, answer.body.as_str()),
        (Some(200), "ok"),
        "{answer:?}"
    );

    let seen = seen(&dir);
    for refused in ["/big", "/crowded", "/no-host"] {
        assert!(
            !seen.iter().any(|p| p == refused),
            "the app saw {refused}: {seen:?}"
        );
    }
    assert!(seen.iter().any(|p| p == "/fits"), "{seen:?}");
}

#[test]
fn a_body_over_the_service_limit_gets_413() {
    let (s, dir) = start(&[], "{ body: 1KiB }");
    let sized = |path: &str, n: usize| {
        format!(
            "POST {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\nContent-Length: {n}\r\n\r\n{}",
            "b".repeat(n)
        )
    };
    let chunked = |path: &str, chunks: usize| {
        let mut raw = format!(
            "POST {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
        );
        for _ in 0..chunks {
            raw.push_str(&format!("190\r\n{}\r\n", "c".repeat(400)));
        }
        raw.push_str("0\r\n\r\n");
        raw
    };
    // Said too long by Content-Length, small and large: refused before the app sees them.
    for (path, n) in [("/sized-over", 1025), ("/sized-large", 5_000_000)] {
        let answer = send(s.router, &sized(path, n));
        answer.assert_slipway(413, "body-too-large");
        assert!(answer.body.contains("at most 1 KiB"), "{answer:?}");
        assert!(answer.body.contains("limits.body"), "{answer:?}");
    }
    // Chunked: cut off when it grows past the limit.
    let answer = send(s.router, &chunked("/chunked-over", 4));
    answer.assert_slipway(413, "body-too-large");

    // Within the limit, both reach the app whole.
    let answer = send(s.router, &sized("/sized-fits", 1024));
    assert_eq!(answer.body, "got 1024 bytes", "{answer:?}");
    let answer = send(s.router, &chunked("/chunked-fits", 2));
    assert_eq!(answer.body, "got 800 bytes", "{answer:?}");

    let seen = seen(&dir);
    for refused in ["/sized-over", "/sized-large"] {
        assert!(
            !seen.iter().any(|p| p == refused),
            "the app saw {refused}: {seen:?}"
        );
    }
}

#[test]
fn slow_clients_are_cut_off_within_the_timeouts() {
    let (s, dir) = start(
        &[
            "--request-head-timeout",
            "2s",
            "--request-body-timeout",
            "2s",
        ],
        "{ body: 1KiB }",
    );
    let bound = TIMEOUT + Duration::from_secs(2);

    // Slowloris: a head that never ends, one byte every 200 ms.
    let mut pieces: Vec<&[u8]> =
        vec![b"GET /slowloris HTTP/1.1\r\nHost: web.limits.localhost\r\nX-Slow: "];
    pieces.extend(std::iter::repeat_n(&b"a"[..], 50));
    let answer = exchange(s.router, &pieces, Duration::from_millis(200));
    answer.assert_slipway_or_hyper(408, "request-timeout");
    assert!(
        answer.took >= TIMEOUT - Duration::from_millis(200),
        "{answer:?}"
    );
    assert!(answer.took < bound, "{answer:?}");
    // Then closed, after a short wait for the client to stop sending.
    assert!(answer.closed < bound + Duration::from_secs(2), "{answer:?}");

    // Half of the HTTP/2 preface, then nothing: disconnected without an answer.
    let answer = exchange(s.router, &[b"PRI * HTTP/2.0\r\n"], Duration::ZERO);
    assert_eq!(answer.status, None, "{answer:?}");
    assert!(
        answer.took >= TIMEOUT - Duration::from_millis(200),
        "{answer:?}"
    );
    assert!(answer.took < bound, "{answer:?}");

    // A body that stops half-way: sized (read whole by the router's fast path) and chunked
    // (streamed to the app as it comes).
    let sized = format!(
        "POST /stalled-sized HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 1000\r\n\r\n0123456789"
    );
    let chunked = format!(
        "POST /stalled-chunked HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\na\r\n0123456789\r\n"
    );
    for raw in [sized, chunked] {
        let answer = exchange(s.router, &[raw.as_bytes()], Duration::ZERO);
        answer.assert_slipway(408, "request-timeout");
        assert!(
            answer.took >= TIMEOUT - Duration::from_millis(200),
            "{answer:?}"
        );
        assert!(answer.took < bound, "{raw}: {answer:?}");
    }
    let seen = seen(&dir);
    assert!(!seen.iter().any(|p| p == "/slowloris"), "{seen:?}");
    // The server still serves everyone else.
    s.wait_body(HOST, "/", "ok", Duration::from_secs(2));
}
