//! The controller: drives running instances and the router's table toward the desired
//! state recorded in the store.
//!
//! The store is the source of truth (revisions, traffic, whether an app is down). This
//! module keeps the *actual* state in memory (`Live`: the instances running for each
//! revision) and converges it:
//!
//! - a deploy records a new revision, starts its instances beside the serving ones, waits
//!   for readiness, then commits the traffic switch to the store and publishes a new
//!   route table in one step (blue-green); the old revision is drained and stopped after
//!   `deploy.keep_previous`, so a rollback in that window is a pure route switch;
//! - a rollback is a traffic switch to an older ready revision, starting it first if it
//!   is cold;
//! - at startup, `recover` kills instances left behind by a crashed server, marks
//!   interrupted deploys as failed, and starts the revisions that carry traffic.
//!
//! One async lock per service ("one slot per service") guarantees that two operations on
//! the same service never interleave.
//!
//! This file holds the `Controller` struct, the registry of live instances and the small
//! queries over it; each concern has a module of its own below (`deploy`, `rollback`,
//! `instances`, `recovery`, `autoscaling`, `routing`, `queries`, `progressive`, `release`,
//! `artifacts`, `code`, `run`, `secrets`, `ports`), each an `impl Controller` block.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use slipway_core::app_key::AppKey;
use slipway_core::events::EventKind;
use slipway_router::{Backend, Pool, RevisionStats, RouteTable, Router, Target};
use slipway_runtime::{Driver, InstanceConfig, InstanceState, RunningInstance};
use slipway_spec::{Port, ServiceSpec, Spec};
use slipway_state::{InstanceRow, NewEvent, RevisionRow, RevisionState, Store, TrafficTarget};
use tokio::sync::mpsc;

use crate::dto::{self, Progress};

mod artifacts;
mod autoscaling;
mod backups;
mod code;
mod databases;
mod deploy;
#[cfg(test)]
mod fake;
mod instances;
mod memory;
mod ports;
mod progressive;
mod queries;
mod recovery;
mod release;
mod rollback;
mod routing;
mod run;
#[cfg(test)]
mod scenarios;
mod secrets;

/// How big one instance's log file may grow before it is rotated, and how many old files are kept.
const LOG_MAX_BYTES: u64 = 8 * 1024 * 1024;
const LOG_KEEP: usize = 3;
/// How long the logs of a stopped instance are kept at most (see `ControllerConfig::keep_logs`
/// for how many).
const STOPPED_LOGS_MAX_AGE: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often every service's log directory is pruned, for the logs that age out.
const LOG_SWEEP_EVERY: Duration = Duration::from_secs(600);
/// The shortest time an unrouted revision keeps running after a traffic switch.
const RETIRE_FLOOR: Duration = Duration::from_secs(1);
/// How long the measurements of a revision out of traffic are kept (for `/metrics` and the
/// dashboard): as long as the router's rolling window.
const RETIRED_STATS_KEPT: Duration = Duration::from_secs(15 * 60);

/// Each revision's (app, service, number) measurements, with when it last carried traffic.
type StatsByRevision = HashMap<(AppKey, String, u64), (Arc<RevisionStats>, Duration)>;

/// Errors of controller operations, shown to the user as they are.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Spec(String),
    #[error("state store: {0}")]
    Store(#[from] slipway_state::StoreError),
}

pub type Result<T, E = ControlError> = std::result::Result<T, E>;

/// What the controller needs to know about its surroundings.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    pub data_dir: PathBuf,
    /// The router's listening address, for the URLs shown to users.
    pub router_addr: SocketAddr,
    /// How many stopped instances of each service keep their logs (the most recent ones,
    /// for at most `STOPPED_LOGS_MAX_AGE`); older logs are deleted.
    pub keep_logs: usize,
}

