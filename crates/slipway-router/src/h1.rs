//! The HTTP/1.1 fast path: plain requests forwarded by the router's own code, one task per
//! client connection, without hyper.
//!
//! Most traffic a router sees is plain: HTTP/1.1 requests without a body or with a small sized
//! one, answered with a sized or chunked body. For those, hyper's generality costs more than the forwarding itself
//! (a parsed and re-serialised `HeaderMap` on each side, a task and two channels per upstream
//! connection, about 32,000 instructions a request in callgrind). This path reads the client's
//! head with `httparse`, writes the upstream head straight from its bytes (see
//! `h1/request.rs`), sends it over an upstream socket it drives itself, and passes the
//! response head (rewritten, see `h1/response.rs`) and the body through as they come: one read
//! and one write on each side for a small response.
//!
//! Anything that is not plain — HTTP/2, HTTP/1.0, a chunked or large request body, an
//! upgrade, `Expect`, a head `httparse` refuses or one over 16 KiB — hands the connection with
//! its unread bytes to hyper ([`Handoff::Hyper`]), which serves it from then on with the full
//! rules. A head over the router's limits ([`crate::RouterConfig::max_head_bytes`] and
//! `max_headers`) is answered 431 here, before hyper would see it, and one that does not come
//! within the head timeout 408: both with the router's own error format. Routing,
//! admission (queues, scale from zero), failover to the next backend, the replay of an
//! idempotent request whose reused connection died, the upstream timeout, the router's own
//! error answers and the per-revision measurements are the same as on hyper's path.
//!
//! Timeouts cost nothing per request: one sleep per connection is armed at some deadline and,
//! when it fires early (the deadline moved on since), is moved to the current one.
//!
//! A client connection's buffers are small and held only while it is busy: 2 KiB to read into
//! (grown as a long head or a body needs), and none once it has waited a second for its
//! client's next request (see [`IDLE_HOLD`]). With 2,000 keep-alive clients arriving 200 at a
//! time and then idling, the server grew by 3.6 KiB per client, where an 8 KiB buffer held
//! for the connection's life cost 9.5 KiB.

mod chunked;
mod request;
mod response;

use std::future::poll_fn;
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::admit::{Admitted, Outcome};
use crate::backend::{InFlight, RawConn};
use crate::conn::Signal;
use crate::error::{ProxyError, error_response};
use crate::proxy::{Client, MIN_HEAD_BYTES, Router};
use crate::table::{Route, normalize_host};
use chunked::ChunkedEnd;
use request::{Additions, Parsed, RequestHead};
use response::{Extras, Framing, ResponseHead};

/// A client connection's read buffer to begin with, and the least it grows by when it runs low
/// (it doubles as a long head or a body comes in). Most request heads fit: an idle keep-alive
/// connection holds this much, as nginx's `client_header_buffer_size` holds 1 KiB.
const CLIENT_BUF: usize = 2 * 1024;

/// How long a keep-alive client connection keeps its buffers while it waits for its client's
/// next request; after that it gives them back until the client sends again (nginx frees an
/// idle connection's buffer likewise). A busy connection never waits this long.
const IDLE_HOLD: Duration = Duration::from_secs(1);

/// An upstream connection's read buffer, and the least it grows by: a response body passes
/// through it, so it is larger.
pub(crate) const UPSTREAM_BUF: usize = 8 * 1024;

/// A request head that is still incomplete at this size goes to hyper.
const MAX_FAST_HEAD: usize = 16 * 1024;

/// The first bytes of every HTTP/2 connection with prior knowledge (RFC 9113, section 3.4).
pub(crate) const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// How a connection left the fast path.
pub(crate) enum Handoff {
    /// It is finished (closed by either side, timed out, or shut down).
    Done,
    /// Hyper takes it over: `buf` holds what was read and not answered yet.
    Hyper {
        stream: TcpStream,
        buf: BytesMut,
        h2: bool,
    },
}

