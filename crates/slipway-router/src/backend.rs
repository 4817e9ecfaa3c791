//! Backends: one upstream instance (an address the proxy forwards to) with its readiness flag,
//! its in-flight request counter and its own small pool of idle keep-alive HTTP/1.1 connections.
//! A backend also knows the wait queues of the revision pools it is in, so that becoming ready
//! releases requests held there.
//!
//! # New connections wait in the router, not in the kernel
//!
//! A connection the instance has not accepted yet sits in its listening socket's accept
//! queue, whose length the app chose (`listen(2)`'s backlog: 5 for Python's stdlib servers
//! and Django's `runserver`, 511 for Node, 2048 for gunicorn and uvicorn). When the queue is
//! full, the kernel drops the next SYN and the client's kernel retries it after 1 s, 3 s,
//! 7 s: fifty requests released at once onto a freshly started stdlib server waited up to
//! 8 s. So a backend may bound its *new* connections that have not been answered yet
//! ([`Backend::limit_new_connections`], set by the control plane from the backlog it reads
//! from the kernel): such a connection is either in the accept queue or being served, so no
//! more than the backlog can ever wait in the queue. Requests over the bound wait for a
//! permit in arrival order, here in the router, where they count as in flight for the
//! autoscaler; the permit of a connection passes on as soon as its response head arrives.
//! Reused keep-alive connections were accepted long ago and need no permit.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::{TrySendError, http1};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::body::UpstreamBody;
use crate::queue::RevisionQueue;

/// One upstream HTTP/1.1 connection of the hyper path.
///
/// hyper's client splits a connection into the sending half and a future that does the
/// connection's I/O. That future is not spawned as a task of its own: whoever uses the
/// connection polls it ([`Upstream::poll_conn`]), first the request sent on it while it waits
/// for the response head, then the response body while it streams. An idle pooled connection
/// is not polled at all; [`Backend::take_idle`] looks at it once before reuse. So the router's
/// tasks are its client connections and nothing per upstream connection, which keeps tokio's
/// run queue short under load (see `h2.rs` for why that matters).
///
/// Connections that may be upgraded are the exception: their future runs in a task of its own
/// (hyper hands the socket over from it) and `conn` is `None`.
pub(crate) struct Upstream {
    sender: http1::SendRequest<UpstreamBody>,
    /// Boxed: it is large, and it moves with every request (pool, request, response body).
    conn: Option<Box<http1::Connection<TokioIo<TcpStream>, UpstreamBody>>>,
    addr: SocketAddr,
}

impl Upstream {
    /// Moves the connection's I/O forward. Once the connection has ended this does nothing,
    /// and the sending half reports it closed.
    pub(crate) fn poll_conn(&mut self, cx: &mut Context<'_>) {
        if let Some(conn) = &mut self.conn
            && let Poll::Ready(result) = Pin::new(&mut **conn).poll(cx)
        {
            if let Err(err) = result {
                tracing::debug!(addr = %self.addr, error = %err, "upstream connection ended with an error");
            }
            self.conn = None;
        }
    }

    /// Whether the connection has ended, after letting it notice a close the reactor has
    /// already reported (without a system call when it has not).
    fn is_closed(&mut self) -> bool {
        self.poll_conn(&mut Context::from_waker(Waker::noop()));
        self.sender.is_closed()
    }

    /// Whether the connection can take another request right now: it is open and done with
    /// the last exchange both ways. A request body still being sent after the response ended
    /// (a backend that answers before reading the whole upload) keeps it busy, and an idle
    /// connection is not driven by anyone, so such a connection must not be pooled.
    fn is_reusable(&mut self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        self.poll_conn(&mut cx);
        matches!(self.sender.poll_ready(&mut cx), Poll::Ready(Ok(())))
    }

    /// Waits until the connection can take a request.
    pub(crate) async fn ready(&mut self) -> hyper::Result<()> {
        std::future::poll_fn(|cx| {
            self.poll_conn(cx);
            self.sender.poll_ready(cx)
        })
        .await
    }

