//! Rollback to an earlier revision (started first when cold), and stopping an app or the
//! whole server.

use super::*;

// === impl Controller (rollback) ===

impl Controller {
    /// Switches a service back to an earlier ready revision (the one before the serving
    /// one by default), starting it first when it is no longer warm.
    pub async fn rollback(
        self: &Arc<Self>,
        app: &AppKey,
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

    pub(super) async fn rollback_inner(
        self: &Arc<Self>,
        app: &AppKey,
        service: &str,
        to: Option<u64>,
        tx: mpsc::UnboundedSender<Progress>,
    ) -> Result<bool> {
        let started = Instant::now();
        if self.store.app(app.as_str())?.is_none() {
            return Err(ControlError::NotFound(unknown_app(app)));
        }
        let services = self.store.services(app.as_str())?;
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
        let revisions = self.store.revisions(app.as_str(), service)?;
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
    pub async fn down(self: &Arc<Self>, app: &AppKey) -> Result<()> {
        if self.store.app(app.as_str())?.is_none() {
            return Err(ControlError::NotFound(unknown_app(app)));
        }
        self.store.set_app_down(app.as_str(), true)?;
        self.publish_routes();
        // Take each service's slot so no deploy, rollback or recovery is halfway through
        // starting instances while they are being stopped; those re-check `down` after
        // taking the slot.
        for service in self.store.services(app.as_str())? {
            let slot = self.slot(app, &service);
            let _guard = slot.lock().await;
            let revisions = self.live_revisions(app, &service);
            for r in revisions {
                self.retire_revision(app, &service, r).await;
            }
        }
        // Services no longer in the spec may still have instances (none normally).
        self.stop_app_instances(app).await;
        // Then its databases, with no instance left to lose its connections.
        self.stop_databases(app).await;
        Ok(())
    }

    pub(super) async fn stop_app_instances(self: &Arc<Self>, app: &AppKey) {
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
        let apps: Vec<AppKey> = self.live().apps.keys().cloned().collect();
        self.router.publish(RouteTable::new());
        for app in apps {
            self.stop_app_instances(&app).await;
        }
        // A clean stop stops the databases too, once no instance uses them (a crash leaves
        // them running, and the next server adopts them).
        self.stop_all_databases().await;
        // Then the background tasks still running (a retirement not yet due, the
        // autoscaler, watchers) end; none outlives the controller's shutdown.
        self.cancel.cancel();
        self.tasks.close();
        if tokio::time::timeout(Duration::from_secs(5), self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                left = self.tasks.len(),
                "background tasks did not end within 5 s of the shutdown"
            );
        }
    }
}
