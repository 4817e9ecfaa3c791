//! The instance handle and its supervisor task: the life cycle of one service instance from
//! spawn through readiness, liveness, crash restarts with backoff, to stop.
//!
//! Each instance has one supervisor task that owns the probing and restart logic, and for each
//! spawned process a reaper task (which waits for the exit, kills what is left of the process
//! group and drains the output) plus two output readers. The supervisor publishes every
//! transition on a `watch` channel and writes it to the instance log as a `slipway` line.

use std::convert::Infallible;
use std::fmt;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::child::Child;
use rustix::process::Signal;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior, sleep, timeout};

use crate::logs::{Output, pump};
use crate::process::{self, StartError, describe_exit, signal_group};
use crate::{
    BACKOFF_RESET_AFTER, InstanceCgroup, InstanceConfig, InstanceState, Probe, Usage, probe,
};

/// The shortest probe interval and restart delay used, whatever the configuration says.
const MIN_PERIOD: Duration = Duration::from_millis(10);
/// The pause between startup probes during `EAGER`; after it, the pause doubles after every
/// failure, capped by the phase of the start it falls in (see [`next_pause`]):
///
/// - for the first `FAST_STARTUP` (1 s), at `FAST_STARTUP_PAUSE` (10 ms);
/// - then until `SETTLING` (5 s), at `MAX_STARTUP_PAUSE` (100 ms);
/// - then at the readiness probe's `interval`.
///
/// The probe interval caps every phase when it is shorter. Probes every millisecond for the
/// first 10 ms: a compiled app (the bench backend, Go, Rust) listens 3-5 ms after Slipway
/// starts it (cgroup, spawn, its own start) and is seen ready within a millisecond of
/// it, not at the next of the doubling probes (6 or 14 ms), which cost a redeploy and a cold
/// start several milliseconds. After that the probes come at 12, 16, 24 ms and every 10 ms
/// (an app that needs 50 ms is seen by 54 ms): a refused connect costs microseconds, but a
/// thousand instances starting at once probe a thousand times as often.
const FIRST_PROBE_PAUSE: Duration = Duration::from_millis(1);
/// How long startup probes come every `FIRST_PROBE_PAUSE`.
const EAGER: Duration = Duration::from_millis(10);
/// How long startup probes stay at most `FAST_STARTUP_PAUSE` apart: about a hundred cheap
/// probes (a refused connect costs microseconds) while most apps start.
const FAST_STARTUP: Duration = Duration::from_secs(1);
/// The longest pause between startup probes during `FAST_STARTUP`.
const FAST_STARTUP_PAUSE: Duration = Duration::from_millis(10);
/// Until when startup probes stay at most `MAX_STARTUP_PAUSE` apart: interpreted frameworks
/// (Django or Flask under gunicorn, Rails, Node) typically start within a few seconds, and are
/// seen within 100 ms of it, for about 40 more probes.
const SETTLING: Duration = Duration::from_secs(5);
/// The longest pause between startup probes from `FAST_STARTUP` to `SETTLING`. Past
/// `SETTLING` the pause doubles on up to the probe interval: an app that answers every probe
/// with a 500 for the whole startup timeout then sees about one probe per interval, not ten a
/// second (every one of them a line in its access log), and an app that is slow to start is
/// seen ready within one probe interval, as it is once it runs.
const MAX_STARTUP_PAUSE: Duration = Duration::from_millis(100);
/// How long the output of an exited process is drained before the readers are abandoned.
const OUTPUT_DRAIN: Duration = Duration::from_secs(2);
/// How long to wait for a process to disappear after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// How many of the last output lines a [`NotReady`] error carries (after up to
/// [`crate::logs::FIRST_ERROR_LINES`] earlier error lines).
const NOT_READY_LINES: usize = 20;

/// A running service instance. Cloning is cheap; all clones control the same instance.
///
/// Dropping the last clone without [`Instance::stop`] kills the process group at once.
#[derive(Clone)]
pub struct Instance {
    handle: Arc<Handle>,
}

/// Owned only by [`Instance`] clones, so that its drop means "no handle is left".
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.request_stop(true);
    }
}

