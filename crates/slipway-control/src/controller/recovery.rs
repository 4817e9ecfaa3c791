//! After a (re)start: remove what a crashed server left running, mark the deploys it
//! interrupted as failed, and start again every revision that carries traffic.

use super::*;
use slipway_core::events::EventKind;

// === impl Controller (recovery) ===

impl Controller {
    /// Converges after a (re)start: kills instances a crashed server left behind, marks
    /// deploys it interrupted as failed, and starts every revision that carries traffic.
    pub async fn recover(self: &Arc<Self>) -> Result<()> {
        for row in self.store.instances()? {
            if self.driver.remove_orphan(row.pid, row.start_ticks) {
                self.event(
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
            for service in self.store.services(&app.name)? {
                for t in self.store.traffic(&app.name, &service)? {
                    let this = self.clone();
                    let (app, service) = (app.name.clone(), service.clone());
                    self.spawn(async move {
                        this.keep_revision_running(&app, &service, t.revision).await;
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

    /// Starts a serving revision's instances after a restart, retrying with backoff
    /// while it still carries traffic and still has none running.
    pub(super) async fn keep_revision_running(
        self: &Arc<Self>,
        app: &str,
        service: &str,
        revision: u64,
    ) {
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
