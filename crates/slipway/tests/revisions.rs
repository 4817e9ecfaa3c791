//! A revision is code and config, frozen: a code-only edit makes a new revision, rollback (cold,
//! the old instances long gone) and `promote` run exactly the stored code whatever the working
//! folder holds, the release command runs before the new revision starts, `slipway run` runs
//! one-off commands in a revision's code with its env and secrets, and data lives in volumes,
//! never in a snapshot.
//!
//! Two kinds of app: the stdlib Python app of the harness, and a real Django site under
//! gunicorn in a virtualenv from PyPI (`support::django`), with `manage.py migrate` as its
//! release command, a readiness view that queries a migrated table, a secret it cannot start
//! without, and its SQLite file in a volume.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use support::*;

const PY_SPEC: &str = r#"app: frozen
services:
  api:
    run: ["python3", "app.py"]
    health:
      ready: { http: /ready, interval: 100ms }
      startup_timeout: 10s
    shutdown: { grace: 1s }
    deploy: { keep_previous: 0s }
"#;

/// Waits until only `revision` has running instances (the others drained and stopped).
fn wait_only(s: &Slipway, app: &str, revision: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let running = running_revisions(s, app);
        if running == [revision] {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "still running: revisions {running:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The revision numbers that have running instances, from `status`.
fn running_revisions(s: &Slipway, app: &str) -> Vec<u64> {
    let status = s.status(app);
    let mut revs: Vec<u64> = status["services"][0]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["revision"].as_u64())
        .collect();
    revs.dedup();
    revs
}

#[test]
fn a_code_only_edit_makes_a_revision_and_a_cold_rollback_runs_the_old_code() {
    let s = Slipway::start();
    let dir = s.write_app("frozen", PY_SPEC);
    std::fs::write(dir.join("version.txt"), "v1").unwrap();
    let out = s.ok(&["up", &path_str(&dir), "--detach"]);
    assert!(
        out.contains("snapshot"),
        "up reports the code snapshot: {out}"
    );
    s.wait_body("api.frozen.localhost", "/", "v1", Duration::from_secs(5));

    // Nothing changed: nothing to deploy.
    let out = s.ok(&["deploy", "-f", &path_str(&dir)]);
    assert!(out.contains("unchanged, revision 1 serving"), "{out}");

    // Only the code changes: a new revision, and it serves the new code.
    std::fs::write(dir.join("version.txt"), "v2").unwrap();
    let out = s.ok(&["deploy", "-f", &path_str(&dir)]);
    assert!(!out.contains("unchanged"), "a code edit is a change: {out}");
    s.wait_body("api.frozen.localhost", "/", "v2", Duration::from_secs(5));
    let events = s.ok(&["events", "--app", "frozen"]);
    assert!(
        events.contains("revision 2 of api created (code changed"),
        "{events}"
    );

    // The working folder moves on to code nobody deployed; revision 1's instances are gone
    // (keep_previous: 0s), so the rollback starts it cold, from its own snapshot.
    std::fs::write(dir.join("version.txt"), "v3-undeployed").unwrap();
    std::fs::write(
        dir.join("app.py"),
        "raise SystemExit('the working folder is not a revision')",
    )
    .unwrap();
    wait_only(&s, "frozen", 2);
    s.ok(&["rollback", "api", "--to", "1", "--app", "frozen"]);
    s.wait_body("api.frozen.localhost", "/", "v1", Duration::from_secs(5));
    wait_only(&s, "frozen", 1);

    // And the same after a restart of the server: recovery starts revision 1 from its
    // snapshot too.
    s.ok(&["server", "stop"]);
    let mut s = s;
    s.kill9();
    s.start_server();
    s.wait_body("api.frozen.localhost", "/", "v1", Duration::from_secs(10));
}

#[test]
fn a_script_of_a_venv_inside_the_folder_runs_the_revisions_packages() {
    // pip writes the venv's absolute path into its scripts' `#!` line; a revision must still
    // run its own copy of the venv's packages, not the working folder's.
    let s = Slipway::start();
    let dir = s.write_app(
        "frozen",
        &PY_SPEC.replace(r#"["python3", "app.py"]"#, r#"["venv/bin/serve"]"#),
    );
    let made = Command::new("python3")
        .args(["-m", "venv", "--without-pip"])
        .arg(dir.join("venv"))
        .status()
        .unwrap();
    assert!(made.success());
    let site = Command::new(dir.join("venv/bin/python"))
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ])
        .output()
        .unwrap();
    let site = PathBuf::from(String::from_utf8(site.stdout).unwrap().trim());
    assert!(site.starts_with(&dir), "{}", site.display());
    let greeting = site.join("greeting.py");
    std::fs::write(&greeting, "VERSION = 'v1'\n").unwrap();
    let serve = dir.join("venv/bin/serve");
    std::fs::write(
        &serve,
        format!(
            "#!{}\nimport os, runpy, greeting\nos.environ['VERSION'] = greeting.VERSION\nrunpy.run_path('app.py', run_name='__main__')\n",
            path_str(&dir.join("venv/bin/python"))
        ),
    )
    .unwrap();
    let mut perms = std::fs::metadata(&serve).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(&serve, perms).unwrap();

    s.ok(&["up", &path_str(&dir), "--detach"]);
    s.wait_body("api.frozen.localhost", "/", "v1 ", Duration::from_secs(5));
    std::fs::write(&greeting, "VERSION = 'v2'\n").unwrap();
    s.ok(&["deploy", "-f", &path_str(&dir)]);
    s.wait_body("api.frozen.localhost", "/", "v2 ", Duration::from_secs(5));
    wait_only(&s, "frozen", 2);
    std::fs::write(&greeting, "VERSION = 'v3-undeployed'\n").unwrap();
    s.ok(&["rollback", "api", "--to", "1", "--app", "frozen"]);
    let body = s.wait_body("api.frozen.localhost", "/", "v", Duration::from_secs(5));
    assert!(
        body.starts_with("v1 "),
        "revision 1 runs its own packages: {body}"
    );
}