/// Serves a client connection until it ends or needs hyper.
pub(crate) async fn serve(
    router: &Router,
    mut stream: TcpStream,
    client: &Client,
    signal: &Signal,
) -> Handoff {
    // Allocated once the client has sent something (see `IDLE_HOLD`).
    let mut buf = BytesMut::new();
    let mut upstream_head = Vec::new();
    let mut out = Vec::new();
    let mut clock = Clock::default();
    let additions = Additions {
        client_addr: client.addr.as_bytes(),
    };
    let config = router.config();
    let limits = Limits {
        head: config.max_head_bytes.max(MIN_HEAD_BYTES),
        headers: config.max_headers.max(1),
    };
    // Heads up to this size are parsed as they come; longer ones are only checked against the
    // limits (see `Limits::judge`) and go to hyper.
    let fast_head = MAX_FAST_HEAD.min(limits.head);
    loop {
        // The next request head, within the header timeout.
        let now = Instant::now();
        let deadline = now + config.head_timeout;
        let hold = now + IDLE_HOLD;
        // Once set, the head goes to hyper if it keeps within the limits: where the search for
        // its end stands.
        let mut scanned: Option<usize> = None;
        let head = loop {
            if !buf.is_empty() {
                if scanned.is_none() {
                    let n = buf.len().min(H2_PREFACE.len());
                    if buf[..n] == H2_PREFACE[..n] {
                        if n == H2_PREFACE.len() {
                            return Handoff::Hyper {
                                stream,
                                buf,
                                h2: true,
                            };
                        }
                    } else {
                        match request::parse(
                            &buf,
                            limits.headers,
                            &additions,
                            || router.ids.next_text(),
                            &mut upstream_head,
                        ) {
                            Parsed::Plain(head) if head.len <= limits.head => break head,
                            Parsed::Plain(_) => {
                                let err = ProxyError::HeadTooLarge { limit: limits.head };
                                return refuse(router, stream, buf, &err, None, &mut clock).await;
                            }
                            Parsed::Partial if buf.len() < fast_head => {}
                            Parsed::Partial | Parsed::Crowded => scanned = Some(0),
                            // A head the fast path does not take, complete or refused by
                            // `httparse`: hyper has the final word, within the limits.
                            Parsed::Fallback => match limits.judge(&buf, &mut 0) {
                                Judged::Incomplete | Judged::Within => {
                                    return Handoff::Hyper {
                                        stream,
                                        buf,
                                        h2: false,
                                    };
                                }
                                Judged::Over(err) => {
                                    return refuse(router, stream, buf, &err, None, &mut clock)
                                        .await;
                                }
                            },
                        }
                    }
                }
                if let Some(scanned) = &mut scanned {
                    match limits.judge(&buf, scanned) {
                        Judged::Incomplete => {}
                        Judged::Within => {
                            return Handoff::Hyper {
                                stream,
                                buf,
                                h2: false,
                            };
                        }
                        Judged::Over(err) => {
                            return refuse(router, stream, buf, &err, None, &mut clock).await;
                        }
                    }
                }
            }
            // A connection that has no buffers (a new one, or one that gave them back, see
            // below) gets them once its client has sent something.
            if buf.capacity() == 0 {
                match readable(&stream, &mut clock, deadline, signal).await {
                    Read::Data => {}
                    _ => return Handoff::Done,
                }
                buf.reserve(CLIENT_BUF);
                upstream_head.reserve(1024);
                out.reserve(1024);
            }
            // Between requests, shutdown closes the connection; within one, it waits. The wait
            // between requests first lasts until `hold`: a client that has said nothing by
            // then makes the connection give its buffers back and wait on without them.
            let between = buf.is_empty();
            let watch = between.then_some(signal);
            let until = if between {
                hold.min(deadline)
            } else {
                deadline
            };
            let wait = Some((&mut clock, until));
            match read_more(&mut stream, &mut buf, CLIENT_BUF, wait, watch).await {
                Read::TimedOut if between && until < deadline => {
                    buf = BytesMut::new();
                    upstream_head = Vec::new();
                    out = Vec::new();
                }
                Read::Data => {}
                // A client that sent part of a request head gets a 408; an idle one, or one
                // that sent part of the HTTP/2 preface, is simply disconnected.
                Read::TimedOut
                    if !buf.is_empty()
                        && buf[..buf.len().min(H2_PREFACE.len())]
                            != H2_PREFACE[..buf.len().min(H2_PREFACE.len())] =>
                {
                    let err = ProxyError::RequestTimeout {
                        what: "head",
                        after: config.head_timeout,
                    };
                    return refuse(router, stream, buf, &err, None, &mut clock).await;
                }
                Read::Eof | Read::Failed | Read::TimedOut | Read::Closing => return Handoff::Done,
            }
        };
        // A small body is read whole (see `h1/request.rs`) and sent with the head; each piece
        // of it may take up to the body timeout.
        let end = head.len + head.body_len;
        while buf.len() < end {
            let deadline = Instant::now() + config.body_timeout;
            let wait = Some((&mut clock, deadline));
            match read_more(&mut stream, &mut buf, CLIENT_BUF, wait, None).await {
                Read::Data => {}
                Read::TimedOut => {
                    let err = ProxyError::RequestTimeout {
                        what: "body",
                        after: config.body_timeout,
                    };
                    let id = head.id.bytes(&buf).to_vec();
                    return refuse(router, stream, buf, &err, Some(&id), &mut clock).await;
                }
                Read::Eof | Read::Failed | Read::Closing => return Handoff::Done,
            }
        }
        upstream_head.extend_from_slice(&buf[head.len..end]);
        match exchange(
            router,
            &mut stream,
            &buf,
            &head,
            &upstream_head,
            &mut out,
            &mut clock,
        )
        .await
        {
            Ok(true) => {}
            // The client is gone, or the connection cannot take another request.
            Ok(false) | Err(_) => return Handoff::Done,
        }
        buf.advance(end);
        // A long request grew the buffer; the connection's next requests, most likely short
        // ones, do not keep that much while it stays busy.
        if buf.is_empty() && end > 4 * CLIENT_BUF {
            buf = BytesMut::with_capacity(CLIENT_BUF);
        }
        if head.close || signal.is_closing() {
            let _ = stream.shutdown().await;
            return Handoff::Done;
        }
    }
}

