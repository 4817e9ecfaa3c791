//! h2c client connections: every stream of a connection is served inside that connection's
//! own task.
//!
//! hyper's HTTP/2 server hands each new stream to an executor, and the usual one spawns a task
//! per stream. Here [`Streams`] is the executor instead: it only collects the streams, and
//! [`serve`] polls them next to the connection. The reasons:
//!
//! - Fairness. With 50 clients × 10 streams, a worker would hold some 550 runnable tasks, more
//!   than the 256 of its local run queue. Tokio moves the overflow to the runtime's global
//!   queue, which a busy worker only looks at every few dozen polls, so the requests parked
//!   there waited several times longer than the others: bench/proxy measured a p99 of 71 ms
//!   for a p50 of 11 ms, where nginx had 46 ms for 20 ms. With the streams inside, the number
//!   of tasks is the number of connections.
//! - Cost: no task to allocate, schedule and wake per request.
//!
//! A connection's streams therefore share one worker thread, as an nginx connection belongs to
//! one worker process; the router does little per request, and connections spread over the
//! workers.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;

use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use crate::conn::Signal;

type Stream = Pin<Box<dyn Future<Output = ()> + Send>>;

/// The executor given to one connection's `http2::Builder`: collects the streams hyper starts
/// until [`serve`] takes them. hyper calls it only while the connection is polled, that is
/// from inside [`serve`], so the lock is never contended.
#[derive(Clone, Default)]
pub(crate) struct Streams(Arc<Mutex<Vec<Stream>>>);

impl Streams {
    fn take(&self) -> Vec<Stream> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl<F> hyper::rt::Executor<F> for Streams
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, stream: F) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Box::pin(stream));
    }
}

/// Drives `conn` (an HTTP/2 server connection built with `streams` as its executor) and its
/// streams until the connection has ended and its last stream has finished. When `signal`
/// asks the connection to close, `close` is called once on it (hyper's `graceful_shutdown`:
/// a GOAWAY, then the open streams finish).
pub(crate) async fn serve<C, E>(
    conn: C,
    streams: Streams,
    signal: &Signal,
    close: impl Fn(Pin<&mut C>),
) -> Result<(), E>
where
    C: Future<Output = Result<(), E>>,
{
    let mut conn = pin!(conn);
    let mut running = FuturesUnordered::new();
    let mut ended = None;
    let mut asked = false;
    poll_fn(|cx| {
        if !asked && signal.poll_closing(cx) {
            asked = true;
            close(conn.as_mut());
        }
        // Streams that finish in the first round have queued their responses in the
        // connection; the second round writes them out now rather than on this task's next
        // turn, after every other ready task.
        for _ in 0..2 {
            if ended.is_none()
                && let Poll::Ready(result) = conn.as_mut().poll(cx)
            {
                ended = Some(result);
            }
            running.extend(streams.take());
            let mut finished = false;
            while let Poll::Ready(Some(())) = running.poll_next_unpin(cx) {
                finished = true;
            }
            if !finished || ended.is_some() {
                break;
            }
        }
        match ended.take() {
            Some(result) if running.is_empty() => Poll::Ready(result),
            other => {
                ended = other;
                Poll::Pending
            }
        }
    })
    .await
}
