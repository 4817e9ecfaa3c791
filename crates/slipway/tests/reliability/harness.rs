//! Helpers of the fault-injection suite: a bounded load generator that records every request
//! (when it started and ended, on which connection, and what came back), the accounting of
//! failures against the moments faults were injected, a small seeded random number
//! generator, and readers of `status --json` and the revisions API.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::support::Slipway;

/// One request of the load generator.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Which of the generator's connections (threads) sent it.
    pub conn: usize,
    pub start: Instant,
    pub end: Instant,
    /// The status and body, or why no answer came.
    pub outcome: Result<(u16, String), String>,
}

impl Sample {
    /// Whether the request was answered with a 200.
    pub fn ok(&self) -> bool {
        matches!(self.outcome, Ok((200, _)))
    }

    /// Whether the request was in flight at some moment between `from` and `to`.
    pub fn overlaps(&self, from: Instant, to: Instant) -> bool {
        self.start <= to && self.end >= from
    }

    /// The first word of the body (the app's version), or the error.
    pub fn version(&self) -> &str {
        match &self.outcome {
            Ok((_, body)) => body.split(' ').next().unwrap_or(""),
            Err(e) => e,
        }
    }

    /// A one-line description of what came back.
    pub fn describe(&self) -> String {
        match &self.outcome {
            Ok((code, body)) => format!("{code} {}", body.chars().take(80).collect::<String>()),
            Err(e) => format!("error: {e}"),
        }
    }
}

/// A load generator: `conns` threads, each sending GETs one after the other (10 ms apart)
/// on its own connection until stopped.
pub struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Vec<Sample>>>,
}

/// How the load generator's connections behave.
#[derive(Debug, Clone, Copy)]
pub struct LoadConfig {
    pub conns: usize,
    /// Reuse each connection for many requests, or open one per request.
    pub keep_alive: bool,
}

impl Load {
    pub fn start(router: SocketAddr, host: &str, path: &str, config: LoadConfig) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..config.conns)
            .map(|conn| {
                let (stop, host, path) = (stop.clone(), host.to_owned(), path.to_owned());
                std::thread::spawn(move || {
                    let mut client = Client {
                        router,
                        host,
                        keep_alive: config.keep_alive,
                        stream: None,
                    };
                    let mut samples = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        let start = Instant::now();
                        let outcome = client.get(&path);
                        samples.push(Sample {
                            conn,
                            start,
                            end: Instant::now(),
                            outcome,
                        });
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    samples
                })
            })
            .collect();
        Load { stop, threads }
    }

    /// Stops sending, waits for the requests in flight, and returns every sample.
    pub fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all: Vec<Sample> = self
            .threads
            .into_iter()
            .flat_map(|t| t.join().expect("load thread"))
            .collect();
        all.sort_by_key(|s| s.start);
        all
    }
}

/// A minimal HTTP/1.1 client on one connection, reconnecting after errors.
struct Client {
    router: SocketAddr,
    host: String,
    keep_alive: bool,
    stream: Option<TcpStream>,
}

impl Client {
    fn get(&mut self, path: &str) -> Result<(u16, String), String> {
        let result = self.exchange(path);
        if result.is_err() || !self.keep_alive {
            self.stream = None;
        }
        result
    }