/// Routes one plain request, forwards it and streams the answer back. Returns whether the
/// client connection can take another request; an error means the client is gone.
async fn exchange(
    router: &Router,
    client: &mut TcpStream,
    buf: &[u8],
    head: &RequestHead,
    upstream_head: &[u8],
    out: &mut Vec<u8>,
    clock: &mut Clock,
) -> io::Result<bool> {
    // `request::parse` checked that both are ASCII / UTF-8.
    let host = normalize_host(std::str::from_utf8(&buf[head.host.clone()]).unwrap_or_default());
    let target = std::str::from_utf8(&buf[head.path.clone()]).unwrap_or_default();
    // Routes match the path alone, as `Uri::path` gives it on hyper's path.
    let path = target.split_once('?').map_or(target, |(path, _)| path);
    let request_id = head.id.bytes(buf);
    let table = router.table.load_full();
    let mut outcome = Outcome::default();
    let admitted = match router.own_answer(&table, &host, target, false) {
        Some(answer) => Err(answer),
        None => {
            router
                .admit(
                    &table,
                    &host,
                    path,
                    &head.choice,
                    head.body_len as u64,
                    &mut outcome,
                )
                .await
        }
    };
    let date = http_date();
    let answer = match admitted {
        Ok(admitted) => {
            let extras = Extras {
                request_id,
                set_cookie: outcome.set_cookie.as_ref().map(|c| c.as_bytes()),
                date: &date,
                head_method: head.head_method,
                close: head.close,
            };
            send(
                router,
                client,
                admitted,
                head,
                upstream_head,
                &extras,
                out,
                clock,
            )
            .await
        }
        Err(err) => Err(Attempt::Proxy(err)),
    };
    let answer = match answer {
        Ok(answer) => answer,
        Err(Attempt::Client(err)) => return Err(err),
        Err(Attempt::Proxy(err)) => {
            let status = write_error(&err, request_id, &date, head.close, out);
            let written = client.write_all(out).await;
            if let Some(measure) = outcome.measure {
                measure.finish(status, false);
            }
            written?;
            return Ok(!head.close && !err.closes());
        }
    };
    let Answer {
        conn,
        head: response,
        in_flight,
    } = answer;
    let status = http::StatusCode::from_u16(response.status).unwrap_or(http::StatusCode::OK);
    let max_idle = router.config.max_idle_per_backend;
    let reusable = response.reusable;
    let release = move |conn: RawConn| {
        if reusable {
            in_flight.backend().put_raw(conn, max_idle);
        }
        drop(in_flight);
    };
    let body = forward_body(client, conn, &response, out, release).await;
    let failed = matches!(body, Err(BodyError::Upstream(_)));
    if let Some(measure) = outcome.measure {
        measure.finish(status, failed);
    }
    match body {
        Ok(()) => Ok(!response.close_client),
        Err(BodyError::Client(err)) => Err(err),
        Err(BodyError::Upstream(err)) => {
            tracing::debug!(error = %err, "upstream body broke off; closing the client connection");
            Ok(false)
        }
    }
}

/// A backend's answer whose head was read (and written into `out`).
struct Answer {
    conn: RawConn,
    head: ResponseHead,
    in_flight: InFlight,
}