    /// Sends `req` and waits for the response head. On an error before anything was
    /// written, the request comes back in the error (`TrySendError::take_message`).
    pub(crate) async fn send(
        &mut self,
        req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, TrySendError<Request<UpstreamBody>>> {
        let mut response = std::pin::pin!(self.sender.try_send_request(req));
        std::future::poll_fn(|cx| {
            // The connection first, so a wake-up for a response that has arrived is answered
            // in the same poll.
            self.poll_conn(cx);
            response.as_mut().poll(cx)
        })
        .await
    }
}

/// An upstream connection of the HTTP/1.1 fast path (see `h1.rs`): the socket and what was
/// read from it beyond the last response (nothing, on a connection fit for reuse).
pub(crate) struct RawConn {
    pub(crate) stream: TcpStream,
    pub(crate) buf: bytes::BytesMut,
}

/// An idle upstream connection together with the moment it became idle.
struct IdleConn {
    conn: Upstream,
    since: Instant,
}

/// One upstream instance of a service.
///
/// A backend starts out *not ready*: call [`Backend::set_ready`] once its health check passes.
/// Requests (and upgraded tunnels) that were routed to it hold it alive and are counted in
/// [`Backend::in_flight`] until they finish, so a retired backend can be drained by waiting for
/// that counter to reach zero.
pub struct Backend {
    addr: SocketAddr,
    instance: String,
    ready: AtomicBool,
    /// Whether finished connections may be kept for reuse; cleared by `close_idle`.
    pooling: AtomicBool,
    in_flight: AtomicUsize,
    idle: Mutex<Vec<IdleConn>>,
    /// Idle connections of the fast path, which drives its sockets itself.
    raw_idle: Mutex<Vec<RawConn>>,
    /// The queues of the revision pools this backend was put in (when a route table was
    /// built), woken when it becomes ready.
    queues: Mutex<Vec<Weak<RevisionQueue>>>,
    /// Permits for new connections not answered yet (see the module docs); `None` without
    /// a bound.
    new_connections: Mutex<Option<(usize, Arc<Semaphore>)>>,
}

impl Backend {
    /// Creates a backend for the instance `instance` listening on `addr`. It is not ready yet.
    pub fn new(addr: SocketAddr, instance: impl Into<String>) -> Arc<Backend> {
        Arc::new(Backend {
            addr,
            instance: instance.into(),
            ready: AtomicBool::new(false),
            pooling: AtomicBool::new(true),
            in_flight: AtomicUsize::new(0),
            idle: Mutex::new(Vec::new()),
            raw_idle: Mutex::new(Vec::new()),
            queues: Mutex::new(Vec::new()),
            new_connections: Mutex::new(None),
        })
    }

    /// Bounds the new connections to this backend that have not been answered yet to
    /// `limit` (at least 1), or lifts the bound with `None` (see the module docs). Setting
    /// the bound it already has changes nothing; a different one applies to connections
    /// opened from now on.
    pub fn limit_new_connections(&self, limit: Option<usize>) {
        let mut gate = self
            .new_connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match limit {
            None => *gate = None,
            Some(limit) => {
                let limit = limit.max(1);
                if gate.as_ref().is_none_or(|(current, _)| *current != limit) {
                    *gate = Some((limit, Arc::new(Semaphore::new(limit))));
                }
            }
        }
    }

    /// The bound on new connections not answered yet, if any.
    pub fn new_connection_limit(&self) -> Option<usize> {
        self.new_connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|(limit, _)| *limit)
    }