pub struct Controller {
    store: Arc<Store>,
    router: Arc<Router>,
    /// Runs the instances of `run:` services (native processes in the server).
    driver: Arc<dyn Driver>,
    /// Runs the instances of `image:` services (containers in the server).
    containers: Arc<dyn Driver>,
    /// Every background task the controller starts (instance watchers, retirements, the
    /// autoscaler, canary steps, recovery): owned here, ended by `shutdown`.
    tasks: tokio_util::task::TaskTracker,
    /// Ends the tasks still running at shutdown.
    cancel: tokio_util::sync::CancellationToken,
    config: ControllerConfig,
    live: Mutex<Live>,
    slots: Mutex<HashMap<(AppKey, String), Slot>>,
    /// Held while a route table is built and published, so an older table can never
    /// overwrite a newer one.
    publishing: Mutex<()>,
    /// The router settings of each service's serving revision, by app, service and
    /// revision: parsed from the revision's stored config once, not on every table built
    /// (a revision's config never changes). Replaced by what each build used.
    route_settings: Mutex<HashMap<(AppKey, String, u64), Arc<RouteSettings>>>,
    /// The router's measurements of each revision; kept across route-table swaps and
    /// instance restarts so rates and percentiles cover the revision's whole life.
    /// Each revision's measurements, with the last autoscaler tick (time since `epoch`) at
    /// which it carried traffic. Revisions out of traffic for `RETIRED_STATS_KEPT` are
    /// forgotten, so a long history costs nothing here (nor in `/metrics`).
    stats: Mutex<StatsByRevision>,
    /// Counts of controller actions (deploys, rollbacks, restarts) for `/metrics`.
    pub counters: crate::metrics::Counters,
    /// Canary rollouts in progress, by app and service.
    rollouts: Mutex<HashMap<(AppKey, String), progressive::LiveRollout>>,
    /// One autoscaler per revision that can receive requests.
    scalers: Mutex<HashMap<(AppKey, String, u64), Scaler>>,
    /// The controller's clock origin: autoscaler time is measured from here.
    epoch: Instant,
    /// Where instances of `port: auto` services get their ports.
    ports: ports::Ports,
    /// The ids of instances being started, not yet in `live`.
    starting: Mutex<std::collections::HashSet<String>>,
    /// The secrets' master key, read on first use.
    master_key: Mutex<Option<Arc<slipway_state::MasterKey>>>,
    /// The managed databases this server runs.
    databases: databases::Databases,
    /// The ACME client, when the server obtains certificates (`--acme-directory`).
    acme: std::sync::OnceLock<Arc<crate::acme::Acme>>,
    /// The HTTPS listener's certificates, when the server has one.
    tls_certs: std::sync::OnceLock<Arc<slipway_router::tls::TlsCerts>>,
    /// Gives the memory of bursts of work back to the system once they are over.
    memory: Arc<memory::MemoryReturn>,
}

/// The autoscaler of one revision and what it last saw.
struct Scaler {
    decider: slipway_autoscale::Decider,
    /// The revision's request total at the previous sample, to count arrivals.
    last_requests: u64,
    /// The instance count last decided (at first, the count the revision has, at least its
    /// `min`, as a deploy or a restart starts it), to record only decisions that change it.
    last_desired: u32,
}

/// What a service's serving revision decides about its routes.
#[derive(Default)]
struct RouteSettings {
    sticky: bool,
    header_override: bool,
    max_concurrency: u32,
    routes: Vec<String>,
    /// The longest request body (`limits.body`); `None`: no limit.
    max_body: Option<u64>,
    /// Plain HTTP is redirected to HTTPS (`https.redirect`).
    redirect_https: bool,
    /// The `Strict-Transport-Security` value of HTTPS responses (`https.hsts`).
    hsts: Option<axum::http::HeaderValue>,
}

/// Marks an instance id as being started for as long as it lives.
struct Starting<'a> {
    set: &'a Mutex<std::collections::HashSet<String>>,
    id: String,
}

impl<'a> Starting<'a> {
    fn new(set: &'a Mutex<std::collections::HashSet<String>>, id: &str) -> Starting<'a> {
        set.lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned());
        Starting {
            set,
            id: id.to_owned(),
        }
    }
}

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

/// The lock that serialises operations on one service.
type Slot = Arc<tokio::sync::Mutex<()>>;

/// Instances that exist right now, by app, service and revision.
#[derive(Default)]
struct Live {
    apps: BTreeMap<AppKey, BTreeMap<String, BTreeMap<u64, LiveRevision>>>,
}

