//! Health probes against an instance's port on 127.0.0.1: a TCP connect, or a minimal HTTP/1.1
//! `GET` written and parsed by hand so that every failure has a precise reason (connection
//! refused, timeout after N ms, or the status line with the start of the body).

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use crate::Check;

/// The most response-head bytes read before the response is called invalid.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// How many body bytes of a failing response are quoted in the reason.
const BODY_QUOTE_BYTES: usize = 100;

/// Runs one probe; `Err` carries the reason, such as `GET /ready -> 503 Service Unavailable`.
pub(crate) async fn run(check: &Check, port: u16, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let timed_out = || format!("timeout after {}ms", timeout.as_millis());
    match check {
        Check::Tcp => match timeout_at(deadline, TcpStream::connect(("127.0.0.1", port))).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(format!("TCP connect to port {port}: {}", io_reason(&err))),
            Err(_) => Err(format!("TCP connect to port {port}: {}", timed_out())),
        },
        Check::Http { path } => {
            let path = if path.starts_with('/') {
                path.clone()
            } else {
                format!("/{path}")
            };
            if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(format!(
                    "GET {path:?}: the probe path contains spaces or control characters; \
                     percent-encode them in slipway.yaml"
                ));
            }
            match timeout_at(deadline, http_get(&path, port, deadline)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(HttpFailure::Status(status))) => Err(format!("GET {path} -> {status}")),
                Ok(Err(HttpFailure::Other(reason))) => Err(format!("GET {path}: {reason}")),
                Err(_) => Err(format!("GET {path}: {}", timed_out())),
            }
        }
    }
}

enum HttpFailure {
    /// A response with a failing status: the status line, then `: ` and the start of the body.
    Status(String),
    /// No usable response.
    Other(String),
}

fn io_reason(err: &io::Error) -> String {
    match err.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
        io::ErrorKind::ConnectionReset => "connection reset by the app".to_string(),
        _ => err.to_string(),
    }
}

