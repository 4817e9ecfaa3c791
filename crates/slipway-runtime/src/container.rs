//! Instances as containers, through the Docker Engine API (bollard over the engine's Unix
//! socket, `/var/run/docker.sock` unless `DOCKER_HOST` says otherwise).
//!
//! A container instance behaves as a process instance does, seen from the controller: the
//! same [`InstanceState`]s, the same readiness and liveness probes (`probe.rs`) against
//! `127.0.0.1:<port>`, where the engine publishes the container's `$PORT` (the same number
//! inside and out), restarts with the same backoff, output into the same rotated log file
//! (`logs.rs`), stop with grace. What differs is underneath: the engine runs the process,
//! applies the limits (`NanoCpus`, `Memory` = `MemorySwap`, `PidsLimit`) and tells an
//! out-of-memory kill apart (`State.OOMKilled`); a restart starts the same container again,
//! so an instance keeps one container id for its whole life.
//!
//! Containers carry labels naming the server (`slipway.server`: its data directory), the
//! app, environment, service, revision, instance and port. After a crash of the server,
//! [`Driver::leftovers`] lists the ones it left running; the controller keeps those
//! of serving revisions, and [`Driver::start`] of the same revision adopts one of them
//! (same container, same port, same log file) instead of creating a new one.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as EngineError;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, BuildImageOptionsBuilder, CreateImageOptionsBuilder,
    ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StatsOptionsBuilder, StopContainerOptionsBuilder, WaitContainerOptionsBuilder,
};
use futures_util::StreamExt;
use tokio::sync::{OnceCell, watch};
use tokio::time::{Instant, sleep, timeout};

use crate::driver::{BoxFuture, Driver, InstanceHandle, Leftover, RunningInstance};
use crate::instance::{
    Probed, describe_state, fmt_duration, probe_until_ready, show_bytes, wait_ready,
    watch_liveness, watch_readiness,
};
use crate::logs::{Output, pump};
use crate::probe;
use crate::{BACKOFF_RESET_AFTER, InstanceConfig, InstanceState, NotReady, StartError, Usage};

/// The label naming the server a container belongs to (its data directory).
pub(crate) const SERVER_LABEL: &str = "slipway.server";
/// The label naming the instance a container is.
pub(crate) const INSTANCE_LABEL: &str = "slipway.instance";
/// The label holding the loopback port the container is published on.
pub(crate) const PORT_LABEL: &str = "slipway.port";

/// Where the engine listens unless `DOCKER_HOST` says otherwise.
const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";
/// The shortest probe interval and restart delay used.
const MIN_PERIOD: Duration = Duration::from_millis(10);
/// How often the engine's stats are read for [`InstanceHandle::usage`].
const STATS_EVERY: Duration = Duration::from_secs(5);
/// How long the engine gets on top of the grace period to stop and remove a container.
const ENGINE_SLACK: Duration = Duration::from_secs(15);

/// What a container instance runs, beside the common [`InstanceConfig`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerConfig {
    /// The image to run, by id (`sha256:…`), as resolved at deploy time.
    pub image: String,
    /// The command instead of the image's own, already expanded; `None`: the image's.
    pub command: Option<Vec<String>>,
    /// Labels naming what the container is (app, environment, service, revision); the
    /// driver adds the server, instance and port labels. Adoption matches on these.
    pub labels: BTreeMap<String, String>,
    /// Host folders mounted at the same path inside (`/host/dir:/host/dir`): the socket
    /// folders of the databases the service uses, so their URLs work unchanged.
    pub binds: Vec<String>,
}

/// Runs instances as containers of the local Docker (or Podman) engine.
pub struct ContainerDriver {
    engine: Engine,
    /// The value of [`SERVER_LABEL`] on this server's containers.
    server: String,
    /// Containers a previous server left running, kept for adoption by
    /// [`ContainerDriver::leftovers`] until a start of their revision takes them.
    adoptable: Mutex<Vec<Leftover>>,
}

impl ContainerDriver {
    /// A driver whose containers are labelled as belonging to the server of `data_dir`.
    /// Connects lazily: a server without an engine runs process services as before, and
    /// only a container service's deploy says the engine is missing.
    pub fn new(data_dir: &Path) -> ContainerDriver {
        ContainerDriver {
            engine: Engine::default(),
            server: data_dir.display().to_string(),
            adoptable: Mutex::new(Vec::new()),
        }
    }

    fn take_adoptable(&self, config: &ContainerConfig) -> Option<Leftover> {
        let mut adoptable = self.adoptable.lock().unwrap_or_else(|p| p.into_inner());
        let at = adoptable.iter().position(|l| {
            l.image == config.image
                && config
                    .labels
                    .iter()
                    .all(|(k, v)| l.labels.get(k) == Some(v))
        })?;
        Some(adoptable.swap_remove(at))
    }

