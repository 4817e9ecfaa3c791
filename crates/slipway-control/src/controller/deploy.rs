//! Deploy: a new revision per changed service, started beside the serving one, then the
//! switch (blue-green), the rolling replacement, or the canary's start; the retirement of
//! the revisions that lost their traffic.

use super::*;

// === impl Controller (deploy) ===

impl Controller {
    /// Deploys the named services (all when empty) from the app's spec file, reporting
    /// progress on `tx`. Services deploy concurrently; each is independent, so one
    /// failing leaves the others' results standing.
    pub async fn deploy(
        self: &Arc<Self>,
        app: &AppKey,
        services: &[String],
        force: bool,
        // A strategy given for one deploy is how this deploy rolls out, not config: it
        // never enters the revision's digest.
        strategy: Option<slipway_spec::Strategy>,
        // Whether a database settings change that needs a restart may restart it.
        restart_databases: bool,
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
        // The databases' settings change first, each saying what it does before doing it;
        // a refused change stops the deploy before any revision is made.
        if !self
            .apply_database_settings(app, &spec, restart_databases, &tx)
            .await
        {
            return Ok(false);
        }
        let was_down = self.store.app(app.as_str())?.is_some_and(|a| a.down);
        if was_down {
            self.store.set_app_down(app.as_str(), false)?;
        }
        // Bringing a stopped app back starts every service, not only the named ones.
        let services: &[String] = if was_down { &[] } else { services };
        // Services that left the spec stop and lose their traffic; history stays.
        if services.is_empty() {
            for old in self.store.services(app.as_str())? {
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

    pub(super) async fn remove_service(
        self: &Arc<Self>,
        app: &AppKey,
        service: &str,
    ) -> Result<()> {
        let slot = self.slot(app, service);
        let _guard = slot.lock().await;
        self.store.remove_service(app.as_str(), service)?;
        self.publish_routes();
        let revisions = self.live_revisions(app, service);
        for r in revisions {
            self.retire_revision(app, service, r).await;
        }
        Ok(())
    }

    pub(super) async fn deploy_service(
        self: &Arc<Self>,
        app: &AppKey,
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
    pub(super) async fn deploy_service_locked(
        self: &Arc<Self>,
        app: &AppKey,
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
            image_id: frozen.image_id,
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
                    if old.code == stored.code
                        && old.artifact_digest == stored.artifact_digest
                        && old.image_id == stored.image_id =>
                {
                    "config changed"
                }
                Ok(old) if old.spec.digest() == stored.spec.digest() => "code changed",
                _ => "code and config changed",
            },
        };
        let revision = self
            .store
            .create_revision(app.as_str(), service, &digest, &config, cause)
            .map_err(Failure::from)?;
        let previous_note = || match &serving {
            Some(r) => format!("revision {} keeps serving", r.number),
            None => "nothing was serving before".to_owned(),
        };
        // Marks the revision failed with the reason, as the deploy's answer.
        let failed = |mut failure: Failure, note: String| {
            let message = format!("{}; {note}", failure.error);
            if let Err(e) = self.store.set_revision_state(
                app.as_str(),
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
            .set_revision_state(
                app.as_str(),
                service,
                revision,
                RevisionState::Ready,
                &ready_message,
            )
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
                app.as_str(),
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
    pub(super) async fn rolling(
        self: &Arc<Self>,
        app: &AppKey,
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
                        app.as_str(),
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
                    app.as_str(),
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
    pub(super) fn switch(
        self: &Arc<Self>,
        app: &AppKey,
        service: &str,
        revision: u64,
        previous: Option<u64>,
        why: &str,
        tx: &mpsc::UnboundedSender<Progress>,
        started: Instant,
    ) -> Result<(), Failure> {
        // The router takes the switch before the fsync that makes it durable, as for a
        // rollout step (`progressive.rs`).
        self.store
            .set_traffic_unsynced(
                app.as_str(),
                service,
                &[TrafficTarget {
                    revision,
                    percent: 100,
                }],
                why,
            )
            .map_err(Failure::from)?;
        self.publish_routes();
        self.sync_store();
        let _ = tx.send(Progress::Switched {
            service: service.to_owned(),
            revision,
            previous,
            elapsed_ms: started.elapsed().as_millis() as u64,
        });
        // Every other running revision of this service now has no traffic: the previous one
        // stays warm for its keep_previous window; any older one is drained now.
        let others = self.live_revisions(app, service);
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
    pub(super) fn schedule_retire(
        self: &Arc<Self>,
        app: &AppKey,
        service: &str,
        revision: u64,
        keep: Duration,
    ) {
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
        self.spawn(async move {
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
                .traffic(app.as_str(), &service)
                .map(|t| t.iter().any(|t| t.revision == revision))
                .unwrap_or(true);
            if current == Some(token) && !serving {
                this.retire_revision(&app, &service, revision).await;
            }
        });
    }

    /// Cancels any pending retirement of a revision (it serves again).
    pub(super) fn cancel_retire(&self, app: &AppKey, service: &str, revision: u64) {
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
}
