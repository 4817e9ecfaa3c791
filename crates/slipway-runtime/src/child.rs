//! A child process started by the spawner ([`crate::spawner`]): its pid, its output pipes,
//! and its exit, awaited through a pidfd.
//!
//! The pidfd becomes readable when the process ends; only then is it reaped (`waitpid` with
//! `WNOHANG` on its pid, which cannot have been reused while it is an unreaped child of
//! ours). Dropping a child that has not been reaped kills it and reaps it in the background.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use rustix::process::{Pid, PidfdFlags, Signal, WaitOptions};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::net::unix::pipe;

/// A running child of the server. Must be created inside a tokio runtime.
pub(crate) struct Child {
    pid: Pid,
    pidfd: Option<AsyncFd<OwnedFd>>,
    status: Option<ExitStatus>,
    /// The read end of its standard output, until taken.
    pub stdout: Option<pipe::Receiver>,
    /// The read end of its standard error, until taken.
    pub stderr: Option<pipe::Receiver>,
}

impl Child {
    /// Takes ownership of the child `pid` (just started, not reaped) and the read ends of its
    /// output pipes.
    ///
    /// # Errors
    /// The pidfd or the pipes could not be registered with the runtime; the child is then
    /// killed and reaped.
    pub(crate) fn adopt(pid: u32, stdout: OwnedFd, stderr: OwnedFd) -> io::Result<Child> {
        let raw = i32::try_from(pid)
            .ok()
            .and_then(Pid::from_raw)
            .ok_or_else(|| io::Error::other(format!("invalid pid {pid}")))?;
        let mut child = Child {
            pid: raw,
            pidfd: None,
            status: None,
            stdout: None,
            stderr: None,
        };
        let pidfd = tokio::runtime::Handle::try_current()
            .map_err(io::Error::other)
            .and_then(|_| Ok(rustix::process::pidfd_open(raw, PidfdFlags::NONBLOCK)?))
            .and_then(|fd| {
                // SAFETY: `fd` is an open pidfd that the `AsyncFd` owns from here on.
                unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
                    .map_err(io::Error::from)
            });
        let pidfd = match pidfd {
            Ok(pidfd) => pidfd,
            Err(e) => {
                // No pidfd: kill and reap it here, blocking (it is ours and killed).
                let _ = rustix::process::kill_process(raw, Signal::KILL);
                let _ = rustix::process::waitpid(Some(raw), WaitOptions::empty());
                return Err(e);
            }
        };
        child.pidfd = Some(pidfd);
        child.stdout = Some(pipe::Receiver::from_owned_fd(stdout)?);
        child.stderr = Some(pipe::Receiver::from_owned_fd(stderr)?);
        Ok(child)
    }

    /// Its pid.
    pub(crate) fn id(&self) -> u32 {
        self.pid.as_raw_pid().unsigned_abs()
    }

    /// Waits for it to end and reaps it (cancel-safe).
    ///
    /// # Errors
    /// The runtime's readiness or `waitpid` failed.
    pub(crate) async fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(status) = self.status {
                return Ok(status);
            }
            let Some(pidfd) = &self.pidfd else {
                return Err(io::Error::other("the process is no longer watched"));
            };
            let mut ready = pidfd.readable().await?;
            match reap(self.pid)? {
                Some(status) => {
                    self.status = Some(status);
                    self.pidfd = None;
                }
                None => ready.clear_ready(),
            }
        }
    }
}

/// Reaps `pid` if it has ended.
fn reap(pid: Pid) -> io::Result<Option<ExitStatus>> {
    match rustix::process::waitpid(Some(pid), WaitOptions::NOHANG)? {
        Some((_, status)) => Ok(Some(ExitStatus::from_raw(status.as_raw()))),
        None => Ok(None),
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let Some(pidfd) = self.pidfd.take() else {
            return;
        };
        let _ = rustix::process::pidfd_send_signal(pidfd.get_ref(), Signal::KILL);
        if matches!(reap(self.pid), Ok(Some(_))) {
            return;
        }
        let pid = self.pid;
        // Reap it once the kill has taken effect: on the runtime when there is one, else on
        // a thread of its own (a killed process ends within milliseconds).
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    let _ = pidfd.readable().await;
                    let _ = reap(pid);
                });
            }
            Err(_) => {
                let _ = std::thread::Builder::new()
                    .name("slipway-reaper".into())
                    .spawn(move || {
                        let _ = rustix::process::waitpid(Some(pid), WaitOptions::empty());
                    });
            }
        }
    }
}
