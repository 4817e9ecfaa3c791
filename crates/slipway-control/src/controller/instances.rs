//! The instance lifecycle: start a revision's instances through the driver and wait until
//! they are ready, mirror their health into the router and the event log, give traffic
//! back when a new revision dies right after its switch, stop and retire them, and prune
//! the logs and checkouts they leave.

use super::*;
use slipway_core::events::EventKind;

// === impl Controller (instances) ===

impl Controller {
    /// Starts `scaling.min` (at least one) instances of a revision from its stored config
    /// and waits until all are ready. On failure every instance started here is stopped
    /// again and the reason comes back with the failing instance's last output lines.
    pub(super) async fn start_revision(
        self: &Arc<Self>,
        app: &AppKey,
        service: &str,
        revision: u64,
        count: u32,
        tx: Option<&mpsc::UnboundedSender<Progress>>,
    ) -> Result<(), Failure> {
        let started = Instant::now();
        let stored = self.stored_config(app, service, revision)?;
        let mut started_instances = Vec::new();
        for _ in 0..count {
            match self.start_instance(app, service, revision, &stored).await {
                Ok(i) => started_instances.push(i),
                Err(f) => {
                    for i in started_instances {
                        self.stop_instance(app, service, revision, i).await;
                    }
                    return Err(f);
                }
            }
        }
        let waits = started_instances.iter().map(|i| {
            let i = i.clone();
            async move { (i.instance.wait_ready().await, i) }
        });
        let results = futures_util::future::join_all(waits).await;
        let mut failure = None;
        for (res, i) in &results {
            match res {
                Ok(()) => {
                    // The health mirror task may not have run yet; the caller is about to
                    // route to this instance, so mark it ready now (its new connections
                    // bounded first).
                    limit_new_connections(&i.backend);
                    i.backend.set_ready(true);
                    if let Some(tx) = tx {
                        let _ = tx.send(Progress::InstanceReady {
                            service: service.to_owned(),
                            revision,
                            instance: i.instance.id().to_owned(),
                            elapsed_ms: started.elapsed().as_millis() as u64,
                        });
                    }
                }
                Err(not_ready) if failure.is_none() => {
                    let id = i.instance.id();
                    let n = results.len();
                    failure = Some(Failure::not_ready(app, service, revision, id, not_ready, n));
                }
                Err(_) => {}
            }
        }
        if let Some(f) = failure {
            for (_, i) in results {
                self.stop_instance(app, service, revision, i).await;
            }
            return Err(f);
        }
        Ok(())
    }

