//! Resource limits of native instances, enforced by real cgroups on this host (v1 or v2,
//! whichever it has): a memory limit kills an instance that needs more and says
//! `OOMKilled` with the limit, a cpu limit holds a busy loop to its share, and a pids limit
//! stops a fork bomb. Needs root (or a delegated cgroup); `SLIPWAY_TEST_NO_CGROUPS=1` skips
//! these tests on a machine that has neither, saying so.

use std::path::Path;
use std::time::Duration;

use slipway_runtime::{
    Check, Driver, InstanceConfig, InstanceState, Limits, Probe, ProcessDriver, RunningInstance,
};

/// One test at a time: the cpu measurement must not compete with the other tests' loads.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn driver() -> Option<ProcessDriver> {
    let driver = ProcessDriver::with_cgroups("runtime-tests");
    if let Some(reason) = driver.limits_unavailable() {
        if std::env::var("SLIPWAY_TEST_NO_CGROUPS").as_deref() == Ok("1") {
            eprintln!("skipped: cgroups unavailable ({reason}) and SLIPWAY_TEST_NO_CGROUPS=1");
            return None;
        }
        panic!(
            "cgroups cannot be used here: {reason}\n  hint: run the tests as root, or set \
             SLIPWAY_TEST_NO_CGROUPS=1 to skip the resource-limit tests"
        );
    }
    Some(driver)
}

fn config(dir: &Path, script: &str, limits: Limits) -> InstanceConfig {
    std::fs::write(dir.join("app.py"), script).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    InstanceConfig {
        id: format!("limits-{port}"),
        argv: vec!["python3".into(), "-u".into(), "app.py".into()],
        env: vec![("PORT".into(), port.to_string())],
        workdir: dir.to_path_buf(),
        port,
        log_file: dir.join("app.log"),
        log_max_bytes: 1 << 20,
        log_keep: 1,
        ready: Probe {
            check: Check::Tcp,
            interval: Duration::from_millis(100),
            timeout: Duration::from_secs(1),
            failures: 1,
        },
        live: None,
        startup_timeout: Duration::from_secs(20),
        grace: Duration::from_secs(2),
        limits,
        restart_backoff: (Duration::from_millis(300), Duration::from_secs(2)),
        container: None,
    }
}

/// Listens on $PORT (so the instance becomes ready), then runs `then`.
fn listening_then(then: &str) -> String {
    format!(
        "import os, socket, threading, time\n\
         s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('127.0.0.1', int(os.environ['PORT']))); s.listen(5)\n\
         threading.Thread(target=lambda: [s.accept()[0].close() for _ in iter(int, 1)], daemon=True).start()\n\
         time.sleep(0.3)\n\
         {then}\n"
    )
}

async fn started(driver: &ProcessDriver, config: InstanceConfig) -> RunningInstance {
    let instance = driver.start(config).await.expect("the instance starts");
    tokio::time::timeout(Duration::from_secs(20), instance.wait_ready())
        .await
        .expect("ready within 20 s")
        .expect("ready");
    instance
}

#[tokio::test]
async fn an_instance_over_its_memory_limit_is_reported_oom_killed_and_restarted() {
    let _serial = SERIAL.lock().await;
    let Some(driver) = driver() else { return };
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        memory_bytes: Some(64 << 20),
        ..Limits::default()
    };
    // 200 MiB, written (bytes multiplied are materialised, not lazily zeroed pages).
    let script = listening_then("data = b'x' * (200 << 20)\ntime.sleep(60)");
    let instance = started(&driver, config(dir.path(), &script, limits)).await;
    let mut states = instance.state();
    let state = tokio::time::timeout(
        Duration::from_secs(20),
        states.wait_for(|s| matches!(s, InstanceState::Backoff { .. })),
    )
    .await
    .expect("a restart within 20 s")
    .unwrap()
    .clone();
    let InstanceState::Backoff { reason, .. } = state else {
        unreachable!()
    };
    assert!(
        reason.starts_with("OOMKilled: used more than its memory limit of 64Mi"),
        "{reason}"
    );
    assert!(reason.contains("SIGKILL"), "{reason}");
    assert!(instance.usage().unwrap().oom_kills >= 1);
    // It comes back (and is killed again: the restarts go on with backoff).
    tokio::time::timeout(
        Duration::from_secs(20),
        states.wait_for(|s| *s == InstanceState::Starting || *s == InstanceState::Ready),
    )
    .await
    .expect("restarted")
    .unwrap();
    instance.stop().await;
}

#[tokio::test]
async fn a_stop_that_ends_in_sigkill_is_not_an_oom_kill() {
    let _serial = SERIAL.lock().await;
    let Some(driver) = driver() else { return };
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        memory_bytes: Some(64 << 20),
        ..Limits::default()
    };
    // Ignores SIGTERM, so the stop ends with SIGKILL after the grace period.
    let script = format!(
        "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n{}",
        listening_then("time.sleep(60)")
    );
    let mut cfg = config(dir.path(), &script, limits);
    cfg.grace = Duration::from_millis(300);
    let instance = started(&driver, cfg).await;
    instance.stop().await;
    assert_eq!(instance.usage().unwrap().oom_kills, 0);
    let log = std::fs::read_to_string(dir.path().join("app.log")).unwrap();
    assert!(!log.contains("OOMKilled"), "{log}");
    assert!(log.contains("signal 9") || log.contains("SIGKILL"), "{log}");
}

#[tokio::test]
async fn half_a_core_holds_a_busy_loop_to_half_a_core() {
    let _serial = SERIAL.lock().await;
    let Some(driver) = driver() else { return };
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        cpu_millis: Some(500),
        ..Limits::default()
    };
    let script = listening_then("while True:\n    pass");
    let instance = started(&driver, config(dir.path(), &script, limits)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = instance.usage().unwrap().cpu_nanos;
    let t0 = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let used = instance.usage().unwrap().cpu_nanos - before;
    let cores = used as f64 / t0.elapsed().as_nanos() as f64;
    instance.stop().await;
    eprintln!("a busy loop limited to 500m used {cores:.3} cores over 5 s");
    assert!(
        (0.45..=0.55).contains(&cores),
        "a busy loop limited to 500m used {cores:.3} cores"
    );
}

#[tokio::test]
async fn a_pids_limit_stops_a_fork_bomb() {
    let _serial = SERIAL.lock().await;
    let Some(driver) = driver() else { return };
    let dir = tempfile::tempdir().unwrap();
    let limits = Limits {
        pids: Some(64),
        ..Limits::default()
    };
    let script = listening_then(
        "children = 0\n\
         try:\n\
         \x20   for _ in range(500):\n\
         \x20       if os.fork() == 0:\n\
         \x20           time.sleep(60); os._exit(0)\n\
         \x20       children += 1\n\
         except OSError as e:\n\
         \x20   print(f'fork failed after {children} children: {e}', flush=True)\n\
         time.sleep(60)",
    );
    let instance = started(&driver, config(dir.path(), &script, limits)).await;
    let log_path = dir.path().join("app.log");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let line = loop {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if let Some(line) = log.lines().find(|l| l.contains("fork failed after")) {
            break line.to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no fork failed:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let usage = instance.usage().unwrap();
    instance.stop().await;
    assert!(usage.pids <= 64, "{usage:?}");
    let children: u32 = line
        .split("after ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(children < 64, "{line}");
}
