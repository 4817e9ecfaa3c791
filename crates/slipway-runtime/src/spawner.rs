//! The one thread that starts every child process: instances, and build, test and release
//! commands alike.
//!
//! Linux sends the parent-death signal (`PR_SET_PDEATHSIG`) when the *thread* that forked a
//! child exits, not when the process does. A child forked on a tokio blocking-pool thread
//! (which exits after ten idle seconds) would be killed for no reason, and one forked on a
//! worker ties its life to that worker. This thread is started once and never exits, so the
//! signal fires exactly when the server dies. In the server a child is not forked at all
//! but spawned through the launcher ([`crate::launch`]), which this thread then waits for
//! until the program runs or has failed to.
//!
//! A caller hands a prepared [`tokio::process::Command`] over and blocks until it is spawned.
//! The spawn runs inside the caller's tokio runtime (`Handle::enter`), so the child's pipes
//! and exit notification belong to that runtime.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::OnceLock;
use std::sync::mpsc;

use tokio::process::{Child, Command};

type Request = (
    Command,
    Option<OwnedFd>,
    tokio::runtime::Handle,
    mpsc::SyncSender<io::Result<Child>>,
);

static SPAWNER: OnceLock<mpsc::Sender<Request>> = OnceLock::new();

fn spawner() -> &'static mpsc::Sender<Request> {
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("slipway-spawner".into())
            .spawn(move || {
                for (mut command, report, runtime, reply) in rx {
                    let _enter = runtime.enter();
                    let spawned = command.spawn();
                    // The launcher's copy of the pipe's write end is the only one left.
                    drop(command);
                    let started = match (spawned, report) {
                        (Ok(child), Some(report)) => {
                            // A child that failed to start is killed and reaped when dropped.
                            crate::launch::read_report(report).map(|()| child)
                        }
                        (spawned, _) => spawned,
                    };
                    let _ = reply.send(started);
                }
            })
            .expect("cannot start the process spawner thread");
        tx
    })
}

/// Spawns `command` on the spawner thread, registered with the calling tokio runtime.
///
/// # Errors
/// The spawn's own error, or `Other` when called outside a tokio runtime.
pub(crate) fn spawn(command: Command) -> io::Result<Child> {
    spawn_reported(command, None)
}

/// Like [`spawn`], for a launcher ([`crate::launch`]): the spawner thread also waits for its
/// report on `report` and returns its error, if any.
pub(crate) fn spawn_reported(command: Command, report: Option<OwnedFd>) -> io::Result<Child> {
    slipway_core::plane::assert_control_plane("starting a process");
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|e| io::Error::other(format!("no tokio runtime to own the child: {e}")))?;
    let (reply, answer) = mpsc::sync_channel(1);
    spawner()
        .send((command, report, runtime, reply))
        .map_err(|_| io::Error::other("the process spawner thread is gone"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("the process spawner thread is gone"))?
}