    pub(super) async fn start_instance(
        self: &Arc<Self>,
        app: &AppKey,
        service: &str,
        revision: u64,
        stored: &secrets::StoredConfig,
    ) -> Result<LiveInstance, Failure> {
        let spec = &stored.spec;
        let port = match spec.port {
            Port::Auto => self
                .ports
                .pick(|port| self.port_in_use(port))
                .map_err(|e| {
                    Failure::msg(format!("could not find a free port for {service}: {e}"))
                })?,
            Port::Fixed(p) => {
                if std::net::TcpListener::bind(("127.0.0.1", p)).is_err() {
                    return Err(Failure::msg(format!(
                        "port {p} (fixed in the spec for {service}) is already in use; stop what uses it, or set `port: auto` so blue-green deploys can run two revisions side by side"
                    )));
                }
                p
            }
        };
        let id = instance_id(service, revision);
        let mut env = process_env(app, service, revision, spec);
        env.push(("PORT".into(), port.to_string()));
        env.push(("SLIPWAY_INSTANCE".into(), id.clone()));
        // Secrets are added after `run` is expanded: a value in argv would be visible to
        // every local user (`ps`) and in the instance's log ("spawned pid …: argv").
        let argv = spec.run.iter().map(|a| expand(a, &env)).collect();
        let container = match &spec.image {
            Some(image) => {
                Some(self.container_config(app, service, revision, image, stored, &env)?)
            }
            None => None,
        };
        // A revision runs its frozen code (snapshot, stored artifact or image), never the
        // working tree.
        let (workdir, argv) = match container {
            Some(_) => (spec.workdir.clone(), argv),
            None => self.layout(app, stored, argv).await?,
        };
        for (name, value) in self.secret_env(app, &stored.secret_versions)? {
            env.push((name, value.as_str().to_owned()));
        }
        for (name, value) in self.database_env(app, &spec.uses).await? {
            env.push((name, value.as_str().to_owned()));
        }
        let config_limits = slipway_runtime::Limits {
            cpu_millis: spec.resources.cpu_millis,
            memory_bytes: spec.resources.memory_bytes,
            pids: spec.resources.pids,
        };
        let config = InstanceConfig {
            id: id.clone(),
            argv,
            env,
            workdir: workdir.clone(),
            port,
            log_file: self.log_dir(app, service).join(format!("{id}.log")),
            log_max_bytes: LOG_MAX_BYTES,
            log_keep: LOG_KEEP,
            ready: probe(&spec.health.ready),
            live: spec.health.live.as_ref().map(probe),
            startup_timeout: spec.health.startup_timeout,
            grace: spec.shutdown.grace,
            limits: config_limits,
            restart_backoff: (Duration::from_millis(200), Duration::from_secs(30)),
            container,
        };
        // Counted as running for `prune_logs` from before its log file exists until it is
        // in `live`.
        let _starting = Starting::new(&self.starting, &id);
        let driver = if spec.is_container() {
            &self.containers
        } else {
            &self.driver
        };
        let instance = driver
            .start(config)
            .await
            .map_err(|e| Failure::msg(format!("{service}: {e}")))?;
        // An adopted container keeps the id and port it had.
        let (id, port) = (instance.id().to_owned(), instance.port());
        let backend = Backend::new(SocketAddr::from(([127, 0, 0, 1], port)), id.clone());
        let live = LiveInstance {
            instance: instance.clone(),
            backend: backend.clone(),
            grace: spec.shutdown.grace,
            workdir,
            limits: config_limits,
            cpu_sample: Arc::default(),
        };
        self.record_instance(app, service, revision, &instance);
        self.live()
            .apps
            .entry(app.to_owned())
            .or_default()
            .entry(service.to_owned())
            .or_default()
            .entry(revision)
            .or_insert_with(|| LiveRevision {
                instances: Vec::new(),
                retire_token: 0,
                retire_at: None,
            })
            .instances
            .push(live.clone());
        self.event(
            app,
            Some(service),
            Some(revision),
            EventKind::InstanceStarted,
            match instance.container() {
                Some(container) => format!(
                    "instance {id} started (container {}, port {port})",
                    &container[..container.len().min(12)]
                ),
                None => format!(
                    "instance {id} started (pid {}, port {port})",
                    instance.pid().unwrap_or(0)
                ),
            },
        );
        // Mirror the instance's health into the router and the event log.
        let this = self.clone();
        let (app, service) = (app.to_owned(), service.to_owned());
        self.spawn(async move {
            let mut rx = instance.state();
            let mut recorded_pid = instance.pid();
            loop {
                let state = rx.borrow_and_update().clone();
                // A respawn has a new pid (the Starting state may be coalesced away):
                // record it so a crashed server's successor can clean it up.
                if instance.pid().is_some() && instance.pid() != recorded_pid {
                    recorded_pid = instance.pid();
                    this.record_instance(&app, &service, revision, &instance);
                }
                // The start path bounds the backend before marking it ready; a restart
                // (the backend went unready meanwhile) reads the new process's backlog here.
                let backlog = match state {
                    InstanceState::Ready if backend.is_ready() => backend
                        .new_connection_limit()
                        .and_then(|limit| u32::try_from(limit).ok()),
                    InstanceState::Ready => limit_new_connections(&backend),
                    _ => None,
                };
                backend.set_ready(state == InstanceState::Ready);
                let (kind, message) = match &state {
                    InstanceState::Ready => (
                        Some(EventKind::InstanceReady),
                        match backlog {
                            Some(backlog) if backlog < SMALL_BACKLOG => format!(
                                "instance {id} ready; it listens with a backlog of {backlog}, so \
                                 the router opens at most {backlog} new connections to it at once \
                                 (more requests wait in the router)"
                            ),
                            _ => format!("instance {id} ready"),
                        },
                    ),
                    InstanceState::Unready { reason } => (
                        Some(EventKind::InstanceUnready),
                        format!("instance {id} failing readiness, removed from routing: {reason}"),
                    ),
                    InstanceState::Backoff {
                        reason,
                        restarts,
                        retry_in,
                    } => {
                        this.counters.inc(
                            "slipway_instance_restarts",
                            labels(&app, &service, &[("revision", &revision.to_string())]),
                        );
                        (
                            Some(EventKind::InstanceCrashed),
                            format!("instance {id} {reason}; restart #{restarts} in {retry_in:?}"),
                        )
                    }
                    InstanceState::Failed { reason } => (
                        Some(EventKind::InstanceFailed),
                        format!("instance {id} {reason}"),
                    ),
                    InstanceState::Starting | InstanceState::Stopping => (None, String::new()),
                    InstanceState::Stopped => (
                        Some(EventKind::InstanceStopped),
                        format!("instance {id} stopped"),
                    ),
                };
                if let Some(kind) = kind {
                    this.event(&app, Some(&service), Some(revision), kind, message);
                }
                if let InstanceState::Backoff { reason, .. } | InstanceState::Failed { reason } =
                    &state
                {
                    let (this, app, service, reason) =
                        (this.clone(), app.clone(), service.clone(), reason.clone());
                    this.spawn(
                        this.clone()
                            .fail_back_if_dead(app, service, revision, reason),
                    );
                }
                if matches!(state, InstanceState::Stopped | InstanceState::Failed { .. }) {
                    break;
                }
                if rx.changed().await.is_err() {
                    break;
                }
            }
        });
        Ok(live)
    }

