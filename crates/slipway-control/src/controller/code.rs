//! A revision holds its code: freezing a service's folder at deploy, and the folder its
//! instances, release command and one-off commands run in.
//!
//! A deploy runs `build:` and `test:` in the working folder, then freezes the result:
//! the stored artifact when the service declares `artifact:` (see `artifacts.rs`), else a
//! snapshot of the whole folder in the content-addressed code store
//! (`slipway_snapshot`, under `<data dir>/code`). The snapshot's digest is part of the
//! revision's config digest, so a code edit makes a new revision and an unchanged folder
//! says "unchanged"; a rollback, cold or warm, and `promote` run exactly the stored code.
//!
//! Volumes (`volumes: { data: ./data }`) are left out of the snapshot and appear in every
//! checkout as symlinks to one folder per app environment: the working tree's own folder
//! in `development` (where the developer expects the data), and
//! `<data dir>/volumes/<app key>/<name>` elsewhere, so staging never sees production's.
//!
//! Build and test run again only when their inputs changed: the digest of the folder
//! (by the same rules) and of the commands is compared with the one recorded after the
//! last successful build in `<data dir>/builds/<app key>/<service>.json`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use slipway_core::app_key::AppKey;
use slipway_snapshot::{CodeStore, SnapshotError};
use slipway_spec::ServiceSpec;
use tokio::sync::mpsc;

use super::secrets::StoredConfig;
use super::{Controller, Failure};
use crate::dto::Progress;

/// The code a revision runs: a stored artifact, a folder snapshot, or (for revisions
/// made before revisions held their code) neither.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Frozen {
    pub artifact_digest: Option<String>,
    pub code: Option<String>,
    /// The id of the image a container service runs, resolved at deploy time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
}

/// What the last successful build of a service read and produced.
#[derive(Debug, Serialize, Deserialize)]
struct BuildRecord {
    /// The inputs' digest before the build ran, and after it (a build that writes into
    /// its folder, like `npm ci`, changes it; the next deploy then starts from `after`).
    before: String,
    after: String,
    frozen: Frozen,
}

// === impl Controller (code) ===

impl Controller {
    pub(super) fn code_store(&self) -> CodeStore {
        CodeStore::new(self.config.data_dir.join("code"))
    }

    fn build_record_path(&self, key: &AppKey, service: &str) -> PathBuf {
        self.config
            .data_dir
            .join("builds")
            .join(key.as_str())
            .join(format!("{service}.json"))
    }