    async fn create(&self, docker: &Docker, config: &InstanceConfig) -> Result<String, String> {
        let Some(container) = &config.container else {
            return Err("no image given".into());
        };
        let port = config.port.to_string();
        let mut labels: HashMap<String, String> = container.labels.clone().into_iter().collect();
        labels.insert(SERVER_LABEL.into(), self.server.clone());
        labels.insert(INSTANCE_LABEL.into(), config.id.clone());
        labels.insert(PORT_LABEL.into(), port.clone());
        let env = config
            .env
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        let exposed = format!("{port}/tcp");
        let limits = &config.limits;
        let host_config = HostConfig {
            port_bindings: Some(HashMap::from([(
                exposed.clone(),
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.1".into()),
                    host_port: Some(port.clone()),
                }]),
            )])),
            nano_cpus: limits.cpu_millis.map(|m| i64::from(m) * 1_000_000),
            memory: limits.memory_bytes.and_then(|b| i64::try_from(b).ok()),
            // Memory and swap together: the limit is the limit, as for native processes.
            memory_swap: limits.memory_bytes.and_then(|b| i64::try_from(b).ok()),
            pids_limit: limits.pids.map(i64::from),
            binds: (!container.binds.is_empty()).then(|| container.binds.clone()),
            // A small init as pid 1 (the engine's `docker-init`) passes SIGTERM on to the
            // command and reaps its children: a command that sets no SIGTERM handler still
            // stops at once, as a native process does.
            init: Some(true),
            ..Default::default()
        };
        let body = ContainerCreateBody {
            image: Some(container.image.clone()),
            cmd: container.command.clone(),
            env: Some(env),
            labels: Some(labels),
            exposed_ports: Some(vec![exposed]),
            host_config: Some(host_config),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let created = docker
            .create_container(None, body)
            .await
            .map_err(|e| engine_message(&e))?;
        Ok(created.id)
    }
}

