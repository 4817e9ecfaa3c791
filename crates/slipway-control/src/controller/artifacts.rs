//! Build once, run the stored copy: the `build:`, `test:` and `artifact:` keys.
//!
//! A deploy runs the service's build command in its working directory, then its test
//! command (a failure stops the deploy before any revision exists; see `code.rs`), then
//! copies the artifact (a file or a directory) into a content-addressed store,
//! `<data dir>/artifacts/<sha256>/<name>`. The revision records the digest, and its
//! instances run from the stored copy, so later edits of the working tree cannot change a
//! running revision. `slipway promote` creates a revision in another environment from the
//! exact code (artifact or snapshot) of a serving revision, without building again.
//!
//! How the stored copy is used: for a directory artifact, it becomes the instance's
//! working directory; for a file artifact, every `run` argument that names the artifact
//! (as written, or resolved against the working directory) is replaced by the stored copy.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use slipway_core::app_key::AppKey;
use slipway_runtime::JobEnd;
use slipway_spec::ServiceSpec;
use tokio::sync::mpsc;

use super::secrets::StoredConfig;
use super::{ControlError, Controller, Failure};
use crate::dto::Progress;

/// Build and test commands get this long before they are killed.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// How many of the last output lines a failure shows.
const SHOWN_LINES: usize = 30;

impl Controller {
    /// `slipway promote SERVICE --from staging --to production`: a new revision of the
    /// service in `to`, with `to`'s config, running the exact artifact that serves in
    /// `from`, rolled out with `to`'s strategy. Nothing is built.
    pub async fn promote(
        self: &Arc<Self>,
        to_key: &AppKey,
        service: &str,
        from_environment: &str,
        tx: mpsc::UnboundedSender<Progress>,
    ) -> super::Result<bool> {
        let (app, to_environment) = (to_key.app(), to_key.environment());
        if from_environment == to_environment {
            return Err(ControlError::Invalid(format!(
                "--from and --to are both `{to_environment}`; promote moves a build between two environments"
            )));
        }
        let from_key = AppKey::new(app, from_environment).map_err(ControlError::NotFound)?;
        let from = self.serving_revision(&from_key, service)?.ok_or_else(|| {
            ControlError::NotFound(format!(
                "service {service} serves nothing in environment `{from_environment}`; deploy it there first (`slipway deploy --env {from_environment}`)"
            ))
        })?;
        let stored: StoredConfig = serde_json::from_str(&from.config).map_err(|e| {
            ControlError::Invalid(format!("revision {} cannot be read: {e}", from.number))
        })?;
        let frozen = super::code::Frozen {
            artifact_digest: stored.artifact_digest.clone(),
            code: stored.code.clone(),
            image_id: stored.image_id.clone(),
        };
        let Some(digest) = frozen
            .code
            .clone()
            .or_else(|| frozen.artifact_digest.clone())
            .or_else(|| {
                let image = frozen.image_id.as_deref()?;
                Some(image.trim_start_matches("sha256:").to_owned())
            })
        else {
            return Err(ControlError::Invalid(format!(
                "revision {} of {service} in `{from_environment}` was made before revisions held their code, so there is nothing frozen to promote; deploy it there again (`slipway deploy --env {from_environment}`), then promote",
                from.number
            )));
        };
        let spec = self.app_spec(to_key)?;
        let Some(mut svc) = spec.services.get(service).cloned() else {
            return Err(ControlError::NotFound(format!(
                "environment `{to_environment}` of app {app} has no service `{service}`"
            )));
        };
        // The code is the source revision's, whatever the target's overlay says: its
        // artifact path names the stored copy; nothing is read from the working folder.
        svc.artifact = stored.spec.artifact.clone();
        // Likewise the image: the source revision's exact image, not what its tag names now.
        if stored.image_id.is_some() {
            svc.image = stored.spec.image.clone();
            svc.run = Vec::new();
        }
        let slot = self.slot(to_key, service);
        let _guard = slot.lock().await;
        if self.is_down(to_key) {
            return Err(ControlError::Invalid(format!(
                "environment `{to_environment}` of app {app} is down; run `slipway up --env {to_environment}` first"
            )));
        }
        let _ = tx.send(Progress::Promoting {
            service: service.to_owned(),
            from: format!("{from_environment} revision {}", from.number),
            digest: digest.clone(),
        });
        match self
            .deploy_service_locked(to_key, service, svc, false, Some(frozen), None, &tx)
            .await
        {
            Ok(()) => Ok(true),
            Err(failure) => {
                let _ = tx.send(Progress::Failed {
                    service: service.to_owned(),
                    revision: failure.revision,
                    error: failure.error,
                    last_lines: failure.last_lines,
                });
                Ok(false)
            }
        }
    }

