//! Operating-system plumbing for instances: resolving and spawning the program in its own
//! process group with a parent-death signal, signalling process groups, reading a process's
//! start time from `/proc` (to recognise it again after a server crash), and describing exit
//! statuses.

use std::ffi::OsString;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use rustix::process::{Pid, Signal};

use crate::child::Child;

use crate::InstanceConfig;

/// Why an instance could not be started. Every message names the instance, the program and the
/// working directory, and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The instance's cgroup could not be made or given its limits.
    #[error(
        "cannot start instance {id}: its cgroup could not be set up: {source}; check that the server may write under /sys/fs/cgroup, or remove `resources:` from the service"
    )]
    Cgroup {
        /// The instance id.
        id: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The container engine refused or could not be reached.
    #[error("cannot start instance {id}: {message}")]
    Container {
        /// The instance id.
        id: String,
        /// What the engine said, with what to do.
        message: String,
    },
    /// `argv` is empty.
    #[error(
        "cannot start instance {id}: the command is empty; set the service's `command` in slipway.yaml"
    )]
    EmptyCommand {
        /// The instance id.
        id: String,
    },
    /// The working directory is missing or not a directory.
    #[error(
        "cannot start instance {id}: working directory {} {problem} (program `{program}`); create it or fix the service's directory in slipway.yaml",
        workdir.display()
    )]
    BadWorkdir {
        /// The instance id.
        id: String,
        /// `argv[0]` as configured.
        program: String,
        /// The configured working directory.
        workdir: PathBuf,
        /// What is wrong with it, such as `does not exist`.
        problem: String,
    },
    /// The program was not found.
    #[error(
        "cannot start instance {id}: program `{program}` not found ({looked}; working directory {}); install it, or fix the service's `command` in slipway.yaml (a program in the service directory needs a path such as ./{program})",
        workdir.display()
    )]
    ProgramNotFound {
        /// The instance id.
        id: String,
        /// `argv[0]` as configured.
        program: String,
        /// The configured working directory.
        workdir: PathBuf,
        /// Where it was looked for, such as `searched PATH=/usr/bin:/bin`.
        looked: String,
    },
    /// The program exists but is not an executable file.
    #[error(
        "cannot start instance {id}: program `{program}` ({}) {problem} (working directory {}); run `chmod +x {}` or fix the service's `command` in slipway.yaml",
        resolved.display(), workdir.display(), resolved.display()
    )]
    NotExecutable {
        /// The instance id.
        id: String,
        /// `argv[0]` as configured.
        program: String,
        /// The file that was found.
        resolved: PathBuf,
        /// The configured working directory.
        workdir: PathBuf,
        /// What is wrong, such as `is not executable`.
        problem: String,
    },
    /// The log file could not be opened.
    #[error(
        "cannot start instance {id}: cannot open its log file {}: {source}; check that the directory is writable and the disk is not full",
        path.display()
    )]
    LogFile {
        /// The instance id.
        id: String,
        /// The log file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The operating system refused to start the program.
    #[error(
        "cannot start instance {id}: program `{program}` failed to start in {}: {source}; {hint}",
        workdir.display()
    )]
    Spawn {
        /// The instance id.
        id: String,
        /// `argv[0]` as configured.
        program: String,
        /// The configured working directory.
        workdir: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
        /// What to do about it.
        hint: String,
    },
}

