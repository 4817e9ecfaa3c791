//! Body types of the proxy: the request body sent upstream and the response body sent to the
//! client. Both stream frame by frame; nothing is buffered whole. The response body carries the
//! backend's in-flight count and its upstream connection until the last byte has passed, then
//! hands the connection back to the backend's idle pool, and records the request in its
//! revision's stats when the body ends.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::backend::{InFlight, Upstream};
use crate::stats::Measure;
use crate::timer::{PooledSleep, Timers};
use tokio::time::Instant;

/// A request body on its way to a backend: the client's body (guarded, unless it is empty),
/// or nothing (for replays).
pub(crate) enum UpstreamBody {
    Incoming(Incoming),
    Guarded(Guarded),
    Empty,
}

/// The error of an [`UpstreamBody`]: the client's body failed, or was refused.
pub(crate) type BodyError = Box<dyn std::error::Error + Send + Sync>;

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            UpstreamBody::Incoming(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            UpstreamBody::Guarded(body) => body.poll_frame(cx),
            UpstreamBody::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Incoming(body) => body.is_end_stream(),
            UpstreamBody::Guarded(guarded) => {
                guarded.body.as_ref().is_none_or(|b| b.is_end_stream())
            }
            UpstreamBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Incoming(body) => body.size_hint(),
            UpstreamBody::Guarded(guarded) => guarded
                .body
                .as_ref()
                .map_or_else(|| SizeHint::with_exact(0), Body::size_hint),
            UpstreamBody::Empty => SizeHint::with_exact(0),
        }
    }
}

/// Why the router stopped passing on a client's request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// It grew past the service's limit of `limit` bytes.
    TooLarge { limit: u64 },
    /// The client sent none of it for `after`.
    Stalled { after: Duration },
}

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refused::TooLarge { limit } => {
                write!(f, "the request body is longer than {limit} bytes")
            }
            Refused::Stalled { after } => {
                write!(f, "the client sent none of the request body for {after:?}")
            }
        }
    }
}

impl std::error::Error for Refused {}

impl Refused {
    /// The refusal behind an error of a request sent upstream, if the body was refused.
    pub(crate) fn behind(error: &(dyn std::error::Error + 'static)) -> Option<Refused> {
        let mut source = Some(error);
        while let Some(error) = source {
            if let Some(refused) = error.downcast_ref::<Refused>() {
                return Some(*refused);
            }
            source = error.source();
        }
        None
    }
}

/// How long a refused body is still read (and thrown away) so that the client, which may
/// still be sending it, gets to read the answer instead of a connection reset.
const DRAIN_FOR: Duration = Duration::from_secs(5);

/// A client's request body that is cut off once it grows past the service's limit or
/// pauses for longer than the body timeout.
pub(crate) struct Guarded {
    /// `None` once handed to the drain after a refusal.
    body: Option<Incoming>,
    /// Bytes the body may still bring.
    left: u64,
    /// The service's limit (for the message).
    limit: u64,
    /// The longest pause allowed between two pieces of the body.
    idle: Duration,
    /// Since when the body has been asked for its next piece without one coming (the
    /// backend's side may pause reading, which is not the client's doing).
    waiting: Option<Instant>,
    sleep: Option<PooledSleep>,
    timers: Arc<Timers>,
    /// Whether the body was refused for its length (it is then drained when dropped).
    too_large: bool,
}

impl Guarded {
    pub(crate) fn new(
        body: Incoming,
        limit: Option<u64>,
        idle: Duration,
        timers: Arc<Timers>,
    ) -> Guarded {
        let limit = limit.unwrap_or(u64::MAX);
        Guarded {
            body: Some(body),
            left: limit,
            limit,
            idle,
            waiting: None,
            sleep: None,
            timers,
            too_large: false,
        }
    }

    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let Some(body) = &mut self.body else {
            return Poll::Ready(None);
        };
        match Pin::new(body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let n = data.len() as u64;
                    if n > self.left {
                        self.left = 0;
                        self.too_large = true;
                        let refused = Refused::TooLarge { limit: self.limit };
                        return Poll::Ready(Some(Err(Box::new(refused))));
                    }
                    self.left -= n;
                }
                self.waiting = None;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(Box::new(err)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                // One sleep per body, moved on when it fires before the current deadline.
                let deadline = *self.waiting.get_or_insert_with(Instant::now) + self.idle;
                let timers = &self.timers;
                let sleep = self
                    .sleep
                    .get_or_insert_with(|| timers.sleep_until(deadline));
                loop {
                    ready!(Pin::new(&mut *sleep).poll(cx));
                    if Instant::now() >= deadline {
                        let refused = Refused::Stalled { after: self.idle };
                        return Poll::Ready(Some(Err(Box::new(refused))));
                    }
                    // It fired for an earlier wait.
                    sleep.reset(deadline);
                }
            }
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if self.too_large
            && let Some(body) = self.body.take()
        {
            drain(body);
        }
    }
}