/// The state shared by the handles, the supervisor and the per-process tasks.
struct Shared {
    config: InstanceConfig,
    /// The resolved path of `argv[0]`.
    program: PathBuf,
    state: watch::Sender<InstanceState>,
    /// Becomes `true` once a stop was requested.
    stop: watch::Sender<bool>,
    slot: Mutex<Slot>,
    output: Output,
    restarts: AtomicU32,
    /// The instance's cgroup (limits and usage), when the driver has cgroups.
    cgroup: Option<InstanceCgroup>,
    /// The cgroup's count of out-of-memory kills as of the last exit.
    oom_kills: AtomicU64,
    /// Whether the last process to exit was killed for memory.
    last_exit_oom: AtomicBool,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The supervisor and every handle are gone, and with them the processes.
        if let Some(cgroup) = &self.cgroup {
            cgroup.remove();
        }
    }
}

/// The current process, and whether spawning is still allowed. Spawning happens under this
/// lock, so a stop request can never miss a process that is being spawned.
#[derive(Default)]
struct Slot {
    /// The pid and start time (clock ticks) of the running process.
    current: Option<(u32, Option<u64>)>,
    stopping: bool,
}

/// Why [`Instance::wait_ready`] gave up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotReady {
    /// Such as `exited with status 1 before becoming ready`.
    pub reason: String,
    /// The output lines that explain it, oldest first: the first error-looking lines of the
    /// process (up to 10) that came before its last 20 lines, then those last lines, with a
    /// line such as `… (37 lines not shown)` where lines were left out.
    pub last_lines: Vec<String>,
    /// The instance's log file, which has all of its output.
    pub log_file: PathBuf,
    /// How many lines the instance wrote to its log file (output and the runtime's events).
    pub log_lines: u64,
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)?;
        if !self.last_lines.is_empty() {
            f.write_str("\noutput:")?;
            for line in &self.last_lines {
                write!(f, "\n  {line}")?;
            }
        }
        write!(f, "\nall output: {}", self.log_file.display())
    }
}

impl std::error::Error for NotReady {}

impl Instance {
    /// Spawns the instance and starts supervising it; it returns at once, in state
    /// [`InstanceState::Starting`]. Use [`Instance::wait_ready`] to wait for readiness.
    ///
    /// Must be called from a tokio task on a runtime thread that lives as long as the server,
    /// never from `spawn_blocking` (see the crate documentation on the parent-death signal).
    pub async fn start(config: InstanceConfig) -> Result<Instance, StartError> {
        Instance::start_in(config, None).await
    }

    /// Like [`Instance::start`], with every process of the instance in `cgroup` (its limits
    /// apply from the first instruction, and [`Instance::usage`] reads it). The cgroup is
    /// removed when the instance is gone.
    pub async fn start_in(
        config: InstanceConfig,
        cgroup: Option<InstanceCgroup>,
    ) -> Result<Instance, StartError> {
        let program = process::resolve(&config)?;
        let output = Output::open(&config.log_file, config.log_max_bytes, config.log_keep)
            .map_err(|source| StartError::LogFile {
                id: config.id.clone(),
                path: config.log_file.clone(),
                source,
            })?;
        let shared = Arc::new(Shared {
            config,
            program,
            state: watch::Sender::new(InstanceState::Starting),
            stop: watch::Sender::new(false),
            slot: Mutex::new(Slot::default()),
            output,
            restarts: AtomicU32::new(0),
            oom_kills: AtomicU64::new(cgroup.as_ref().map_or(0, InstanceCgroup::oom_kills)),
            cgroup,
            last_exit_oom: AtomicBool::new(false),
        });
        let first = match shared.spawn_process() {
            Ok(Some(running)) => running,
            // No handle exists yet, so nothing can have requested a stop; handle it anyway.
            Ok(None) => {
                let err = std::io::Error::other("the instance was stopped while starting");
                return Err(process::spawn_error(&shared.config, err));
            }
            Err(err) => {
                shared.output.event(&format!("cannot start: {err}"));
                return Err(process::spawn_error(&shared.config, err));
            }
        };
        tokio::spawn(supervise(shared.clone(), first));
        Ok(Instance {
            handle: Arc::new(Handle { shared }),
        })
    }