/// Why a request's exchange stopped: the upstream side (answered with the router's error
/// response if nothing was sent yet) or the client (nothing more to do).
enum Attempt {
    Proxy(ProxyError),
    Client(io::Error),
}

impl From<ProxyError> for Attempt {
    fn from(err: ProxyError) -> Attempt {
        Attempt::Proxy(err)
    }
}

/// Sends the request to its backend, failing over to the next ready backend of the pool when
/// one cannot be connected to, and reads the answer's head within the upstream timeout.
#[allow(clippy::too_many_arguments)]
async fn send(
    router: &Router,
    client: &mut TcpStream,
    admitted: Admitted<'_>,
    head: &RequestHead,
    upstream_head: &[u8],
    extras: &Extras<'_>,
    out: &mut Vec<u8>,
    clock: &mut Clock,
) -> Result<Answer, Attempt> {
    let Admitted {
        route,
        pool,
        mut index,
        mut in_flight,
    } = admitted;
    let timeout = router.config.upstream_timeout;
    let deadline = Instant::now() + timeout;
    let mut tried: Vec<usize> = Vec::new();
    let mut replayed = false;
    let mut fresh = false;
    loop {
        let backend = in_flight.backend().clone();
        let pooled = if fresh { None } else { backend.take_raw() };
        let reused = pooled.is_some();
        // A new connection's permit is held until its response head has arrived (see
        // `backend.rs`); the wait for it counts against the upstream timeout.
        let _permit = match pooled {
            Some(_) => None,
            None => {
                match tokio::time::timeout_at(deadline, backend.new_connection_permit()).await {
                    Ok(permit) => permit,
                    Err(_) => {
                        return Err(ProxyError::Timeout {
                            target: route.target.clone(),
                            addr: backend.addr(),
                            after: timeout,
                        }
                        .into());
                    }
                }
            }
        };
        let mut conn = match pooled {
            Some(conn) => conn,
            None => match backend.connect_raw(router.config.connect_timeout).await {
                Ok(conn) => conn,
                Err(error) => {
                    tried.push(index);
                    let Some((next, next_in_flight)) = route.acquire(pool, &tried) else {
                        return Err(unreachable(&route, backend.addr(), error).into());
                    };
                    tracing::debug!(addr = %backend.addr(), %error, "backend unreachable; trying the next one");
                    (index, in_flight, fresh) = (next, next_in_flight, false);
                    continue;
                }
            },
        };
        match round_trip(
            client,
            &mut conn,
            upstream_head,
            extras,
            out,
            clock,
            deadline,
        )
        .await
        {
            Ok(response) => {
                return Ok(Answer {
                    conn,
                    head: response,
                    in_flight,
                });
            }
            Err(Trip::Client(err)) => return Err(Attempt::Client(err)),
            Err(Trip::TimedOut) => {
                return Err(ProxyError::Timeout {
                    target: route.target.clone(),
                    addr: backend.addr(),
                    after: timeout,
                }
                .into());
            }
            // A reused connection that died before answering: the backend closed it while it
            // idled (a keep-alive timeout, or the instance was just killed). A request that
            // surely did not get through, or may safely be sent twice, goes again on a fresh
            // connection, once.
            Err(Trip::Upstream { error, unsent })
                if reused && !replayed && (unsent || head.idempotent) =>
            {
                tracing::debug!(addr = %backend.addr(), %error, "reused upstream connection failed; sending again on a fresh one");
                replayed = true;
                fresh = true;
            }
            Err(Trip::Upstream { error, unsent }) if !reused && unsent => {
                // A fresh connection that would not even take the request: like a refused
                // connect, try the next backend.
                tried.push(index);
                let Some((next, next_in_flight)) = route.acquire(pool, &tried) else {
                    return Err(unreachable(&route, backend.addr(), error).into());
                };
                (index, in_flight, fresh) = (next, next_in_flight, false);
            }
            Err(Trip::Upstream { error, .. }) => {
                return Err(ProxyError::UpstreamFailed {
                    target: route.target.clone(),
                    addr: backend.addr(),
                    error: Box::new(error),
                }
                .into());
            }
            Err(Trip::Bad(error)) => {
                return Err(ProxyError::UpstreamFailed {
                    target: route.target.clone(),
                    addr: backend.addr(),
                    error: Box::new(error),
                }
                .into());
            }
        }
    }
}

