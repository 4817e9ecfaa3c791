//! The errors the proxy answers itself (no route, unknown revision, no ready instance, a full
//! or timed-out revision queue, unreachable or slow upstream) and the one function that turns
//! them into HTTP responses; with them the two answers that are not errors but that the
//! router gives itself too: an ACME HTTP-01 challenge response and the redirect to HTTPS.

use std::error::Error as StdError;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{
    CACHE_CONTROL, CONNECTION, CONTENT_TYPE, LOCATION, RETRY_AFTER, X_CONTENT_TYPE_OPTIONS,
};
use http::{HeaderName, HeaderValue, Response, StatusCode};

use crate::body::ResponseBody;
use crate::table::Target;

/// The header naming the kind of a proxy-generated error response.
pub const ERROR_HEADER: HeaderName = HeaderName::from_static("x-slipway-error");

/// Longest host or path echoed back in a 404 message.
const MAX_ECHO: usize = 256;

/// A request the proxy could not forward, or whose upstream failed.
#[derive(Debug)]
pub(crate) enum ProxyError {
    NoRoute {
        host: String,
        path: String,
    },
    /// `Slipway-Revision` named a revision (or tag) the target has no pool for.
    UnknownRevision {
        target: Arc<Target>,
        revision: String,
    },
    NoReadyInstance {
        target: Arc<Target>,
    },
    /// The revision's queue already held `limit` requests.
    QueueFull {
        target: Arc<Target>,
        revision: u64,
        limit: usize,
    },
    /// The request waited `after` in the revision's queue without getting a backend; `cold`
    /// if the revision had no ready backend at the end.
    QueueTimeout {
        target: Arc<Target>,
        revision: u64,
        after: Duration,
        cold: bool,
    },
    Unreachable {
        target: Arc<Target>,
        addr: SocketAddr,
        error: io::Error,
    },
    Timeout {
        target: Arc<Target>,
        addr: SocketAddr,
        after: Duration,
    },
    UpstreamFailed {
        target: Arc<Target>,
        addr: SocketAddr,
        error: Box<dyn StdError + Send + Sync>,
    },
    /// The client's request body was malformed or cut off while it was being forwarded.
    BadRequestBody {
        error: Box<dyn StdError + Send + Sync>,
    },
    /// The request head was longer than `limit` bytes.
    HeadTooLarge {
        limit: usize,
    },
    /// The request head had more than `limit` header fields.
    TooManyHeaders {
        limit: usize,
    },
    /// An HTTP/1.1 request without a `Host` header, or with more than one (RFC 9112,
    /// section 3.2).
    BadHost {
        count: usize,
    },
    /// The request body is (or grew) longer than the service allows.
    BodyTooLarge {
        target: Arc<Target>,
        limit: u64,
    },
    /// The client sent nothing of its request `what` (head or body) for `after`.
    RequestTimeout {
        what: &'static str,
        after: Duration,
    },
    /// Not an error: the key authorization of an ACME HTTP-01 challenge (RFC 8555, 8.3).
    AcmeChallenge {
        key_authorization: String,
    },
    /// Not an error: a plain-HTTP request of a target that redirects to HTTPS.
    RedirectHttps {
        location: HeaderValue,
    },
}

