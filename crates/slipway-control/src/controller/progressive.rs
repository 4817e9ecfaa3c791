//! Progressive delivery in the controller: explicit traffic splits, revision tags, and
//! canary rollouts driven by the pure `slipway_rollout` state machine.
//!
//! A canary's every transition is saved together with the traffic split it implies
//! (`Store::save_rollout`), so a restarted server finds the step and the weights in
//! agreement and resumes from the recorded step with a fresh analysis window.
//!
//! The analysis reads the router's own counters: at the start of each step the
//! controller remembers both revisions' totals, and a tick compares against them, so
//! request and error counts are exact and the p95 comes from the histogram buckets
//! accumulated during the step.

use slipway_core::events::EventKind;
use std::sync::Arc;
use std::time::{Duration, Instant};

use slipway_core::app_key::AppKey;
use slipway_core::deploy::RolloutAction;
use slipway_rollout::{Assessment, Decision, Figures, Rollout};
use slipway_router::Totals;
use slipway_spec::{ServiceSpec, Strategy};
use slipway_state::{RevisionState, RolloutRow, TrafficTarget};
use tokio::sync::mpsc;

use super::{ControlError, Controller, Failure, Result};
use crate::dto::{self, Progress};

/// What the controller keeps in memory about a running canary.
pub(super) struct LiveRollout {
    rollout: Rollout,
    revision: u64,
    baseline: u64,
    /// Both revisions' totals when the current step's window started.
    window_start: (Totals, Totals),
}

impl LiveRollout {
    /// The canary's new revision and its baseline.
    pub(super) fn revisions(&self) -> (u64, u64) {
        (self.revision, self.baseline)
    }

    /// Aborts for the given reason (e.g. an operator's rollback).
    pub(super) fn abort_for(
        &mut self,
        reason: &str,
    ) -> Result<Decision, slipway_rollout::RejectedAction> {
        self.rollout.abort(wall_now(), reason)
    }

    /// Aborts because a newer deploy of the service replaces this canary.
    pub(super) fn abort_for_new_deploy(
        &mut self,
    ) -> Result<Decision, slipway_rollout::RejectedAction> {
        self.rollout.abort(wall_now(), "superseded by a new deploy")
    }
}

/// Rollout time is wall-clock time, so a persisted rollout resumes correctly after a
/// restart.
fn wall_now() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

/// The rollout engine's settings from a revision's `deploy:` section.
pub(super) fn canary_config(spec: &ServiceSpec) -> slipway_rollout::CanaryConfig {
    let d = &spec.deploy;
    slipway_rollout::CanaryConfig {
        steps: d.steps.clone(),
        interval: d.interval,
        analysis: slipway_rollout::AnalysisConfig {
            max_error_rate: d.analysis.max_error_rate,
            max_p95: d.analysis.max_p95,
            min_requests: d.analysis.min_requests,
            ..slipway_rollout::AnalysisConfig::default()
        },
        on_failure: d.on_failure,
    }
}

/// Requests, errors and p95 between two readings of a revision's totals.
fn figures_between(start: &Totals, now: &Totals) -> Figures {
    let requests = now.requests().saturating_sub(start.requests());
    let errors = now.errors.saturating_sub(start.errors);
    let buckets: Vec<u64> = now
        .latency_buckets
        .iter()
        .zip(start.latency_buckets.iter().chain(std::iter::repeat(&0)))
        .map(|(n, s)| n.saturating_sub(*s))
        .collect();
    let count: u64 = buckets.iter().sum();
    let p95 = (count > 0).then(|| {
        // The smallest bucket bound under which 95 % of the step's requests finished.
        let want = (count as f64 * 0.95).ceil() as u64;
        let mut seen = 0;
        for (i, b) in buckets.iter().enumerate() {
            seen += b;
            if seen >= want {
                return Totals::bucket_upper_bound(i).unwrap_or(Duration::from_secs(3600));
            }
        }
        Duration::from_secs(3600)
    });
    Figures {
        requests,
        errors,
        p95,
    }
}

/// How often a blue-green switch under watch is judged.
const WATCH_TICK: Duration = Duration::from_millis(250);

