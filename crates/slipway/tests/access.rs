//! Access to the admin listener, end to end: tokens made with `slipway token create`, each
//! role against each class of API route (allowed, or 403), reads without a token, expired
//! and revoked tokens (401), the actor of every change in the event log, a private Unix
//! socket, and no token value anywhere the server writes or answers.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use support::*;

fn spec(marker: &str) -> String {
    format!(
        r#"app: shop
services:
  api:
    run: ["python3", "{marker}/app.py"]
    routes: ["/api"]
    health:
      ready: {{ http: /ready, interval: 100ms }}
      startup_timeout: 10s
    shutdown: {{ grace: 1s }}
environments:
  staging: {{}}
  production: {{}}
"#
    )
}

/// One call to the admin listener with `token` (none: no header).
fn call(s: &Slipway, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let auth = token.map(|t| format!("Bearer {t}"));
    http_request_with(s.admin, method, "localhost", path, body, auth.as_deref())
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

fn create(s: &Slipway, args: &[&str]) -> String {
    let mut all = vec!["token", "create"];
    all.extend_from_slice(args);
    let token = s.ok(&all).trim().to_owned();
    assert!(token.starts_with("slp_") && token.len() == 85, "{token:?}");
    token
}

#[test]
fn each_role_reaches_its_routes_and_every_change_names_its_actor() {
    let s = Slipway::start();
    let dir = s.dir.path().join("shop");
    let app = s.write_app("shop", &spec(&path_str(&dir)));
    s.ok(&["up", &path_str(&app), "--env", "staging", "--detach"]);

    // The socket and its directory are the local administrator's alone.
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&s.data.join("slipway.sock")), 0o600);
    assert_eq!(mode(&s.data), 0o700);
    assert!(!s.data.join("admin.token").exists());

    let viewer = create(&s, &["ops", "--role", "viewer"]);
    let viewer_staging = create(&s, &["qa", "--role", "viewer", "--env", "staging"]);
    let deployer_staging = create(&s, &["ci", "--role", "deployer", "--env", "staging"]);
    let deployer = create(&s, &["release", "--role", "deployer", "--expires", "30d"]);
    let admin = create(&s, &["root", "--role", "admin"]);
    let metrics = create(&s, &["prometheus", "--role", "metrics"]);
    let tokens = [
        ("viewer", &viewer),
        ("viewer@staging", &viewer_staging),
        ("deployer@staging", &deployer_staging),
        ("deployer", &deployer),
        ("admin", &admin),
        ("metrics", &metrics),
    ];

    // A development app, registered but not deployed, for the scoped list of apps.
    let apply = format!(
        r#"{{"spec_path": "{}"}}"#,
        path_str(&app.join("slipway.yaml"))
    );
    let (code, body) = call(&s, "POST", "/v1/apps", Some(&admin), &apply);
    assert_eq!(code, 200, "{body}");

    // Each route class, with what each token may do (true: allowed; false: 403).
    #[rustfmt::skip]
    let routes: [(&str, &str, &str, [bool; 6]); 12] = [
        //                                                              viewer  v@stg  d@stg  deploy admin  metrics
        ("GET", "/v1/server", "",                                       [true,  true,  true,  true,  true,  false]),
        ("GET", "/v1/apps/shop@staging", "",                            [true,  true,  true,  true,  true,  false]),
        ("GET", "/v1/apps/shop@staging/services/api/logs?tail=5", "",   [true,  true,  true,  true,  true,  false]),
        ("GET", "/v1/events?app=shop@staging", "",                      [true,  true,  true,  true,  true,  false]),
        ("GET", "/v1/apps/shop", "",                                    [true,  false, false, true,  true,  false]),
        ("GET", "/v1/events", "",                                       [true,  false, false, true,  true,  false]),
        ("GET", "/metrics", "",                                         [true,  false, false, true,  true,  true]),
        ("POST", "/v1/apps/shop@staging/services/api/rollout/pause", "",[false, false, true,  true,  true,  false]),
        ("POST", "/v1/apps/shop@production/down", "",                   [false, false, false, true,  true,  false]),
        ("GET", "/v1/apps/shop@staging/secrets", "",                    [false, false, false, false, true,  false]),
        ("GET", "/v1/tokens", "",                                       [false, false, false, false, true,  false]),
        ("POST", "/v1/apps/shop@staging/services/api/runs", "",         [false, false, false, false, true,  false]),
    ];
    for (method, path, body, allowed) in routes {
        for ((who, token), allowed) in tokens.iter().zip(allowed) {
            let (code, answer) = call(&s, method, path, Some(token), body);
            if allowed {
                assert!(
                    code != 401 && code != 403,
                    "{who}: {method} {path} answered {code}: {answer}"
                );
            } else {
                assert_eq!(code, 403, "{who}: {method} {path}: {answer}");
                assert!(answer.contains("is not allowed with token"), "{answer}");
            }
        }
        // Without a token, reads included: 401.
        let (code, answer) = call(&s, method, path, None, body);
        assert_eq!(code, 401, "{method} {path} without a token: {answer}");
    }
    // Text that is no app key names no environment: with a token for every environment the
    // API refuses it with the name rule (404); a token limited to some is refused first (403).
    for (path, why) in [
        ("/v1/apps/Shop@staging", "`Shop` is not a valid app name"),
        (
            "/v1/apps/shop@development/services/api/logs",
            "an app in `development` is keyed by its name alone, `shop`",
        ),
    ] {
        let (code, answer) = call(&s, "GET", path, Some(&viewer), "");
        assert_eq!(code, 404, "{path}: {answer}");
        assert!(answer.contains(why), "{path}: {answer}");
        let (code, answer) = call(&s, "GET", path, Some(&viewer_staging), "");
        assert_eq!(code, 403, "{path}: {answer}");
        assert!(
            answer.contains("names no app in any environment"),
            "{answer}"
        );
    }
    // Open without a token: the page and the liveness endpoint.
    assert_eq!(call(&s, "GET", "/healthz", None, "").0, 200);
    assert_eq!(call(&s, "GET", "/", None, "").0, 200);

    // A token limited to staging lists the staging app only.
    let (code, apps) = call(&s, "GET", "/v1/apps", Some(&viewer_staging), "");
    assert_eq!(code, 200, "{apps}");
    let names: Vec<String> = serde_json::from_str::<serde_json::Value>(&apps)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["shop@staging"], "{apps}");

    // A deployer limited to staging deploys there; the event log names it.
    let (code, progress) = call(
        &s,
        "POST",
        "/v1/apps/shop@staging/deploy",
        Some(&deployer_staging),
        r#"{"force": true}"#,
    );
    assert_eq!(code, 200, "{progress}");
    assert!(
        progress.contains(r#""type":"done","ok":true"#),
        "{progress}"
    );
    let (_, events) = call(&s, "GET", "/v1/events?app=shop@staging", Some(&viewer), "");
    let events: serde_json::Value = serde_json::from_str(&events).unwrap();
    let by = |actor: &str, needle: &str| {
        events.as_array().unwrap().iter().any(|e| {
            e["kind"] == "api.request"
                && e["actor"] == actor
                && e["message"].as_str().unwrap().contains(needle)
        })
    };
    assert!(
        by("ci", "POST /v1/apps/shop@staging/deploy: 200"),
        "{events:#}"
    );
    // The CLI's changes, through the Unix socket, are the local administrator's.
    assert!(
        by("local", "POST /v1/apps/shop@staging/deploy: 200"),
        "{events:#}"
    );
    // Reads are not recorded.
    assert!(
        !events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["message"].as_str().unwrap().starts_with("GET ")),
        "{events:#}"
    );
    let printed = s.ok(&["events", "--app", "shop", "--env", "staging"]);
    assert!(
        printed.lines().any(|l| l.contains("api.request")
            && l.contains("POST /v1/apps/shop@staging/deploy: 200")
            && l.ends_with("(by ci)")),
        "{printed}"
    );

    // The server's own events (tokens made) are in `events --all`, with their actor.
    let printed = s.ok(&["events", "--all", "--limit", "1000"]);
    assert!(
        printed.lines().any(|l| l.contains("token.created")
            && l.contains("(server)")
            && l.contains("token ci created: role deployer, environments staging")),
        "{printed}"
    );
    assert!(
        printed.lines().any(|l| l.contains("api.request")
            && l.contains("POST /v1/tokens: 200")
            && l.ends_with("(by local)")),
        "{printed}"
    );

    // Expired and revoked tokens: 401, saying which.
    let short = create(&s, &["short", "--role", "admin", "--expires", "3s"]);
    assert_eq!(call(&s, "GET", "/v1/server", Some(&short), "").0, 200);
    std::thread::sleep(Duration::from_millis(3500));
    let (code, answer) = call(&s, "GET", "/v1/server", Some(&short), "");
    assert_eq!(code, 401, "{answer}");
    assert!(answer.contains("token short expired at"), "{answer}");
    s.ok(&["token", "revoke", "release"]);
    let (code, answer) = call(&s, "GET", "/v1/server", Some(&deployer), "");
    assert_eq!(code, 401, "{answer}");
    assert!(answer.contains("token release was revoked"), "{answer}");
    let (code, answer) = call(&s, "GET", "/v1/server", Some("slp_nonsense"), "");
    assert_eq!(code, 401, "{answer}");

    // `token list` names the tokens that are not revoked, with their roles and scopes.
    let list = s.ok(&["token", "list"]);
    for line in ["ci ", "ops ", "prometheus ", "qa ", "root ", "short "] {
        assert!(
            list.lines().any(|l| l.trim_start().starts_with(line)),
            "{line}: {list}"
        );
    }
    assert!(
        !list.contains("release"),
        "a revoked token is listed: {list}"
    );
    assert!(
        list.lines()
            .any(|l| l.contains("ci") && l.contains("deployer") && l.contains("staging")),
        "{list}"
    );

    // A user error is one clear message.
    let out = s.cli(&["token", "create", "x", "--role", "root"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`root` is no role"), "{err}");
    let out = s.cli(&["token", "create", "ci", "--role", "viewer"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("a token named ci exists"),
        "{err}"
    );

    // No token value anywhere: not in any file of the data directory (the database, its WAL
    // and everything else), the server's log, the event log, or what the API answers.
    let all = [
        &viewer,
        &viewer_staging,
        &deployer_staging,
        &deployer,
        &admin,
        &metrics,
        &short,
    ];
    let mut answers = String::new();
    for path in [
        "/v1/events?limit=10000",
        "/v1/tokens",
        "/v1/apps",
        "/v1/apps/shop@staging",
        "/v1/apps/shop@staging/services/api/logs?tail=1000",
        "/v1/server",
        "/metrics",
    ] {
        answers.push_str(&call(&s, "GET", path, Some(&admin), "").1);
    }
    answers.push_str(&s.ok(&[
        "events", "--app", "shop", "--env", "staging", "--limit", "10000",
    ]));
    answers.push_str(&s.ok(&["token", "list"]));
    let files = files_under(&s.data);
    assert!(
        files.iter().any(|(p, _)| p.ends_with("state.db-wal")),
        "the store's WAL is not among the files searched: {:?}",
        files.iter().map(|(p, _)| p).collect::<Vec<_>>()
    );
    for token in all {
        // The secret part alone, too: a value cut at its id must not be found either.
        let secret = token.rsplit('_').next().unwrap();
        for needle in [token.as_str(), secret] {
            for (path, bytes) in &files {
                assert!(
                    !contains(bytes, needle.as_bytes()),
                    "a token value is in {}",
                    path.display()
                );
            }
            assert!(
                !s.server_log().contains(needle),
                "a token value is in the server's log"
            );
            assert!(
                !answers.contains(needle),
                "a token value is in an API answer"
            );
        }
    }
    // The refused attempts were logged, without their values.
    let log = s.server_log();
    assert!(log.contains("revoked token release"), "{log}");
    assert!(log.contains("expired token short"), "{log}");

    // Too many refused tokens from one address: 429 for the rest of the minute, even for
    // a valid token.
    let mut limited = None;
    for n in 0..200 {
        let (code, _) = call(&s, "GET", "/v1/server", Some("slp_guess"), "");
        if code == 429 {
            limited = Some(n);
            break;
        }
        assert_eq!(code, 401);
    }
    assert!(limited.is_some(), "200 refused tokens in a row and no 429");
    let (code, answer) = call(&s, "GET", "/v1/server", Some(&admin), "");
    assert_eq!(code, 429, "{answer}");
    assert_eq!(call(&s, "GET", "/healthz", None, "").0, 200);
    // The local administrator is not affected.
    s.ok(&["token", "list"]);
}

/// Every regular file under `dir`, with its bytes.
fn files_under(dir: &Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file()
                && let Ok(bytes) = std::fs::read(entry.path())
            {
                out.push((entry.path(), bytes));
            }
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A data directory from before tokens holds `admin.token` in plain text: the server
/// removes it, and a token from it opens nothing.
#[test]
fn the_plain_text_token_of_an_older_server_is_removed() {
    let old = "ab".repeat(32);
    let s = Slipway::start_prepared(|data| {
        std::fs::create_dir_all(data).unwrap();
        std::fs::set_permissions(data, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(data.join("admin.token"), format!("{old}\n")).unwrap();
    });
    assert!(!s.data.join("admin.token").exists());
    let (code, answer) = call(&s, "GET", "/v1/server", Some(&old), "");
    assert_eq!(code, 401, "{answer}");
    // The data directory, open to others before, is closed to them now.
    let mode = std::fs::metadata(&s.data).unwrap().permissions().mode();
    assert_eq!(mode & 0o007, 0, "mode {mode:o}");
}