struct LiveRevision {
    instances: Vec<LiveInstance>,
    /// Identifies the latest scheduled retirement; a timer whose token no longer matches
    /// was superseded (the revision served again, or a newer switch rescheduled it).
    retire_token: u64,
    /// When the pending retirement (if any) is due.
    retire_at: Option<tokio::time::Instant>,
}

#[derive(Clone)]
struct LiveInstance {
    instance: RunningInstance,
    backend: Arc<Backend>,
    grace: Duration,
    /// The folder it runs in (its revision's checkout), kept while it runs.
    workdir: PathBuf,
    /// What it may use (`resources:` of its revision).
    limits: slipway_runtime::Limits,
    /// The cpu time it had used at the last reading, and when: `status` reports the cores
    /// used since then.
    cpu_sample: Arc<Mutex<Option<(std::time::Instant, u64)>>>,
}

impl LiveInstance {
    /// Memory and cpu in use against the limits, from the instance's cgroup.
    fn resources(&self) -> Option<dto::InstanceResources> {
        let usage = self.instance.usage()?;
        let now = std::time::Instant::now();
        let mut sample = self.cpu_sample.lock().unwrap_or_else(|p| p.into_inner());
        let cpu_cores = match *sample {
            Some((at, nanos)) if now > at => {
                usage.cpu_nanos.saturating_sub(nanos) as f64 / (now - at).as_nanos() as f64
            }
            _ => 0.0,
        };
        // Readings closer than a second apart keep the older one, so that a dashboard and
        // a CLI polling together do not average over a few milliseconds.
        if sample.is_none_or(|(at, _)| now.duration_since(at) >= Duration::from_secs(1)) {
            *sample = Some((now, usage.cpu_nanos));
        }
        Some(dto::InstanceResources {
            memory_bytes: usage.memory_bytes,
            memory_limit_bytes: self.limits.memory_bytes,
            cpu_cores: (cpu_cores * 1000.0).round() / 1000.0,
            cpu_limit_cores: self.limits.cpu_millis.map(|m| f64::from(m) / 1000.0),
            cpu_seconds: usage.cpu_nanos as f64 / 1e9,
            pids: usage.pids,
            pids_limit: self.limits.pids,
            oom_kills: usage.oom_kills,
        })
    }
}

// === impl Controller ===

impl Controller {
    /// A controller whose instances are native processes, each in a cgroup of its own
    /// under `slipway-<12 hex digits of the data directory's SHA-256>` (one group per data
    /// directory, so two servers on one machine do not share theirs).
    pub fn new(store: Arc<Store>, router: Arc<Router>, config: ControllerConfig) -> Arc<Self> {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(config.data_dir.as_os_str().as_encoded_bytes());
        let tag: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
        let driver = slipway_runtime::ProcessDriver::with_cgroups(&tag);
        let containers = slipway_runtime::ContainerDriver::new(&config.data_dir);
        Controller::with_drivers(
            store,
            router,
            config,
            Arc::new(driver),
            Arc::new(containers),
        )
    }

    /// A controller whose instances, processes and containers alike, `driver` runs.
    pub fn with_driver(
        store: Arc<Store>,
        router: Arc<Router>,
        config: ControllerConfig,
        driver: Arc<dyn Driver>,
    ) -> Arc<Self> {
        Controller::with_drivers(store, router, config, driver.clone(), driver)
    }

    /// A controller whose `run:` services `driver` runs and whose `image:` services
    /// `containers` runs.
    pub fn with_drivers(
        store: Arc<Store>,
        router: Arc<Router>,
        config: ControllerConfig,
        driver: Arc<dyn Driver>,
        containers: Arc<dyn Driver>,
    ) -> Arc<Self> {
        if let Some(reason) = driver.limits_unavailable() {
            tracing::warn!(
                "resource limits cannot be enforced ({reason}); instances run without `resources:` limits"
            );
            eprintln!(
                "warning: resource limits cannot be enforced: {reason}\n  instances run without their `resources:` limits; run the server as root or in a delegated cgroup to enforce them"
            );
        }
        Arc::new(Controller {
            store,
            router,
            driver,
            containers,
            tasks: tokio_util::task::TaskTracker::new(),
            cancel: tokio_util::sync::CancellationToken::new(),
            config,
            live: Mutex::new(Live::default()),
            slots: Mutex::new(HashMap::new()),
            publishing: Mutex::new(()),
            route_settings: Mutex::new(HashMap::new()),
            stats: Mutex::new(HashMap::new()),
            counters: crate::metrics::Counters::default(),
            scalers: Mutex::new(HashMap::new()),
            rollouts: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
            ports: ports::Ports::new(),
            starting: Mutex::new(std::collections::HashSet::new()),
            master_key: Mutex::new(None),
            acme: std::sync::OnceLock::new(),
            tls_certs: std::sync::OnceLock::new(),
            databases: databases::Databases::default(),
            memory: Arc::default(),
        })
    }

