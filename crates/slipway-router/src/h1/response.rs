//! Reading a backend's response head on the HTTP/1.1 fast path, and writing the head the
//! client gets.
//!
//! The body is forwarded as the backend framed it (RFC 9112, section 6.3): nothing for `HEAD`,
//! 1xx, 204 and 304; chunked when the last transfer coding is `chunked` (passed through
//! unchanged, see `chunked.rs`); `Content-Length` bytes when all its values agree; otherwise
//! until the backend closes, and then the client connection closes too, since the client
//! could not tell where such a body ends on a kept-alive connection. A `Content-Length` that
//! is malformed or disagrees with itself is a broken answer (a 502), never a guess.
//!
//! The client's head is the backend's with the hop-by-hop headers and those its `Connection`
//! names left out, `X-Request-Id` set to the request's id, the sticky cookie (if any) added,
//! and a `Date` when the backend sent none, as the hyper path does.

use super::request::{parse_length, put_header};

/// Header fields read at most, as hyper's client does.
const MAX_HEADERS: usize = 100;

/// Header names a `Connection` header may list; more make the response a 502.
const MAX_CONNECTION_NAMES: usize = 8;

/// How the response body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Everything until the backend closes the connection.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ResponseHead {
    /// The length of the head in the buffer, final CRLF included.
    pub(crate) len: usize,
    pub(crate) status: u16,
    pub(crate) framing: Framing,
    /// Whether the upstream connection can take another request after this response.
    pub(crate) reusable: bool,
    /// Whether the client connection must close after this response.
    pub(crate) close_client: bool,
}

/// A backend answer the router will not forward, and why.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BadResponse(pub(crate) &'static str);

impl std::fmt::Display for BadResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for BadResponse {}

/// What the client's head gets besides the backend's headers.
pub(crate) struct Extras<'a> {
    pub(crate) request_id: &'a [u8],
    pub(crate) set_cookie: Option<&'a [u8]>,
    /// The value for a `Date` header, used when the backend sent none.
    pub(crate) date: &'a [u8],
    /// The request was `HEAD`.
    pub(crate) head_method: bool,
    /// The client asked to close after this response.
    pub(crate) close: bool,
}

/// How one backend header is treated.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Forward,
    Drop,
    ContentLength,
}

