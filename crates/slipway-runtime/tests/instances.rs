//! End-to-end tests of instances with real processes: a small Python HTTP server whose answers
//! are steered through files in its working directory, plus `sh` one-liners. Every test has its
//! own temporary directory and an ephemeral port, so the tests run in parallel; every wait is
//! bounded so a broken runtime fails a test instead of hanging it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use slipway_runtime::{
    Check, Instance, InstanceConfig, InstanceState, Limits, LogLine, Probe, StartError,
    kill_orphan, read_log_lines,
};

/// The upper bound for anything a test waits for.
const LIMIT: Duration = Duration::from_secs(30);

/// Answers `/ready` with the status in the file `ready_status` (200 without it) and exits with
/// status 3 on `/ready` if the file `crash` exists (removing it); answers `/health` with 500 if
/// the file `unhealthy_pid` holds its pid.
const SERVER_PY: &str = r#"
import http.server, os

PORT = int(os.environ["PORT"])

def read(name):
    try:
        with open(name) as f:
            return f.read().strip()
    except FileNotFoundError:
        return ""

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/ready":
            if os.path.exists("crash"):
                os.remove("crash")
                print("crashing on purpose", flush=True)
                os._exit(3)
            code = int(read("ready_status") or 200)
        elif self.path == "/health":
            code = 500 if read("unhealthy_pid") == str(os.getpid()) else 200
        else:
            code = 404
        body = f"{self.path} answered {code}".encode()
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass

server = http.server.HTTPServer(("127.0.0.1", PORT), Handler)
print(f"listening on {PORT} as pid {os.getpid()}", flush=True)
server.serve_forever()
"#;

/// Listens on the port (for a TCP probe) and ignores SIGTERM, saying so.
const STUBBORN_PY: &str = r#"
import os, signal, socket, time

def on_term(*_):
    print("got SIGTERM, ignoring it", flush=True)

signal.signal(signal.SIGTERM, on_term)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(os.environ["PORT"])))
s.listen()
print("listening", flush=True)
while True:
    time.sleep(1)
"#;