/// App `shop` in staging and production; `production` is the production overlay of `api`.
fn promote_spec(production: &str) -> String {
    format!(
        r#"app: shop
services:
  api:
    run: ["python3", "app.py"]
    health:
      ready: {{ http: /ready, interval: 100ms }}
      startup_timeout: 10s
    shutdown: {{ grace: 1s }}
    deploy: {{ keep_previous: 0s }}
environments:
  staging: {{}}
  production:
    host: prod.shop.localhost
    services:
      api: {production}
"#
    )
}

#[test]
fn promote_serves_the_code_staging_runs_whatever_the_working_folder_holds() {
    // Without `artifact:`, production's code is the folder's snapshot; with one (a build
    // output), it is the build's. Either way a promotion ships staging's exact code.
    let overlays = [
        ("{}", "without artifact"),
        (
            r#"{ build: ["sh", "-c", "mkdir -p dist && cp app.py version.txt dist/"], artifact: dist }"#,
            "with artifact in production",
        ),
    ];
    for (overlay, case) in overlays {
        let s = Slipway::start();
        let dir = s.write_app("shop", &promote_spec(overlay));
        std::fs::write(dir.join("version.txt"), "v1").unwrap();
        s.ok(&["up", &path_str(&dir), "--env", "staging", "--detach"]);
        s.wait_body(
            "api.staging.shop.localhost",
            "/",
            "v1",
            Duration::from_secs(5),
        );

        // The folder moves on; production gets v2 from it, then the folder moves on again.
        std::fs::write(dir.join("version.txt"), "v2").unwrap();
        s.ok(&["up", &path_str(&dir), "--env", "production", "--detach"]);
        s.wait_body("api.prod.shop.localhost", "/", "v2", Duration::from_secs(5));
        std::fs::write(dir.join("version.txt"), "v3-undeployed").unwrap();

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
        assert!(out.contains("promoting the code"), "{case}: {out}");
        assert!(
            !out.contains("build succeeded") && !out.contains("build:"),
            "{case}: promote must not build: {out}"
        );
        let body = s.wait_body("api.prod.shop.localhost", "/", "v", Duration::from_secs(5));
        assert!(body.starts_with("v1 "), "{case}: production serves {body}");

        // Cold: after a server restart, production's revision starts from its snapshot.
        let mut s = s;
        s.ok(&["server", "stop"]);
        s.kill9();
        s.start_server();
        let body = s.wait_body("api.prod.shop.localhost", "/", "v", Duration::from_secs(10));
        assert!(body.starts_with("v1 "), "{case}: after a restart: {body}");
    }
}

