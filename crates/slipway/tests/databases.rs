//! Managed databases: a real Django site under gunicorn with `uses: [db]` against the PostgreSQL
//! Slipway runs for it (the host's PostgreSQL 15, on a Unix socket, as the `postgres` user when
//! the tests run as root): migrations as the release command, rows read and written, a
//! blue-green deploy under writes without a failed request, one database per environment, a
//! `kill -9` of the server that the database survives (and is adopted after), `down` and `up`.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::*;

const PRODUCTION: &str = "web.production.notes.localhost";
const STAGING: &str = "web.staging.notes.localhost";

/// The Django site copied to `<tmp>/notes`, its spec using a managed PostgreSQL, with a
/// staging and a production environment; the secret is set in both.
fn django_pg_app(s: &Slipway) -> PathBuf {
    let venv = path_str(&django::venv());
    // The database runs as another user (PostgreSQL refuses root), who must pass through
    // the test's private temporary folder to reach the data directory.
    std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let dir = s.dir.path().join("notes");
    django::copy_to(&dir);
    std::fs::write(
        dir.join("slipway.yaml"),
        format!(
            r#"app: notes
databases:
  db: {{ engine: postgres, version: "15" }}
services:
  web:
    run: ["{venv}/bin/gunicorn", "mysite.wsgi", "--bind", "127.0.0.1:$PORT", "--no-control-socket", "--workers", "2"]
    release: ["{venv}/bin/python", "manage.py", "migrate", "--noinput"]
    uses: [db]
    secrets: [DJANGO_SECRET_KEY]
    health:
      ready: {{ http: /ready, interval: 100ms }}
      startup_timeout: 30s
    shutdown: {{ grace: 5s }}
    deploy: {{ keep_previous: 2s }}
environments:
  staging: {{}}
  production: {{}}
"#
        ),
    )
    .unwrap();
    for env in ["staging", "production"] {
        let out = s.cli_with_stdin(
            &[
                "secret",
                "set",
                "DJANGO_SECRET_KEY",
                "--app",
                "notes",
                "--env",
                env,
            ],
            "not-so-secret-test-key-0123456789abcdef",
        );
        assert!(out.status.success(), "{out:?}");
    }
    dir
}

/// `SELECT count(*) FROM notes_note` through the URL `slipway db url` prints.
fn count_rows(s: &Slipway, env: &str) -> u64 {
    let url = s.ok(&["db", "url", "db", "--app", "notes", "--env", env]);
    let out = Command::new("/usr/lib/postgresql/15/bin/psql")
        .args([url.trim(), "-X", "-q", "-A", "-t", "-c"])
        .arg("SELECT count(*) FROM notes_note")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

/// The postmaster's pid, from the first line of `postmaster.pid`.
fn postmaster_pid(s: &Slipway, env: &str) -> u32 {
    let file = s
        .data
        .join(format!("databases/notes/{env}/db/data/postmaster.pid"));
    let text = std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()));
    text.lines().next().unwrap().trim().parse().unwrap()
}

/// Writes notes from one thread until stopped: counts the 201 answers (committed rows) and
/// keeps the other answers.
struct Writer {
    stop: Arc<AtomicBool>,
    committed: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<Vec<String>>,
}

impl Writer {
    fn start(s: &Slipway, host: &'static str) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let committed = Arc::new(AtomicU64::new(0));
        let router = s.router;
        let thread = {
            let (stop, committed) = (stop.clone(), committed.clone());
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(120);
                let mut failures = Vec::new();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    n += 1;
                    match http_request(router, "POST", host, "/notes", &format!("note {n}")) {
                        Ok((201, _)) => {
                            committed.fetch_add(1, Ordering::SeqCst);
                        }
                        other => failures.push(format!("{other:?}")),
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                failures
            })
        };
        Writer {
            stop,
            committed,
            thread,
        }
    }

    fn committed(&self) -> u64 {
        self.committed.load(Ordering::SeqCst)
    }

    /// Stops writing; returns (committed, failures).
    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let failures = self.thread.join().unwrap();
        (self.committed.load(Ordering::SeqCst), failures)
    }
}

