//! End-to-end tests of environments, secrets and release commands: the real binary, real
//! processes, and assertions on what the processes actually receive.

mod support;

use std::path::Path;
use std::time::Duration;

use sha2::Digest;
use support::*;

/// A Python app that answers every path with JSON describing what it received: its
/// `VERSION`, `LOG_LEVEL`, `SLIPWAY_ENVIRONMENT`, and the SHA-256 of `DATABASE_URL`
/// (never the value itself).
const ENV_APP: &str = r#"
import hashlib, json, os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        secret = os.environ.get("DATABASE_URL")
        body = json.dumps({
            "version": os.environ.get("VERSION", ""),
            "level": os.environ.get("LOG_LEVEL", ""),
            "environment": os.environ.get("SLIPWAY_ENVIRONMENT", ""),
            "app": os.environ.get("SLIPWAY_APP", ""),
            "secret_sha256": hashlib.sha256(secret.encode()).hexdigest() if secret is not None else None,
        }).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
s = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H)
s.daemon_threads = True
print(f"listening on {os.environ['PORT']}", flush=True)
s.serve_forever()
"#;

fn sha256(text: &str) -> String {
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

fn write_env_app(s: &Slipway, name: &str, spec: &str) -> std::path::PathBuf {
    let dir = s.dir.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("app.py"), ENV_APP).unwrap();
    std::fs::write(dir.join("slipway.yaml"), spec).unwrap();
    dir
}