    /// The directory of one stored artifact.
    pub(super) fn artifact_dir(&self, digest: &str) -> PathBuf {
        self.config.data_dir.join("artifacts").join(digest)
    }

    /// Stores `artifact:` (after the build ran); returns its digest (None when the service
    /// declares no artifact).
    pub(super) async fn store_artifact(
        &self,
        service: &str,
        spec: &ServiceSpec,
        tx: &mpsc::UnboundedSender<Progress>,
    ) -> Result<Option<String>, Failure> {
        let Some(artifact) = &spec.artifact else {
            return Ok(None);
        };
        let source = artifact.clone();
        let store = self.config.data_dir.join("artifacts");
        let digest = tokio::task::spawn_blocking(move || store_artifact(&source, &store))
            .await
            .map_err(|e| Failure::msg(format!("storing the artifact failed: {e}")))?
            .map_err(|e| {
                Failure::msg(format!(
                    "cannot store the artifact {} of {service}: {e}; check `artifact:` (relative to the service's workdir) and that the build produced it",
                    artifact.display()
                ))
            })?;
        let _ = tx.send(Progress::Artifact {
            service: service.to_owned(),
            digest: digest.clone(),
        });
        Ok(Some(digest))
    }

    /// Runs one build or test command in the service's workdir, streaming its output.
    pub(super) async fn run_step(
        &self,
        service: &str,
        step: &str,
        command: &[String],
        spec: &ServiceSpec,
        tx: &mpsc::UnboundedSender<Progress>,
    ) -> Result<(), Failure> {
        let shown = command.join(" ");
        if command.is_empty() {
            return Err(Failure::msg(format!(
                "the {step} command of {service} is empty"
            )));
        };
        let _ = tx.send(Progress::Step {
            service: service.to_owned(),
            step: step.to_owned(),
            command: shown.clone(),
        });
        let echo: slipway_runtime::OnLine = Arc::new({
            let (tx, service) = (tx.clone(), service.to_owned());
            move |line: &mut String| {
                let _ = tx.send(Progress::Output {
                    service: service.clone(),
                    line: line.clone(),
                });
            }
        });
        let job = slipway_runtime::Job {
            argv: command.to_vec(),
            env: spec
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            workdir: spec.workdir.clone(),
            timeout: COMMAND_TIMEOUT,
            keep_lines: SHOWN_LINES,
        };
        let outcome = slipway_runtime::run_job(job, echo).await.map_err(|e| {
            Failure::msg(format!(
                "the {step} command `{shown}` of {service} could not start in {}: {e}; check `{step}:` in slipway.yaml",
                spec.workdir.display()
            ))
        })?;
        let failed = |what: String| Failure {
            revision: None,
            error: format!("{step} command `{shown}` of {service} {what}; nothing was deployed"),
            last_lines: outcome.lines.clone(),
        };
        match &outcome.end {
            JobEnd::TimedOut => Err(failed(format!(
                "did not finish within {COMMAND_TIMEOUT:?} and was killed"
            ))),
            JobEnd::Lost(e) => Err(failed(format!("could not be waited for: {e}"))),
            JobEnd::Exited(status) if !status.success() => {
                Err(failed(format!("failed ({status})")))
            }
            JobEnd::Exited(_) => {
                let _ = tx.send(Progress::StepDone {
                    service: service.to_owned(),
                    step: step.to_owned(),
                    elapsed_ms: outcome.elapsed.as_millis() as u64,
                });
                Ok(())
            }
        }
    }

