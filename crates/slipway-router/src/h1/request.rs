//! Reading a client's request head on the HTTP/1.1 fast path, and writing the head that goes
//! upstream.
//!
//! The fast path takes only plain requests: HTTP/1.1 in origin form with one `Host`, a body
//! only if one `Content-Length` of digits says it is at most [`MAX_FAST_BODY`] long (it is
//! then read whole before it is sent, as nginx buffers request bodies, so a request can be
//! sent again after a reused connection failed under it), no `Transfer-Encoding`, no
//! `Upgrade` or `Expect`, and a `Connection` header, if any, that says only `keep-alive` or
//! `close`. Everything else — HTTP/2's preface, HTTP/1.0, chunked or large bodies, upgrades,
//! heads bigger than the read buffer, anything `httparse` refuses — is [`Parsed::Fallback`]:
//! the connection goes to hyper, which handles (or refuses) it with the full rules. So the
//! fast path never has to decide a framing question: a request whose length could be read
//! two ways is never on it.
//!
//! The upstream head is the client's head with the hop-by-hop headers (RFC 9110, section
//! 7.6.1) and the router's own `Slipway-Revision` left out, and `X-Forwarded-For`,
//! `X-Forwarded-Proto`, `X-Forwarded-Host` and (when the client sent none) `X-Request-Id`
//! added, as the hyper path does.

use std::ops::Range;

use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};

use crate::table::REVISION_HEADER;

/// Header fields read at most; a head with more is only checked against the router's limit
/// (`RouterConfig::max_headers`) and goes to hyper.
pub(crate) const MAX_HEADERS: usize = 100;

/// The longest request body the fast path takes (64 KiB); longer ones stream through hyper.
pub(crate) const MAX_FAST_BODY: u64 = 64 * 1024;

/// What a look at the start of the read buffer found.
pub(crate) enum Parsed {
    /// A complete plain request head.
    Plain(RequestHead),
    /// The head is not complete yet.
    Partial,
    /// The head has more header fields than the fast path reads (or the router allows), and
    /// may not be complete yet.
    Crowded,
    /// Not for the fast path: hyper takes the connection from here.
    Fallback,
}

/// A plain request head. Ranges index the read buffer the head was parsed from.
pub(crate) struct RequestHead {
    /// The length of the head in the buffer, final CRLF included.
    pub(crate) len: usize,
    /// The length of the body that follows the head (`Content-Length`, 0 without one).
    pub(crate) body_len: usize,
    pub(crate) path: Range<usize>,
    pub(crate) host: Range<usize>,
    /// Whether the method is idempotent (such a request may be sent again after a reused
    /// upstream connection failed under it).
    pub(crate) idempotent: bool,
    /// A `HEAD` request: its response has no body whatever its headers say.
    pub(crate) head_method: bool,
    /// The client asked to close the connection after this request.
    pub(crate) close: bool,
    /// The request id sent upstream, to be returned in the response.
    pub(crate) id: RequestId,
    /// The only headers route choice reads (`Slipway-Revision`, `Cookie`); empty (and not
    /// allocated) for most requests.
    pub(crate) choice: HeaderMap,
}

/// The request's id: the client's own `X-Request-Id`, or one the router made.
pub(crate) enum RequestId {
    Client(Range<usize>),
    Ours([u8; 36]),
}

impl RequestId {
    pub(crate) fn bytes<'a>(&'a self, buf: &'a [u8]) -> &'a [u8] {
        match self {
            RequestId::Client(range) => &buf[range.clone()],
            RequestId::Ours(text) => text,
        }
    }
}

/// What the router adds to every request it forwards.
pub(crate) struct Additions<'a> {
    /// The client's IP address, appended to `X-Forwarded-For`.
    pub(crate) client_addr: &'a [u8],
}

/// How one header of the client's head is treated.
enum Role {
    Forward,
    Drop,
    Host,
    RequestId,
    ForwardedFor,
    Cookie,
    Revision,
}

