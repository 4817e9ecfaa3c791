//! How a child process is started without copying the server.
//!
//! `fork()` copies the server's page tables and write-protects every private page it has,
//! holding the address space's lock for writing while it does. Every other thread of the
//! server pays: a router thread that touches one of its pages takes a copy-on-write fault,
//! and a fault waits for that lock. Measured with `perf` under bench/busy, the router was
//! put to sleep that way in `epoll_wait` while instances started.
//!
//! So when the server knows its own executable ([`crate::set_guard_program`]), a child is
//! started as that executable in launch mode (`slipway __exec …`, [`launch_main`]) through
//! `posix_spawn`, which shares the address space until the `exec` instead of copying it
//! (the standard library takes that path when no code has to run between fork and exec).
//! The launcher does what used to run there: it sets SIGKILL as its parent-death signal,
//! checks that the server is still its parent, joins the instance's cgroups, and executes
//! the program in its place (same pid). What fails in it comes back to the server through
//! a pipe, as the `fork` + `exec` error it replaces, so callers see the same errors.
//!
//! The launcher gets the pipe as its standard input, keeps a close-on-exec copy of it, and
//! puts /dev/null in its place: a successful `exec` closes the copy and the server reads
//! the end of the pipe; a failure writes a stage and an `errno` first.
//!
//! Without a known executable (the runtime's own tests), children are forked as before.

use std::ffi::OsString;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Stdio;

use tokio::process::Command;

/// The hidden first argument that makes the `slipway` binary a launcher.
pub const LAUNCH_ARG: &str = "__exec";

/// The first byte of a report: where the launcher failed.
const STAGE_PARENT: u8 = b'P';
const STAGE_CGROUP: u8 = b'C';
const STAGE_EXEC: u8 = b'E';

/// Makes `command` (a launcher started by [`launcher`]) report through a fresh pipe: its
/// standard input is the pipe's write end. Returns the read end, for [`read_report`].
pub(crate) fn report_pipe(command: &mut Command) -> io::Result<OwnedFd> {
    // Both ends close on exec; the write end reaches the launcher as its standard input only.
    let (read, write) = io::pipe()?;
    command.stdin(Stdio::from(write));
    Ok(read.into())
}

/// The launcher's command: the server's executable in launch mode, which joins the
/// `cgroup_files` files, then runs `program` with `argv` (`argv[0]` first). The caller adds
/// the environment, directory, output and process group as for the program itself, and
/// the report pipe with [`report_pipe`].
pub(crate) fn launcher(
    executable: &std::path::Path,
    program: &std::path::Path,
    argv: &[String],
    cgroup_files: &[PathBuf],
) -> Command {
    let mut command = Command::new(executable);
    command
        .arg0("slipway")
        .arg(LAUNCH_ARG)
        .arg(std::process::id().to_string())
        .arg(cgroup_files.len().to_string())
        .args(cgroup_files)
        .arg(program);
    if argv.is_empty() {
        command.arg(program);
    } else {
        command.args(argv);
    }
    command
}

/// Waits (on the spawner thread) until the launcher has executed the program or failed:
/// `Ok` at the end of the pipe, the launcher's error otherwise.
pub(crate) fn read_report(read: OwnedFd) -> io::Result<()> {
    let mut report = Vec::new();
    std::fs::File::from(read).read_to_end(&mut report)?;
    parse_report(&report)
}

fn parse_report(report: &[u8]) -> io::Result<()> {
    match report {
        [] => Ok(()),
        [stage, errno @ ..] if errno.len() == 4 => {
            let errno = i32::from_ne_bytes(errno.try_into().expect("four bytes"));
            let error = io::Error::from_raw_os_error(errno);
            Err(match *stage {
                STAGE_EXEC => error,
                STAGE_CGROUP => io::Error::new(
                    error.kind(),
                    format!("cannot join the instance's cgroup: {error}"),
                ),
                STAGE_PARENT => io::Error::other("the server stopped while the process started"),
                _ => io::Error::other(format!("the launcher failed: {error}")),
            })
        }
        _ => Err(io::Error::other(format!(
            "the launcher sent an unreadable report ({} bytes)",
            report.len()
        ))),
    }
}