fn wait_for(what: &str, within: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn events(s: &Slipway, env: &str) -> String {
    s.ok(&["events", "--app", "notes", "--env", env])
}

#[test]
fn django_on_a_managed_postgres_migrates_serves_switches_without_failures_and_keeps_environments_apart()
 {
    let s = Slipway::start();
    let dir = django_pg_app(&s);
    let spec = path_str(&dir);

    for env in ["production", "staging"] {
        let out = s.ok(&["up", &spec, "--detach", "--env", env]);
        assert!(
            out.contains("Applying notes.0001_initial... OK"),
            "the migration ran against the new database: {out}"
        );
        assert!(
            !out.contains("postgresql://"),
            "the URL (with its password) is masked in the release output: {out}"
        );
    }
    s.wait_body(PRODUCTION, "/", "v1 0", Duration::from_secs(20));
    for i in 0..3 {
        let (code, body) =
            http_request(s.router, "POST", PRODUCTION, "/notes", &format!("n{i}")).unwrap();
        assert_eq!((code, body), (201, (i + 1).to_string()));
    }
    // Staging has a database of its own: it sees none of production's rows.
    s.wait_body(STAGING, "/", "v1 0", Duration::from_secs(20));
    let (code, _) = http_request(s.router, "POST", STAGING, "/notes", "staging").unwrap();
    assert_eq!(code, 201);
    assert_eq!(count_rows(&s, "production"), 3);
    assert_eq!(count_rows(&s, "staging"), 1);

    // Staging's credentials do not open production's database, even on its socket.
    let staging_url = s.ok(&["db", "url", "db", "--app", "notes", "--env", "staging"]);
    let production_url = s.ok(&["db", "url", "db", "--app", "notes", "--env", "production"]);
    assert_ne!(staging_url, production_url);
    let production_socket = s.data.join("databases/notes/production/db/socket");
    let crossed = staging_url.trim().replace(
        &path_str(&s.data.join("databases/notes/staging/db/socket")),
        &path_str(&production_socket),
    );
    let out = Command::new("/usr/lib/postgresql/15/bin/psql")
        .args([crossed.as_str(), "-X", "-c", "SELECT 1"])
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "staging's password opened production's database"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("password authentication failed"),
        "{out:?}"
    );

    // `db shell` is psql with the credentials filled in.
    let out = s.cli_with_stdin(
        &["db", "shell", "db", "--app", "notes", "--env", "production"],
        "SELECT 'rows=' || count(*) FROM notes_note;\n",
    );
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("rows=3"),
        "{out:?}"
    );

    // `status` shows the database and its health.
    let status = s.ok(&["status", "--app", "notes", "--env", "production"]);
    assert!(status.contains("DATABASE"), "{status}");
    assert!(
        status.contains("postgres") && status.contains("ready"),
        "{status}"
    );

    // A blue-green deploy while the app writes: no failed request, the database untouched.
    let before = postmaster_pid(&s, "production");
    let writer = Writer::start(&s, PRODUCTION);
    wait_for("the first writes", Duration::from_secs(10), || {
        writer.committed() >= 5
    });
    std::fs::write(dir.join("version.txt"), "v2\n").unwrap();
    s.ok(&["deploy", "-f", &spec, "--env", "production"]);
    s.wait_body(PRODUCTION, "/", "v2 ", Duration::from_secs(20));
    let at_switch = writer.committed();
    wait_for("writes to v2", Duration::from_secs(10), || {
        writer.committed() >= at_switch + 5
    });
    let (committed, failures) = writer.finish();
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    assert_eq!(count_rows(&s, "production"), 3 + committed);
    assert_eq!(
        postmaster_pid(&s, "production"),
        before,
        "a deploy never restarts the database"
    );
    let events = events(&s, "production");
    assert!(events.contains("database.created"), "{events}");
}

#[test]
fn the_database_survives_a_kill_9_of_the_server_loses_no_committed_row_and_keeps_its_data_across_down_and_up()
 {
    let mut s = Slipway::start();
    let dir = django_pg_app(&s);
    let spec = path_str(&dir);
    s.ok(&["up", &spec, "--detach", "--env", "production"]);
    s.wait_body(PRODUCTION, "/", "v1 0", Duration::from_secs(20));
    let postmaster = postmaster_pid(&s, "production");

    // Kill the server while the app writes: the requests in flight fail, the rows whose
    // 201 came back must all be there.
    let writer = Writer::start(&s, PRODUCTION);
    wait_for("writes", Duration::from_secs(10), || {
        writer.committed() >= 20
    });
    s.kill9();
    let (committed, _failures) = writer.finish();
    assert!(
        Path::new(&format!("/proc/{postmaster}")).exists(),
        "the database was killed with the server"
    );
    s.start_server();
    s.wait_body(PRODUCTION, "/", "v1 ", Duration::from_secs(30));
    let rows = count_rows(&s, "production");
    assert!(
        rows >= committed,
        "{committed} rows were committed (201) but {rows} are in the database"
    );
    assert_eq!(
        postmaster_pid(&s, "production"),
        postmaster,
        "the running database is adopted, not restarted"
    );
    let log = events(&s, "production");
    assert!(log.contains("database.adopted"), "{log}");
    let (code, body) = http_request(s.router, "POST", PRODUCTION, "/notes", "after").unwrap();
    assert_eq!(
        (code, body),
        (201, (rows + 1).to_string()),
        "it serves again"
    );

    // `down` stops the app, then its database (cleanly); `up` brings both back, data kept.
    s.ok(&["down", "--app", "notes", "--env", "production"]);
    wait_for("the database to stop", Duration::from_secs(20), || {
        !Path::new(&format!("/proc/{postmaster}")).exists()
    });
    let status = s.ok(&["status", "--app", "notes", "--env", "production"]);
    assert!(status.contains("stopped"), "{status}");
    s.ok(&["up", &spec, "--detach", "--env", "production"]);
    s.wait_body(
        PRODUCTION,
        "/",
        &format!("v1 {}", rows + 1),
        Duration::from_secs(30),
    );
    let log = events(&s, "production");
    assert!(
        log.contains("database.stopped") && log.contains("database.started"),
        "{log}"
    );
}

/// A stdlib Python app that counts hits in the Redis of REDIS_URL (`unix://:pw@/socket?db=0`),
/// speaking RESP itself.
const COUNTER_APP: &str = r#"
import os, socket
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit, unquote

url = urlsplit(os.environ["REDIS_URL"])
PATH, PASSWORD = unquote(url.path), unquote(url.password or "")

def redis(*args):
    s = socket.socket(socket.AF_UNIX)
    s.connect(PATH)
    out = b""
    for cmd in (("AUTH", PASSWORD), args):
        out += b"*%d\r\n" % len(cmd) + b"".join(b"$%d\r\n%s\r\n" % (len(a.encode()), a.encode()) for a in cmd)
    s.sendall(out)
    f = s.makefile("rb")
    replies = []
    for _ in range(2):
        line = f.readline().rstrip(b"\r\n")
        if line[:1] == b"$":
            n = int(line[1:])
            replies.append(None if n < 0 else f.read(n + 2)[:-2].decode())
        else:
            replies.append(line[1:].decode())
    s.close()
    return replies[1]

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/incr":
            body = redis("INCR", "hits")
        elif self.path == "/ready":
            body = redis("PING")
        else:
            body = redis("GET", "hits") or "0"
        data = str(body).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *a):
        pass

ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