impl Controller {
    /// Watches a blue-green switch whose spec has an `analysis` (`deploy.verify`): for
    /// `keep_previous`, while the previous revision stays warm, the new revision's figures
    /// since the switch are judged every 250 ms; a breach backed by `min_requests` switches
    /// all traffic back to the previous revision at once and marks the new one failed. The
    /// watch ends quietly if anything else moves the traffic (a new deploy, a rollback).
    pub(super) fn watch_switch(
        self: &Arc<Self>,
        app: &AppKey,
        service: &str,
        revision: u64,
        previous: u64,
        spec: &ServiceSpec,
    ) {
        let analysis = canary_config(spec).analysis;
        let window = spec.deploy.keep_previous;
        let stats = self.revision_stats(app, service, revision);
        let start = stats.totals();
        self.event(
            app,
            Some(service),
            Some(revision),
            EventKind::DeployWatching,
            format!(
                "judging revision {revision} for {}s after the switch while revision {previous} stays warm",
                window.as_secs_f64()
            ),
        );
        let this = self.clone();
        let (app, service) = (app.to_owned(), service.to_owned());
        self.spawn(async move {
            let deadline = Instant::now() + window;
            loop {
                tokio::time::sleep(WATCH_TICK).await;
                let traffic = this
                    .store
                    .traffic(app.as_str(), &service)
                    .unwrap_or_default();
                if !(traffic.len() == 1 && traffic[0].revision == revision) {
                    return;
                }
                let figures = figures_between(&start, &stats.totals());
                match slipway_rollout::assess(&analysis, &figures, &Figures::default()) {
                    Assessment::Fail { reason } => {
                        let message = format!(
                            "revision {revision} failed its analysis after the switch: {reason}; \
                             all traffic back on revision {previous}"
                        );
                        this.event(
                            &app,
                            Some(&service),
                            Some(revision),
                            EventKind::DeployRolledBack,
                            message.clone(),
                        );
                        let (tx, _rx) = mpsc::unbounded_channel();
                        match this.rollback(&app, &service, Some(previous), tx).await {
                            Ok(true) => {
                                let _ = this.store.set_revision_state(
                                    app.as_str(),
                                    &service,
                                    revision,
                                    RevisionState::Failed,
                                    &message,
                                );
                            }
                            Ok(false) | Err(_) => tracing::error!(
                                %app,
                                service,
                                revision,
                                "switching back after a failed analysis did not succeed"
                            ),
                        }
                        return;
                    }
                    outcome if Instant::now() >= deadline => {
                        let text = match outcome {
                            Assessment::Pass { summary } => {
                                format!("revision {revision} kept to its analysis: {summary}")
                            }
                            Assessment::Inconclusive { reason } => {
                                format!("revision {revision} was not judged: {reason}")
                            }
                            Assessment::Fail { .. } => unreachable!("handled above"),
                        };
                        this.event(
                            &app,
                            Some(&service),
                            Some(revision),
                            EventKind::DeployVerified,
                            text,
                        );
                        return;
                    }
                    _ => {}
                }
            }
        });
    }

