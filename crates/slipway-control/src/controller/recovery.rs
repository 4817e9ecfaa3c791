//! After a (re)start: remove what a crashed server left running, mark the deploys it
//! interrupted as failed, and start again every revision that carries traffic.

use super::*;
use slipway_core::events::EventKind;

// === impl Controller (recovery) ===

impl Controller {
    /// Converges after a (re)start: kills instances a crashed server left behind, marks
    /// deploys it interrupted as failed, and starts every revision that carries traffic.
    pub async fn recover(self: &Arc<Self>) -> Result<()> {
        let adoptable = self.recover_containers().await;
        for row in self.store.instances()? {
            if self.driver.remove_orphan(row.pid, row.start_ticks) {
                self.record_event(
                    &row.app,
                    Some(&row.service),
                    Some(row.revision),
                    EventKind::InstanceOrphanKilled,
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
            // Slipway writes only valid keys; no API path could name another either.
            let key = match AppKey::parse(&app.name) {
                Ok(key) => key,
                Err(e) => {
                    tracing::warn!("app `{}` in the store is left alone: {e}", app.name);
                    continue;
                }
            };
            for service in self.store.services(&app.name)? {
                for t in self.store.traffic(&app.name, &service)? {
                    let this = self.clone();
                    let left = (key.clone(), service.clone(), t.revision);
                    let at_least = adoptable.get(&left).copied().unwrap_or(0);
                    let (app, service) = (key.clone(), service.clone());
                    self.spawn(async move {
                        this.keep_revision_running(&app, &service, t.revision, at_least)
                            .await;
                    });
                }
            }
        }
        self.publish_routes();
        self.recover_rollouts();
        self.start_database_probes();
        self.start_backup_schedule();
        Ok(())
    }

    /// Sorts the containers a previous server of this data directory left: those of a
    /// revision that still carries traffic (in an app that is not down) are kept for the
    /// driver to adopt when the revision starts again, the others are removed. Returns how
    /// many were kept per app, service and revision.
    async fn recover_containers(&self) -> HashMap<(AppKey, String, u64), u32> {
        let mut kept = HashMap::new();
        let leftovers = match self.containers.leftovers().await {
            Ok(leftovers) => leftovers,
            Err(err) => {
                tracing::warn!(error = %err, "could not list the containers a previous server left");
                return kept;
            }
        };
        for leftover in leftovers {
            let label = |name: &str| leftover.labels.get(name).cloned().unwrap_or_default();
            let (app, environment) = (label("slipway.app"), label("slipway.environment"));
            // Labels that name no app key name nothing that serves: the container goes.
            let key = AppKey::new(&app, &environment).ok();
            let service = label("slipway.service");
            let revision: u64 = label("slipway.revision").parse().unwrap_or(0);
            let serving = key.as_ref().is_some_and(|key| {
                self.store
                    .traffic(key.as_str(), &service)
                    .is_ok_and(|t| t.iter().any(|t| t.revision == revision))
            });
            let up = key.as_ref().is_some_and(|key| !self.is_down(key));
            if let Some(key) = &key
                && leftover.running
                && serving
                && up
            {
                *kept.entry((key.clone(), service, revision)).or_insert(0) += 1;
                self.containers.keep_for_adoption(leftover);
                continue;
            }
            self.containers.remove_leftover(&leftover.container).await;
            let why = if serving && up {
                "it had stopped"
            } else {
                "its revision no longer serves"
            };
            self.record_event(
                key.as_ref().map_or(app.as_str(), AppKey::as_str),
                Some(&service),
                Some(revision),
                EventKind::InstanceOrphanKilled,
                format!(
                    "removed container {} of instance {} left by a previous server: {why}",
                    &leftover.container[..leftover.container.len().min(12)],
                    leftover.instance
                ),
            );
        }
        kept
    }

    /// Starts a serving revision's instances after a restart (at least `at_least`: the
    /// containers kept for adoption), retrying with backoff while it still carries
    /// traffic and still has none running.
    pub(super) async fn keep_revision_running(
        self: &Arc<Self>,
        app: &AppKey,
        service: &str,
        revision: u64,
        at_least: u32,
    ) {
        let mut backoff = Duration::from_millis(500);
        loop {
            let slot = self.slot(app, service);
            let _guard = slot.lock().await;
            let still_serving = self
                .store
                .traffic(app.as_str(), service)
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
                .unwrap_or(1)
                .max(at_least);
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
                        EventKind::RevisionStartFailed,
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
}
