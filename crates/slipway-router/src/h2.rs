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
//!
//! [`serve`] also ends connections that have gone quiet, without a clock read or a lock per
//! frame: [`Watched`] counts the socket's reads and writes, and one timer per connection looks
//! at the counts once per period (the head timeout). A connection that read and wrote nothing
//! for a whole period is closed (a GOAWAY, and one period later dropped) if it had no stream
//! open, like an idle HTTP/1.1 keep-alive connection or a client that sent the preface and
//! then nothing, or if a write of it was waiting all that time, a client that stopped reading.
//! A stream waiting for a slow answer keeps its connection. hyper's keep-alive pings did this
//! before, but cost a lock, a clock read and a timer poll per frame and per connection poll:
//! about 800 of the ~60,000 user-space instructions of an h2c request under callgrind.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

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

/// Drives `conn` (an HTTP/2 server connection built with `streams` as its executor, over an
/// I/O that reports to `progress`) and its streams until the connection has ended and its last
/// stream has finished. When `signal` asks the connection to close, `close` is called once on
/// it (hyper's `graceful_shutdown`: a GOAWAY, then the open streams finish). A connection
/// quiet for a whole `period` is closed as the module docs say.
pub(crate) async fn serve<C, E>(
    conn: C,
    streams: Streams,
    progress: Arc<Progress>,
    period: Duration,
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
    let mut quiet = Quiet::new(progress, period);
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
                match quiet.poll(cx, running.is_empty()) {
                    Verdict::Alive => {}
                    Verdict::Close if !asked => {
                        asked = true;
                        close(conn.as_mut());
                        // The GOAWAY may already have ended it.
                        cx.waker().wake_by_ref();
                    }
                    Verdict::Close => {}
                    // Still there a period after the GOAWAY: the client is gone or ignores it.
                    Verdict::Drop => return Poll::Ready(Ok(())),
                }
                Poll::Pending
            }
        }
    })
    .await
}

/// What a connection's socket did, counted by [`Watched`] and read by [`serve`].
#[derive(Default)]
pub(crate) struct Progress {
    /// Reads and writes that moved bytes (or saw the end of the stream).
    moves: AtomicU64,
    /// The last write had to wait for room in the socket.
    blocked: AtomicBool,
}

/// The periodic look at a connection's [`Progress`].
struct Quiet {
    progress: Arc<Progress>,
    period: Duration,
    tick: Pin<Box<tokio::time::Sleep>>,
    moves: u64,
    /// A GOAWAY was sent for quiet; the next quiet period drops the connection.
    closing: bool,
}

enum Verdict {
    Alive,
    Close,
    Drop,
}

impl Quiet {
    fn new(progress: Arc<Progress>, period: Duration) -> Quiet {
        Quiet {
            progress,
            period,
            tick: Box::pin(tokio::time::sleep(period)),
            moves: 0,
            closing: false,
        }
    }

    /// Once per period: whether the connection moved since the last look, and what to do if
    /// not. `idle` says no stream is open.
    fn poll(&mut self, cx: &mut Context<'_>, idle: bool) -> Verdict {
        let mut verdict = Verdict::Alive;
        while self.tick.as_mut().poll(cx).is_ready() {
            let moves = self.progress.moves.load(Ordering::Relaxed);
            let still = moves == self.moves;
            self.moves = moves;
            let stuck = self.progress.blocked.load(Ordering::Relaxed);
            if still && (idle || stuck || self.closing) {
                verdict = if self.closing {
                    Verdict::Drop
                } else {
                    self.closing = true;
                    Verdict::Close
                };
            }
            let next = tokio::time::Instant::now() + self.period;
            self.tick.as_mut().reset(next);
        }
        verdict
    }
}

/// An I/O whose reads and writes are counted in a [`Progress`] (relaxed atomics: the counts
/// are only compared once a period).
pub(crate) struct Watched<I> {
    io: I,
    progress: Arc<Progress>,
}

impl<I> Watched<I> {
    pub(crate) fn new(io: I) -> (Watched<I>, Arc<Progress>) {
        let progress = Arc::new(Progress::default());
        let watched = Watched {
            io,
            progress: progress.clone(),
        };
        (watched, progress)
    }

    fn moved(&self) {
        self.progress.moves.fetch_add(1, Ordering::Relaxed);
    }

    /// After a write, or a flush (`write: false`). A flush is not a move (hyper flushes on
    /// every turn, with or without anything to send) and only says the socket is blocked when
    /// it waits (TLS may hold records back); a write that goes through says it is not.
    fn wrote<T>(&self, poll: &Poll<io::Result<T>>, write: bool) {
        let blocked = poll.is_pending();
        if write && !blocked {
            self.moved();
        }
        if (write || blocked) && self.progress.blocked.load(Ordering::Relaxed) != blocked {
            self.progress.blocked.store(blocked, Ordering::Relaxed);
        }
    }
}

impl<I: hyper::rt::Read + Unpin> hyper::rt::Read for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_read(cx, buf);
        if poll.is_ready() {
            self.moved();
        }
        poll
    }
}

impl<I: hyper::rt::Write + Unpin> hyper::rt::Write for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write(cx, buf);
        self.wrote(&poll, true);
        poll
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.wrote(&poll, true);
        poll
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_flush(cx);
        self.wrote(&poll, false);
        poll
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