const COUNTER: &str = "web.counter.localhost";

fn redis_pid(s: &Slipway) -> u32 {
    let file = s.data.join("databases/counter/development/cache/redis.pid");
    std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()))
        .trim()
        .parse()
        .unwrap()
}

fn hits(s: &Slipway, path: &str) -> String {
    let (code, body) = http_get(s.router, COUNTER, path).unwrap();
    assert_eq!(code, 200, "{body}");
    body
}

#[test]
fn a_managed_redis_is_linked_by_redis_url_survives_a_kill_9_and_keeps_its_keys_across_down_and_up()
{
    let mut s = Slipway::start();
    std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let dir = s.dir.path().join("counter");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("app.py"), COUNTER_APP).unwrap();
    std::fs::write(
        dir.join("slipway.yaml"),
        r#"app: counter
databases:
  cache: { engine: redis }
services:
  web:
    run: ["python3", "app.py"]
    uses: [cache]
    health:
      ready: { http: /ready, interval: 100ms }
    shutdown: { grace: 1s }
"#,
    )
    .unwrap();
    let spec = path_str(&dir);
    s.ok(&["up", &spec, "--detach"]);
    s.wait_body(COUNTER, "/", "0", Duration::from_secs(20));
    for n in 1..=3 {
        assert_eq!(hits(&s, "/incr"), n.to_string());
    }
    let url = s.ok(&["db", "url", "cache", "--app", "counter"]);
    assert!(url.starts_with("unix://:"), "{url}");
    let out = s.cli_with_stdin(&["db", "shell", "cache", "--app", "counter"], "GET hits\n");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3", "{out:?}");
    let status = s.ok(&["status", "--app", "counter"]);
    assert!(
        status.contains("redis") && status.contains("ready"),
        "{status}"
    );
    let (_, metrics) = s.metrics().unwrap();
    assert!(
        metrics
            .contains("slipway_database_up{app=\"counter\",database=\"cache\",engine=\"redis\"} 1"),
        "{metrics}"
    );

    // The server dies; Redis does not, and the next server adopts it.
    let pid = redis_pid(&s);
    s.kill9();
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "Redis died with the server"
    );
    s.start_server();
    s.wait_body(COUNTER, "/", "3", Duration::from_secs(20));
    assert_eq!(redis_pid(&s), pid, "adopted, not restarted");
    assert_eq!(hits(&s, "/incr"), "4");
    let log = s.ok(&["events", "--app", "counter"]);
    assert!(log.contains("database.adopted"), "{log}");

    // `down` stops it (its append-only file flushed), `up` starts it with its keys.
    s.ok(&["down", "--app", "counter"]);
    wait_for("Redis to stop", Duration::from_secs(20), || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });
    s.ok(&["up", &spec, "--detach"]);
    s.wait_body(COUNTER, "/", "4", Duration::from_secs(20));
}