fn unreachable(route: &Route, addr: std::net::SocketAddr, error: io::Error) -> ProxyError {
    ProxyError::Unreachable {
        target: route.target.clone(),
        addr,
        error,
    }
}

/// How one round trip to one backend failed.
enum Trip {
    /// The socket failed; `unsent` if the request head could not even be written.
    Upstream {
        error: io::Error,
        unsent: bool,
    },
    /// The backend's answer is not one to forward.
    Bad(response::BadResponse),
    TimedOut,
    /// Writing an informational answer to the client failed.
    Client(io::Error),
}

/// Writes the request head and reads the final response head, forwarding informational
/// answers (other than `100 Continue`) to the client on the way.
async fn round_trip(
    client: &mut TcpStream,
    conn: &mut RawConn,
    upstream_head: &[u8],
    extras: &Extras<'_>,
    out: &mut Vec<u8>,
    clock: &mut Clock,
    deadline: Instant,
) -> Result<ResponseHead, Trip> {
    if let Err(error) = conn.stream.write_all(upstream_head).await {
        return Err(Trip::Upstream {
            error,
            unsent: true,
        });
    }
    loop {
        if !conn.buf.is_empty() {
            match response::parse(&conn.buf, extras, out) {
                Ok(Some(head)) if head.status == 101 => {
                    return Err(Trip::Bad(response::BadResponse(
                        "it answered 101 Switching Protocols to a request that asked for no upgrade",
                    )));
                }
                Ok(Some(head)) if (100..200).contains(&head.status) => {
                    conn.buf.advance(head.len);
                    if !out.is_empty() {
                        client.write_all(out).await.map_err(Trip::Client)?;
                    }
                    continue;
                }
                Ok(Some(head)) => {
                    conn.buf.advance(head.len);
                    return Ok(head);
                }
                Ok(None) if conn.buf.len() < MAX_FAST_HEAD * 4 => {}
                Ok(None) => {
                    return Err(Trip::Bad(response::BadResponse("response head too large")));
                }
                Err(bad) => return Err(Trip::Bad(bad)),
            }
        }
        let got_nothing = conn.buf.is_empty();
        match read_more(
            &mut conn.stream,
            &mut conn.buf,
            UPSTREAM_BUF,
            Some((&mut *clock, deadline)),
            None,
        )
        .await
        {
            Read::Data => {}
            Read::TimedOut => return Err(Trip::TimedOut),
            Read::Eof => {
                return Err(Trip::Upstream {
                    error: io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the connection closed before a complete response head",
                    ),
                    unsent: false,
                });
            }
            Read::Failed => {
                let error = io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    if got_nothing {
                        "the connection failed before any response"
                    } else {
                        "the connection failed within the response head"
                    },
                );
                return Err(Trip::Upstream {
                    error,
                    unsent: false,
                });
            }
            Read::Closing => unreachable!("no signal watched"),
        }
    }
}

/// Why a response body could not be passed on completely.
enum BodyError {
    /// The backend's side broke (reset, closed early, broken chunked framing).
    Upstream(io::Error),
    /// The client went away.
    Client(io::Error),
}

/// Streams the response body after its head (already in `out`) to the client, as the backend
/// framed it. Small bodies go out in the same write as the head. Once the backend's side of
/// the exchange is complete, and before the last write to the client, `release` gets the
/// connection back: a client that sends its next request the moment it has the answer finds
/// the connection idle in the pool.
async fn forward_body(
    client: &mut TcpStream,
    mut conn: RawConn,
    response: &ResponseHead,
    out: &mut Vec<u8>,
    release: impl FnOnce(RawConn),
) -> Result<(), BodyError> {
    match response.framing {
        Framing::Empty => {
            release(conn);
            client.write_all(out).await.map_err(BodyError::Client)?;
        }
        Framing::Length(length) => {
            let mut left = length;
            let end_of = move |bytes: &[u8]| {
                let have = bytes.len() as u64;
                if have >= left {
                    // `left` is at most `have`, a buffer length: it fits a usize.
                    Ok(Some(left as usize))
                } else {
                    left -= have;
                    Ok(None)
                }
            };
            return pass_through(client, conn, out, release, end_of).await;
        }
        Framing::Chunked => {
            let mut scanner = ChunkedEnd::new();
            let end_of = move |bytes: &[u8]| {
                scanner.feed(bytes).map_err(|bad| {
                    BodyError::Upstream(io::Error::new(io::ErrorKind::InvalidData, bad.0))
                })
            };
            return pass_through(client, conn, out, release, end_of).await;
        }
        Framing::UntilClose => {
            out.extend_from_slice(&conn.buf);
            conn.buf.clear();
            client.write_all(out).await.map_err(BodyError::Client)?;
            while read_body(&mut conn).await? > 0 {
                client
                    .write_all(&conn.buf)
                    .await
                    .map_err(BodyError::Client)?;
                conn.buf.clear();
            }
        }
    }
    Ok(())
}