/// Reads what is left of a refused request body and throws it away, for at most
/// [`DRAIN_FOR`]: a client that sends its whole body before it reads the answer then gets
/// the answer instead of a connection reset, and the connection may even be kept.
pub(crate) fn drain(mut body: Incoming) {
    if body.is_end_stream() {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let until = Instant::now() + DRAIN_FOR;
        let read_all = async {
            while let Some(frame) =
                std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await
            {
                if frame.is_err() {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout_at(until, read_all).await;
    });
}

/// What a proxied response holds on to while its body streams: the in-flight count of its
/// backend and, for pooled connections, the connection to give back once the body is complete.
pub(crate) struct Lease {
    pub(crate) in_flight: InFlight,
    /// The connection the body comes from, which the body drives (see `Upstream`).
    pub(crate) conn: Option<Upstream>,
    /// Whether the connection may be pooled once the body is complete (not after the
    /// backend said `Connection: close`).
    pub(crate) reuse: bool,
    pub(crate) max_idle: usize,
}

impl Lease {
    /// Ends the lease after a complete body: the connection goes back to the idle pool if it
    /// may and can be reused.
    fn finish(mut self) {
        if let Some(conn) = self.conn.take()
            && self.reuse
        {
            self.in_flight.backend().put_idle(conn, self.max_idle);
        }
    }
}

/// The body of a response sent to the client.
pub(crate) struct ResponseBody {
    kind: Kind,
}

enum Kind {
    /// Streamed from a backend; the lease is released and the measurement recorded when the
    /// body ends or is dropped.
    Upstream {
        body: Incoming,
        lease: Option<Lease>,
        measure: Option<(Measure, StatusCode)>,
    },
    /// A body produced by the proxy itself (error texts, or nothing).
    Full(Option<Bytes>),
}

impl ResponseBody {
    pub(crate) fn upstream(body: Incoming, lease: Lease) -> ResponseBody {
        let mut lease = Some(lease);
        if body.is_end_stream() {
            // Nothing will ever be polled (204, 304, HEAD, `Content-Length: 0`): release now.
            if let Some(lease) = lease.take() {
                lease.finish();
            }
        }
        ResponseBody {
            kind: Kind::Upstream {
                body,
                lease,
                measure: None,
            },
        }
    }

    /// Records `measure` with `status` once this body has ended: at once for a body that has
    /// nothing (more) to stream, such as the router's own error answers or a 101 for an
    /// upgrade, else when the last frame passes, the upstream body fails, or the body is
    /// dropped.
    pub(crate) fn measure(&mut self, measure: Measure, status: StatusCode) {
        match &mut self.kind {
            Kind::Upstream {
                body,
                measure: pending,
                ..
            } if !body.is_end_stream() => *pending = Some((measure, status)),
            _ => measure.finish(status, false),
        }
    }

    pub(crate) fn full(bytes: impl Into<Bytes>) -> ResponseBody {
        let bytes = bytes.into();
        ResponseBody {
            kind: Kind::Full((!bytes.is_empty()).then_some(bytes)),
        }
    }

    /// The bytes of a body the proxy made itself (empty for a streamed one).
    pub(crate) fn full_bytes(&self) -> &[u8] {
        match &self.kind {
            Kind::Full(Some(bytes)) => bytes,
            _ => &[],
        }
    }

    pub(crate) fn empty() -> ResponseBody {
        ResponseBody {
            kind: Kind::Full(None),
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match &mut self.get_mut().kind {
            Kind::Upstream {
                body,
                lease,
                measure,
            } => {
                // The body's bytes come from the connection's I/O, which this drives.
                if let Some(Lease {
                    conn: Some(conn), ..
                }) = lease
                {
                    conn.poll_conn(cx);
                }
                let frame = ready!(Pin::new(&mut *body).poll_frame(cx));
                match &frame {
                    Some(Ok(_)) if !body.is_end_stream() => {}
                    Some(Ok(_)) | None => {
                        if let Some(lease) = lease.take() {
                            lease.finish();
                        }
                        if let Some((measure, status)) = measure.take() {
                            measure.finish(status, false);
                        }
                    }
                    Some(Err(_)) => {
                        // The connection is broken: drop it instead of pooling it.
                        lease.take();
                        // The client gets a truncated response: an error of the revision.
                        if let Some((measure, status)) = measure.take() {
                            measure.finish(status, true);
                        }
                    }
                }
                Poll::Ready(frame)
            }
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Upstream { body, .. } => body.is_end_stream(),
            Kind::Full(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream { body, .. } => body.size_hint(),
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        let Kind::Upstream {
            body,
            lease,
            measure,
        } = &mut self.kind
        else {
            return;
        };
        if body.is_end_stream()
            && let Some(lease) = lease.take()
        {
            // The server stopped polling after the last byte it knew to expect; the
            // connection is still clean and can be reused.
            lease.finish();
        }
        if let Some((measure, status)) = measure.take() {
            // Either the body ended without a final poll, or the client went away before
            // its end; the latter is not the revision's failure, so neither is an error.
            measure.finish(status, false);
        }
    }
}