struct Fixture {
    dir: tempfile::TempDir,
    port: u16,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("server.py"), SERVER_PY).unwrap();
        std::fs::write(dir.path().join("stubborn.py"), STUBBORN_PY).unwrap();
        Fixture {
            dir,
            port: free_port(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn log(&self) -> PathBuf {
        self.path().join("logs").join("app.log")
    }

    /// Replaces a steering file atomically, so the server never reads half of it.
    fn put(&self, name: &str, content: &str) {
        let tmp = self.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, content).unwrap();
        std::fs::rename(&tmp, self.path().join(name)).unwrap();
    }

    fn remove(&self, name: &str) {
        std::fs::remove_file(self.path().join(name)).unwrap();
    }

    fn config(&self, argv: &[&str]) -> InstanceConfig {
        InstanceConfig {
            id: format!("test-{}", self.port),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec![
                ("PORT".into(), self.port.to_string()),
                ("PYTHONDONTWRITEBYTECODE".into(), "1".into()),
            ],
            workdir: self.path().to_path_buf(),
            port: self.port,
            log_file: self.log(),
            log_max_bytes: 1 << 20,
            log_keep: 2,
            ready: probe(http("/ready"), 2),
            live: None,
            startup_timeout: LIMIT,
            grace: Duration::from_secs(10),
            limits: Limits::default(),
            restart_backoff: (Duration::from_millis(500), Duration::from_secs(2)),
            container: None,
        }
    }

    fn server(&self) -> InstanceConfig {
        self.config(&["python3", "-u", "server.py"])
    }

    fn log_lines(&self, stream: &str) -> Vec<String> {
        read_log_lines(&self.log())
            .into_iter()
            .filter(|l| l.stream == stream)
            .map(|l| l.text)
            .collect()
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn http(path: &str) -> Check {
    Check::Http { path: path.into() }
}

fn probe(check: Check, failures: u32) -> Probe {
    Probe {
        check,
        interval: Duration::from_millis(100),
        timeout: Duration::from_secs(2),
        failures,
    }
}

async fn start(config: InstanceConfig) -> Instance {
    match Instance::start(config).await {
        Ok(instance) => instance,
        Err(err) => panic!("start failed: {err}"),
    }
}

/// Starts a program that was just written: a fork in a parallel test may briefly hold the new
/// file open for writing, which makes exec fail with ETXTBSY, so that error is retried.
async fn start_fresh_file(config: InstanceConfig) -> Result<Instance, StartError> {
    let mut attempts = 0;
    loop {
        match Instance::start(config.clone()).await {
            Err(StartError::Spawn { source, .. })
                if source.raw_os_error() == Some(26) && attempts < 50 =>
            {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            other => return other,
        }
    }
}

async fn ready(instance: &Instance) {
    match tokio::time::timeout(LIMIT, instance.wait_ready()).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => panic!("not ready: {err}"),
        Err(_) => panic!(
            "not ready within {LIMIT:?}: {:?}",
            *instance.state().borrow()
        ),
    }
}

/// Waits for a state matching `pred` and returns it.
async fn reach(
    instance: &Instance,
    what: &str,
    mut pred: impl FnMut(&InstanceState) -> bool,
) -> InstanceState {
    let mut states = instance.state();
    let reached = tokio::time::timeout(LIMIT, async {
        states.wait_for(|s| pred(s)).await.map(|s| s.clone())
    })
    .await;
    match reached {
        Ok(Ok(state)) => state,
        _ => panic!(
            "{} never reached {what}; state {:?}; output {:?}",
            instance.id(),
            *instance.state().borrow(),
            instance.last_lines(20)
        ),
    }
}

/// Whether a process exists and is not a zombie (a reparented zombie may wait for a reaper
/// that never comes in a container, but it is dead).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let after_name = &stat[stat.rfind(')').unwrap() + 1..];
            !matches!(after_name.trim_start().chars().next(), Some('Z' | 'X'))
        }
        Err(_) => false,
    }
}

async fn assert_dies(pid: u32, what: &str) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    while alive(pid) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} (pid {pid}) is still running"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn start_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 1..];
    after_name
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap()
}