/// Passes a body with a known end to the client: `end_of` is given every new piece of the
/// body in order and says where in it the body ends, if it does (`None`: all of it is body).
/// The first piece goes out in one write with the head in `out`.
async fn pass_through(
    client: &mut TcpStream,
    mut conn: RawConn,
    out: &mut Vec<u8>,
    release: impl FnOnce(RawConn),
    mut end_of: impl FnMut(&[u8]) -> Result<Option<usize>, BodyError>,
) -> Result<(), BodyError> {
    let mut first = true;
    loop {
        let end = end_of(&conn.buf)?;
        let take = end.unwrap_or(conn.buf.len());
        if !std::mem::take(&mut first) {
            out.clear();
        }
        out.extend_from_slice(&conn.buf[..take]);
        conn.buf.advance(take);
        if end.is_some() {
            release(conn);
            return client.write_all(out).await.map_err(BodyError::Client);
        }
        client.write_all(out).await.map_err(BodyError::Client)?;
        if read_body(&mut conn).await? == 0 {
            return Err(BodyError::Upstream(cut_short()));
        }
    }
}

fn cut_short() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the backend closed the connection within the response body",
    )
}

/// Reads more of a response body into the connection's buffer; returns how much (0 at the end
/// of the stream). No timeout applies while a body streams, as on hyper's path.
async fn read_body(conn: &mut RawConn) -> Result<usize, BodyError> {
    let before = conn.buf.len();
    match read_more(&mut conn.stream, &mut conn.buf, UPSTREAM_BUF, None, None).await {
        Read::Data => Ok(conn.buf.len() - before),
        Read::Eof => Ok(0),
        _ => Err(BodyError::Upstream(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "the connection failed within the response body",
        ))),
    }
}

