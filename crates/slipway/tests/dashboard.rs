//! The web dashboard, tested as a person would use it. The test runs the real server with
//! the bundled example app and drives the page in headless Chromium (playwright-core,
//! `tests/browser/dashboard.mjs`). The page must show live figures under load and roll a
//! service back with a click, signed in with a deployer's token. The test also checks what
//! the admin listener serves without a token (the page and `/healthz`, nothing of the API).
//!
//! It needs Chromium (`apt-get install -y chromium`) and the script's node packages
//! (`npm ci --prefix crates/slipway/tests/browser`); `./run-tests` installs both. Without them
//! the test fails and names the command to run; it never skips silently.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

const BROWSER_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/browser");
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/clinic");
/// The browser script ends itself after 240 s; this is the backstop above that.
const SCRIPT_LIMIT: Duration = Duration::from_secs(300);

#[test]
fn dashboard_shows_live_figures_and_rolls_back_in_a_real_browser() {
    let chromium = require_browser_tools();
    let s = Slipway::start();
    s.ok(&["up", EXAMPLE, "--detach"]);
    // Revision 2 of api, so that the dashboard has something to roll back to.
    s.ok(&["deploy", "--force", "api", "-f", EXAMPLE]);

    let token = s.ok(&["token", "create", "dashboard", "--role", "deployer"]);
    let token = token.trim().to_owned();
    check_admin_listener(&s, &token);

    let artifacts = artifact_dir();
    let log = artifacts.join("browser.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut child = Command::new("node")
        .arg(Path::new(BROWSER_DIR).join("dashboard.mjs"))
        .arg(format!("http://{}", s.admin))
        .arg(&token)
        .arg(format!("http://{}", s.router))
        .arg(&artifacts)
        .env("SLIPWAY_CHROMIUM", &chromium)
        .current_dir(BROWSER_DIR)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .expect("cannot run node");
    let deadline = Instant::now() + SCRIPT_LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        status.is_some_and(|s| s.success()),
        "the browser test failed ({status:?}; screenshots in {}):\n{output}\nserver log:\n{}",
        artifacts.display(),
        s.server_log()
    );
    for shot in ["1-overview.png", "2-under-load.png", "3-rolled-back.png"] {
        let size = std::fs::metadata(artifacts.join(shot)).map_or(0, |m| m.len());
        assert!(size > 10_000, "{shot} is missing or empty ({size} bytes)");
    }
    // The browser's rollback really happened on the server, not only on the page.
    let status = s.status("clinic");
    let api = status["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|svc| svc["name"] == "api")
        .unwrap();
    assert_eq!(
        api["traffic"],
        serde_json::json!([{ "revision": 1, "percent": 100 }]),
        "{status:#}"
    );
}

/// Fails, naming the install command, unless Chromium, node and playwright-core are there.
/// Returns Chromium's path.
fn require_browser_tools() -> PathBuf {
    let chromium =
        PathBuf::from(std::env::var("SLIPWAY_CHROMIUM").unwrap_or("/usr/bin/chromium".into()));
    assert!(
        chromium.is_file(),
        "the dashboard test needs Chromium at {}\n  hint: install it with `apt-get install -y chromium` (run `apt-get update` first if that fails), or set SLIPWAY_CHROMIUM to a Chromium binary; ./run-tests does this",
        chromium.display()
    );
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "the dashboard test needs node on the PATH\n  hint: `apt-get install -y nodejs`"
    );
    assert!(
        Path::new(BROWSER_DIR)
            .join("node_modules/playwright-core/package.json")
            .is_file(),
        "the dashboard test needs playwright-core in {BROWSER_DIR}/node_modules\n  hint: run `npm ci --prefix crates/slipway/tests/browser` from the repository root; ./run-tests does this"
    );
    chromium
}

/// Without a token the admin listener serves the page and `/healthz` and refuses the API,
/// reads included; a wrong token is refused too; the deployer's token reaches the API.
/// No token file is left in the data directory, and the printed dashboard URL has none.
fn check_admin_listener(s: &Slipway, token: &str) {
    assert!(
        !s.data.join("admin.token").exists(),
        "a token file in the data directory"
    );
    let log = s.server_log();
    assert!(
        log.contains(&format!("dashboard http://{}/", s.admin)) && !log.contains("#token="),
        "{log}"
    );
    let rollback = "/v1/apps/clinic/services/api/rollback";
    let (code, body) = request(s.admin, "POST", rollback, None, "{}");
    assert_eq!(code, 401, "{body}");
    assert!(
        body.contains("Authorization: Bearer <token>") && body.contains("slipway token create"),
        "{body}"
    );
    let (code, body) = request(s.admin, "POST", rollback, Some("Bearer 0123"), "{}");
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("not valid on this server"), "{body}");
    let (code, body) = request(s.admin, "GET", "/v1/apps/clinic", None, "");
    assert_eq!(code, 401, "{body}");
    let (code, body) = request(s.admin, "GET", "/", None, "");
    assert!(
        code == 200 && body.contains("<title>Slipway</title>"),
        "{body}"
    );
    assert_eq!(request(s.admin, "GET", "/healthz", None, "").0, 200);
    // The API answers the token: an unknown service is its own 404, not a 401 or 403.
    let bearer = format!("Bearer {token}");
    let (code, body) = request(
        s.admin,
        "POST",
        "/v1/apps/clinic/services/nope/rollback",
        Some(&bearer),
        "{}",
    );
    assert!(code != 401 && code != 403, "{code} {body}");
}

/// One HTTP/1.1 request with `Connection: close`; returns the status and the raw body.
fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("bad answer to {method} {path}: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (code, body)
}

/// `target/test-artifacts/dashboard`, emptied. The test binary runs from
/// `target/debug/deps`, three levels below `target`.
fn artifact_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe
        .ancestors()
        .nth(3)
        .map_or_else(|| PathBuf::from("target"), Path::to_path_buf);
    let dir = target.join("test-artifacts").join("dashboard");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