    /// The working directory and argv an instance of this revision runs with: the stored
    /// artifact where there is one, else the spec's own.
    pub(super) fn artifact_layout(
        &self,
        stored: &StoredConfig,
        argv: Vec<String>,
    ) -> (PathBuf, Vec<String>) {
        let spec = &stored.spec;
        let (Some(digest), Some(artifact)) = (&stored.artifact_digest, &spec.artifact) else {
            return (spec.workdir.clone(), argv);
        };
        let name = artifact.file_name().map(PathBuf::from).unwrap_or_default();
        let copy = self.artifact_dir(digest).join(name);
        if copy.is_dir() {
            return (copy, argv);
        }
        let argv = argv
            .into_iter()
            .map(|a| {
                let p = Path::new(&a);
                let resolved = if p.is_absolute() {
                    p.to_path_buf()
                } else {
                    spec.workdir.join(p)
                };
                if normalize(&resolved) == normalize(artifact) {
                    copy.display().to_string()
                } else {
                    a
                }
            })
            .collect();
        (spec.workdir.clone(), argv)
    }
}

/// `a/./b/../c` -> `a/c`, without touching the disk.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Hashes a file or directory tree (relative paths, executable bits and contents, in
/// sorted order) and copies it to `<store>/<digest>/<name>` unless already there.
pub(super) fn store_artifact(source: &Path, store: &Path) -> std::io::Result<String> {
    let meta = std::fs::metadata(source)?;
    let mut files = Vec::new();
    if meta.is_dir() {
        walk(source, Path::new(""), &mut files)?;
    } else {
        files.push(PathBuf::new());
    }
    files.sort();
    let mut hasher = Sha256::new();
    hasher.update(if meta.is_dir() {
        b"dir\0" as &[u8]
    } else {
        b"file\0"
    });
    for rel in &files {
        let path = if rel.as_os_str().is_empty() {
            source.to_path_buf()
        } else {
            source.join(rel)
        };
        let m = std::fs::metadata(&path)?;
        use std::os::unix::fs::PermissionsExt;
        hasher.update(rel.to_string_lossy().as_bytes());
        hasher.update([0, u8::from(m.permissions().mode() & 0o111 != 0)]);
        hasher.update(m.len().to_le_bytes());
        let mut f = std::fs::File::open(&path)?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
        }
    }
    let digest = hex::encode(hasher.finalize());
    let name = source
        .file_name()
        .ok_or_else(|| std::io::Error::other("the artifact path has no file name"))?;
    let target = store.join(&digest);
    if target.join(name).exists() {
        return Ok(digest);
    }
    // Copy beside the store, then rename into place: a crash never leaves half a copy
    // under a digest.
    std::fs::create_dir_all(store)?;
    let tmp = store.join(format!(".tmp-{digest}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp)?;
    if meta.is_dir() {
        for rel in &files {
            let to = tmp.join(name).join(rel);
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::copy(source.join(rel), &to)?;
        }
        std::fs::create_dir_all(tmp.join(name))?;
    } else {
        std::fs::copy(source, tmp.join(name))?;
    }
    match std::fs::rename(&tmp, &target) {
        Ok(()) => Ok(digest),
        // Another deploy stored the same content first.
        Err(_) if target.join(name).exists() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(digest)
        }
        Err(e) => Err(e),
    }
}

fn walk(root: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(root.join(rel))? {
        let entry = entry?;
        let rel = rel.join(entry.file_name());
        let kind = std::fs::metadata(entry.path())?;
        if kind.is_dir() {
            walk(root, &rel, out)?;
        } else if kind.is_file() {
            out.push(rel);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_follows_content_not_time_and_the_copy_is_complete() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("dist");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("a.txt"), "one").unwrap();
        std::fs::write(src.join("sub/b.txt"), "two").unwrap();
        let store = dir.path().join("store");
        let d1 = store_artifact(&src, &store).unwrap();
        assert_eq!(
            std::fs::read_to_string(store.join(&d1).join("dist/sub/b.txt")).unwrap(),
            "two"
        );
        // Same content again: same digest, nothing copied twice.
        assert_eq!(store_artifact(&src, &store).unwrap(), d1);
        std::fs::write(src.join("a.txt"), "changed").unwrap();
        let d2 = store_artifact(&src, &store).unwrap();
        assert_ne!(d1, d2);
        // The first copy is untouched by the edit.
        assert_eq!(
            std::fs::read_to_string(store.join(&d1).join("dist/a.txt")).unwrap(),
            "one"
        );
        let file = dir.path().join("app.bin");
        std::fs::write(&file, "bin").unwrap();
        let d3 = store_artifact(&file, &store).unwrap();
        assert_eq!(
            std::fs::read_to_string(store.join(&d3).join("app.bin")).unwrap(),
            "bin"
        );
        assert!(store_artifact(&dir.path().join("missing"), &store).is_err());
    }
}