impl Driver for ContainerDriver {
    fn start(&self, config: InstanceConfig) -> BoxFuture<'_, Result<RunningInstance, StartError>> {
        Box::pin(async move {
            let id = config.id.clone();
            let failed = |message: String| StartError::Container {
                id: id.clone(),
                message,
            };
            let docker = self.engine.get().await.map_err(failed)?;
            let Some(container) = &config.container else {
                return Err(failed("the service names no image".into()));
            };
            let (container_id, config, adopted) = match self.take_adoptable(container) {
                Some(leftover) => {
                    // The same container, its port and its log file: nothing about it
                    // changes because the server restarted.
                    let mut config = config;
                    config.log_file = config
                        .log_file
                        .with_file_name(format!("{}.log", leftover.instance));
                    config.id = leftover.instance.clone();
                    config.port = leftover.port;
                    (leftover.container, config, true)
                }
                None => {
                    let id = self.create(&docker, &config).await.map_err(failed)?;
                    (id, config, false)
                }
            };
            // When the instance's log was last written: an adopted container's output is
            // followed from then on.
            let since = std::fs::metadata(&config.log_file)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs() as i64);
            let output = Output::open(&config.log_file, config.log_max_bytes, config.log_keep)
                .map_err(|source| StartError::LogFile {
                    id: config.id.clone(),
                    path: config.log_file.clone(),
                    source,
                })?;
            let shared = Arc::new(Shared {
                docker: docker.clone(),
                container: container_id,
                config,
                state: watch::Sender::new(InstanceState::Starting),
                stop: watch::Sender::new(false),
                output,
                restarts: AtomicU32::new(0),
                oom_kills: AtomicU64::new(0),
                usage: Mutex::new(None),
            });
            let short = short_id(&shared.container);
            if adopted {
                shared.output.event(&format!(
                    "adopted container {short} left running by a previous server"
                ));
                shared.follow_output_since(since);
            } else if let Err(err) = shared.run().await {
                shared.output.event(&format!("cannot start: {err}"));
                shared.remove().await;
                return Err(failed(err));
            }
            tokio::spawn(supervise(shared.clone()));
            tokio::spawn(sample_usage(Arc::downgrade(&shared)));
            Ok(Arc::new(ContainerInstance { shared }) as RunningInstance)
        })
    }

    fn remove_orphan(&self, _pid: u32, _started_at_ticks: u64) -> bool {
        // Containers are not recorded by pid; see `leftovers`.
        false
    }

    fn resolve_image(&self, image: &str) -> BoxFuture<'_, Result<String, String>> {
        let image = image.to_owned();
        Box::pin(async move {
            let docker = self.engine.get().await?;
            if let Ok(found) = docker.inspect_image(&image).await {
                return found
                    .id
                    .ok_or_else(|| format!("the engine gave no id for image `{image}`"));
            }
            // Not here: pull it (from wherever its name points), then look again.
            let options = CreateImageOptionsBuilder::default()
                .from_image(&image)
                .build();
            let mut pull = docker.create_image(Some(options), None, None);
            while let Some(step) = pull.next().await {
                if let Err(err) = step {
                    return Err(format!(
                        "image `{image}` is not on this machine and pulling it failed: {}; build or load it here first (`docker build -t {image} .`, `docker load`), or check its name",
                        engine_message(&err)
                    ));
                }
            }
            match docker.inspect_image(&image).await {
                Ok(found) => found
                    .id
                    .ok_or_else(|| format!("the engine gave no id for image `{image}`")),
                Err(err) => Err(format!(
                    "image `{image}` could not be found after pulling it: {}",
                    engine_message(&err)
                )),
            }
        })
    }

    fn run_container_job(
        &self,
        job: ContainerJob,
        on_line: crate::OnLine,
    ) -> BoxFuture<'_, Result<crate::JobOutcome, String>> {
        Box::pin(self.run_job(job, on_line))
    }

    fn build_image(
        &self,
        dockerfile: &Path,
        tag: &str,
        on_line: crate::OnLine,
    ) -> BoxFuture<'_, Result<String, String>> {
        let (dockerfile, tag) = (dockerfile.to_owned(), tag.to_owned());
        Box::pin(async move {
            let docker = self.engine.get().await?;
            let (Some(context), Some(name)) = (dockerfile.parent(), dockerfile.file_name()) else {
                return Err(format!("{} is not a file", dockerfile.display()));
            };
            if !dockerfile.is_file() {
                return Err(format!(
                    "Dockerfile {} does not exist; fix `dockerfile:` in slipway.yaml",
                    dockerfile.display()
                ));
            }
            let context = context.to_owned();
            let archive = tokio::task::spawn_blocking(move || context_archive(&context))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| {
                    format!(
                        "cannot pack the build context {}: {e}",
                        dockerfile.parent().unwrap_or(&dockerfile).display()
                    )
                })?;
            let options = BuildImageOptionsBuilder::default()
                .dockerfile(&name.to_string_lossy())
                .t(&tag)
                .rm(true)
                .forcerm(true)
                .build();
            let mut build = docker.build_image(
                options,
                None,
                Some(bollard::body_full(bytes::Bytes::from(archive))),
            );
            let mut id = None;
            while let Some(step) = build.next().await {
                let info = match step {
                    Ok(info) => info,
                    Err(err) => {
                        return Err(format!(
                            "building {} failed: {}",
                            dockerfile.display(),
                            engine_message(&err)
                        ));
                    }
                };
                if let Some(error) = info.error_detail.and_then(|d| d.message) {
                    return Err(format!(
                        "building {} failed: {}",
                        dockerfile.display(),
                        error.trim_end()
                    ));
                }
                for line in info.stream.iter().flat_map(|s| s.lines()) {
                    if !line.trim().is_empty() {
                        on_line(&mut line.to_owned());
                    }
                }
                if let Some(built) = info.aux.and_then(|aux| aux.id) {
                    id = Some(built);
                }
            }
            match id {
                Some(id) => Ok(id),
                None => docker
                    .inspect_image(&tag)
                    .await
                    .map_err(|e| engine_message(&e))?
                    .id
                    .ok_or_else(|| format!("the engine gave no id for the image built as `{tag}`")),
            }
        })
    }

    fn leftovers(&self) -> BoxFuture<'_, Result<Vec<Leftover>, String>> {
        Box::pin(async move {
            let docker = match self.engine.get().await {
                Ok(docker) => docker,
                // No engine, no containers to recover.
                Err(_) => return Ok(Vec::new()),
            };
            let options = ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&HashMap::from([(
                    "label",
                    vec![format!("{SERVER_LABEL}={}", self.server)],
                )]))
                .build();
            let found = docker
                .list_containers(Some(options))
                .await
                .map_err(|e| engine_message(&e))?;
            let mut leftovers = Vec::new();
            for summary in found {
                let (Some(container), Some(labels)) = (summary.id, summary.labels) else {
                    continue;
                };
                let labels: BTreeMap<String, String> = labels.into_iter().collect();
                let running = summary
                    .state
                    .is_some_and(|s| s.to_string().eq_ignore_ascii_case("running"));
                leftovers.push(Leftover {
                    instance: labels.get(INSTANCE_LABEL).cloned().unwrap_or_default(),
                    port: labels
                        .get(PORT_LABEL)
                        .and_then(|p| p.parse().ok())
                        .unwrap_or(0),
                    image: summary.image_id.unwrap_or_default(),
                    running,
                    container,
                    labels,
                });
            }
            Ok(leftovers)
        })
    }

    fn keep_for_adoption(&self, leftover: Leftover) {
        self.adoptable
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(leftover);
    }

    fn remove_leftover(&self, container: &str) -> BoxFuture<'_, ()> {
        let container = container.to_owned();
        Box::pin(async move {
            if let Ok(docker) = self.engine.get().await {
                let options = RemoveContainerOptionsBuilder::default().force(true).build();
                if let Err(err) = docker.remove_container(&container, Some(options)).await {
                    tracing::warn!(%container, error = %engine_message(&err), "could not remove a container");
                }
            }
        })
    }
}