/// `SELECT <expr>` in database `db` of production, through its URL.
fn psql_value(s: &Slipway, db: &str, sql: &str) -> String {
    let url = s.ok(&["db", "url", db, "--app", "notes", "--env", "production"]);
    let out = Command::new("/usr/lib/postgresql/15/bin/psql")
        .args([url.trim(), "-X", "-q", "-A", "-t", "-c", sql])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A checksum of the notes up to `max_id`, in id order.
fn checksum_sql(max_id: &str) -> String {
    format!(
        "SELECT md5(coalesce(string_agg(id || ':' || text, ',' ORDER BY id), '')) FROM notes_note WHERE id <= {max_id}"
    )
}

fn backups(s: &Slipway) -> Vec<serde_json::Value> {
    let out = s.ok(&["backup", "list", "--app", "notes", "--env", "production"]);
    // The table's first column is the id; the manifests hold the rest.
    let ids: Vec<String> = out
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    ids.iter()
        .map(|id| {
            let dir = s.data.join("backups/notes/production").join(id);
            serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap()
        })
        .collect()
}

#[test]
fn a_backup_under_writes_restores_consistently_a_flipped_byte_fails_verify_and_restore_keeps_a_safety_copy()
 {
    let s = Slipway::start();
    let dir = django_pg_app(&s);
    let spec = path_str(&dir);
    s.ok(&["up", &spec, "--detach", "--env", "production"]);
    s.wait_body(PRODUCTION, "/", "v1 0", Duration::from_secs(20));

    let writer = Writer::start(&s, PRODUCTION);
    wait_for("writes", Duration::from_secs(10), || {
        writer.committed() >= 20
    });
    let out = s.ok(&[
        "backup",
        "create",
        "db",
        "--app",
        "notes",
        "--env",
        "production",
    ]);
    assert!(out.contains("verified by a restore"), "{out}");
    wait_for("more writes", Duration::from_secs(10), || {
        writer.committed() >= 60
    });
    let (_, failures) = writer.finish();
    assert!(
        failures.is_empty(),
        "the backup failed requests: {failures:?}"
    );

    let list = backups(&s);
    assert_eq!(list.len(), 1, "{list:?}");
    let backup = &list[0];
    let id = backup["id"].as_str().unwrap().to_owned();
    let at_dump = backup["tables"]["public.notes_note"].as_u64().unwrap();
    assert!(at_dump >= 20, "{backup}");
    assert_eq!(backup["revisions"][0]["service"], "web");
    assert_eq!(backup["revisions"][0]["revision"], 1);
    assert_eq!(backup["files"][0]["name"], "db.dump");
    assert_eq!(backup["files"][0]["sha256"].as_str().unwrap().len(), 64);

    // Into a new database: the rows and their checksum are those of the source at the
    // dump's snapshot (one writer: ids commit in order), the original is left alone.
    let out = s.ok(&[
        "backup",
        "restore",
        &id,
        "--to",
        "copy",
        "--app",
        "notes",
        "--env",
        "production",
    ]);
    assert!(
        !out.contains("safety backup"),
        "a new database has nothing to lose: {out}"
    );
    assert_eq!(
        psql_value(&s, "copy", "SELECT count(*) FROM notes_note"),
        at_dump.to_string()
    );
    let max_id = psql_value(&s, "copy", "SELECT max(id) FROM notes_note");
    assert_eq!(
        psql_value(&s, "copy", &checksum_sql(&max_id)),
        psql_value(&s, "db", &checksum_sql(&max_id))
    );
    let now = count_rows(&s, "production");
    assert!(now > at_dump, "the original kept its newer rows");

    // In place: a safety backup first, then the contents replaced; the app serves again.
    let out = s.ok(&[
        "backup",
        "restore",
        &id,
        "--app",
        "notes",
        "--env",
        "production",
    ]);
    assert!(out.contains("safety backup of db first"), "{out}");
    assert_eq!(count_rows(&s, "production"), at_dump);
    let safety = backups(&s)
        .into_iter()
        .find(|b| b["kind"] == "safety")
        .expect("a safety backup");
    assert_eq!(safety["tables"]["public.notes_note"].as_u64(), Some(now));
    let mut code = 0;
    wait_for("the app to write again", Duration::from_secs(10), || {
        code = http_request(s.router, "POST", PRODUCTION, "/notes", "after").map_or(0, |(c, _)| c);
        code == 201
    });

    // The backup verifies again; with one byte flipped it does not, and says where and why.
    s.ok(&[
        "backup",
        "verify",
        &id,
        "--app",
        "notes",
        "--env",
        "production",
    ]);
    let file = s
        .data
        .join(format!("backups/notes/production/{id}/db.dump"));
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x20;
    std::fs::write(&file, &bytes).unwrap();
    let out = s.cli(&[
        "backup",
        "verify",
        &id,
        "--app",
        "notes",
        "--env",
        "production",
    ]);
    assert!(!out.status.success());
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(error.contains(&path_str(&file)), "{error}");
    assert!(error.contains("SHA-256"), "{error}");
    let out = s.cli(&[
        "backup",
        "restore",
        &id,
        "--app",
        "notes",
        "--env",
        "production",
    ]);
    assert!(!out.status.success(), "a damaged backup is never restored");
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing was restored"));
}

#[test]
fn scheduled_backups_that_fail_are_loud_and_the_ones_that_succeed_are_kept_per_keep() {
    let mut s = Slipway::start();
    let dir = django_pg_app(&s);
    let yaml = std::fs::read_to_string(dir.join("slipway.yaml")).unwrap();
    std::fs::write(
        dir.join("slipway.yaml"),
        yaml.replace(
            "services:\n",
            "backups: { every: 2s, keep: 2 }\nservices:\n",
        ),
    )
    .unwrap();
    // The dump tool is unavailable to this server.
    s.server_env
        .push(("SLIPWAY_PG_DUMP".into(), "/nonexistent/pg_dump".into()));
    s.kill9();
    s.start_server();
    s.ok(&["up", &path_str(&dir), "--detach", "--env", "production"]);
    s.wait_body(PRODUCTION, "/", "v1 0", Duration::from_secs(20));
    wait_for("a failed scheduled backup", Duration::from_secs(20), || {
        events(&s, "production").contains("backup.failed")
    });
    let log = events(&s, "production");
    assert!(
        log.contains("scheduled backup of database db failed"),
        "{log}"
    );
    assert!(log.contains("/nonexistent/pg_dump"), "{log}");
    let status = s.ok(&["status", "--app", "notes", "--env", "production"]);
    assert!(status.contains("FAILED"), "{status}");
    assert!(status.contains("BACKUP FAILED"), "{status}");
    let (_, metrics) = s.metrics().unwrap();
    assert!(
        metrics.contains("slipway_backup_failures_total{app=\"notes@production\",database=\"db\"}"),
        "{metrics}"
    );
    let out = s.cli(&["backup", "create", "--app", "notes", "--env", "production"]);
    assert!(!out.status.success(), "a failed backup fails the command");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pg_dump"),
        "{out:?}"
    );
    assert!(
        backups(&s).is_empty(),
        "a failed backup leaves nothing that looks like one"
    );

    // With the tool back, the schedule succeeds, keeps two, and says so everywhere.
    s.server_env.clear();
    s.kill9();
    s.start_server();
    wait_for("three scheduled backups", Duration::from_secs(40), || {
        events(&s, "production")
            .matches("scheduled backup ")
            .count()
            >= 3
            && events(&s, "production").contains("backup.pruned")
    });
    let list = backups(&s);
    assert!(list.len() <= 2, "keep: 2 — {list:?}");
    let status = s.ok(&["status", "--app", "notes", "--env", "production"]);
    assert!(!status.contains("FAILED"), "{status}");
    let (_, metrics) = s.metrics().unwrap();
    assert!(
        metrics.contains("slipway_backup_last_success_timestamp_seconds{app=\"notes@production\",database=\"db\"}"),
        "{metrics}"
    );
}