    fn shared(&self) -> &Shared {
        &self.handle.shared
    }

    /// The instance id from the configuration.
    pub fn id(&self) -> &str {
        &self.shared().config.id
    }

    /// The port the instance listens on.
    pub fn port(&self) -> u16 {
        self.shared().config.port
    }

    /// The pid of the current process (the leader of its process group), if one is running.
    pub fn pid(&self) -> Option<u32> {
        self.shared().lock_slot().current.map(|(pid, _)| pid)
    }

    /// The start time of the current process in clock ticks after boot (field 22 of
    /// `/proc/<pid>/stat`); store it with the pid and pass both to [`crate::kill_orphan`].
    pub fn started_at_ticks(&self) -> Option<u64> {
        self.shared()
            .lock_slot()
            .current
            .and_then(|(_, ticks)| ticks)
    }

    /// A receiver of the instance's state; it sees every change from now on.
    pub fn state(&self) -> watch::Receiver<InstanceState> {
        self.shared().state.subscribe()
    }

    /// Waits until the instance is [`InstanceState::Ready`]. Fails if the first start failed
    /// ([`InstanceState::Failed`]) or the instance was stopped first. After a crash of a
    /// once-ready instance it keeps waiting through the restarts.
    pub async fn wait_ready(&self) -> Result<(), NotReady> {
        let shared = self.shared();
        wait_ready(self.state(), &shared.output, &shared.config.log_file).await
    }

    /// The last `n` lines the instance's processes wrote (both streams), oldest first; at most
    /// [`crate::RING_LINES`] are kept.
    pub fn last_lines(&self, n: usize) -> Vec<String> {
        self.shared().output.last_lines(n)
    }

    /// How many times the process was respawned.
    pub fn restarts(&self) -> u32 {
        self.shared().restarts.load(Ordering::SeqCst)
    }

    /// What the instance's processes have used, from its cgroup; `None` without one.
    pub fn usage(&self) -> Option<Usage> {
        self.shared().cgroup.as_ref().map(InstanceCgroup::usage)
    }

    /// Stops the instance: SIGTERM to the process group, up to `grace` for the process to
    /// exit, then SIGKILL to the group; returns in state [`InstanceState::Stopped`]. No restart
    /// happens afterwards. Calling it again, or concurrently, is harmless.
    pub async fn stop(&self) {
        let shared = self.shared();
        shared.request_stop(false);
        let mut states = self.state();
        let bound = shared.config.grace.saturating_add(KILL_WAIT + OUTPUT_DRAIN);
        let stopped = timeout(bound, states.wait_for(|s| *s == InstanceState::Stopped)).await;
        if !matches!(stopped, Ok(Ok(_))) {
            // The supervisor is gone or stuck; make sure nothing keeps running.
            shared.request_stop(true);
            shared.set_state(InstanceState::Stopped);
        }
    }
}

impl Shared {
    fn lock_slot(&self) -> MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forbids further spawns, optionally SIGKILLs the current group, and wakes the supervisor.
    fn request_stop(&self, kill: bool) {
        let current = {
            let mut slot = self.lock_slot();
            slot.stopping = true;
            slot.current
        };
        if kill && let Some((pid, _)) = current {
            signal_group(pid, Signal::KILL);
        }
        self.stop.send_replace(true);
    }

    /// Where the probes connect.
    fn target(&self) -> probe::Target {
        let port = self.config.port;
        probe::Target {
            port,
            in_env: self
                .config
                .env
                .iter()
                .any(|(name, value)| name == "PORT" && value.parse() == Ok(port)),
        }
    }

    /// Publishes a new state (if it differs) and records it in the log.
    fn set_state(&self, new: InstanceState) {
        let event = describe_state(&new);
        let changed = self.state.send_if_modified(|state| {
            if *state == new {
                false
            } else {
                *state = new;
                true
            }
        });
        if changed {
            self.output.event(&event);
        }
    }