    fn exchange(&mut self, path: &str) -> Result<(u16, String), String> {
        if self.stream.is_none() {
            let stream = TcpStream::connect_timeout(&self.router, Duration::from_secs(2))
                .map_err(|e| format!("connect: {e}"))?;
            stream
                .set_read_timeout(Some(Duration::from_secs(15)))
                .map_err(|e| e.to_string())?;
            let _ = stream.set_nodelay(true);
            self.stream = Some(stream);
        }
        let stream = self.stream.as_mut().expect("connected above");
        let close = if self.keep_alive {
            ""
        } else {
            "Connection: close\r\n"
        };
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\n{close}\r\n",
            self.host
        )
        .map_err(|e| format!("write: {e}"))?;
        // Read the head, then exactly `content-length` bytes of body.
        let mut received = Vec::new();
        let mut buf = [0u8; 4096];
        let head_end = loop {
            if let Some(at) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            let n = stream.read(&mut buf).map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                return Err("read: connection closed before an answer".into());
            }
            received.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8_lossy(&received[..head_end]).to_ascii_lowercase();
        let code: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| format!("bad status line: {head:?}"))?;
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|n| n.trim().parse().ok())
            .ok_or_else(|| format!("no content-length: {head:?}"))?;
        let mut body = received[head_end + 4..].to_vec();
        while body.len() < length {
            let n = stream
                .read(&mut buf)
                .map_err(|e| format!("read body: {e}"))?;
            if n == 0 {
                return Err("read body: connection closed".into());
            }
            body.extend_from_slice(&buf[..n]);
        }
        if head.contains("\nconnection: close") {
            self.stream = None;
        }
        Ok((code, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// The failed samples (anything but a 200).
pub fn failures(samples: &[Sample]) -> Vec<&Sample> {
    samples.iter().filter(|s| !s.ok()).collect()
}

/// Counts the failures by what came back, for the printed report.
pub fn reasons(failed: &[&Sample]) -> String {
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for s in failed {
        let mut reason = s.describe();
        // Instance ids and ports differ per request; the kind of failure is what matters.
        reason.truncate(60);
        *counts.entry(reason).or_default() += 1;
    }
    if counts.is_empty() {
        return "none".into();
    }
    counts
        .iter()
        .map(|(reason, n)| format!("{n}x {reason:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A small deterministic random number generator (xorshift64*), seeded per test and
/// overridable with `SLIPWAY_SEED` to replay a run.
pub struct Rng(u64);

impl Rng {
    pub fn new(default_seed: u64) -> Rng {
        let seed = std::env::var("SLIPWAY_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default_seed);
        eprintln!("random seed {seed} (replay with SLIPWAY_SEED={seed})");
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The first service of `app` in `status --json`.
pub fn service(s: &Slipway, app: &str) -> serde_json::Value {
    s.status(app)["services"][0].clone()
}

/// The instances of the first service of `app`.
pub fn instances(s: &Slipway, app: &str) -> Vec<serde_json::Value> {
    service(s, app)["instances"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// `(revision, percent)` of the first service of `app`.
pub fn traffic(s: &Slipway, app: &str) -> Vec<(u64, u64)> {
    service(s, app)["traffic"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|t| {
            (
                t["revision"].as_u64().unwrap_or(0),
                t["percent"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// The revisions of `service` as the API on the admin listener lists them to a viewer.
pub fn revisions(s: &Slipway, app: &str, service: &str) -> Vec<serde_json::Value> {
    let (code, body) = s
        .read(&format!("/v1/apps/{app}/services/{service}/revisions"))
        .expect("revisions API answers");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("revisions are JSON")
}

/// Whether service `api` of app `shop` has a canary in progress (running or paused).
pub fn canary_active(s: &Slipway) -> bool {
    match s.read("/v1/apps/shop/services/api/rollout") {
        Ok((200, body)) => serde_json::from_str::<serde_json::Value>(&body)
            .map(|status| status["active"] == true)
            .unwrap_or(false),
        _ => false,
    }
}

/// Polls `ok` every 50 ms until it holds; fails with `what` and the status of app `shop`
/// after `within`.
pub fn wait_for(s: &Slipway, what: &str, within: Duration, mut ok: impl FnMut(&Slipway) -> bool) {
    let deadline = Instant::now() + within;
    while !ok(s) {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {within:?}\n{:#}\nserver log:\n{}",
            s.status("shop"),
            s.server_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends a signal to a process.
pub fn signal(pid: u32, signal: i32) {
    // SAFETY: kill(2) only reads its two integer arguments.
    let rc = unsafe { libc::kill(pid as libc::pid_t, signal) };
    assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
}
