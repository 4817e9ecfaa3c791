//! Slipway's runtime: runs service instances as native child processes or as containers
//! (`container.rs`, through the Docker Engine API) and watches them.
//!
//! An [`Instance`] is one running copy of a service revision. [`Instance::start`] spawns the
//! program in its own process group, captures its output into a size-rotated log file (see
//! [`read_log_lines`]), and hands it to a supervisor task that probes readiness and liveness,
//! restarts it with exponential backoff when it crashes after having been ready, and publishes
//! every change as an [`InstanceState`] on a `tokio::sync::watch` channel.
//!
//! Processes never outlive their supervision: [`Instance::stop`] sends SIGTERM to the whole
//! process group and SIGKILL after the grace period, dropping the last handle kills the group,
//! and every child carries a parent-death signal so that it dies even if the server is killed
//! with `kill -9`. After a crash of the server itself, [`kill_orphan`] removes instances recorded
//! in the state store, safe against pid reuse.
//!
//! One-shot commands (build, test, release) run through [`run_job`], started the same way and
//! bounded by a timeout.
//!
//! # Threads and the parent-death signal
//!
//! Linux delivers the parent-death signal (`PR_SET_PDEATHSIG`) when the *thread* that started the
//! child exits, not when the process exits. Every child is therefore started by one thread that
//! never exits (`spawner.rs`), whatever thread asks for it, with `clone(CLONE_VM | CLONE_VFORK)`
//! as `posix_spawn` does, which spares the server a `fork()`. The caller only needs to be inside
//! a tokio runtime, which then watches the child's pipes and its exit (`child.rs`, a pidfd).

mod cgroup;
mod child;
mod container;
mod driver;
mod guard;
mod instance;
mod job;
mod listen;
mod logs;
mod probe;
mod process;
mod spawner;

use std::path::PathBuf;
use std::time::Duration;

pub use cgroup::{Cgroups, InstanceCgroup, Limits, Usage, Version as CgroupVersion, limit_files};
pub use container::{ContainerConfig, ContainerDriver, ContainerJob};
pub use driver::{BoxFuture, Driver, InstanceHandle, Leftover, ProcessDriver, RunningInstance};
pub use guard::{GUARD_ARG, guard_main, set_guard_program};
pub use instance::{Instance, NotReady};
pub use job::{Job, JobEnd, JobOutcome, OnLine, run_job};
pub use listen::{ListenQueue, listen_queue};
pub use logs::{
    LogLine, LogTail, MAX_LINE_BYTES, RING_LINES, prune_logs, read_last_lines, read_log_lines,
};
pub use process::{StartError, kill_orphan};

/// Everything needed to run one instance. The caller has already expanded variables.
#[derive(Clone, Debug)]
pub struct InstanceConfig {
    /// A unique id such as `api-r3-1a2b`; it appears in error messages and log events.
    pub id: String,
    /// The command line. `argv[0]` is looked up in `PATH` (the `PATH` from [`Self::env`] if it
    /// sets one, else the server's); a name containing `/` is a path, relative ones are resolved
    /// against [`Self::workdir`].
    pub argv: Vec<String>,
    /// Variables added on top of the server's own environment, including `PORT`.
    pub env: Vec<(String, String)>,
    /// The working directory of the process; it must exist.
    pub workdir: PathBuf,
    /// The port the app must listen on at 127.0.0.1; probes connect to it.
    pub port: u16,
    /// Where this instance's output goes; parent directories are created.
    pub log_file: PathBuf,
    /// The log file is rotated before it would grow beyond this many bytes.
    pub log_max_bytes: u64,
    /// How many rotated files (`<file>.1` newest … `<file>.N` oldest) are kept.
    pub log_keep: usize,
    /// The readiness probe: passing means the instance may receive traffic.
    pub ready: Probe,
    /// The optional liveness probe: failing it `failures` times in a row restarts the instance.
    pub live: Option<Probe>,
    /// How long a (re)started process may take to pass its readiness probe.
    pub startup_timeout: Duration,
    /// How long a stopping process gets between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// What the instance may use (cpu, memory, pids), enforced through its cgroup when the
    /// driver has cgroups (see [`Cgroups`]).
    pub limits: Limits,
    /// The initial and maximum delay before a restart; the delay doubles after each restart
    /// and falls back to the initial value once an instance has stayed up for
    /// [`BACKOFF_RESET_AFTER`].
    pub restart_backoff: (Duration, Duration),
    /// For a container instance: its image, command and labels (`argv` and `workdir` are
    /// then unused); `None` for a native process.
    pub container: Option<ContainerConfig>,
}

/// A health probe and its schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// What to check.
    pub check: Check,
    /// The time between two probes once the instance is up (at least 10 ms is used). While a
    /// process starts, readiness probes come faster at first and slow down to this interval
    /// five seconds in (see `instance::next_pause`).
    pub interval: Duration,
    /// How long one probe may take before it counts as failed.
    pub timeout: Duration,
    /// How many failures in a row change the verdict (at least 1 is used).
    pub failures: u32,
}

/// What a probe checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// `GET http://127.0.0.1:<port><path>` with `Host: localhost`; a 2xx or 3xx status passes.
    Http {
        /// The request path, such as `/ready`.
        path: String,
    },
    /// A TCP connection to `127.0.0.1:<port>` succeeds.
    Tcp,
}

/// The observable life cycle of an instance.
#[derive(Clone, Debug, PartialEq)]
pub enum InstanceState {
    /// The process was spawned (or respawned) and has not passed its readiness probe yet.
    Starting,
    /// The readiness probe passes: the instance may receive traffic.
    Ready,
    /// The instance was ready, but its readiness probe has now failed `failures` times in a row.
    Unready {
        /// The last probe failure, such as `readiness probe failed 3 times: GET http://127.0.0.1:21345/ready -> 503 Service Unavailable`.
        reason: String,
    },
    /// The process exited or was killed by its liveness probe and waits to be restarted.
    Backoff {
        /// Why it is restarted, such as `exited with status 1`.
        reason: String,
        /// The number of the restart that is waiting (1 for the first restart).
        restarts: u32,
        /// The delay before the restart.
        retry_in: Duration,
    },
    /// [`Instance::stop`] is terminating the process group.
    Stopping,
    /// The instance was stopped; nothing runs any more.
    Stopped,
    /// The first start never became ready: it exited, or did not pass its readiness probe within
    /// the startup timeout (then its process group was killed). It is not restarted.
    Failed {
        /// Why, such as `exited with status 1 before becoming ready`.
        reason: String,
    },
}

/// An instance that stays ready this long gets its restart backoff reset to the initial delay.
pub const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(30);
