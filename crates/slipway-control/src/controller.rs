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

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use slipway_router::{Backend, Pool, RevisionStats, RouteTable, Router, Target};
use slipway_runtime::{Driver, InstanceConfig, InstanceState, RunningInstance};
use slipway_spec::{Port, ServiceSpec, Spec};
use slipway_state::{InstanceRow, NewEvent, RevisionRow, RevisionState, Store, TrafficTarget};
use tokio::sync::mpsc;

use crate::dto::{self, Progress};

mod artifacts;
mod code;
#[cfg(test)]
mod fake;
mod ports;
mod progressive;
mod release;
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
type StatsByRevision = HashMap<(String, String, u64), (Arc<RevisionStats>, Duration)>;

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
    /// Runs the instances (native processes in the server).
    driver: Arc<dyn Driver>,
    config: ControllerConfig,
    live: Mutex<Live>,
    slots: Mutex<HashMap<(String, String), Slot>>,
    /// Held while a route table is built and published, so an older table can never
    /// overwrite a newer one.
    publishing: Mutex<()>,
    /// The router settings of each service's serving revision, by app, service and
    /// revision: parsed from the revision's stored config once, not on every table built
    /// (a revision's config never changes). Replaced by what each build used.
    route_settings: Mutex<HashMap<(String, String, u64), Arc<RouteSettings>>>,
    /// The router's measurements of each revision; kept across route-table swaps and
    /// instance restarts so rates and percentiles cover the revision's whole life.
    /// Each revision's measurements, with the last autoscaler tick (time since `epoch`) at
    /// which it carried traffic. Revisions out of traffic for `RETIRED_STATS_KEPT` are
    /// forgotten, so a long history costs nothing here (nor in `/metrics`).
    stats: Mutex<StatsByRevision>,
    /// Counts of controller actions (deploys, rollbacks, restarts) for `/metrics`.
    pub counters: crate::metrics::Counters,
    /// Canary rollouts in progress, by app and service.
    rollouts: Mutex<HashMap<(String, String), progressive::LiveRollout>>,
    /// One autoscaler per revision that can receive requests.
    scalers: Mutex<HashMap<(String, String, u64), Scaler>>,
    /// The controller's clock origin: autoscaler time is measured from here.
    epoch: Instant,
    /// Where instances of `port: auto` services get their ports.
    ports: ports::Ports,
    /// The ids of instances being started, not yet in `live`.
    starting: Mutex<std::collections::HashSet<String>>,
    /// The secrets' master key, read on first use.
    master_key: Mutex<Option<Arc<slipway_state::MasterKey>>>,
}

/// The autoscaler of one revision and what it last saw.
struct Scaler {
    decider: slipway_autoscale::Decider,
    /// The revision's request total at the previous sample, to count arrivals.
    last_requests: u64,
    /// The last decision, to record only changes as events.
    last_desired: Option<u32>,
}

/// What a service's serving revision decides about its routes.
#[derive(Default)]
struct RouteSettings {
    sticky: bool,
    header_override: bool,
    max_concurrency: u32,
    routes: Vec<String>,
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
    apps: BTreeMap<String, BTreeMap<String, BTreeMap<u64, LiveRevision>>>,
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
}

// === impl Controller ===

impl Controller {
    /// A controller whose instances are native processes.
    pub fn new(store: Arc<Store>, router: Arc<Router>, config: ControllerConfig) -> Arc<Self> {
        Controller::with_driver(
            store,
            router,
            config,
            Arc::new(slipway_runtime::ProcessDriver),
        )
    }

