//! The seam between the controller and whatever runs an instance.
//!
//! The controller needs the same few things from every kind of instance: start one from an
//! [`InstanceConfig`] (with its env and, later, its resources), watch its state, wait for it
//! to become ready (or learn why it did not, with the output that explains it), read its
//! last lines, count its restarts, stop it with its grace period, and after a crash of the
//! server remove what the previous server left running. [`ProcessDriver`] does this for
//! native processes; a container driver will do it for containers, and the controller's
//! tests use an in-memory one. The router, the probes' verdicts and the rollouts only ever
//! see the [`InstanceState`]s and ports that come out of it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::watch;

use crate::{Cgroups, Instance, InstanceConfig, InstanceState, NotReady, StartError};

/// A boxed future, as trait objects need.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Starts instances and cleans up after a crashed server.
pub trait Driver: Send + Sync {
    /// Starts an instance; returns once it runs (in state [`InstanceState::Starting`]), or
    /// why it cannot.
    fn start(&self, config: InstanceConfig) -> BoxFuture<'_, Result<RunningInstance, StartError>>;

    /// Removes an instance a previous server left running, identified by its pid and start
    /// time as recorded then (see [`RunningInstance::started_at_ticks`]); returns whether
    /// something was removed.
    fn remove_orphan(&self, pid: u32, started_at_ticks: u64) -> bool;

    /// Why instances run without their resource limits, if they do (said once at start,
    /// and in `status`).
    fn limits_unavailable(&self) -> Option<String> {
        None
    }

    /// The id of the container image `image` names (`sha256:…`), pulling it if it is not
    /// here; a driver that runs no containers says so.
    fn resolve_image(&self, image: &str) -> BoxFuture<'_, Result<String, String>> {
        let message = format!("cannot run image `{image}`: this server runs no containers");
        Box::pin(async move { Err(message) })
    }

    /// Builds the image of the Dockerfile at `dockerfile` (its folder is the context),
    /// tags it `tag` and returns its id; every line of the build's output goes to
    /// `on_line`. A driver that runs no containers says so.
    fn build_image(
        &self,
        dockerfile: &std::path::Path,
        tag: &str,
        on_line: crate::OnLine,
    ) -> BoxFuture<'_, Result<String, String>> {
        let _ = on_line;
        let message = format!(
            "cannot build {} as `{tag}`: this server runs no containers",
            dockerfile.display()
        );
        Box::pin(async move { Err(message) })
    }

    /// Runs a one-shot command in a container of an image to completion (a container
    /// service's `release:`). A driver that runs no containers says so.
    fn run_container_job(
        &self,
        job: crate::ContainerJob,
        on_line: crate::OnLine,
    ) -> BoxFuture<'_, Result<crate::JobOutcome, String>> {
        let _ = on_line;
        let message = format!(
            "cannot run `{}` in a container of {}: this server runs no containers",
            job.command.join(" "),
            job.image
        );
        Box::pin(async move { Err(message) })
    }

    /// What a previous server of the same data directory left running that this driver
    /// can adopt or remove (containers; processes are found by pid instead, see
    /// [`Driver::remove_orphan`]).
    fn leftovers(&self) -> BoxFuture<'_, Result<Vec<Leftover>, String>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Keeps a leftover for [`Driver::start`] to adopt: the next start of an instance with
    /// the same labels and image takes it over instead of starting a new one.
    fn keep_for_adoption(&self, leftover: Leftover) {
        let _ = leftover;
    }

    /// Removes a leftover (stopping it if it runs).
    fn remove_leftover(&self, container: &str) -> BoxFuture<'_, ()> {
        let _ = container;
        Box::pin(async {})
    }
}

/// An instance a previous server left behind, as its driver found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Leftover {
    /// The container's id.
    pub container: String,
    /// The instance id it ran as.
    pub instance: String,
    /// The loopback port it is published on.
    pub port: u16,
    /// The image id it runs.
    pub image: String,
    /// Whether it still runs.
    pub running: bool,
    /// Its labels, including those of its [`crate::ContainerConfig`].
    pub labels: std::collections::BTreeMap<String, String>,
}

/// One running instance, whichever driver runs it. Cloning is cheap; all clones control the
/// same instance.
pub type RunningInstance = Arc<dyn InstanceHandle>;