#[test]
fn a_redis_snapshot_backup_restores_the_same_keys() {
    let s = Slipway::start();
    std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let dir = s.dir.path().join("counter");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("app.py"), COUNTER_APP).unwrap();
    std::fs::write(
        dir.join("slipway.yaml"),
        "app: counter\ndatabases: { cache: { engine: redis } }\nservices:\n  web:\n    run: [\"python3\", \"app.py\"]\n    uses: [cache]\n    health: { ready: { http: /ready, interval: 100ms } }\n    shutdown: { grace: 1s }\n",
    )
    .unwrap();
    s.ok(&["up", &path_str(&dir), "--detach"]);
    s.wait_body(COUNTER, "/", "0", Duration::from_secs(20));
    for _ in 0..5 {
        hits(&s, "/incr");
    }
    let out = s.ok(&["backup", "create", "cache", "--app", "counter"]);
    assert!(out.contains("1 keys; verified by a restore"), "{out}");
    let id = out.split_whitespace().nth(1).unwrap().to_owned();
    for _ in 0..3 {
        hits(&s, "/incr");
    }
    assert_eq!(hits(&s, "/"), "8");
    s.ok(&["backup", "verify", &id, "--app", "counter"]);

    // Into another name: the same keys there, the original untouched.
    s.ok(&["backup", "restore", &id, "--to", "copy", "--app", "counter"]);
    let out = s.cli_with_stdin(&["db", "shell", "copy", "--app", "counter"], "GET hits\n");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "5", "{out:?}");
    assert_eq!(hits(&s, "/"), "8");

    // In place, after a safety backup: the app reads the snapshot's value, and keeps counting.
    let out = s.ok(&["backup", "restore", &id, "--app", "counter"]);
    assert!(out.contains("safety backup of cache first"), "{out}");
    let mut now = String::new();
    wait_for(
        "the app to read the restored key",
        Duration::from_secs(10),
        || {
            now = http_get(s.router, COUNTER, "/")
                .map(|(_, b)| b)
                .unwrap_or_default();
            now == "5"
        },
    );
    assert_eq!(hits(&s, "/incr"), "6");
}

const SECRET_APP: &str = r#"
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"{os.environ['SECRET_WORD']} {open('version.txt').read().strip()}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass

ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

#[test]
fn a_platform_backup_restored_on_a_fresh_data_directory_with_the_key_serves_the_same_revisions() {
    let s = Slipway::start();
    let dir = s.dir.path().join("plat");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("app.py"), SECRET_APP).unwrap();
    std::fs::write(dir.join("version.txt"), "v1\n").unwrap();
    std::fs::write(
        dir.join("slipway.yaml"),
        "app: plat\nservices:\n  web:\n    run: [\"python3\", \"app.py\"]\n    secrets: [SECRET_WORD]\n    shutdown: { grace: 1s }\n    deploy: { keep_previous: 0s }\n",
    )
    .unwrap();
    let out = s.cli_with_stdin(
        &["secret", "set", "SECRET_WORD", "--app", "plat"],
        "swordfish",
    );
    assert!(out.status.success(), "{out:?}");
    let spec = path_str(&dir);
    s.ok(&["up", &spec, "--detach"]);
    s.wait_body(
        "web.plat.localhost",
        "/",
        "swordfish v1",
        Duration::from_secs(20),
    );
    std::fs::write(dir.join("version.txt"), "v2\n").unwrap();
    s.ok(&["deploy", "-f", &spec]);
    s.wait_body(
        "web.plat.localhost",
        "/",
        "swordfish v2",
        Duration::from_secs(20),
    );
    // The working folder moves on; the revisions hold their own code.
    std::fs::write(dir.join("version.txt"), "v3-never-deployed\n").unwrap();

    let out = s.ok(&["backup", "create", "--platform"]);
    assert!(out.contains("the master key is not in it"), "{out}");
    let archive = s
        .data
        .join("backups/platform")
        .read_dir()
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .expect("an archive");
    assert!(!archive.join("master.key").exists());
    let master_key = std::fs::read(s.data.join("master.key")).unwrap();
    let archived = std::fs::read(archive.join("state.db")).unwrap();
    assert!(
        !archived.windows(9).any(|w| w == b"swordfish"),
        "the secret is stored encrypted in the archive"
    );

    // A fresh data directory, the archive, then the key: the same revisions serve.
    let restored = Slipway::start_prepared(|data| {
        let out = Command::new(env!("CARGO_BIN_EXE_slipway"))
            .args(["backup", "restore", "--platform", &path_str(&archive)])
            .env("SLIPWAY_HOME", data)
            .env("SLIPWAY_NO_AUTOSTART", "1")
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("put the master key back"),
            "{out:?}"
        );
        std::fs::write(data.join("master.key"), &master_key).unwrap();
        std::fs::set_permissions(
            data.join("master.key"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
    });
    restored.wait_body(
        "web.plat.localhost",
        "/",
        "swordfish v2",
        Duration::from_secs(20),
    );
    let revisions = restored.ok(&["revisions", "web", "--app", "plat"]);
    assert!(
        revisions.contains('1') && revisions.contains('2'),
        "{revisions}"
    );
    // The original server's instances were not touched by the restored one.
    s.wait_body(
        "web.plat.localhost",
        "/",
        "swordfish v2",
        Duration::from_secs(5),
    );

    // Restoring over an existing state is refused.
    let out = Command::new(env!("CARGO_BIN_EXE_slipway"))
        .args(["backup", "restore", "--platform", &path_str(&archive)])
        .env("SLIPWAY_HOME", &restored.data)
        .env("SLIPWAY_NO_AUTOSTART", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("fresh data directory"),
        "{out:?}"
    );
}