    /// How the last process ended, in words: `OOMKilled: …` when the kernel killed it for
    /// exceeding its memory limit (told apart from a SIGKILL Slipway sent by the cgroup's
    /// count of out-of-memory kills), else as [`describe_exit`] says.
    fn exit_reason(&self, status: &Result<ExitStatus, String>) -> String {
        if !self.last_exit_oom.load(Ordering::SeqCst) {
            return describe_exit(status);
        }
        let limit = self.config.limits.memory_bytes.map_or_else(
            || "its memory limit".to_owned(),
            |b| format!("its memory limit of {}", show_bytes(b)),
        );
        format!(
            "OOMKilled: used more than {limit} ({})",
            describe_exit(status)
        )
    }

    /// Spawns a process with its reaper and output readers; `None` once a stop was requested.
    fn spawn_process(self: &Arc<Self>) -> std::io::Result<Option<Running>> {
        let mut slot = self.lock_slot();
        if slot.stopping {
            return Ok(None);
        }
        let mut child = process::spawn(&self.config, &self.program, self.cgroup.as_ref())?;
        let pid = child.id();
        let ticks = process::proc_stat(pid).map(|stat| stat.start_ticks);
        slot.current = Some((pid, ticks));
        drop(slot);
        // Before the readers start: the error lines remembered are this process's.
        self.output.begin_process();

        let mut readers = Vec::with_capacity(2);
        if let Some(stdout) = child.stdout.take() {
            let shared = self.clone();
            readers.push(tokio::spawn(async move {
                pump(stdout, "stdout", &shared.output).await;
            }));
        }
        if let Some(stderr) = child.stderr.take() {
            let shared = self.clone();
            readers.push(tokio::spawn(async move {
                pump(stderr, "stderr", &shared.output).await;
            }));
        }
        self.output.event(&format!(
            "spawned pid {pid}: {}",
            self.config.argv.join(" ")
        ));
        let (exit_tx, exit_rx) = oneshot::channel();
        tokio::spawn(reap(self.clone(), child, pid, readers, exit_tx));
        Ok(Some(Running {
            pid,
            exit: exit_rx,
            status: None,
        }))
    }
}

pub(crate) fn describe_state(state: &InstanceState) -> String {
    match state {
        InstanceState::Starting => "starting".into(),
        InstanceState::Ready => "ready".into(),
        InstanceState::Unready { reason } => format!("unready: {reason}"),
        InstanceState::Backoff {
            reason,
            restarts,
            retry_in,
        } => format!(
            "restart {restarts} in {}: {reason}",
            fmt_duration(*retry_in)
        ),
        InstanceState::Stopping => "stopping".into(),
        InstanceState::Stopped => "stopped".into(),
        InstanceState::Failed { reason } => format!("failed: {reason}"),
    }
}

/// Formats a duration for messages: `30s`, `250ms`, `1.5s`.
pub(crate) fn fmt_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// How a process ended, as delivered by its reaper.
type Exit = Result<ExitStatus, String>;

/// One spawned process, as seen by the supervisor.
struct Running {
    pid: u32,
    exit: oneshot::Receiver<Exit>,
    status: Option<Exit>,
}

impl Running {
    /// Waits for the process to end (cancel-safe; returns at once when it already ended).
    async fn wait(&mut self) -> Exit {
        if let Some(status) = &self.status {
            return status.clone();
        }
        let status = (&mut self.exit)
            .await
            .unwrap_or_else(|_| Err("its supervision ended".to_string()));
        self.status = Some(status.clone());
        status
    }

    /// SIGKILLs the group and waits (bounded) for the process to be reaped.
    async fn kill(&mut self) {
        if self.status.is_none() {
            signal_group(self.pid, Signal::KILL);
        }
        let _ = timeout(KILL_WAIT, self.wait()).await;
    }
}

/// Kills a process group when dropped, unless disarmed: covers a reaper task that is dropped
/// because the runtime shuts down.
struct GroupGuard {
    pgid: u32,
    armed: bool,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            signal_group(self.pgid, Signal::KILL);
        }
    }
}