    /// Runs `build:` and `test:` unless their inputs are unchanged since the last
    /// successful build, then freezes the service's code.
    pub(super) async fn freeze(
        &self,
        key: &AppKey,
        service: &str,
        spec: &ServiceSpec,
        tx: &mpsc::UnboundedSender<Progress>,
    ) -> Result<Frozen, Failure> {
        if let Some(image) = &spec.image {
            // A container service's code is its image: the revision records the image's
            // id, so a retag makes a new revision and a rollback runs the same image.
            let id = match &spec.dockerfile {
                Some(dockerfile) => self.build_image(service, image, dockerfile, tx).await?,
                None => self
                    .containers
                    .resolve_image(image)
                    .await
                    .map_err(|e| Failure::msg(format!("{service}: {e}")))?,
            };
            return Ok(Frozen {
                image_id: Some(id),
                ..Frozen::default()
            });
        }
        let builds = spec.build.is_some() || spec.test.is_some();
        let record_path = self.build_record_path(key, service);
        let mut before = None;
        if builds {
            let tree = self.folder_digest(service, spec).await?;
            let inputs = build_inputs(spec, &tree);
            let record: Option<BuildRecord> = std::fs::read(&record_path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            if let Some(record) = record
                && (record.before == inputs || record.after == inputs)
                && self.is_stored(&record.frozen)
            {
                let _ = tx.send(Progress::StepSkipped {
                    service: service.to_owned(),
                    step: if spec.build.is_some() {
                        "build"
                    } else {
                        "test"
                    }
                    .to_owned(),
                    reason: "nothing it reads changed since the last successful build".into(),
                });
                return Ok(record.frozen);
            }
            before = Some(inputs);
            if let Some(build) = &spec.build {
                self.run_step(service, "build", build, spec, tx).await?;
            }
            if let Some(test) = &spec.test {
                self.run_step(service, "test", test, spec, tx).await?;
            }
        }
        let frozen = if spec.artifact.is_some() {
            Frozen {
                artifact_digest: self.store_artifact(service, spec, tx).await?,
                code: None,
                image_id: None,
            }
        } else {
            Frozen {
                artifact_digest: None,
                code: Some(self.snapshot(service, spec, tx).await?),
                image_id: None,
            }
        };
        if let Some(before) = before {
            let after = match &frozen.code {
                Some(tree) => build_inputs(spec, tree),
                None => build_inputs(spec, &self.folder_digest(service, spec).await?),
            };
            let record = BuildRecord {
                before,
                after,
                frozen: frozen.clone(),
            };
            // Only saves a later build; a failure to write it is not a failed deploy.
            let _ = record_path
                .parent()
                .map(std::fs::create_dir_all)
                .unwrap_or(Ok(()))
                .and_then(|()| {
                    std::fs::write(
                        &record_path,
                        serde_json::to_vec(&record).unwrap_or_default(),
                    )
                });
        }
        Ok(frozen)
    }

    /// Builds a container service's image from its Dockerfile, its output streamed as a
    /// `build` step; returns the image's id.
    async fn build_image(
        &self,
        service: &str,
        image: &str,
        dockerfile: &Path,
        tx: &mpsc::UnboundedSender<Progress>,
    ) -> Result<String, Failure> {
        let started = Instant::now();
        let _ = tx.send(Progress::Step {
            service: service.to_owned(),
            step: "build".to_owned(),
            command: format!("docker build -t {image} -f {}", dockerfile.display()),
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
        let id = self
            .containers
            .build_image(dockerfile, image, echo)
            .await
            .map_err(|e| Failure::msg(format!("{service}: {e}; nothing was deployed")))?;
        let _ = tx.send(Progress::StepDone {
            service: service.to_owned(),
            step: "build".to_owned(),
            elapsed_ms: started.elapsed().as_millis() as u64,
        });
        Ok(id)
    }

    fn is_stored(&self, frozen: &Frozen) -> bool {
        let artifact = frozen
            .artifact_digest
            .as_ref()
            .is_none_or(|d| self.artifact_dir(d).exists());
        let code = frozen
            .code
            .as_ref()
            .is_none_or(|d| self.code_store().has(d));
        artifact && code
    }

    /// The digest of the service's folder as a snapshot would see it, storing nothing.
    async fn folder_digest(&self, service: &str, spec: &ServiceSpec) -> Result<String, Failure> {
        let (store, workdir) = (self.code_store(), spec.workdir.clone());
        let exclude: Vec<PathBuf> = spec.volumes.values().cloned().collect();
        tokio::task::spawn_blocking(move || store.digest(&workdir, &exclude))
            .await
            .map_err(|e| Failure::msg(format!("reading the folder of {service} failed: {e}")))?
            .map_err(|e| snapshot_failure(service, spec, e))
    }

    /// Snapshots the service's folder into the code store; returns its digest.
    async fn snapshot(
        &self,
        service: &str,
        spec: &ServiceSpec,
        tx: &mpsc::UnboundedSender<Progress>,
    ) -> Result<String, Failure> {
        let started = Instant::now();
        let (store, workdir) = (self.code_store(), spec.workdir.clone());
        let exclude: Vec<PathBuf> = spec.volumes.values().cloned().collect();
        let taken = tokio::task::spawn_blocking(move || store.take(&workdir, &exclude))
            .await
            .map_err(|e| Failure::msg(format!("snapshotting {service} failed: {e}")))?
            .map_err(|e| snapshot_failure(service, spec, e))?;
        let _ = tx.send(Progress::Snapshot {
            service: service.to_owned(),
            digest: taken.digest.clone(),
            files: taken.files,
            bytes: taken.bytes,
            new_files: taken.new_files,
            new_bytes: taken.new_bytes,
            elapsed_ms: started.elapsed().as_millis() as u64,
        });
        Ok(taken.digest)
    }

    /// Each volume of the service as (path in the snapshot, folder it links to), the
    /// folders created when missing.
    pub(super) fn volume_links(
        &self,
        key: &AppKey,
        spec: &ServiceSpec,
    ) -> Result<Vec<(PathBuf, PathBuf)>, Failure> {
        let mut links = Vec::new();
        for (name, path) in &spec.volumes {
            let target = if key.is_development() {
                spec.workdir.join(path)
            } else {
                self.config
                    .data_dir
                    .join("volumes")
                    .join(key.as_str())
                    .join(name)
            };
            std::fs::create_dir_all(&target).map_err(|e| {
                Failure::msg(format!(
                    "volume `{name}` cannot be created at {}: {e}; it must be a folder Slipway can write",
                    target.display()
                ))
            })?;
            links.push((path.clone(), target));
        }
        Ok(links)
    }

    /// The folder and argv a revision's processes run with: its snapshot's checkout, its
    /// stored artifact, or (for a revision made before revisions held code) the spec's
    /// working folder.
    pub(super) async fn layout(
        &self,
        key: &AppKey,
        stored: &StoredConfig,
        argv: Vec<String>,
    ) -> Result<(PathBuf, Vec<String>), Failure> {
        let Some(code) = &stored.code else {
            return Ok(self.artifact_layout(stored, argv));
        };
        let links = self.volume_links(key, &stored.spec)?;
        let (store, digest) = (self.code_store(), code.clone());
        let dir = tokio::task::spawn_blocking(move || store.checkout(&digest, &links))
            .await
            .map_err(|e| Failure::msg(format!("checking out code {code} failed: {e}")))?
            .map_err(|e| match e {
                SnapshotError::Missing(_) => Failure::msg(format!(
                    "the code snapshot {} of this revision is not in the code store ({}) any more; deploy again to store it",
                    &code[..12],
                    self.code_store().root().display()
                )),
                other => Failure::msg(format!("cannot check out the code of this revision: {other}")),
            })?;
        let argv = frozen_interpreter(&dir, &stored.spec.workdir, argv);
        Ok((dir, argv))
    }
}

/// Keeps a script's interpreter inside the revision's code when the script names one in
/// the working folder.
///
/// The usual Python layout, a virtualenv inside the app's folder with
/// `run: ["venv/bin/gunicorn", …]`, would otherwise escape the snapshot: pip writes the
/// venv's absolute path into every script's `#!` line (`#!/home/me/app/venv/bin/python`),
/// so the kernel would start the working folder's interpreter, which loads the working
/// folder's packages — today's code, not the revision's. When the program is a file of the
/// checkout whose interpreter lies in `workdir`, the interpreter's copy in the checkout
/// runs it instead, as the kernel would: `[interpreter, optional argument, script, args…]`.
/// pip's form for long paths (`#!/bin/sh`, then `'''exec' "/…/python" "$0" "$@"`) counts
/// too. Anything else is left as it is.
pub(super) fn frozen_interpreter(
    checkout: &Path,
    workdir: &Path,
    argv: Vec<String>,
) -> Vec<String> {
    let Some(program) = argv.first() else {
        return argv;
    };
    let program_path = Path::new(program);
    let script = if program_path.is_absolute() {
        match program_path.strip_prefix(workdir) {
            Ok(rel) => checkout.join(rel),
            Err(_) => return argv,
        }
    } else if program.contains('/') {
        checkout.join(program_path)
    } else {
        // Found on PATH: not part of the folder.
        return argv;
    };
    let Some((interpreter, argument)) = read_interpreter(&script) else {
        return argv;
    };
    let Ok(rel) = Path::new(&interpreter).strip_prefix(workdir) else {
        return argv;
    };
    let mut frozen = vec![checkout.join(rel).display().to_string()];
    frozen.extend(argument);
    frozen.push(script.display().to_string());
    frozen.extend(argv.into_iter().skip(1));
    frozen
}

/// The interpreter (and its one optional argument) a script's `#!` line names; for pip's
/// `/bin/sh` launcher, the interpreter it execs.
fn read_interpreter(script: &Path) -> Option<(String, Option<String>)> {
    use std::io::Read;
    let mut head = [0u8; 1024];
    let n = std::fs::File::open(script).ok()?.read(&mut head).ok()?;
    // The buffer may end inside a multi-byte character; the first lines are enough.
    let valid = match std::str::from_utf8(&head[..n]) {
        Ok(_) => n,
        Err(e) => e.valid_up_to(),
    };
    let text = std::str::from_utf8(&head[..valid]).ok()?;
    let mut lines = text.lines();
    let first = lines.next()?.strip_prefix("#!")?.trim();
    let (interpreter, argument) = match first.split_once([' ', '\t']) {
        Some((i, a)) => (i, Some(a.trim().to_owned()).filter(|a| !a.is_empty())),
        None => (first, None),
    };
    if interpreter == "/bin/sh"
        && let Some(exec) = lines.next()
        && let Some(rest) = exec.strip_prefix("'''exec' \"")
        && let Some((path, _)) = rest.split_once('"')
    {
        return Some((path.to_owned(), None));
    }
    Some((interpreter.to_owned(), argument))
}

/// The digest of everything a build reads: the folder's digest, the commands and the env.
fn build_inputs(spec: &ServiceSpec, tree: &str) -> String {
    let mut hasher = Sha256::new();
    let inputs = (
        tree,
        &spec.build,
        &spec.test,
        &spec.env,
        &spec.artifact,
        &spec.workdir,
    );
    hasher.update(serde_json::to_vec(&inputs).unwrap_or_default());
    hex::encode(hasher.finalize())
}

fn snapshot_failure(service: &str, spec: &ServiceSpec, e: SnapshotError) -> Failure {
    match e {
        SnapshotError::LiveDatabase { path, what } => {
            let rel = path.strip_prefix(&spec.workdir).unwrap_or(&path);
            let folder = rel
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map_or_else(|| "./data".to_owned(), |p| format!("./{}", p.display()));
            Failure::msg(format!(
                "{} in the folder of {service} looks like a live {what}; a copy in every revision's code snapshot would give each revision its own data, so nothing was deployed\n  hint: keep data in a volume that every revision shares: add `volumes: {{ data: {folder} }}` to {service} (move the file there if it is not in a folder of its own), or list it in {} if it is not needed",
                path.display(),
                slipway_snapshot::IGNORE_FILE
            ))
        }
        other => Failure::msg(format!(
            "cannot snapshot the folder of {service} ({}): {other}",
            spec.workdir.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::frozen_interpreter;
    use std::path::Path;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_venv_script_runs_under_the_checkouts_interpreter() {
        let checkout = tempfile::tempdir().unwrap();
        let bin = checkout.path().join("venv/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::write(
            bin.join("gunicorn"),
            "#!/home/me/app/venv/bin/python\nimport gunicorn\n",
        )
        .unwrap();
        std::fs::write(
            bin.join("long"),
            "#!/bin/sh\n'''exec' \"/home/me/app/venv/bin/python\" \"$0\" \"$@\"\n' '''\n",
        )
        .unwrap();
        std::fs::write(bin.join("opt"), "#!/home/me/app/venv/bin/python -u\n").unwrap();
        std::fs::write(bin.join("outside"), "#!/usr/bin/python3\n").unwrap();
        let work = Path::new("/home/me/app");
        let c = checkout.path().display().to_string();

        assert_eq!(
            frozen_interpreter(
                checkout.path(),
                work,
                argv(&["venv/bin/gunicorn", "-b", "x"])
            ),
            argv(&[
                &format!("{c}/venv/bin/python"),
                &format!("{c}/venv/bin/gunicorn"),
                "-b",
                "x"
            ])
        );
        // Named by its absolute path in the working folder: the same.
        assert_eq!(
            frozen_interpreter(
                checkout.path(),
                work,
                argv(&["/home/me/app/venv/bin/gunicorn"])
            ),
            argv(&[
                &format!("{c}/venv/bin/python"),
                &format!("{c}/venv/bin/gunicorn")
            ])
        );
        assert_eq!(
            frozen_interpreter(checkout.path(), work, argv(&["venv/bin/long", "a"]))[0],
            format!("{c}/venv/bin/python")
        );
        assert_eq!(
            frozen_interpreter(checkout.path(), work, argv(&["venv/bin/opt"])),
            argv(&[
                &format!("{c}/venv/bin/python"),
                "-u",
                &format!("{c}/venv/bin/opt")
            ])
        );
        // Interpreters outside the folder, programs on PATH and missing files stay as given.
        for unchanged in [
            argv(&["venv/bin/outside", "a"]),
            argv(&["python3", "app.py"]),
            argv(&["venv/bin/missing"]),
            argv(&["/usr/bin/env", "x"]),
        ] {
            assert_eq!(
                frozen_interpreter(checkout.path(), work, unchanged.clone()),
                unchanged
            );
        }
    }
}