    /// Waits for the right to open a new connection; hold the permit until the response head
    /// has arrived on it. `None` when new connections are not bounded.
    pub(crate) async fn new_connection_permit(&self) -> Option<OwnedSemaphorePermit> {
        let semaphore = self
            .new_connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|(_, semaphore)| semaphore.clone())?;
        // The semaphore is never closed.
        semaphore.acquire_owned().await.ok()
    }

    /// The address requests are forwarded to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The instance id this backend was created for.
    pub fn instance(&self) -> &str {
        &self.instance
    }

    /// Marks the backend as able (or no longer able) to take new requests.
    ///
    /// Marking it ready also re-enables connection pooling after [`Backend::close_idle`], and
    /// releases the requests its revision holds for want of a ready backend.
    pub fn set_ready(&self, ready: bool) {
        if ready {
            self.pooling.store(true, Ordering::Relaxed);
        }
        self.ready.store(ready, Ordering::SeqCst);
        if ready {
            let queues: Vec<Arc<RevisionQueue>> = self
                .lock_queues()
                .iter()
                .filter_map(Weak::upgrade)
                .collect();
            for queue in queues {
                queue.wake_head();
            }
        }
    }

    /// Whether new requests may be routed to this backend.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Requests and upgraded tunnels currently being proxied to this backend.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Remembers that this backend serves the revision of `queue`, so that
    /// [`Backend::set_ready`] wakes requests waiting there. Called when a route table is built.
    pub(crate) fn watch(&self, queue: &Arc<RevisionQueue>) {
        let mut queues = self.lock_queues();
        queues.retain(|q| q.strong_count() > 0);
        if !queues
            .iter()
            .any(|q| std::ptr::eq(q.as_ptr(), Arc::as_ptr(queue)))
        {
            queues.push(Arc::downgrade(queue));
        }
    }

    fn lock_queues(&self) -> MutexGuard<'_, Vec<Weak<RevisionQueue>>> {
        // A list of weak pointers cannot be left inconsistent by a panic.
        self.queues.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops all idle pooled connections and stops pooling connections of requests that are
    /// still running, so that a retired instance is not kept busy by keep-alive sockets.
    /// [`Backend::set_ready`]`(true)` turns pooling back on.
    pub fn close_idle(&self) {
        self.pooling.store(false, Ordering::Relaxed);
        let drained: Vec<IdleConn> = std::mem::take(&mut *self.lock_idle());
        let raw: Vec<RawConn> = std::mem::take(&mut *self.lock_raw());
        // The connections close when their senders and sockets are dropped, outside the locks.
        drop(drained);
        drop(raw);
    }

    /// The number of idle pooled connections (for tests and metrics).
    pub fn idle_connections(&self) -> usize {
        self.lock_idle().len() + self.lock_raw().len()
    }

    fn lock_raw(&self) -> MutexGuard<'_, Vec<RawConn>> {
        // As for `idle`: a vector of sockets cannot be left half-changed.
        self.raw_idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the most recently used idle fast-path connection that still looks open: one the
    /// backend has closed (or sent something unasked on) shows as readable in the reactor's
    /// last readiness report, which is checked without a system call. A close that the
    /// reactor has not seen yet is caught when the request is sent (see `h1.rs`).
    pub(crate) fn take_raw(&self) -> Option<RawConn> {
        let mut idle = self.lock_raw();
        while let Some(conn) = idle.pop() {
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            if conn.stream.poll_read_ready(&mut cx).is_pending() {
                return Some(conn);
            }
        }
        None
    }

    /// Returns a fast-path connection whose last response was read completely, keeping at
    /// most `max` idle.
    pub(crate) fn put_raw(&self, conn: RawConn, max: usize) {
        if !self.pooling.load(Ordering::Relaxed) || !conn.buf.is_empty() {
            return;
        }
        let mut idle = self.lock_raw();
        if idle.len() < max {
            idle.push(conn);
        }
    }

    /// Opens a new fast-path connection to this backend.
    pub(crate) async fn connect_raw(&self, timeout: Duration) -> io::Result<RawConn> {
        Ok(RawConn {
            stream: self.connect_tcp(timeout).await?,
            buf: bytes::BytesMut::with_capacity(crate::h1::UPSTREAM_BUF),
        })
    }

    /// Connects a socket to this backend within `timeout`, Nagle off.
    async fn connect_tcp(&self, timeout: Duration) -> io::Result<TcpStream> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(self.addr)).await {
            Ok(stream) => stream?,
            Err(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connect timed out after {}ms", timeout.as_millis()),
                ));
            }
        };
        stream.set_nodelay(true)?;
        Ok(stream)
    }

    fn lock_idle(&self) -> MutexGuard<'_, Vec<IdleConn>> {
        // A panic while holding this lock cannot leave the vector inconsistent, so a poisoned
        // lock is simply reused.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the most recently used idle connection that is still open, with how long it idled.
    pub(crate) fn take_idle(&self) -> Option<(Upstream, Duration)> {
        let mut idle = self.lock_idle();
        while let Some(mut idle_conn) = idle.pop() {
            if !idle_conn.conn.is_closed() {
                return Some((idle_conn.conn, idle_conn.since.elapsed()));
            }
        }
        None
    }

    /// Returns a connection whose last response was fully read, keeping at most `max` idle.
    /// One that cannot take another request at once (closed, or still sending the last
    /// request's body) is dropped, which closes it.
    pub(crate) fn put_idle(&self, mut conn: Upstream, max: usize) {
        if !self.pooling.load(Ordering::Relaxed) || !conn.is_reusable() {
            return;
        }
        let mut idle = self.lock_idle();
        if idle.len() >= max {
            // Make room by forgetting connections the backend has closed in the meantime.
            idle.retain_mut(|idle_conn| !idle_conn.conn.is_closed());
        }
        if idle.len() < max {
            idle.push(IdleConn {
                conn,
                since: Instant::now(),
            });
        }
    }

    /// Opens a new HTTP/1.1 connection to this backend. `upgrades` makes the connection able
    /// to hand its socket over after a `101 Switching Protocols` response; its I/O then runs
    /// in a task of its own.
    pub(crate) async fn connect(&self, timeout: Duration, upgrades: bool) -> io::Result<Upstream> {
        let stream = self.connect_tcp(timeout).await?;
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(io::Error::other)?;
        let addr = self.addr;
        if !upgrades {
            return Ok(Upstream {
                sender,
                conn: Some(Box::new(conn)),
                addr,
            });
        }
        tokio::spawn(async move {
            if let Err(err) = conn.with_upgrades().await {
                tracing::debug!(%addr, error = %err, "upstream connection ended with an error");
            }
        });
        Ok(Upstream {
            sender,
            conn: None,
            addr,
        })
    }
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backend")
            .field("addr", &self.addr)
            .field("instance", &self.instance)
            .field("ready", &self.is_ready())
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

/// Counts one request (or tunnel) against a backend for as long as it lives. When it ends,
/// the oldest request waiting in the revision's queue (if any) is woken to take the slot.
pub(crate) struct InFlight {
    backend: Arc<Backend>,
    queue: Option<Arc<RevisionQueue>>,
}

impl InFlight {
    /// Counts a request against `backend` whatever its load.
    pub(crate) fn new(backend: Arc<Backend>, queue: Option<Arc<RevisionQueue>>) -> InFlight {
        backend.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight { backend, queue }
    }

    /// Counts a request against `backend` if fewer than `limit` are in flight there; the check
    /// and the count are one atomic step, so `limit` is never exceeded.
    pub(crate) fn try_new(
        backend: &Arc<Backend>,
        limit: usize,
        queue: &Arc<RevisionQueue>,
    ) -> Option<InFlight> {
        backend
            .in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()?;
        Some(InFlight {
            backend: backend.clone(),
            queue: Some(queue.clone()),
        })
    }

    pub(crate) fn backend(&self) -> &Arc<Backend> {
        &self.backend
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.backend.in_flight.fetch_sub(1, Ordering::SeqCst);
        if let Some(queue) = &self.queue {
            queue.wake_head();
        }
    }
}