    /// A revision that takes all traffic and then crashes while the previous one is still
    /// warm (its `keep_previous` window) gives the traffic back: no instance of it is ready,
    /// and one of the previous revision is. Otherwise a crash is left to the restarts.
    ///
    /// Boxed with its `Send` bound spelled out: it can start instances, whose watchers can
    /// call it again, and the compiler cannot infer auto traits through that cycle.
    pub(super) fn fail_back_if_dead(
        self: Arc<Self>,
        app: AppKey,
        service: String,
        revision: u64,
        reason: String,
    ) -> slipway_runtime::BoxFuture<'static, ()> {
        Box::pin(async move {
            self.fail_back_if_dead_inner(&app, &service, revision, &reason)
                .await;
        })
    }

    pub(super) async fn fail_back_if_dead_inner(
        self: &Arc<Self>,
        app: &AppKey,
        service: &str,
        revision: u64,
        reason: &str,
    ) {
        let Ok(traffic) = self.store.traffic(app.as_str(), service) else {
            return;
        };
        if !(traffic.len() == 1 && traffic[0].revision == revision)
            || self.ready_count(app, service, revision) > 0
        {
            return;
        }
        let warm = self
            .live_revisions(app, service)
            .into_iter()
            .filter(|r| *r != revision && self.ready_count(app, service, *r) > 0)
            .max();
        let Some(previous) = warm else {
            return;
        };
        let message = format!(
            "revision {revision} crashed right after taking all traffic ({reason}); all traffic back on revision {previous}, which was still warm"
        );
        self.event(
            app,
            Some(service),
            Some(revision),
            EventKind::DeployRolledBack,
            message.clone(),
        );
        let (tx, _rx) = mpsc::unbounded_channel();
        if let Ok(true) = self.rollback(app, service, Some(previous), tx).await {
            let _ = self.store.set_revision_state(
                app.as_str(),
                service,
                revision,
                RevisionState::Failed,
                &message,
            );
        }
    }

    /// What a container instance of a revision runs: the revision's image (by the id
    /// recorded at deploy time), its command with `$PORT` and the env expanded, and the
    /// labels that name it.
    fn container_config(
        &self,
        key: &AppKey,
        service: &str,
        revision: u64,
        image: &str,
        stored: &secrets::StoredConfig,
        env: &[(String, String)],
    ) -> Result<slipway_runtime::ContainerConfig, Failure> {
        let Some(image_id) = &stored.image_id else {
            return Err(Failure::msg(format!(
                "revision {revision} of {service} names image `{image}` but recorded no image id; deploy it again"
            )));
        };
        let labels = container_labels(key, service, revision);
        Ok(slipway_runtime::ContainerConfig {
            image: image_id.clone(),
            command: stored
                .spec
                .command
                .as_ref()
                .map(|c| c.iter().map(|a| expand(a, env)).collect()),
            labels,
            binds: self.database_binds(key, &stored.spec),
        })
    }

    /// The mounts that let a container reach the databases `spec` uses: they listen on
    /// Unix sockets only, so each socket folder is mounted at the same path, and the URLs
    /// the service gets work inside too.
    pub(super) fn database_binds(&self, key: &AppKey, spec: &ServiceSpec) -> Vec<String> {
        spec.uses
            .iter()
            .map(|used| {
                let socket = self.database_dir(key, &used.name).join("socket");
                format!("{0}:{0}", socket.display())
            })
            .collect()
    }

    pub(super) fn record_instance(
        &self,
        app: &AppKey,
        service: &str,
        revision: u64,
        instance: &RunningInstance,
    ) {
        let (Some(pid), Some(start_ticks)) = (instance.pid(), instance.started_at_ticks()) else {
            return;
        };
        let row = InstanceRow {
            id: instance.id().to_owned(),
            app: app.to_string(),
            service: service.to_owned(),
            revision,
            pid,
            start_ticks,
            port: instance.port(),
            started_at: slipway_state::now(),
        };
        if let Err(err) = self.store.record_instance(&row) {
            tracing::error!(%err, "could not record an instance");
        }
    }

    /// Drains and stops every instance of a revision and forgets it.
    pub(super) async fn retire_revision(
        self: &Arc<Self>,
        app: &AppKey,
        service: &str,
        revision: u64,
    ) {
        let instances = self
            .live()
            .apps
            .get(app)
            .and_then(|a| a.get(service))
            .and_then(|s| s.get(&revision))
            .map(|r| r.instances.clone())
            .unwrap_or_default();
        let stops = instances
            .into_iter()
            .map(|i| self.stop_instance(app, service, revision, i));
        futures_util::future::join_all(stops).await;
    }

    /// Stop routing to an instance, wait for its in-flight requests (up to its grace
    /// period), then stop the process (SIGTERM, grace, SIGKILL) and forget it.
    pub(super) async fn stop_instance(
        &self,
        app: &AppKey,
        service: &str,
        revision: u64,
        i: LiveInstance,
    ) {
        i.backend.set_ready(false);
        let deadline = Instant::now() + i.grace;
        while i.backend.in_flight() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        i.instance.stop().await;
        i.backend.close_idle();
        let _ = self.store.forget_instance(i.instance.id());
        let mut live = self.live();
        if let Some(revs) = live.apps.get_mut(app).and_then(|a| a.get_mut(service))
            && let Some(r) = revs.get_mut(&revision)
        {
            r.instances.retain(|x| x.instance.id() != i.instance.id());
            if r.instances.is_empty() {
                revs.remove(&revision);
            }
        }
        drop(live);
        // Directory I/O stays off the async workers.
        tokio::task::spawn_blocking(self.prune_logs(app, service));
        self.memory.churned();
    }

    /// Deletes the logs of a service's stopped instances beyond the newest `keep_logs` and
    /// any older than `STOPPED_LOGS_MAX_AGE`. Scale to zero starts a new instance (and log)
    /// on every wake-up, so without this the log directory grows for ever. Returns the file
    /// work to run, which blocks: on a blocking-pool thread from async code.
    pub(super) fn prune_logs(&self, app: &AppKey, service: &str) -> impl FnOnce() + Send + 'static {
        // `starting` first: an instance leaves it only after it is in `live`.
        let mut running: std::collections::HashSet<String> = self
            .starting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(revisions) = self.live().apps.get(app).and_then(|a| a.get(service)) {
            running.extend(
                revisions
                    .values()
                    .flat_map(|r| r.instances.iter().map(|i| i.instance.id().to_owned())),
            );
        }
        let (dir, keep) = (self.log_dir(app, service), self.config.keep_logs);
        let (app, service) = (app.to_owned(), service.to_owned());
        move || match slipway_runtime::prune_logs(
            &dir,
            &|id| running.contains(id),
            keep,
            STOPPED_LOGS_MAX_AGE,
        ) {
            Ok(0) => {}
            Ok(n) => {
                tracing::debug!(%app, %service, "deleted the logs of {n} stopped instances")
            }
            Err(err) => tracing::warn!(
                %app,
                %service,
                "could not prune the logs of stopped instances: {err}"
            ),
        }
    }

    /// Prunes the logs of every service that has a log directory (see `prune_logs`).
    /// Removes code checkouts no running instance uses (made more than an hour ago: a
    /// release or one-off command may be running in a younger one). A later start makes
    /// its checkout again from the code store.
    pub(super) fn prune_checkouts(&self) {
        let in_use: std::collections::HashSet<PathBuf> = self
            .live()
            .apps
            .values()
            .flat_map(|services| services.values())
            .flat_map(|revisions| revisions.values())
            .flat_map(|r| r.instances.iter().map(|i| i.workdir.clone()))
            .collect();
        let removed = self
            .code_store()
            .prune_checkouts(&in_use, Duration::from_secs(3600));
        if removed > 0 {
            tracing::info!(removed, "removed code checkouts no instance uses");
        }
    }

    pub(super) fn prune_all_logs(&self) {
        let Ok(apps) = std::fs::read_dir(self.config.data_dir.join("logs")) else {
            return;
        };
        for app in apps.flatten() {
            // Each folder is named by an app's key; anything else is none of Slipway's.
            let Ok(key) = AppKey::parse(&app.file_name().to_string_lossy()) else {
                continue;
            };
            let Ok(services) = std::fs::read_dir(app.path()) else {
                continue;
            };
            for service in services.flatten() {
                self.prune_logs(&key, &service.file_name().to_string_lossy())();
            }
        }
    }
}