/// Parses the response head at the start of `buf`; `Ok(None)` if it is not complete yet.
/// Writes the client's head into `out` (replacing what it held), except for a `100 Continue`,
/// which is not forwarded (`out` is left empty).
pub(crate) fn parse(
    buf: &[u8],
    extras: &Extras<'_>,
    out: &mut Vec<u8>,
) -> Result<Option<ResponseHead>, BadResponse> {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut storage);
    let len = match response.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(BadResponse("too many headers")),
        Err(_) => return Err(BadResponse("malformed response head")),
    };
    let (Some(version), Some(status)) = (response.version, response.code) else {
        return Err(BadResponse("malformed response head"));
    };
    let reason = response.reason.unwrap_or_default();
    let headers = &*response.headers;
    let informational = (100..200).contains(&status);

    let mut roles = [Role::Forward; MAX_HEADERS];
    let mut reusable = version == 1;
    let mut named: [&[u8]; MAX_CONNECTION_NAMES] = [b""; MAX_CONNECTION_NAMES];
    let mut named_count = 0;
    let mut chunked = None;
    let mut length: Option<u64> = None;
    let mut has_date = false;
    for (i, header) in headers.iter().enumerate() {
        let name = header.name;
        let value = header.value;
        roles[i] = match name.len() {
            2 if name.eq_ignore_ascii_case("te") => Role::Drop,
            4 if name.eq_ignore_ascii_case("date") => {
                has_date = true;
                Role::Forward
            }
            7 if name.eq_ignore_ascii_case("trailer") || name.eq_ignore_ascii_case("upgrade") => {
                Role::Drop
            }
            10 if name.eq_ignore_ascii_case("connection") => {
                for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                    if token.eq_ignore_ascii_case(b"close") {
                        reusable = false;
                    } else if token.is_empty() || token.eq_ignore_ascii_case(b"keep-alive") {
                    } else if named_count < MAX_CONNECTION_NAMES {
                        named[named_count] = token;
                        named_count += 1;
                    } else {
                        return Err(BadResponse("too many names in Connection"));
                    }
                }
                Role::Drop
            }
            10 if name.eq_ignore_ascii_case("keep-alive") => Role::Drop,
            12 if name.eq_ignore_ascii_case("x-request-id") => Role::Drop,
            14 if name.eq_ignore_ascii_case("content-length") => {
                let value = parse_length(value).ok_or(BadResponse("malformed Content-Length"))?;
                if length.is_some_and(|earlier| earlier != value) {
                    return Err(BadResponse("conflicting Content-Length values"));
                }
                length = Some(value);
                Role::ContentLength
            }
            16 if name.eq_ignore_ascii_case("proxy-connection") => Role::Drop,
            17 if name.eq_ignore_ascii_case("transfer-encoding") => {
                let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
                chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
                Role::Forward
            }
            _ => Role::Forward,
        };
    }

    let framing = if informational || status == 204 || status == 304 || extras.head_method {
        Framing::Empty
    } else {
        match (chunked, length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) => Framing::UntilClose,
            (None, Some(length)) => Framing::Length(length),
            (None, None) => Framing::UntilClose,
        }
    };
    if framing == Framing::UntilClose {
        reusable = false;
    }
    let close_client = extras.close || framing == Framing::UntilClose;

    out.clear();
    if status == 100 {
        return Ok(Some(ResponseHead {
            len,
            status,
            framing,
            reusable,
            close_client: false,
        }));
    }
    out.extend_from_slice(b"HTTP/1.1 ");
    // httparse only accepts three-digit status codes.
    out.extend_from_slice(&[
        b'0' + (status / 100) as u8,
        b'0' + (status / 10 % 10) as u8,
        b'0' + (status % 10) as u8,
    ]);
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    for (header, role) in headers.iter().zip(roles) {
        let forward = match role {
            Role::Forward => true,
            Role::Drop => false,
            // A transfer coding overrides Content-Length; a proxy must not pass both on.
            Role::ContentLength => chunked.is_none(),
        };
        if forward
            && !named[..named_count]
                .iter()
                .any(|n| n.eq_ignore_ascii_case(header.name.as_bytes()))
        {
            put_header(out, header.name.as_bytes(), header.value);
        }
    }
    if !informational {
        put_header(out, b"x-request-id", extras.request_id);
        if let Some(cookie) = extras.set_cookie {
            put_header(out, b"set-cookie", cookie);
        }
        if !has_date {
            put_header(out, b"date", extras.date);
        }
        if close_client {
            out.extend_from_slice(b"connection: close\r\n");
        }
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(ResponseHead {
        len,
        status,
        framing,
        reusable,
        close_client: close_client && !informational,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXTRAS: Extras<'static> = Extras {
        request_id: b"id-1",
        set_cookie: None,
        date: b"Mon, 23 Nov 2026 00:00:00 GMT",
        head_method: false,
        close: false,
    };

    fn head(raw: &str, extras: &Extras<'_>) -> (ResponseHead, String) {
        let mut out = Vec::new();
        let head = parse(raw.as_bytes(), extras, &mut out)
            .expect("valid")
            .expect("complete");
        (head, String::from_utf8(out).expect("ascii"))
    }

    #[test]
    fn a_sized_response_keeps_its_headers_and_gets_the_router_ones() {
        let raw = "HTTP/1.1 200 OK\r\nContent-Length: 13\r\nX-App: 1\r\nX-Request-Id: theirs\r\n\r\nhello, world\n";
        let (head, out) = head(raw, &EXTRAS);
        assert_eq!(head.len, raw.len() - 13);
        assert_eq!((head.status, head.framing), (200, Framing::Length(13)));
        assert!(head.reusable && !head.close_client);
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Length: 13\r\nX-App: 1\r\nx-request-id: id-1\r\n\
             date: Mon, 23 Nov 2026 00:00:00 GMT\r\n\r\n"
        );
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_are_dropped() {
        let raw = "HTTP/1.1 200 OK\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\n\
                   Date: then\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n";
        let extras = Extras {
            set_cookie: Some(b"s=1"),
            ..EXTRAS
        };
        let (head, out) = head(raw, &extras);
        assert_eq!(head.framing, Framing::Chunked);
        assert!(!head.reusable && !head.close_client);
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nDate: then\r\nTransfer-Encoding: chunked\r\nx-request-id: id-1\r\n\
             set-cookie: s=1\r\n\r\n"
        );
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let cases = [
            (
                "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
                false,
                Framing::Empty,
            ),
            ("HTTP/1.1 304 Not Modified\r\n\r\n", false, Framing::Empty),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                true,
                Framing::Empty,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                false,
                Framing::Chunked,
            ),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                false,
                Framing::UntilClose,
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", false, Framing::UntilClose),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 7\r\nContent-Length: 7\r\n\r\n",
                false,
                Framing::Length(7),
            ),
        ];
        for (raw, head_method, framing) in cases {
            let extras = Extras {
                head_method,
                ..EXTRAS
            };
            assert_eq!(head(raw, &extras).0.framing, framing, "{raw:?}");
        }
        let (until_close, out) = head("HTTP/1.1 200 OK\r\n\r\n", &EXTRAS);
        assert!(until_close.close_client && !until_close.reusable);
        assert!(out.ends_with("connection: close\r\n\r\n"), "{out}");
    }

    #[test]
    fn a_continue_is_not_forwarded_but_early_hints_are() {
        let mut out = b"old".to_vec();
        let continued = parse(b"HTTP/1.1 100 Continue\r\n\r\n", &EXTRAS, &mut out)
            .unwrap()
            .unwrap();
        assert_eq!(continued.status, 100);
        assert!(out.is_empty());
        let (head, out) = head("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", &EXTRAS);
        assert_eq!((head.status, head.framing), (103, Framing::Empty));
        assert_eq!(out, "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n");
    }

    #[test]
    fn an_http_1_0_backend_connection_is_not_reused() {
        let (head, _) = head("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", &EXTRAS);
        assert!(!head.reusable);
        assert_eq!(head.framing, Framing::Length(1));
    }

    #[test]
    fn broken_lengths_and_heads_are_refused() {
        for raw in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
        ] {
            assert!(
                parse(raw.as_bytes(), &EXTRAS, &mut Vec::new()).is_err(),
                "{raw:?}"
            );
        }
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\nContent-Le", &EXTRAS, &mut Vec::new()),
            Ok(None)
        );
    }
}
