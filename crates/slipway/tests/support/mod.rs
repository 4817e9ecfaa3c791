//! Test harness: runs the real `slipway` binary on a temporary data dir with ephemeral
//! ports, writes small real apps to disk, and talks HTTP to the router.

#![allow(dead_code)]

pub mod django;
pub mod docker;
pub mod venv;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_slipway");

/// A Python app: answers `<VERSION> <instance>` on every path, `/ready` when ready.
/// `READY_DELAY` (seconds) delays readiness; `CRASH` makes it exit at once.
/// `READY_FLAP` (seconds) makes `/ready` alternate between 200 and 503 every that many seconds
/// (only in the instance that creates the file `READY_FLAP_ONE` first, when that is set).
pub const PY_APP: &str = r#"
import os, random, sys, time, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
if os.environ.get("CRASH"):
    print("boom: DATABASE_URL is not set", file=sys.stderr, flush=True)
    sys.exit(3)
if os.environ.get("CRASH_AFTER"):
    def crash():
        print("fatal: lost the database connection", flush=True)
        os._exit(4)
    threading.Timer(float(os.environ["CRASH_AFTER"]), crash).start()
ready_at = time.time() + float(os.environ.get("READY_DELAY", "0"))
version = os.environ.get("VERSION", "v0")
if os.path.exists("version.txt"):
    with open("version.txt") as f:
        version = f.read().strip()