/// Checks the working directory and finds the program `argv[0]`, returning its path.
pub(crate) fn resolve(config: &InstanceConfig) -> Result<PathBuf, StartError> {
    let id = config.id.clone();
    let Some(program) = config.argv.first().filter(|p| !p.is_empty()) else {
        return Err(StartError::EmptyCommand { id });
    };
    let workdir = &config.workdir;
    let bad_workdir = |problem: String| StartError::BadWorkdir {
        id: id.clone(),
        program: program.clone(),
        workdir: workdir.clone(),
        problem,
    };
    match std::fs::metadata(workdir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(bad_workdir("is not a directory".into())),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            return Err(bad_workdir("does not exist".into()));
        }
        Err(err) => return Err(bad_workdir(format!("cannot be read: {err}"))),
    }

    let not_executable = |resolved: PathBuf, problem: &str| StartError::NotExecutable {
        id: id.clone(),
        program: program.clone(),
        resolved,
        workdir: workdir.clone(),
        problem: problem.into(),
    };
    if program.contains('/') {
        let path = workdir.join(program);
        return match std::fs::metadata(&path) {
            Ok(meta) if meta.is_dir() => Err(not_executable(path, "is a directory")),
            Ok(meta) if meta.permissions().mode() & 0o111 == 0 => {
                Err(not_executable(path, "is not executable"))
            }
            Ok(_) => Ok(path),
            Err(_) => Err(StartError::ProgramNotFound {
                id: id.clone(),
                program: program.clone(),
                workdir: workdir.clone(),
                looked: format!("no file at {}", path.display()),
            }),
        };
    }

    match search_path(program, &config.env, workdir) {
        Found::Executable(path) => Ok(path),
        Found::NotExecutable(path) => Err(not_executable(path, "is not executable")),
        Found::Missing(searched) => Err(StartError::ProgramNotFound {
            id: id.clone(),
            program: program.clone(),
            workdir: workdir.clone(),
            looked: format!("searched PATH={}", searched.to_string_lossy()),
        }),
    }
}

/// What a search of the PATH found.
enum Found {
    /// The first executable file of that name.
    Executable(PathBuf),
    /// No executable one, but this file of that name.
    NotExecutable(PathBuf),
    /// Nothing: the PATH searched.
    Missing(OsString),
}

/// Looks `program` (a name without a slash) up in the PATH that `env` sets, else the
/// server's, as the child would in `workdir` (an empty or relative entry is relative to it).
fn search_path(program: &str, env: &[(String, String)], workdir: &Path) -> Found {
    let search_path: OsString = env
        .iter()
        .rev()
        .find(|(key, _)| key == "PATH")
        .map(|(_, value)| value.into())
        .or_else(|| std::env::var_os("PATH"))
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let mut found_non_executable = None;
    for dir in std::env::split_paths(&search_path) {
        let candidate = workdir.join(dir).join(program);
        match std::fs::metadata(&candidate) {
            Ok(meta) if meta.is_file() && meta.permissions().mode() & 0o111 != 0 => {
                return Found::Executable(candidate);
            }
            Ok(meta) if meta.is_file() => {
                found_non_executable.get_or_insert(candidate);
            }
            _ => {}
        }
    }
    match found_non_executable {
        Some(path) => Found::NotExecutable(path),
        None => Found::Missing(search_path),
    }
}

/// Turns a spawn failure into a [`StartError`] with a hint.
pub(crate) fn spawn_error(config: &InstanceConfig, source: io::Error) -> StartError {
    let hint = match source.raw_os_error() {
        Some(code) if code == rustix::io::Errno::NOEXEC.raw_os_error() => {
            "the file is not a valid executable; if it is a script, start it with a line such as #!/bin/sh"
        }
        Some(code) if code == rustix::io::Errno::NOENT.raw_os_error() => {
            "the file exists, so the interpreter named on its #! line (or a library it needs) is missing"
        }
        Some(code) if code == rustix::io::Errno::ACCESS.raw_os_error() => {
            "permission denied: check the file's mode and the permissions of its directories"
        }
        _ => "check the service's `command` in slipway.yaml",
    };
    StartError::Spawn {
        id: config.id.clone(),
        program: config.argv.first().cloned().unwrap_or_default(),
        workdir: config.workdir.clone(),
        source,
        hint: hint.into(),
    }
}

/// Spawns the program in a new process group, with stdin from /dev/null, stdout and stderr
/// piped, and SIGKILL as its parent-death signal.
/// With `cgroup`, the child joins it before the program runs.
pub(crate) fn spawn(
    config: &InstanceConfig,
    program: &Path,
    cgroup: Option<&crate::InstanceCgroup>,
) -> io::Result<Child> {
    let cgroups = match cgroup {
        Some(cgroup) => cgroup.join_files()?,
        None => Vec::new(),
    };
    start(program, &config.argv, &config.env, &config.workdir, cgroups)
}

