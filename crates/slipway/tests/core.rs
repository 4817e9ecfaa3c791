//! End-to-end tests of the core: the real `slipway` binary, real processes, real HTTP.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::*;

fn spec(app_dir_marker: &str, version: &str, extra_env: &str) -> String {
    format!(
        r#"app: shop
services:
  api:
    run: ["python3", "{app_dir_marker}/app.py"]
    env: {{ VERSION: "{version}"{extra_env} }}
    routes: ["/api"]
    scaling: {{ min: 2, max: 2 }}
    health:
      ready: {{ http: /ready, interval: 200ms }}
      startup_timeout: 10s
    shutdown: {{ grace: 2s }}
    deploy: {{ keep_previous: 0s }}
"#
    )
}

#[test]
fn example_app_comes_up_and_every_service_answers_through_the_router() {
    let s = Slipway::start();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/clinic");
    let out = s.ok(&["up", example, "--detach"]);
    assert!(out.contains("web"), "{out}");
    // `up` says where the dashboard is, and how to get a token for it: none is printed.
    assert!(
        out.contains(&format!(
            "dashboard: http://{}/ (sign in with a token from `slipway token create",
            s.admin
        )) && !out.contains("#token="),
        "{out}"
    );
    let status = s.status("clinic");
    for svc in status["services"].as_array().unwrap() {
        assert_eq!(svc["ready"], svc["total"], "{status:#}");
        assert!(svc["ready"].as_u64().unwrap() >= 1, "{status:#}");
    }
    // Each service on its own host…
    let (code, body) = s.get("web.clinic.localhost", "/").unwrap();
    assert_eq!(code, 200);
    assert!(body.contains("<h1>Clinic</h1>"), "{body}");
    let (code, body) = s.get("api.clinic.localhost", "/api/patients").unwrap();
    assert_eq!((code, body.contains("Ada Lovelace")), (200, true), "{body}");
    let (code, body) = s.get("notify.clinic.localhost", "/").unwrap();
    assert_eq!(
        (code, body.contains("\"service\": \"notify\"")),
        (200, true),
        "{body}"
    );
    // …and on the app host by path prefix, longest prefix first.
    let (code, body) = s.get("clinic.localhost", "/api/patients").unwrap();
    assert_eq!((code, body.contains("Alan Turing")), (200, true), "{body}");
    let (code, body) = s.get("clinic.localhost:8080", "/notify").unwrap();
    assert_eq!((code, body.contains("notify")), (200, true), "{body}");
    let (code, body) = s.get("clinic.localhost", "/").unwrap();
    assert_eq!((code, body.contains("Clinic")), (200, true), "{body}");
    let (code, _) = s.get("nope.localhost", "/").unwrap();
    assert_eq!(code, 404);
    // Logs carry instance ids and timestamps.
    let logs = s.ok(&["logs", "api", "--app", "clinic"]);
    assert!(
        logs.contains("api-r1-") && logs.contains("api listening on"),
        "{logs}"
    );
    // A second `up` with nothing changed creates no revision.
    let out = s.ok(&["up", example, "--detach"]);
    assert!(out.contains("unchanged"), "{out}");
    let revs = s.ok(&["revisions", "api", "--app", "clinic"]);
    assert_eq!(revs.lines().count(), 2, "{revs}");
}

/// One request of the load generator: when it started, when it ended, and its body or error.
type Sample = (Instant, Instant, Result<String, String>);