/// Waits for a process to exit, then kills the rest of its group (so that grandchildren cannot
/// hold the port or the output pipes), drains its output and reports the exit status.
async fn reap(
    shared: Arc<Shared>,
    mut child: Child,
    pid: u32,
    readers: Vec<JoinHandle<()>>,
    exit: oneshot::Sender<Exit>,
) {
    let mut guard = GroupGuard {
        pgid: pid,
        armed: true,
    };
    let status = child.wait().await.map_err(|err| err.to_string());
    guard.armed = false;
    {
        let mut slot = shared.lock_slot();
        if slot.current.is_some_and(|(current, _)| current == pid) {
            slot.current = None;
        }
    }
    // The pid stays reserved while the group has members, so this cannot hit another process
    // unless the group is already empty and the pid was reused in the last microseconds.
    signal_group(pid, Signal::KILL);
    for mut reader in readers {
        if timeout(OUTPUT_DRAIN, &mut reader).await.is_err() {
            reader.abort();
        }
    }
    if let Some(cgroup) = &shared.cgroup {
        let kills = cgroup.oom_kills();
        let before = shared.oom_kills.swap(kills, Ordering::SeqCst);
        shared.last_exit_oom.store(kills > before, Ordering::SeqCst);
    }
    shared
        .output
        .event(&format!("pid {pid} {}", shared.exit_reason(&status)));
    let _ = exit.send(status);
}

/// Resolves once a stop was requested.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|requested| *requested).await;
}

/// The supervisor: drives one instance through its life cycle until it is stopped.
async fn supervise(shared: Arc<Shared>, mut running: Running) {
    let mut stop = shared.stop.subscribe();
    let config = &shared.config;
    let initial = config.restart_backoff.0.max(MIN_PERIOD);
    let max = config.restart_backoff.1.max(initial);
    let mut delay = initial;
    let mut first_start = true;
    loop {
        shared.set_state(InstanceState::Starting);
        let reason = match startup(&shared, &mut running, &mut stop).await {
            Startup::Stop => return terminate(&shared, &mut running).await,
            Startup::Exited(status) => {
                let reason = format!("{} before becoming ready", shared.exit_reason(&status));
                if first_start {
                    return fail(&shared, reason, &mut stop).await;
                }
                reason
            }
            Startup::TimedOut(last) => {
                running.kill().await;
                let reason = format!(
                    "not ready after {}: last probe: {}",
                    fmt_duration(config.startup_timeout),
                    last.as_deref().unwrap_or("none completed")
                );
                if first_start {
                    return fail(&shared, reason, &mut stop).await;
                }
                reason
            }
            Startup::Ready => {
                first_start = false;
                shared.set_state(InstanceState::Ready);
                let since = Instant::now();
                let outcome = serve(&shared, &mut running, &mut stop).await;
                if since.elapsed() >= BACKOFF_RESET_AFTER {
                    delay = initial;
                }
                match outcome {
                    Serve::Stop => return terminate(&shared, &mut running).await,
                    Serve::Exited(status) => shared.exit_reason(&status),
                    Serve::LivenessFailed(reason) => {
                        running.kill().await;
                        reason
                    }
                }
            }
        };
        match restart(&shared, reason, &mut delay, max, &mut stop).await {
            Some(next) => running = next,
            None => return shared.set_state(InstanceState::Stopped),
        }
    }
}

enum Startup {
    Ready,
    Exited(Exit),
    /// The startup timeout passed; carries the last probe failure.
    TimedOut(Option<String>),
    Stop,
}

/// Probes readiness right away, then after pauses given by [`next_pause`], until it passes,
/// the process exits, the startup timeout passes, or a stop is requested.
async fn startup(
    shared: &Shared,
    running: &mut Running,
    stop: &mut watch::Receiver<bool>,
) -> Startup {
    tokio::select! {
        biased;
        () = stopped(stop) => Startup::Stop,
        status = running.wait() => Startup::Exited(status),
        result = probe_until_ready(shared) => match result {
            Ok(()) => Startup::Ready,
            Err(last) => Startup::TimedOut(last),
        },
    }
}