    /// Gives the memory freed by bursts of work (deploys, instances stopping, client
    /// connections closing) back to the system once each burst is over, until the server
    /// stops (see `memory`).
    pub fn spawn_memory_return(&self) {
        self.spawn(self.memory.clone().run());
        let router = self.router.clone();
        self.spawn(
            self.memory
                .clone()
                .watch_connections(move || router.client_connections()),
        );
    }

    /// Hands the controller the server's ACME client, for `status` and `/metrics`.
    pub fn set_acme(&self, acme: Arc<crate::acme::Acme>) {
        let _ = self.acme.set(acme);
    }

    /// Hands the controller the HTTPS listener's certificates, for `status` and `/metrics`.
    pub fn set_tls_certs(&self, certs: Arc<slipway_router::tls::TlsCerts>) {
        let _ = self.tls_certs.set(certs);
    }

    /// The certificates of the routed hosts, from files and obtained over ACME (all hosts,
    /// or those of `app`).
    pub fn certificates(&self, app: Option<&AppKey>) -> Vec<dto::CertificateStatus> {
        let mut all = Vec::new();
        if let Some(certs) = self.tls_certs.get() {
            let hosts: Vec<(String, String)> = self
                .router
                .table()
                .hosts()
                .into_iter()
                .filter(|(_, owner)| app.is_none_or(|app| app == owner.as_str()))
                .collect();
            all = crate::tls::file_certificates(certs, &hosts);
        }
        if let Some(acme) = self.acme.get() {
            all.extend(acme.certificates());
        }
        all.retain(|c| app.is_none_or(|app| app == c.app.as_str()));
        all.sort_by(|a, b| a.host.cmp(&b.host));
        all
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The store, for what outlives a borrow of the controller (the admin listener's gate).
    pub fn shared_store(&self) -> Arc<Store> {
        self.store.clone()
    }

    pub fn router_addr(&self) -> SocketAddr {
        self.config.router_addr
    }

    /// Starts a background task owned by the controller: `shutdown` cancels it if it is
    /// still running then, and waits for it.
    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.spawn_on(&tokio::runtime::Handle::current(), task);
    }

    /// [`Controller::spawn`] on a given runtime (the control plane's, from a router thread).
    fn spawn_on(
        &self,
        runtime: &tokio::runtime::Handle,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let cancel = self.cancel.clone();
        self.tasks.spawn_on(
            async move {
                tokio::select! {
                    () = cancel.cancelled() => {}
                    () = task => {}
                }
            },
            runtime,
        );
    }

    fn live(&self) -> MutexGuard<'_, Live> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a running instance was given `port` (it may not listen yet).
    fn port_in_use(&self, port: u16) -> bool {
        self.live().apps.values().any(|services| {
            services.values().any(|revisions| {
                revisions
                    .values()
                    .any(|r| r.instances.iter().any(|i| i.backend.addr().port() == port))
            })
        })
    }

    fn slot(&self, app: &AppKey, service: &str) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots
            .entry((app.to_owned(), service.to_owned()))
            .or_default()
            .clone()
    }

    fn event(
        &self,
        app: &AppKey,
        service: Option<&str>,
        revision: Option<u64>,
        kind: EventKind,
        message: String,
    ) {
        self.record_event(app.as_str(), service, revision, kind, message);
    }

    /// [`Controller::event`] about an app as a store row or a container's labels name it,
    /// which may be no valid key.
    fn record_event(
        &self,
        app: &str,
        service: Option<&str>,
        revision: Option<u64>,
        kind: EventKind,
        message: String,
    ) {
        tracing::info!(app, service, revision, kind = kind.as_str(), "{message}");
        if let Err(err) = self.store.add_event(&NewEvent {
            app,
            service,
            revision,
            kind,
            message,
        }) {
            tracing::error!(%err, "could not record an event");
        }
    }