/// The JSON the app answers on `host`.
fn seen(s: &Slipway, host: &str) -> serde_json::Value {
    let (code, body) = s.get(host, "/").unwrap();
    assert_eq!(code, 200, "{host}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{host}: {e}: {body}"))
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(bytes) = std::fs::read(&path)
                && bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
            {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

fn secret_spec(marker: &str) -> String {
    format!(
        r#"app: vault
services:
  api:
    run: ["python3", "{marker}/app.py"]
    env: {{ VERSION: "v1" }}
    secrets: [DATABASE_URL]
    health:
      ready: {{ http: /ready, interval: 100ms }}
      startup_timeout: 10s
    shutdown: {{ grace: 1s }}
    deploy: {{ keep_previous: 30s }}
"#
    )
}

#[test]
fn a_secret_reaches_the_process_never_the_disk_or_the_cli_and_versions_follow_revisions() {
    let s = Slipway::start();
    let dir = write_env_app(
        &s,
        "vault",
        &secret_spec(&path_str(&s.dir.path().join("vault"))),
    );
    let dir = path_str(&dir);

    // Without the secret nothing starts, and the error says how to set it.
    let out = s.cli(&["up", &dir, "--detach"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("secret DATABASE_URL")
            && stderr.contains("slipway secret set DATABASE_URL --app vault --env development"),
        "{stderr}"
    );
    assert!(processes_with(&format!("{dir}/app.py")).is_empty());

    // The value comes from stdin; a trailing newline is dropped.
    let first = "postgres://u:first-Secret-7f3a@db/one";
    let out = s.cli_with_stdin(
        &["secret", "set", "DATABASE_URL", "--app", "vault"],
        &format!("{first}\n"),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shown = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        shown.contains("version 1") && !shown.contains(first),
        "{shown}"
    );

    s.ok(&["up", &dir, "--detach"]);
    assert_eq!(
        seen(&s, "api.vault.localhost")["secret_sha256"],
        sha256(first)
    );

    // A new value makes `deploy` create a new revision that receives it.
    let second = "postgres://u:second-Secret-91c2@db/two";
    let out = s.cli_with_stdin(&["secret", "set", "DATABASE_URL", "--app", "vault"], second);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = s.ok(&["deploy", "-f", &dir]);
    assert!(out.contains("revision 2"), "{out}");
    assert_eq!(
        seen(&s, "api.vault.localhost")["secret_sha256"],
        sha256(second)
    );
    // Nothing changed since: no new revision.
    let out = s.ok(&["deploy", "-f", &dir]);
    assert!(out.contains("unchanged"), "{out}");

    // Rollback restores the old value with the old revision.
    s.ok(&["rollback", "api", "--app", "vault"]);
    assert_eq!(
        seen(&s, "api.vault.localhost")["secret_sha256"],
        sha256(first)
    );

    // The CLI never prints a value.
    let mut printed = String::new();
    for args in [
        &["secret", "list", "--app", "vault"][..],
        &["status", "--json", "--app", "vault"],
        &["revisions", "api", "--app", "vault"],
        &["events", "--app", "vault", "--limit", "500"],
        &["logs", "api", "--app", "vault"],
        &["config", "show", "-f", &dir],
    ] {
        let out = s.cli(args);
        printed.push_str(&String::from_utf8_lossy(&out.stdout));
        printed.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    assert!(printed.contains("DATABASE_URL"), "{printed}");
    for value in [first, second] {
        assert!(
            !printed.contains(value),
            "the CLI printed a secret:\n{printed}"
        );
        // Not in the data dir (database, WAL, logs, key file) nor the server's log.
        assert_eq!(files_containing(&s.data, value), Vec::<String>::new());
        assert!(!s.server_log().contains(value));
    }
    // The key file is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(s.data.join("master.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // Removing it keeps the running revisions, but the next new revision cannot be made.
    s.ok(&["secret", "rm", "DATABASE_URL", "--app", "vault"]);
    let list = s.ok(&["secret", "list", "--app", "vault"]);
    assert!(!list.contains("DATABASE_URL"), "{list}");
    let out = s.cli(&["deploy", "-f", &dir, "--force"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs secret DATABASE_URL"));
    assert_eq!(
        seen(&s, "api.vault.localhost")["secret_sha256"],
        sha256(first)
    );
    let _ = Duration::ZERO;
}

/// A release command: records that it ran (with `VERSION`) in `ran.txt`, prints a line,
/// then exits with `MIGRATE_EXIT` after `MIGRATE_SLEEP` seconds.
const MIGRATE: &str = r#"
import os, sys, time
with open(os.path.join(os.path.dirname(__file__), "ran.txt"), "a") as f:
    f.write(os.environ.get("VERSION", "") + "\n")
print(f"migrating schema for {os.environ.get('VERSION')}", flush=True)
time.sleep(float(os.environ.get("MIGRATE_SLEEP", "0")))
code = int(os.environ.get("MIGRATE_EXIT", "0"))
if code:
    print("migration failed: column already exists", file=sys.stderr, flush=True)
sys.exit(code)
"#;

fn release_spec(marker: &str, version: &str, migrate_env: &str, timeout: &str) -> String {
    format!(
        r#"app: mig
services:
  api:
    run: ["python3", "{marker}/app.py"]
    env: {{ VERSION: "{version}"{migrate_env} }}
    release: ["python3", "{marker}/migrate.py"]
    release_timeout: {timeout}
    scaling: {{ min: 2, max: 2 }}
    health:
      ready: {{ http: /ready, interval: 100ms }}
      startup_timeout: 10s
    shutdown: {{ grace: 1s }}
    deploy: {{ keep_previous: 0s }}
"#
    )
}

#[test]
fn a_failing_or_hanging_release_command_aborts_the_deploy_while_the_old_revision_serves() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    let s = Slipway::start();
    let dir = s.dir.path().join("mig");
    let marker = path_str(&dir);
    let spec = |version: &str, env: &str, timeout: &str| {
        std::fs::write(
            dir.join("slipway.yaml"),
            release_spec(&marker, version, env, timeout),
        )
        .unwrap();
    };
    write_env_app(&s, "mig", &release_spec(&marker, "v1", "", "10s"));
    std::fs::write(dir.join("migrate.py"), MIGRATE).unwrap();
    let out = s.ok(&["up", &marker, "--detach"]);
    assert!(out.contains("release command"), "{out}");
    assert_eq!(seen(&s, "api.mig.localhost")["version"], "v1");
    let release = s.ok(&["logs", "api", "--release", "--app", "mig"]);
    assert!(release.contains("migrating schema for v1"), "{release}");
    let revisions = s.ok(&["revisions", "api", "--app", "mig"]);
    assert!(revisions.contains("succeeded"), "{revisions}");

    // Load on the serving revision while two deploys fail in their release command.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let router = s.router;
    let load = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < deadline {
                match http_get(router, "api.mig.localhost", "/") {
                    Ok((200, body)) if body.contains("\"v1\"") => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        failures.push(format!("{other:?}"));
                    }
                }
            }
            failures
        })
    };

    spec("v2", r#", MIGRATE_EXIT: "3""#, "10s");
    let out = s.cli(&["deploy", "-f", &marker]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("release command") && stderr.contains("exit status: 3"),
        "{stderr}"
    );
    assert!(
        stderr.contains("migration failed: column already exists"),
        "the output is shown: {stderr}"
    );
    assert!(stderr.contains("revision 1 keeps serving"), "{stderr}");

    spec("v3", r#", MIGRATE_SLEEP: "30""#, "1s");
    let out = s.cli(&["deploy", "-f", &marker]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("did not finish within"), "{stderr}");

    stop.store(true, Ordering::Relaxed);
    let failures = load.join().unwrap();
    assert!(ok.load(Ordering::Relaxed) > 0);
    assert_eq!(failed.load(Ordering::Relaxed), 0, "{failures:?}");

    // Both new revisions failed, none of their instances runs, the old one serves.
    let revisions = s.ok(&["revisions", "api", "--app", "mig"]);
    let states: Vec<&str> = revisions
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(3))
        .collect();
    assert_eq!(states, ["serving", "failed", "failed"], "{revisions}");
    let status = s.status("mig");
    let instances = status["services"][0]["instances"].as_array().unwrap();
    assert!(instances.iter().all(|i| i["revision"] == 1), "{status:#}");
    let release = s.ok(&[
        "logs",
        "api",
        "--release",
        "--revision",
        "2",
        "--app",
        "mig",
    ]);
    assert!(release.contains("column already exists"), "{release}");
    // Each deploy ran the release command exactly once.
    let ran = std::fs::read_to_string(dir.join("ran.txt")).unwrap();
    assert_eq!(ran.lines().collect::<Vec<_>>(), ["v1", "v2", "v3"]);
}

fn trio_spec(marker: &str, app: &str, production_host: &str) -> String {
    format!(
        r#"app: {app}
services:
  api:
    run: ["python3", "{marker}/app.py"]
    env: {{ VERSION: "v1", LOG_LEVEL: info }}
    secrets: [DATABASE_URL]
    routes: ["/api"]
    health:
      ready: {{ http: /ready, interval: 100ms }}
      startup_timeout: 10s
    shutdown: {{ grace: 1s }}
environments:
  staging: {{}}
  production:
    host: {production_host}
    services:
      api: {{ env: {{ LOG_LEVEL: warn }} }}
"#
    )
}

#[test]
fn three_environments_run_side_by_side_on_their_own_hosts_with_their_own_config_and_secrets() {
    let s = Slipway::start();
    let dir = s.dir.path().join("trio");
    let marker = path_str(&dir);
    write_env_app(
        &s,
        "trio",
        &trio_spec(&marker, "trio", "trio.example.localhost"),
    );
    let environments = [
        (
            "development",
            "api.trio.localhost",
            "trio.localhost",
            "info",
        ),
        (
            "staging",
            "api.staging.trio.localhost",
            "staging.trio.localhost",
            "info",
        ),
        (
            "production",
            "api.trio.example.localhost",
            "trio.example.localhost",
            "warn",
        ),
    ];
    for (env, ..) in environments {
        let value = format!("postgres://{env}-password-5b1e@db/{env}");
        let out = s.cli_with_stdin(
            &[
                "secret",
                "set",
                "DATABASE_URL",
                "--app",
                "trio",
                "--env",
                env,
            ],
            &value,
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        s.ok(&["up", &marker, "--detach", "--env", env]);
    }
    for (env, service_host, app_host, level) in environments {
        for (host, path) in [(service_host, "/"), (app_host, "/api/x")] {
            let (code, body) = s.get(host, path).unwrap();
            assert_eq!(code, 200, "{host}{path}: {body}");
            let seen: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(seen["environment"], env, "{host}: {seen}");
            assert_eq!(seen["app"], "trio", "{host}: {seen}");
            assert_eq!(seen["level"], level, "{host}: {seen}");
            let value = format!("postgres://{env}-password-5b1e@db/{env}");
            assert_eq!(seen["secret_sha256"], sha256(&value), "{host}: {seen}");
        }
        // `config show` prints what runs there: host, merged env, secrets by name.
        let shown = s.ok(&["config", "show", "-f", &marker, "--env", env]);
        let config: serde_json::Value = serde_json::from_str(&shown).unwrap();
        assert_eq!(config["environment"], env);
        assert_eq!(config["host"], app_host);
        assert_eq!(config["services"]["api"]["env"]["LOG_LEVEL"], level);
        assert_eq!(config["services"]["api"]["secrets"][0], "DATABASE_URL");
        assert!(!shown.contains("password"), "{shown}");
        // Each environment has its own status, revisions and events.
        let status: serde_json::Value =
            serde_json::from_str(&s.ok(&["status", "--json", "--app", "trio", "--env", env]))
                .unwrap();
        assert_eq!(status["host"], app_host);
        let url = status["services"][0]["url"].as_str().unwrap();
        assert!(url.starts_with(&format!("http://{service_host}:")), "{url}");
        let revisions = s.ok(&["revisions", "api", "--app", "trio", "--env", env]);
        assert_eq!(revisions.lines().count(), 2, "{revisions}");
    }

    // Another app may not take a host a running environment serves.
    let other = s.dir.path().join("other");
    write_env_app(
        &s,
        "other",
        &trio_spec(&path_str(&other), "other", "trio.example.localhost"),
    );
    let out = s.cli(&["up", &path_str(&other), "--detach", "--env", "production"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("host trio.example.localhost")
            && stderr.contains("already served by app trio in environment production"),
        "{stderr}"
    );
    // An environment the file does not declare is refused before anything happens.
    let out = s.cli(&["up", &marker, "--detach", "--env", "qa"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown environment `qa`"));

    // Stopping staging leaves the other two serving.
    s.ok(&["down", "--app", "trio", "--env", "staging"]);
    assert_eq!(s.get("api.staging.trio.localhost", "/").unwrap().0, 404);
    assert_eq!(seen(&s, "api.trio.localhost")["environment"], "development");
    assert_eq!(
        seen(&s, "api.trio.example.localhost")["environment"],
        "production"
    );
}
