//! The release command (`release:`, e.g. database migrations): run once per deploy in the
//! new revision's code snapshot with its environment, secrets and volumes, before any of
//! its instances starts (so an app whose readiness needs the migrated schema can become
//! ready), its output streamed to the deploying terminal.
//!
//! The command runs in its own process group, bounded by `release_timeout` (then the
//! whole group is killed). Its stdout and stderr are kept together, in order, with the
//! values of the revision's secrets replaced by `[secret NAME]`, and written to
//! `<data dir>/releases/<app>/<service>/r<revision>.log`, where `slipway logs --release`
//! and the revision's message point. A non-zero exit or a timeout fails the deploy.

use std::path::PathBuf;
use std::sync::Arc;

use slipway_core::app_key::AppKey;
use slipway_runtime::JobEnd;
use tokio::sync::mpsc;

use super::secrets::StoredConfig;
use super::{ControlError, Controller, Failure, Result, check_name, expand};
use crate::dto;

/// At most this many output lines are kept (the newest win).
const MAX_LINES: usize = 10_000;
/// How many of the last lines a failure shows.
const SHOWN_LINES: usize = 20;

/// How a release command ended, for the revision's message.
pub(super) struct Released {
    pub summary: String,
}

// === impl Controller (release) ===

impl Controller {
    /// Where the release output of a revision is kept.
    pub fn release_log(&self, key: &AppKey, service: &str, revision: u64) -> PathBuf {
        self.config
            .data_dir
            .join("releases")
            .join(key.as_str())
            .join(service)
            .join(format!("r{revision}.log"))
    }

    /// The stored release output of a revision (by default the newest one that ran a
    /// release command).
    pub fn release_output(
        &self,
        key: &AppKey,
        service: &str,
        revision: Option<u64>,
    ) -> Result<dto::ReleaseOutput> {
        check_name("service", service)?;
        let revision = match revision {
            Some(r) => r,
            None => self
                .store
                .revisions(key.as_str(), service)?
                .iter()
                .rev()
                .map(|r| r.number)
                .find(|r| self.release_log(key, service, *r).exists())
                .ok_or_else(|| {
                    ControlError::NotFound(format!(
                        "no revision of {service} ran a release command; it runs on deploy when the service has `release:`"
                    ))
                })?,
        };
        let path = self.release_log(key, service, revision);
        let text = std::fs::read_to_string(&path).map_err(|_| {
            ControlError::NotFound(format!(
                "revision {revision} of {service} has no release output (it ran no release command)"
            ))
        })?;
        Ok(dto::ReleaseOutput {
            revision,
            path: path.display().to_string(),
            lines: text.lines().map(str::to_owned).collect(),
        })
    }

    /// Runs a revision's release command to completion (or its timeout).
    pub(super) async fn run_release(
        &self,
        key: &AppKey,
        service: &str,
        revision: u64,
        stored: &StoredConfig,
        command: &[String],
        tx: Option<&mpsc::UnboundedSender<dto::Progress>>,
    ) -> std::result::Result<Released, Failure> {
        let spec = &stored.spec;
        let shown = command.join(" ");
        let env = super::process_env(key, service, revision, spec);
        // As for instances, secrets join the environment only after argv is expanded.
        let argv: Vec<String> = command.iter().map(|a| expand(a, &env)).collect();
        let mut secrets = self.secret_env(key, &stored.secret_versions)?;
        // Database URLs hold passwords: masked like secrets.
        secrets.extend(self.database_env(key, &spec.uses).await?);
        // Output lines go to the terminal as they come, with secret values masked.
        let redact: Arc<Vec<(String, String)>> = Arc::new(
            secrets
                .iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (format!("[secret {k}]"), v.as_str().to_owned()))
                .collect(),
        );
        let echo = tx.map(|tx| (tx.clone(), service.to_owned()));
        let on_line: slipway_runtime::OnLine = Arc::new(move |line: &mut String| {
            for (mask, value) in redact.iter() {
                if line.contains(value.as_str()) {
                    *line = line.replace(value.as_str(), mask);
                }
            }
            if let Some((tx, service)) = &echo {
                let _ = tx.send(dto::Progress::Output {
                    service: service.clone(),
                    line: line.clone(),
                });
            }
        });
        let mut job_env = env;
        job_env.extend(
            secrets
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().to_owned())),
        );
        let timeout = spec.release_timeout;
        let outcome = if spec.image.is_some() {
            // A container service's release runs in a container of the revision's image,
            // with what its instances get (env, secrets, database sockets, limits).
            let Some(image) = &stored.image_id else {
                return Err(Failure::msg(format!(
                    "revision {revision} of {service} recorded no image id; deploy it again"
                )));
            };
            let labels = super::instances::container_labels(key, service, revision);
            let job = slipway_runtime::ContainerJob {
                image: image.clone(),
                command: argv,
                env: job_env,
                labels,
                binds: self.database_binds(key, spec),
                limits: slipway_runtime::Limits {
                    cpu_millis: spec.resources.cpu_millis,
                    memory_bytes: spec.resources.memory_bytes,
                    pids: spec.resources.pids,
                },
                timeout,
                keep_lines: MAX_LINES,
            };
            self.containers
                .run_container_job(job, on_line)
                .await
                .map_err(|e| {
                    Failure::msg(format!(
                        "the release command `{shown}` of {service} could not run in a container of its image: {e}; check `release:` in slipway.yaml"
                    ))
                })?
        } else {
            let (workdir, argv) = self.layout(key, stored, argv).await?;
            let job = slipway_runtime::Job {
                argv,
                env: job_env,
                workdir: workdir.clone(),
                timeout,
                keep_lines: MAX_LINES,
            };
            slipway_runtime::run_job(job, on_line).await.map_err(|e| {
                Failure::msg(format!(
                    "the release command `{shown}` of {service} could not start in {}: {e}; check `release:` in slipway.yaml",
                    workdir.display()
                ))
            })?
        };
        let output = outcome.lines;
        let path = self.release_log(key, service, revision);
        let saved = path
            .parent()
            .map(std::fs::create_dir_all)
            .unwrap_or(Ok(()))
            .and_then(|()| std::fs::write(&path, output.join("\n") + "\n"));
        let where_ = match saved {
            Ok(()) => format!("output: {}", path.display()),
            Err(e) => format!("output not saved: {e}"),
        };
        let secs = outcome.elapsed.as_secs_f64();
        let failed = |what: String| {
            let skip = output.len().saturating_sub(SHOWN_LINES);
            Failure {
                revision: Some(revision),
                error: format!("release command `{shown}` {what} ({where_})"),
                last_lines: output[skip..].to_vec(),
            }
        };
        match outcome.end {
            JobEnd::TimedOut => Err(failed(format!(
                "did not finish within release_timeout {timeout:?} and was killed"
            ))),
            JobEnd::Lost(e) => Err(failed(format!("could not be waited for: {e}"))),
            JobEnd::Exited(status) if !status.success() => {
                Err(failed(format!("failed after {secs:.1}s ({status})")))
            }
            JobEnd::Exited(_) => Ok(Released {
                summary: format!("release command `{shown}` succeeded in {secs:.1}s ({where_})"),
            }),
        }
    }
}