/// What the controller can ask of a running instance.
pub trait InstanceHandle: Send + Sync {
    /// The instance id from its configuration.
    fn id(&self) -> &str;
    /// The loopback port it serves on.
    fn port(&self) -> u16;
    /// The pid of its process (group leader), if one runs.
    fn pid(&self) -> Option<u32>;
    /// When that process started (clock ticks after boot), to recognise it after a crash.
    fn started_at_ticks(&self) -> Option<u64>;
    /// Its state from now on.
    fn state(&self) -> watch::Receiver<InstanceState>;
    /// Waits until it is ready, or says why it never will be.
    fn wait_ready(&self) -> BoxFuture<'_, Result<(), NotReady>>;
    /// Its last `n` output lines, oldest first.
    fn last_lines(&self, n: usize) -> Vec<String>;
    /// How many times it was restarted.
    fn restarts(&self) -> u32;
    /// The id of its container, for a container instance.
    fn container(&self) -> Option<&str> {
        None
    }
    /// Stops it within its grace period; returns once nothing of it runs.
    fn stop(&self) -> BoxFuture<'_, ()>;

    /// What the instance has used (memory, cpu time, out-of-memory kills), when its driver
    /// can tell.
    fn usage(&self) -> Option<crate::Usage> {
        None
    }
}

/// Native processes ([`Instance`]).
#[derive(Debug, Default)]
pub struct ProcessDriver {
    /// Where instances' cgroups are made, or why they cannot be; `None`: not asked for.
    cgroups: Option<Result<Arc<Cgroups>, String>>,
}

impl ProcessDriver {
    /// A driver whose instances each run in a cgroup of their own under
    /// `slipway-<tag>` (see [`Cgroups::setup`]); when cgroups cannot be used, instances run
    /// without limits and [`Driver::limits_unavailable`] says why.
    pub fn with_cgroups(tag: &str) -> ProcessDriver {
        let cgroups = Cgroups::setup(tag).map(Arc::new);
        if let Ok(cgroups) = &cgroups {
            cgroups.remove_empty();
        }
        ProcessDriver {
            cgroups: Some(cgroups),
        }
    }
}

impl Driver for ProcessDriver {
    fn start(&self, config: InstanceConfig) -> BoxFuture<'_, Result<RunningInstance, StartError>> {
        Box::pin(async move {
            let cgroup = match &self.cgroups {
                Some(Ok(cgroups)) => match cgroups.create(&config.id, &config.limits) {
                    Ok(cgroup) => Some(cgroup),
                    // Without limits to enforce, the cgroup only measures: run without it.
                    Err(err) if config.limits == crate::Limits::default() => {
                        tracing::warn!(id = %config.id, error = %err, "instance runs outside a cgroup");
                        None
                    }
                    Err(source) => {
                        return Err(StartError::Cgroup {
                            id: config.id.clone(),
                            source,
                        });
                    }
                },
                _ => None,
            };
            let instance = Instance::start_in(config, cgroup).await?;
            Ok(Arc::new(instance) as RunningInstance)
        })
    }

    fn remove_orphan(&self, pid: u32, started_at_ticks: u64) -> bool {
        crate::kill_orphan(pid, started_at_ticks)
    }

    fn limits_unavailable(&self) -> Option<String> {
        match &self.cgroups {
            Some(Err(reason)) => Some(reason.clone()),
            _ => None,
        }
    }
}

impl InstanceHandle for Instance {
    fn id(&self) -> &str {
        Instance::id(self)
    }

    fn port(&self) -> u16 {
        Instance::port(self)
    }

    fn pid(&self) -> Option<u32> {
        Instance::pid(self)
    }

    fn started_at_ticks(&self) -> Option<u64> {
        Instance::started_at_ticks(self)
    }

    fn state(&self) -> watch::Receiver<InstanceState> {
        Instance::state(self)
    }

    fn wait_ready(&self) -> BoxFuture<'_, Result<(), NotReady>> {
        Box::pin(Instance::wait_ready(self))
    }

    fn last_lines(&self, n: usize) -> Vec<String> {
        Instance::last_lines(self, n)
    }

    fn restarts(&self) -> u32 {
        Instance::restarts(self)
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(Instance::stop(self))
    }

    fn usage(&self) -> Option<crate::Usage> {
        Instance::usage(self)
    }
}