/// Parses the request head at the start of `buf`, reading at most `max_headers` header
/// fields. For a plain request, writes the head to send upstream into `upstream` (replacing
/// what it held); `next_id` makes a request id when the client sent none.
pub(crate) fn parse(
    buf: &[u8],
    max_headers: usize,
    additions: &Additions<'_>,
    next_id: impl FnOnce() -> [u8; 36],
    upstream: &mut Vec<u8>,
) -> Parsed {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut storage[..max_headers.min(MAX_HEADERS)]);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => return Parsed::Crowded,
        Err(_) => return Parsed::Fallback,
    };
    let (Some(method), Some(path), Some(1)) = (request.method, request.path, request.version)
    else {
        return Parsed::Fallback;
    };
    if !is_plain_origin_form(path) {
        return Parsed::Fallback;
    }
    let headers = &*request.headers;

    // First pass: classify every header and refuse what the fast path does not take.
    let mut roles = [const { None }; MAX_HEADERS];
    let mut host = None;
    let mut id = None;
    let mut forwarded_for = None;
    let mut close = false;
    let mut body_len = None;
    let mut choice = HeaderMap::new();
    for (i, header) in headers.iter().enumerate() {
        let name = header.name;
        let value = header.value;
        let role = match name.len() {
            2 if name.eq_ignore_ascii_case("te") => Role::Drop,
            4 if name.eq_ignore_ascii_case("host") => {
                if host.is_some() || value.is_empty() {
                    return Parsed::Fallback;
                }
                host = Some(range_of(buf, value));
                Role::Host
            }
            6 if name.eq_ignore_ascii_case("expect") => return Parsed::Fallback,
            6 if name.eq_ignore_ascii_case("cookie") => {
                if choice.contains_key(COOKIE) {
                    return Parsed::Fallback;
                }
                let Ok(value) = HeaderValue::from_bytes(value) else {
                    return Parsed::Fallback;
                };
                choice.insert(COOKIE, value);
                Role::Cookie
            }
            7 if name.eq_ignore_ascii_case("upgrade") => return Parsed::Fallback,
            7 if name.eq_ignore_ascii_case("trailer") => Role::Drop,
            10 if name.eq_ignore_ascii_case("connection") => {
                for token in value.split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if !token.eq_ignore_ascii_case(b"keep-alive") && !token.is_empty() {
                        // `Upgrade`, or headers named as hop-by-hop: hyper's path strips those.
                        return Parsed::Fallback;
                    }
                }
                Role::Drop
            }
            10 if name.eq_ignore_ascii_case("keep-alive") => Role::Drop,
            12 if name.eq_ignore_ascii_case("x-request-id") => {
                if id.is_some() || HeaderValue::from_bytes(value).is_err() {
                    return Parsed::Fallback;
                }
                id = Some(range_of(buf, value));
                Role::RequestId
            }
            14 if name.eq_ignore_ascii_case("content-length") => {
                let length = match parse_length(value) {
                    Some(length) if body_len.is_none() && length <= MAX_FAST_BODY => length,
                    _ => return Parsed::Fallback,
                };
                // At most MAX_FAST_BODY, so it fits.
                body_len = Some(length as usize);
                Role::Forward
            }
            15 if name.eq_ignore_ascii_case("x-forwarded-for") => {
                if forwarded_for.is_some() {
                    return Parsed::Fallback;
                }
                forwarded_for = Some(value);
                Role::ForwardedFor
            }
            16 if name.eq_ignore_ascii_case("proxy-connection")
                || name.eq_ignore_ascii_case("x-forwarded-host") =>
            {
                Role::Drop
            }
            16 if name.eq_ignore_ascii_case(REVISION_HEADER.as_str()) => {
                let Ok(value) = HeaderValue::from_bytes(value) else {
                    return Parsed::Fallback;
                };
                if choice.insert(REVISION_HEADER, value).is_some() {
                    return Parsed::Fallback;
                }
                Role::Revision
            }
            17 if name.eq_ignore_ascii_case("transfer-encoding") => return Parsed::Fallback,
            17 if name.eq_ignore_ascii_case("x-forwarded-proto") => Role::Drop,
            _ => Role::Forward,
        };
        roles[i] = Some(role);
    }
    let Some(host) = host else {
        return Parsed::Fallback;
    };
    if std::str::from_utf8(&buf[host.clone()]).is_err() {
        return Parsed::Fallback;
    }

    // Second pass: the upstream head.
    upstream.clear();
    upstream.extend_from_slice(method.as_bytes());
    upstream.push(b' ');
    upstream.extend_from_slice(path.as_bytes());
    upstream.extend_from_slice(b" HTTP/1.1\r\n");
    for (header, role) in headers.iter().zip(&roles) {
        if matches!(
            role,
            Some(Role::Forward | Role::Host | Role::RequestId | Role::Cookie)
        ) {
            put_header(upstream, header.name.as_bytes(), header.value);
        }
    }
    upstream.extend_from_slice(b"x-forwarded-for: ");
    if let Some(earlier) = forwarded_for {
        upstream.extend_from_slice(earlier);
        upstream.extend_from_slice(b", ");
    }
    upstream.extend_from_slice(additions.client_addr);
    upstream.extend_from_slice(b"\r\nx-forwarded-proto: http\r\n");
    put_header(upstream, b"x-forwarded-host", &buf[host.clone()]);
    let id = match id {
        Some(range) => RequestId::Client(range),
        None => {
            let text = next_id();
            put_header(upstream, b"x-request-id", &text);
            RequestId::Ours(text)
        }
    };
    upstream.extend_from_slice(b"\r\n");

    Parsed::Plain(RequestHead {
        len,
        body_len: body_len.unwrap_or(0),
        path: range_of(buf, path.as_bytes()),
        host,
        idempotent: matches!(
            method,
            "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"
        ),
        head_method: method == "HEAD",
        close,
        id,
        choice,
    })
}

