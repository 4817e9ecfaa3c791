//! Client connections as a whole: how many are open, and the signal that asks them to close
//! when the router shuts down.
//!
//! Every accepted connection holds a [`ConnGuard`] for as long as it is served. Shutdown sets
//! each connection's [`Signal`] and wakes the task serving it: an idle keep-alive connection
//! closes at once, one in the middle of a request closes after its response (hyper's
//! connections get `graceful_shutdown`). [`Connections::wait_closed`] returns when the last
//! guard is dropped. Polling a signal costs one atomic load plus registering the task's waker,
//! which is what the request path can afford (a `Notify` would take a lock on every wait).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;
use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// One connection's shutdown signal.
#[derive(Default)]
pub(crate) struct Signal {
    closing: AtomicBool,
    waker: AtomicWaker,
}

impl Signal {
    /// Whether the connection should close; otherwise the task polling is woken when it
    /// should.
    pub(crate) fn poll_closing(&self, cx: &mut Context<'_>) -> bool {
        self.waker.register(cx.waker());
        self.is_closing()
    }

    /// Whether the connection should close (without registering for a wake-up).
    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.waker.wake();
    }
}

/// The open connections of one `Router::serve` call.
#[derive(Default)]
pub(crate) struct Connections {
    closing: AtomicBool,
    open: AtomicUsize,
    /// The open connections of every `serve` call of the router (see
    /// `Router::client_connections`).
    all_calls: Arc<AtomicUsize>,
    signals: Mutex<Vec<Weak<Signal>>>,
    /// How many signals `signals` holds (written under its lock).
    listed: AtomicUsize,
    all_closed: Notify,
}

/// With at least this many signals listed, the closed connections' are forgotten as soon as
/// fewer than a quarter of the listed connections are still open (see `ConnGuard::drop`).
const FORGET_FROM: usize = 256;

impl Connections {
    /// The connections of one `serve` call, also counted in `all_calls`.
    pub(crate) fn counted_in(all_calls: Arc<AtomicUsize>) -> Connections {
        Connections {
            all_calls,
            ..Connections::default()
        }
    }

    /// Counts a new connection until the returned guard is dropped.
    pub(crate) fn open(self: &Arc<Self>) -> ConnGuard {
        self.open.fetch_add(1, Ordering::SeqCst);
        self.all_calls.fetch_add(1, Ordering::Relaxed);
        let signal = Arc::new(Signal::default());
        {
            let mut signals = self.signals.lock().unwrap_or_else(PoisonError::into_inner);
            if signals.len() == signals.capacity() {
                // Forget closed connections before growing; amortised over the pushes since.
                signals.retain(|s| s.strong_count() > 0);
            }
            signals.push(Arc::downgrade(&signal));
            self.listed.store(signals.len(), Ordering::Relaxed);
        }
        if self.closing.load(Ordering::Acquire) {
            signal.close();
        }
        ConnGuard {
            connections: self.clone(),
            signal,
        }
    }

    /// Forgets the signals of closed connections and the room they took. Each one keeps its
    /// small allocation alive (a `Weak` does); after a burst of connections, those are spread
    /// over the memory the connections used, which then cannot go back to the system.
    fn forget_closed(&self) {
        let mut signals = self.signals.lock().unwrap_or_else(PoisonError::into_inner);
        signals.retain(|s| s.strong_count() > 0);
        let room = signals.len() * 2;
        signals.shrink_to(room);
        self.listed.store(signals.len(), Ordering::Relaxed);
    }

    /// Asks every open connection to close once its current request is answered.
    pub(crate) fn close_all(&self) {
        self.closing.store(true, Ordering::Release);
        let signals: Vec<Arc<Signal>> = self
            .signals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(Weak::upgrade)
            .collect();
        for signal in signals {
            signal.close();
        }
    }

    /// Waits until no connection is open.
    pub(crate) async fn wait_closed(&self) {
        loop {
            let notified = self.all_closed.notified();
            if self.open.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// An open connection; dropping it counts the connection as closed.
pub(crate) struct ConnGuard {
    connections: Arc<Connections>,
    pub(crate) signal: Arc<Signal>,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let connections = &self.connections;
        connections.all_calls.fetch_sub(1, Ordering::Relaxed);
        let open = connections.open.fetch_sub(1, Ordering::SeqCst) - 1;
        if open == 0 {
            connections.all_closed.notify_waiters();
        }
        // A burst of connections is over: most of the listed ones have closed.
        let listed = connections.listed.load(Ordering::Relaxed);
        if listed >= FORGET_FROM && open < listed / 4 {
            connections.forget_closed();
        }
    }
}

/// A client socket handed to hyper with the bytes the fast path already read from it, which
/// hyper reads first.
pub(crate) struct Rewind {
    prefix: Bytes,
    stream: TcpStream,
}

impl Rewind {
    pub(crate) fn new(prefix: Bytes, stream: TcpStream) -> Rewind {
        Rewind { prefix, stream }
    }
}

impl AsyncRead for Rewind {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn closing_signals_open_connections_and_waits_for_their_guards() {
        let connections = Arc::new(Connections::default());
        let first = connections.open();
        let second = connections.open();
        assert!(!first.signal.is_closing());
        connections.close_all();
        assert!(first.signal.is_closing() && second.signal.is_closing());
        // A connection accepted after the call is told at once.
        let late = connections.open();
        assert!(late.signal.is_closing());
        let waiter = {
            let connections = connections.clone();
            tokio::spawn(async move { connections.wait_closed().await })
        };
        drop(first);
        drop(late);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(second);
        waiter
            .await
            .expect("wait_closed returns once all guards are gone");
    }

    #[test]
    fn the_signals_of_a_burst_of_connections_are_forgotten_when_it_is_over() {
        let connections = Arc::new(Connections::default());
        let mut guards: Vec<ConnGuard> = (0..1000).map(|_| connections.open()).collect();
        let listed = || connections.signals.lock().expect("lock").len();
        assert_eq!(listed(), 1000);
        // Down to a quarter: still listed.
        guards.truncate(250);
        assert_eq!(listed(), 1000);
        // Below a quarter: only the open ones are (and the one closing, whose signal is
        // dropped just after), and the list's room shrank with it.
        guards.truncate(249);
        assert_eq!(listed(), 250);
        assert!(connections.signals.lock().expect("lock").capacity() <= 2 * 250);
        // Under `FORGET_FROM` listed, closing more changes nothing.
        guards.truncate(10);
        assert_eq!(listed(), 250);
        assert!(guards.iter().all(|g| !g.signal.is_closing()));
        connections.close_all();
        assert!(guards.iter().all(|g| g.signal.is_closing()));
    }
}