#[test]
fn a_sqlite_file_outside_a_volume_stops_the_deploy_and_inside_one_is_shared() {
    let s = Slipway::start();
    let dir = s.write_app("frozen", PY_SPEC);
    std::fs::write(dir.join("version.txt"), "v1").unwrap();
    let mut db = b"SQLite format 3\0".to_vec();
    db.resize(4096, 0);
    std::fs::create_dir_all(dir.join("state")).unwrap();
    std::fs::write(dir.join("state/app.db"), &db).unwrap();

    let out = s.cli(&["up", &path_str(&dir), "--detach"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("state/app.db")
            && stderr.contains("live SQLite database")
            && stderr.contains("volumes: { data: ./state }"),
        "the message names the file and the fix: {stderr}"
    );
    let revisions = s.cli(&["revisions", "api", "--app", "frozen"]);
    let listed = String::from_utf8_lossy(&revisions.stdout);
    assert!(
        listed.lines().count() <= 1,
        "no revision was created: {listed}"
    );

    // Declared as a volume, the folder is left out of snapshots and every revision sees it.
    std::fs::write(
        dir.join("slipway.yaml"),
        PY_SPEC.replace(
            "    run: [\"python3\", \"app.py\"]\n",
            "    run: [\"python3\", \"app.py\"]\n    volumes: { data: ./state }\n",
        ),
    )
    .unwrap();
    s.ok(&["up", &path_str(&dir), "--detach"]);
    s.wait_body("api.frozen.localhost", "/", "v1", Duration::from_secs(5));
    let seen = |revision: &str| {
        let out = s.cli(&[
            "run",
            "api",
            "--revision",
            revision,
            "--app",
            "frozen",
            "--",
            "python3",
            "-c",
            "import os; print(os.path.getsize('state/app.db'), os.path.realpath('state'))",
        ]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let real_state = std::fs::canonicalize(dir.join("state")).unwrap();
    assert_eq!(seen("1"), format!("4096 {}", real_state.display()));
}

/// Load on `host` from one thread until stopped: counts answers that start with `prefix`
/// and everything else, with the first few failures.
struct Load {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<Vec<String>>,
}

impl Load {
    fn start(s: &Slipway, host: &'static str, prefix: &'static str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let router = s.router;
        let thread = {
            let (stop, ok) = (stop.clone(), ok.clone());
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(120);
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    match http_get(router, host, "/") {
                        Ok((200, body)) if body.starts_with(prefix) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        other => failures.push(format!("{other:?}")),
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
                failures
            })
        };
        Load { stop, ok, thread }
    }

    /// Stops the load; returns (answered, failures).
    fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        let failures = self.thread.join().unwrap();
        (self.ok.load(Ordering::Relaxed), failures)
    }
}

/// The Django site copied to `<tmp>/notes` with its spec; the secret is set.
fn django_app(s: &Slipway) -> PathBuf {
    let venv = django::venv();
    let dir = s.dir.path().join("notes");
    django::copy_to(&dir);
    let venv = path_str(&venv);
    std::fs::write(
        dir.join("slipway.yaml"),
        format!(
            r#"app: notes
services:
  web:
    run: ["{venv}/bin/gunicorn", "mysite.wsgi", "--bind", "127.0.0.1:$PORT", "--no-control-socket"]
    release: ["{venv}/bin/python", "manage.py", "migrate", "--noinput"]
    env: {{ DJANGO_SUPERUSER_EMAIL: admin@example.com }}
    secrets: [DJANGO_SECRET_KEY, DJANGO_SUPERUSER_PASSWORD]
    volumes: {{ data: ./data }}
    health:
      ready: {{ http: /ready, interval: 100ms }}
      startup_timeout: 30s
    shutdown: {{ grace: 1s }}
    deploy: {{ keep_previous: 0s }}
"#
        ),
    )
    .unwrap();
    for (name, value) in [
        (
            "DJANGO_SECRET_KEY",
            "not-so-secret-test-key-0123456789abcdef",
        ),
        ("DJANGO_SUPERUSER_PASSWORD", "correct horse battery staple"),
    ] {
        let out = s.cli_with_stdin(&["secret", "set", name, "--app", "notes"], value);
        assert!(out.status.success(), "{out:?}");
    }
    dir
}

const DJANGO: &str = "web.notes.localhost";

#[test]
fn django_migrates_before_its_first_start_and_its_revisions_keep_their_code_and_share_data() {
    let s = Slipway::start();
    let dir = django_app(&s);

    // `/ready` queries the notes table: only a release that runs before the start lets the
    // first `up` succeed.
    let out = s.ok(&["up", &path_str(&dir), "--detach"]);
    assert!(
        out.contains("Applying notes.0001_initial... OK"),
        "the migration's output is streamed: {out}"
    );
    s.wait_body(DJANGO, "/", "v1 0", Duration::from_secs(10));
    let (code, body) = http_request(s.router, "POST", DJANGO, "/notes", "first note").unwrap();
    assert_eq!((code, body.as_str()), (201, "1"));
    assert!(
        dir.join("data/db.sqlite3").exists(),
        "the volume holds the db"
    );

    // A code-only edit: a new revision, which sees the same database.
    std::fs::write(dir.join("version.txt"), "v2\n").unwrap();
    s.ok(&["deploy", "-f", &path_str(&dir)]);
    s.wait_body(DJANGO, "/", "v2 1", Duration::from_secs(10));
    let out = s.ok(&["deploy", "-f", &path_str(&dir)]);
    assert!(out.contains("unchanged"), "{out}");
    let (code, _) = http_request(s.router, "POST", DJANGO, "/notes", "second note").unwrap();
    assert_eq!(code, 201);

    // Cold rollback to revision 1: its code, the shared data.
    std::fs::write(dir.join("version.txt"), "v3-undeployed\n").unwrap();
    wait_only(&s, "notes", 2);
    s.ok(&["rollback", "web", "--to", "1", "--app", "notes"]);
    s.wait_body(DJANGO, "/", "v1 2", Duration::from_secs(10));
    wait_only(&s, "notes", 1);
}

/// A migration that fails, as one that meets data it did not expect does.
const BROKEN_MIGRATION: &str = r#"from django.db import migrations


def fail(apps, schema_editor):
    raise RuntimeError("notes.text has 3 rows longer than 200 characters")


class Migration(migrations.Migration):
    dependencies = [("notes", "0001_initial")]
    operations = [migrations.RunPython(fail)]
"#;

#[test]
fn a_failing_django_migration_aborts_the_deploy_and_the_serving_revision_answers_every_request() {
    let s = Slipway::start();
    let dir = django_app(&s);
    s.ok(&["up", &path_str(&dir), "--detach"]);
    s.wait_body(DJANGO, "/", "v1 0", Duration::from_secs(10));

    let load = Load::start(&s, DJANGO, "v1 ");
    std::fs::write(dir.join("version.txt"), "v2\n").unwrap();
    std::fs::write(
        dir.join("notes/migrations/0002_limit_text.py"),
        BROKEN_MIGRATION,
    )
    .unwrap();
    let out = s.cli(&["deploy", "-f", &path_str(&dir)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}{stderr}");
    assert!(
        stderr.contains("release command")
            && stderr.contains("3 rows longer than 200 characters")
            && stderr.contains("revision 1 keeps serving"),
        "the failure and its output are shown: {stdout}{stderr}"
    );
    std::thread::sleep(Duration::from_millis(500));
    let (answered, failures) = load.finish();
    assert!(answered > 0);
    assert!(
        failures.is_empty(),
        "{} failed: {failures:?}",
        failures.len()
    );
    eprintln!("failing release: sent {answered}, failed 0");

    // No instance of revision 2 ever ran; `logs --release` finds the failed run.
    wait_only(&s, "notes", 1);
    let release = s.ok(&["logs", "web", "--release", "--app", "notes"]);
    assert!(release.contains("3 rows longer"), "{release}");
}

#[test]
fn slipway_run_runs_one_off_commands_with_env_and_secrets_and_propagates_the_exit_code() {
    let s = Slipway::start();
    let dir = django_app(&s);
    s.ok(&["up", &path_str(&dir), "--detach"]);
    s.wait_body(DJANGO, "/", "v1 0", Duration::from_secs(10));
    let venv = path_str(&django::venv());
    let python = format!("{venv}/bin/python");

    // createsuperuser reads DJANGO_SUPERUSER_EMAIL (env) and _PASSWORD (a secret).
    let out = s.ok(&[
        "run",
        "web",
        "--app",
        "notes",
        "--",
        &python,
        "manage.py",
        "createsuperuser",
        "--noinput",
        "--username",
        "admin",
    ]);
    assert!(out.contains("Superuser created successfully."), "{out}");
    let check = "from django.contrib.auth.models import User; import sys; \
                 u = User.objects.get(username='admin'); \
                 sys.exit(0 if u.email == 'admin@example.com' and u.check_password('correct horse battery staple') else 5)";
    s.ok(&[
        "run",
        "web",
        "--app",
        "notes",
        "--",
        &python,
        "manage.py",
        "shell",
        "-c",
        check,
    ]);

    // The command's exit code is the CLI's; its output reaches the terminal as is.
    let out = s.cli(&[
        "run",
        "web",
        "--app",
        "notes",
        "--",
        "python3",
        "-c",
        "import sys; print(open('version.txt').read().strip()); sys.exit(3)",
    ]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "v1");

    // It runs in the revision's code, not the working folder.
    std::fs::write(dir.join("version.txt"), "v2-undeployed\n").unwrap();
    let out = s.ok(&["run", "web", "--app", "notes", "--", "cat", "version.txt"]);
    assert_eq!(out.trim(), "v1");

    let events = s.ok(&["events", "--app", "notes"]);
    assert!(
        events.contains("run.succeeded")
            && events.contains("run.failed")
            && events.contains("started in revision 1 by "),
        "{events}"
    );
}

#[test]
fn slipway_run_gives_an_interactive_shell_a_terminal() {
    let s = Slipway::start();
    let dir = django_app(&s);
    s.ok(&["up", &path_str(&dir), "--detach"]);
    s.wait_body(DJANGO, "/", "v1 0", Duration::from_secs(10));
    let python = format!("{}/bin/python", path_str(&django::venv()));
    let tmux = Tmux::new(&s.dir.path().join("tmux.sock"));
    let exited = s.dir.path().join("exited");
    tmux.start(&format!(
        "cd {tmp} && SLIPWAY_HOME={data} {BIN} run web --app notes -- {python} manage.py shell -i python; echo exit=$? > {exited}",
        tmp = path_str(s.dir.path()),
        data = path_str(&s.data),
        exited = path_str(&exited),
    ));
    tmux.wait_for(">>>", Duration::from_secs(20));
    tmux.send("import sys, os; print('tty', sys.stdin.isatty(), 'key' in os.environ.get('DJANGO_SECRET_KEY', ''))");
    tmux.wait_for("tty True True", Duration::from_secs(10));
    tmux.send("from notes.models import Note; print('notes', Note.objects.count())");
    tmux.wait_for("notes 0", Duration::from_secs(10));
    tmux.send("raise SystemExit(7)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !exited.exists() {
        assert!(
            Instant::now() < deadline,
            "the shell did not exit:\n{}",
            tmux.screen()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(std::fs::read_to_string(&exited).unwrap().trim(), "exit=7");
}

/// One tmux server of its own (its socket under the test's folder), killed on drop.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    fn new(socket: &Path) -> Tmux {
        Tmux {
            socket: socket.to_path_buf(),
        }
    }

    fn tmux(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run tmux (the TTY test needs it): {e}"));
        assert!(out.status.success(), "tmux {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn start(&self, command: &str) {
        self.tmux(&[
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            "200",
            "-y",
            "50",
            "bash",
            "-c",
            command,
        ]);
        // Keep the pane after the command ends, to read what it printed.
        self.tmux(&["set-option", "-t", "t", "remain-on-exit", "on"]);
    }

    fn send(&self, line: &str) {
        self.tmux(&["send-keys", "-t", "t", "-l", line]);
        self.tmux(&["send-keys", "-t", "t", "Enter"]);
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "t", "-S", "-200"])
    }

    fn wait_for(&self, text: &str, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "`{text}` did not appear within {within:?}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[test]
fn a_release_command_dies_with_the_server_under_kill_9() {
    let mut s = Slipway::start();
    let pids = s.dir.path().join("pids");
    std::fs::create_dir_all(&pids).unwrap();
    let spec = PY_SPEC.replace(
        "    run: [\"python3\", \"app.py\"]\n",
        &format!(
            "    run: [\"python3\", \"app.py\"]\n    release: [\"sh\", \"release.sh\", \"{}\"]\n    release_timeout: 2m\n",
            path_str(&pids)
        ),
    );
    let dir = s.write_app("frozen", &spec);
    // A long migration that started a child of its own.
    std::fs::write(
        dir.join("release.sh"),
        "echo $$ > \"$1/release\"\nsleep 60 &\necho $! > \"$1/child\"\nwait\n",
    )
    .unwrap();
    let mut up = Command::new(BIN)
        .args(["up", &path_str(&dir), "--detach"])
        .env("SLIPWAY_HOME", &s.data)
        .current_dir(s.dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let read_pid = |name: &str| -> Option<u32> {
        std::fs::read_to_string(pids.join(name))
            .ok()
            .and_then(|t| t.trim().parse().ok())
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let (release, child) = loop {
        if let (Some(r), Some(c)) = (read_pid("release"), read_pid("child")) {
            break (r, c);
        }
        assert!(
            Instant::now() < deadline,
            "the release command did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    s.kill9();
    let _ = up.kill();
    let _ = up.wait();
    let alive = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|stat| {
                stat.rsplit_once(") ")
                    .is_some_and(|(_, rest)| !rest.starts_with('Z'))
            })
            .unwrap_or(false)
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(release) || alive(child) {
        assert!(
            Instant::now() < deadline,
            "survivors of the server: release {release} alive {}, its child {child} alive {}",
            alive(release),
            alive(child)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn django_promote_serves_the_code_staging_runs_whatever_the_working_folder_holds() {
    let s = Slipway::start();
    let dir = django_app(&s);
    let spec = std::fs::read_to_string(dir.join("slipway.yaml")).unwrap();
    std::fs::write(
        dir.join("slipway.yaml"),
        format!(
            "{spec}environments:\n  staging: {{}}\n  production: {{ host: prod.notes.localhost }}\n"
        ),
    )
    .unwrap();
    for env in ["staging", "production"] {
        for (name, value) in [
            ("DJANGO_SECRET_KEY", "another-test-key-0123456789abcdef"),
            ("DJANGO_SUPERUSER_PASSWORD", "unused"),
        ] {
            let out = s.cli_with_stdin(
                &["secret", "set", name, "--app", "notes", "--env", env],
                value,
            );
            assert!(out.status.success(), "{out:?}");
        }
    }
    s.ok(&["up", &path_str(&dir), "--env", "staging", "--detach"]);
    s.wait_body(
        "web.staging.notes.localhost",
        "/",
        "v1 0",
        Duration::from_secs(10),
    );
    std::fs::write(dir.join("version.txt"), "v2\n").unwrap();
    s.ok(&["up", &path_str(&dir), "--env", "production", "--detach"]);
    s.wait_body(
        "web.prod.notes.localhost",
        "/",
        "v2 0",
        Duration::from_secs(10),
    );
    std::fs::write(dir.join("version.txt"), "v3-undeployed\n").unwrap();

    let out = s.ok(&[
        "promote",
        "web",
        "--from",
        "staging",
        "--to",
        "production",
        "-f",
        &path_str(&dir),
    ]);
    assert!(out.contains("promoting the code"), "{out}");
    // Staging's code, production's own data (a volume per environment) and migrations.
    s.wait_body(
        "web.prod.notes.localhost",
        "/",
        "v1 0",
        Duration::from_secs(10),
    );
}
