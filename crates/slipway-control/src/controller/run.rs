//! One-off commands (`slipway run SERVICE -- CMD …`): a data fix, `createsuperuser`, a
//! shell, run in a revision's frozen code with its environment, secrets and volumes.
//!
//! The server does not run the command itself: it hands the CLI a plan (folder, argv,
//! environment) over the Unix socket, which only the data directory's owner can open, and
//! the CLI runs it attached to the user's terminal, so a shell gets a real TTY, Ctrl-C
//! reaches the command, and its exit code is the CLI's. Start and end are events with the
//! actor, so the audit trail shows who ran what against which revision.

use slipway_core::app_key::AppKey;
use slipway_core::events::EventKind;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{ControlError, Controller, Result, check_name, process_env, unknown_app};
use crate::dto;

/// Tells runs of one server apart in the event log.
static RUNS: AtomicU64 = AtomicU64::new(1);

// === impl Controller (one-off commands) ===

impl Controller {
    /// The plan of a one-off command in `revision` (default: the serving one) of a
    /// service, recorded as a `run.started` event.
    pub async fn run_plan(
        &self,
        key: &AppKey,
        service: &str,
        req: &dto::RunRequest,
    ) -> Result<dto::RunPlan> {
        check_name("service", service)?;
        if req.command.first().is_none_or(|p| p.is_empty()) {
            return Err(ControlError::Invalid(
                "no command to run; give it after `--`, e.g. `slipway run web -- python manage.py shell`".into(),
            ));
        }
        let (app, environment) = (key.app(), key.environment());
        let revision = match req.revision {
            Some(r) => r,
            None => self
                .serving_revision(key, service)?
                .map(|r| r.number)
                .ok_or_else(|| {
                    ControlError::NotFound(format!(
                        "service {service} of app {app} serves nothing in environment `{environment}`; deploy it first, or name a revision with --revision"
                    ))
                })?,
        };
        let stored = self
            .stored_config(key, service, revision)
            .map_err(|f| ControlError::NotFound(f.error))?;
        if let Some(image) = &stored.spec.image {
            let image_id = stored.image_id.as_deref().unwrap_or("");
            return Err(ControlError::Invalid(format!(
                "service {service} runs as containers of image `{image}`, and `slipway run` runs commands on this machine only; use `docker run --rm -it {} …` (the revision's image) instead",
                image_id
                    .trim_start_matches("sha256:")
                    .get(..12)
                    .unwrap_or(image)
            )));
        }
        let mut env = process_env(key, service, revision, &stored.spec);
        let (workdir, argv) = self
            .layout(key, &stored, req.command.clone())
            .await
            .map_err(|f| ControlError::Invalid(f.error))?;
        for (name, value) in self
            .secret_env(key, &stored.secret_versions)
            .map_err(|f| ControlError::Invalid(f.error))?
        {
            env.push((name, value.as_str().to_owned()));
        }
        for (name, value) in self
            .database_env(key, &stored.spec.uses)
            .await
            .map_err(|f| ControlError::Invalid(f.error))?
        {
            env.push((name, value.as_str().to_owned()));
        }
        let id = format!("run-{}", RUNS.fetch_add(1, Ordering::Relaxed));
        self.event(
            key,
            Some(service),
            Some(revision),
            EventKind::RunStarted,
            format!(
                "one-off command `{}` ({id}) started in revision {revision} by {}",
                req.command.join(" "),
                actor(&req.user)
            ),
        );
        Ok(dto::RunPlan {
            id,
            revision,
            workdir: workdir.display().to_string(),
            argv,
            env,
        })
    }

    /// Records how a one-off command ended.
    pub fn run_finished(&self, key: &AppKey, service: &str, req: &dto::RunExit) -> Result<()> {
        check_name("service", service)?;
        // The event log is about registered apps; a report for another is a mistake.
        if self.store.app(key.as_str())?.is_none() {
            return Err(ControlError::NotFound(unknown_app(key)));
        }
        let how = match (req.code, &req.signal) {
            (Some(0), _) => "succeeded".to_owned(),
            (Some(code), _) => format!("failed with exit code {code}"),
            (None, Some(signal)) => format!("was killed by {signal}"),
            (None, None) => "ended".to_owned(),
        };
        self.event(
            key,
            Some(service),
            Some(req.revision),
            if req.code == Some(0) {
                EventKind::RunSucceeded
            } else {
                EventKind::RunFailed
            },
            format!(
                "one-off command ({}) {how} after {:.1}s",
                req.id,
                req.elapsed_ms as f64 / 1000.0
            ),
        );
        Ok(())
    }
}

/// Who ran it: the socket is the local administrator's; the CLI says which user it runs as.
fn actor(user: &str) -> String {
    if user.is_empty() {
        "local".to_owned()
    } else {
        format!("local user {user}")
    }
}
