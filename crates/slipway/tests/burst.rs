//! No request lost to a burst or a spike, on an app with a small listen backlog: Python's
//! stdlib `ThreadingHTTPServer` as it comes (`listen(5)`, like `socketserver`-based servers
//! and Django's `runserver`), under the scaling defaults users get.
//!
//! Listen-queue overflows are read from the kernel's host-wide counter
//! (`TcpExtListenOverflows` in /proc/net/netstat, what `nstat` shows), so the tests of this
//! file run one at a time and nothing else of the suite runs beside them (cargo runs test
//! binaries one after another).

mod support;

use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use support::*;

/// The stdlib server with its default backlog. `WORK_MS` makes each request take that long.
const STDLIB_APP: &str = r#"
import os, time
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        ms = float(os.environ.get("WORK_MS", "0"))
        if ms and self.path != "/ready":
            time.sleep(ms / 1000)
        body = f"ok {os.environ.get('SLIPWAY_INSTANCE')}".encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

/// One test at a time: the overflow counter is the whole host's.
static SERIAL: Mutex<()> = Mutex::new(());

fn listen_overflows() -> u64 {
    let netstat = std::fs::read_to_string("/proc/net/netstat").unwrap();
    let lines: Vec<&str> = netstat.lines().collect();
    for pair in lines.chunks(2) {
        if let [names, values] = pair
            && names.starts_with("TcpExt:")
        {
            let names: Vec<&str> = names.split_whitespace().collect();
            let values: Vec<&str> = values.split_whitespace().collect();
            let i = names.iter().position(|n| *n == "ListenOverflows").unwrap();
            return values[i].parse().unwrap();
        }
    }
    panic!("no TcpExt line in /proc/net/netstat");
}

fn write_stdlib_app(s: &Slipway, scaling: &str, work_ms: u32) -> String {
    let dir = s.dir.path().join("burst");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("server.py"), STDLIB_APP).unwrap();
    std::fs::write(
        dir.join("slipway.yaml"),
        format!(
            r#"app: burst
services:
  web:
    run: ["python3", "server.py"]
    env: {{ WORK_MS: "{work_ms}" }}
    scaling: {scaling}
"#
        ),
    )
    .unwrap();
    path_str(&dir)
}

fn instances(s: &Slipway) -> usize {
    s.status("burst")["services"][0]["instances"]
        .as_array()
        .unwrap()
        .len()
}

#[test]
fn fifty_requests_at_once_on_a_cold_backlog_5_app_are_all_answered_without_overflow() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Slipway::start();
    let dir = write_stdlib_app(&s, "{ min: 0, max: 1, idle: 1s }", 0);
    s.ok(&["up", &dir, "--detach"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while instances(&s) > 0 {
        assert!(Instant::now() < deadline, "no scale to zero within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }

    let overflows_before = listen_overflows();
    let barrier = Arc::new(Barrier::new(50));
    let router = s.router;
    let requests: Vec<_> = (0..50)
        .map(|_| {
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                let result = http_get(router, "web.burst.localhost", "/");
                (Instant::now(), result)
            })
        })
        .collect();
    let answers: Vec<_> = requests.into_iter().map(|h| h.join().unwrap()).collect();
    let overflows = listen_overflows() - overflows_before;

    let failed: Vec<_> = answers
        .iter()
        .filter(|(_, r)| !matches!(r, Ok((200, _))))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of 50 failed: {failed:?}",
        failed.len()
    );
    // The first answer comes right after the instance is ready; a SYN the app's accept queue
    // dropped would be retried by the kernel 1 s later.
    let first = answers.iter().map(|(t, _)| *t).min().unwrap();
    let last = answers.iter().map(|(t, _)| *t).max().unwrap();
    assert!(
        last - first < Duration::from_millis(900),
        "the last answer came {:?} after the first (a dropped SYN is retried after 1 s)",
        last - first
    );
    assert_eq!(
        overflows, 0,
        "the app's listen queue overflowed {overflows} times"
    );
    let events = s.ok(&["events", "--app", "burst", "--limit", "100"]);
    assert!(
        events.contains("listens with a backlog of 5"),
        "the ready event names the small backlog:\n{events}"
    );
}

#[test]
fn a_tenfold_spike_with_default_scaling_gets_8_instances_quickly_and_loses_no_request() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let s = Slipway::start();
    let dir = write_stdlib_app(&s, "{ min: 1, max: 10, concurrency: 10 }", 20);
    s.ok(&["up", &dir, "--detach"]);

    // Closed-loop clients, one request at a time each, a new connection per request (the
    // app speaks HTTP/1.0). The first 5 run from the start, 95 more join at the step.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let answered = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let client = |stop: Arc<std::sync::atomic::AtomicBool>| {
        let (router, failures, answered) = (s.router, failures.clone(), answered.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match http_get(router, "web.burst.localhost", "/") {
                    Ok((200, _)) => {
                        answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    other => failures.lock().unwrap().push(format!("{other:?}")),
                }
            }
        })
    };
    let mut clients: Vec<_> = (0..5).map(|_| client(stop.clone())).collect();
    std::thread::sleep(Duration::from_secs(2));
    let step = Instant::now();
    clients.extend((0..95).map(|_| client(stop.clone())));

    let ready = |s: &Slipway| {
        s.status("burst")["services"][0]["instances"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["state"] == "ready")
            .count()
    };
    let mut eight_after = None;
    while step.elapsed() < Duration::from_secs(6) {
        if eight_after.is_none() && ready(&s) >= 8 {
            eight_after = Some(step.elapsed());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    let events = s.ok(&["events", "--app", "burst", "--limit", "200"]);
    // Knative's rule (panic on the 6 s average) reached 8 after 4.8 s here; scaling up on
    // the newest sample asks for 10 at the first decision after the step.
    let eight_after = eight_after
        .unwrap_or_else(|| panic!("never 8 ready instances within 6 s of the step\n{events}"));
    assert!(
        eight_after < Duration::from_secs(3),
        "8 instances were ready only {eight_after:?} after the step\n{events}"
    );
    assert!(
        failures.is_empty(),
        "{} of {} requests failed, e.g. {:?}",
        failures.len(),
        failures.len() + answered.load(std::sync::atomic::Ordering::Relaxed),
        &failures[..failures.len().min(3)]
    );
    eprintln!(
        "8 instances ready {eight_after:?} after the step; {} requests, none failed",
        answered.load(std::sync::atomic::Ordering::Relaxed)
    );
}
