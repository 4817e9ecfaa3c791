//! Health probes against an instance's port on 127.0.0.1: a TCP connect, or a minimal HTTP/1.1
//! `GET` written and parsed by hand so that every failure has a precise reason (connection
//! refused, timeout after N ms, or the status line with an excerpt of the body). Every reason
//! names the address probed, such as `GET http://127.0.0.1:21345/ready -> 503 Service
//! Unavailable`: the port is chosen by slipway, so the user has no other way to see which one
//! the app was expected to listen on.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use crate::Check;

/// The most response-head bytes read before the response is called invalid.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// How many body bytes of a failing response are read for the excerpt in the reason: enough
/// to reach the `<title>` of an HTML error page (Django's debug page has it after about 200
/// bytes), little enough to read from a local socket in no time.
const BODY_READ_BYTES: usize = 8 * 1024;
/// The longest body excerpt in a reason, in characters, ellipsis included.
const EXCERPT_CHARS: usize = 100;

/// Where a probe connects, and whether the app was told that port in `$PORT`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Target {
    pub(crate) port: u16,
    /// Whether the instance's environment sets `PORT` to this port; the hint for a refused
    /// connection then names the variable.
    pub(crate) in_env: bool,
}

/// Runs one probe; `Err` carries the reason, such as
/// `GET http://127.0.0.1:21345/ready -> 503 Service Unavailable`.
pub(crate) async fn run(check: &Check, target: Target, timeout: Duration) -> Result<(), String> {
    let port = target.port;
    let deadline = Instant::now() + timeout;
    let timed_out = || format!("timeout after {}ms", timeout.as_millis());
    match check {
        Check::Tcp => match timeout_at(deadline, TcpStream::connect(("127.0.0.1", port))).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(err)) => Err(format!(
                "TCP connect to 127.0.0.1:{port}: {}",
                connect_reason(&err, target)
            )),
            Err(_) => Err(format!("TCP connect to 127.0.0.1:{port}: {}", timed_out())),
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
            let url = format!("http://127.0.0.1:{port}{path}");
            match timeout_at(deadline, http_get(&path, target, deadline)).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(HttpFailure::Status(status))) => Err(format!("GET {url} -> {status}")),
                Ok(Err(HttpFailure::Other(reason))) => Err(format!("GET {url}: {reason}")),
                Err(_) => Err(format!("GET {url}: {}", timed_out())),
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

/// Why a connect failed; a refused one says what to check.
fn connect_reason(err: &io::Error, target: Target) -> String {
    if err.kind() != io::ErrorKind::ConnectionRefused {
        return io_reason(err);
    }
    let port = target.port;
    if target.in_env {
        format!(
            "connection refused (nothing listens on port {port}, the port passed in PORT; \
             does the app listen on $PORT?)"
        )
    } else {
        format!("connection refused (nothing listens on port {port}; does the app listen on it?)")
    }
}

fn io_reason(err: &io::Error) -> String {
    match err.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
        io::ErrorKind::ConnectionReset => "connection reset by the app".to_string(),
        _ => err.to_string(),
    }
}

async fn http_get(path: &str, target: Target, deadline: Instant) -> Result<(), HttpFailure> {
    let io_err = |err: io::Error| HttpFailure::Other(io_reason(&err));
    let mut stream = TcpStream::connect(("127.0.0.1", target.port))
        .await
        .map_err(|err| HttpFailure::Other(connect_reason(&err, target)))?;
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

    // A failing status: quote an excerpt of the body, reading only what arrives in time.
    let mut content_length = None;
    let mut content_type = None;
    let mut chunked = false;
    for line in head_lines {
        if let Some((name, value)) = line.split_once(':') {
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                content_length = value.parse::<usize>().ok();
            } else if name.eq_ignore_ascii_case("content-type") {
                content_type = Some(value.to_string());
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            }
        }
    }
    let mut body = buf.split_off(head_end);
    let wanted = match (chunked, content_length) {
        (true, _) => BODY_READ_BYTES + 64,
        (false, Some(len)) => len.min(BODY_READ_BYTES),
        (false, None) => BODY_READ_BYTES,
    };
    while body.len() < wanted {
        match timeout_at(deadline, stream.read_buf(&mut body)).await {
            Ok(Ok(n)) if n > 0 => {}
            _ => break,
        }
    }
    let body = if chunked { dechunk(&body) } else { body };
    let text = excerpt(
        &body[..body.len().min(BODY_READ_BYTES)],
        content_type.as_deref(),
    );
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
    collapse(&String::from_utf8_lossy(bytes))
}

