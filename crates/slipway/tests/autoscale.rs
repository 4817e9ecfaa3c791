//! Autoscaling end to end: scale to zero and back with no lost request, growth under a
//! load step, and an exact per-instance concurrency limit. Real processes, real HTTP.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::*;

fn spec(marker: &str, scaling: &str) -> String {
    format!(
        r#"app: shop
services:
  api:
    run: ["python3", "{marker}/shop/app.py"]
    env: {{ VERSION: "v1" }}
    scaling: {scaling}
    health:
      ready: {{ http: /ready, interval: 200ms }}
    shutdown: {{ grace: 2s }}
"#
    )
}

/// Sends `n` requests at once (each on its own connection); returns their results.
fn burst(
    router: std::net::SocketAddr,
    host: &'static str,
    path: &'static str,
    n: usize,
) -> Vec<Result<(u16, String), String>> {
    let handles: Vec<_> = (0..n)
        .map(|_| std::thread::spawn(move || http_get(router, host, path)))
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn instances(s: &Slipway) -> usize {
    s.status("shop")["services"][0]["instances"]
        .as_array()
        .unwrap()
        .len()
}

fn wait_for(s: &Slipway, what: &str, within: Duration, mut ok: impl FnMut(&Slipway) -> bool) {
    let deadline = Instant::now() + within;
    while !ok(s) {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within {within:?}\n{:#}",
            s.status("shop")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn scales_to_zero_when_idle_and_serves_50_requests_arriving_together() {
    let s = Slipway::start();
    let marker = path_str(s.dir.path());
    let dir = s.write_app(
        "shop",
        &spec(
            &marker,
            "{ min: 0, max: 3, concurrency: 10, idle: 2s, stable_window: 4s, panic_window: 1s }",
        ),
    );
    s.ok(&["up", &path_str(&dir), "--detach"]);
    assert_eq!(s.get("api.shop.localhost", "/").unwrap().0, 200);
    wait_for(&s, "scale to zero", Duration::from_secs(20), |s| {
        instances(s) == 0
    });
    let pids = processes_with(&format!("{marker}/shop/app.py"));
    assert!(
        pids.is_empty(),
        "scaled to zero but processes remain: {pids:?}"
    );

    let t0 = Instant::now();
    let results = burst(s.router, "api.shop.localhost", "/", 50);
    let took = t0.elapsed();
    let failed: Vec<_> = results
        .iter()
        .filter(|r| !matches!(r, Ok((200, _))))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of 50 failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    eprintln!("50 requests from zero instances all answered within {took:?}");
    let events = s.ok(&["events", "--app", "shop", "--limit", "200"]);
    assert!(events.contains("scale.cold_start"), "{events}");
    assert!(events.contains("scale.decision"), "{events}");
    let metrics = s.metrics().unwrap().1;
    assert!(
        metrics.contains("slipway_cold_starts_total{app=\"shop\",service=\"api\",revision=\"1\"}"),
        "{metrics}"
    );
}

#[test]
fn a_load_step_grows_the_service_without_failures_and_it_shrinks_back_after() {
    let s = Slipway::start();
    let marker = path_str(s.dir.path());
    let dir = s.write_app(
        "shop",
        &spec(
            &marker,
            "{ min: 1, max: 12, concurrency: 10, stable_window: 6s, panic_window: 2s }",
        ),
    );
    s.ok(&["up", &path_str(&dir), "--detach"]);

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
    let start_clients = |n: usize| -> Vec<std::thread::JoinHandle<usize>> {
        (0..n)
            .map(|_| {
                let (stop, failures, router) = (stop.clone(), failures.clone(), s.router);
                std::thread::spawn(move || {
                    let mut sent = 0;
                    while !stop.load(Ordering::Relaxed) {
                        match http_get(router, "api.shop.localhost", "/track/0.2") {
                            Ok((200, _)) => {}
                            other => failures.lock().unwrap().push(format!("{other:?}")),
                        }
                        sent += 1;
                    }
                    sent
                })
            })
            .collect()
    };
    let mut clients = start_clients(5);
    std::thread::sleep(Duration::from_secs(3));
    let before = instances(&s);
    let step = Instant::now();
    clients.extend(start_clients(95));
    let mut reached = None;
    while step.elapsed() < Duration::from_secs(10) {
        let ready = s.status("shop")["services"][0]["ready"].as_u64().unwrap();
        if ready >= 8 {
            reached = Some(step.elapsed());
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let sent: usize = clients.into_iter().map(|c| c.join().unwrap()).sum();
    let failures = failures.lock().unwrap().clone();
    eprintln!(
        "load step 5 -> 100 clients: {before} instance(s) before, >= 8 ready after {reached:?}; {sent} requests, {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    let reached = reached.expect("never reached 8 ready instances");
    assert!(reached < Duration::from_secs(10));
    // Without load it returns to `min` once the windows have passed.
    wait_for(&s, "scale back to min", Duration::from_secs(40), |s| {
        instances(s) == 1
    });
}

#[test]
fn max_concurrency_one_never_puts_two_requests_on_one_instance() {
    let s = Slipway::start();
    let marker = path_str(s.dir.path());
    let dir = s.write_app(
        "shop",
        &spec(
            &marker,
            "{ min: 2, max: 2, concurrency: 1, max_concurrency: 1 }",
        ),
    );
    s.ok(&["up", &path_str(&dir), "--detach"]);
    let results = burst(s.router, "api.shop.localhost", "/track/0.05", 20);
    for r in &results {
        let (code, body) = r.as_ref().unwrap();
        assert_eq!(*code, 200, "{body}");
        assert!(
            body.ends_with("max=1"),
            "an instance saw two requests at once: {body}"
        );
    }
}

/// The `scale.decision` events of app `shop`.
fn decisions(s: &Slipway) -> Vec<String> {
    s.ok(&["events", "--app", "shop", "--limit", "200"])
        .lines()
        .filter(|l| l.contains("scale.decision"))
        .map(str::to_owned)
        .collect()
}

/// The audit trail records decisions that change something: a service at its minimum with
/// no traffic gets no `scale.decision` event, neither after its deploy nor after server
/// restarts, while scaling to zero (a change) is still recorded.
#[test]
fn a_decision_that_changes_no_instance_count_is_not_recorded() {
    let mut s = Slipway::start();
    let marker = path_str(s.dir.path());
    let dir = s.write_app(
        "shop",
        &spec(&marker, "{ min: 1, max: 3, concurrency: 10 }"),
    );
    s.ok(&["up", &path_str(&dir), "--detach"]);
    // Several autoscaler ticks (one a second), after the deploy and after two restarts.
    std::thread::sleep(Duration::from_millis(2500));
    for _ in 0..2 {
        s.kill9();
        s.start_server();
        s.wait_body("api.shop.localhost", "/", "v1", Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(2500));
    }
    let recorded = decisions(&s);
    assert!(recorded.is_empty(), "{recorded:#?}");

    std::fs::write(
        dir.join("slipway.yaml"),
        spec(&marker, "{ min: 0, max: 3, concurrency: 10, idle: 1s }"),
    )
    .unwrap();
    s.ok(&["deploy", "-f", &path_str(&dir)]);
    // The new revision scales to zero (the previous one is kept warm, unrouted).
    wait_for(
        &s,
        "a decision to scale to zero",
        Duration::from_secs(20),
        |s| {
            decisions(s)
                .iter()
                .any(|d| d.contains("0 instance(s) wanted, 1 running"))
        },
    );
    let recorded = decisions(&s);
    for d in &recorded {
        let counts: Vec<&str> = d
            .split_whitespace()
            .skip_while(|w| *w != "scale.decision")
            .collect();
        // `scale.decision api N instance(s) wanted, M running…`
        assert!(
            counts.len() > 5 && counts[2] != counts[5],
            "a decision that changes nothing: {d}"
        );
    }
}