/// Starts a child process as Slipway starts them all (instances and jobs): `program` with
/// `argv` (`argv[0]` first), `env` added to the server's, in `workdir`, stdin from
/// /dev/null, stdout and stderr piped, in a process group of its own (so a stop reaches its
/// children too), killed when its handle is dropped, with SIGKILL as its parent-death
/// signal (it dies with the server even under `kill -9`), and in the cgroups whose
/// `tasks` or `cgroup.procs` files are open in `cgroups` (see `InstanceCgroup::join_files`)
/// before any of the program runs. Started on the spawner thread
/// ([`crate::spawner`]), whose life is the server's, without a copy of the server.
/// Must be called inside a tokio runtime, which then watches the child.
pub(crate) fn start(
    program: &Path,
    argv: &[String],
    env: &[(String, String)],
    workdir: &Path,
    cgroups: Vec<std::os::fd::OwnedFd>,
) -> io::Result<Child> {
    let program = on_path(program, env, workdir);
    let null = std::fs::File::open("/dev/null")?;
    let (stdout, stdout_write) = io::pipe()?;
    let (stderr, stderr_write) = io::pipe()?;
    let spawn = crate::spawner::Spawn::new(
        &program,
        argv,
        env,
        workdir,
        [null.into(), stdout_write.into(), stderr_write.into()],
        cgroups,
    )?;
    // The write ends close with `spawn` on the spawner thread: the child's copies are the
    // only ones left.
    let pid = crate::spawner::spawn(spawn)?;
    Child::adopt(pid, stdout.into(), stderr.into())
}

/// `program` as `execvp` would find it from `workdir`: a name without a slash is looked up
/// with [`search_path`]; unchanged when it has a slash or no executable of that name is
/// found (the `exec` then says why).
fn on_path(program: &Path, env: &[(String, String)], workdir: &Path) -> PathBuf {
    let Some(name) = program.to_str().filter(|p| !p.contains('/')) else {
        return program.to_path_buf();
    };
    match search_path(name, env, workdir) {
        Found::Executable(path) => path,
        Found::NotExecutable(_) | Found::Missing(_) => program.to_path_buf(),
    }
}

/// Sends `signal` to the process group `pgid`; a group that no longer exists is not an error.
pub(crate) fn signal_group(pgid: u32, signal: Signal) {
    if let Some(pid) = to_pid(pgid) {
        let _ = rustix::process::kill_process_group(pid, signal);
    }
}

fn to_pid(pid: u32) -> Option<Pid> {
    Pid::from_raw(i32::try_from(pid).ok()?)
}

/// The fields of `/proc/<pid>/stat` this crate needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ProcStat {
    /// The state letter, such as `R`, `S` or `Z` (zombie).
    pub state: char,
    /// The process group id.
    pub pgrp: u32,
    /// The start time in clock ticks after boot (field 22).
    pub start_ticks: u64,
}

/// Reads `/proc/<pid>/stat`; `None` if the process does not exist.
pub(crate) fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain spaces and parentheses.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `fields[0]` is field 3 (state), so field N is `fields[N - 3]`.
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

/// Whether a process exists and is not a zombie.
#[cfg(test)]
pub(crate) fn is_running(pid: u32) -> bool {
    proc_stat(pid).is_some_and(|stat| !matches!(stat.state, 'Z' | 'X' | 'x'))
}

