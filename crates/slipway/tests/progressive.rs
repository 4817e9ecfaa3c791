//! Progressive delivery end to end: traffic splits, tags, the revision header, canary
//! rollouts judged on live figures (promotion and automatic rollback), a canary that
//! survives `kill -9`, and the recreate strategy.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::*;

fn spec(marker: &str, version: &str, extra_env: &str, deploy: &str) -> String {
    format!(
        r#"app: shop
services:
  api:
    run: ["python3", "{marker}/shop/app.py"]
    env: {{ VERSION: "{version}"{extra_env} }}
    health:
      ready: {{ http: /ready, interval: 200ms }}
    traffic: {{ header_override: true }}
    deploy: {deploy}
"#
    )
}

/// Sends requests in the background until stopped; counts answers by body prefix.
fn background_load(s: &Slipway) -> (Arc<AtomicBool>, std::thread::JoinHandle<Vec<String>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let (flag, router) = (stop.clone(), s.router);
    let handle = std::thread::spawn(move || {
        let mut seen = Vec::new();
        while !flag.load(Ordering::Relaxed) {
            match http_get(router, "api.shop.localhost", "/") {
                Ok((code, body)) => {
                    seen.push(format!("{code} {}", body.split(' ').next().unwrap_or("")))
                }
                Err(e) => seen.push(format!("error {e}")),
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        seen
    });
    (stop, handle)
}

fn rollout(s: &Slipway) -> serde_json::Value {
    let out = s.cli(&["rollout", "status", "api", "--app", "shop"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::json!({ "text": String::from_utf8_lossy(&out.stdout) })
}

fn traffic(s: &Slipway) -> Vec<(u64, u64)> {
    s.status("shop")["services"][0]["traffic"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["revision"].as_u64().unwrap(),
                t["percent"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn traffic_splits_exactly_and_tags_and_the_header_reach_any_revision() {
    let s = Slipway::start();
    let m = path_str(s.dir.path());
    let dir = s.write_app("shop", &spec(&m, "v1", "", "{ keep_previous: 60s }"));
    s.ok(&["up", &path_str(&dir), "--detach"]);
    std::fs::write(
        dir.join("slipway.yaml"),
        spec(&m, "v2", "", "{ keep_previous: 60s }"),
    )
    .unwrap();
    s.ok(&["deploy", "-f", &path_str(&dir)]);

    let out = s.ok(&[
        "traffic",
        "api",
        "--to-revisions",
        "1=90,2=10",
        "--app",
        "shop",
    ]);
    assert!(out.contains("revision 1 90%, revision 2 10%"), "{out}");
    // Over 1,000 requests the split is within 2 % of the weights; in fact it is exact
    // over every window of 10 requests (one client, in order).
    let answers: Vec<String> = (0..1000)
        .map(|_| s.get("api.shop.localhost", "/").unwrap().1[..2].to_owned())
        .collect();
    let v2 = answers.iter().filter(|v| *v == "v2").count();
    assert!((80..=120).contains(&v2), "{v2} of 1000 went to revision 2");
    for window in answers.chunks(10) {
        assert_eq!(
            window.iter().filter(|v| *v == "v2").count(),
            1,
            "{answers:?}"
        );
    }
    let bad = s.cli(&[
        "traffic",
        "api",
        "--to-revisions",
        "1=90,2=20",
        "--app",
        "shop",
    ]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("add up to 110%"));

    // A tag reaches its revision whatever its share; so does the header.
    s.ok(&["traffic", "api", "--to-revisions", "1=100", "--app", "shop"]);
    let out = s.ok(&["tag", "api", "green=2", "--app", "shop"]);
    assert!(out.contains("green.api.shop.localhost"), "{out}");
    let body = s.wait_body(
        "green.api.shop.localhost",
        "/",
        "v2",
        Duration::from_secs(5),
    );
    assert!(body.starts_with("v2"));
    assert!(
        s.get("api.shop.localhost", "/")
            .unwrap()
            .1
            .starts_with("v1")
    );
    let mut conn = std::net::TcpStream::connect(s.router).unwrap();
    use std::io::{Read, Write};
    write!(conn, "GET / HTTP/1.1\r\nHost: api.shop.localhost\r\nSlipway-Revision: green\r\nConnection: close\r\n\r\n").unwrap();
    let mut raw = String::new();
    conn.read_to_string(&mut raw).unwrap();
    assert!(raw.contains("\r\n\r\nv2"), "{raw}");
    s.ok(&["traffic", "api", "--to-latest", "--app", "shop"]);
    assert_eq!(traffic(&s), vec![(2, 100)]);
}

#[test]
fn a_healthy_canary_walks_its_steps_to_100_percent() {
    let s = Slipway::start();
    let m = path_str(s.dir.path());
    let canary = "{ strategy: canary, steps: [20, 50, 100], interval: 1s, analysis: { max_error_rate: 5%, min_requests: 5 } }";
    let dir = s.write_app("shop", &spec(&m, "v1", "", canary));
    s.ok(&["up", &path_str(&dir), "--detach"]);
    let (stop, load) = background_load(&s);
    std::fs::write(dir.join("slipway.yaml"), spec(&m, "v2", "", canary)).unwrap();
    let out = s.ok(&["deploy", "-f", &path_str(&dir)]);
    assert!(
        out.contains("canary started: 20% of traffic on revision 2"),
        "{out}"
    );
    assert_eq!(traffic(&s), vec![(1, 80), (2, 20)]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while traffic(&s) != vec![(2, 100)]
        || rollout(&s)["text"]
            .as_str()
            .unwrap()
            .contains("progressing")
    {
        assert!(Instant::now() < deadline, "{}", rollout(&s)["text"]);
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    let seen = load.join().unwrap();
    assert!(
        seen.iter().all(|r| r.starts_with("200")),
        "failures during the canary: {:?}",
        seen.iter()
            .filter(|r| !r.starts_with("200"))
            .collect::<Vec<_>>()
    );
    let text = rollout(&s)["text"].as_str().unwrap().to_owned();
    assert!(
        text.contains("complete")
            && text.contains("20% step: passed")
            && text.contains("50% step: passed"),
        "{text}"
    );
}

#[test]
fn a_canary_that_answers_errors_is_rolled_back_with_its_figures() {
    let s = Slipway::start();
    let m = path_str(s.dir.path());
    let canary = "{ strategy: canary, steps: [20, 50, 100], interval: 3s, analysis: { max_error_rate: 5%, min_requests: 20 } }";
    let dir = s.write_app("shop", &spec(&m, "v1", "", canary));
    s.ok(&["up", &path_str(&dir), "--detach"]);
    let (stop, load) = background_load(&s);
    std::fs::write(
        dir.join("slipway.yaml"),
        spec(&m, "v2", ", FAIL_RATE: \"0.2\"", canary),
    )
    .unwrap();
    s.ok(&["deploy", "-f", &path_str(&dir)]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while traffic(&s) != vec![(1, 100)] {
        assert!(
            Instant::now() < deadline,
            "not rolled back: {}",
            rollout(&s)["text"]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let seen = load.join().unwrap();
    // The old revision never failed; the only errors are the canary's own 5xx.
    let failed: Vec<&String> = seen.iter().filter(|r| !r.starts_with("200")).collect();
    assert!(failed.iter().all(|r| r.as_str() == "500 v2"), "{failed:?}");
    let text = rollout(&s)["text"].as_str().unwrap().to_owned();
    assert!(text.contains("rolled"), "{text}");
    assert!(
        text.contains("20% step: failed"),
        "rolled back at the first step: {text}"
    );
    assert!(
        text.contains("error rate") && text.contains("> limit 5 %"),
        "{text}"
    );
    let revs = s.ok(&["revisions", "api", "--app", "shop"]);
    let r2 = revs
        .lines()
        .find(|l| l.trim_start().starts_with('2'))
        .unwrap();
    assert!(
        r2.contains("failed") && r2.contains("canary rolled back"),
        "{revs}"
    );
    let events = s.ok(&["events", "--app", "shop", "--limit", "100"]);
    let line = events
        .lines()
        .find(|l| l.contains("rollout.rolled_back"))
        .unwrap_or_else(|| panic!("{events}"));
    assert!(
        line.contains("error rate") && line.contains("> limit 5 %"),
        "{line}"
    );
}

#[test]
fn a_canary_three_times_slower_than_the_p95_limit_is_rolled_back() {
    let s = Slipway::start();
    let m = path_str(s.dir.path());
    let canary = "{ strategy: canary, steps: [50, 100], interval: 2s, analysis: { max_error_rate: 5%, max_p95: 100ms, min_requests: 10 } }";
    let dir = s.write_app("shop", &spec(&m, "v1", "", canary));
    s.ok(&["up", &path_str(&dir), "--detach"]);
    let (stop, load) = background_load(&s);
    std::fs::write(
        dir.join("slipway.yaml"),
        spec(&m, "v2", ", DELAY_MS: \"300\"", canary),
    )
    .unwrap();
    s.ok(&["deploy", "-f", &path_str(&dir)]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while traffic(&s) != vec![(1, 100)] {
        assert!(
            Instant::now() < deadline,
            "not rolled back: {}",
            rollout(&s)["text"]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let seen = load.join().unwrap();
    assert!(seen.iter().all(|r| r.starts_with("200")), "{seen:?}");
    let text = rollout(&s)["text"].as_str().unwrap().to_owned();
    assert!(
        text.contains("p95") && text.contains("> limit 100 ms"),
        "{text}"
    );
}

#[test]
fn abort_and_promote_under_load_fail_no_request() {
    let s = Slipway::start();
    let m = path_str(s.dir.path());
    let canary = "{ strategy: canary, steps: [30, 60, 100], interval: 60s, analysis: { max_error_rate: 5%, min_requests: 5 } }";
    let dir = s.write_app("shop", &spec(&m, "v1", "", canary));
    s.ok(&["up", &path_str(&dir), "--detach"]);
    let (stop, load) = background_load(&s);
    std::fs::write(dir.join("slipway.yaml"), spec(&m, "v2", "", canary)).unwrap();
    s.ok(&["deploy", "-f", &path_str(&dir)]);
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    let out = s.ok(&["rollout", "abort", "api", "--app", "shop"]);
    eprintln!("rollout abort: {:?}", t0.elapsed());
    assert!(out.contains("rolled"), "{out}");
    assert_eq!(traffic(&s), vec![(1, 100)]);
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(dir.join("slipway.yaml"), spec(&m, "v3", "", canary)).unwrap();
    s.ok(&["deploy", "-f", &path_str(&dir)]);
    assert_eq!(traffic(&s), vec![(1, 70), (3, 30)]);
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    let out = s.ok(&["rollout", "promote", "api", "--app", "shop"]);
    eprintln!("rollout promote: {:?}", t0.elapsed());
    assert!(out.contains("complete"), "{out}");
    assert_eq!(traffic(&s), vec![(3, 100)]);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let seen = load.join().unwrap();
    assert!(
        seen.iter().all(|r| r.starts_with("200")),
        "{:?}",
        seen.iter()
            .filter(|r| !r.starts_with("200"))
            .collect::<Vec<_>>()
    );
    assert!(seen.iter().any(|r| r == "200 v3"));
}

#[test]
fn a_canary_resumes_from_its_recorded_step_after_kill_9() {
    let mut s = Slipway::start();
    let m = path_str(s.dir.path());
    let canary = "{ strategy: canary, steps: [10, 40, 100], interval: 2s, analysis: { max_error_rate: 5%, min_requests: 3 } }";
    let dir = s.write_app("shop", &spec(&m, "v1", "", canary));
    s.ok(&["up", &path_str(&dir), "--detach"]);
    std::fs::write(dir.join("slipway.yaml"), spec(&m, "v2", "", canary)).unwrap();
    s.ok(&["deploy", "-f", &path_str(&dir)]);
    let before = traffic(&s);
    assert_eq!(before, vec![(1, 90), (2, 10)]);
    s.kill9();
    s.start_server();
    // The recorded step comes back with its weights, and both revisions serve again.
    assert_eq!(traffic(&s), before);
    s.wait_body("api.shop.localhost", "/", "v", Duration::from_secs(10));
    let text = rollout(&s)["text"].as_str().unwrap().to_owned();
    assert!(
        text.contains("progressing") && text.contains("interrupted"),
        "{text}"
    );
    let (stop, load) = background_load(&s);
    let deadline = Instant::now() + Duration::from_secs(30);
    while traffic(&s) != vec![(2, 100)] {
        assert!(Instant::now() < deadline, "{}", rollout(&s)["text"]);
        std::thread::sleep(Duration::from_millis(200));
    }
    stop.store(true, Ordering::Relaxed);
    let seen = load.join().unwrap();
    assert!(seen.iter().all(|r| r.starts_with("200")), "{seen:?}");
}

#[test]
fn recreate_stops_the_old_revision_first_and_says_how_long_nothing_served() {
    let s = Slipway::start();
    let m = path_str(s.dir.path());
    let dir = s.write_app("shop", &spec(&m, "v1", "", "{ strategy: recreate }"));
    s.ok(&["up", &path_str(&dir), "--detach"]);
    std::fs::write(
        dir.join("slipway.yaml"),
        spec(&m, "v2", "", "{ strategy: recreate }"),
    )
    .unwrap();
    let out = s.ok(&["deploy", "-f", &path_str(&dir)]);
    assert!(
        out.contains("recreate strategy: no instance served for"),
        "{out}"
    );
    assert!(
        s.get("api.shop.localhost", "/")
            .unwrap()
            .1
            .starts_with("v2")
    );
}

#[test]
fn a_rollback_during_a_canary_ends_the_canary() {
    let s = Slipway::start();
    let m = path_str(s.dir.path());
    let canary = "{ strategy: canary, steps: [20, 50, 100], interval: 1s, analysis: { max_error_rate: 5%, min_requests: 1 } }";
    let dir = s.write_app("shop", &spec(&m, "v1", "", canary));
    s.ok(&["up", &path_str(&dir), "--detach"]);
    std::fs::write(dir.join("slipway.yaml"), spec(&m, "v2", "", canary)).unwrap();
    s.ok(&["deploy", "-f", &path_str(&dir)]);
    assert_eq!(traffic(&s), vec![(1, 80), (2, 20)]);
    let out = s.ok(&["rollback", "api", "--app", "shop"]);
    assert!(out.contains("revision 2 -> 1"), "{out}");
    assert_eq!(traffic(&s), vec![(1, 100)]);
    // The canary stays ended: its steps do not come back.
    let (stop, load) = background_load(&s);
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let _ = load.join();
    assert_eq!(traffic(&s), vec![(1, 100)]);
    let text = rollout(&s)["text"].as_str().unwrap().to_owned();
    assert!(
        !text.contains("progressing") && text.contains("rolled"),
        "{text}"
    );
}

#[test]
fn a_rolling_deploy_replaces_instances_one_by_one_without_failures() {
    let s = Slipway::start();
    let m = path_str(s.dir.path());
    let rolling = |v: &str| {
        spec(&m, v, "", "{ strategy: rolling, keep_previous: 0s }").replace(
            "    traffic:",
            "    scaling: { min: 3, max: 3 }\n    traffic:",
        )
    };
    let dir = s.write_app("shop", &rolling("v1"));
    s.ok(&["up", &path_str(&dir), "--detach"]);
    let (stop, load) = background_load(&s);
    std::fs::write(dir.join("slipway.yaml"), rolling("v2")).unwrap();
    s.ok(&["deploy", "-f", &path_str(&dir)]);
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let seen = load.join().unwrap();
    assert!(seen.iter().all(|r| r.starts_with("200")), "{seen:?}");
    assert_eq!(traffic(&s), vec![(2, 100)]);
    // The traffic moved in steps that follow the instance counts, not in one switch.
    let events = s.ok(&["events", "--app", "shop", "--limit", "200"]);
    let steps: Vec<&str> = events
        .lines()
        .filter(|l| l.contains("rolling deploy: "))
        .collect();
    assert!(steps.len() >= 2, "{events}");
    assert!(
        steps.iter().any(|l| l.contains("r1=67%, r2=33%")),
        "{events}"
    );
}

#[test]
fn a_blue_green_switch_with_an_analysis_is_judged_and_switched_back_when_it_fails() {
    let s = Slipway::start();
    let m = path_str(s.dir.path());
    let watched = |keep: &str| {
        format!(
            "{{ strategy: blue-green, keep_previous: {keep}, analysis: {{ max_error_rate: 5%, min_requests: 10 }} }}"
        )
    };
    let dir = s.write_app("shop", &spec(&m, "v1", "", &watched("10s")));
    s.ok(&["up", &path_str(&dir), "--detach"]);
    let (stop, load) = background_load(&s);
    std::thread::sleep(Duration::from_millis(300));
    // Revision 2 is ready (its /ready answers) but every request fails.
    std::fs::write(
        dir.join("slipway.yaml"),
        spec(&m, "v2", ", FAIL_RATE: \"1.0\"", &watched("10s")),
    )
    .unwrap();
    let t0 = Instant::now();
    let out = s.ok(&["deploy", "-f", &path_str(&dir)]);
    assert!(out.contains("revision 1 -> 2"), "{out}");
    let deadline = Instant::now() + Duration::from_secs(8);
    while traffic(&s) != vec![(1, 100)] {
        assert!(
            Instant::now() < deadline,
            "not switched back: {:?}",
            traffic(&s)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = t0.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let seen = load.join().unwrap();
    let failed: Vec<&String> = seen.iter().filter(|r| !r.starts_with("200")).collect();
    eprintln!(
        "blue-green watch: {} requests, {} failed (all from the bad revision), switched back {took:?} after the deploy command started",
        seen.len(),
        failed.len()
    );
    assert!(failed.iter().all(|r| r.as_str() == "500 v2"), "{failed:?}");
    assert!(seen.last().is_some_and(|r| r == "200 v1"), "{seen:?}");
    let revs = s.ok(&["revisions", "api", "--app", "shop"]);
    let r2 = revs
        .lines()
        .find(|l| l.trim_start().starts_with('2'))
        .unwrap();
    assert!(
        r2.contains("failed") && r2.contains("failed its analysis after the switch"),
        "{revs}"
    );
    let events = s.ok(&["events", "--app", "shop", "--limit", "100"]);
    let line = events
        .lines()
        .find(|l| l.contains("deploy.rolled_back"))
        .unwrap_or_else(|| panic!("{events}"));
    assert!(
        line.contains("error rate") && line.contains("> limit 5 %"),
        "{line}"
    );

    // A healthy revision passes its watch and stays.
    std::fs::write(dir.join("slipway.yaml"), spec(&m, "v3", "", &watched("1s"))).unwrap();
    let (stop, load) = background_load(&s);
    s.ok(&["deploy", "-f", &path_str(&dir)]);
    let deadline = Instant::now() + Duration::from_secs(8);
    loop {
        let events = s.ok(&["events", "--app", "shop", "--limit", "100"]);
        if let Some(line) = events.lines().find(|l| l.contains("deploy.verified")) {
            assert!(line.contains("revision 3 kept to its analysis"), "{line}");
            break;
        }
        assert!(Instant::now() < deadline, "no verdict: {events}");
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    let seen = load.join().unwrap();
    assert!(seen.iter().all(|r| r.starts_with("200")), "{seen:?}");
    assert_eq!(traffic(&s), vec![(3, 100)]);
}