    // --- apps ---

    /// Parses the spec at `spec_path` for `environment` and registers the app in that
    /// environment (under its [`AppKey`]) with its services and host. Returns the key and
    /// the resolved spec.
    ///
    /// # Errors
    /// A relative path or one where no file is ([`ControlError::NotFound`]), an invalid spec,
    /// an environment the file does not declare, or a host that another running app or
    /// environment already serves.
    pub fn apply(&self, spec_path: &Path, environment: &str) -> Result<(AppKey, Spec)> {
        check_spec_path(spec_path)?;
        let spec = load_spec(spec_path, environment)?;
        // The spec's names follow the rule: this cannot fail.
        let key = AppKey::new(&spec.app, &spec.environment).map_err(ControlError::Spec)?;
        for other in self.store.apps()? {
            if key != other.name.as_str() && !other.down && app_host(&other) == spec.host {
                let other = AppKey::parse(&other.name).map_err(ControlError::Invalid)?;
                let (other_app, other_env) = (other.app(), other.environment());
                return Err(ControlError::Invalid(format!(
                    "host {} of app {} in environment {} is already served by app {other_app} in environment {other_env}\n  hint: give environment `{}` its own `host:` under `environments:` in {}, or stop the other with `slipway down --app {other_app} --env {other_env}`",
                    spec.host,
                    spec.app,
                    spec.environment,
                    spec.environment,
                    spec_path.display()
                )));
            }
        }
        let names: Vec<&str> = spec.services.keys().map(String::as_str).collect();
        self.store.register_app(
            key.as_str(),
            &spec_path.to_string_lossy(),
            &names,
            &spec.environment,
            &spec.host,
        )?;
        Ok((key, spec))
    }

    fn app_spec(&self, key: &AppKey) -> Result<Spec> {
        let row = self
            .store
            .app(key.as_str())?
            .ok_or_else(|| ControlError::NotFound(unknown_app(key)))?;
        let spec = load_spec(Path::new(&row.spec_path), &row.environment)?;
        let app = key.app();
        if spec.app != app {
            return Err(ControlError::Invalid(format!(
                "{} now declares app `{}`, not `{app}`; run `slipway up` in that directory to register it",
                row.spec_path, spec.app
            )));
        }
        Ok(spec)
    }

    /// Makes the store's unsynced commits durable. The traffic they hold is already in
    /// effect, so a disk that refuses is reported and the work goes on; the next synced
    /// commit will fail the same way and stop it.
    fn sync_store(&self) {
        if let Err(err) = self.store.sync() {
            tracing::error!(%err, "a traffic change is in effect but may not survive a power loss");
        }
    }

    /// The measurements of one revision (created on first use).
    pub fn revision_stats(&self, app: &AppKey, service: &str, revision: u64) -> Arc<RevisionStats> {
        let now = self.epoch.elapsed();
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        stats
            .entry((app.to_owned(), service.to_owned(), revision))
            .or_insert_with(|| (RevisionStats::new(), now))
            .0
            .clone()
    }

    fn prune_stats(&self, serving: &[(AppKey, String, u64, bool)], now: Duration) {
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        prune_stats(&mut stats, serving, now);
    }

    fn is_down(&self, app: &AppKey) -> bool {
        self.store
            .app(app.as_str())
            .ok()
            .flatten()
            .is_none_or(|a| a.down)
    }

    /// The revisions of a service that have live instances, oldest first.
    fn live_revisions(&self, app: &AppKey, service: &str) -> Vec<u64> {
        self.live()
            .apps
            .get(app)
            .and_then(|a| a.get(service))
            .map(|s| s.keys().copied().collect())
            .unwrap_or_default()
    }

    fn running_count(&self, app: &AppKey, service: &str, revision: u64) -> usize {
        self.live()
            .apps
            .get(app)
            .and_then(|a| a.get(service))
            .and_then(|s| s.get(&revision))
            .map_or(0, |r| r.instances.len())
    }