/// Kills (SIGKILL) the process group led by `pid`, but only if the process `pid` still has the
/// start time `started_at_ticks` (field 22 of `/proc/<pid>/stat`, as returned by
/// [`crate::Instance::started_at_ticks`]), so that a reused pid is never hit. A process that is
/// no longer a group leader is killed alone. Never kills the server's own process group.
/// Returns whether a signal was delivered.
pub fn kill_orphan(pid: u32, started_at_ticks: u64) -> bool {
    let Some(stat) = proc_stat(pid) else {
        return false;
    };
    if stat.start_ticks != started_at_ticks {
        return false;
    }
    let Some(target) = to_pid(pid) else {
        return false;
    };
    let own_group = rustix::process::getpgid(None).ok().map(|p| p.as_raw_pid());
    if target == rustix::process::getpid() || own_group == i32::try_from(stat.pgrp).ok() {
        return false;
    }
    if stat.pgrp == pid {
        rustix::process::kill_process_group(target, Signal::KILL).is_ok()
    } else {
        rustix::process::kill_process(target, Signal::KILL).is_ok()
    }
}

/// Describes how a process ended: `exited with status 1`, `killed by signal SIGKILL`.
pub(crate) fn describe_exit(status: &Result<ExitStatus, String>) -> String {
    let status = match status {
        Ok(status) => status,
        Err(err) => return format!("exited (its status could not be read: {err})"),
    };
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    match status.signal() {
        Some(signal) => {
            let core = if status.core_dumped() {
                " (core dumped)"
            } else {
                ""
            };
            format!("killed by signal {}{core}", signal_name(signal))
        }
        None => format!("exited ({status})"),
    }
}