impl ProxyError {
    fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute { .. } | ProxyError::UnknownRevision { .. } => {
                StatusCode::NOT_FOUND
            }
            ProxyError::NoReadyInstance { .. }
            | ProxyError::QueueFull { .. }
            | ProxyError::QueueTimeout { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::Unreachable { .. } | ProxyError::UpstreamFailed { .. } => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BadRequestBody { .. } | ProxyError::BadHost { .. } => {
                StatusCode::BAD_REQUEST
            }
            ProxyError::HeadTooLarge { .. } | ProxyError::TooManyHeaders { .. } => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            ProxyError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::RequestTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            ProxyError::AcmeChallenge { .. } => StatusCode::OK,
            ProxyError::RedirectHttps { .. } => StatusCode::PERMANENT_REDIRECT,
        }
    }

    /// Whether the answer ends the connection: the rest of the request cannot be read (a
    /// head over the limits, a client that stopped sending) or is not worth reading.
    pub(crate) fn closes(&self) -> bool {
        matches!(
            self,
            ProxyError::HeadTooLarge { .. }
                | ProxyError::TooManyHeaders { .. }
                | ProxyError::RequestTimeout { .. }
        )
    }

    /// The value of the `x-slipway-error` header.
    fn kind(&self) -> &'static str {
        match self {
            ProxyError::NoRoute { .. } => "no-route",
            ProxyError::UnknownRevision { .. } => "unknown-revision",
            ProxyError::NoReadyInstance { .. } => "no-ready-instance",
            ProxyError::QueueFull { .. } => "queue-full",
            ProxyError::QueueTimeout { .. } => "queue-timeout",
            ProxyError::Unreachable { .. } => "upstream-unreachable",
            ProxyError::Timeout { .. } => "upstream-timeout",
            ProxyError::UpstreamFailed { .. } => "upstream-failed",
            ProxyError::BadRequestBody { .. } => "bad-request-body",
            ProxyError::HeadTooLarge { .. } => "head-too-large",
            ProxyError::TooManyHeaders { .. } => "too-many-headers",
            ProxyError::BadHost { .. } => "bad-host",
            ProxyError::BodyTooLarge { .. } => "body-too-large",
            ProxyError::RequestTimeout { .. } => "request-timeout",
            ProxyError::AcmeChallenge { .. } => "acme-challenge",
            ProxyError::RedirectHttps { .. } => "https-redirect",
        }
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::NoRoute { host, path } => write!(
                f,
                "no route for host {} path {}",
                shorten(if host.is_empty() { "(none)" } else { host }),
                shorten(path)
            ),
            ProxyError::UnknownRevision { target, revision } => write!(
                f,
                "no revision {} of service {} of app {}; the Slipway-Revision header takes a \
                 revision number or tag that the service routes to",
                shorten(revision),
                target.service,
                target.app
            ),
            ProxyError::NoReadyInstance { target } => write!(
                f,
                "service {} of app {} has no ready instance",
                target.service, target.app
            ),
            ProxyError::QueueFull {
                target,
                revision,
                limit,
            } => write!(
                f,
                "service {} of app {}: revision {revision} already holds {limit} requests \
                 waiting for an instance; try again shortly",
                target.service, target.app
            ),
            ProxyError::QueueTimeout {
                target,
                revision,
                after,
                cold,
            } => {
                let why = if *cold {
                    "no instance became ready"
                } else {
                    "every instance stayed at its concurrency limit"
                };
                write!(
                    f,
                    "service {} of app {}: revision {revision} held the request for {} and \
                     {why}; try again shortly",
                    target.service,
                    target.app,
                    human(*after)
                )
            }
            ProxyError::Unreachable {
                target,
                addr,
                error,
            } => write!(
                f,
                "service {} of app {}: upstream {addr} unreachable: {error}",
                target.service, target.app
            ),
            ProxyError::Timeout {
                target,
                addr,
                after,
            } => write!(
                f,
                "service {} of app {}: upstream {addr} sent no response within {}",
                target.service,
                target.app,
                human(*after)
            ),
            ProxyError::BadRequestBody { error } => {
                write!(f, "the request body was malformed or cut off: {error}")?;
                let mut source = error.source();
                while let Some(cause) = source {
                    write!(f, ": {cause}")?;
                    source = cause.source();
                }
                Ok(())
            }
            ProxyError::HeadTooLarge { limit } => write!(
                f,
                "the request head (request line and headers) is longer than {}, the most \
                 this server takes",
                bytes(*limit as u64)
            ),
            ProxyError::TooManyHeaders { limit } => write!(
                f,
                "the request has more than {limit} header fields, the most this server takes"
            ),
            ProxyError::BadHost { count: 0 } => {
                f.write_str("an HTTP/1.1 request must name the host it is for in a Host header")
            }
            ProxyError::BadHost { count } => write!(
                f,
                "the request has {count} Host headers; an HTTP/1.1 request has exactly one"
            ),
            ProxyError::BodyTooLarge { target, limit } => write!(
                f,
                "service {} of app {} takes request bodies of at most {} (`limits.body` in \
                 slipway.yaml)",
                target.service,
                target.app,
                bytes(*limit)
            ),
            ProxyError::RequestTimeout { what, after } => write!(
                f,
                "the client sent no more of the request {what} for {}",
                human(*after)
            ),
            ProxyError::AcmeChallenge { key_authorization } => f.write_str(key_authorization),
            ProxyError::RedirectHttps { location } => write!(
                f,
                "this site is served over HTTPS: {}",
                location.to_str().unwrap_or_default()
            ),
            ProxyError::UpstreamFailed {
                target,
                addr,
                error,
            } => {
                write!(
                    f,
                    "service {} of app {}: upstream {addr} failed: {error}",
                    target.service, target.app
                )?;
                let mut source = error.source();
                while let Some(cause) = source {
                    write!(f, ": {cause}")?;
                    source = cause.source();
                }
                Ok(())
            }
        }
    }
}