    /// Why a revision's first instance is not ready now, and its last output lines.
    fn not_ready_now(&self, app: &AppKey, service: &str, revision: u64) -> (String, Vec<String>) {
        let live = self.live();
        let Some(first) = live
            .apps
            .get(app)
            .and_then(|a| a.get(service))
            .and_then(|s| s.get(&revision))
            .and_then(|r| r.instances.first())
        else {
            return ("no instance runs".to_owned(), Vec::new());
        };
        let state = first.instance.state().borrow().clone();
        let why = match state {
            InstanceState::Unready { reason }
            | InstanceState::Failed { reason }
            | InstanceState::Backoff { reason, .. } => reason,
            other => format!("{other:?}").to_lowercase(),
        };
        (
            format!("{}: {why}", first.instance.id()),
            first.instance.last_lines(20),
        )
    }

    fn ready_count(&self, app: &AppKey, service: &str, revision: u64) -> usize {
        self.live()
            .apps
            .get(app)
            .and_then(|a| a.get(service))
            .and_then(|s| s.get(&revision))
            .map_or(0, |r| {
                r.instances
                    .iter()
                    .filter(|i| *i.instance.state().borrow() == InstanceState::Ready)
                    .count()
            })
    }

    fn serving_revision(&self, app: &AppKey, service: &str) -> Result<Option<RevisionRow>> {
        let traffic = self.store.traffic(app.as_str(), service)?;
        let Some(top) = traffic.iter().max_by_key(|t| t.percent) else {
            return Ok(None);
        };
        Ok(self.store.revision(app.as_str(), service, top.revision)?)
    }

    fn revision_spec(
        &self,
        app: &AppKey,
        service: &str,
        revision: u64,
    ) -> Result<ServiceSpec, Failure> {
        let row = self
            .store
            .revision(app.as_str(), service, revision)
            .map_err(Failure::from)?
            .ok_or_else(|| {
                Failure::msg(format!("revision {revision} of {service} does not exist"))
            })?;
        serde_json::from_str(&row.config).map_err(|e| {
            Failure::msg(format!(
                "the stored config of revision {revision} of {service} cannot be read by this slipway ({e})"
            ))
        })
    }
}

/// A fresh token for a pending retirement; an older pending one then does nothing.
fn next_retire_token() -> u64 {
    static TOKENS: AtomicU64 = AtomicU64::new(1);
    TOKENS.fetch_add(1, Ordering::Relaxed)
}

/// Why starting a revision failed, with the output that explains it.
#[derive(Debug)]
struct Failure {
    revision: Option<u64>,
    error: String,
    last_lines: Vec<String>,
}

impl Failure {
    fn msg(error: String) -> Self {
        Failure {
            revision: None,
            error,
            last_lines: Vec::new(),
        }
    }

    /// Instance `id` of `revision` (one of `instances` started together) did not become
    /// ready: why, where to read all its output, and the lines that explain it.
    fn not_ready(
        key: &AppKey,
        service: &str,
        revision: u64,
        id: &str,
        not_ready: &slipway_runtime::NotReady,
        instances: usize,
    ) -> Self {
        // `slipway logs` prints the last 100 lines unless told more. Ask for as many as the
        // instances started together wrote, counting each as long as this one's log: too
        // many lines cost nothing, too few would hide the start.
        let lines = not_ready.log_lines.saturating_mul(instances as u64);
        let tail = if lines > 100 {
            format!(" --tail {lines}")
        } else {
            String::new()
        };
        let env = if key.is_development() {
            String::new()
        } else {
            format!(" --env {}", key.environment())
        };
        Failure {
            revision: Some(revision),
            error: format!(
                "instance {id} {} (see all of it: `slipway logs {service} --revision {revision}{tail}{env}`)",
                not_ready.reason
            ),
            last_lines: not_ready.last_lines.clone(),
        }
    }
}

impl From<ControlError> for Failure {
    fn from(e: ControlError) -> Self {
        Failure::msg(e.to_string())
    }
}

impl From<slipway_state::StoreError> for Failure {
    fn from(e: slipway_state::StoreError) -> Self {
        Failure::msg(e.to_string())
    }
}

/// App, environment and service names follow the one rule of `slipway_core::names` (the
/// spec enforces it); anything else in an API path is refused before it can reach a file
/// path.
fn check_name(kind: &str, name: &str) -> Result<()> {
    slipway_core::names::check_name(kind, name).map_err(ControlError::NotFound)
}