/// Reads the pid a shell wrapper wrote for its background grandchild.
async fn grandchild_pid(f: &Fixture) -> u32 {
    let path = f.path().join("grandchild.pid");
    let deadline = tokio::time::Instant::now() + LIMIT;
    loop {
        if let Ok(text) = std::fs::read_to_string(&path)
            && let Ok(pid) = text.trim().parse()
        {
            return pid;
        }
        assert!(tokio::time::Instant::now() < deadline, "no grandchild.pid");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Starts a shell that leaves a `sleep` grandchild in the group, then execs the server.
fn with_grandchild(f: &Fixture) -> InstanceConfig {
    f.config(&[
        "sh",
        "-c",
        "sleep 1000 & echo $! > grandchild.pid; exec python3 -u server.py",
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_server_becomes_ready_and_stops_gracefully() {
    let f = Fixture::new();
    let instance = start(f.server()).await;
    assert_eq!(instance.port(), f.port);
    assert_eq!(instance.id(), format!("test-{}", f.port));
    ready(&instance).await;
    assert_eq!(*instance.state().borrow(), InstanceState::Ready);

    let pid = instance.pid().expect("a running instance has a pid");
    assert!(alive(pid));
    assert_eq!(instance.started_at_ticks(), Some(start_ticks(pid)));
    assert_eq!(instance.restarts(), 0);

    instance.stop().await;
    assert_eq!(*instance.state().borrow(), InstanceState::Stopped);
    assert_eq!(instance.pid(), None);
    assert!(!alive(pid), "stop returns only once the process is gone");
    instance.stop().await; // Idempotent.
    assert_eq!(*instance.state().borrow(), InstanceState::Stopped);

    let stdout = f.log_lines("stdout");
    assert!(
        stdout.contains(&format!("listening on {} as pid {pid}", f.port)),
        "{stdout:?}"
    );
    let events = f.log_lines("slipway");
    assert!(
        events.contains(&format!("pid {pid} killed by signal SIGTERM")),
        "python dies of SIGTERM within the grace period: {events:?}"
    );
    assert!(!events.iter().any(|e| e.contains("SIGKILL")), "{events:?}");
    for line in read_log_lines(&f.log()) {
        line.ts.parse::<jiff::Timestamp>().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_errors_name_the_program_and_directory() {
    let f = Fixture::new();
    let workdir = f.path().display().to_string();

    let err = Instance::start(f.config(&["no-such-program-xyz", "--flag"]))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, StartError::ProgramNotFound { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("`no-such-program-xyz` not found"), "{msg}");
    assert!(msg.contains("searched PATH="), "{msg}");
    assert!(msg.contains(&workdir), "{msg}");
    assert!(msg.contains("./no-such-program-xyz"), "{msg}");

    let err = Instance::start(f.config(&["./missing.sh"]))
        .await
        .err()
        .unwrap();
    assert!(
        err.to_string()
            .contains(&format!("no file at {workdir}/./missing.sh")),
        "{err}"
    );

    std::fs::write(f.path().join("plain.sh"), "#!/bin/sh\n").unwrap();
    let err = Instance::start(f.config(&["./plain.sh"]))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, StartError::NotExecutable { .. }), "{err:?}");
    assert!(err.to_string().contains("chmod +x"), "{err}");

    let script = f.path().join("bad-shebang");
    std::fs::write(&script, "#!/no/such/interpreter\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let err = start_fresh_file(f.config(&["./bad-shebang"]))
        .await
        .err()
        .unwrap();
    assert!(matches!(err, StartError::Spawn { .. }), "{err:?}");
    assert!(err.to_string().contains("#! line"), "{err}");

    let mut config = f.server();
    config.workdir = f.path().join("nope");
    let err = Instance::start(config).await.err().unwrap();
    assert!(matches!(err, StartError::BadWorkdir { .. }), "{err:?}");
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert!(err.to_string().contains("nope"), "{err}");

    let mut config = f.server();
    config.log_file = f.path().join("server.py").join("app.log");
    let err = Instance::start(config).await.err().unwrap();
    assert!(matches!(err, StartError::LogFile { .. }), "{err:?}");

    let err = Instance::start(f.config(&[])).await.err().unwrap();
    assert!(matches!(err, StartError::EmptyCommand { .. }), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relative_program_path_is_resolved_against_the_workdir() {
    let f = Fixture::new();
    let script = f.path().join("bin").join("serve");
    std::fs::create_dir(f.path().join("bin")).unwrap();
    std::fs::write(&script, "#!/bin/sh\nexec python3 -u server.py\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let instance = start_fresh_file(f.config(&["bin/serve"])).await.unwrap();
    ready(&instance).await;
    instance.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exiting_before_ready_fails_with_the_output() {
    let f = Fixture::new();
    let instance = start(f.config(&[
        "sh",
        "-c",
        "echo starting; echo 'fatal: config.toml missing' >&2; exit 3",
    ]))
    .await;
    let err = tokio::time::timeout(LIMIT, instance.wait_ready())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.reason, "exited with status 3 before becoming ready");
    assert!(
        err.last_lines
            .contains(&"fatal: config.toml missing".to_string()),
        "{err:?}"
    );
    assert!(err.to_string().contains("fatal: config.toml missing"));
    assert_eq!(
        *instance.state().borrow(),
        InstanceState::Failed {
            reason: err.reason.clone()
        }
    );
    // No restart on the first start.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(instance.restarts(), 0);
    assert!(matches!(
        *instance.state().borrow(),
        InstanceState::Failed { .. }
    ));
    assert_eq!(f.log_lines("stderr"), ["fatal: config.toml missing"]);
    instance.stop().await;
    assert_eq!(*instance.state().borrow(), InstanceState::Stopped);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_death_before_ready_names_the_signal() {
    let f = Fixture::new();
    let instance = start(f.config(&["sh", "-c", "kill -9 $$"])).await;
    let err = instance.wait_ready().await.unwrap_err();
    assert_eq!(err.reason, "killed by signal SIGKILL before becoming ready");
}

/// Answers every request on the fixture's port with 503, standing in for an app that never
/// becomes ready (a test-owned listener, so the probe result does not depend on timing).
async fn always_503(port: u16) -> tokio::task::JoinHandle<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = conn.read(&mut buf).await;
                let _ = conn
                    .write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")
                    .await;
            });
        }
    })
}

/// Like gunicorn with a wrong app name: the cause first, then a long traceback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cause_printed_long_before_the_end_is_kept() {
    let f = Fixture::new();
    let config = f.config(&[
        "sh",
        "-c",
        "echo '[INFO] Booting worker'; echo \"Failed to find attribute 'app' in 'mysite.wsgi'.\"; \
         i=0; while [ $i -lt 40 ]; do echo \"  File arbiter.py, line $i\"; i=$((i+1)); done; \
         echo 'gunicorn.errors.HaltServer: App failed to load.'; exit 4",
    ]);
    let log_file = config.log_file.clone();
    let instance = start(config).await;
    let err = tokio::time::timeout(LIMIT, instance.wait_ready())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.reason, "exited with status 4 before becoming ready");
    // All on stdout: lines of stdout and stderr are read by two tasks, in either order.
    assert_eq!(
        err.last_lines[..2],
        [
            "Failed to find attribute 'app' in 'mysite.wsgi'.",
            "… (21 lines not shown)"
        ],
        "{err}"
    );
    assert_eq!(err.last_lines.len(), 2 + 20, "{err}");
    assert!(
        err.last_lines
            .contains(&"gunicorn.errors.HaltServer: App failed to load.".to_string()),
        "{err}"
    );
    assert_eq!(err.log_file, log_file);
    // 43 output lines and at least the `spawned` and `exited` events.
    assert!(err.log_lines >= 45, "{}", err.log_lines);
    instance.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_ready_fails_after_the_startup_timeout_and_is_killed() {
    let f = Fixture::new();
    let server = always_503(f.port).await;
    let mut config = f.config(&[
        "sh",
        "-c",
        "sleep 1000 & echo $! > grandchild.pid; exec sleep 1000",
    ]);
    config.startup_timeout = Duration::from_secs(1);
    let instance = start(config).await;
    let pid = instance.pid().unwrap();
    let err = tokio::time::timeout(LIMIT, instance.wait_ready())
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(
        err.reason,
        format!(
            "not ready after 1s: last probe: GET http://127.0.0.1:{}/ready -> 503 Service Unavailable",
            f.port
        )
    );
    assert_dies(pid, "the never-ready process").await;
    // The shell normally forks its grandchild long before the timeout; if it did, it died too.
    if let Ok(text) = std::fs::read_to_string(f.path().join("grandchild.pid")) {
        assert_dies(text.trim().parse().unwrap(), "its grandchild").await;
    }
    assert_eq!(instance.pid(), None);
    instance.stop().await;
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_probe_that_never_connects_reports_connection_refused() {
    let f = Fixture::new();
    let mut config = f.config(&["sleep", "1000"]);
    config.ready = probe(Check::Tcp, 1);
    config.startup_timeout = Duration::from_millis(500);
    let instance = start(config).await;
    let pid = instance.pid().unwrap();
    let err = instance.wait_ready().await.unwrap_err();
    assert_eq!(
        err.reason,
        format!(
            "not ready after 500ms: last probe: TCP connect to 127.0.0.1:{0}: connection refused \
             (nothing listens on port {0}, the port passed in PORT; does the app listen on $PORT?)",
            f.port
        )
    );
    assert_dies(pid, "sleep").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_ready_backs_off_and_restarts() {
    let f = Fixture::new();
    let instance = start(with_grandchild(&f)).await;
    ready(&instance).await;
    let first_pid = instance.pid().unwrap();
    let first_grandchild = grandchild_pid(&f).await;
    f.remove("grandchild.pid");

    f.put("crash", "");
    let backoff = reach(&instance, "Backoff", |s| {
        matches!(s, InstanceState::Backoff { .. })
    })
    .await;
    assert_eq!(
        backoff,
        InstanceState::Backoff {
            reason: "exited with status 3".into(),
            restarts: 1,
            retry_in: Duration::from_millis(500),
        }
    );
    assert_dies(first_grandchild, "the crashed instance's grandchild").await;

    reach(&instance, "Ready again", |s| *s == InstanceState::Ready).await;
    assert_eq!(instance.restarts(), 1);
    let second_pid = instance.pid().unwrap();
    assert_ne!(first_pid, second_pid);
    assert!(
        instance
            .last_lines(200)
            .contains(&"crashing on purpose".to_string())
    );
    let events = f.log_lines("slipway");
    assert!(
        events.contains(&"restart 1 in 500ms: exited with status 3".to_string()),
        "{events:?}"
    );

    let second_grandchild = grandchild_pid(&f).await;
    instance.stop().await;
    assert!(!alive(second_pid));
    assert_dies(second_grandchild, "the grandchild").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_liveness_probe_restarts_the_instance() {
    let f = Fixture::new();
    let mut config = f.server();
    config.live = Some(probe(http("/health"), 3));
    let instance = start(config).await;
    ready(&instance).await;
    let first_pid = instance.pid().unwrap();

    f.put("unhealthy_pid", &first_pid.to_string());
    let backoff = reach(&instance, "Backoff", |s| {
        matches!(s, InstanceState::Backoff { .. })
    })
    .await;
    let InstanceState::Backoff {
        reason, restarts, ..
    } = backoff
    else {
        unreachable!()
    };
    assert_eq!(
        reason,
        format!(
            "liveness probe failed 3 times: GET http://127.0.0.1:{}/health -> 500 Internal Server Error: /health answered 500",
            f.port
        )
    );
    assert_eq!(restarts, 1);
    assert_dies(first_pid, "the unhealthy process").await;

    reach(&instance, "Ready again", |s| *s == InstanceState::Ready).await;
    assert_eq!(instance.restarts(), 1);
    assert_ne!(instance.pid(), Some(first_pid));
    instance.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_readiness_flap_goes_unready_and_back_without_a_restart() {
    let f = Fixture::new();
    let instance = start(f.server()).await;
    ready(&instance).await;
    let pid = instance.pid().unwrap();

    f.put("ready_status", "503");
    let unready = reach(&instance, "Unready", |s| {
        matches!(s, InstanceState::Unready { .. })
    })
    .await;
    assert_eq!(
        unready,
        InstanceState::Unready {
            reason: format!(
                "readiness probe failed 2 times: GET http://127.0.0.1:{}/ready -> 503 Service Unavailable: /ready answered 503",
                f.port
            )
        }
    );

    f.remove("ready_status");
    reach(&instance, "Ready again", |s| *s == InstanceState::Ready).await;
    assert_eq!(instance.pid(), Some(pid));
    assert_eq!(instance.restarts(), 0);
    instance.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_sends_sigterm_and_kills_after_the_grace_period() {
    let f = Fixture::new();
    let mut config = f.config(&["python3", "-u", "stubborn.py"]);
    config.ready = probe(Check::Tcp, 1);
    config.grace = Duration::from_secs(2);
    let instance = start(config).await;
    ready(&instance).await;
    let pid = instance.pid().unwrap();

    let mut states = instance.state();
    let stopping = tokio::spawn(async move {
        states
            .wait_for(|s| *s == InstanceState::Stopping)
            .await
            .is_ok()
    });
    tokio::time::timeout(LIMIT, instance.stop()).await.unwrap();
    assert!(stopping.await.unwrap(), "Stopping comes before Stopped");
    assert_eq!(*instance.state().borrow(), InstanceState::Stopped);
    assert!(!alive(pid));
    assert!(
        instance
            .last_lines(10)
            .contains(&"got SIGTERM, ignoring it".to_string()),
        "{:?}",
        instance.last_lines(10)
    );
    let events = f.log_lines("slipway");
    assert!(
        events.contains(&format!("pid {pid} killed by signal SIGKILL")),
        "{events:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_last_handle_kills_the_whole_group() {
    let f = Fixture::new();
    let instance = start(with_grandchild(&f)).await;
    ready(&instance).await;
    let pid = instance.pid().unwrap();
    let grandchild = grandchild_pid(&f).await;
    assert!(alive(grandchild));

    let clone = instance.clone();
    drop(instance);
    assert!(alive(pid), "a remaining clone keeps the instance running");
    drop(clone);
    assert_dies(pid, "the server").await;
    assert_dies(grandchild, "the grandchild").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_orphan_needs_the_right_start_time() {
    let f = Fixture::new();
    let instance = start(with_grandchild(&f)).await;
    ready(&instance).await;
    let pid = instance.pid().unwrap();
    let ticks = instance.started_at_ticks().unwrap();
    let grandchild = grandchild_pid(&f).await;

    assert!(!kill_orphan(pid, ticks + 1));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(alive(pid) && alive(grandchild));

    assert!(kill_orphan(pid, ticks));
    assert_dies(pid, "the orphan").await;
    assert_dies(grandchild, "the orphan's grandchild").await;
    instance.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_logged_with_timestamps_and_rotated() {
    let f = Fixture::new();
    let mut config = f.config(&[
        "python3",
        "-c",
        "import sys, time\n\
         for i in range(400): print(f'line {i}')\n\
         sys.stdout.flush()\n\
         time.sleep(0.3)\n\
         sys.stderr.write('no newline at the end')\n\
         sys.exit(1)",
    ]);
    config.log_max_bytes = 4096;
    config.log_keep = 2;
    let instance = start(config).await;
    let err = instance.wait_ready().await.unwrap_err();
    assert_eq!(err.reason, "exited with status 1 before becoming ready");

    let log = f.log();
    let rotated = |n: usize| PathBuf::from(format!("{}.{n}", log.display()));
    assert!(log.exists() && rotated(1).exists() && rotated(2).exists());
    assert!(!rotated(3).exists(), "only log_keep rotated files are kept");
    for path in [log.clone(), rotated(1), rotated(2)] {
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size <= 4096, "{} is {size} bytes", path.display());
    }

    let lines = read_log_lines(&log);
    for LogLine { ts, stream, .. } in &lines {
        let parsed: jiff::Timestamp = ts.parse().unwrap();
        assert!(ts.ends_with('Z') && ts.len() == 24, "{ts}");
        assert!(parsed <= jiff::Timestamp::now());
        assert!(["stdout", "stderr", "slipway"].contains(&stream.as_str()));
    }
    let numbers: Vec<u32> = f
        .log_lines("stdout")
        .iter()
        .map(|t| t.strip_prefix("line ").unwrap().parse().unwrap())
        .collect();
    assert!(numbers.len() > 20, "{numbers:?}");
    assert_eq!(numbers.last(), Some(&399));
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "oldest first, no gaps: {numbers:?}"
    );
    assert_eq!(f.log_lines("stderr"), ["no newline at the end"]);
    // stdout and stderr are read apart: the pause above lets every stdout line be recorded
    // first, or up to 200 of them could come after the stderr line and push it out of the ring.
    assert!(
        instance
            .last_lines(200)
            .contains(&"no newline at the end".to_string()),
        "the partial last line reaches the ring"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn very_long_lines_are_split() {
    let f = Fixture::new();
    let instance = start(f.config(&[
        "python3",
        "-c",
        "import sys; sys.stderr.write('x' * 40000 + '\\nafter\\n')",
    ]))
    .await;
    instance.wait_ready().await.unwrap_err();
    let stderr = f.log_lines("stderr");
    let lengths: Vec<usize> = stderr.iter().map(String::len).collect();
    assert_eq!(lengths, [16384, 16384, 7232, 5], "{lengths:?}");
    assert!(stderr[..3].iter().all(|l| l.bytes().all(|b| b == b'x')));
    assert_eq!(stderr[3], "after");
}