/// What the probing loops need of an instance, whichever driver runs it (`Shared` here,
/// the container driver's own): its config, where to probe, and where to publish states.
pub(crate) trait Probed {
    fn config(&self) -> &InstanceConfig;
    fn target(&self) -> probe::Target;
    fn set_state(&self, state: InstanceState);
}

impl Probed for Shared {
    fn config(&self) -> &InstanceConfig {
        &self.config
    }

    fn target(&self) -> probe::Target {
        Shared::target(self)
    }

    fn set_state(&self, state: InstanceState) {
        Shared::set_state(self, state);
    }
}

/// Probes readiness right away, then after pauses given by [`next_pause`], until it passes
/// (`Ok`) or the startup timeout passes (`Err` with the last probe failure).
pub(crate) async fn probe_until_ready(instance: &impl Probed) -> Result<(), Option<String>> {
    let config = instance.config();
    let begun = Instant::now();
    let deadline = begun + config.startup_timeout;
    let interval = config.ready.interval.max(MIN_PERIOD);
    let mut pause = FIRST_PROBE_PAUSE.min(interval);
    let mut last = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(last);
        }
        let limit = config.ready.timeout.min(left);
        match probe::run(&config.ready.check, instance.target(), limit).await {
            Ok(()) => return Ok(()),
            // A probe cut short by the startup deadline says less than the one before it.
            Err(_) if limit < config.ready.timeout && last.is_some() => {}
            Err(reason) => last = Some(reason),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(last);
        }
        sleep(pause.min(left)).await;
        pause = next_pause(begun.elapsed(), pause, interval);
    }
}

/// The pause before the next startup probe, `elapsed` after the process was spawned, when the
/// pause before the last probe was `previous`: `FIRST_PROBE_PAUSE` during `EAGER`, then twice
/// `previous`, capped by the phase of the start (10 ms during `FAST_STARTUP`, 100 ms until
/// `SETTLING`, then `interval`), and by `interval` (at least `MIN_PERIOD`) throughout.
pub(crate) fn next_pause(elapsed: Duration, previous: Duration, interval: Duration) -> Duration {
    let interval = interval.max(MIN_PERIOD);
    if elapsed < EAGER {
        return FIRST_PROBE_PAUSE.min(interval);
    }
    let cap = if elapsed < FAST_STARTUP {
        FAST_STARTUP_PAUSE.min(interval)
    } else if elapsed < SETTLING {
        MAX_STARTUP_PAUSE.min(interval)
    } else {
        interval
    };
    previous.saturating_mul(2).min(cap)
}

enum Serve {
    Stop,
    Exited(Exit),
    LivenessFailed(String),
}

/// Watches a ready instance until it exits, fails its liveness probe, or a stop is requested;
/// meanwhile readiness failures move it between Ready and Unready.
async fn serve(shared: &Shared, running: &mut Running, stop: &mut watch::Receiver<bool>) -> Serve {
    tokio::select! {
        biased;
        () = stopped(stop) => Serve::Stop,
        status = running.wait() => Serve::Exited(status),
        reason = watch_liveness(shared) => Serve::LivenessFailed(reason),
        never = watch_readiness(shared) => match never {},
    }
}

