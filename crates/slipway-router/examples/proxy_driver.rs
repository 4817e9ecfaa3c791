//! A driver for measuring the router's cost per request with deterministic instruction counts
//! (`valgrind --tool=callgrind`), where the wall clock of a shared machine is too noisy.
//!
//! It has three modes, meant to run as separate processes so that only the router is traced:
//!
//! - `backend PORT`: a trivial HTTP/1.1 keep-alive backend answering `hello, world\n`.
//! - `router PORT BACKEND_ADDR REQUESTS`: the router on `127.0.0.1:PORT`, run like `slipway
//!   server` runs it (a multi-thread tokio runtime with one worker, metrics on), routing the
//!   host `echo.bench.localhost` to one ready backend at `BACKEND_ADDR`. It exits once its
//!   revision's stats have recorded `REQUESTS` requests.
//! - `client ADDR REQUESTS CONNECTIONS`: sends `REQUESTS` keep-alive `GET /` requests for that
//!   host, spread over `CONNECTIONS` connections that each send one request at a time, like
//!   `wrk -c CONNECTIONS`.
//!
//! Instructions per request are the difference between two traced router runs divided by the
//! difference of their request counts, which cancels start-up and shut-down. For example, a
//! run of 20 000 requests costing 1 210 M instructions and one of 40 000 costing 2 410 M give
//! (2 410 − 1 210) M / 20 000 = 60 000 instructions per request.
//!
//! `bench/instructions` runs it that way, for this checkout's build and for others side by side.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use slipway_router::{Backend, Pool, RevisionStats, RouteTable, Router, RouterConfig, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const HOST: &str = "echo.bench.localhost";

fn main() -> io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || {
        io::Error::other(
            "usage: proxy_driver backend PORT | router PORT BACKEND_ADDR REQUESTS | \
             client ADDR REQUESTS CONNECTIONS",
        )
    };
    let arg = |i: usize| args.get(i).map(String::as_str).ok_or_else(usage);
    let number = |i: usize| -> io::Result<u64> { arg(i)?.parse().map_err(|_| usage()) };
    match arg(0)? {
        "backend" => current_thread()?.block_on(backend(number(1)? as u16)),
        "router" => {
            let backend: SocketAddr = arg(2)?.parse().map_err(|_| usage())?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?;
            runtime.block_on(router(number(1)? as u16, backend, number(3)?))
        }
        "client" => {
            let addr: SocketAddr = arg(1)?.parse().map_err(|_| usage())?;
            current_thread()?.block_on(client(addr, number(2)?, number(3)?))
        }
        _ => Err(usage()),
    }
}

fn current_thread() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
}

/// Answers every request on every connection with a fixed 13-byte body. It reads until the
/// end of a request head and does not parse anything else, so `GET` requests are all it knows.
async fn backend(port: u16) -> io::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    loop {
        let (mut stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(4096);
            loop {
                let Some(end) = read_head(&mut stream, &mut buf).await else {
                    return;
                };
                buf.drain(..end);
                let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 13\r\n\r\nhello, world\n";
                if stream.write_all(answer).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// Reads from `stream` into `buf` until it holds a complete head; returns the head's length,
/// or `None` when the connection ends first.
async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(at + 4);
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Runs the router until `requests` requests were recorded.
async fn router(port: u16, backend: SocketAddr, requests: u64) -> io::Result<()> {
    let router = Router::new(RouterConfig::default());
    let stats = RevisionStats::new();
    let instance = Backend::new(backend, "bench-1");
    instance.set_ready(true);
    let target = Arc::new(Target {
        app: "bench".into(),
        service: "echo".into(),
        pools: vec![Pool::with_stats(1, 100, vec![instance], stats.clone())],
        ..Target::default()
    });
    let mut table = RouteTable::new();
    table.add_host(HOST, target);
    router.publish(table);
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let done = async move {
        while stats.totals().requests() < requests {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    router.serve(listener, done).await
}

/// Sends `requests` requests over `connections` connections and checks every answer is a 200.
async fn client(addr: SocketAddr, requests: u64, connections: u64) -> io::Result<()> {
    let mut tasks = Vec::new();
    for c in 0..connections {
        // The first `requests % connections` connections send one request more.
        let share = requests / connections + u64::from(c < requests % connections);
        tasks.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let request = format!("GET / HTTP/1.1\r\nhost: {HOST}\r\n\r\n");
            let mut buf = Vec::with_capacity(4096);
            for _ in 0..share {
                stream.write_all(request.as_bytes()).await?;
                let end = read_head(&mut stream, &mut buf)
                    .await
                    .ok_or_else(|| io::Error::other("the router closed the connection"))?;
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                if !head.starts_with("http/1.1 200") {
                    return Err(io::Error::other(format!("unexpected answer: {head}")));
                }
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .ok_or_else(|| io::Error::other("an answer without content-length"))?;
                while buf.len() < end + length {
                    let mut chunk = [0u8; 4096];
                    match stream.read(&mut chunk).await? {
                        0 => return Err(io::Error::other("the router closed mid-body")),
                        n => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                buf.drain(..end + length);
            }
            Ok::<(), io::Error>(())
        }));
    }
    for task in tasks {
        task.await.map_err(io::Error::other)??;
    }
    Ok(())
}