/// Sends requests on `conns` keep-alive connections until `stop`; returns per-connection
/// sequences of (start time, result).
fn load(
    router: std::net::SocketAddr,
    host: &'static str,
    conns: usize,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Vec<Vec<Sample>>> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut tasks = Vec::new();
            for _ in 0..conns {
                let stop = stop.clone();
                tasks.push(tokio::spawn(async move {
                    use http_body_util::{BodyExt, Empty};
                    let mut seq = Vec::new();
                    let stream = tokio::net::TcpStream::connect(router).await.unwrap();
                    let (mut tx, conn) =
                        hyper::client::conn::http1::handshake::<_, Empty<bytes::Bytes>>(
                            hyper_util::rt::TokioIo::new(stream),
                        )
                        .await
                        .unwrap();
                    tokio::spawn(conn);
                    while !stop.load(Ordering::Relaxed) {
                        let started = Instant::now();
                        let req = hyper::Request::get("/api/x")
                            .header("host", host)
                            .body(Empty::new())
                            .unwrap();
                        let res = async {
                            tx.ready().await.map_err(|e| e.to_string())?;
                            let resp = tx.send_request(req).await.map_err(|e| e.to_string())?;
                            let code = resp.status();
                            let body = resp
                                .into_body()
                                .collect()
                                .await
                                .map_err(|e| e.to_string())?
                                .to_bytes();
                            let body = String::from_utf8_lossy(&body).into_owned();
                            if code != 200 {
                                return Err(format!("{code}: {body}"));
                            }
                            Ok(body)
                        }
                        .await;
                        seq.push((started, Instant::now(), res));
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    seq
                }));
            }
            let mut all = Vec::new();
            for t in tasks {
                all.push(t.await.unwrap());
            }
            all
        })
    })
}

