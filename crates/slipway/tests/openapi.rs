//! The API as OpenAPI tools see it. The test runs the real server, fetches `/v1/openapi.json`
//! from its admin listener, checks the document with `openapi-spec-validator`, then lets
//! Schemathesis call every operation with generated requests (`--checks all`, with an admin
//! token made by `slipway token create`; its `ignored_auth` check also sends each operation
//! without a token and with a wrong one, which must be refused): every answer must be one the document declares, with the declared content type
//! and body, and none may be a 5xx.
//!
//! Both tools come from PyPI, pinned in `tests/openapi/requirements.txt`, and are installed by
//! the test itself into a venv under the target directory (`support::venv`).
//!
//! What Schemathesis may do here: it calls every operation, changing ones included (apply,
//! deploy, secrets, traffic, down…), with generated names and bodies. The server runs on a
//! fresh temporary data dir with no app registered, listens on loopback only, and has no
//! master key but the one it makes in that data dir (`SLIPWAY_MASTER_KEY_FILE` is removed from
//! its environment). Schemathesis is given the document as a file and the loopback URL of the
//! admin listener as its base, and nothing else (the document names no servers, and proxies
//! are switched off), so no request leaves the machine. `apply` only reads the absolute file path it is given, and refuses anything that
//! is not a valid spec.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// Test cases per operation and phase: enough to find each undeclared status and content
/// type, few enough that the run stays within about a minute on two cores.
const MAX_EXAMPLES: &str = "20";
/// A fixed seed, so a failure reproduces with the same requests.
const SEED: &str = "15";
/// A backstop for a run that hangs; a normal run takes well under a minute.
const RUN_LIMIT: Duration = Duration::from_secs(600);

#[test]
fn the_api_document_validates_and_the_server_answers_as_it_says() {
    let tools = support::venv::venv(
        "openapi",
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openapi/requirements.txt"),
    );
    let s = Slipway::start();
    let token = s
        .ok(&["token", "create", "openapi-run", "--role", "admin"])
        .trim()
        .to_owned();
    let bearer = format!("Bearer {token}");

    // 1. The document, as served, is valid OpenAPI; like every `/v1` call on the admin
    // listener, it needs a token.
    let (code, _) = http_get(s.admin, "127.0.0.1", "/v1/openapi.json").unwrap();
    assert_eq!(code, 401, "the document is served without a token");
    let (code, document) = http_request_with(
        s.admin,
        "GET",
        "127.0.0.1",
        "/v1/openapi.json",
        "",
        Some(&bearer),
    )
    .unwrap();
    assert_eq!(
        code, 200,
        "GET /v1/openapi.json answered {code}: {document}"
    );
    let file = s.dir.path().join("openapi.json");
    std::fs::write(&file, &document).unwrap();
    let out = tool(&tools, "openapi-spec-validator", s.dir.path())
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openapi-spec-validator rejects /v1/openapi.json ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // 2. The server answers every generated request as the document says.
    let url = format!("http://{}", s.admin);
    let log = s.dir.path().join("schemathesis.log");
    let started = Instant::now();
    let mut run = tool(&tools, "st", s.dir.path());
    run.arg("run")
        .arg(&file)
        .args(["--url", &url, "--checks", "all"])
        .args(["--header", &format!("Authorization: {bearer}")])
        .args(["--max-examples", MAX_EXAMPLES, "--seed", SEED])
        .args(["--generation-database", "none", "--no-color"])
        .args(["--request-timeout", "10"])
        // Stops the server, which would end the run; `slipway server stop` is tested elsewhere.
        .args(["--exclude-path", "/v1/server/stop"])
        // Follows the event log for as long as the client stays: an answer that never ends by
        // design, which Schemathesis would wait for until its request timeout and report.
        .args(["--exclude-path", "/v1/events/stream"])
        // Revokes tokens by name, and names come back from `GET /v1/tokens`: the run would
        // revoke its own token and be refused from then on. `tests/access.rs` revokes.
        .args(["--exclude-path", "/v1/tokens/{name}"])
        .stdout(Stdio::from(std::fs::File::create(&log).unwrap()))
        .stderr(Stdio::from(
            std::fs::OpenOptions::new().append(true).open(&log).unwrap(),
        ));
    let mut child = run.spawn().expect("cannot start schemathesis");
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "schemathesis did not finish within {RUN_LIMIT:?}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    eprintln!(
        "schemathesis took {:.1} s:\n{output}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        status.success(),
        "schemathesis found answers that /v1/openapi.json does not declare ({status}):\n{output}\nserver log:\n{}",
        s.server_log()
    );
    assert!(
        !s.server_log().contains("panicked"),
        "the server panicked:\n{}",
        s.server_log()
    );
}

/// A command that runs one of the venv's scripts in `cwd` (where Schemathesis and Hypothesis
/// write their files), with every proxy setting removed so requests go straight to loopback.
fn tool(venv: &Path, name: &str, cwd: &Path) -> Command {
    let mut command = Command::new(PathBuf::from(venv).join("bin").join(name));
    command.current_dir(cwd).env("NO_PROXY", "*");
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        command.env_remove(var);
    }
    command
}