lock = threading.Lock()
current = 0
most = 0
flap = float(os.environ.get("READY_FLAP", "0"))
if flap and os.environ.get("READY_FLAP_ONE"):
    try:
        os.close(os.open(os.environ["READY_FLAP_ONE"], os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        flap = 0
flap_from = time.time()
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; without this, Nagle and delayed ACKs add 40 ms.
    disable_nagle_algorithm = True
    def do_GET(self):
        if self.path == "/ready" and flap and int((time.time() - flap_from) / flap) % 2 == 1:
            self.send_response(503)
            self.send_header("content-length", "7")
            self.end_headers()
            self.wfile.write(b"flapped")
            return
        if self.path == "/ready" and time.time() < ready_at:
            body, code = b"warming up", 503
        elif self.path != "/ready" and random.random() < float(os.environ.get("FAIL_RATE", "0")):
            body, code = f"{version} failed".encode(), 500
        else:
            body, code = f"{version} {os.environ.get('SLIPWAY_INSTANCE')}".encode(), 200
        if self.path.startswith("/stream"):
            # A server-sent-events style answer: 10 chunks, 100 ms apart.
            self.send_response(200)
            self.send_header("content-type", "text/event-stream")
            self.send_header("transfer-encoding", "chunked")
            self.end_headers()
            for i in range(10):
                chunk = f"data: {version} {i}\n\n".encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
                time.sleep(0.1)
            self.wfile.write(b"0\r\n\r\n")
            return
        if self.path != "/ready" and os.environ.get("DELAY_MS"):
            time.sleep(float(os.environ["DELAY_MS"]) / 1000)
        if self.path.startswith("/status/"):
            code = int(self.path.split("/")[2])
            body = f"{version} answered {code}".encode()
        if self.path.startswith("/track"):
            # Measures this instance's own concurrency: answers the most it has seen.
            global current, most
            with lock:
                current += 1
                most = max(most, current)
            time.sleep(float(self.path.split("/")[2]) if self.path.count("/") > 1 else 0.05)
            with lock:
                current -= 1
            body = f"{version} {os.environ.get('SLIPWAY_INSTANCE')} max={most}".encode()
        if self.path.startswith("/slow"):
            time.sleep(0.5)
        self.send_response(code)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
# The default listen backlog of 5 drops connections under bursts; real servers use more.
ThreadingHTTPServer.request_queue_size = 1024
s = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H)
s.daemon_threads = True
print(f"app {version} listening on {os.environ['PORT']}", flush=True)
s.serve_forever()
"#;

pub struct Slipway {
    pub dir: tempfile::TempDir,
    pub data: PathBuf,
    pub router: SocketAddr,
    pub admin: SocketAddr,
    server: Option<Child>,
    /// Flags given to every start of the server.
    server_args: Vec<String>,
    /// Environment variables given to every start of the server from now on.
    pub server_env: Vec<(String, String)>,
    /// A `metrics` token, made at the first scrape.
    scrape_token: std::sync::OnceLock<String>,
    /// A `viewer` token for reads on the admin listener, made on first use.
    viewer_token: std::sync::OnceLock<String>,
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Slipway {
    /// `GET /metrics` from the admin listener with a `metrics` token (made on first use).
    pub fn metrics(&self) -> Result<(u16, String), String> {
        let token = self.scrape_token.get_or_init(|| {
            self.ok(&["token", "create", "scrape", "--role", "metrics"])
                .trim()
                .to_owned()
        });
        http_request_with(
            self.admin,
            "GET",
            "localhost",
            "/metrics",
            "",
            Some(&format!("Bearer {token}")),
        )
    }

    /// `GET path` from the admin listener with a `viewer` token (made on first use).
    pub fn read(&self, path: &str) -> Result<(u16, String), String> {
        let token = self.viewer_token.get_or_init(|| {
            self.ok(&["token", "create", "reader", "--role", "viewer"])
                .trim()
                .to_owned()
        });
        http_request_with(
            self.admin,
            "GET",
            "localhost",
            path,
            "",
            Some(&format!("Bearer {token}")),
        )
    }

    /// Starts a server on a fresh data dir.
    pub fn start() -> Slipway {
        Slipway::start_with(&[])
    }

    /// Starts a server on a data dir that `prepare` fills first (it gets the path, which
    /// does not exist yet).
    pub fn start_prepared(prepare: impl FnOnce(&std::path::Path)) -> Slipway {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        prepare(&data);
        let mut s = Slipway {
            data,
            router: SocketAddr::from(([127, 0, 0, 1], free_port())),
            admin: SocketAddr::from(([127, 0, 0, 1], free_port())),
            dir,
            server: None,
            server_args: Vec::new(),
            server_env: Vec::new(),
            scrape_token: std::sync::OnceLock::new(),
            viewer_token: std::sync::OnceLock::new(),
        };
        s.start_server();
        s
    }

    /// Starts a server on a fresh data dir with extra `slipway server` flags.
    pub fn start_with(server_args: &[&str]) -> Slipway {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut s = Slipway {
            data,
            router: SocketAddr::from(([127, 0, 0, 1], free_port())),
            admin: SocketAddr::from(([127, 0, 0, 1], free_port())),
            dir,
            server: None,
            server_args: server_args.iter().map(|a| a.to_string()).collect(),
            server_env: Vec::new(),
            scrape_token: std::sync::OnceLock::new(),
            viewer_token: std::sync::OnceLock::new(),
        };
        // A port that was free a moment ago may be taken meanwhile (by the local end of a
        // connection another test opened): the first start tries other ports then.
        for attempt in 1.. {
            match s.try_start_server() {
                Ok(()) => break,
                Err(log) if attempt < 5 && log.contains("the address is in use") => {
                    s.router = SocketAddr::from(([127, 0, 0, 1], free_port()));
                    s.admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
                }
                Err(log) => panic!("server did not start: {log}"),
            }
        }
        s
    }

    /// Starts a server on a fresh data dir with extra environment variables.
    pub fn start_with_env(env: &[(&str, &str)]) -> Slipway {
        let mut s = Slipway::start_with(&[]);
        s.kill9();
        s.server_env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        s.start_server();
        s
    }

    pub fn start_server(&mut self) {
        if let Err(log) = self.try_start_server() {
            panic!("server did not start: {log}");
        }
    }

    /// Starts the server and waits until it answers; on failure (it exited, or did not answer
    /// within 20 s) returns its log.
    pub fn try_start_server(&mut self) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .unwrap();
        let child = Command::new(BIN)
            .args(["server", "--listen", &self.router.to_string()])
            .args(["--admin", &self.admin.to_string()])
            // One extra server flag for the whole suite, e.g. `--no-fast-path` to run every
            // test against the router's hyper path.
            .args(std::env::var("SLIPWAY_TEST_SERVER_ARG").ok())
            .args(&self.server_args)
            .arg("--data-dir")
            .arg(&self.data)
            // A test server keeps its master key in its own temporary data dir, never in a
            // file named by the environment the tests run in.
            .env_remove("SLIPWAY_MASTER_KEY_FILE")
            .envs(self.server_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.server = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        // Both listeners are bound before the server recovers its state, so once they
        // accept, requests queue until it serves them.
        while TcpStream::connect(self.router).is_err() || !self.api_answers() {
            let exited = self
                .server
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                self.server = None;
                return Err(format!("it exited ({status}):\n{}", self.server_log()));
            }
            if Instant::now() > deadline {
                return Err(format!("no answer within 20 s:\n{}", self.server_log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Whether the API answers on the socket: the status of an app (registered or not),
    /// not "no server", nor a connection cut by a server that is dying.
    fn api_answers(&self) -> bool {
        let out = self.cli(&["status", "--json", "--app", "probe"]);
        out.status.success() || String::from_utf8_lossy(&out.stderr).contains("no app named")
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// `kill -9` the server.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.server.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `kill -9` to the server and starts a new one at once, before the killed one is
    /// reaped (as a shell's `kill -9 $pid; slipway server` does); returns the new server's
    /// start, then reaps the old one.
    pub fn kill9_and_restart_at_once(&mut self) -> Result<(), String> {
        let old = self.server.take();
        if let Some(c) = &old {
            // SAFETY: kill(2) on our own child, which is not reaped yet (its pid is not reused).
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGKILL);
            }
        }
        let started = self.try_start_server();
        if let Some(mut c) = old {
            let _ = c.wait();
        }
        started
    }

    pub fn server_pid(&self) -> Option<u32> {
        self.server.as_ref().map(|c| c.id())
    }

    /// The CLI with `args` against this server (cwd: the temp dir). It never starts a server
    /// of its own: tests kill and restart this one, and a command that ran meanwhile must not
    /// take the data directory.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .env("SLIPWAY_HOME", &self.data)
            .env("SLIPWAY_NO_AUTOSTART", "1")
            .current_dir(self.dir.path());
        command
    }

    /// Runs the CLI against this server (cwd: the temp dir).
    pub fn cli(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs the CLI and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "slipway {args:?} failed ({}):\nstdout:\n{}\nstderr:\n{}\nserver log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.server_log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs the CLI with `input` on its stdin.
    pub fn cli_with_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    pub fn status(&self, app: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["status", "--json", "--app", app])).unwrap()
    }

    /// Writes an app directory with the Python test app and a spec, returns its path.
    pub fn write_app(&self, name: &str, spec: &str) -> PathBuf {
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("app.py"), PY_APP).unwrap();
        std::fs::write(dir.join("slipway.yaml"), spec).unwrap();
        dir
    }

    /// One GET through the router with the given Host header.
    pub fn get(&self, host: &str, path: &str) -> Result<(u16, String), String> {
        http_get(self.router, host, path)
    }

    /// Polls until GET answers 200 with a body starting with `prefix`.
    pub fn wait_body(&self, host: &str, path: &str, prefix: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let got = self.get(host, path);
            if let Ok((200, body)) = &got
                && body.starts_with(prefix)
            {
                return body.clone();
            }
            assert!(
                Instant::now() < deadline,
                "{host}{path} did not answer `{prefix}…` within {within:?}; last: {got:?}\nserver log:\n{}",
                self.server_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Slipway {
    fn drop(&mut self) {
        if let Some(mut c) = self.server.take() {
            // A clean stop drains and stops the instances; kill as a last resort.
            let _ = Command::new(BIN)
                .args(["server", "stop"])
                .env("SLIPWAY_HOME", &self.data)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A minimal HTTP/1.1 GET with `Connection: close`.
pub fn http_get(addr: SocketAddr, host: &str, path: &str) -> Result<(u16, String), String> {
    http_request(addr, "GET", host, path, "")
}

/// A minimal HTTP/1.1 request with `Connection: close` and `body` as `text/plain`, or as
/// `application/json` when it starts with `{` (none for an empty GET).
pub fn http_request(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    body: &str,
) -> Result<(u16, String), String> {
    http_request_with(addr, method, host, path, body, None)
}

/// [`http_request`] with an `Authorization` header.
pub fn http_request_with(
    addr: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    body: &str,
    authorization: Option<&str>,
) -> Result<(u16, String), String> {
    let mut s =
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // A JSON object goes as JSON, anything else as text.
    let kind = if body.starts_with('{') {
        "application/json"
    } else {
        "text/plain"
    };
    let length = if method == "GET" && body.is_empty() {
        String::new()
    } else {
        format!("Content-Type: {kind}\r\nContent-Length: {}\r\n", body.len())
    };
    let auth = authorization.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{auth}{length}\r\n{body}"
    )
    .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("bad response: {text:?}"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line: {head:?}"))?;
    // Bodies in these tests are small; strip chunked framing if present.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((code, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Process ids whose command line mentions `marker` (to find instances of a test).
pub fn processes_with(marker: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // Zombies are dead already; only count live processes.
        let state = stat
            .rsplit_once(") ")
            .map(|(_, r)| r.chars().next().unwrap_or(' '));
        if state == Some('Z') {
            continue;
        }
        if String::from_utf8_lossy(&cmd).contains(marker) {
            pids.push(pid);
        }
    }
    pids
}

pub fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}
