//! The container engine for the container tests: Debian's `dockerd`, started here when it
//! does not run yet (`./run-tests` installs `docker.io` and `busybox-static`), and a small
//! image built without a registry: `docker import` of a root filesystem holding the static
//! busybox (its `httpd`, `sh`, `dd`).

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The test image's name; it serves `/www` with busybox's httpd.
pub const IMAGE: &str = "slipway-test/httpd:1";

/// Makes sure the engine answers and the test image exists (once per test binary).
pub fn engine() {
    static READY: OnceLock<()> = OnceLock::new();
    READY.get_or_init(|| {
        if !answers() {
            start_dockerd();
        }
        build_image(IMAGE, "hello from a container\n");
    });
}

/// Whether `docker version` reaches the engine.
fn answers() -> bool {
    Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Starts `dockerd` in the background, in a process group of its own so that it outlives
/// this test binary (other test binaries use it too), logging to a temporary file.
fn start_dockerd() {
    use std::os::unix::process::CommandExt;
    let log = std::env::temp_dir().join("slipway-tests-dockerd.log");
    let file = std::fs::File::create(&log).expect("create the dockerd log");
    // This VM has no use for the engine's firewall rules: containers are published on
    // 127.0.0.1 through its userland proxy.
    let spawned = Command::new("dockerd")
        .args(["--iptables=false", "--ip6tables=false"])
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("dup the log"))
        .stderr(file)
        .process_group(0)
        .spawn();
    if let Err(err) = spawned {
        panic!(
            "the container tests need Docker's engine and could not start `dockerd`: {err}; install Debian's docker.io (`./run-tests` does)"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !answers() {
        assert!(
            Instant::now() < deadline,
            "dockerd did not answer within 60s; its log ({}):\n{}",
            log.display(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Builds `name` from a root filesystem with the static busybox and `index` as
/// `/www/index.html`.
pub fn build_image(name: &str, index: &str) {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("the container tests need a static busybox: install Debian's busybox-static (`./run-tests` does)");
    let root = tempfile::tempdir().unwrap();
    let bin = root.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(root.path().join("www")).unwrap();
    std::fs::create_dir_all(root.path().join("tmp")).unwrap();
    std::fs::copy(busybox, bin.join("busybox")).unwrap();
    for applet in ["sh", "httpd", "dd", "sleep", "echo", "cat", "touch", "test"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    std::fs::write(root.path().join("www/index.html"), index).unwrap();
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(root.path())
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = Command::new("docker")
        .args(["import", "--change", "ENV PATH=/bin", "-", name])
        .stdin(tar.stdout.take().unwrap())
        .output()
        .unwrap();
    assert!(
        tar.wait().unwrap().success(),
        "tar of the image's root failed"
    );
    assert!(
        out.status.success(),
        "docker import failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The ids of the containers (running or not) labelled with `label=value`, sorted.
pub fn containers(label: &str, value: &str) -> Vec<String> {
    let out = Command::new("docker")
        .args(["ps", "-a", "-q", "--no-trunc", "--filter"])
        .arg(format!("label={label}={value}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    ids.sort();
    ids
}

/// `docker inspect --format <format> <container>`.
pub fn inspect(container: &str, format: &str) -> String {
    let out = Command::new("docker")
        .args(["inspect", "--format", format, container])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Removes every container of an app, whatever the test left.
pub fn remove_app(app: &str) {
    let ids = containers("slipway.app", app);
    if !ids.is_empty() {
        let _ = Command::new("docker")
            .args(["rm", "-f"])
            .args(&ids)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The file `name` of a container's cgroup for `controller` (v1), or of its unified cgroup (v2).
fn cgroup_file(container: &str, controller: &str, v1: &str, v2: &str) -> String {
    let pid = inspect(container, "{{.State.Pid}}");
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    for line in cgroups.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, controllers, path) = (
            parts.next(),
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
        );
        if controllers.split(',').any(|c| c == controller) {
            return std::fs::read_to_string(format!("/sys/fs/cgroup/{controller}{path}/{v1}"))
                .unwrap();
        }
        if controllers.is_empty() && Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            return std::fs::read_to_string(format!("/sys/fs/cgroup{path}/{v2}")).unwrap();
        }
    }
    panic!("no {controller} cgroup for container {container} in:\n{cgroups}");
}

/// The cpu time a container has used, in nanoseconds, from its cgroup.
pub fn cpu_nanos(container: &str) -> u64 {
    let text = cgroup_file(container, "cpuacct", "cpuacct.usage", "cpu.stat");
    match text.lines().find_map(|l| l.strip_prefix("usage_usec ")) {
        Some(usec) => usec.trim().parse::<u64>().unwrap() * 1000,
        None => text.trim().parse().unwrap(),
    }
}

/// The processes and threads in a container now, from its cgroup.
pub fn pids(container: &str) -> u64 {
    cgroup_file(container, "pids", "pids.current", "pids.current")
        .trim()
        .parse()
        .unwrap()
}

/// How many forks a container's pids limit refused, from its cgroup's `pids.events`.
pub fn pids_refused(container: &str) -> u64 {
    cgroup_file(container, "pids", "pids.events", "pids.events")
        .lines()
        .find_map(|l| l.strip_prefix("max "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// How many periods a container's cpu quota throttled it, from its cgroup's `cpu.stat`.
pub fn cpu_throttled(container: &str) -> u64 {
    cgroup_file(container, "cpu", "cpu.stat", "cpu.stat")
        .lines()
        .find_map(|l| l.strip_prefix("nr_throttled "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}