/// A listen backlog under this is worth a word in the `instance.ready` event: the app takes
/// fewer new connections at once than a burst may bring (Python's stdlib servers use 5).
const SMALL_BACKLOG: u32 = 64;

/// Bounds the router's new connections to `backend` by its instance's listen backlog, read
/// from the kernel now that the instance is ready (see `slipway_router::Backend`). Returns the
/// backlog; `None` (no bound) when the listening socket cannot be found, e.g. an app that
/// listens on another address than the one it was given.
fn limit_new_connections(backend: &Backend) -> Option<u32> {
    match slipway_runtime::listen_queue(backend.addr()) {
        Ok(Some(queue)) => {
            backend.limit_new_connections(Some(queue.backlog as usize));
            Some(queue.backlog)
        }
        Ok(None) => {
            backend.limit_new_connections(None);
            None
        }
        Err(err) => {
            tracing::warn!(addr = %backend.addr(), error = %err, "could not read the listen backlog");
            backend.limit_new_connections(None);
            None
        }
    }
}

/// The labels of a revision's containers (instances and release jobs), by which `docker ps`
/// and a server restart tell whose they are.
pub(super) fn container_labels(
    key: &AppKey,
    service: &str,
    revision: u64,
) -> std::collections::BTreeMap<String, String> {
    [
        ("slipway.app", key.app()),
        ("slipway.environment", key.environment()),
        ("slipway.service", service),
        ("slipway.revision", &revision.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}