/// The binaries of PostgreSQL 16 (pgserver's wheel, in a venv of its own).
fn postgres_16() -> PathBuf {
    let venv = support::venv::venv(
        "pg16",
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/pg16/requirements.txt"),
    );
    let lib = venv.join("lib");
    let bin = std::fs::read_dir(&lib)
        .unwrap()
        .filter_map(|e| {
            let bin = e.ok()?.path().join("site-packages/pgserver/pginstall/bin");
            bin.join("pg_upgrade").exists().then_some(bin)
        })
        .next()
        .unwrap_or_else(|| panic!("no pgserver/pginstall/bin under {}", lib.display()));
    // The database user runs them: every folder on the way must let it pass.
    let mut dir = bin.as_path();
    while let Some(parent) = dir.parent() {
        let mode = std::fs::metadata(dir).unwrap().permissions().mode();
        assert!(
            mode & 0o001 != 0,
            "{} is not passable by the database user",
            dir.display()
        );
        dir = parent;
    }
    bin
}

#[test]
fn a_major_upgrade_takes_a_backup_keeps_the_rows_and_the_url_and_can_be_reverted_and_cleaned_up() {
    let pg16 = postgres_16();
    let s = Slipway::start_with_env(&[("SLIPWAY_POSTGRES_16_BIN", &path_str(&pg16))]);
    let dir = django_pg_app(&s);
    // The spec's settings go with the data to the new cluster.
    let yaml = std::fs::read_to_string(dir.join("slipway.yaml")).unwrap();
    std::fs::write(
        dir.join("slipway.yaml"),
        yaml.replace(
            "db: { engine: postgres, version: \"15\" }",
            "db: { engine: postgres, version: \"15\", settings: { work_mem: 12MB } }",
        ),
    )
    .unwrap();
    let spec = path_str(&dir);
    s.ok(&["up", &spec, "--detach", "--env", "production"]);
    s.wait_body(PRODUCTION, "/", "v1 0", Duration::from_secs(20));
    let url = s.ok(&["db", "url", "db", "--app", "notes", "--env", "production"]);
    psql_value(
        &s,
        "db",
        "CREATE TABLE kept (id int PRIMARY KEY, note text); INSERT INTO kept SELECT i, md5(i::text) FROM generate_series(1, 5000) i; SELECT 1",
    );
    let sum = "SELECT count(*) || ' ' || md5(string_agg(note, ',' ORDER BY id)) FROM kept";
    let before = psql_value(&s, "db", sum);
    assert!(
        psql_value(&s, "db", "SHOW server_version_num").starts_with("15"),
        "starts on the host's 15"
    );

    // A version that is not newer is refused, and nothing changes.
    let out = s.cli(&[
        "db",
        "upgrade",
        "db",
        "--to",
        "14",
        "--app",
        "notes",
        "--env",
        "production",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot move data to an older major"),
        "{out:?}"
    );

    let out = s.ok(&[
        "db",
        "upgrade",
        "db",
        "--to",
        "16",
        "--app",
        "notes",
        "--env",
        "production",
    ]);
    assert!(out.contains("taken and verified"), "{out}");
    assert!(out.contains("PostgreSQL 15 -> 16"), "{out}");
    assert!(
        psql_value(&s, "db", "SHOW server_version_num").starts_with("16"),
        "runs 16 after the upgrade"
    );
    assert_eq!(psql_value(&s, "db", sum), before, "every row came along");
    assert_eq!(
        psql_value(&s, "db", "SHOW work_mem"),
        "12MB",
        "the settings came along"
    );
    assert_eq!(
        s.ok(&["db", "url", "db", "--app", "notes", "--env", "production"]),
        url,
        "the URL (socket, role, password) does not change"
    );
    // The app reconnects and writes; a backup was taken first; the event says what happened.
    s.wait_body(PRODUCTION, "/", "v1 0", Duration::from_secs(20));
    let log = events(&s, "production");
    assert!(
        log.contains("database db upgraded from PostgreSQL 15 to 16"),
        "{log}"
    );
    let list = backups(&s);
    assert_eq!(
        list.iter().filter(|b| b["kind"] == "upgrade").count(),
        1,
        "the backup before the upgrade: {list:?}"
    );
    let db_dir = s.data.join("databases/notes/production/db");
    assert!(db_dir.join("data-15/PG_VERSION").exists(), "15 is kept");

    // Revisions made before the upgrade still ask for 15: while 15 is kept they start (a
    // redeploy here), and the spec can say 16.
    s.ok(&["deploy", "--force", "-f", &spec, "--env", "production"]);
    let yaml = std::fs::read_to_string(dir.join("slipway.yaml")).unwrap();
    std::fs::write(
        dir.join("slipway.yaml"),
        yaml.replace("version: \"15\"", "version: \"16\""),
    )
    .unwrap();
    s.ok(&["deploy", "-f", &spec, "--env", "production"]);

    // A second upgrade waits until the kept cluster is dealt with.
    psql_value(
        &s,
        "db",
        "INSERT INTO kept VALUES (9999, 'after'); SELECT 1",
    );
    let out = s.cli(&[
        "db",
        "upgrade",
        "db",
        "--to",
        "17",
        "--app",
        "notes",
        "--env",
        "production",
    ]);
    assert!(!out.status.success());

    // Revert: back on 15, with the rows of the upgrade's moment (not the one written since).
    std::fs::write(dir.join("slipway.yaml"), &yaml).unwrap();
    let out = s.ok(&[
        "db",
        "upgrade",
        "db",
        "--revert",
        "--app",
        "notes",
        "--env",
        "production",
    ]);
    assert!(out.contains("PostgreSQL 16 -> 15"), "{out}");
    assert!(psql_value(&s, "db", "SHOW server_version_num").starts_with("15"));
    assert_eq!(psql_value(&s, "db", sum), before);
    s.wait_body(PRODUCTION, "/", "v1 0", Duration::from_secs(20));

    // The kept (16) cluster goes on request, and with it the leeway for a spec asking 16.
    let out = s.ok(&[
        "db",
        "upgrade",
        "db",
        "--remove-old",
        "--app",
        "notes",
        "--env",
        "production",
    ]);
    assert!(out.contains("data-16"), "{out}");
    assert!(!db_dir.join("data-16").exists());
    assert!(db_dir.join("data/PG_VERSION").exists());
}

/// An app whose only service says which `V` it runs with; it `uses` a PostgreSQL database
/// with the settings `settings` (YAML flow map), so its database is made at its first start.
fn settings_app(s: &Slipway, version: u32, settings: &str) -> PathBuf {
    std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let dir = s.dir.path().join("tuned");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("app.py"),
        r#"
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class H(BaseHTTPRequestHandler):
    def do_GET(self):
        data = ("v" + os.environ["V"]).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *a):
        pass

ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("slipway.yaml"),
        format!(
            r#"app: tuned
databases:
  db: {{ engine: postgres, version: "15", settings: {settings} }}
services:
  web:
    run: ["python3", "app.py"]
    env: {{ V: "{version}" }}
    uses: [db]
    health:
      ready: {{ http: /, interval: 100ms }}
    shutdown: {{ grace: 1s }}
    deploy: {{ keep_previous: 1s }}
"#
        ),
    )
    .unwrap();
    dir
}