async fn http_get(path: &str, port: u16, deadline: Instant) -> Result<(), HttpFailure> {
    let io_err = |err: io::Error| HttpFailure::Other(io_reason(&err));
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(io_err)?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: slipway-probe\r\n\
         Accept: */*\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.map_err(io_err)?;

    let mut buf = Vec::with_capacity(1024);
    let head_end = loop {
        if let Some(end) = find_head_end(&buf) {
            break end;
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(HttpFailure::Other(format!(
                "invalid HTTP response: no end of headers within {MAX_HEAD_BYTES} bytes"
            )));
        }
        let n = stream.read_buf(&mut buf).await.map_err(io_err)?;
        if n == 0 {
            return Err(HttpFailure::Other(if buf.is_empty() {
                "connection closed without a response".to_string()
            } else {
                format!("incomplete HTTP response: {}", quote(&buf))
            }));
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut head_lines = head.lines();
    let status_line = head_lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let (version, code, phrase) = (parts.next(), parts.next(), parts.next().unwrap_or(""));
    let code = match (version, code.and_then(|c| c.parse::<u16>().ok())) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") && (100..1000).contains(&code) => code,
        _ => {
            return Err(HttpFailure::Other(format!(
                "invalid HTTP response: {}",
                quote(status_line.as_bytes())
            )));
        }
    };
    if (200..400).contains(&code) {
        return Ok(());
    }

    // A failing status: quote the start of the body, reading only what arrives in time.
    let mut content_length = None;
    let mut chunked = false;
    for line in head_lines {
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                content_length = value.parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            }
        }
    }
    let mut body = buf.split_off(head_end);
    let wanted = match (chunked, content_length) {
        (true, _) => BODY_QUOTE_BYTES + 64,
        (false, Some(len)) => len.min(BODY_QUOTE_BYTES),
        (false, None) => BODY_QUOTE_BYTES,
    };
    while body.len() < wanted {
        match timeout_at(deadline, stream.read_buf(&mut body)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => break,
        }
    }
    let body = if chunked { dechunk(&body) } else { body };
    let text = quote(&body[..body.len().min(BODY_QUOTE_BYTES)]);
    let status = format!("{code} {}", phrase.trim()).trim_end().to_string();
    Err(HttpFailure::Status(if text.is_empty() {
        status
    } else {
        format!("{status}: {text}")
    }))
}

/// The length of the response head including its blank line, once it is complete.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4);
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Decodes as much of a chunked body as was received.
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&raw[..eol]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let Ok(size) = usize::from_str_radix(size_text, 16) else {
            break;
        };
        if size == 0 {
            break;
        }
        raw = &raw[eol + 2..];
        let take = size.min(raw.len());
        out.extend_from_slice(&raw[..take]);
        raw = &raw[take..];
        raw = raw.strip_prefix(b"\r\n").unwrap_or(raw);
    }
    out
}

/// Bytes as one line of readable text: invalid UTF-8 replaced, whitespace runs collapsed.
fn quote(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// Serves one canned response to every connection, after reading the request head.
    async fn serve(response: &'static [u8]) -> (u16, tokio::task::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut req = Vec::new();
            while find_head_end(&req).is_none() {
                if conn.read_buf(&mut req).await.unwrap() == 0 {
                    break;
                }
            }
            conn.write_all(response).await.unwrap();
            String::from_utf8(req)
                .unwrap()
                .lines()
                .map(str::to_string)
                .collect()
        });
        (port, task)
    }

    fn http(path: &str) -> Check {
        Check::Http { path: path.into() }
    }

    const TIMEOUT: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn http_success_sends_a_well_formed_request() {
        let (port, server) = serve(b"HTTP/1.1 204 No Content\r\n\r\n").await;
        run(&http("/ready"), port, TIMEOUT).await.unwrap();
        let request = server.await.unwrap();
        assert_eq!(request[0], "GET /ready HTTP/1.1");
        assert!(
            request.contains(&"Host: localhost".to_string()),
            "{request:?}"
        );
    }

    #[tokio::test]
    async fn http_redirect_passes() {
        let (port, _server) = serve(b"HTTP/1.0 302 Found\r\nLocation: /x\r\n\r\n").await;
        run(&http("ready"), port, TIMEOUT).await.unwrap();
    }

    #[tokio::test]
    async fn http_failure_quotes_status_and_the_first_100_body_bytes() {
        let (port, _server) = serve(
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 15\r\n\r\ndatabase\n down\n",
        )
        .await;
        let err = run(&http("/health"), port, TIMEOUT).await.unwrap_err();
        assert_eq!(
            err,
            "GET /health -> 500 Internal Server Error: database down"
        );

        let long: &'static [u8] = Box::leak(
            format!(
                "HTTP/1.1 503 Service Unavailable\r\n\r\n{}",
                "y".repeat(300)
            )
            .into_bytes()
            .into_boxed_slice(),
        );
        let (port, _server) = serve(long).await;
        let err = run(&http("/ready"), port, TIMEOUT).await.unwrap_err();
        assert_eq!(
            err,
            format!("GET /ready -> 503 Service Unavailable: {}", "y".repeat(100))
        );
    }

    #[tokio::test]
    async fn http_failure_without_body_and_with_chunked_body() {
        let (port, _server) =
            serve(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n").await;
        let err = run(&http("/ready"), port, TIMEOUT).await.unwrap_err();
        assert_eq!(err, "GET /ready -> 503 Service Unavailable");

        let (port, _server) = serve(
            b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nnot \r\n5\r\nready\r\n0\r\n\r\n",
        )
        .await;
        let err = run(&http("/ready"), port, TIMEOUT).await.unwrap_err();
        assert_eq!(err, "GET /ready -> 500 Oops: not ready");
    }

    #[tokio::test]
    async fn refused_connections_are_named() {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            listener.local_addr().unwrap().port()
        };
        let err = run(&http("/ready"), port, TIMEOUT).await.unwrap_err();
        assert_eq!(err, "GET /ready: connection refused");
        let err = run(&Check::Tcp, port, TIMEOUT).await.unwrap_err();
        assert_eq!(
            err,
            format!("TCP connect to port {port}: connection refused")
        );
    }

    #[tokio::test]
    async fn a_silent_server_times_out_with_the_timeout_in_the_reason() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let err = run(&http("/ready"), port, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert_eq!(err, "GET /ready: timeout after 200ms");
        // The TCP probe only needs the kernel to accept the connection.
        run(&Check::Tcp, port, TIMEOUT).await.unwrap();
        drop(listener);
    }

    #[tokio::test]
    async fn garbage_and_early_close_are_reported() {
        let (port, _server) = serve(b"SSH-2.0-OpenSSH\r\n\r\n").await;
        let err = run(&http("/"), port, TIMEOUT).await.unwrap_err();
        assert_eq!(err, "GET /: invalid HTTP response: SSH-2.0-OpenSSH");

        let (port, _server) = serve(b"").await;
        let err = run(&http("/"), port, TIMEOUT).await.unwrap_err();
        assert_eq!(err, "GET /: connection closed without a response");

        let err = run(&http("/a b"), port, TIMEOUT).await.unwrap_err();
        assert!(err.contains("percent-encode"), "{err}");
    }
}