/// Writes the router's own answer for `err` into `out`; returns its status.
fn write_error(
    err: &ProxyError,
    request_id: &[u8],
    date: &[u8],
    close: bool,
    out: &mut Vec<u8>,
) -> http::StatusCode {
    let response = error_response(err);
    let status = response.status();
    out.clear();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in response.headers() {
        request::put_header(out, name.as_str().as_bytes(), value.as_bytes());
    }
    let body = response.body().full_bytes();
    request::put_header(out, b"x-request-id", request_id);
    request::put_header(out, b"date", date);
    request::put_header(out, b"content-length", body.len().to_string().as_bytes());
    // Some errors close the connection whatever the client asked (and say so already).
    if close && !err.closes() {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    status
}

/// The limits every HTTP/1 request head is held to.
#[derive(Clone, Copy)]
struct Limits {
    /// The longest head, in bytes.
    head: usize,
    /// The most header fields.
    headers: usize,
}

/// What [`Limits::judge`] found.
enum Judged {
    /// The head is not complete yet, and within the size limit so far.
    Incomplete,
    /// A complete head within both limits.
    Within,
    /// A head over a limit: the answer to give.
    Over(ProxyError),
}

impl Limits {
    /// Checks the head at the start of `buf` against the limits without parsing it: finds its
    /// end (the first empty line), looking from `scanned` on (where the last look stopped),
    /// and counts its lines. For heads the fast path does not parse itself, which hyper then
    /// reads, so that an oversized head gets the router's own 431.
    fn judge(&self, buf: &[u8], scanned: &mut usize) -> Judged {
        match head_end(buf, scanned) {
            Some(end) if end > self.head => {
                Judged::Over(ProxyError::HeadTooLarge { limit: self.head })
            }
            Some(end) => {
                // The request line and the empty line end with a line feed too.
                let lines = buf[..end].iter().filter(|&&b| b == b'\n').count();
                if lines.saturating_sub(2) > self.headers {
                    Judged::Over(ProxyError::TooManyHeaders {
                        limit: self.headers,
                    })
                } else {
                    Judged::Within
                }
            }
            None if buf.len() >= self.head => {
                Judged::Over(ProxyError::HeadTooLarge { limit: self.head })
            }
            None => Judged::Incomplete,
        }
    }
}

/// Where the head at the start of `buf` ends (just past its empty line, `CRLF` or a bare
/// `LF`), if it does. The search starts at `*scanned` and leaves there where the next one
/// should start, so a head that arrives in many pieces is scanned once.
fn head_end(buf: &[u8], scanned: &mut usize) -> Option<usize> {
    let mut at = (*scanned).min(buf.len());
    while let Some(offset) = buf[at..].iter().position(|&b| b == b'\n') {
        let lf = at + offset;
        match &buf[lf + 1..] {
            [b'\n', ..] => return Some(lf + 2),
            [b'\r', b'\n', ..] => return Some(lf + 3),
            [] | [b'\r'] => {
                // The next line has not come yet: look at this line feed again.
                *scanned = lf;
                return None;
            }
            _ => at = lf + 1,
        }
    }
    *scanned = buf.len();
    None
}

/// How long a refused client's remaining bytes are read and thrown away after the answer.
const LINGER: Duration = Duration::from_secs(2);

/// Answers a request the router will not take (`err`: a head over the limits, a client too
/// slow) and closes the connection. The client may still be sending its request: what it
/// sends is read and thrown away for a moment (until it closes its side, or for [`LINGER`]),
/// so that it reads the answer instead of a connection reset.
async fn refuse(
    router: &Router,
    mut stream: TcpStream,
    mut buf: BytesMut,
    err: &ProxyError,
    request_id: Option<&[u8]>,
    clock: &mut Clock,
) -> Handoff {
    let id = router.ids.next_text();
    let mut out = Vec::with_capacity(512);
    write_error(err, request_id.unwrap_or(&id), &http_date(), true, &mut out);
    if stream.write_all(&out).await.is_err() || stream.shutdown().await.is_err() {
        return Handoff::Done;
    }
    let until = Instant::now() + LINGER;
    loop {
        buf.clear();
        match read_more(
            &mut stream,
            &mut buf,
            CLIENT_BUF,
            Some((&mut *clock, until)),
            None,
        )
        .await
        {
            Read::Data => {}
            _ => return Handoff::Done,
        }
    }
}

/// Reads the start of a connection hyper is to serve until it shows whether it is HTTP/2 with
/// prior knowledge (the whole preface came) or not (a byte differs from it). `None` if the
/// client closed first.
pub(crate) async fn sniff(stream: &mut TcpStream, buf: &mut BytesMut) -> Option<bool> {
    loop {
        match stream.read_buf(buf).await {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        let n = buf.len().min(H2_PREFACE.len());
        if buf[..n] != H2_PREFACE[..n] {
            return Some(false);
        }
        if n == H2_PREFACE.len() {
            return Some(true);
        }
    }
}

/// The current time as an HTTP date, formatted once a second per thread.
fn http_date() -> [u8; 29] {
    thread_local! {
        static CACHED: std::cell::Cell<(u64, [u8; 29])> = const { std::cell::Cell::new((u64::MAX, [0; 29])) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with(|cached| {
        let (at, text) = cached.get();
        if at == secs {
            return text;
        }
        let mut text = [b' '; 29];
        let formatted = httpdate::fmt_http_date(now);
        let n = formatted.len().min(29);
        text[..n].copy_from_slice(&formatted.as_bytes()[..n]);
        cached.set((secs, text));
        text
    })
}

/// What one wait for more bytes ended with.
enum Read {
    Data,
    Eof,
    Failed,
    TimedOut,
    Closing,
}

/// Reads what is available on `stream` into `buf` (first making room for at least `step / 4`
/// bytes, growing it by `step` or more), waiting until the deadline at most (if
/// one is given, with the clock to keep it), and (if `signal` is given) until the router
/// shuts down.
///
/// The read is tokio's `poll_read`, which marks the socket as drained when a read returns less
/// than it asked for; the next wait then goes straight to the reactor instead of first trying
/// a read that would fail with `EAGAIN`, and an idle pooled connection shows as readable only
/// when the backend sends or closes (see `Backend::take_raw`).
async fn read_more(
    stream: &mut TcpStream,
    buf: &mut BytesMut,
    step: usize,
    mut deadline: Option<(&mut Clock, Instant)>,
    signal: Option<&Signal>,
) -> Read {
    if buf.capacity() - buf.len() < step / 4 {
        buf.reserve(step);
    }
    let mut read = pin!(stream.read_buf(buf));
    // The signal's waker is registered only when the read has to wait (the flag is checked
    // first either way, so a connection asked to close does not read on).
    poll_fn(|cx| {
        if signal.is_some_and(Signal::is_closing) {
            return Poll::Ready(Read::Closing);
        }
        match read.as_mut().poll(cx) {
            Poll::Ready(Ok(0)) => Poll::Ready(Read::Eof),
            Poll::Ready(Ok(_)) => Poll::Ready(Read::Data),
            Poll::Ready(Err(_)) => Poll::Ready(Read::Failed),
            Poll::Pending => {
                if signal.is_some_and(|signal| signal.poll_closing(cx)) {
                    return Poll::Ready(Read::Closing);
                }
                match &mut deadline {
                    Some((clock, at)) => clock.poll_passed(cx, *at).map(|()| Read::TimedOut),
                    None => Poll::Pending,
                }
            }
        }
    })
    .await
}

/// Waits until `stream` has something to read (or was closed or failed: the read that follows
/// finds out), until `deadline` or until the router shuts down, without a buffer to read into.
async fn readable(
    stream: &TcpStream,
    clock: &mut Clock,
    deadline: Instant,
    signal: &Signal,
) -> Read {
    poll_fn(|cx| {
        if signal.is_closing() {
            return Poll::Ready(Read::Closing);
        }
        match stream.poll_read_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Read::Data),
            Poll::Ready(Err(_)) => Poll::Ready(Read::Failed),
            Poll::Pending if signal.poll_closing(cx) => Poll::Ready(Read::Closing),
            Poll::Pending => clock.poll_passed(cx, deadline).map(|()| Read::TimedOut),
        }
    })
    .await
}

/// One sleep per connection for all its deadlines (see the module docs).
#[derive(Default)]
struct Clock {
    sleep: Option<(Pin<Box<Sleep>>, Instant)>,
}

impl Clock {
    /// Ready once `deadline` has passed.
    fn poll_passed(&mut self, cx: &mut Context<'_>, deadline: Instant) -> Poll<()> {
        let (sleep, armed) = self
            .sleep
            .get_or_insert_with(|| (Box::pin(tokio::time::sleep_until(deadline)), deadline));
        if deadline < *armed {
            sleep.as_mut().reset(deadline);
            *armed = deadline;
        }
        loop {
            ready!(sleep.as_mut().poll(cx));
            if *armed >= deadline {
                return Poll::Ready(());
            }
            // It fired for an earlier deadline; the current one is later.
            sleep.as_mut().reset(deadline);
            *armed = deadline;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_of_a_head_is_its_first_empty_line() {
        let mut scanned = 0;
        let raw = b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /next";
        assert_eq!(head_end(raw, &mut scanned), Some(raw.len() - 9));
        let mut scanned = 0;
        assert_eq!(
            head_end(b"GET / HTTP/1.1\nHost: a\n\nbody", &mut scanned),
            Some(24)
        );
    }

    #[test]
    fn a_head_arriving_in_pieces_is_scanned_once() {
        let raw = b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n\r\n";
        let mut scanned = 0;
        let mut found = None;
        for end in 1..=raw.len() {
            let before = scanned;
            found = head_end(&raw[..end], &mut scanned);
            if found.is_some() {
                assert_eq!(end, raw.len());
                break;
            }
            // The search never goes back more than to the last line feed.
            assert!(scanned >= before, "{scanned} < {before}");
        }
        assert_eq!(found, Some(raw.len()));
    }

    #[test]
    fn heads_are_judged_by_their_size_and_their_lines() {
        let limits = Limits {
            head: 64,
            headers: 2,
        };
        let judge = |raw: &[u8]| limits.judge(raw, &mut 0);
        assert!(matches!(
            judge(b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\n\r\n"),
            Judged::Within
        ));
        assert!(matches!(
            judge(b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\nY: 2\r\n\r\n"),
            Judged::Over(ProxyError::TooManyHeaders { limit: 2 })
        ));
        assert!(matches!(
            judge(b"GET / HTTP/1.1\r\nHost: a\r\n"),
            Judged::Incomplete
        ));
        let long = format!("GET / HTTP/1.1\r\nHost: a\r\nX: {}\r\n\r\n", "a".repeat(40));
        assert!(matches!(
            judge(long.as_bytes()),
            Judged::Over(ProxyError::HeadTooLarge { limit: 64 })
        ));
        // No end within the limit: too large, whatever follows.
        let unfinished = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(60));
        assert!(matches!(
            judge(unfinished.as_bytes()),
            Judged::Over(ProxyError::HeadTooLarge { .. })
        ));
    }
}