fn collapse(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The part of a failing response's body worth quoting, on one line of at most
/// [`EXCERPT_CHARS`] characters. From an HTML page, its `<title>` (Django's debug page titles
/// itself with the exception, such as `OperationalError at /`), or its text without tags if it
/// has no title; from anything else, the text. A longer text is cut at a word boundary (or a
/// character boundary within a long word) and ends in `…`.
fn excerpt(body: &[u8], content_type: Option<&str>) -> String {
    let text = String::from_utf8_lossy(body);
    // A body cut short by the read limit may end inside a character.
    let text = text.trim_end_matches('\u{FFFD}');
    let text = if is_html(text, content_type) {
        match html_title(text) {
            Some(title) if !title.is_empty() => title,
            _ => collapse(&decode_entities(&strip_tags(text))),
        }
    } else {
        collapse(text)
    };
    shorten(&text, EXCERPT_CHARS)
}

fn is_html(text: &str, content_type: Option<&str>) -> bool {
    if content_type.is_some_and(|t| t.to_ascii_lowercase().contains("html")) {
        return true;
    }
    let start = text.trim_start();
    let start = &start.as_bytes()[..start.len().min(16)];
    let start = String::from_utf8_lossy(start).to_ascii_lowercase();
    start.starts_with("<!doctype html") || start.starts_with("<html")
}

/// The text of the first `<title>` element, collapsed and decoded; up to the end of the text
/// if its end tag was not read.
fn html_title(html: &str) -> Option<String> {
    let lower = html.to_ascii_lowercase();
    let open = lower.find("<title")?;
    let start = open + lower[open..].find('>')? + 1;
    let end = lower[start..]
        .find("</title")
        .map_or(html.len(), |e| start + e);
    Some(collapse(&decode_entities(&html[start..end])))
}

/// HTML without its tags, comments, scripts and styles; each one becomes a space.
fn strip_tags(html: &str) -> String {
    let lower = html.to_ascii_lowercase();
    let mut out = String::with_capacity(html.len());
    let mut at = 0;
    while let Some(lt) = lower[at..].find('<').map(|i| at + i) {
        out.push_str(&html[at..lt]);
        out.push(' ');
        let rest = &lower[lt..];
        let skip_to = if rest.starts_with("<!--") {
            rest.find("-->").map(|e| lt + e + 3)
        } else if let Some(element) = ["script", "style"]
            .into_iter()
            .find(|name| rest[1..].starts_with(name))
        {
            let close = format!("</{element}");
            lower[lt..].find(&close).and_then(|c| {
                let after = lt + c;
                lower[after..].find('>').map(|e| after + e + 1)
            })
        } else {
            rest.find('>').map(|e| lt + e + 1)
        };
        match skip_to {
            Some(next) => at = next,
            // An unterminated tag at the end of what was read.
            None => return out,
        }
    }
    out.push_str(&html[at..]);
    out
}

/// Decodes the character references error pages commonly use.
fn decode_entities(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&#x27;", "'")
        .replace("&nbsp;", " ")
        .replace("&amp;", "&")
}

/// `text` if it has at most `max` characters; else its start, cut at the last space that
/// keeps at least half of it (or within a long word), followed by `…`, `max` characters at most.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let cut = text
        .char_indices()
        .nth(max.saturating_sub(1))
        .map_or(text.len(), |(i, _)| i);
    let head = &text[..cut];
    let head = if text[cut..].starts_with(' ') {
        head
    } else {
        match head.rfind(' ') {
            Some(space) if space >= cut / 2 => &head[..space],
            _ => head,
        }
    };
    format!("{}…", head.trim_end())
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

    /// A port that the app was told in `$PORT`.
    fn at(port: u16) -> Target {
        Target { port, in_env: true }
    }

    #[tokio::test]
    async fn http_success_sends_a_well_formed_request() {
        let (port, server) = serve(b"HTTP/1.1 204 No Content\r\n\r\n").await;
        run(&http("/ready"), at(port), TIMEOUT).await.unwrap();
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
        run(&http("ready"), at(port), TIMEOUT).await.unwrap();
    }

    #[tokio::test]
    async fn http_failure_quotes_url_status_and_a_body_excerpt() {
        let (port, _server) = serve(
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 15\r\n\r\ndatabase\n down\n",
        )
        .await;
        let err = run(&http("/health"), at(port), TIMEOUT).await.unwrap_err();
        assert_eq!(
            err,
            format!(
                "GET http://127.0.0.1:{port}/health -> 500 Internal Server Error: database down"
            )
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
        let err = run(&http("/ready"), at(port), TIMEOUT).await.unwrap_err();
        assert_eq!(
            err,
            format!(
                "GET http://127.0.0.1:{port}/ready -> 503 Service Unavailable: {}…",
                "y".repeat(99)
            )
        );
    }

    #[tokio::test]
    async fn http_failure_without_body_and_with_chunked_body() {
        let (port, _server) =
            serve(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n").await;
        let err = run(&http("/ready"), at(port), TIMEOUT).await.unwrap_err();
        assert_eq!(
            err,
            format!("GET http://127.0.0.1:{port}/ready -> 503 Service Unavailable")
        );

        let (port, _server) = serve(
            b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nnot \r\n5\r\nready\r\n0\r\n\r\n",
        )
        .await;
        let err = run(&http("/ready"), at(port), TIMEOUT).await.unwrap_err();
        assert_eq!(
            err,
            format!("GET http://127.0.0.1:{port}/ready -> 500 Oops: not ready")
        );
    }

    #[tokio::test]
    async fn refused_connections_are_named() {
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            listener.local_addr().unwrap().port()
        };
        let err = run(&http("/ready"), at(port), TIMEOUT).await.unwrap_err();
        assert_eq!(
            err,
            format!(
                "GET http://127.0.0.1:{port}/ready: connection refused (nothing listens on \
                 port {port}, the port passed in PORT; does the app listen on $PORT?)"
            )
        );
        let err = run(&Check::Tcp, at(port), TIMEOUT).await.unwrap_err();
        assert_eq!(
            err,
            format!(
                "TCP connect to 127.0.0.1:{port}: connection refused (nothing listens on \
                 port {port}, the port passed in PORT; does the app listen on $PORT?)"
            )
        );
        let not_in_env = Target {
            port,
            in_env: false,
        };
        let err = run(&Check::Tcp, not_in_env, TIMEOUT).await.unwrap_err();
        assert_eq!(
            err,
            format!(
                "TCP connect to 127.0.0.1:{port}: connection refused (nothing listens on \
                 port {port}; does the app listen on it?)"
            )
        );
    }

    #[tokio::test]
    async fn a_silent_server_times_out_with_the_timeout_in_the_reason() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let err = run(&http("/ready"), at(port), Duration::from_millis(200))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            format!("GET http://127.0.0.1:{port}/ready: timeout after 200ms")
        );
        // The TCP probe only needs the kernel to accept the connection.
        run(&Check::Tcp, at(port), TIMEOUT).await.unwrap();
        drop(listener);
    }

    #[tokio::test]
    async fn garbage_and_early_close_are_reported() {
        let (port, _server) = serve(b"SSH-2.0-OpenSSH\r\n\r\n").await;
        let err = run(&http("/"), at(port), TIMEOUT).await.unwrap_err();
        assert_eq!(
            err,
            format!("GET http://127.0.0.1:{port}/: invalid HTTP response: SSH-2.0-OpenSSH")
        );

        let (port, _server) = serve(b"").await;
        let err = run(&http("/"), at(port), TIMEOUT).await.unwrap_err();
        assert_eq!(
            err,
            format!("GET http://127.0.0.1:{port}/: connection closed without a response")
        );

        let err = run(&http("/a b"), at(port), TIMEOUT).await.unwrap_err();
        assert!(err.contains("percent-encode"), "{err}");
    }

    /// The start of Django's debug page for an exception (DEBUG = True), as sent.
    const DJANGO_500: &str = "<!DOCTYPE html>
