//! `resources:` limits on native instances, end to end: enforced by the instance's cgroup,
//! an out-of-memory kill reported as `OOMKilled` with the limit in events, `status` and
//! `/metrics`, usage shown against the limits, and a limit change rolled out as a new
//! revision. Needs cgroups (root here); see crates/slipway-runtime/tests/limits.rs for the
//! kernel-level checks (cpu share, fork bomb).

mod support;

use std::time::{Duration, Instant};

use support::*;

/// A stdlib server; `GET /hog` makes it allocate (and write) 200 MiB.
const HOG_APP: &str = r#"
import os
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/hog":
            global hog
            hog = b"x" * (200 << 20)
        body = b"ok"
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

fn write_app(s: &Slipway, resources: &str) -> String {
    let dir = s.dir.path().join("hog");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("server.py"), HOG_APP).unwrap();
    std::fs::write(
        dir.join("slipway.yaml"),
        format!(
            "app: hog\nservices:\n  web:\n    run: [\"python3\", \"server.py\"]\n    resources: {resources}\n"
        ),
    )
    .unwrap();
    path_str(&dir)
}

fn instance(s: &Slipway) -> serde_json::Value {
    s.status("hog")["services"][0]["instances"][0].clone()
}

#[test]
fn an_instance_over_its_memory_limit_is_reported_oom_killed_everywhere() {
    let s = Slipway::start();
    let dir = write_app(&s, "{ memory: 64Mi, cpu: 500m, pids: 100 }");
    s.ok(&["up", &dir, "--detach"]);
    let i = instance(&s);
    let r = &i["resources"];
    assert_eq!(r["memory_limit_bytes"], 64 << 20, "{i:#}");
    assert_eq!(r["cpu_limit_cores"], 0.5, "{i:#}");
    assert_eq!(r["pids_limit"], 100, "{i:#}");
    assert!(r["memory_bytes"].as_u64().unwrap() > 1 << 20, "{i:#}");

    // The request that makes it allocate fails (the process dies under it).
    let _ = s.get("web.hog.localhost", "/hog");
    let deadline = Instant::now() + Duration::from_secs(20);
    let events = loop {
        let events = s.ok(&["events", "--app", "hog", "--limit", "100"]);
        if events.contains("OOMKilled") {
            break events;
        }
        assert!(Instant::now() < deadline, "no OOMKilled event:\n{events}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        events.contains("OOMKilled: used more than its memory limit of 64Mi"),
        "{events}"
    );
    assert!(events.contains("restart #1"), "{events}");
    // Restarted, serving again, and the kill is counted.
    s.wait_body("web.hog.localhost", "/", "ok", Duration::from_secs(20));
    let i = instance(&s);
    assert!(i["restarts"].as_u64().unwrap() >= 1, "{i:#}");
    assert!(i["resources"]["oom_kills"].as_u64().unwrap() >= 1, "{i:#}");
    let table = s.ok(&["status", "web", "--app", "hog"]);
    assert!(
        table.contains("MEMORY") && table.contains("/64.0Mi"),
        "{table}"
    );
    let metrics = s.metrics().unwrap().1;
    assert!(
        metrics.contains("slipway_instance_oom_kills_total{app=\"hog\",service=\"web\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("slipway_instance_memory_limit_bytes{app=\"hog\",service=\"web\""),
        "{metrics}"
    );
}

#[test]
fn a_limit_change_is_a_new_revision_rolled_out_without_failed_requests() {
    let s = Slipway::start();
    let dir = write_app(&s, "{ memory: 64Mi }");
    s.ok(&["up", &dir, "--detach"]);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let (stop, router) = (stop.clone(), s.router);
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match http_get(router, "web.hog.localhost", "/") {
                    Ok((200, _)) => ok += 1,
                    other => failed.push(other),
                }
            }
            (ok, failed)
        })
    };
    write_app(&s, "{ memory: 128Mi }");
    let out = s.ok(&["deploy", "-f", &dir]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = load.join().unwrap();
    assert!(out.contains("revision 2") || out.contains("-> 2"), "{out}");
    assert!(
        failed.is_empty(),
        "{} of {} failed: {failed:?}",
        failed.len(),
        ok + failed.len()
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = s.status("hog");
        let instances = status["services"][0]["instances"]
            .as_array()
            .unwrap()
            .clone();
        if instances
            .iter()
            .any(|i| i["revision"] == 2 && i["resources"]["memory_limit_bytes"] == 128 << 20)
        {
            break;
        }
        assert!(Instant::now() < deadline, "{instances:#?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
