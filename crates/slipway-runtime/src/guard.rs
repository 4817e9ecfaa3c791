//! The guard: a small process between the server and a job (build, test, release) that
//! takes the job's whole process group down when the server dies.
//!
//! The parent-death signal reaches only the process it was set on: a release command
//! `sh -c "npm run migrate"` would lose `sh` with the server but leave `npm` and `node`
//! running, still migrating, with nobody to report to. The guard is the job's process-group
//! leader; it starts the command in its group, with SIGKILL as the command's own
//! parent-death signal (should the guard be killed), and asks for SIGUSR1 when the server
//! dies, on which it kills the whole group, itself included. Otherwise it waits for the
//! command and ends the same way: the same exit code, or the same signal.
//!
//! It is the `slipway` binary itself, started as `slipway __guard PROGRAM ARGV…` (see
//! [`guard_main`]); the server names its own executable with [`set_guard_program`].
//! Instances are started without it, so that the pid `status` shows is the app's own.

use std::ffi::OsString;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::sync::OnceLock;

/// The hidden first argument that makes the `slipway` binary a guard.
pub const GUARD_ARG: &str = "__guard";

static GUARD_PROGRAM: OnceLock<PathBuf> = OnceLock::new();

/// Names the executable that runs [`guard_main`] when given [`GUARD_ARG`] (the server's
/// own). Without it, jobs are started directly.
pub fn set_guard_program(path: PathBuf) {
    let _ = GUARD_PROGRAM.set(path);
}

pub(crate) fn guard_program() -> Option<&'static PathBuf> {
    GUARD_PROGRAM.get()
}

extern "C" fn kill_group(_: libc::c_int) {
    // SAFETY: kill(2) is async-signal-safe; 0 means the caller's own process group.
    unsafe {
        libc::kill(0, libc::SIGKILL);
    }
}

/// Runs the guard: `args` are the program and its `argv` (`argv[0]` first). Never returns.
pub fn guard_main(mut args: impl Iterator<Item = OsString>) -> ! {
    let (Some(program), Some(argv0)) = (args.next(), args.next()) else {
        eprintln!("slipway {GUARD_ARG}: usage: slipway {GUARD_ARG} PROGRAM ARGV0 [ARGS…]");
        std::process::exit(2);
    };
    let rest: Vec<OsString> = args.collect();
    let server = rustix::process::getppid();
    // SAFETY: installing a handler that only calls kill(2), and ignoring the stop signals
    // the server sends to the whole group (the command answers them; the guard waits).
    unsafe {
        libc::signal(libc::SIGUSR1, kill_group as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
        libc::signal(libc::SIGINT, libc::SIG_IGN);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
    }
    if rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::USR1))
        .is_err()
        || rustix::process::getppid() != server
    {
        // The server is gone already (or cannot be watched): run nothing.
        std::process::exit(125);
    }
    let guard = rustix::process::getpid();
    let mut command = std::process::Command::new(&program);
    command.arg0(&argv0).args(&rest);
    // SAFETY: only raw system calls between fork and exec (signal, prctl, getppid).
    unsafe {
        command.pre_exec(move || {
            for signal in [libc::SIGUSR1, libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
                libc::signal(signal, libc::SIG_DFL);
            }
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            if rustix::process::getppid() != Some(guard) {
                return Err(rustix::io::Errno::SRCH.into());
            }
            Ok(())
        });
    }
    let status = match command.status() {
        Ok(status) => status,
        Err(e) => {
            eprintln!("cannot start `{}`: {e}", PathBuf::from(&program).display());
            // 127, as a shell says "command not found".
            std::process::exit(127);
        }
    };
    if let Some(code) = status.code() {
        std::process::exit(code);
    }
    if let Some(signal) = status.signal() {
        // SAFETY: restoring the default action and raising the same signal on ourselves, so
        // the server sees the command's own end.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
            libc::raise(signal);
        }
    }
    std::process::exit(128 + status.signal().unwrap_or(0));
}