<html lang=\"en\">
<head>
  <meta http-equiv=\"content-type\" content=\"text/html; charset=utf-8\">
  <meta name=\"robots\" content=\"NONE,NOARCHIVE\">
  <title>OperationalError
          at /ready</title>
  <style type=\"text/css\">
    html * { padding:0; margin:0; }
  </style>
  <script>
    function hideAll(elems) { for (var e = 0; e < elems.length; e++) { } }
  </script>
</head>
<body>
<div id=\"summary\">
  <h1>OperationalError
       at /ready</h1>
  <pre class=\"exception_value\">no such table: polls_question</pre>";

    #[tokio::test]
    async fn an_html_error_page_is_quoted_by_its_title() {
        let response = format!(
            "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/html; charset=utf-8\r\n\
             Content-Length: {}\r\n\r\n{DJANGO_500}{}",
            DJANGO_500.len() + 20_000,
            " ".repeat(20_000)
        );
        let response: &'static [u8] = Box::leak(response.into_bytes().into_boxed_slice());
        let (port, _server) = serve(response).await;
        let err = run(&http("/ready"), at(port), TIMEOUT).await.unwrap_err();
        assert_eq!(
            err,
            format!(
                "GET http://127.0.0.1:{port}/ready -> 500 Internal Server Error: \
                 OperationalError at /ready"
            )
        );
    }

    #[test]
    fn excerpts_of_html_prefer_the_title_then_the_text_without_tags() {
        assert_eq!(
            excerpt(DJANGO_500.as_bytes(), None),
            "OperationalError at /ready"
        );
        let untitled = "<html><head><style>p { color: red }</style></head><body>\
            <!-- <p>hidden</p> --><h1>Bad &amp; broken</h1>\n<p>Try   again</p><script>x()</script>";
        assert_eq!(
            excerpt(untitled.as_bytes(), Some("text/html")),
            "Bad & broken Try again"
        );
        // Without a content type, a page is known by its start; a title cut off by the read
        // limit is quoted as far as it was read.
        assert_eq!(
            excerpt(b"  <HTML><TITLE>502 Bad Gateway</TITLE>", None),
            "502 Bad Gateway"
        );
        assert_eq!(excerpt(b"<!doctype html><title>Cut sh", None), "Cut sh");
        assert_eq!(
            excerpt(b"<html><body>unterminated <b", None),
            "unterminated"
        );
        // Not HTML: the text itself, tags and all.
        assert_eq!(
            excerpt(b"{\"db\": \"<down>\"}", Some("application/json")),
            "{\"db\": \"<down>\"}"
        );
    }

    #[test]
    fn long_excerpts_are_cut_at_a_word_or_character_boundary() {
        let words = "word ".repeat(40);
        let cut = excerpt(words.as_bytes(), None);
        // The 99th character ends the 20th word: no word needs to go.
        assert_eq!(cut, format!("{}…", "word ".repeat(20).trim_end()));
        let cut = excerpt("wordy ".repeat(40).as_bytes(), None);
        assert_eq!(cut, format!("{}…", "wordy ".repeat(16).trim_end()));
        assert!(cut.chars().count() <= EXCERPT_CHARS);

        let accented = "é".repeat(300);
        assert_eq!(
            excerpt(accented.as_bytes(), None),
            format!("{}…", "é".repeat(99))
        );
        // A body cut inside a character loses the broken end, not the rest.
        let mut bytes = "ok ".repeat(3).into_bytes();
        bytes.push(0xC3);
        assert_eq!(excerpt(&bytes, None), "ok ok ok");

        assert_eq!(shorten("exactly", 7), "exactly");
        assert_eq!(shorten("two words", 7), "two…");
        assert_eq!(shorten("abcdefghij", 5), "abcd…");
    }
}