/// A `Content-Length` value: decimal digits only, at most 19 of them (so it fits a `u64`).
pub(crate) fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        value
            .iter()
            .fold(0u64, |n, &digit| n * 10 + u64::from(digit - b'0')),
    )
}

/// Appends `name: value` and a CRLF.
pub(crate) fn put_header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The range `part` (a slice of `buf`) takes in `buf`.
fn range_of(buf: &[u8], part: &[u8]) -> Range<usize> {
    let start = part.as_ptr() as usize - buf.as_ptr() as usize;
    start..start + part.len()
}

/// Whether `path` is an origin-form target made only of the characters RFC 3986 allows in a
/// path and query (unreserved, sub-delims, `:`, `@`, `/`, `?` and percent escapes). A target
/// with anything else goes to hyper, whose URI parser then decides, so the fast path never
/// forwards a target hyper would refuse.
fn is_plain_origin_form(path: &str) -> bool {
    path.starts_with('/')
        && path.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.'
                        | b'_'
                        | b'~'
                        | b'!'
                        | b'$'
                        | b'&'
                        | b'\''
                        | b'('
                        | b')'
                        | b'*'
                        | b'+'
                        | b','
                        | b';'
                        | b'='
                        | b':'
                        | b'@'
                        | b'/'
                        | b'?'
                        | b'%'
                )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: Additions<'static> = Additions {
        client_addr: b"10.0.0.9",
    };
    const ID: [u8; 36] = *b"00000000-0000-0000-0000-000000000001";

    fn plain(raw: &str) -> (RequestHead, String) {
        let mut upstream = Vec::new();
        match parse(raw.as_bytes(), MAX_HEADERS, &CLIENT, || ID, &mut upstream) {
            Parsed::Plain(head) => (head, String::from_utf8(upstream).expect("ascii")),
            Parsed::Partial => panic!("partial: {raw:?}"),
            Parsed::Crowded => panic!("crowded: {raw:?}"),
            Parsed::Fallback => panic!("fallback: {raw:?}"),
        }
    }

    fn falls_back(raw: &str) -> bool {
        matches!(
            parse(raw.as_bytes(), MAX_HEADERS, &CLIENT, || ID, &mut Vec::new()),
            Parsed::Fallback
        )
    }

    #[test]
    fn a_plain_get_is_forwarded_with_the_router_headers() {
        let raw = "GET /a?b=1 HTTP/1.1\r\nHost: app.test:8080\r\nAccept: */*\r\n\r\nGET /next";
        let (head, upstream) = plain(raw);
        assert_eq!(head.len, raw.len() - "GET /next".len());
        assert_eq!(&raw[head.path.clone()], "/a?b=1");
        assert_eq!(&raw[head.host.clone()], "app.test:8080");
        assert!(head.idempotent && !head.head_method && !head.close);
        assert_eq!(head.id.bytes(raw.as_bytes()), ID);
        assert!(head.choice.is_empty());
        assert_eq!(
            upstream,
            "GET /a?b=1 HTTP/1.1\r\nHost: app.test:8080\r\nAccept: */*\r\n\
             x-forwarded-for: 10.0.0.9\r\nx-forwarded-proto: http\r\n\
             x-forwarded-host: app.test:8080\r\nx-request-id: 00000000-0000-0000-0000-000000000001\r\n\r\n"
        );
    }

    #[test]
    fn hop_by_hop_and_router_headers_are_dropped_and_forwarded_for_is_folded() {
        let raw = "DELETE /x HTTP/1.1\r\nhost: a\r\nConnection: keep-alive, close\r\nKeep-Alive: 5\r\n\
                   TE: trailers\r\nProxy-Connection: x\r\nSlipway-Revision: 3\r\nX-Forwarded-Proto: https\r\n\
                   X-Forwarded-Host: evil\r\nX-Forwarded-For: 1.1.1.1\r\nX-Request-Id: abc\r\nCookie: s=1\r\n\r\n";
        let (head, upstream) = plain(raw);
        assert!(head.close && head.idempotent);
        assert_eq!(head.id.bytes(raw.as_bytes()), b"abc");
        assert_eq!(head.choice.get(REVISION_HEADER).unwrap(), "3");
        assert_eq!(head.choice.get(COOKIE).unwrap(), "s=1");
        assert_eq!(
            upstream,
            "DELETE /x HTTP/1.1\r\nhost: a\r\nX-Request-Id: abc\r\nCookie: s=1\r\n\
             x-forwarded-for: 1.1.1.1, 10.0.0.9\r\nx-forwarded-proto: http\r\nx-forwarded-host: a\r\n\r\n"
        );
    }

    #[test]
    fn an_unfinished_head_needs_more() {
        let mut upstream = Vec::new();
        for raw in ["", "GET / HTTP/1.1\r\nHost: a\r\n", "GET / HT"] {
            assert!(matches!(
                parse(raw.as_bytes(), MAX_HEADERS, &CLIENT, || ID, &mut upstream),
                Parsed::Partial
            ));
        }
    }

    #[test]
    fn everything_not_plain_goes_to_hyper() {
        for raw in [
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET / HTTP/1.0\r\nHost: a\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /{x} HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: \r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 65537\r\n\r\nhello",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0, 0\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: x-secret\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1\r\nX-Forwarded-For: 2\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nCookie: a=1\r\nCookie: b=2\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nX-Request-Id: 1\r\nX-Request-Id: 2\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
        ] {
            assert!(falls_back(raw), "{raw:?}");
        }
    }

    #[test]
    fn heads_with_more_headers_than_allowed_are_crowded() {
        let raw = "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\nY: 2\r\n\r\n";
        let parsed = parse(raw.as_bytes(), 2, &CLIENT, || ID, &mut Vec::new());
        assert!(matches!(parsed, Parsed::Crowded));
        let parsed = parse(raw.as_bytes(), 3, &CLIENT, || ID, &mut Vec::new());
        assert!(matches!(parsed, Parsed::Plain(_)));
        // Crowded before the head is complete too: the count is known early.
        let unfinished = "GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\nY: 2\r\n";
        let parsed = parse(unfinished.as_bytes(), 2, &CLIENT, || ID, &mut Vec::new());
        assert!(matches!(parsed, Parsed::Crowded));
    }

    #[test]
    fn small_sized_bodies_stay_on_the_fast_path() {
        let (head, upstream) = plain("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n");
        assert!(!head.idempotent);
        assert_eq!(head.body_len, 0);
        assert!(upstream.contains("Content-Length: 0\r\n"), "{upstream}");
        let raw = "PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 65536\r\n\r\nabc";
        let (head, upstream) = plain(raw);
        assert!(head.idempotent);
        assert_eq!((head.len, head.body_len), (raw.len() - 3, 65536));
        assert!(
            upstream.ends_with("\r\n\r\n") && !upstream.contains("abc"),
            "{upstream}"
        );
    }
}