    /// Starts a canary of `revision` (ready, no traffic yet) against `baseline`.
    pub(super) fn start_canary(
        self: &Arc<Self>,
        app: &AppKey,
        service: &str,
        revision: u64,
        baseline: u64,
        spec: &ServiceSpec,
        tx: &mpsc::UnboundedSender<Progress>,
    ) -> Result<(), Failure> {
        let config = canary_config(spec);
        let (rollout, decision) = Rollout::start(config, wall_now())
            .map_err(|e| Failure::msg(format!("invalid canary settings: {}", e.join("; "))))?;
        let live = LiveRollout {
            rollout,
            revision,
            baseline,
            window_start: self.window_totals(app, service, revision, baseline),
        };
        self.apply_rollout(app, service, live, decision, "canary started")?;
        let percent = self
            .rollouts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(app.to_owned(), service.to_owned()))
            .map_or(0, |r| r.rollout.current_percent());
        let _ = tx.send(Progress::RolloutStarted {
            service: service.to_owned(),
            revision,
            baseline,
            percent,
            steps: spec.deploy.steps.clone(),
            interval_ms: spec.deploy.interval.as_millis() as u64,
        });
        Ok(())
    }

    fn window_totals(
        &self,
        app: &AppKey,
        service: &str,
        revision: u64,
        baseline: u64,
    ) -> (Totals, Totals) {
        (
            self.revision_stats(app, service, revision).totals(),
            self.revision_stats(app, service, baseline).totals(),
        )
    }

    /// Records a rollout decision with the traffic it implies (one transaction), publishes
    /// the routes, and keeps or drops the in-memory rollout.
    pub(super) fn apply_rollout(
        self: &Arc<Self>,
        app: &AppKey,
        service: &str,
        mut live: LiveRollout,
        decision: Decision,
        why: &str,
    ) -> Result<(), Failure> {
        let applying = Instant::now();
        let (revision, baseline) = (live.revision, live.baseline);
        let split = |p: u32| -> Vec<TrafficTarget> {
            [(baseline, 100 - p), (revision, p)]
                .into_iter()
                .filter(|(_, pc)| *pc > 0)
                .map(|(r, pc)| TrafficTarget {
                    revision: r,
                    percent: pc,
                })
                .collect()
        };
        let (traffic, active, kind, message) = match &decision {
            Decision::SetWeight { new_percent } => {
                live.window_start = self.window_totals(app, service, revision, baseline);
                (
                    Some(split(*new_percent)),
                    true,
                    Some(EventKind::RolloutStep),
                    format!("{why}: {new_percent}% of traffic on revision {revision}"),
                )
            }
            Decision::Wait { .. } => (None, true, None, String::new()),
            Decision::Pause { reason } => (
                None,
                true,
                Some(EventKind::RolloutPaused),
                format!("canary of revision {revision} paused: {reason}"),
            ),
            Decision::RollBack { reason } => (
                Some(split(0)),
                false,
                Some(EventKind::RolloutRolledBack),
                format!("canary of revision {revision} rolled back: {reason}"),
            ),
            Decision::Complete => (
                Some(split(100)),
                false,
                Some(EventKind::RolloutComplete),
                format!("canary of revision {revision} complete: 100% of traffic"),
            ),
        };
        let row = RolloutRow {
            app: app.to_string(),
            service: service.to_owned(),
            revision,
            baseline,
            config: serde_json::to_string(live.rollout.config()).unwrap_or_default(),
            state: serde_json::to_string(live.rollout.state()).unwrap_or_default(),
            active,
            updated_at: String::new(),
        };
        let message_for_store = format!(
            "canary {}",
            kind.map_or("", |k| k.as_str().trim_start_matches("rollout."))
        );
        // The router takes the new traffic before the fsync that makes it durable (1-2 ms on
        // a busy disk, longer when unsynced events wait in the log): a failing canary's
        // traffic goes back first. A crash of the server in between keeps the commit; a
        // power loss could take it back, as it could a moment earlier, and the analysis
        // would decide again.
        self.store
            .save_rollout_unsynced(
                &row,
                traffic.as_deref().map(|t| (t, message_for_store.as_str())),
            )
            .map_err(Failure::from)?;
        if traffic.is_some() {
            self.publish_routes();
        }
        let message = match &decision {
            Decision::RollBack { .. } => format!(
                "{message}; all traffic back on revision {baseline} {} µs after the decision",
                applying.elapsed().as_micros()
            ),
            _ => message,
        };
        self.sync_store();
        if let Some(kind) = kind {
            self.event(app, Some(service), Some(revision), kind, message.clone());
        }
        let key = (app.to_owned(), service.to_owned());
        match decision {
            Decision::RollBack { reason } => {
                self.rollouts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&key);
                let _ = self.store.set_revision_state(
                    app.as_str(),
                    service,
                    revision,
                    RevisionState::Failed,
                    &format!("canary rolled back: {reason}"),
                );
                self.schedule_retire(app, service, revision, Duration::ZERO);
            }
            Decision::Complete => {
                self.rollouts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&key);
                let keep = self
                    .revision_spec(app, service, baseline)
                    .map(|s| s.deploy.keep_previous)
                    .unwrap_or_default();
                self.schedule_retire(app, service, baseline, keep);
            }
            _ => {
                self.rollouts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, live);
            }
        }
        Ok(())
    }

    /// Resumes the rollouts a previous server left in progress or paused.
    pub(super) fn recover_rollouts(self: &Arc<Self>) {
        for row in self.store.active_rollouts().unwrap_or_default() {
            // Slipway writes only valid keys; a row with another is left alone.
            let Ok(key) = AppKey::parse(&row.app) else {
                continue;
            };
            let restored = serde_json::from_str(&row.config)
                .map_err(|e| e.to_string())
                .and_then(|config| {
                    let state = serde_json::from_str(&row.state).map_err(|e| e.to_string())?;
                    Rollout::restore(config, state, wall_now()).map_err(|e| e.join("; "))
                });
            match restored {
                Ok((rollout, decision)) => {
                    let live = LiveRollout {
                        rollout,
                        revision: row.revision,
                        baseline: row.baseline,
                        window_start: self.window_totals(&key, &row.service, row.revision, row.baseline),
                    };
                    if let Err(f) = self.apply_rollout(&key, &row.service, live, decision, "canary resumed after a restart") {
                        tracing::error!(error = %f.error, "could not resume a rollout");
                    }
                }
                Err(e) => self.event(
                    &key,
                    Some(&row.service),
                    Some(row.revision),
                    EventKind::RolloutUnreadable,
                    format!("the stored canary of revision {} cannot be resumed ({e}); traffic stays as recorded", row.revision),
                ),
            }
        }
    }

    /// One pass over the running canaries: judge each on its step's figures.
    pub(super) fn rollout_tick(self: &Arc<Self>) {
        let keys: Vec<(AppKey, String)> = self
            .rollouts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        for (app, service) in keys {
            let this = self.clone();
            self.spawn(async move {
                let slot = this.slot(&app, &service);
                let Ok(_guard) = slot.try_lock() else { return };
                let key = (app.clone(), service.clone());
                let Some(mut live) = this
                    .rollouts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&key)
                else {
                    return;
                };
                let (canary, baseline) = this.step_figures(&app, &service, &live);
                let decision = live.rollout.tick(wall_now(), &canary, &baseline);
                if let Err(f) =
                    this.apply_rollout(&app, &service, live, decision, "analysis passed")
                {
                    tracing::error!(error = %f.error, "could not record a rollout step");
                }
            });
        }
    }

    fn step_figures(&self, app: &AppKey, service: &str, live: &LiveRollout) -> (Figures, Figures) {
        let (c0, b0) = &live.window_start;
        let c1 = self.revision_stats(app, service, live.revision).totals();
        let b1 = self.revision_stats(app, service, live.baseline).totals();
        (figures_between(c0, &c1), figures_between(b0, &b1))
    }

    /// `slipway rollout promote|pause|resume|abort`.
    pub async fn rollout_action(
        self: &Arc<Self>,
        app: &AppKey,
        service: &str,
        action: RolloutAction,
    ) -> Result<dto::RolloutStatus> {
        let slot = self.slot(app, service);
        let _guard = slot.lock().await;
        let key = (app.to_owned(), service.to_owned());
        let Some(mut live) = self
            .rollouts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key)
        else {
            return Err(ControlError::NotFound(format!(
                "service {service} has no canary in progress; `slipway rollout status {service}` shows the last one"
            )));
        };
        let now = wall_now();
        let result = match action {
            RolloutAction::Promote => live.rollout.promote(now),
            RolloutAction::Pause => live.rollout.pause(now, "paused by the operator"),
            RolloutAction::Resume => live.rollout.resume(now),
            RolloutAction::Abort => live.rollout.abort(now, "aborted by the operator"),
        };
        match result {
            Ok(decision) => {
                self.apply_rollout(
                    app,
                    service,
                    live,
                    decision,
                    &format!("{action} by the operator"),
                )
                .map_err(|f| ControlError::Invalid(f.error))?;
            }
            Err(rejected) => {
                self.rollouts
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, live);
                return Err(ControlError::Invalid(rejected.to_string()));
            }
        }
        self.rollout_status(app, service)
    }

    /// The current or last canary of a service, with its figures against the thresholds.
    pub fn rollout_status(&self, app: &AppKey, service: &str) -> Result<dto::RolloutStatus> {
        let row = self
            .store
            .latest_rollout(app.as_str(), service)?
            .ok_or_else(|| {
                ControlError::NotFound(format!(
                    "service {service} of app {app} has never had a canary rollout"
                ))
            })?;
        let traffic = self.store.traffic(app.as_str(), service)?;
        let key = (app.to_owned(), service.to_owned());
        let rollouts = self.rollouts.lock().unwrap_or_else(|p| p.into_inner());
        let (canary, baseline, next_check) = match rollouts.get(&key) {
            Some(live) => {
                let (c, b) = self.step_figures(app, service, live);
                let next = live
                    .rollout
                    .next_check_at()
                    .map(|t| t.saturating_sub(wall_now()).as_millis() as u64);
                (Some(c), Some(b), next)
            }
            None => (None, None, None),
        };
        let fig = |f: Option<Figures>| {
            f.map(|f| dto::StepFigures {
                requests: f.requests,
                errors: f.errors,
                p95_ms: f.p95.map(|d| d.as_secs_f64() * 1000.0),
            })
        };
        Ok(dto::RolloutStatus {
            service: service.to_owned(),
            revision: row.revision,
            baseline: row.baseline,
            active: row.active,
            config: serde_json::from_str(&row.config).unwrap_or_default(),
            state: serde_json::from_str(&row.state).unwrap_or_default(),
            traffic: traffic
                .iter()
                .map(|t| dto::TrafficShare {
                    revision: t.revision,
                    percent: t.percent,
                })
                .collect(),
            canary: fig(canary),
            baseline_figures: fig(baseline),
            next_check_in_ms: next_check,
        })
    }

    /// Whether a canary of this service is running (traffic changes must wait for it).
    pub(super) fn rollout_in_progress(&self, app: &AppKey, service: &str) -> Option<u64> {
        self.rollouts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(app.to_owned(), service.to_owned()))
            .map(|r| r.revision)
    }

    /// `slipway traffic SERVICE --to-revisions 7=90,8=10` (or `--to-latest`).
    pub async fn set_traffic(
        self: &Arc<Self>,
        app: &AppKey,
        service: &str,
        targets: Vec<(u64, u32)>,
        latest: bool,
    ) -> Result<Vec<dto::TrafficShare>> {
        let slot = self.slot(app, service);
        let _guard = slot.lock().await;
        if self.is_down(app) {
            return Err(ControlError::Invalid(format!(
                "app {app} is down; run `slipway up` first"
            )));
        }
        if let Some(r) = self.rollout_in_progress(app, service) {
            return Err(ControlError::Invalid(format!(
                "a canary of revision {r} is in progress; `slipway rollout promote|abort {service}` first"
            )));
        }
        let revisions = self.store.revisions(app.as_str(), service)?;
        let targets: Vec<(u64, u32)> = if latest {
            let r = revisions
                .iter()
                .rev()
                .find(|r| r.state == RevisionState::Ready)
                .ok_or_else(|| {
                    ControlError::Invalid(format!("service {service} has no ready revision"))
                })?;
            vec![(r.number, 100)]
        } else {
            targets
        };
        let sum: u32 = targets.iter().map(|t| t.1).sum();
        if sum != 100 {
            return Err(ControlError::Invalid(format!(
                "the percentages add up to {sum}%, not 100% (e.g. `--to-revisions 7=90,8=10`)"
            )));
        }
        for (rev, _) in &targets {
            match revisions.iter().find(|r| r.number == *rev) {
                None => {
                    return Err(ControlError::NotFound(format!(
                        "service {service} has no revision {rev} (revisions 1..={})",
                        revisions.len()
                    )));
                }
                Some(r) if r.state != RevisionState::Ready => {
                    return Err(ControlError::Invalid(format!(
                        "revision {rev} of {service} is {} ({}); only a ready revision can serve",
                        r.state.as_str(),
                        r.message
                    )));
                }
                Some(_) => {}
            }
        }
        let before = self.store.traffic(app.as_str(), service)?;
        // Every revision that gets a share must be running before it gets requests.
        for (rev, percent) in &targets {
            if *percent > 0 && self.ready_count(app, service, *rev) == 0 {
                let spec = self
                    .revision_spec(app, service, *rev)
                    .map_err(|f| ControlError::Invalid(f.error))?;
                self.start_revision(app, service, *rev, spec.scaling.min.max(1), None)
                    .await
                    .map_err(|f| {
                        ControlError::Invalid(format!(
                            "revision {rev} could not be started: {}",
                            f.error
                        ))
                    })?;
            }
        }
        let new: Vec<TrafficTarget> = targets
            .iter()
            .filter(|t| t.1 > 0)
            .map(|(r, p)| TrafficTarget {
                revision: *r,
                percent: *p,
            })
            .collect();
        self.store
            .set_traffic(app.as_str(), service, &new, "traffic set by the operator")?;
        self.publish_routes();
        for old in before {
            if !new.iter().any(|t| t.revision == old.revision) {
                let keep = self
                    .revision_spec(app, service, old.revision)
                    .map(|s| s.deploy.keep_previous)
                    .unwrap_or_default();
                self.schedule_retire(app, service, old.revision, keep);
            }
        }
        Ok(new
            .iter()
            .map(|t| dto::TrafficShare {
                revision: t.revision,
                percent: t.percent,
            })
            .collect())
    }

    /// `slipway tag SERVICE green=8` / `--remove green`.
    pub async fn set_tag(
        self: &Arc<Self>,
        app: &AppKey,
        service: &str,
        tag: &str,
        revision: Option<u64>,
    ) -> Result<()> {
        super::check_name("tag", tag)?;
        let slot = self.slot(app, service);
        let _guard = slot.lock().await;
        match revision {
            Some(r) => {
                if self.store.revision(app.as_str(), service, r)?.is_none() {
                    return Err(ControlError::NotFound(format!(
                        "revision {r} of {service} does not exist; `slipway revisions {service}` lists them"
                    )));
                }
                // What is left to refuse (a failed revision) is the caller's to fix.
                self.store
                    .set_tag(app.as_str(), service, tag, r)
                    .map_err(|e| match e {
                        slipway_state::StoreError::Invalid(message) => {
                            ControlError::Invalid(message)
                        }
                        other => other.into(),
                    })?
            }
            None => {
                if !self.store.remove_tag(app.as_str(), service, tag)? {
                    return Err(ControlError::NotFound(format!(
                        "service {service} has no tag `{tag}`"
                    )));
                }
            }
        }
        self.publish_routes();
        Ok(())
    }

    /// Deploys with the recreate strategy: the old revision stops first (downtime), then
    /// the new one starts. If the new one fails, the old one is started again.
    pub(super) async fn recreate(
        self: &Arc<Self>,
        app: &AppKey,
        service: &str,
        revision: u64,
        previous: u64,
        instances: u32,
        tx: &mpsc::UnboundedSender<Progress>,
    ) -> Result<Duration, Failure> {
        let down_since = Instant::now();
        self.retire_revision(app, service, previous).await;
        if let Err(f) = self
            .start_revision(app, service, revision, instances, Some(tx))
            .await
        {
            let count = self
                .revision_spec(app, service, previous)
                .map(|s| s.scaling.min.max(1))
                .unwrap_or(1);
            let _ = self
                .start_revision(app, service, previous, count, None)
                .await;
            self.publish_routes();
            return Err(f);
        }
        Ok(down_since.elapsed())
    }

    /// Whether the spec asks for a canary (and there is something to compare against).
    pub(super) fn wants_canary(spec: &ServiceSpec, serving: Option<u64>) -> bool {
        spec.deploy.strategy == Strategy::Canary && serving.is_some()
    }
}