const TUNED: &str = "web.tuned.localhost";

/// `SHOW <name>` on the database of `tuned`, through the URL the app gets.
fn show(s: &Slipway, name: &str) -> String {
    let url = s.ok(&["db", "url", "db", "--app", "tuned"]);
    let out = Command::new("/usr/lib/postgresql/15/bin/psql")
        .args([url.trim(), "-X", "-q", "-A", "-t", "-c"])
        .arg(format!("SHOW {name}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn tuned_pid(s: &Slipway) -> u32 {
    let file = s
        .data
        .join("databases/tuned/development/db/data/postmaster.pid");
    std::fs::read_to_string(&file)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()))
        .lines()
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn database_settings_reload_in_place_restart_only_when_allowed_and_refuse_invalid_values() {
    let s = Slipway::start();
    let dir = settings_app(&s, 1, "{ work_mem: 8MB }");
    let spec = path_str(&dir);
    s.ok(&["up", &spec, "--detach"]);
    s.wait_body(TUNED, "/", "v1", Duration::from_secs(20));
    // A database made with settings starts with them.
    assert_eq!(show(&s, "work_mem"), "8MB");
    let pid = tuned_pid(&s);

    // An app deploy that changes no setting leaves the database alone.
    settings_app(&s, 2, "{ work_mem: 8MB }");
    let out = s.ok(&["deploy", "-f", &spec]);
    assert!(!out.contains("database db:"), "{out}");
    s.wait_body(TUNED, "/", "v2", Duration::from_secs(20));
    assert_eq!(tuned_pid(&s), pid, "an app deploy restarted the database");

    // A reloadable change is said, then applied in place.
    settings_app(&s, 2, "{ work_mem: 16MB }");
    let out = s.ok(&["deploy", "-f", &spec]);
    let said = out
        .find("database db: work_mem 8MB -> 16MB is applied in place (no connection drops)")
        .unwrap_or_else(|| panic!("{out}"));
    let done = out
        .find("database db: settings applied in place, no connection dropped")
        .unwrap_or_else(|| panic!("{out}"));
    assert!(said < done, "{out}");
    assert_eq!(show(&s, "work_mem"), "16MB");
    assert_eq!(tuned_pid(&s), pid, "a reload restarted the database");

    // The same value in other words changes nothing and says nothing; the file takes the
    // spec's words.
    settings_app(&s, 2, "{ work_mem: 16384kB }");
    let out = s.ok(&["deploy", "-f", &spec]);
    assert!(!out.contains("database db:"), "{out}");
    let json: serde_json::Value =
        serde_json::from_str(&s.ok(&["db", "settings", "db", "--app", "tuned", "--json"])).unwrap();
    assert_eq!(json["settings"][0]["value"], "16384kB", "{json}");
    assert_eq!(json["settings"][0]["effective"], "16MB", "{json}");
    assert_eq!(tuned_pid(&s), pid);
    settings_app(&s, 2, "{ work_mem: 16MB }");
    s.ok(&["deploy", "-f", &spec]);

    // A change that needs a restart is refused without the flag: nothing changes, the
    // serving revision keeps serving.
    settings_app(&s, 3, "{ work_mem: 16MB, max_connections: 120 }");
    let out = s.cli(&["deploy", "-f", &spec]);
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "database db: max_connections 100 -> 120 needs a restart: the app's connections drop for about 2 s"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("--restart-databases"), "{stderr}");
    assert_eq!(show(&s, "max_connections"), "100");
    assert_eq!(tuned_pid(&s), pid);
    assert_eq!(s.get(TUNED, "/"), Ok((200, "v2".to_owned())));
    let status = s.ok(&["status", "--app", "tuned"]);
    assert!(status.contains("ready"), "{status}");

    // With the flag: said first, then done, and the postmaster is a new one.
    let out = s.ok(&["deploy", "-f", &spec, "--restart-databases"]);
    let said = out
        .find("database db: max_connections 100 -> 120 needs a restart")
        .unwrap_or_else(|| panic!("{out}"));
    let done = out
        .find("database db: restarted with the new settings")
        .unwrap_or_else(|| panic!("{out}"));
    assert!(said < done, "{out}");
    s.wait_body(TUNED, "/", "v3", Duration::from_secs(20));
    assert_eq!(show(&s, "max_connections"), "120");
    assert_ne!(tuned_pid(&s), pid, "the restart made a new postmaster");
    let log = s.ok(&["events", "--app", "tuned"]);
    assert!(log.contains("database.settings"), "{log}");
    assert!(
        log.contains("max_connections 100 -> 120 needs a restart"),
        "{log}"
    );
    let pid = tuned_pid(&s);

    // An invalid value is refused with PostgreSQL's own message; nothing changes.
    settings_app(&s, 4, "{ work_mem: 16XB, max_connections: 120 }");
    let out = s.cli(&["deploy", "-f", &spec]);
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "error: database db: PostgreSQL refuses these settings: invalid value for parameter \"work_mem\": \"16XB\" / HINT: Valid units"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("nothing was changed"), "{stderr}");
    assert_eq!(show(&s, "work_mem"), "16MB");
    assert_eq!(tuned_pid(&s), pid);
    assert_eq!(s.get(TUNED, "/"), Ok((200, "v3".to_owned())));

    // `slipway db settings` shows what the spec set and what the server has.
    let table = s.ok(&["db", "settings", "db", "--app", "tuned"]);
    assert!(table.contains("max_connections"), "{table}");
    let json: serde_json::Value =
        serde_json::from_str(&s.ok(&["db", "settings", "db", "--app", "tuned", "--json"])).unwrap();
    assert_eq!(json["settings"][1]["name"], "work_mem", "{json}");
    assert_eq!(json["settings"][1]["effective"], "16MB", "{json}");
    assert_eq!(json["settings"][1]["pending_restart"], false, "{json}");
}

