//! Build once, promote the same artifact: a staging deploy builds and stores the
//! artifact; promotion to production runs it without building again; a running revision
//! keeps running its stored copy whatever happens to the working tree.

mod support;

use std::time::Duration;

use support::*;

const SPEC: &str = r#"app: shop
environments:
  staging: {}
  production: { host: prod.shop.localhost }
services:
  api:
    build: ["sh", "-c", "echo build >> ../builds.log && mkdir -p dist && cp app.py version.txt dist/"]
    test: ["sh", "-c", "test -s dist/app.py"]
    artifact: dist
    run: ["python3", "app.py"]
    health:
      ready: { http: /ready, interval: 200ms }
"#;

#[test]
fn staging_builds_once_and_production_runs_the_same_artifact() {
    let s = Slipway::start();
    let dir = s.write_app("shop", SPEC);
    std::fs::write(dir.join("version.txt"), "v1").unwrap();
    let builds = s.dir.path().join("builds.log");

    let out = s.ok(&["deploy", "-f", &path_str(&dir), "--env", "staging"]);
    assert!(
        out.contains("build succeeded") && out.contains("test succeeded"),
        "{out}"
    );
    let stored = out
        .lines()
        .find_map(|l| l.split("artifact stored as ").nth(1))
        .unwrap_or_else(|| panic!("{out}"))
        .trim()
        .to_owned();
    s.wait_body(
        "api.staging.shop.localhost",
        "/",
        "v1",
        Duration::from_secs(5),
    );

    // The working tree moves on; production must still get what staging runs.
    std::fs::write(dir.join("version.txt"), "v2-unreleased").unwrap();
    s.ok(&["up", &path_str(&dir), "--env", "production", "--detach"]);
    // `up` built production from the working tree (v2); now promote staging's v1 over it.
    let before = std::fs::read_to_string(&builds).unwrap().lines().count();
    let out = s.ok(&[
        "promote",
        "api",
        "--from",
        "staging",
        "--to",
        "production",
        "-f",
        &path_str(&dir),
    ]);
    assert!(
        out.contains(&format!("promoting the code {stored}")),
        "{out}"
    );
    assert!(!out.contains("build:"), "promote must not build: {out}");
    assert_eq!(
        std::fs::read_to_string(&builds).unwrap().lines().count(),
        before,
        "the build ran during promote"
    );
    s.wait_body("api.prod.shop.localhost", "/", "v1", Duration::from_secs(5));
    s.wait_body(
        "api.staging.shop.localhost",
        "/",
        "v1",
        Duration::from_secs(5),
    );

    // Promoting again is a no-op: same artifact, same config.
    let out = s.ok(&[
        "promote",
        "api",
        "--from",
        "staging",
        "--to",
        "production",
        "-f",
        &path_str(&dir),
    ]);
    assert!(out.contains("unchanged"), "{out}");
    let bad = s.cli(&[
        "promote",
        "api",
        "--from",
        "qa",
        "--to",
        "production",
        "-f",
        &path_str(&dir),
    ]);
    assert!(!bad.status.success());
}

#[test]
fn editing_the_working_tree_does_not_change_a_running_revision() {
    let s = Slipway::start();
    let dir = s.write_app("shop", SPEC);
    std::fs::write(dir.join("version.txt"), "v1").unwrap();
    s.ok(&["up", &path_str(&dir), "--detach"]);
    s.wait_body("api.shop.localhost", "/", "v1", Duration::from_secs(5));
    // Change the source and even the build output in the working tree…
    std::fs::write(dir.join("version.txt"), "v2").unwrap();
    std::fs::write(dir.join("dist/version.txt"), "v2").unwrap();
    std::fs::write(dir.join("dist/app.py"), "raise SystemExit('edited')").unwrap();
    // …then kill the instance: the runtime restarts it from the stored copy.
    let status = s.status("shop");
    let pid = status["services"][0]["instances"][0]["pid"]
        .as_u64()
        .unwrap();
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
    std::thread::sleep(Duration::from_millis(300));
    let body = s.wait_body("api.shop.localhost", "/", "v", Duration::from_secs(10));
    assert!(body.starts_with("v1"), "{body}");
    let status = s.status("shop");
    assert_eq!(
        status["services"][0]["instances"][0]["restarts"], 1,
        "{status:#}"
    );
}

#[test]
fn a_failing_test_command_stops_the_deploy_before_any_revision() {
    let s = Slipway::start();
    let dir = s.write_app(
        "shop",
        &SPEC.replace("test -s dist/app.py", "echo 2 tests failed; exit 1"),
    );
    std::fs::write(dir.join("version.txt"), "v1").unwrap();
    let out = s.cli(&["up", &path_str(&dir), "--detach"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("test command") && stderr.contains("2 tests failed"),
        "{stderr}"
    );
    let revs = s.ok(&["revisions", "api", "--app", "shop"]);
    assert_eq!(revs.lines().count(), 1, "no revision may exist: {revs}");
}