/// Runs the launcher: `args` are the server's pid, the number of cgroup files, those files,
/// the program and its `argv` (`argv[0]` first). Never returns.
pub fn launch_main(args: impl Iterator<Item = OsString>) -> ! {
    let args: Vec<OsString> = args.collect();
    // The report pipe is standard input; keep a copy that closes on exec and give the
    // program /dev/null instead.
    // SAFETY: duplicating descriptor 0 into a new one this function owns from then on.
    let report = unsafe {
        let fd = libc::fcntl(0, libc::F_DUPFD_CLOEXEC, 3);
        (fd >= 0).then(|| OwnedFd::from_raw_fd(fd))
    };
    if let Ok(null) = std::fs::File::open("/dev/null") {
        // SAFETY: replaces descriptor 0, whose only other owner is the copy above.
        unsafe {
            libc::dup2(null.as_raw_fd(), 0);
        }
    }
    let fail = |stage: u8, error: &io::Error| -> ! {
        if let Some(report) = &report {
            let mut message = vec![stage];
            message.extend_from_slice(&error.raw_os_error().unwrap_or(libc::EIO).to_ne_bytes());
            let _ = rustix::io::write(report, &message);
        }
        std::process::exit(127);
    };
    let parsed = parse_args(&args);
    let Some((parent, cgroups, program, argv)) = parsed else {
        eprintln!(
            "slipway {LAUNCH_ARG}: usage: slipway {LAUNCH_ARG} PARENT_PID N CGROUP_FILE… PROGRAM ARGV0 [ARGS…]"
        );
        fail(b'?', &io::Error::from_raw_os_error(libc::EINVAL));
    };
    if rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
        .is_err()
        || std::os::unix::process::parent_id() != parent
    {
        fail(STAGE_PARENT, &io::Error::from_raw_os_error(libc::ESRCH));
    }
    for procs in cgroups {
        // "0" is the writer: this process, a single thread until the program starts.
        let joined = std::fs::OpenOptions::new()
            .write(true)
            .open(procs)
            .and_then(|mut f| io::Write::write_all(&mut f, b"0"));
        if let Err(e) = joined {
            fail(STAGE_CGROUP, &e);
        }
    }
    let mut command = std::process::Command::new(program);
    command.arg0(&argv[0]).args(&argv[1..]);
    let error = command.exec();
    fail(STAGE_EXEC, &error)
}

/// The parent's pid, the cgroup files, the program and its argv.
fn parse_args(args: &[OsString]) -> Option<(u32, &[OsString], &OsString, &[OsString])> {
    let parent = args.first()?.to_str()?.parse().ok()?;
    let n: usize = args.get(1)?.to_str()?.parse().ok()?;
    let cgroups = args.get(2..2 + n)?;
    let program = args.get(2 + n)?;
    let argv = args.get(3 + n..).filter(|a| !a.is_empty())?;
    Some((parent, cgroups, program, argv))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_report_is_a_start() {
        assert!(parse_report(&[]).is_ok());
    }

    #[test]
    fn an_exec_failure_comes_back_as_its_errno() {
        let mut report = vec![STAGE_EXEC];
        report.extend_from_slice(&libc::ENOEXEC.to_ne_bytes());
        let err = parse_report(&report).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOEXEC));
    }

    #[test]
    fn a_cgroup_failure_says_so() {
        let mut report = vec![STAGE_CGROUP];
        report.extend_from_slice(&libc::EACCES.to_ne_bytes());
        let err = parse_report(&report).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert!(err.to_string().contains("cgroup"), "{err}");
        assert!(parse_report(b"E1").is_err(), "a short report is an error");
    }

    #[test]
    fn arguments_are_read_back_as_written() {
        let args: Vec<OsString> = [
            "42",
            "2",
            "/a/cgroup.procs",
            "/b/cgroup.procs",
            "/bin/sh",
            "sh",
            "-c",
            "x",
        ]
        .iter()
        .map(OsString::from)
        .collect();
        let (parent, cgroups, program, argv) = parse_args(&args).unwrap();
        assert_eq!(parent, 42);
        assert_eq!(cgroups.len(), 2);
        assert_eq!(program, "/bin/sh");
        assert_eq!(argv, &args[5..]);
        assert!(parse_args(&args[..5]).is_none(), "no argv0");
        assert!(parse_args(&[OsString::from("x")]).is_none());
    }
}