/// Metric labels for a service, plus extra pairs.
/// The environment every process of a revision gets (instances, its release command,
/// one-off commands): the spec's `env` and where it runs. Secrets are added after `run`
/// is expanded: a value in argv would be visible to every local user (`ps`).
fn process_env(
    key: &AppKey,
    service: &str,
    revision: u64,
    spec: &ServiceSpec,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = spec
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    env.push(("SLIPWAY_APP".into(), key.app().to_owned()));
    env.push(("SLIPWAY_ENVIRONMENT".into(), key.environment().to_owned()));
    env.push(("SLIPWAY_SERVICE".into(), service.to_owned()));
    env.push(("SLIPWAY_REVISION".into(), revision.to_string()));
    env
}

fn labels(app: &AppKey, service: &str, extra: &[(&str, &str)]) -> crate::metrics::Labels {
    let mut l = vec![
        ("app".to_owned(), app.to_string()),
        ("service".to_owned(), service.to_owned()),
    ];
    l.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    l
}

fn unknown_app(key: &AppKey) -> String {
    let (app, environment) = (key.app(), key.environment());
    if key.is_development() {
        format!("no app named `{app}` is registered; run `slipway up` in its directory first")
    } else {
        format!(
            "app `{app}` is not deployed in environment `{environment}`; run `slipway up --env {environment}` in its directory first"
        )
    }
}

/// The host an app serves in its environment (rows written before environments have
/// none stored: theirs is `<app>.localhost`, and their key is the app's name).
fn app_host(row: &slipway_state::AppRow) -> String {
    if row.host.is_empty() {
        format!("{}.localhost", row.name)
    } else {
        row.host.clone()
    }
}

/// A spec path given to the API must name a file by its absolute path: the server's working
/// directory is not the client's, so a relative path would name another file than the client
/// means.
fn check_spec_path(path: &Path) -> Result<()> {
    if !path.is_absolute() {
        return Err(ControlError::Spec(format!(
            "the spec path `{}` is relative; give the absolute path of the slipway.yaml file (the server's working directory is not yours)",
            path.display()
        )));
    }
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Err(ControlError::NotFound(format!(
            "{} is a directory; give the path of the slipway.yaml file in it",
            path.display()
        ))),
        Ok(_) => Ok(()),
        // Reading it says why (permissions, most likely) in the spec error.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Ok(()),
        Err(_) => Err(ControlError::NotFound(format!(
            "there is no spec file at {}",
            path.display()
        ))),
    }
}

fn load_spec(path: &Path, environment: &str) -> Result<Spec> {
    slipway_spec::load_env(path, environment).map_err(|e| ControlError::Spec(e.to_string()))
}

fn probe(p: &slipway_spec::Probe) -> slipway_runtime::Probe {
    slipway_runtime::Probe {
        check: match &p.check {
            slipway_spec::Check::Http { path } => {
                slipway_runtime::Check::Http { path: path.clone() }
            }
            slipway_spec::Check::Tcp => slipway_runtime::Check::Tcp,
        },
        interval: p.interval,
        timeout: p.timeout,
        failures: p.failures,
    }
}

fn instance_id(service: &str, revision: u64) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    // splitmix64 of (time, counter, pid): 32 bits, unique within a server by the counter
    // and unlikely to repeat across servers.
    let mut z =
        nanos ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (u64::from(std::process::id()) << 32);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    format!("{service}-r{revision}-{:08x}", z as u32)
}