/// The engine's client, connected (and its API version agreed) on first use; a failure is
/// not remembered, so an engine started later is found.
/// A one-shot command in a container of a revision's image (a container service's
/// `release:`), run to completion like a [`crate::Job`].
#[derive(Clone, Debug)]
pub struct ContainerJob {
    /// The image, by id.
    pub image: String,
    /// The command instead of the image's own (already expanded).
    pub command: Vec<String>,
    /// Its environment.
    pub env: Vec<(String, String)>,
    /// Labels naming what it is; the driver adds the server's, and `slipway.job`.
    pub labels: BTreeMap<String, String>,
    /// Host folders mounted at the same path inside (as [`ContainerConfig::binds`]).
    pub binds: Vec<String>,
    /// The service's resource limits.
    pub limits: crate::Limits,
    /// How long it may run before it is killed.
    pub timeout: Duration,
    /// How many of the newest output lines are kept.
    pub keep_lines: usize,
}

/// The label that marks a one-shot container (its value says which: `release`).
pub(crate) const JOB_LABEL: &str = "slipway.job";

impl ContainerDriver {
    /// Runs `job` in a new container to completion (or its timeout, then it is killed), its
    /// output passed line by line to `on_line`; the container is removed in every case.
    pub async fn run_job(
        &self,
        job: ContainerJob,
        on_line: crate::OnLine,
    ) -> Result<crate::JobOutcome, String> {
        use std::os::unix::process::ExitStatusExt;
        let docker = self.engine.get().await?;
        let started = std::time::Instant::now();
        let mut labels: HashMap<String, String> = job.labels.into_iter().collect();
        labels.insert(SERVER_LABEL.into(), self.server.clone());
        labels.insert(JOB_LABEL.into(), "release".into());
        let limits = &job.limits;
        let body = ContainerCreateBody {
            image: Some(job.image.clone()),
            cmd: Some(job.command.clone()),
            env: Some(job.env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(labels),
            host_config: Some(HostConfig {
                nano_cpus: limits.cpu_millis.map(|m| i64::from(m) * 1_000_000),
                memory: limits.memory_bytes.and_then(|b| i64::try_from(b).ok()),
                memory_swap: limits.memory_bytes.and_then(|b| i64::try_from(b).ok()),
                pids_limit: limits.pids.map(i64::from),
                binds: (!job.binds.is_empty()).then(|| job.binds.clone()),
                init: Some(true),
                ..Default::default()
            }),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let container = docker
            .create_container(None, body)
            .await
            .map_err(|e| engine_message(&e))?
            .id;
        let outcome = run_to_end(
            &docker,
            &container,
            &job.command,
            job.timeout,
            job.keep_lines,
            on_line,
        )
        .await;
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        if let Err(err) = docker.remove_container(&container, Some(options)).await {
            tracing::warn!(%container, error = %engine_message(&err), "could not remove a job's container");
        }
        let (end, lines) = outcome?;
        let end = match end {
            Some(code) => crate::JobEnd::Exited(std::process::ExitStatus::from_raw(
                // A wait status: the exit code in the second byte.
                (code.clamp(0, 255) as i32) << 8,
            )),
            None => crate::JobEnd::TimedOut,
        };
        Ok(crate::JobOutcome {
            end,
            lines,
            elapsed: started.elapsed(),
        })
    }
}

/// Starts the created `container`, collects its output lines until it exits or `limit`
/// passes (then kills it); returns its exit code (`None`: timed out) and the newest
/// `keep` lines.
async fn run_to_end(
    docker: &Docker,
    container: &str,
    command: &[String],
    limit: Duration,
    keep: usize,
    on_line: crate::OnLine,
) -> Result<(Option<i64>, Vec<String>), String> {
    use bollard::container::LogOutput;
    let options = AttachContainerOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .stream(true)
        .logs(true)
        .build();
    let mut attached = docker
        .attach_container(container, Some(options))
        .await
        .map_err(|e| engine_message(&e))?
        .output;
    docker.start_container(container, None).await.map_err(|e| {
        format!(
            "`{}` could not start: {}",
            command.join(" "),
            engine_message(&e)
        )
    })?;
    let lines = Arc::new(Mutex::new(std::collections::VecDeque::new()));
    let collect = {
        let lines = lines.clone();
        async move {
            // stdout and stderr, each split into lines as they come.
            let mut partial = [Vec::new(), Vec::new()];
            let emit = |buffer: &mut Vec<u8>, all: bool| {
                for mut line in take_lines(buffer, all) {
                    on_line(&mut line);
                    let mut kept = lines.lock().unwrap_or_else(|p| p.into_inner());
                    kept.push_back(line);
                    while kept.len() > keep {
                        kept.pop_front();
                    }
                }
            };
            while let Some(Ok(chunk)) = attached.next().await {
                let (which, bytes) = match chunk {
                    LogOutput::StdOut { message } | LogOutput::Console { message } => (0, message),
                    LogOutput::StdErr { message } => (1, message),
                    LogOutput::StdIn { .. } => continue,
                };
                partial[which].extend_from_slice(&bytes);
                emit(&mut partial[which], false);
            }
            for buffer in &mut partial {
                emit(buffer, true);
            }
        }
    };
    let waited = async {
        let options = WaitContainerOptionsBuilder::default()
            .condition("not-running")
            .build();
        let mut waiting = docker.wait_container(container, Some(options));
        match waiting.next().await {
            Some(Ok(response)) => Ok(response.status_code),
            Some(Err(EngineError::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(engine_message(&e)),
            None => Err("the engine ended the wait without a status".to_owned()),
        }
    };
    let both = async { tokio::join!(waited, collect).0 };
    let code = match timeout(limit, both).await {
        Ok(code) => Some(code?),
        Err(_) => {
            let _ = docker
                .kill_container(
                    container,
                    None::<bollard::query_parameters::KillContainerOptions>,
                )
                .await;
            None
        }
    };
    let kept = lines
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .drain(..)
        .collect();
    Ok((code, kept))
}

/// Takes the complete lines off the front of `buffer` (with `all`, also what remains after
/// the last line break), without their line endings.
fn take_lines(buffer: &mut Vec<u8>, all: bool) -> Vec<String> {
    let text = |bytes: &[u8]| {
        String::from_utf8_lossy(bytes)
            .trim_end_matches('\r')
            .to_owned()
    };
    let mut lines = Vec::new();
    while let Some(at) = buffer.iter().position(|b| *b == b'\n') {
        let rest = buffer.split_off(at + 1);
        lines.push(text(&buffer[..at]));
        *buffer = rest;
    }
    if all && !buffer.is_empty() {
        lines.push(text(buffer));
        buffer.clear();
    }
    lines
}

#[derive(Default)]
struct Engine {
    docker: OnceCell<Docker>,
}

impl Engine {
    async fn get(&self) -> Result<Docker, String> {
        self.docker
            .get_or_try_init(|| async {
                let host = std::env::var("DOCKER_HOST")
                    .unwrap_or_else(|_| DEFAULT_HOST.to_owned());
                let unreachable = |err: &EngineError| {
                    format!(
                        "cannot reach the Docker engine at {host} ({}); start it (`dockerd`, or `systemctl start docker`), or set DOCKER_HOST to its socket, e.g. unix:///run/podman/podman.sock",
                        engine_message(err)
                    )
                };
                let docker = Docker::connect_with_defaults().map_err(|e| unreachable(&e))?;
                // bollard speaks the newest API by default; older engines refuse it.
                let docker = timeout(Duration::from_secs(10), docker.negotiate_version())
                    .await
                    .map_err(|_| format!("the Docker engine at {host} did not answer within 10s; check that it runs (`docker version`)"))?
                    .map_err(|e| unreachable(&e))?;
                Ok(docker)
            })
            .await
            .cloned()
    }
}

/// The build context of a Dockerfile: its folder as an uncompressed tar archive.
fn context_archive(folder: &Path) -> std::io::Result<Vec<u8>> {
    let mut archive = tar::Builder::new(Vec::new());
    archive.follow_symlinks(false);
    archive.append_dir_all(".", folder)?;
    archive.into_inner()
}

/// The engine's own message for an error, without bollard's wrapping.
fn engine_message(err: &EngineError) -> String {
    match err {
        EngineError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

/// The first 12 characters of a container id, as `docker ps` shows it.
fn short_id(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// A running container instance. Dropping it without [`InstanceHandle::stop`] stops and
/// removes its container all the same (unless the runtime itself is going away, as when
/// the server is killed: then the container stays for the next server to adopt).
struct ContainerInstance {
    shared: Arc<Shared>,
}

impl Drop for ContainerInstance {
    fn drop(&mut self) {
        self.shared.stop.send_replace(true);
    }
}

struct Shared {
    docker: Docker,
    /// The container's id.
    container: String,
    config: InstanceConfig,
    state: watch::Sender<InstanceState>,
    stop: watch::Sender<bool>,
    output: Output,
    restarts: AtomicU32,
    /// Exits the engine reported as out-of-memory kills.
    oom_kills: AtomicU64,
    /// The last sample of the engine's stats.
    usage: Mutex<Option<Usage>>,
}

/// How a container's process ended, as the engine reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Exit {
    code: i64,
    oom_killed: bool,
}

impl Shared {
    /// Starts (or starts again) the container with its output attached.
    async fn run(self: &Arc<Self>) -> Result<(), String> {
        self.output.begin_process();
        // Attached before the start, so no line is lost.
        self.attach_output().await;
        self.docker
            .start_container(&self.container, None)
            .await
            .map_err(|e| engine_message(&e))?;
        self.output.event(&format!(
            "started container {} (image {})",
            short_id(&self.container),
            self.config
                .container
                .as_ref()
                .map_or("", |c| short_id(c.image.trim_start_matches("sha256:")))
        ));
        Ok(())
    }

    /// Streams the container's output into the instance's log until it ends, through the
    /// same line reader (`logs::pump`) as a process's pipes.
    async fn attach_output(self: &Arc<Self>) {
        let options = AttachContainerOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .stream(true)
            .logs(false)
            .build();
        let attached = match self
            .docker
            .attach_container(&self.container, Some(options))
            .await
        {
            Ok(attached) => attached,
            Err(err) => {
                return self.output.event(&format!(
                    "cannot follow the container's output: {}",
                    engine_message(&err)
                ));
            }
        };
        self.record_output(attached.output);
    }

    /// Follows an adopted container's output from `since` (seconds after the epoch: when
    /// its log file was last written), so what it wrote while no server ran is not lost
    /// (lines of that same second may be recorded twice).
    fn follow_output_since(self: &Arc<Self>, since: i64) {
        let options = LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .follow(true)
            .since(i32::try_from(since).unwrap_or(0))
            .build();
        let stream = self.docker.logs(&self.container, Some(options));
        self.record_output(Box::pin(stream));
    }

    /// Feeds a stream of the container's output into the instance's log, line by line.
    fn record_output(
        self: &Arc<Self>,
        mut stream: std::pin::Pin<
            Box<
                dyn futures_util::Stream<Item = Result<bollard::container::LogOutput, EngineError>>
                    + Send,
            >,
        >,
    ) {
        let (mut stdout, stdout_reader) = tokio::io::duplex(64 * 1024);
        let (mut stderr, stderr_reader) = tokio::io::duplex(64 * 1024);
        tokio::spawn(async move {
            use bollard::container::LogOutput;
            use tokio::io::AsyncWriteExt;
            while let Some(Ok(chunk)) = stream.next().await {
                let written = match chunk {
                    LogOutput::StdOut { message } | LogOutput::Console { message } => {
                        stdout.write_all(&message).await
                    }
                    LogOutput::StdErr { message } => stderr.write_all(&message).await,
                    LogOutput::StdIn { .. } => Ok(()),
                };
                if written.is_err() {
                    break;
                }
            }
        });
        for (reader, name) in [(stdout_reader, "stdout"), (stderr_reader, "stderr")] {
            let shared = self.clone();
            tokio::spawn(async move { pump(reader, name, &shared.output).await });
        }
    }

    fn publish(&self, new: InstanceState) {
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

    /// Waits until the container's process ends, and says how.
    async fn wait_exit(&self) -> Exit {
        loop {
            let options = WaitContainerOptionsBuilder::default()
                .condition("not-running")
                .build();
            let mut waiting = self.docker.wait_container(&self.container, Some(options));
            let ended = match waiting.next().await {
                Some(Ok(_)) | Some(Err(EngineError::DockerContainerWaitError { .. })) => true,
                // The wait was cut (a timeout, the engine restarting): look before waiting again.
                _ => !self.is_running().await,
            };
            if ended {
                return self.last_exit().await;
            }
            sleep(Duration::from_millis(500)).await;
        }
    }

    async fn is_running(&self) -> bool {
        match self.docker.inspect_container(&self.container, None).await {
            Ok(found) => found.state.and_then(|s| s.running).unwrap_or(false),
            Err(_) => false,
        }
    }

    async fn last_exit(&self) -> Exit {
        match self.docker.inspect_container(&self.container, None).await {
            Ok(found) => {
                let state = found.state.unwrap_or_default();
                Exit {
                    code: state.exit_code.unwrap_or(-1),
                    oom_killed: state.oom_killed.unwrap_or(false),
                }
            }
            Err(_) => Exit {
                code: -1,
                oom_killed: false,
            },
        }
    }

    fn exit_reason(&self, exit: &Exit) -> String {
        describe_exit(exit, self.config.limits.memory_bytes)
    }

    /// SIGKILLs the container's process (its restart or removal follows).
    async fn kill(&self) {
        let _ = self
            .docker
            .kill_container(
                &self.container,
                None::<bollard::query_parameters::KillContainerOptions>,
            )
            .await;
    }

    /// Stops the container with the grace period (SIGTERM, then SIGKILL), then removes it.
    async fn terminate(&self) {
        self.set_state(InstanceState::Stopping);
        let grace = self.config.grace;
        let seconds = i32::try_from(grace.as_secs_f64().ceil() as u64).unwrap_or(i32::MAX);
        self.output.event(&format!(
            "stopping container {} (SIGTERM, SIGKILL after {})",
            short_id(&self.container),
            fmt_duration(grace)
        ));
        let options = StopContainerOptionsBuilder::default().t(seconds).build();
        let stopping = self.docker.stop_container(&self.container, Some(options));
        if timeout(grace + ENGINE_SLACK, stopping).await.is_err() {
            self.kill().await;
        }
        self.remove().await;
        self.set_state(InstanceState::Stopped);
    }

    /// Removes the container (killing it if it still runs).
    async fn remove(&self) {
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        let removing = self.docker.remove_container(&self.container, Some(options));
        match timeout(ENGINE_SLACK, removing).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => self.output.event(&format!(
                "could not remove container {}: {}",
                short_id(&self.container),
                engine_message(&err)
            )),
            Err(_) => self.output.event(&format!(
                "the engine did not remove container {} within {}",
                short_id(&self.container),
                fmt_duration(ENGINE_SLACK)
            )),
        }
    }

    async fn sample(&self) -> Option<Usage> {
        let options = StatsOptionsBuilder::default()
            .stream(false)
            .one_shot(true)
            .build();
        let stats = self
            .docker
            .stats(&self.container, Some(options))
            .next()
            .await?
            .ok()?;
        let memory = stats.memory_stats.unwrap_or_default();
        // As `docker stats` shows it: without the inactive page cache.
        let cache = memory
            .stats
            .as_ref()
            .and_then(|s| {
                s.get("total_inactive_file")
                    .or_else(|| s.get("inactive_file"))
            })
            .copied()
            .unwrap_or(0);
        let cpu_nanos = stats
            .cpu_stats
            .and_then(|c| c.cpu_usage)
            .and_then(|u| u.total_usage)
            .unwrap_or(0);
        Some(Usage {
            memory_bytes: memory.usage.unwrap_or(0).saturating_sub(cache),
            cpu_nanos,
            oom_kills: 0,
            pids: stats.pids_stats.and_then(|p| p.current).unwrap_or(0),
        })
    }
}

impl Probed for Shared {
    fn config(&self) -> &InstanceConfig {
        &self.config
    }

    fn target(&self) -> probe::Target {
        probe::Target {
            port: self.config.port,
            in_env: true,
        }
    }

    fn set_state(&self, state: InstanceState) {
        self.publish(state);
    }
}

// === impl ContainerInstance ===

impl InstanceHandle for ContainerInstance {
    fn id(&self) -> &str {
        &self.shared.config.id
    }

    fn port(&self) -> u16 {
        self.shared.config.port
    }

    fn pid(&self) -> Option<u32> {
        // Not recorded by pid: the engine keeps containers, and their labels say whose
        // they are (see `ContainerDriver::leftovers`).
        None
    }

    fn started_at_ticks(&self) -> Option<u64> {
        None
    }

    fn container(&self) -> Option<&str> {
        Some(&self.shared.container)
    }

    fn state(&self) -> watch::Receiver<InstanceState> {
        self.shared.state.subscribe()
    }

    fn wait_ready(&self) -> BoxFuture<'_, Result<(), NotReady>> {
        Box::pin(wait_ready(
            self.state(),
            &self.shared.output,
            &self.shared.config.log_file,
        ))
    }

    fn last_lines(&self, n: usize) -> Vec<String> {
        self.shared.output.last_lines(n)
    }

    fn restarts(&self) -> u32 {
        self.shared.restarts.load(Ordering::SeqCst)
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.shared.stop.send_replace(true);
            let mut states = self.state();
            let bound = self.shared.config.grace + ENGINE_SLACK * 2;
            let stopped = timeout(bound, states.wait_for(|s| *s == InstanceState::Stopped))
                .await
                .is_ok_and(|r| r.is_ok());
            if !stopped {
                self.shared.remove().await;
                self.shared.set_state(InstanceState::Stopped);
            }
        })
    }

    fn usage(&self) -> Option<Usage> {
        let mut usage = (*self.shared.usage.lock().unwrap_or_else(|p| p.into_inner()))?;
        usage.oom_kills = self.shared.oom_kills.load(Ordering::SeqCst);
        Some(usage)
    }
}

/// Reads the engine's stats every few seconds while the instance lives.
async fn sample_usage(shared: std::sync::Weak<Shared>) {
    loop {
        let Some(live) = shared.upgrade() else { return };
        if *live.stop.borrow() {
            return;
        }
        if let Some(usage) = live.sample().await {
            *live.usage.lock().unwrap_or_else(|p| p.into_inner()) = Some(usage);
        }
        drop(live);
        sleep(STATS_EVERY).await;
    }
}

/// Resolves once a stop was requested.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|requested| *requested).await;
}

/// The supervisor: the life cycle of `instance.rs`, with the engine underneath.
async fn supervise(shared: Arc<Shared>) {
    let mut stop = shared.stop.subscribe();
    let config = &shared.config;
    let initial = config.restart_backoff.0.max(MIN_PERIOD);
    let max = config.restart_backoff.1.max(initial);
    let mut delay = initial;
    let mut first_start = true;
    loop {
        shared.set_state(InstanceState::Starting);
        let exit = shared.wait_exit();
        tokio::pin!(exit);
        let mut exited = false;
        let reason = tokio::select! {
            biased;
            () = stopped(&mut stop) => return shared.terminate().await,
            ended = &mut exit => {
                exited = true;
                let reason = format!("{} before becoming ready", shared.note_exit(&ended));
                if first_start {
                    return fail(&shared, reason, &mut stop).await;
                }
                reason
            }
            result = probe_until_ready(shared.as_ref()) => match result {
                Ok(()) => {
                    first_start = false;
                    shared.set_state(InstanceState::Ready);
                    let since = Instant::now();
                    let outcome = tokio::select! {
                        biased;
                        () = stopped(&mut stop) => return shared.terminate().await,
                        ended = &mut exit => {
                            exited = true;
                            shared.note_exit(&ended)
                        }
                        reason = watch_liveness(shared.as_ref()) => {
                            shared.kill().await;
                            reason
                        }
                        never = watch_readiness(shared.as_ref()) => match never {},
                    };
                    if since.elapsed() >= BACKOFF_RESET_AFTER {
                        delay = initial;
                    }
                    outcome
                }
                Err(last) => {
                    shared.kill().await;
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
            },
        };
        // The exit may not have been seen yet (a liveness kill): wait for it, bounded.
        if !exited && let Ok(ended) = timeout(ENGINE_SLACK, &mut exit).await {
            shared.note_exit(&ended);
        }
        let mut reason = reason;
        loop {
            shared.set_state(InstanceState::Backoff {
                reason: reason.clone(),
                restarts: shared.restarts.load(Ordering::SeqCst).saturating_add(1),
                retry_in: delay,
            });
            tokio::select! {
                biased;
                () = stopped(&mut stop) => return shared.terminate().await,
                () = sleep(delay) => {}
            }
            delay = delay.saturating_mul(2).min(max);
            match shared.run().await {
                Ok(()) => {
                    shared.restarts.fetch_add(1, Ordering::SeqCst);
                    break;
                }
                Err(err) => reason = format!("restart failed: {err}"),
            }
        }
    }
}

impl Shared {
    /// Records an exit in the log (and counts an out-of-memory kill); returns its reason.
    fn note_exit(&self, exit: &Exit) -> String {
        if exit.oom_killed {
            self.oom_kills.fetch_add(1, Ordering::SeqCst);
        }
        let reason = self.exit_reason(exit);
        self.output
            .event(&format!("container {} {reason}", short_id(&self.container)));
        reason
    }
}

/// Marks the instance Failed, removes its container and waits for the stop request.
async fn fail(shared: &Shared, reason: String, stop: &mut watch::Receiver<bool>) {
    shared.set_state(InstanceState::Failed { reason });
    shared.remove().await;
    stopped(stop).await;
    shared.set_state(InstanceState::Stopped);
}

/// How a container's process ended, in words, as for processes: `OOMKilled: …` with the
/// limit when the kernel killed it for memory (the engine tells that apart from a kill of
/// ours, which it also reports as 137).
fn describe_exit(exit: &Exit, memory_limit: Option<u64>) -> String {
    let status = match exit.code {
        -1 => "ended (the engine lost track of it)".to_owned(),
        code if code > 128 && code < 160 => {
            let signal = crate::process::signal_name(i32::try_from(code - 128).unwrap_or(0));
            format!("killed by signal {signal} (status {code})")
        }
        code => format!("exited with status {code}"),
    };
    if !exit.oom_killed {
        return status;
    }
    let limit = memory_limit.map_or_else(
        || "its memory limit".to_owned(),
        |b| format!("its memory limit of {}", show_bytes(b)),
    );
    format!("OOMKilled: used more than {limit} ({status})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_out_of_memory_kill_is_told_apart_from_a_kill_with_the_same_status() {
        let killed = Exit {
            code: 137,
            oom_killed: false,
        };
        assert_eq!(
            describe_exit(&killed, Some(64 << 20)),
            "killed by signal SIGKILL (status 137)"
        );
        let oom = Exit {
            oom_killed: true,
            ..killed
        };
        assert_eq!(
            describe_exit(&oom, Some(64 << 20)),
            "OOMKilled: used more than its memory limit of 64Mi (killed by signal SIGKILL (status 137))"
        );
        assert_eq!(
            describe_exit(&oom, None),
            "OOMKilled: used more than its memory limit (killed by signal SIGKILL (status 137))"
        );
        let exited = Exit {
            code: 3,
            oom_killed: false,
        };
        assert_eq!(describe_exit(&exited, None), "exited with status 3");
    }

    #[test]
    fn a_jobs_output_is_cut_into_lines_as_it_comes() {
        let mut buffer = b"one\r\ntwo\nthr".to_vec();
        assert_eq!(take_lines(&mut buffer, false), ["one", "two"]);
        assert_eq!(buffer, b"thr");
        buffer.extend_from_slice(b"ee");
        assert_eq!(take_lines(&mut buffer, false), Vec::<String>::new());
        assert_eq!(take_lines(&mut buffer, true), ["three"]);
        assert!(buffer.is_empty());
        assert_eq!(take_lines(&mut buffer, true), Vec::<String>::new());
    }
}