    /// A controller whose instances `driver` runs.
    pub fn with_driver(
        store: Arc<Store>,
        router: Arc<Router>,
        config: ControllerConfig,
        driver: Arc<dyn Driver>,
    ) -> Arc<Self> {
        Arc::new(Controller {
            store,
            router,
            driver,
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
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn router_addr(&self) -> SocketAddr {
        self.config.router_addr
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

    fn slot(&self, app: &str, service: &str) -> Slot {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        slots
            .entry((app.to_owned(), service.to_owned()))
            .or_default()
            .clone()
    }

    fn event(
        &self,
        app: &str,
        service: Option<&str>,
        revision: Option<u64>,
        kind: &str,
        message: String,
    ) {
        tracing::info!(app, service, revision, kind, "{message}");
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

    // --- startup ---

    /// Converges after a (re)start: kills instances a crashed server left behind, marks
    /// deploys it interrupted as failed, and starts every revision that carries traffic.
    pub async fn recover(self: &Arc<Self>) -> Result<()> {
        for row in self.store.instances()? {
            if self.driver.remove_orphan(row.pid, row.start_ticks) {
                self.event(
                    &row.app,
                    Some(&row.service),
                    Some(row.revision),
                    "instance.orphan_killed",
                    format!(
                        "killed instance {} (pid {}) left running by a previous server",
                        row.id, row.pid
                    ),
                );
            }
            self.store.forget_instance(&row.id)?;
        }
        for rev in self.store.revisions_in_state(RevisionState::Deploying)? {
            self.store.set_revision_state(
                &rev.app,
                &rev.service,
                rev.number,
                RevisionState::Failed,
                "interrupted: the server stopped before this revision became ready; traffic stayed where it was",
            )?;
        }
        for app in self.store.apps()? {
            if app.down {
                continue;
            }
            for service in self.store.services(&app.name)? {
                for t in self.store.traffic(&app.name, &service)? {
                    let this = self.clone();
                    let (app, service) = (app.name.clone(), service.clone());
                    tokio::spawn(async move {
                        this.keep_revision_running(&app, &service, t.revision).await;
                    });
                }
            }
        }
        self.publish_routes();
        self.recover_rollouts();
        Ok(())
    }

    /// Starts a serving revision's instances after a restart, retrying with backoff
    /// while it still carries traffic and still has none running.
    async fn keep_revision_running(self: &Arc<Self>, app: &str, service: &str, revision: u64) {
        let mut backoff = Duration::from_millis(500);
        loop {
            let slot = self.slot(app, service);
            let _guard = slot.lock().await;
            let still_serving = self
                .store
                .traffic(app, service)
                .map(|t| t.iter().any(|t| t.revision == revision))
                .unwrap_or(false);
            if !still_serving || self.running_count(app, service, revision) > 0 || self.is_down(app)
            {
                return;
            }
            // A revision that may scale to zero waits for its first request instead.
            let count = self
                .revision_spec(app, service, revision)
                .map(|s| s.scaling.min)
                .unwrap_or(1);
            if count == 0 {
                self.publish_routes();
                return;
            }
            match self
                .start_revision(app, service, revision, count, None)
                .await
            {
                Ok(_) => {
                    self.publish_routes();
                    return;
                }
                Err(failure) => {
                    self.event(
                        app,
                        Some(service),
                        Some(revision),
                        "revision.start_failed",
                        format!(
                            "revision {revision} of {service} did not start: {}; retrying in {:?}",
                            failure.error, backoff
                        ),
                    );
                }
            }
            drop(_guard);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    // --- apps ---

    /// Parses the spec at `spec_path` for `environment` and registers the app in that
    /// environment (under its key, see [`slipway_state::app_key`]) with its services and
    /// host. Returns the key and the resolved spec.
    ///
    /// # Errors
    /// An invalid spec, an environment the file does not declare, or a host that another
    /// running app or environment already serves.
    pub fn apply(&self, spec_path: &Path, environment: &str) -> Result<(String, Spec)> {
        let spec = load_spec(spec_path, environment)?;
        let key = slipway_state::app_key(&spec.app, &spec.environment);
        for other in self.store.apps()? {
            if other.name != key && !other.down && app_host(&other) == spec.host {
                let (other_app, other_env) = slipway_state::split_app_key(&other.name);
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
            &key,
            &spec_path.to_string_lossy(),
            &names,
            &spec.environment,
            &spec.host,
        )?;
        Ok((key, spec))
    }

    fn app_spec(&self, key: &str) -> Result<Spec> {
        let row = self
            .store
            .app(key)?
            .ok_or_else(|| ControlError::NotFound(unknown_app(key)))?;
        let spec = load_spec(Path::new(&row.spec_path), &row.environment)?;
        let (app, _) = slipway_state::split_app_key(key);
        if spec.app != app {
            return Err(ControlError::Invalid(format!(
                "{} now declares app `{}`, not `{app}`; run `slipway up` in that directory to register it",
                row.spec_path, spec.app
            )));
        }
        Ok(spec)
    }

    /// Deploys the named services (all when empty) from the app's spec file, reporting
    /// progress on `tx`. Services deploy concurrently; each is independent, so one
    /// failing leaves the others' results standing.
    pub async fn deploy(
        self: &Arc<Self>,
        app: &str,
        services: &[String],
        force: bool,
        // A strategy given for one deploy is how this deploy rolls out, not config: it
        // never enters the revision's digest.
        strategy: Option<slipway_spec::Strategy>,
        tx: mpsc::UnboundedSender<Progress>,
    ) -> Result<bool> {
        let spec = self.app_spec(app)?;
        for s in services {
            if !spec.services.contains_key(s) {
                return Err(ControlError::NotFound(format!(
                    "app {app} has no service `{s}` (services: {})",
                    spec.services.keys().cloned().collect::<Vec<_>>().join(", ")
                )));
            }
        }
        // Every secret a deployed service needs must be set before anything starts.
        let mut missing = false;
        for (name, svc) in &spec.services {
            if !services.is_empty() && !services.contains(name) {
                continue;
            }
            if let Err(error) = self.secret_versions(app, name, svc) {
                missing = true;
                let _ = tx.send(Progress::Failed {
                    service: name.clone(),
                    revision: None,
                    error,
                    last_lines: vec![],
                });
            }
        }
        if missing {
            return Ok(false);
        }
        let was_down = self.store.app(app)?.is_some_and(|a| a.down);
        if was_down {
            self.store.set_app_down(app, false)?;
        }
        // Bringing a stopped app back starts every service, not only the named ones.
        let services: &[String] = if was_down { &[] } else { services };
        // Services that left the spec stop and lose their traffic; history stays.
        if services.is_empty() {
            for old in self.store.services(app)? {
                if !spec.services.contains_key(&old) {
                    self.remove_service(app, &old).await?;
                }
            }
        }
        let mut tasks = Vec::new();
        for (name, svc) in &spec.services {
            if !services.is_empty() && !services.contains(name) {
                continue;
            }
            let this = self.clone();
            let (app, name, svc, tx) = (app.to_owned(), name.clone(), svc.clone(), tx.clone());
            tasks.push(tokio::spawn(async move {
                this.deploy_service(&app, &name, svc, force, strategy, &tx)
                    .await
            }));
        }
        let mut ok = true;
        for t in tasks {
            ok &= t.await.unwrap_or(false);
        }
        Ok(ok)
    }

    async fn remove_service(self: &Arc<Self>, app: &str, service: &str) -> Result<()> {
        let slot = self.slot(app, service);
        let _guard = slot.lock().await;
        self.store.remove_service(app, service)?;
        self.publish_routes();
        let revisions: Vec<u64> = self
            .live()
            .apps
            .get(app)
            .and_then(|a| a.get(service))
            .map(|s| s.keys().copied().collect())
            .unwrap_or_default();
        for r in revisions {
            self.retire_revision(app, service, r).await;
        }
        Ok(())
    }

    async fn deploy_service(
        self: &Arc<Self>,
        app: &str,
        service: &str,
        spec: ServiceSpec,
        force: bool,
        strategy: Option<slipway_spec::Strategy>,
        tx: &mpsc::UnboundedSender<Progress>,
    ) -> bool {
        let slot = self.slot(app, service);
        let _guard = slot.lock().await;
        if self.is_down(app) {
            let _ = tx.send(Progress::Failed {
                service: service.to_owned(),
                revision: None,
                error: format!("app {app} was stopped (`slipway down`) while this deploy waited; run `slipway up` again"),
                last_lines: vec![],
            });
            return false;
        }
        let outcome = self
            .deploy_service_locked(app, service, spec, force, None, strategy, tx)
            .await;
        self.counters.inc(
            "slipway_deploys",
            labels(
                app,
                service,
                &[("outcome", if outcome.is_ok() { "ok" } else { "failed" })],
            ),
        );
        match outcome {
            Ok(()) => true,
            Err(failure) => {
                let _ = tx.send(Progress::Failed {
                    service: service.to_owned(),
                    revision: failure.revision,
                    error: failure.error,
                    last_lines: failure.last_lines,
                });
                false
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn deploy_service_locked(
        self: &Arc<Self>,
        app: &str,
        service: &str,
        spec: ServiceSpec,
        force: bool,
        prebuilt: Option<code::Frozen>,
        strategy: Option<slipway_spec::Strategy>,
        tx: &mpsc::UnboundedSender<Progress>,
    ) -> Result<(), Failure> {
        let started = Instant::now();
        // Build, test and freeze the code first (or take a promoted revision's code as it
        // is): nothing about the revision exists until they succeed.
        let frozen = match prebuilt {
            Some(frozen) => frozen,
            None => self.freeze(app, service, &spec, tx).await?,
        };
        let secret_versions = self
            .secret_versions(app, service, &spec)
            .map_err(Failure::msg)?;
        let mut stored = secrets::StoredConfig {
            spec,
            secret_versions,
            artifact_digest: frozen.artifact_digest,
            code: frozen.code,
        };
        let digest = stored.digest();
        if let Some(strategy) = strategy {
            stored.spec.deploy.strategy = strategy;
        }
        let stored = stored;
        let spec = &stored.spec;
        // A new deploy supersedes a canary in progress: its traffic returns to the
        // baseline first, then the new revision goes through its own strategy.
        if self.rollout_in_progress(app, service).is_some() {
            let key = (app.to_owned(), service.to_owned());
            let live = self
                .rollouts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
            if let Some(mut live) = live
                && let Ok(decision) = live.abort_for_new_deploy()
            {
                self.apply_rollout(app, service, live, decision, "superseded by a new deploy")?;
            }
        }
        let serving = self.serving_revision(app, service).map_err(Failure::from)?;
        if let Some(current) = &serving
            && !force
            && current.digest == digest
        {
            // Same config: nothing to deploy, but a stopped app gets its instances back.
            if self.running_count(app, service, current.number) == 0 && spec.scaling.min > 0 {
                self.start_revision(app, service, current.number, spec.scaling.min, Some(tx))
                    .await?;
                self.publish_routes();
            }
            let _ = tx.send(Progress::Unchanged {
                service: service.to_owned(),
                revision: current.number,
            });
            return Ok(());
        }
        let config = serde_json::to_string(&stored).map_err(|e| Failure::msg(e.to_string()))?;
        let cause = match &serving {
            None => "first deploy",
            Some(_) if force => "forced deploy",
            Some(current) => match serde_json::from_str::<secrets::StoredConfig>(&current.config) {
                Ok(old)
                    if old.code == stored.code && old.artifact_digest == stored.artifact_digest =>
                {
                    "config changed"
                }
                Ok(old) if old.spec.digest() == stored.spec.digest() => "code changed",
                _ => "code and config changed",
            },
        };
        let revision = self
            .store
            .create_revision(app, service, &digest, &config, cause)
            .map_err(Failure::from)?;
        let previous_note = || match &serving {
            Some(r) => format!("revision {} keeps serving", r.number),
            None => "nothing was serving before".to_owned(),
        };
        // Marks the revision failed with the reason, as the deploy's answer.
        let failed = |mut failure: Failure, note: String| {
            let message = format!("{}; {note}", failure.error);
            if let Err(e) = self.store.set_revision_state(
                app,
                service,
                revision,
                RevisionState::Failed,
                &message,
            ) {
                tracing::error!(%e, "could not mark a revision failed");
            }
            failure.revision = Some(revision);
            failure.error = format!("revision {revision} failed: {message}");
            failure
        };
        // The release command (migrations) runs in the new revision's code before any of
        // its instances starts, as Heroku's release phase does: an app whose readiness
        // needs the migrated schema could never become ready otherwise. If it fails,
        // nothing of the new revision ran and the serving revision is untouched.
        let mut released_summary = None;
        if let Some(command) = &spec.release {
            let _ = tx.send(Progress::ReleaseStarted {
                service: service.to_owned(),
                revision,
                command: command.join(" "),
            });
            match self
                .run_release(app, service, revision, &stored, command, Some(tx))
                .await
            {
                Ok(released) => {
                    let _ = tx.send(Progress::ReleaseSucceeded {
                        service: service.to_owned(),
                        revision,
                        summary: released.summary.clone(),
                    });
                    released_summary = Some(released.summary);
                }
                Err(failure) => return Err(failed(failure, previous_note())),
            }
        }
        // The new revision starts with as many instances as the serving one has ready (so
        // a redeploy under load does not switch all traffic onto one instance), within
        // the new config's bounds, and at least one to prove it becomes ready.
        let current_ready = serving
            .as_ref()
            .map_or(0, |r| self.ready_count(app, service, r.number) as u32);
        let instances = current_ready
            .max(spec.scaling.min)
            .min(spec.scaling.max)
            .max(1);
        let _ = tx.send(Progress::Starting {
            service: service.to_owned(),
            revision,
            instances,
        });
        let previous = serving.as_ref().map(|r| r.number);
        let strategy = spec.deploy.strategy;
        let started_new = match (strategy, previous) {
            (slipway_spec::Strategy::Recreate, Some(prev)) => self
                .recreate(app, service, revision, prev, instances, tx)
                .await
                .map(Some),
            _ => self
                .start_revision(app, service, revision, instances, Some(tx))
                .await
                .map(|()| None),
        };
        let started_new = match started_new {
            Ok(downtime) => downtime,
            Err(failure) => return Err(failed(failure, previous_note())),
        };
        let mut ready_message = format!("all {instances} instance(s) ready");
        if let Some(summary) = released_summary {
            ready_message = format!("{ready_message}; {summary}");
        }
        let mut committed = self
            .store
            .set_revision_state(app, service, revision, RevisionState::Ready, &ready_message)
            .map_err(Failure::from);
        // Rolling: shift traffic and instances one at a time (max surge 1, max
        // unavailable 0) before the final switch below.
        if committed.is_ok()
            && let (slipway_spec::Strategy::Rolling, Some(prev)) = (strategy, previous)
        {
            committed = self
                .rolling(app, service, revision, prev, instances, tx)
                .await;
        }
        let committed = committed.and_then(|()| {
            if Self::wants_canary(spec, previous) {
                self.start_canary(app, service, revision, previous.unwrap_or(0), spec, tx)
            } else {
                if let Some(downtime) = &started_new {
                    let _ = tx.send(Progress::Downtime {
                        service: service.to_owned(),
                        downtime_ms: downtime.as_millis() as u64,
                    });
                }
                // An instance can crash between becoming ready and the switch: traffic
                // only moves to a revision that has a ready instance at that moment.
                if self.ready_count(app, service, revision) == 0 {
                    let (why, last_lines) = self.not_ready_now(app, service, revision);
                    return Err(Failure {
                        revision: Some(revision),
                        error: format!(
                            "revision {revision} failed: its instances became ready, then none was ready when traffic was to move ({why}); {}",
                            previous_note()
                        ),
                        last_lines,
                    });
                }
                self.switch(app, service, revision, previous, "deploy", tx, started)?;
                if let Some(previous) = previous
                    && strategy == slipway_spec::Strategy::BlueGreen
                    && spec.deploy.verify
                {
                    self.watch_switch(app, service, revision, previous, spec);
                }
                Ok(())
            }
        });
        if let Err(mut failure) = committed {
            // The switch was not recorded: the new revision must not keep running unrouted.
            self.retire_revision(app, service, revision).await;
            let _ = self.store.set_revision_state(
                app,
                service,
                revision,
                RevisionState::Failed,
                &failure.error,
            );
            failure.revision = Some(revision);
            return Err(failure);
        }
        Ok(())
    }

    /// Replaces the previous revision's instances with the new one's one at a time: start
    /// one new instance, move traffic in proportion to the instance counts, then drain and
    /// stop one old instance. Starts with one new instance already ready; on failure all
    /// traffic returns to the previous revision.
    async fn rolling(
        self: &Arc<Self>,
        app: &str,
        service: &str,
        revision: u64,
        previous: u64,
        target: u32,
        tx: &mpsc::UnboundedSender<Progress>,
    ) -> Result<(), Failure> {
        let old_count = self.running_count(app, service, previous) as u32;
        let plan = slipway_rollout::rolling_plan(old_count, target);
        let (mut old_now, mut new_now) = (old_count, 1u32);
        for (old_want, new_want) in plan {
            // The last old instances stay until the final switch moves all traffic; the
            // switch retires them after keep_previous.
            let new_want = if old_want == 0 { target } else { new_want };
            if new_want > new_now {
                if let Err(f) = self
                    .start_revision(app, service, revision, new_want - new_now, Some(tx))
                    .await
                {
                    let _ = self.store.set_traffic(
                        app,
                        service,
                        &[TrafficTarget {
                            revision: previous,
                            percent: 100,
                        }],
                        "rolling deploy failed",
                    );
                    self.publish_routes();
                    return Err(f);
                }
                new_now = new_want;
            }
            if old_want == 0 {
                break;
            }
            if old_want < old_now {
                self.scale_down(app, service, previous, old_now - old_want)
                    .await;
                old_now = old_want;
            }
            if old_now == 0 || new_now == 0 {
                continue;
            }
            let new_percent = ((100 * new_now) / (old_now + new_now)).clamp(1, 99);
            self.store
                .set_traffic(
                    app,
                    service,
                    &[
                        TrafficTarget {
                            revision: previous,
                            percent: 100 - new_percent,
                        },
                        TrafficTarget {
                            revision,
                            percent: new_percent,
                        },
                    ],
                    "rolling deploy",
                )
                .map_err(Failure::from)?;
            self.publish_routes();
        }
        Ok(())
    }

    /// Commits "all traffic to `revision`" and publishes it; schedules the previous
    /// revision's retirement after its `keep_previous` window.
    #[allow(clippy::too_many_arguments)]
    fn switch(
        self: &Arc<Self>,
        app: &str,
        service: &str,
        revision: u64,
        previous: Option<u64>,
        why: &str,
        tx: &mpsc::UnboundedSender<Progress>,
        started: Instant,
    ) -> Result<(), Failure> {
        self.store
            .set_traffic(
                app,
                service,
                &[TrafficTarget {
                    revision,
                    percent: 100,
                }],
                why,
            )
            .map_err(Failure::from)?;
        self.publish_routes();
        let _ = tx.send(Progress::Switched {
            service: service.to_owned(),
            revision,
            previous,
            elapsed_ms: started.elapsed().as_millis() as u64,
        });
        // Every other running revision of this service now has no traffic: the previous one
        // stays warm for its keep_previous window; any older one is drained now.
        let others: Vec<u64> = self
            .live()
            .apps
            .get(app)
            .and_then(|a| a.get(service))
            .map(|s| s.keys().copied().collect())
            .unwrap_or_default();
        for r in others {
            if r == revision {
                self.cancel_retire(app, service, r);
                continue;
            }
            let keep = if Some(r) == previous {
                self.revision_spec(app, service, r)
                    .map(|s| s.deploy.keep_previous)
                    .unwrap_or_default()
            } else {
                Duration::ZERO
            };
            self.schedule_retire(app, service, r, keep);
        }
        Ok(())
    }

    /// Retires a revision's instances after `keep` (at least `RETIRE_FLOOR`, so requests
    /// that picked an older route table just before a swap still find their instance),
    /// unless it receives traffic again or a newer schedule supersedes this one.
    ///
    /// A retirement already due sooner stays as it is: deploys less than `RETIRE_FLOOR`
    /// apart would otherwise push every older revision's retirement back each time, and
    /// none would ever stop while they go on.
    fn schedule_retire(self: &Arc<Self>, app: &str, service: &str, revision: u64, keep: Duration) {
        let due = tokio::time::Instant::now() + keep.max(RETIRE_FLOOR);
        let token = {
            let mut live = self.live();
            let Some(lr) = live
                .apps
                .get_mut(app)
                .and_then(|a| a.get_mut(service))
                .and_then(|s| s.get_mut(&revision))
            else {
                return;
            };
            if lr.retire_at.is_some_and(|at| at <= due) {
                return;
            }
            lr.retire_token = next_retire_token();
            lr.retire_at = Some(due);
            lr.retire_token
        };
        let this = self.clone();
        let (app, service) = (app.to_owned(), service.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep_until(due).await;
            let slot = this.slot(&app, &service);
            let _guard = slot.lock().await;
            let current = this
                .live()
                .apps
                .get(&app)
                .and_then(|a| a.get(&service))
                .and_then(|s| s.get(&revision))
                .map(|lr| lr.retire_token);
            let serving = this
                .store
                .traffic(&app, &service)
                .map(|t| t.iter().any(|t| t.revision == revision))
                .unwrap_or(true);
            if current == Some(token) && !serving {
                this.retire_revision(&app, &service, revision).await;
            }
        });
    }

    /// Cancels any pending retirement of a revision (it serves again).
    fn cancel_retire(&self, app: &str, service: &str, revision: u64) {
        let mut live = self.live();
        if let Some(lr) = live
            .apps
            .get_mut(app)
            .and_then(|a| a.get_mut(service))
            .and_then(|s| s.get_mut(&revision))
        {
            lr.retire_token = next_retire_token();
            lr.retire_at = None;
        }
    }

    /// Switches a service back to an earlier ready revision (the one before the serving
    /// one by default), starting it first when it is no longer warm.
    pub async fn rollback(
        self: &Arc<Self>,
        app: &str,
        service: &str,
        to: Option<u64>,
        tx: mpsc::UnboundedSender<Progress>,
    ) -> Result<bool> {
        let outcome = self.rollback_inner(app, service, to, tx).await;
        let ok = matches!(outcome, Ok(true));
        self.counters.inc(
            "slipway_rollbacks",
            labels(
                app,
                service,
                &[("outcome", if ok { "ok" } else { "failed" })],
            ),
        );
        outcome
    }

    async fn rollback_inner(
        self: &Arc<Self>,
        app: &str,
        service: &str,
        to: Option<u64>,
        tx: mpsc::UnboundedSender<Progress>,
    ) -> Result<bool> {
        let started = Instant::now();
        if self.store.app(app)?.is_none() {
            return Err(ControlError::NotFound(unknown_app(app)));
        }
        let services = self.store.services(app)?;
        if !services.iter().any(|s| s == service) {
            return Err(ControlError::NotFound(format!(
                "app {app} has no service `{service}` (services: {})",
                services.join(", ")
            )));
        }
        let slot = self.slot(app, service);
        let _guard = slot.lock().await;
        if self.is_down(app) {
            return Err(ControlError::Invalid(format!(
                "app {app} is down; run `slipway up` to start it, then roll back"
            )));
        }
        // A rollback during a canary first ends the canary: all traffic returns to its
        // baseline (and the canary revision is marked failed). Without `--to`, that is the
        // rollback; with it, the switch to the named revision follows.
        if self.rollout_in_progress(app, service).is_some() {
            let key = (app.to_owned(), service.to_owned());
            let live = self
                .rollouts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&key);
            if let Some(mut live) = live {
                let (canary, baseline) = live.revisions();
                let decision = live
                    .abort_for("rolled back by the operator")
                    .map_err(|e| ControlError::Invalid(e.to_string()))?;
                self.apply_rollout(app, service, live, decision, "rollback")
                    .map_err(|f| ControlError::Invalid(f.error))?;
                if to.is_none() || to == Some(baseline) {
                    let _ = tx.send(Progress::Switched {
                        service: service.to_owned(),
                        revision: baseline,
                        previous: Some(canary),
                        elapsed_ms: started.elapsed().as_millis() as u64,
                    });
                    return Ok(true);
                }
            }
        }
        let revisions = self.store.revisions(app, service)?;
        if revisions.is_empty() {
            return Err(ControlError::NotFound(format!(
                "service {service} of app {app} has no revisions; deploy it first"
            )));
        }
        let current = self.serving_revision(app, service)?.map(|r| r.number);
        let target = match to {
            Some(n) => {
                let rev = revisions.iter().find(|r| r.number == n).ok_or_else(|| {
                    ControlError::NotFound(format!(
                        "service {service} has no revision {n} (revisions 1..={})",
                        revisions.len()
                    ))
                })?;
                if rev.state != RevisionState::Ready {
                    return Err(ControlError::Invalid(format!(
                        "revision {n} of {service} is {} ({}); only a revision that became ready can serve",
                        rev.state.as_str(),
                        rev.message
                    )));
                }
                n
            }
            None => revisions
                .iter()
                .rev()
                .find(|r| {
                    r.state == RevisionState::Ready && current.is_none_or(|c| r.number < c)
                })
                .map(|r| r.number)
                .ok_or_else(|| {
                    ControlError::Invalid(format!(
                        "service {service} has no ready revision before revision {} to roll back to",
                        current.unwrap_or(0)
                    ))
                })?,
        };
        if Some(target) == current {
            return Err(ControlError::Invalid(format!(
                "revision {target} of {service} is already serving"
            )));
        }
        let wanted = {
            let target_spec = self
                .revision_spec(app, service, target)
                .map_err(|f| ControlError::Invalid(f.error))?;
            let current_ready = current.map_or(0, |c| self.ready_count(app, service, c) as u32);
            current_ready
                .max(target_spec.scaling.min)
                .min(target_spec.scaling.max)
                .max(1)
        };
        if self.ready_count(app, service, target) == 0
            && let Err(f) = self
                .start_revision(app, service, target, wanted, Some(&tx))
                .await
        {
            let _ = tx.send(Progress::Failed {
                service: service.to_owned(),
                revision: Some(target),
                error: format!("revision {target} could not be started again: {}", f.error),
                last_lines: f.last_lines,
            });
            return Ok(false);
        }
        match self.switch(app, service, target, current, "rollback", &tx, started) {
            Ok(()) => Ok(true),
            Err(f) => {
                let _ = tx.send(Progress::Failed {
                    service: service.to_owned(),
                    revision: Some(target),
                    error: f.error,
                    last_lines: vec![],
                });
                Ok(false)
            }
        }
    }

    /// Stops every instance of an app cleanly and records it as down.
    pub async fn down(self: &Arc<Self>, app: &str) -> Result<()> {
        if self.store.app(app)?.is_none() {
            return Err(ControlError::NotFound(unknown_app(app)));
        }
        self.store.set_app_down(app, true)?;
        self.publish_routes();
        // Take each service's slot so no deploy, rollback or recovery is halfway through
        // starting instances while they are being stopped; those re-check `down` after
        // taking the slot.
        for service in self.store.services(app)? {
            let slot = self.slot(app, &service);
            let _guard = slot.lock().await;
            let revisions: Vec<u64> = self
                .live()
                .apps
                .get(app)
                .and_then(|a| a.get(&service))
                .map(|s| s.keys().copied().collect())
                .unwrap_or_default();
            for r in revisions {
                self.retire_revision(app, &service, r).await;
            }
        }
        // Services no longer in the spec may still have instances (none normally).
        self.stop_app_instances(app).await;
        Ok(())
    }

    async fn stop_app_instances(self: &Arc<Self>, app: &str) {
        let services: Vec<(String, Vec<u64>)> = self
            .live()
            .apps
            .get(app)
            .map(|a| {
                a.iter()
                    .map(|(s, revs)| (s.clone(), revs.keys().copied().collect()))
                    .collect()
            })
            .unwrap_or_default();
        let mut tasks = Vec::new();
        for (service, revisions) in services {
            for r in revisions {
                let this = self.clone();
                let (app, service) = (app.to_owned(), service.clone());
                tasks.push(tokio::spawn(async move {
                    this.retire_revision(&app, &service, r).await
                }));
            }
        }
        for t in tasks {
            let _ = t.await;
        }
    }

    /// Stops every instance of every app (server shutdown). Apps are not marked down,
    /// so the next server start brings them back.
    pub async fn shutdown(self: &Arc<Self>) {
        let apps: Vec<String> = self.live().apps.keys().cloned().collect();
        self.router.publish(RouteTable::new());
        for app in apps {
            self.stop_app_instances(&app).await;
        }
    }

    // --- instances ---

    /// Starts `scaling.min` (at least one) instances of a revision from its stored config
    /// and waits until all are ready. On failure every instance started here is stopped
    /// again and the reason comes back with the failing instance's last output lines.
    async fn start_revision(
        self: &Arc<Self>,
        app: &str,
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
                    // route to this instance, so mark it ready now.
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

    async fn start_instance(
        self: &Arc<Self>,
        app: &str,
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
        // A revision runs its frozen code (snapshot or stored artifact), never the working
        // tree.
        let (workdir, argv) = self.layout(app, stored, argv).await?;
        for (name, value) in self.secret_env(app, &stored.secret_versions)? {
            env.push((name, value.as_str().to_owned()));
        }
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
            restart_backoff: (Duration::from_millis(200), Duration::from_secs(30)),
        };
        // Counted as running for `prune_logs` from before its log file exists until it is
        // in `live`.
        let _starting = Starting::new(&self.starting, &id);
        let instance = self
            .driver
            .start(config)
            .await
            .map_err(|e| Failure::msg(format!("{service}: {e}")))?;
        let backend = Backend::new(SocketAddr::from(([127, 0, 0, 1], port)), id.clone());
        let live = LiveInstance {
            instance: instance.clone(),
            backend: backend.clone(),
            grace: spec.shutdown.grace,
            workdir,
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
            "instance.started",
            format!(
                "instance {id} started (pid {}, port {port})",
                instance.pid().unwrap_or(0)
            ),
        );
        // Mirror the instance's health into the router and the event log.
        let this = self.clone();
        let (app, service) = (app.to_owned(), service.to_owned());
        tokio::spawn(async move {
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
                backend.set_ready(state == InstanceState::Ready);
                let (kind, message) = match &state {
                    InstanceState::Ready => ("instance.ready", format!("instance {id} ready")),
                    InstanceState::Unready { reason } => (
                        "instance.unready",
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
                            "instance.crashed",
                            format!("instance {id} {reason}; restart #{restarts} in {retry_in:?}"),
                        )
                    }
                    InstanceState::Failed { reason } => {
                        ("instance.failed", format!("instance {id} {reason}"))
                    }
                    InstanceState::Starting | InstanceState::Stopping => ("", String::new()),
                    InstanceState::Stopped => {
                        ("instance.stopped", format!("instance {id} stopped"))
                    }
                };
                if !kind.is_empty() {
                    this.event(&app, Some(&service), Some(revision), kind, message);
                }
                if let InstanceState::Backoff { reason, .. } | InstanceState::Failed { reason } =
                    &state
                {
                    let (this, app, service, reason) =
                        (this.clone(), app.clone(), service.clone(), reason.clone());
                    tokio::spawn(this.fail_back_if_dead(app, service, revision, reason));
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
    fn fail_back_if_dead(
        self: Arc<Self>,
        app: String,
        service: String,
        revision: u64,
        reason: String,
    ) -> slipway_runtime::BoxFuture<'static, ()> {
        Box::pin(async move {
            self.fail_back_if_dead_inner(&app, &service, revision, &reason)
                .await;
        })
    }

    async fn fail_back_if_dead_inner(
        self: &Arc<Self>,
        app: &str,
        service: &str,
        revision: u64,
        reason: &str,
    ) {
        let Ok(traffic) = self.store.traffic(app, service) else {
            return;
        };
        if !(traffic.len() == 1 && traffic[0].revision == revision)
            || self.ready_count(app, service, revision) > 0
        {
            return;
        }
        let warm: Option<u64> = self
            .live()
            .apps
            .get(app)
            .and_then(|a| a.get(service))
            .and_then(|s| {
                s.iter()
                    .filter(|(r, _)| **r != revision)
                    .filter(|(_, live)| {
                        live.instances
                            .iter()
                            .any(|i| *i.instance.state().borrow() == InstanceState::Ready)
                    })
                    .map(|(r, _)| *r)
                    .max()
            });
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
            "deploy.rolled_back",
            message.clone(),
        );
        let (tx, _rx) = mpsc::unbounded_channel();
        if let Ok(true) = self.rollback(app, service, Some(previous), tx).await {
            let _ = self.store.set_revision_state(
                app,
                service,
                revision,
                RevisionState::Failed,
                &message,
            );
        }
    }

    fn record_instance(&self, app: &str, service: &str, revision: u64, instance: &RunningInstance) {
        let (Some(pid), Some(start_ticks)) = (instance.pid(), instance.started_at_ticks()) else {
            return;
        };
        let row = InstanceRow {
            id: instance.id().to_owned(),
            app: app.to_owned(),
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
    async fn retire_revision(self: &Arc<Self>, app: &str, service: &str, revision: u64) {
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
    async fn stop_instance(&self, app: &str, service: &str, revision: u64, i: LiveInstance) {
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
        // Directory I/O stays off the async workers, which also serve the router.
        tokio::task::spawn_blocking(self.prune_logs(app, service));
    }

    /// Deletes the logs of a service's stopped instances beyond the newest `keep_logs` and
    /// any older than `STOPPED_LOGS_MAX_AGE`. Scale to zero starts a new instance (and log)
    /// on every wake-up, so without this the log directory grows for ever. Returns the file
    /// work to run, which blocks: on a blocking-pool thread from async code.
    fn prune_logs(&self, app: &str, service: &str) -> impl FnOnce() + Send + 'static {
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
    fn prune_checkouts(&self) {
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

    fn prune_all_logs(&self) {
        let Ok(apps) = std::fs::read_dir(self.config.data_dir.join("logs")) else {
            return;
        };
        for app in apps.flatten() {
            let Ok(services) = std::fs::read_dir(app.path()) else {
                continue;
            };
            let app = app.file_name().to_string_lossy().into_owned();
            for service in services.flatten() {
                self.prune_logs(&app, &service.file_name().to_string_lossy())();
            }
        }
    }

    /// The measurements of one revision (created on first use).
    pub fn revision_stats(&self, app: &str, service: &str, revision: u64) -> Arc<RevisionStats> {
        let now = self.epoch.elapsed();
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        stats
            .entry((app.to_owned(), service.to_owned(), revision))
            .or_insert_with(|| (RevisionStats::new(), now))
            .0
            .clone()
    }

    fn prune_stats(&self, serving: &[(String, String, u64, bool)], now: Duration) {
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        prune_stats(&mut stats, serving, now);
    }

    fn is_down(&self, app: &str) -> bool {
        self.store.app(app).ok().flatten().is_none_or(|a| a.down)
    }

    fn running_count(&self, app: &str, service: &str, revision: u64) -> usize {
        self.live()
            .apps
            .get(app)
            .and_then(|a| a.get(service))
            .and_then(|s| s.get(&revision))
            .map_or(0, |r| r.instances.len())
    }

    /// Why a revision's first instance is not ready now, and its last output lines.
    fn not_ready_now(&self, app: &str, service: &str, revision: u64) -> (String, Vec<String>) {
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

    fn ready_count(&self, app: &str, service: &str, revision: u64) -> usize {
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

    fn serving_revision(&self, app: &str, service: &str) -> Result<Option<RevisionRow>> {
        let traffic = self.store.traffic(app, service)?;
        let Some(top) = traffic.iter().max_by_key(|t| t.percent) else {
            return Ok(None);
        };
        Ok(self.store.revision(app, service, top.revision)?)
    }

    fn revision_spec(
        &self,
        app: &str,
        service: &str,
        revision: u64,
    ) -> Result<ServiceSpec, Failure> {
        let row = self
            .store
            .revision(app, service, revision)
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

    // --- autoscaling ---

    /// Runs the autoscaler every second until the server stops.
    pub fn spawn_autoscaler(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        // The router calls the activator on its own threads; starting an instance is the
        // control plane's work, so it runs here.
        let control = tokio::runtime::Handle::current();
        self.router.set_activator(Arc::new({
            let weak = weak.clone();
            move |app: &str, service: &str, revision: u64| {
                if let Some(this) = weak.upgrade() {
                    let (app, service) = (app.to_owned(), service.to_owned());
                    control.spawn(async move { this.activate(&app, &service, revision).await });
                }
            }
        }));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_sweep = Instant::now();
            loop {
                tick.tick().await;
                let Some(this) = weak.upgrade() else { return };
                let sweep = last_sweep.elapsed() >= LOG_SWEEP_EVERY;
                if sweep {
                    last_sweep = Instant::now();
                }
                // The ticks read the store and every serving revision's figures: tens of
                // milliseconds with a thousand services. On a blocking-pool thread they do not
                // hold up the async workers, which also run the router (one worker in the
                // benchmarks: a tick there showed as a 12 ms p99 against 4 ms).
                let ticked = tokio::task::spawn_blocking(move || {
                    this.autoscale_tick();
                    this.rollout_tick();
                    if sweep {
                        this.prune_all_logs();
                        this.prune_checkouts();
                    }
                })
                .await;
                if let Err(err) = ticked {
                    tracing::error!(%err, "the autoscaler and rollout tick panicked");
                }
            }
        });
    }

    /// A request is waiting for a revision that has no ready instance: start one now
    /// (a cold start) unless one is already starting.
    async fn activate(self: &Arc<Self>, app: &str, service: &str, revision: u64) {
        let now = self.epoch.elapsed();
        if let Some(s) = self
            .scalers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(&(app.to_owned(), service.to_owned(), revision))
        {
            s.decider.poke(now);
        }
        let slot = self.slot(app, service);
        let _guard = slot.lock().await;
        if self.is_down(app) || self.running_count(app, service, revision) > 0 {
            return;
        }
        let started = Instant::now();
        self.counters.inc(
            "slipway_cold_starts",
            labels(app, service, &[("revision", &revision.to_string())]),
        );
        match self.start_revision(app, service, revision, 1, None).await {
            Ok(()) => {
                self.publish_routes();
                self.event(
                    app,
                    Some(service),
                    Some(revision),
                    "scale.cold_start",
                    format!(
                        "cold start: revision {revision} of {service} had no instance; one was ready in {} ms",
                        started.elapsed().as_millis()
                    ),
                );
            }
            Err(f) => self.event(
                app,
                Some(service),
                Some(revision),
                "scale.cold_start_failed",
                format!(
                    "cold start of revision {revision} of {service} failed: {}",
                    f.error
                ),
            ),
        }
    }

    /// One autoscaler pass: sample every revision that carries traffic, decide, and
    /// start or retire instances. A service busy with a deploy or rollback is skipped
    /// this second (its slot is taken) and looked at again on the next tick.
    fn autoscale_tick(self: &Arc<Self>) {
        let now = self.epoch.elapsed();
        let mut serving = Vec::new();
        for app in self.store.apps().unwrap_or_default() {
            if app.down {
                continue;
            }
            for service in self.store.services(&app.name).unwrap_or_default() {
                let traffic = self.store.traffic(&app.name, &service).unwrap_or_default();
                for t in &traffic {
                    serving.push((app.name.clone(), service.clone(), t.revision, false));
                }
                // A tagged revision without a share is reachable by its tag host; it
                // scales on its own requests, down to zero.
                for (_, rev) in self.store.tags(&app.name, &service).unwrap_or_default() {
                    if !traffic.iter().any(|t| t.revision == rev) {
                        serving.push((app.name.clone(), service.clone(), rev, true));
                    }
                }
            }
        }
        self.prune_stats(&serving, now);
        let mut decisions = Vec::new();
        {
            let mut scalers = self.scalers.lock().unwrap_or_else(|p| p.into_inner());
            scalers.retain(|(a, sv, r), _| {
                serving
                    .iter()
                    .any(|(a2, s2, r2, _)| a == a2 && sv == s2 && r == r2)
            });
            for (app, service, revision, tag_only) in &serving {
                let key = (app.clone(), service.clone(), *revision);
                let stats = self.revision_stats(app, service, *revision);
                let total = stats.totals().requests();
                let scaler = match scalers.entry(key) {
                    std::collections::hash_map::Entry::Occupied(entry) => entry.into_mut(),
                    std::collections::hash_map::Entry::Vacant(entry) => {
                        // The stored spec is read (and parsed) once per revision, not per tick.
                        let Ok(spec) = self.revision_spec(app, service, *revision) else {
                            continue;
                        };
                        let mut config = scaler_config(&spec);
                        if *tag_only {
                            config.min = 0;
                        }
                        entry.insert(Scaler {
                            decider: slipway_autoscale::Decider::new(config),
                            last_requests: total,
                            last_desired: None,
                        })
                    }
                };
                scaler.decider.record(slipway_autoscale::Sample {
                    at: now,
                    concurrency: (stats.in_flight() + stats.queued()) as f64,
                    requests: total.saturating_sub(scaler.last_requests),
                });
                scaler.last_requests = total;
                let ready = self.ready_count(app, service, *revision) as u32;
                let decision = scaler.decider.scale(now, ready);
                let changed = scaler.last_desired != Some(decision.desired);
                scaler.last_desired = Some(decision.desired);
                decisions.push((app.clone(), service.clone(), *revision, decision, changed));
            }
        }
        for (app, service, revision, decision, changed) in decisions {
            let running = self.running_count(&app, &service, revision) as u32;
            if changed {
                self.event(
                    &app,
                    Some(&service),
                    Some(revision),
                    "scale.decision",
                    format!(
                        "{} instance(s) wanted, {running} running{}: {}",
                        decision.desired,
                        if decision.panic { " (panic mode)" } else { "" },
                        decision.reason
                    ),
                );
            }
            if decision.desired == running {
                continue;
            }
            let this = self.clone();
            tokio::spawn(async move {
                let slot = this.slot(&app, &service);
                // A deploy or rollback in progress owns the service; try again next tick.
                let Ok(_guard) = slot.try_lock() else { return };
                if this.is_down(&app) {
                    return;
                }
                let running = this.running_count(&app, &service, revision) as u32;
                if decision.desired > running {
                    let add = decision.desired - running;
                    if let Err(f) = this
                        .start_revision(&app, &service, revision, add, None)
                        .await
                    {
                        this.event(
                            &app,
                            Some(&service),
                            Some(revision),
                            "scale.failed",
                            format!(
                                "could not add {add} instance(s) to revision {revision}: {}",
                                f.error
                            ),
                        );
                    }
                    this.publish_routes();
                } else if decision.desired < running {
                    this.scale_down(&app, &service, revision, running - decision.desired)
                        .await;
                }
            });
        }
    }

    /// Retires `count` instances of a revision, the idlest first; each is drained first.
    async fn scale_down(self: &Arc<Self>, app: &str, service: &str, revision: u64, count: u32) {
        let mut candidates: Vec<LiveInstance> = self
            .live()
            .apps
            .get(app)
            .and_then(|a| a.get(service))
            .and_then(|s| s.get(&revision))
            .map(|r| r.instances.clone())
            .unwrap_or_default();
        candidates.sort_by_key(|i| i.backend.in_flight());
        let victims: Vec<LiveInstance> = candidates.into_iter().take(count as usize).collect();
        // Stop routing to them first, then drain and stop.
        for v in &victims {
            v.backend.set_ready(false);
        }
        let stops = victims
            .into_iter()
            .map(|i| self.stop_instance(app, service, revision, i));
        futures_util::future::join_all(stops).await;
        self.publish_routes();
    }

    // --- routing ---

    /// Rebuilds the route table from the store's traffic and the running instances, and
    /// swaps it into the router atomically.
    pub fn publish_routes(&self) {
        let _publishing = self.publishing.lock().unwrap_or_else(|p| p.into_inner());
        let table = match self.build_routes() {
            Ok(t) => t,
            Err(err) => {
                tracing::error!(%err, "could not build the route table; keeping the previous one");
                return;
            }
        };
        self.router.publish(table);
    }

    fn build_routes(&self) -> Result<RouteTable> {
        let mut table = RouteTable::new();
        let hosts: HashMap<String, String> = self
            .store
            .apps()?
            .iter()
            .filter(|a| !a.down)
            .map(|a| (a.name.clone(), app_host(a)))
            .collect();
        let mut cache = self
            .route_settings
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut used = HashMap::new();
        for routing in self.store.routing()? {
            let slipway_state::ServiceRouting {
                app,
                service,
                traffic,
                tags,
            } = routing;
            let Some(host) = hosts.get(&app) else {
                continue;
            };
            let tags: BTreeMap<String, u64> = tags.into_iter().collect();
            // The serving revision's config decides the per-service router settings.
            let Some(serving) = traffic.iter().max_by_key(|t| t.percent) else {
                continue;
            };
            let key = (app.clone(), service.clone(), serving.revision);
            let settings = match cache.remove(&key) {
                Some(settings) => settings,
                None => Arc::new(
                    self.store
                        .revision(&app, &service, serving.revision)?
                        .and_then(|r| serde_json::from_str::<ServiceSpec>(&r.config).ok())
                        .map(|s| RouteSettings {
                            sticky: s.traffic.sticky,
                            header_override: s.traffic.header_override,
                            max_concurrency: s.scaling.max_concurrency,
                            routes: s.routes,
                        })
                        .unwrap_or_default(),
                ),
            };
            used.insert(key, settings.clone());
            // Revisions with a share, then tagged revisions without one (weight 0:
            // reachable by tag host or header only).
            let mut pools: Vec<Pool> = traffic
                .iter()
                .map(|t| self.pool(&app, &service, t.revision, t.percent))
                .collect();
            for rev in tags.values() {
                if !pools.iter().any(|p| p.revision == *rev) {
                    pools.push(self.pool(&app, &service, *rev, 0));
                }
            }
            let target = Arc::new(Target {
                app: app.clone(),
                service: service.clone(),
                pools,
                tags: tags.clone(),
                header_override: settings.header_override,
                sticky: settings.sticky,
                max_concurrency: settings.max_concurrency,
            });
            table.add_host(&format!("{service}.{host}"), target.clone());
            for prefix in &settings.routes {
                table.add_prefix(host, prefix, target.clone());
            }
            // A tag gets its own host that always reaches its revision, whatever its
            // share (Cloud Run and Knative tag URLs).
            for (tag, rev) in &tags {
                let tagged = Arc::new(Target {
                    app: app.clone(),
                    service: service.clone(),
                    pools: vec![self.pool(&app, &service, *rev, 100)],
                    tags: BTreeMap::new(),
                    header_override: false,
                    sticky: false,
                    max_concurrency: settings.max_concurrency,
                });
                table.add_host(&format!("{tag}.{service}.{host}"), tagged);
            }
        }
        // Only the serving revisions' settings stay cached.
        *cache = used;
        Ok(table)
    }

    /// The router pool of one revision: its running instances and its measurements.
    fn pool(&self, app: &str, service: &str, revision: u64, weight: u32) -> Pool {
        let backends = self
            .live()
            .apps
            .get(app)
            .and_then(|a| a.get(service))
            .and_then(|s| s.get(&revision))
            .map(|r| r.instances.iter().map(|i| i.backend.clone()).collect())
            .unwrap_or_default();
        Pool {
            revision,
            weight,
            backends,
            stats: self.revision_stats(app, service, revision),
        }
    }

    /// The routes of the revision that serves most traffic: a revision's routes are part
    /// of its immutable config, so a rollback restores them too.
    fn serving_routes(&self, app: &str, service: &str) -> Option<Vec<String>> {
        let rev = self.serving_revision(app, service).ok()??;
        let spec: ServiceSpec = serde_json::from_str(&rev.config).ok()?;
        Some(spec.routes)
    }

    // --- queries ---

    /// Gathers what one `/metrics` scrape shows.
    pub fn scrape(&self) -> crate::metrics::Scrape {
        let mut scrape = crate::metrics::Scrape::default();
        let stats: Vec<_> = {
            let stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
            stats
                .iter()
                .map(|(k, (v, _))| (k.clone(), v.clone()))
                .collect()
        };
        for ((app, service, revision), s) in stats {
            scrape.revisions.push(crate::metrics::RevisionSample {
                labels: labels(&app, &service, &[("revision", &revision.to_string())]),
                totals: s.totals(),
                in_flight: s.in_flight(),
            });
        }
        scrape.revisions.sort_by(|a, b| a.labels.cmp(&b.labels));
        let live = self.live();
        for (app, services) in &live.apps {
            for (service, revisions) in services {
                for (revision, lr) in revisions {
                    for i in &lr.instances {
                        let state = i.instance.state().borrow().clone();
                        let (name, _) = state_label(&state);
                        let key = labels(
                            app,
                            service,
                            &[("revision", &revision.to_string()), ("state", name)],
                        );
                        *scrape.instances.entry(key).or_default() += 1;
                    }
                }
            }
        }
        drop(live);
        scrape.with_counters(&self.counters)
    }

    pub fn status(&self, app: &str) -> Result<dto::AppStatus> {
        let row = self
            .store
            .app(app)?
            .ok_or_else(|| ControlError::NotFound(unknown_app(app)))?;
        let port = self.config.router_addr.port();
        let host = app_host(&row);
        let mut services = Vec::new();
        for name in self.store.services(app)? {
            let traffic = self.store.traffic(app, &name)?;
            let revisions = self.store.revisions(app, &name)?;
            let routes = self.serving_routes(app, &name).unwrap_or_default();
            let mut instances = Vec::new();
            let mut problem = None;
            let mut problem_lines = Vec::new();
            {
                let live = self.live();
                if let Some(revs) = live.apps.get(app).and_then(|a| a.get(&name)) {
                    for (rev, lr) in revs {
                        let routed = traffic.iter().any(|t| t.revision == *rev);
                        for i in &lr.instances {
                            let state = i.instance.state().borrow().clone();
                            let (state_name, detail) = state_label(&state);
                            if let InstanceState::Backoff {
                                reason, restarts, ..
                            } = &state
                                && problem.is_none()
                            {
                                problem = Some(format!(
                                    "crash loop: instance {} {reason} ({restarts} restarts)",
                                    i.instance.id()
                                ));
                                problem_lines = i.instance.last_lines(10);
                            }
                            instances.push(dto::InstanceStatus {
                                id: i.instance.id().to_owned(),
                                revision: *rev,
                                state: state_name.to_owned(),
                                detail,
                                port: i.instance.port(),
                                pid: i.instance.pid(),
                                restarts: i.instance.restarts(),
                                in_flight: i.backend.in_flight(),
                                routed: routed && i.backend.is_ready(),
                            });
                        }
                    }
                }
            }
            if problem.is_none()
                && let Some(last) = revisions.last()
                && last.state == RevisionState::Failed
            {
                problem = Some(format!(
                    "last deploy (revision {}) failed: {}",
                    last.number, last.message
                ));
            }
            let serving: Vec<u64> = traffic.iter().map(|t| t.revision).collect();
            let ready = instances
                .iter()
                .filter(|i| i.state == "ready" && serving.contains(&i.revision))
                .count() as u32;
            let total = instances
                .iter()
                .filter(|i| serving.contains(&i.revision))
                .count() as u32;
            // Figures over the last minute, summed over the revisions that serve; the rate
            // over the last 5 seconds, to show what happens now.
            let mut figures = dto::Figures::default();
            for t in &traffic {
                let stats = self.revision_stats(app, &name, t.revision);
                let snap = stats.snapshot(Duration::from_secs(60));
                figures.requests += snap.requests;
                figures.errors += snap.errors;
                figures.rps += stats.recent_rps();
                figures.in_flight += snap.in_flight;
                let worst = |a: Option<f64>, b: Option<Duration>| match (a, b) {
                    (Some(a), Some(b)) => Some(a.max(b.as_secs_f64() * 1000.0)),
                    (a, b) => a.or(b.map(|b| b.as_secs_f64() * 1000.0)),
                };
                figures.p50_ms = worst(figures.p50_ms, snap.p50);
                figures.p95_ms = worst(figures.p95_ms, snap.p95);
                figures.p99_ms = worst(figures.p99_ms, snap.p99);
            }
            services.push(dto::ServiceStatus {
                figures,
                url: format!("http://{name}.{host}:{port}/"),
                route_urls: routes
                    .iter()
                    .map(|r| format!("http://{host}:{port}{r}"))
                    .collect(),
                traffic: traffic
                    .iter()
                    .map(|t| dto::TrafficShare {
                        revision: t.revision,
                        percent: t.percent,
                    })
                    .collect(),
                latest_revision: revisions.last().map(|r| r.number),
                instances,
                ready,
                total,
                problem,
                problem_lines,
                name,
            });
        }
        Ok(dto::AppStatus {
            app: app.to_owned(),
            environment: row.environment.clone(),
            host,
            down: row.down,
            router: self.config.router_addr.to_string(),
            services,
        })
    }

    pub fn revisions(&self, app: &str, service: &str) -> Result<Vec<dto::RevisionInfo>> {
        if self.store.app(app)?.is_none() {
            return Err(ControlError::NotFound(unknown_app(app)));
        }
        let traffic = self.store.traffic(app, service)?;
        let revisions = self.store.revisions(app, service)?;
        if revisions.is_empty() && !self.store.services(app)?.iter().any(|s| s == service) {
            return Err(ControlError::NotFound(format!(
                "app {app} has no service `{service}`"
            )));
        }
        Ok(revisions
            .into_iter()
            .map(|r| dto::RevisionInfo {
                traffic: traffic
                    .iter()
                    .find(|t| t.revision == r.number)
                    .map_or(0, |t| t.percent),
                instances: self.running_count(app, service, r.number) as u32,
                number: r.number,
                created_at: r.created_at,
                digest: r.digest,
                state: r.state.as_str().to_owned(),
                message: r.message,
            })
            .collect())
    }

    pub fn log_dir(&self, app: &str, service: &str) -> PathBuf {
        self.config.data_dir.join("logs").join(app).join(service)
    }

    /// The log lines of a service's instances (optionally of one revision), merged by
    /// time, the last `tail` of them.
    pub fn logs(
        &self,
        app: &str,
        service: &str,
        revision: Option<u64>,
        tail: usize,
    ) -> Result<Vec<dto::LogLine>> {
        check_key(app)?;
        check_name("service", service)?;
        if self.store.app(app)?.is_none() {
            return Err(ControlError::NotFound(unknown_app(app)));
        }
        if !self.store.services(app)?.iter().any(|s| s == service)
            && self.store.revisions(app, service)?.is_empty()
        {
            return Err(ControlError::NotFound(format!(
                "app {app} has no service `{service}`"
            )));
        }
        let mut lines = Vec::new();
        for (id, path) in self.log_files(app, service, revision) {
            // Each file's own last `tail` lines hold the last `tail` of them all.
            for l in slipway_runtime::read_last_lines(&path, tail) {
                lines.push(dto::LogLine {
                    ts: l.ts,
                    instance: id.clone(),
                    stream: l.stream,
                    text: l.text,
                });
            }
        }
        lines.sort_by(|a, b| a.ts.cmp(&b.ts));
        let skip = lines.len().saturating_sub(tail);
        Ok(lines.split_off(skip))
    }

    /// The current log file of every instance of a service (of one revision if given), with
    /// the instance id. Rotated files (`<file>.<n>`) are not listed.
    pub fn log_files(
        &self,
        app: &str,
        service: &str,
        revision: Option<u64>,
    ) -> Vec<(String, std::path::PathBuf)> {
        let Ok(entries) = std::fs::read_dir(self.log_dir(app, service)) else {
            return Vec::new();
        };
        let prefix = revision.map(|r| format!("{service}-r{r}-"));
        entries
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().to_string_lossy().into_owned();
                let id = name.strip_suffix(".log")?;
                if prefix.as_ref().is_some_and(|p| !id.starts_with(p)) {
                    return None;
                }
                Some((id.to_owned(), entry.path()))
            })
            .collect()
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
        key: &str,
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
        let env = match slipway_state::split_app_key(key) {
            (_, slipway_state::DEVELOPMENT) => String::new(),
            (_, environment) => format!(" --env {environment}"),
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

/// An app's key in the store (`app` or `app@environment`, both DNS labels); anything else
/// in an API path is refused before it can reach a file path.
pub(crate) fn check_key(key: &str) -> Result<()> {
    let (app, environment) = slipway_state::split_app_key(key);
    check_name("app", app)?;
    check_name("environment", environment)
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
    key: &str,
    service: &str,
    revision: u64,
    spec: &ServiceSpec,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = spec
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let (app, environment) = slipway_state::split_app_key(key);
    env.push(("SLIPWAY_APP".into(), app.to_owned()));
    env.push(("SLIPWAY_ENVIRONMENT".into(), environment.to_owned()));
    env.push(("SLIPWAY_SERVICE".into(), service.to_owned()));
    env.push(("SLIPWAY_REVISION".into(), revision.to_string()));
    env
}

fn labels(app: &str, service: &str, extra: &[(&str, &str)]) -> crate::metrics::Labels {
    let mut l = vec![
        ("app".to_owned(), app.to_owned()),
        ("service".to_owned(), service.to_owned()),
    ];
    l.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    l
}

fn unknown_app(key: &str) -> String {
    let (app, environment) = slipway_state::split_app_key(key);
    if environment == slipway_state::DEVELOPMENT {
        format!("no app named `{app}` is registered; run `slipway up` in its directory first")
    } else {
        format!(
            "app `{app}` is not deployed in environment `{environment}`; run `slipway up --env {environment}` in its directory first"
        )
    }
}

/// The host an app serves in its environment (rows written before environments have
/// none stored: theirs is `<app>.localhost`).
fn app_host(row: &slipway_state::AppRow) -> String {
    if row.host.is_empty() {
        format!("{}.localhost", slipway_state::split_app_key(&row.name).0)
    } else {
        row.host.clone()
    }
}

fn load_spec(path: &Path, environment: &str) -> Result<Spec> {
    slipway_spec::load_env(path, environment).map_err(|e| ControlError::Spec(e.to_string()))
}

/// The autoscaler's settings from a revision's `scaling:` section.
fn scaler_config(spec: &ServiceSpec) -> slipway_autoscale::Config {
    let s = &spec.scaling;
    slipway_autoscale::Config {
        min: s.min,
        max: s.max,
        target: f64::from(s.concurrency.max(1)),
        stable_window: s.stable_window,
        panic_window: s.panic_window,
        idle: s.idle,
        // Scale down once the burst window has calmed, halving per second at most.
        scale_down_delay: s.panic_window,
        ..slipway_autoscale::Config::default()
    }
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

fn state_label(state: &InstanceState) -> (&'static str, Option<String>) {
    match state {
        InstanceState::Starting => ("starting", None),
        InstanceState::Ready => ("ready", None),
        InstanceState::Unready { reason } => ("unready", Some(reason.clone())),
        InstanceState::Backoff { reason, .. } => ("backoff", Some(reason.clone())),
        InstanceState::Stopping => ("stopping", None),
        InstanceState::Stopped => ("stopped", None),
        InstanceState::Failed { reason } => ("failed", Some(reason.clone())),
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
    serving: &[(String, String, u64, bool)],
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

    use slipway_router::RevisionStats;

    use super::{RETIRED_STATS_KEPT, expand, prune_stats};

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
        let failure = super::Failure::not_ready("shop", "web", 3, "web-r3-1a2b", &not_ready, 2);
        assert_eq!(
            failure.error,
            "instance web-r3-1a2b exited with status 4 before becoming ready \
             (see all of it: `slipway logs web --revision 3 --tail 120`)"
        );
        assert_eq!(failure.last_lines, not_ready.last_lines);
        not_ready.log_lines = 12;
        let failure =
            super::Failure::not_ready("shop@staging", "web", 3, "web-r3-1a2b", &not_ready, 2);
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
        let key = |rev: u64| ("shop".to_owned(), "web".to_owned(), rev);
        let mut stats = HashMap::new();
        for rev in 1..=3 {
            stats.insert(key(rev), (RevisionStats::new(), Duration::ZERO));
        }
        let serving = vec![("shop".to_owned(), "web".to_owned(), 3, false)];
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
        assert!(!stats.contains_key(&key(1)));
    }
}