/// Expands `$NAME` and `${NAME}` in one argument from the instance's env, then the
/// server's own environment; unknown names expand to the empty string, as in a shell.
pub fn expand(arg: &str, env: &[(String, String)]) -> String {
    let lookup = |name: &str| -> String {
        env.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .or_else(|| std::env::var(name).ok())
            .unwrap_or_default()
    };
    let mut out = String::with_capacity(arg.len());
    let chars: Vec<char> = arg.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '$' && i + 1 < chars.len() {
            if chars[i + 1] == '{' {
                if let Some(end) = chars[i + 2..].iter().position(|&c| c == '}') {
                    let name: String = chars[i + 2..i + 2 + end].iter().collect();
                    out.push_str(&lookup(&name));
                    i += end + 3;
                    continue;
                }
            } else if chars[i + 1] == '$' {
                out.push('$');
                i += 2;
                continue;
            } else if chars[i + 1].is_ascii_alphabetic() || chars[i + 1] == '_' {
                let len = chars[i + 1..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
                    .count();
                let name: String = chars[i + 1..i + 1 + len].iter().collect();
                out.push_str(&lookup(&name));
                i += len + 1;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

/// Marks the `serving` revisions' measurements as in use at `now`, and forgets those of
/// revisions that have carried no traffic for `RETIRED_STATS_KEPT` and have nothing in flight
/// or waiting.
fn prune_stats(
    stats: &mut StatsByRevision,
    serving: &[(AppKey, String, u64, bool)],
    now: Duration,
) {
    for (app, service, revision, _) in serving {
        if let Some((_, seen)) = stats.get_mut(&(app.clone(), service.clone(), *revision)) {
            *seen = now;
        }
    }
    stats.retain(|_, (s, seen)| {
        now.saturating_sub(*seen) < RETIRED_STATS_KEPT || s.in_flight() > 0 || s.queued() > 0
    });
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use slipway_core::app_key::AppKey;
    use slipway_router::RevisionStats;

    use super::{RETIRED_STATS_KEPT, expand, prune_stats};

    fn key(text: &str) -> AppKey {
        AppKey::parse(text).unwrap()
    }

    #[test]
    fn expands_port_and_braced_names_like_a_shell() {
        let env = vec![
            ("PORT".to_owned(), "4100".to_owned()),
            ("A_B".into(), "x".into()),
        ];
        assert_eq!(expand("$PORT", &env), "4100");
        assert_eq!(expand("--port=${PORT}", &env), "--port=4100");
        assert_eq!(expand("${A_B}-$A_B.", &env), "x-x.");
        assert_eq!(expand("$$PORT", &env), "$PORT");
        assert_eq!(expand("cost: 5$", &env), "cost: 5$");
        assert_eq!(expand("$SLIPWAY_SURELY_UNSET_VAR!", &env), "!");
    }

    #[test]
    fn a_failed_start_says_how_to_read_all_its_output() {
        let mut not_ready = slipway_runtime::NotReady {
            reason: "exited with status 4 before becoming ready".into(),
            last_lines: vec!["Failed to find attribute 'app' in 'mysite.wsgi'.".into()],
            log_file: "/data/logs/shop/web/web-r3-1a2b.log".into(),
            log_lines: 60,
        };
        let failure =
            super::Failure::not_ready(&key("shop"), "web", 3, "web-r3-1a2b", &not_ready, 2);
        assert_eq!(
            failure.error,
            "instance web-r3-1a2b exited with status 4 before becoming ready \
             (see all of it: `slipway logs web --revision 3 --tail 120`)"
        );
        assert_eq!(failure.last_lines, not_ready.last_lines);
        not_ready.log_lines = 12;
        let failure =
            super::Failure::not_ready(&key("shop@staging"), "web", 3, "web-r3-1a2b", &not_ready, 2);
        assert!(
            failure
                .error
                .ends_with("(see all of it: `slipway logs web --revision 3 --env staging`)"),
            "{}",
            failure.error
        );
    }

    #[test]
    fn measurements_of_revisions_out_of_traffic_are_forgotten_after_the_window() {
        let revision = |rev: u64| (key("shop"), "web".to_owned(), rev);
        let mut stats = HashMap::new();
        for rev in 1..=3 {
            stats.insert(revision(rev), (RevisionStats::new(), Duration::ZERO));
        }
        let serving = vec![(key("shop"), "web".to_owned(), 3, false)];
        // Within the window everything stays; revision 3 is seen again each tick.
        prune_stats(
            &mut stats,
            &serving,
            RETIRED_STATS_KEPT - Duration::from_secs(1),
        );
        assert_eq!(stats.len(), 3);
        prune_stats(&mut stats, &serving, RETIRED_STATS_KEPT);
        let mut left: Vec<u64> = stats.keys().map(|k| k.2).collect();
        left.sort();
        assert_eq!(left, vec![3]);
        // Taken back into traffic, a revision gets fresh measurements (counters restart).
        assert!(!stats.contains_key(&revision(1)));
    }
}