pub(crate) fn signal_name(signal: i32) -> String {
    const NAMES: [(i32, &str); 15] = [
        (1, "SIGHUP"),
        (2, "SIGINT"),
        (3, "SIGQUIT"),
        (4, "SIGILL"),
        (5, "SIGTRAP"),
        (6, "SIGABRT"),
        (7, "SIGBUS"),
        (8, "SIGFPE"),
        (9, "SIGKILL"),
        (10, "SIGUSR1"),
        (11, "SIGSEGV"),
        (12, "SIGUSR2"),
        (13, "SIGPIPE"),
        (14, "SIGALRM"),
        (15, "SIGTERM"),
    ];
    NAMES
        .iter()
        .find(|(number, _)| *number == signal)
        .map(|(_, name)| (*name).to_string())
        .unwrap_or_else(|| format!("{signal}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn wait_gone(pid: u32) -> bool {
        for _ in 0..200 {
            if !is_running(pid) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        false
    }

    #[test]
    fn kill_orphan_checks_the_start_time() {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sleep")
            .arg("1000")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = child.id();
        let ticks = proc_stat(pid).unwrap().start_ticks;
        assert_eq!(proc_stat(pid).unwrap().pgrp, pid);

        assert!(
            !kill_orphan(pid, ticks + 1),
            "a different start time means another process"
        );
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            is_running(pid),
            "the process must survive a mismatching kill_orphan"
        );

        assert!(kill_orphan(pid, ticks));
        let status = child.wait().unwrap();
        assert_eq!(status.signal(), Some(9));
        assert!(
            !kill_orphan(pid, ticks),
            "a reaped process is not killed twice"
        );
        assert!(wait_gone(pid));
    }

    async fn output_of(child: &mut Child) -> String {
        use tokio::io::AsyncReadExt;
        let mut out = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut out)
            .await
            .unwrap();
        out
    }

    #[tokio::test]
    async fn a_started_child_has_its_group_default_signals_its_env_and_its_exit_status() {
        let dir = tempfile::tempdir().unwrap();
        let script = "grep -E '^(SigBlk|SigIgn)' /proc/self/status; \
                      ps -o pgid= -p $$; echo $$; echo \"$SLIPWAY_T\"; pwd; exit 3";
        let argv = ["sh".to_owned(), "-c".to_owned(), script.to_owned()];
        let env = [("SLIPWAY_T".to_owned(), "x y".to_owned())];
        let mut child = start(Path::new("sh"), &argv, &env, dir.path(), Vec::new()).unwrap();
        let out = output_of(&mut child).await;
        let status = child.wait().await.unwrap();
        assert_eq!(status.code(), Some(3), "{out}");
        let lines: Vec<&str> = out.lines().map(str::trim).collect();
        // The server ignores SIGPIPE and the spawner thread blocks every signal; the
        // program gets neither.
        assert_eq!(lines[0], "SigBlk:\t0000000000000000", "{out}");
        assert_eq!(lines[1], "SigIgn:\t0000000000000000", "{out}");
        assert_eq!(lines[2], lines[3], "its own process group: {out}");
        assert_eq!(lines[3], child.id().to_string());
        assert_eq!(lines[4], "x y");
        assert_eq!(Path::new(lines[5]), dir.path().canonicalize().unwrap());
        assert!(child.wait().await.is_ok(), "waiting again is fine");
    }

    #[tokio::test]
    async fn a_child_that_cannot_start_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let missing = start(
            Path::new("/nonexistent/prog"),
            &[],
            &[],
            dir.path(),
            Vec::new(),
        );
        assert_eq!(
            missing.err().unwrap().kind(),
            io::ErrorKind::NotFound,
            "the exec's own error"
        );
        let gone = dir.path().join("gone");
        let no_dir = start(Path::new("/bin/true"), &[], &[], &gone, Vec::new())
            .err()
            .unwrap();
        assert!(no_dir.to_string().contains("working directory"), "{no_dir}");
        // A file that is not a cgroup's: the write fails in the child, before the exec.
        let file = dir.path().join("procs");
        std::fs::write(&file, "").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o444)).unwrap();
        let argv = ["true".to_owned()];
        let procs = std::fs::OpenOptions::new().write(true).open(&file);
        let bad = start(
            Path::new("/bin/true"),
            &argv,
            &[],
            dir.path(),
            vec![procs.unwrap().into()],
        );
        // Root may write a read-only file; either way nothing panics and a start is whole.
        if let Err(e) = bad {
            assert!(e.to_string().contains("cgroup"), "{e}");
        } else {
            bad.unwrap().wait().await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_dropped_child_is_killed_and_reaped() {
        let argv = ["sleep".to_owned(), "1000".to_owned()];
        let child = start(Path::new("sleep"), &argv, &[], Path::new("/"), Vec::new()).unwrap();
        let pid = child.id();
        drop(child);
        for _ in 0..200 {
            if proc_stat(pid).is_none() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("pid {pid} is still there: {:?}", proc_stat(pid));
    }

    #[test]
    fn kill_orphan_refuses_our_own_group() {
        let me = std::process::id();
        let ticks = proc_stat(me).unwrap().start_ticks;
        assert!(!kill_orphan(me, ticks));
    }

    #[test]
    fn exit_descriptions() {
        let exited = ExitStatus::from_raw(3 << 8);
        assert_eq!(describe_exit(&Ok(exited)), "exited with status 3");
        let killed = ExitStatus::from_raw(9);
        assert_eq!(describe_exit(&Ok(killed)), "killed by signal SIGKILL");
        let segv_core = ExitStatus::from_raw(11 | 0x80);
        assert_eq!(
            describe_exit(&Ok(segv_core)),
            "killed by signal SIGSEGV (core dumped)"
        );
        assert_eq!(
            describe_exit(&Ok(ExitStatus::from_raw(40))),
            "killed by signal 40"
        );
    }

    #[test]
    fn stat_parsing_handles_odd_command_names() {
        // The command name comes from the executable's file name and may hold `)` and spaces.
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join("a) (b c");
        std::fs::copy("/bin/sleep", &odd).unwrap();
        // A fork in a parallel test may briefly hold the copy open for writing (ETXTBSY).
        let mut attempts = 0;
        let mut child = loop {
            match std::process::Command::new(&odd).arg("1000").spawn() {
                Err(err) if err.raw_os_error() == Some(26) && attempts < 50 => {
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => break other.unwrap(),
            }
        };
        let pid = child.id();
        let stat = proc_stat(pid).unwrap();
        assert!(matches!(stat.state, 'R' | 'S'), "{stat:?}");
        assert_eq!(stat.pgrp, proc_stat(std::process::id()).unwrap().pgrp);
        assert!(stat.start_ticks >= proc_stat(std::process::id()).unwrap().start_ticks);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(proc_stat(u32::MAX).is_none());
    }
}