/// Builds the response for a proxy error: the status, a one-line `text/plain` body naming the
/// service, `x-slipway-error: <kind>`, `Retry-After: 1` on 503, and never cached.
pub(crate) fn error_response(error: &ProxyError) -> Response<ResponseBody> {
    let message = error.to_string();
    tracing::debug!(kind = error.kind(), "{message}");
    let mut response = Response::new(ResponseBody::full(message));
    *response.status_mut() = error.status();
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    match error {
        ProxyError::AcmeChallenge { .. } => return response,
        ProxyError::RedirectHttps { location } => {
            headers.insert(LOCATION, location.clone());
            return response;
        }
        _ => {}
    }
    headers.insert(ERROR_HEADER, HeaderValue::from_static(error.kind()));
    if error.status() == StatusCode::SERVICE_UNAVAILABLE {
        headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if error.closes() {
        headers.insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Cuts client-supplied text to `MAX_ECHO` bytes on a character boundary.
fn shorten(text: &str) -> Shortened<'_> {
    if text.len() <= MAX_ECHO {
        return Shortened(text, false);
    }
    let mut end = MAX_ECHO;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Shortened(&text[..end], true)
}

/// A possibly shortened piece of text; displays an ellipsis when cut.
struct Shortened<'a>(&'a str, bool);

impl fmt::Display for Shortened<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)?;
        if self.1 {
            f.write_str("...")?;
        }
        Ok(())
    }
}

/// Formats a byte count in the largest binary unit that divides it, e.g. `64 KiB`.
fn bytes(n: u64) -> String {
    for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if n >= size && n.is_multiple_of(size) {
            return format!("{} {unit}", n / size);
        }
    }
    format!("{n} bytes")
}

/// Formats a duration as whole seconds when it is one, else as milliseconds.
fn human(duration: Duration) -> String {
    if duration.subsec_millis() == 0 && duration.as_secs() > 0 {
        format!("{}s", duration.as_secs())
    } else {
        format!("{}ms", duration.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_counts_read_in_the_largest_unit_that_divides_them() {
        assert_eq!(bytes(64 * 1024), "64 KiB");
        assert_eq!(bytes(100 << 20), "100 MiB");
        assert_eq!(bytes(3 << 30), "3 GiB");
        assert_eq!(bytes(1000), "1000 bytes");
        assert_eq!(bytes(1536), "1536 bytes");
    }

    #[test]
    fn refusals_of_the_client_have_their_status_and_kind() {
        let cases = [
            (
                ProxyError::HeadTooLarge { limit: 65536 },
                431,
                "head-too-large",
                true,
            ),
            (
                ProxyError::TooManyHeaders { limit: 100 },
                431,
                "too-many-headers",
                true,
            ),
            (ProxyError::BadHost { count: 0 }, 400, "bad-host", false),
            (
                ProxyError::RequestTimeout {
                    what: "head",
                    after: Duration::from_secs(30),
                },
                408,
                "request-timeout",
                true,
            ),
        ];
        for (error, status, kind, closes) in cases {
            let response = error_response(&error);
            assert_eq!(response.status().as_u16(), status, "{error}");
            assert_eq!(response.headers()[ERROR_HEADER], kind);
            assert_eq!(
                response.headers().contains_key(CONNECTION),
                closes,
                "{error}"
            );
        }
        assert_eq!(
            ProxyError::HeadTooLarge { limit: 65536 }.to_string(),
            "the request head (request line and headers) is longer than 64 KiB, the most this server takes"
        );
    }
}