#[test]
fn redis_settings_change_in_place_on_deploy_without_a_restart() {
    let s = Slipway::start();
    std::fs::set_permissions(s.dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let dir = s.dir.path().join("counter");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("app.py"), COUNTER_APP).unwrap();
    let spec = |policy: &str| {
        format!(
            r#"app: counter
databases:
  cache: {{ engine: redis, settings: {{ maxmemory-policy: {policy} }} }}
services:
  web:
    run: ["python3", "app.py"]
    uses: [cache]
    health:
      ready: {{ http: /ready, interval: 100ms }}
    shutdown: {{ grace: 1s }}
"#
        )
    };
    let config_get = || {
        let out = s.cli_with_stdin(
            &["db", "shell", "cache", "--app", "counter"],
            "CONFIG GET maxmemory-policy\n",
        );
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    std::fs::write(dir.join("slipway.yaml"), spec("allkeys-lru")).unwrap();
    let path = path_str(&dir);
    s.ok(&["up", &path, "--detach"]);
    s.wait_body(COUNTER, "/", "0", Duration::from_secs(20));
    assert!(config_get().contains("allkeys-lru"), "{}", config_get());
    assert_eq!(hits(&s, "/incr"), "1");
    let pid = redis_pid(&s);

    std::fs::write(dir.join("slipway.yaml"), spec("volatile-lru")).unwrap();
    let out = s.ok(&["deploy", "-f", &path]);
    assert!(
        out.contains(
            "database cache: maxmemory-policy allkeys-lru -> volatile-lru is applied in place (no connection drops)"
        ),
        "{out}"
    );
    assert!(config_get().contains("volatile-lru"), "{}", config_get());
    assert_eq!(redis_pid(&s), pid, "changed in place, not restarted");
    assert_eq!(hits(&s, "/incr"), "2");
    let json: serde_json::Value =
        serde_json::from_str(&s.ok(&["db", "settings", "cache", "--app", "counter", "--json"]))
            .unwrap();
    assert_eq!(json["settings"][0]["effective"], "volatile-lru", "{json}");

    // Redis refuses a value with its own message; the deploy stops, nothing changes.
    std::fs::write(dir.join("slipway.yaml"), spec("bogus")).unwrap();
    let out = s.cli(&["deploy", "-f", &path]);
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("maxmemory-policy"), "{stderr}");
    assert!(stderr.contains("nothing was changed"), "{stderr}");
    assert!(config_get().contains("volatile-lru"), "{}", config_get());
    assert_eq!(hits(&s, "/"), "2");
}

#[test]
fn each_environment_runs_its_database_with_its_own_settings() {
    let s = Slipway::start();
    let dir = settings_app(&s, 1, "{ work_mem: 8MB }");
    let yaml = std::fs::read_to_string(dir.join("slipway.yaml")).unwrap();
    std::fs::write(
        dir.join("slipway.yaml"),
        format!(
            "{yaml}environments:\n  production:\n    databases:\n      db: {{ settings: {{ work_mem: 24MB }} }}\n"
        ),
    )
    .unwrap();
    let spec = path_str(&dir);
    s.ok(&["up", &spec, "--detach"]);
    s.ok(&["up", &spec, "--detach", "--env", "production"]);
    let show_in = |env: &str| {
        let url = s.ok(&["db", "url", "db", "--app", "tuned", "--env", env]);
        let out = Command::new("/usr/lib/postgresql/15/bin/psql")
            .args([url.trim(), "-X", "-q", "-A", "-t", "-c", "SHOW work_mem"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(show_in("development"), "8MB");
    assert_eq!(show_in("production"), "24MB");
}