#[test]
fn redeploy_under_load_drops_nothing_and_switches_exactly_once() {
    let s = Slipway::start();
    let marker = path_str(s.dir.path());
    let dir = s.write_app("shop", &spec(&format!("{marker}/shop"), "v1", ""));
    s.ok(&["up", &path_str(&dir), "--detach"]);
    s.wait_body("api.shop.localhost", "/", "v1", Duration::from_secs(5));

    let stop = Arc::new(AtomicBool::new(false));
    let loader = load(s.router, "api.shop.localhost", 8, stop.clone());
    std::thread::sleep(Duration::from_millis(500));
    // The new revision takes a while to become ready, so the deploy overlaps the load.
    std::fs::write(
        dir.join("slipway.yaml"),
        spec(&format!("{marker}/shop"), "v2", ", READY_DELAY: \"0.5\""),
    )
    .unwrap();
    let t0 = Instant::now();
    let out = s.ok(&["deploy", "-f", &path_str(&dir)]);
    let deploy_time = t0.elapsed();
    assert!(out.contains("traffic switched: revision 1 -> 2"), "{out}");
    std::thread::sleep(Duration::from_millis(700));
    stop.store(true, Ordering::Relaxed);
    let seqs = loader.join().unwrap();
    let total: usize = seqs.iter().map(Vec::len).sum();
    let failed: Vec<_> = seqs
        .iter()
        .flatten()
        .filter_map(|(_, _, r)| r.as_ref().err())
        .collect();
    let span = seqs
        .iter()
        .flatten()
        .map(|(_, end, _)| *end)
        .max()
        .unwrap()
        .duration_since(seqs.iter().flatten().map(|(st, _, _)| *st).min().unwrap());
    let rate = total as f64 / span.as_secs_f64();
    eprintln!(
        "sent {total} requests in {span:?} ({rate:.0}/s) across a {deploy_time:?} deploy; failed {}",
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "{} of {total} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(rate >= 200.0, "load generator too slow: {rate:.0} req/s");
    // On every connection the answers go v1…v1 v2…v2: one switch, never back.
    let mut first_v2_done = None::<Instant>;
    for seq in &seqs {
        let versions: Vec<&str> = seq
            .iter()
            .map(|(_, _, r)| r.as_ref().unwrap().split(' ').next().unwrap())
            .collect();
        let switches = versions.windows(2).filter(|w| w[0] != w[1]).count();
        assert_eq!(switches, 1, "{versions:?}");
        assert_eq!((versions[0], *versions.last().unwrap()), ("v1", "v2"));
        for (_, end, r) in seq {
            if r.as_ref().unwrap().starts_with("v2") {
                first_v2_done = Some(first_v2_done.map_or(*end, |f| f.min(*end)));
            }
        }
    }
    // Globally too: no request started after the first v2 answer was served by v1.
    let first_v2_done = first_v2_done.unwrap();
    for (start, _, r) in seqs.iter().flatten() {
        if *start > first_v2_done {
            assert!(r.as_ref().unwrap().starts_with("v2"));
        }
    }
}

#[test]
fn a_revision_that_crashes_on_start_fails_the_deploy_and_the_old_one_keeps_serving() {
    let s = Slipway::start();
    let marker = path_str(s.dir.path());
    let dir = s.write_app("shop", &spec(&format!("{marker}/shop"), "v1", ""));
    s.ok(&["up", &path_str(&dir), "--detach"]);
    std::fs::write(
        dir.join("slipway.yaml"),
        spec(&format!("{marker}/shop"), "v2", ", CRASH: \"1\""),
    )
    .unwrap();
    let out = s.cli(&["deploy", "-f", &path_str(&dir)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("revision 2 failed"), "{stderr}");
    assert!(stderr.contains("exited with status 3"), "{stderr}");
    assert!(stderr.contains("boom: DATABASE_URL is not set"), "{stderr}");
    assert!(stderr.contains("revision 1 keeps serving"), "{stderr}");
    let (code, body) = s.get("api.shop.localhost", "/").unwrap();
    assert_eq!((code, &body[..2]), (200, "v1"));
    let status = s.status("shop");
    let api = &status["services"][0];
    assert_eq!(api["traffic"][0]["revision"], 1, "{status:#}");
    assert!(
        api["problem"].as_str().unwrap().contains("revision 2"),
        "{status:#}"
    );
    let revs = s.ok(&["revisions", "api"]);
    assert!(revs.contains("failed"), "{revs}");
}

/// The spec of `shop` at `version` whose previous revision stays warm for a minute.
fn warm_spec(s: &Slipway, version: &str) -> String {
    let marker = path_str(s.dir.path());
    spec(&format!("{marker}/shop"), version, "").replace("keep_previous: 0s", "keep_previous: 60s")
}

/// `shop` deployed twice: revision 2 serves, revision 1 is still warm. Returns the app's
/// folder and its spec at a version.
fn shop_at_v2_with_v1_warm(s: &Slipway) -> (std::path::PathBuf, impl Fn(&str) -> String + '_) {
    let warm = |v: &str| warm_spec(s, v);
    let dir = s.write_app("shop", &warm("v1"));
    s.ok(&["up", &path_str(&dir), "--detach"]);
    std::fs::write(dir.join("slipway.yaml"), warm("v2")).unwrap();
    s.ok(&["deploy", "-f", &path_str(&dir)]);
    s.wait_body("api.shop.localhost", "/", "v2", Duration::from_secs(5));
    (dir, warm)
}

/// With a server running, `deploy` leaves the checking of the file to the server; a file with
/// problems still gets every problem with its position, nothing deployed. The commands that
/// only need the app's name (`rollback`, `status`) work while the file is broken.
#[test]
fn a_broken_spec_is_refused_with_positions_and_rollback_still_works() {
    let s = Slipway::start();
    let (dir, warm) = shop_at_v2_with_v1_warm(&s);

    let broken = warm("v3").replace("    routes:", "    rotes:");
    std::fs::write(dir.join("slipway.yaml"), &broken).unwrap();
    let out = s.cli(&["deploy", "-f", &path_str(&dir)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let file = path_str(&dir.join("slipway.yaml"));
    assert!(stderr.contains(&format!("{file}:6:5")), "{stderr}");
    assert!(stderr.contains("unknown key `rotes`"), "{stderr}");
    assert_eq!(stderr.matches("unknown key").count(), 1, "{stderr}");
    assert!(!stderr.contains("error: error"), "{stderr}");
    let revs = s.ok(&["revisions", "api", "--app", "shop"]);
    assert!(!revs.contains(" 3 "), "{revs}");

    let out = s
        .command(&["rollback", "api"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("revision 2 -> 1"), "{stdout}");
    let (code, body) = s.get("api.shop.localhost", "/").unwrap();
    assert_eq!((code, &body[..2]), (200, "v1"));
    let out = s.command(&["status"]).current_dir(&dir).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("api"));
}

#[test]
fn rollback_switches_back_at_once_while_the_previous_revision_is_warm() {
    let s = Slipway::start();
    let _ = shop_at_v2_with_v1_warm(&s);

    let t0 = Instant::now();
    let out = s.ok(&["rollback", "api", "--app", "shop"]);
    let took = t0.elapsed();
    assert!(out.contains("revision 2 -> 1"), "{out}");
    // The switch is committed before the command returns: the very next request is v1.
    let (code, body) = s.get("api.shop.localhost", "/").unwrap();
    assert_eq!((code, &body[..2]), (200, "v1"));
    eprintln!("warm rollback: command to traffic switched in {took:?}");

    // Rolling forward to a cold revision starts it first.
    let out = s.ok(&["rollback", "api", "--to", "2", "--app", "shop"]);
    assert!(out.contains("revision 1 -> 2"), "{out}");
    s.wait_body("api.shop.localhost", "/", "v2", Duration::from_secs(1));
    // A revision that does not exist, or is serving: a clear refusal.
    let out = s.cli(&["rollback", "api", "--to", "9", "--app", "shop"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no revision 9"));
    let out = s.cli(&["rollback", "api", "--to", "2", "--app", "shop"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("already serving"));
}

#[test]
fn kill_9_during_deploys_keeps_state_consistent_20_times() {
    let mut s = Slipway::start();
    let marker = path_str(s.dir.path());
    let dir = s.write_app("shop", &spec(&format!("{marker}/shop"), "v0", ""));
    s.ok(&["up", &path_str(&dir), "--detach"]);
    let mut completed = 0;
    for i in 1..=20u64 {
        std::fs::write(
            dir.join("slipway.yaml"),
            spec(
                &format!("{marker}/shop"),
                &format!("v{i}"),
                ", READY_DELAY: \"0.2\"",
            ),
        )
        .unwrap();
        let mut deploy = s
            .command(&["deploy", "-f", &path_str(&dir)])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Kill at a different point of the deploy each time (0–400 ms in).
        std::thread::sleep(Duration::from_millis((i * 37) % 400));
        s.kill9();
        let _ = deploy.wait();
        s.start_server();

        // The app serves again, from a recorded revision.
        let body = s.wait_body("api.shop.localhost", "/", "v", Duration::from_secs(15));
        let status = s.status("shop");
        let api = &status["services"][0];
        let traffic = api["traffic"].as_array().unwrap();
        assert_eq!(traffic.len(), 1, "{status:#}");
        assert_eq!(traffic[0]["percent"], 100);
        let serving = traffic[0]["revision"].as_u64().unwrap();
        // History: numbered 1..=n without gaps, none left "deploying", serving one is ready.
        let listing = s.ok(&["revisions", "api", "--app", "shop"]);
        let rows: Vec<&str> = listing.lines().skip(1).collect();
        for (n, row) in rows.iter().enumerate() {
            let cols: Vec<&str> = row.split_whitespace().collect();
            assert_eq!(cols[0], (n + 1).to_string(), "{listing}");
            assert!(!row.contains("deploying"), "{listing}");
        }
        let serving_row = rows[serving as usize - 1];
        assert!(serving_row.contains("serving"), "{listing}");
        let version = body.split(' ').next().unwrap();
        completed += usize::from(version == format!("v{i}"));
        // No orphans: exactly the instances the server knows about are alive.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let status = s.status("shop");
            let known = status["services"][0]["instances"].as_array().unwrap().len();
            let alive = processes_with(&format!("{marker}/shop/app.py")).len();
            if known == alive && known == 2 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "known {known} instances, {alive} alive\n{status:#}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    eprintln!("20 kill -9 iterations; {completed} deploys had completed before the kill");
}

#[test]
fn a_spec_with_five_mistakes_reports_all_five_with_positions() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("slipway.yaml");
    std::fs::write(
        &file,
        r#"app: shop
services:
  api:
    run: ["python3", "app.py"]
    helth: { ready: { http: /ready } }
    port: eighty
    routes: ["/api"]
    scaling: { min: 3, max: 1 }
  web:
    run: ["node", "server.js"]
    routes: ["/api"]
    shutdown: { grace: soon }
"#,
    )
    .unwrap();
    let out = std::process::Command::new(BIN)
        .args(["validate"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let name = path_str(&file);
    for pos in ["5:5", "6:11", "8:21", "11:14", "12:24"] {
        assert!(
            stderr.contains(&format!("{name}:{pos}")),
            "missing {pos} in:\n{stderr}"
        );
    }
    assert!(stderr.contains("5 problems"), "{stderr}");
}

#[test]
fn cli_errors_are_clear_without_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .args(["status", "--app", "x"])
        .env("SLIPWAY_HOME", dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no slipway server is running"), "{stderr}");
    assert!(stderr.contains("hint:"), "{stderr}");
}

#[test]
fn a_taken_router_port_is_reported_and_a_second_server_is_refused() {
    let s = Slipway::start();
    let other = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(BIN)
        .args([
            "server",
            "--listen",
            &s.router.to_string(),
            "--admin",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(other.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("address is in use") && stderr.contains("--listen"),
        "{stderr}"
    );
    let out = std::process::Command::new(BIN)
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(&s.data)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("already using the data directory"),
        "{stderr}"
    );
}

#[test]
fn a_long_lived_stream_survives_a_redeploy_on_the_old_revision() {
    let s = Slipway::start();
    let marker = path_str(s.dir.path());
    let dir = s.write_app("shop", &spec(&format!("{marker}/shop"), "v1", ""));
    s.ok(&["up", &path_str(&dir), "--detach"]);
    let router = s.router;
    let stream = std::thread::spawn(move || http_get(router, "api.shop.localhost", "/stream"));
    std::thread::sleep(Duration::from_millis(150));
    std::fs::write(
        dir.join("slipway.yaml"),
        spec(&format!("{marker}/shop"), "v2", ""),
    )
    .unwrap();
    let out = s.ok(&["deploy", "-f", &path_str(&dir)]);
    assert!(out.contains("revision 1 -> 2"), "{out}");
    // New requests already go to v2 while the stream is still being served by v1…
    let (code, body) = s.get("api.shop.localhost", "/").unwrap();
    assert_eq!((code, &body[..2]), (200, "v2"));
    // …and the stream ends complete: the old instance was drained, not killed.
    let (code, body) = stream.join().unwrap().unwrap();
    assert_eq!(code, 200);
    for i in 0..10 {
        assert!(
            body.contains(&format!("data: v1 {i}\n")),
            "chunk {i} missing: {body:?}"
        );
    }
}

#[test]
fn a_crash_loop_shows_in_status_with_the_last_output_lines() {
    let s = Slipway::start();
    let marker = path_str(s.dir.path());
    let dir = s.write_app(
        "shop",
        &spec(&format!("{marker}/shop"), "v1", ", CRASH_AFTER: \"0.3\""),
    );
    s.ok(&["up", &path_str(&dir), "--detach"]);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let status = s.status("shop");
        let api = &status["services"][0];
        if let Some(problem) = api["problem"].as_str() {
            assert!(
                problem.contains("crash loop") && problem.contains("exited with status 4"),
                "{problem}"
            );
            let lines = api["problem_lines"].to_string();
            assert!(
                lines.contains("fatal: lost the database connection"),
                "{lines}"
            );
            let table = s.ok(&["status", "--app", "shop"]);
            assert!(table.contains("crash loop"), "{table}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no crash loop reported: {status:#}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let events = s.ok(&["events", "--app", "shop"]);
    assert!(events.contains("instance.crashed"), "{events}");
}

#[test]
fn a_foreign_data_dir_gives_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("state.db"), vec![b'x'; 4096]).unwrap();
    let out = std::process::Command::new(BIN)
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is not a Slipway state database") && stderr.contains("hint:"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn metrics_count_exactly_what_was_sent_and_parse_as_openmetrics() {
    let s = Slipway::start();
    let marker = path_str(s.dir.path());
    let dir = s.write_app("shop", &spec(&format!("{marker}/shop"), "v1", ""));
    s.ok(&["up", &path_str(&dir), "--detach"]);
    for _ in 0..20 {
        assert_eq!(s.get("api.shop.localhost", "/").unwrap().0, 200);
    }
    for _ in 0..5 {
        assert_eq!(s.get("api.shop.localhost", "/status/500").unwrap().0, 500);
    }
    for _ in 0..3 {
        assert_eq!(s.get("api.shop.localhost", "/status/404").unwrap().0, 404);
    }
    // Two client connections held open while the router is scraped.
    let held: Vec<std::net::TcpStream> = (0..2)
        .map(|_| std::net::TcpStream::connect(s.router).unwrap())
        .collect();
    let mut text = String::new();
    for _ in 0..100 {
        let (code, got) = s.metrics().unwrap();
        assert_eq!(code, 200);
        text = got;
        if text
            .lines()
            .any(|l| l == "slipway_router_client_connections 2")
        {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    drop(held);
    let l = r#"app="shop",service="api",revision="1""#;
    for (needle, value) in [
        (format!("slipway_requests_total{{{l},code=\"2xx\"}}"), 20),
        (format!("slipway_requests_total{{{l},code=\"4xx\"}}"), 3),
        (format!("slipway_requests_total{{{l},code=\"5xx\"}}"), 5),
        (format!("slipway_request_errors_total{{{l}}}"), 5),
        (format!("slipway_request_duration_seconds_count{{{l}}}"), 28),
        (
            format!("slipway_request_duration_seconds_bucket{{le=\"+Inf\",{l}}}"),
            28,
        ),
        (format!("slipway_instances{{{l},state=\"ready\"}}"), 2),
        (
            "slipway_deploys_total{app=\"shop\",service=\"api\",outcome=\"ok\"}".to_owned(),
            1,
        ),
        ("slipway_router_client_connections".to_owned(), 2),
    ] {
        let line = text
            .lines()
            .find(|line| line.starts_with(&format!("{needle} ")))
            .unwrap_or_else(|| panic!("no {needle} in:\n{text}"));
        assert_eq!(
            line.rsplit(' ').next().unwrap(),
            value.to_string(),
            "{line}"
        );
    }
    // Buckets are cumulative and never decrease.
    let buckets: Vec<u64> = text
        .lines()
        .filter(|line| {
            line.starts_with("slipway_request_duration_seconds_bucket{") && line.contains(l)
        })
        .map(|line| line.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(buckets.len(), 15);
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    // The reference parser accepts the whole exposition.
    let parsed = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families as p\n\
             fams = list(p(sys.stdin.read()))\nprint(len(fams))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(text.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(
        parsed.status.success(),
        "the OpenMetrics parser rejected /metrics: {}",
        String::from_utf8_lossy(&parsed.stderr)
    );
    // The status table shows the same traffic.
    let status = s.status("shop");
    assert_eq!(
        status["services"][0]["figures"]["requests"], 28,
        "{status:#}"
    );
    assert_eq!(status["services"][0]["figures"]["errors"], 5, "{status:#}");
}

#[test]
fn logs_follow_shows_new_lines_of_new_instances_once() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    let s = Slipway::start();
    let marker = path_str(s.dir.path());
    let dir = s.write_app("shop", &spec(&format!("{marker}/shop"), "v1", ""));
    s.ok(&["up", &path_str(&dir), "--detach"]);
    let mut follower = Command::new(BIN)
        .args(["logs", "api", "--app", "shop", "-f"])
        .env("SLIPWAY_HOME", &s.data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = follower.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // A redeploy starts two new instances; their first lines reach the follower.
    std::fs::write(
        dir.join("slipway.yaml"),
        spec(&format!("{marker}/shop"), "v2", ""),
    )
    .unwrap();
    s.ok(&["deploy", "-f", &path_str(&dir)]);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen
        .iter()
        .filter(|l: &&String| l.contains("app v2 listening"))
        .count()
        < 2
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!(
                "the follower did not show both new instances' start; got:\n{}",
                seen.join("\n")
            ),
        }
    }
    // A little longer: lines already sent are not sent again.
    std::thread::sleep(Duration::from_millis(800));
    while let Ok(line) = rx.try_recv() {
        seen.push(line);
    }
    let _ = follower.kill();
    let _ = follower.wait();
    let _ = reader.join();
    assert!(seen.iter().all(|l| !l.is_empty()));
    for version in ["v1", "v2"] {
        let starts = seen
            .iter()
            .filter(|l| l.contains(&format!("app {version} listening")))
            .count();
        assert_eq!(starts, 2, "{version}:\n{}", seen.join("\n"));
    }
}

/// Only the newest `--keep-logs` stopped instances of a service keep their logs: a service
/// that deploys often or scales to zero would otherwise fill the disk with them.
#[test]
fn logs_of_stopped_instances_beyond_keep_logs_are_deleted() {
    let s = Slipway::start_with(&["--keep-logs", "2"]);
    let marker = path_str(s.dir.path());
    let dir = s.write_app("shop", &spec(&format!("{marker}/shop"), "v1", ""));
    s.ok(&["up", &path_str(&dir), "--detach"]);
    for version in ["v2", "v3"] {
        std::fs::write(
            dir.join("slipway.yaml"),
            spec(&format!("{marker}/shop"), version, ""),
        )
        .unwrap();
        s.ok(&["deploy", "-f", &path_str(&dir)]);
        // The previous revision's two instances stop (`keep_previous: 0s`) before the next
        // deploy, so that their logs are older than the next ones'.
        let deadline = Instant::now() + Duration::from_secs(15);
        while s.status("shop")["services"][0]["instances"]
            .as_array()
            .is_none_or(|i| i.len() != 2)
        {
            assert!(Instant::now() < deadline, "the old instances did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // Two instances per revision; the two most recently written stopped ones are v2's, and
    // v1's logs are gone.
    let log_files = || -> Vec<String> {
        let mut names = Vec::new();
        for app in std::fs::read_dir(s.data.join("logs")).unwrap().flatten() {
            for file in std::fs::read_dir(app.path().join("api"))
                .into_iter()
                .flatten()
            {
                names.push(file.unwrap().file_name().to_string_lossy().into_owned());
            }
        }
        names.sort();
        names
    };
    let per_revision = |files: &[String], r: u64| {
        files
            .iter()
            .filter(|f| f.starts_with(&format!("api-r{r}-")))
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let files = log_files();
        if [1, 2, 3].map(|r| per_revision(&files, r)) == [0, 2, 2] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "expected the logs of v2's and v3's instances only: {files:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let logs = s.ok(&["logs", "api", "--app", "shop", "--tail", "1000"]);
    assert!(
        logs.contains("app v2 listening")
            && logs.contains("app v3 listening")
            && !logs.contains("app v1 listening"),
        "{logs}"
    );
}

#[test]
fn the_router_runs_on_threads_of_its_own() {
    // The data plane's threads are named `slipway-router`; debug builds (these tests) abort
    // the server if a store call, a process start or log-file I/O ever runs on one of them
    // (`slipway_core::plane`), so every test here also checks that rule.
    let s = Slipway::start();
    let pid = s.server_pid().unwrap();
    let names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .collect();
    let router = names.iter().filter(|n| *n == "slipway-router").count();
    assert!(router >= 1, "no router thread among {names:?}");
    assert!(
        names.len() > router,
        "the control plane has threads of its own too: {names:?}"
    );
}

/// A data directory no server has used yet, and free ports for the server that commands
/// start there (`SLIPWAY_LISTEN`, `SLIPWAY_ADMIN`); stops that server when dropped.
struct Fresh {
    dir: tempfile::TempDir,
    data: std::path::PathBuf,
    listen: std::net::SocketAddr,
    admin: std::net::SocketAddr,
}

impl Fresh {
    fn new() -> Fresh {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let port = || std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
        Fresh {
            data,
            listen: port(),
            admin: port(),
            dir,
        }
    }

    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut command = std::process::Command::new(BIN);
        command
            .args(args)
            .env("SLIPWAY_HOME", &self.data)
            .env("SLIPWAY_LISTEN", self.listen.to_string())
            .env("SLIPWAY_ADMIN", self.admin.to_string())
            .current_dir(self.dir.path());
        command
    }

    fn run(&self, args: &[&str], stdin: &str) -> std::process::Output {
        let mut child = self
            .command(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.data.join("server.log")).unwrap_or_default()
    }
}

impl Drop for Fresh {
    fn drop(&mut self) {
        let _ = self
            .command(&["server", "stop"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// The pid in `started slipway server (pid N)`, wherever the command printed it.
fn started_pid(out: &std::process::Output) -> Option<u32> {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let rest = &text[text.find("started slipway server (pid ")? + 28..];
    rest[..rest.find(')')?].parse().ok()
}

fn describe(out: &std::process::Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A new user's natural order: set the secret the app needs, then deploy it, with no server
/// running before either. Each starts one in the background and says so on stderr; a
/// read-only command with no server says none runs, with a hint, and starts nothing.
#[test]
fn secret_set_and_deploy_before_any_server_start_one_in_the_background() {
    let f = Fresh::new();
    let app = f.dir.path().join("shop");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(app.join("app.py"), PY_APP).unwrap();
    let text = spec(&path_str(&app), "v1", "")
        .replace("    routes:", "    secrets: [API_KEY]\n    routes:");
    std::fs::write(app.join("slipway.yaml"), text).unwrap();

    let out = f.run(&["secret", "set", "API_KEY", "--app", "shop"], "s3cret");
    assert!(out.status.success(), "{}\n{}", describe(&out), f.log());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("started slipway server (pid "),
        "{}",
        describe(&out)
    );
    assert!(started_pid(&out).is_some(), "{}", describe(&out));
    let list = f.run(&["secret", "list", "--app", "shop"], "");
    assert!(
        String::from_utf8_lossy(&list.stdout).contains("API_KEY"),
        "{}",
        describe(&list)
    );

    let stop = f.run(&["server", "stop"], "");
    assert!(stop.status.success(), "{}", describe(&stop));
    let status = f.run(&["status", "--app", "shop"], "");
    let stderr = String::from_utf8_lossy(&status.stderr);
    assert!(
        !status.status.success()
            && stderr.contains("no slipway server is running")
            && stderr.contains("hint:"),
        "{}",
        describe(&status)
    );
    assert!(
        !f.data.join("slipway.sock").exists(),
        "a read-only command started a server"
    );

    // The secret was kept: the deploy (which starts the server again) passes its check.
    let out = f.run(&["deploy", "-f", &path_str(&app)], "");
    assert!(out.status.success(), "{}\n{}", describe(&out), f.log());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("started slipway server (pid "),
        "{}",
        describe(&out)
    );
    let (code, body) = http_get(f.listen, "api.shop.localhost", "/api").unwrap();
    assert_eq!((code, body.starts_with("v1")), (200, true), "{body}");
}

/// `slipway up --detach` run in the app's folder, with a relative app folder and a relative
/// data directory: the server it leaves running works in its data directory (not in the
/// folder it was started from, which may be moved or unmounted), and the relative paths
/// were resolved by the CLI.
#[test]
fn a_server_started_by_up_detach_works_in_its_data_directory() {
    let f = Fresh::new();
    let app = f.dir.path().join("shop");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(app.join("app.py"), PY_APP).unwrap();
    std::fs::write(app.join("slipway.yaml"), spec(&path_str(&app), "v1", "")).unwrap();
    let out = f
        .command(&[
            "up",
            ".",
            "--detach",
            "--listen",
            &f.listen.to_string(),
            "--admin",
            &f.admin.to_string(),
        ])
        .env("SLIPWAY_HOME", "../data")
        .current_dir(&app)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", describe(&out), f.log());
    let pid = started_pid(&out).unwrap_or_else(|| panic!("{}", describe(&out)));
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap();
    assert_eq!(cwd, f.data.canonicalize().unwrap(), "{}", describe(&out));
    let (code, body) = http_get(f.listen, "api.shop.localhost", "/api").unwrap();
    assert_eq!((code, body.starts_with("v1")), (200, true), "{body}");
}

#[test]
fn a_program_that_cannot_be_executed_is_reported_with_its_reason() {
    // Children start without a fork of the server (clone with CLONE_VM on the spawner
    // thread); what fails there must reach the user as the exec error it is.
    let s = Slipway::start();
    let dir = s.write_app(
        "noexec",
        r#"app: noexec
services:
  web:
    run: ["./serve"]
    health: { ready: { tcp: true }, startup_timeout: 5s }
"#,
    );
    let script = dir.join("serve");
    std::fs::write(&script, "#!/nonexistent/interpreter\necho never\n").unwrap();
    let mut mode = std::fs::metadata(&script).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut mode, 0o755);
    std::fs::set_permissions(&script, mode).unwrap();
    let out = s.cli(&["up", &path_str(&dir), "--detach"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("the interpreter named on its #! line"),
        "the hint for ENOENT from exec: {stderr}"
    );
}
