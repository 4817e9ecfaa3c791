//! Slipway's own state, backed up and restored: the SQLite store copied with SQLite's online
//! backup API (not a file copy, which could catch it halfway through a write), the code
//! snapshots and build artifacts that revisions run, and the secrets still encrypted in the
//! store. The master key is never in the archive: whoever holds the archive without the key
//! holds no secret.
//!
//! An archive is a folder, `<data_dir>/backups/platform/<id>/`: `state.db`, `code/` (blobs
//! and trees, not checkouts, which are made again), `artifacts/`, and `manifest.json` with
//! every file's size and SHA-256. [`restore`] copies it into a fresh data directory, with no
//! server running, after checking every file against the manifest.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::dto;

/// What `manifest.json` of a platform archive says.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Manifest {
    id: String,
    created_at: String,
    /// Every file, by path relative to the archive.
    files: Vec<dto::BackupFile>,
    /// Always false: the key that decrypts the secrets is kept apart.
    master_key_included: bool,
}

/// Folders of the code store that are made again from the rest, so not archived.
const SKIPPED: &[&str] = &["code/checkouts", "code/blobs/tmp"];

/// Takes a platform backup of the server whose store is `store` and data directory
/// `data_dir`; returns where it is and what it holds.
pub fn backup(
    store: &slipway_state::Store,
    data_dir: &Path,
) -> anyhow::Result<dto::PlatformBackup> {
    let created_at = slipway_state::now();
    let id = format!(
        "platform-{}Z",
        created_at.replace([':', '-'], "").trim_end_matches('Z')
    );
    let root = data_dir.join("backups").join("platform");
    fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let partial = root.join(format!(".partial-{id}"));
    fs::create_dir_all(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
    let result = (|| {
        store
            .backup_to(&partial.join("state.db"))
            .context("the online backup of the state database failed")?;
        for folder in ["code", "artifacts"] {
            copy_tree(&data_dir.join(folder), &partial.join(folder), folder)?;
        }
        let mut files = Vec::new();
        list_files(&partial, &partial, &mut files)?;
        let mut facts = Vec::new();
        for file in files {
            let f = slipway_databases::backup::file_facts(&partial.join(&file))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            facts.push(dto::BackupFile {
                name: file,
                size: f.size,
                sha256: f.sha256,
            });
        }
        let manifest = Manifest {
            id: id.clone(),
            created_at: created_at.clone(),
            files: facts,
            master_key_included: false,
        };
        fs::write(
            partial.join("manifest.json"),
            serde_json::to_vec_pretty(&manifest)?,
        )?;
        Ok::<_, anyhow::Error>(manifest)
    })();
    let manifest = match result {
        Ok(m) => m,
        Err(e) => {
            let _ = fs::remove_dir_all(&partial);
            return Err(e);
        }
    };
    let dir = root.join(&id);
    fs::rename(&partial, &dir).with_context(|| format!("cannot rename {}", partial.display()))?;
    Ok(dto::PlatformBackup {
        id,
        path: dir.display().to_string(),
        created_at,
        files: manifest.files.len() as u64,
        bytes: manifest.files.iter().map(|f| f.size).sum(),
    })
}

/// Restores the platform archive in `archive` into `data_dir`, which must hold no state yet
/// (a fresh directory, no server running). Every file is checked against the manifest first.
/// Returns the number of files restored. The master key is not in the archive: the caller
/// puts it back (`<data_dir>/master.key`, or `SLIPWAY_MASTER_KEY_FILE`).
pub fn restore(archive: &Path, data_dir: &Path) -> anyhow::Result<usize> {
    let manifest_path = archive.join("manifest.json");
    let manifest: Manifest =
        serde_json::from_slice(&fs::read(&manifest_path).with_context(|| {
            format!(
                "{} is not a platform backup (no readable manifest.json)",
                archive.display()
            )
        })?)
        .with_context(|| format!("{} cannot be read", manifest_path.display()))?;
    for file in &manifest.files {
        slipway_databases::backup::check_file(
            archive,
            &slipway_databases::backup::FileFacts {
                name: file.name.clone(),
                size: file.size,
                sha256: file.sha256.clone(),
            },
        )
        .map_err(|e| {
            anyhow::anyhow!(
                "platform backup {} is damaged, nothing was restored: {e}",
                manifest.id
            )
        })?;
    }
    if data_dir.join("state.db").exists() {
        bail!(
            "{} already holds a Slipway state (state.db); a platform backup is restored into a fresh data directory only\n  hint: choose an empty one with --data-dir (or SLIPWAY_HOME), or move this one away first",
            data_dir.display()
        );
    }
    {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(data_dir)
            .with_context(|| format!("cannot create {}", data_dir.display()))?;
    }
    for file in &manifest.files {
        let from = archive.join(&file.name);
        let to = data_dir.join(&file.name);
        if let Some(parent) = to.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        fs::copy(&from, &to)
            .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
    }
    // The instances it records ran under the server that took the backup: none of them is
    // ours to kill or adopt.
    slipway_state::Store::open(&data_dir.join("state.db"))?.forget_all_instances()?;
    Ok(manifest.files.len())
}

/// Copies the files under `from` into `to` (a missing `from` is an empty tree), leaving out
/// [`SKIPPED`]; `relative` is `from`'s path inside the data directory.
fn copy_tree(from: &Path, to: &Path, relative: &str) -> anyhow::Result<()> {
    if SKIPPED.contains(&relative) || !from.exists() {
        return Ok(());
    }
    fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    for entry in fs::read_dir(from).with_context(|| format!("cannot list {}", from.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        let kind = entry.file_type()?;
        let child = format!("{relative}/{}", name.to_string_lossy());
        if kind.is_dir() {
            copy_tree(&entry.path(), &to.join(&name), &child)?;
        } else if kind.is_file() {
            fs::copy(entry.path(), to.join(&name))
                .with_context(|| format!("cannot copy {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Every file under `dir`, as paths relative to `root`.
fn list_files(root: &Path, dir: &Path, out: &mut Vec<String>) -> anyhow::Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry?;
        let path: PathBuf = entry.path();
        if entry.file_type()?.is_dir() {
            list_files(root, &path, out)?;
        } else {
            out.push(
                path.strip_prefix(root)
                    .unwrap_or(&path)
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    out.sort();
    Ok(())
}