/// A ticker for a probe's interval, first firing one interval from now.
fn ticker(probe: &Probe) -> tokio::time::Interval {
    let period = probe.interval.max(MIN_PERIOD);
    let mut ticker = tokio::time::interval_at(Instant::now() + period, period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticker
}

/// Moves a ready instance between Ready and Unready as its readiness probe passes or fails
/// `failures` times in a row; never returns.
pub(crate) async fn watch_readiness(shared: &impl Probed) -> Infallible {
    let probe = &shared.config().ready;
    let threshold = probe.failures.max(1);
    let mut ticker = ticker(probe);
    let mut failures = 0u32;
    loop {
        ticker.tick().await;
        match probe::run(&probe.check, shared.target(), probe.timeout).await {
            Ok(()) => {
                failures = 0;
                shared.set_state(InstanceState::Ready);
            }
            Err(reason) => {
                failures = failures.saturating_add(1);
                if failures >= threshold {
                    shared.set_state(InstanceState::Unready {
                        reason: format!("readiness probe failed {threshold} times: {reason}"),
                    });
                }
            }
        }
    }
}

/// Returns the reason once the liveness probe failed `failures` times in a row; never returns
/// without a liveness probe.
pub(crate) async fn watch_liveness(shared: &impl Probed) -> String {
    let Some(probe) = &shared.config().live else {
        return std::future::pending().await;
    };
    let threshold = probe.failures.max(1);
    let mut ticker = ticker(probe);
    let mut failures = 0u32;
    loop {
        ticker.tick().await;
        match probe::run(&probe.check, shared.target(), probe.timeout).await {
            Ok(()) => failures = 0,
            Err(reason) => {
                failures = failures.saturating_add(1);
                if failures >= threshold {
                    return format!("liveness probe failed {threshold} times: {reason}");
                }
            }
        }
    }
}

/// Waits out the backoff delay and respawns; `None` if a stop was requested meanwhile.
async fn restart(
    shared: &Arc<Shared>,
    mut reason: String,
    delay: &mut Duration,
    max: Duration,
    stop: &mut watch::Receiver<bool>,
) -> Option<Running> {
    loop {
        shared.set_state(InstanceState::Backoff {
            reason: reason.clone(),
            restarts: shared.restarts.load(Ordering::SeqCst).saturating_add(1),
            retry_in: *delay,
        });
        tokio::select! {
            biased;
            () = stopped(stop) => return None,
            () = sleep(*delay) => {}
        }
        *delay = delay.saturating_mul(2).min(max);
        match shared.spawn_process() {
            Ok(Some(running)) => {
                shared.restarts.fetch_add(1, Ordering::SeqCst);
                return Some(running);
            }
            Ok(None) => return None,
            Err(err) => {
                let err = process::spawn_error(&shared.config, err);
                reason = format!("restart failed: {err}");
            }
        }
    }
}

/// Marks the instance Failed and waits for the stop request that ends supervision.
async fn fail(shared: &Shared, reason: String, stop: &mut watch::Receiver<bool>) {
    shared.set_state(InstanceState::Failed { reason });
    stopped(stop).await;
    shared.set_state(InstanceState::Stopped);
}

/// SIGTERM to the group, up to `grace` to exit, then SIGKILL; ends in Stopped.
async fn terminate(shared: &Shared, running: &mut Running) {
    shared.set_state(InstanceState::Stopping);
    if running.status.is_none() {
        shared
            .output
            .event(&format!("sending SIGTERM to process group {}", running.pid));
        signal_group(running.pid, Signal::TERM);
    }
    if timeout(shared.config.grace, running.wait()).await.is_err() {
        shared.output.event(&format!(
            "still running {} after SIGTERM; sending SIGKILL to process group {}",
            fmt_duration(shared.config.grace),
            running.pid
        ));
        running.kill().await;
    }
    shared.set_state(InstanceState::Stopped);
}

/// Waits on `states` until the instance is ready; fails with the output that explains why
/// when its first start failed or it was stopped first (see [`Instance::wait_ready`]; the
/// container driver's handles wait the same way).
pub(crate) async fn wait_ready(
    mut states: watch::Receiver<InstanceState>,
    output: &Output,
    log_file: &std::path::Path,
) -> Result<(), NotReady> {
    let outcome = states
        .wait_for(|s| {
            matches!(
                s,
                InstanceState::Ready
                    | InstanceState::Failed { .. }
                    | InstanceState::Stopping
                    | InstanceState::Stopped
            )
        })
        .await
        .map(|state| state.clone());
    let reason = match outcome {
        Ok(InstanceState::Ready) => return Ok(()),
        Ok(InstanceState::Failed { reason }) => reason,
        _ => "the instance was stopped before it became ready".to_string(),
    };
    Err(NotReady {
        reason,
        last_lines: output.explaining_lines(NOT_READY_LINES),
        log_file: log_file.to_path_buf(),
        log_lines: output.logged_lines(),
    })
}

/// Bytes in the largest binary unit that divides them, as the spec writes them: `64Mi`.
pub(crate) fn show_bytes(bytes: u64) -> String {
    for (suffix, shift) in [("Gi", 30), ("Mi", 20), ("Ki", 10)] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{suffix}", bytes >> shift);
        }
    }
    format!("{bytes} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(fmt_duration(Duration::from_secs(30)), "30s");
        assert_eq!(fmt_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(fmt_duration(Duration::ZERO), "0ms");
    }

    /// The times of the startup probes within `until`, with probes taking no time.
    fn probe_times(interval: Duration, until: Duration) -> Vec<Duration> {
        let mut times = vec![Duration::ZERO];
        let mut pause = FIRST_PROBE_PAUSE.min(interval.max(MIN_PERIOD));
        loop {
            let next = *times.last().unwrap() + pause;
            if next > until {
                return times;
            }
            times.push(next);
            pause = next_pause(next, pause, interval);
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn startup_probes_every_ms_for_10ms_then_double_and_stay_at_10ms_for_the_first_second() {
        let times = probe_times(Duration::from_secs(5), Duration::from_secs(1));
        assert_eq!(
            times[..17],
            [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 16, 24, 34, 44, 54].map(ms)
        );
        assert!(times.windows(2).all(|w| w[1] - w[0] <= ms(10)));
        assert!((105..=115).contains(&times.len()), "{}", times.len());
    }

    #[test]
    fn startup_pauses_reach_100ms_after_a_second_then_the_interval_after_five() {
        let second = Duration::from_secs(1);
        assert_eq!(next_pause(second, ms(10), Duration::from_secs(5)), ms(20));
        assert_eq!(next_pause(second, ms(80), Duration::from_secs(5)), ms(100));
        assert_eq!(
            next_pause(
                Duration::from_millis(4_999),
                ms(100),
                Duration::from_secs(5)
            ),
            ms(100)
        );
        let settled = Duration::from_secs(5);
        let mut pauses = vec![ms(100)];
        for _ in 0..7 {
            let last = *pauses.last().unwrap();
            pauses.push(next_pause(settled, last, Duration::from_secs(5)));
        }
        assert_eq!(pauses, [100, 200, 400, 800, 1600, 3200, 5000, 5000].map(ms));
    }

    #[test]
    fn a_short_interval_caps_every_phase() {
        let interval = ms(50);
        assert_eq!(next_pause(ms(20), ms(8), interval), ms(10));
        assert_eq!(next_pause(Duration::ZERO, ms(1), interval), ms(1));
        assert_eq!(next_pause(Duration::from_secs(2), ms(40), interval), ms(50));
        assert_eq!(
            next_pause(Duration::from_secs(60), ms(50), interval),
            ms(50)
        );
        assert_eq!(next_pause(ms(20), ms(2), ms(3)), ms(4), "at least 10 ms");
        assert_eq!(next_pause(Duration::from_secs(9), ms(10), ms(1)), ms(10));
    }

    #[test]
    fn an_app_that_never_gets_ready_sees_about_one_probe_per_interval_after_five_seconds() {
        let minute = Duration::from_secs(60);
        // 110 in the first second, 40 until 5 s, 5 while doubling, then one every 5 s (10).
        let times = probe_times(Duration::from_secs(5), minute);
        assert!((160..=170).contains(&times.len()), "{}", times.len());
        let late = times
            .iter()
            .filter(|t| **t >= Duration::from_secs(10))
            .count();
        assert_eq!(late, 10);
        // With the default interval of 1 s: one a second once it is reached.
        let times = probe_times(Duration::from_secs(1), minute);
        let late = times
            .iter()
            .filter(|t| **t >= Duration::from_secs(10))
            .count();
        assert_eq!(late, 50);
    }

    #[test]
    fn not_ready_displays_reason_and_output() {
        let err = NotReady {
            reason: "exited with status 1 before becoming ready".into(),
            last_lines: vec!["Error: config missing".into()],
            log_file: "/srv/logs/web-r3-1a2b.log".into(),
            log_lines: 12,
        };
        assert_eq!(
            err.to_string(),
            "exited with status 1 before becoming ready\noutput:\n  Error: config missing\n\
             all output: /srv/logs/web-r3-1a2b.log"
        );
    }
}
