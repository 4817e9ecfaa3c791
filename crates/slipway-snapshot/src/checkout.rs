//! Materialising a snapshot: a folder of hard links to the blobs, plus volume symlinks.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{CodeStore, Entry, Result, SnapshotError};

impl CodeStore {
    /// The folder where snapshot `digest` can run, with each `(path, target)` of `links`
    /// (paths relative to the snapshot) a symlink to `target`: how a persistent volume
    /// appears at the same place in every revision. Made once per snapshot and link set,
    /// then reused; built beside its place and renamed into it, so a crash never leaves
    /// half a checkout.
    ///
    /// # Errors
    /// An unknown snapshot, a link path that escapes the snapshot, or an I/O error.
    pub fn checkout(&self, digest: &str, links: &[(PathBuf, PathBuf)]) -> Result<PathBuf> {
        let mut key = Sha256::new();
        key.update(digest.as_bytes());
        let mut sorted = links.to_vec();
        sorted.sort();
        for (path, target) in &sorted {
            key.update(b"\0");
            key.update(path.as_os_str().as_encoded_bytes());
            key.update(b"\0");
            key.update(target.as_os_str().as_encoded_bytes());
        }
        let key = hex::encode(key.finalize());
        let dir = self.root.join("checkouts").join(&key[..32]);
        if dir.is_dir() {
            return Ok(dir);
        }
        let manifest = self.manifest(digest)?;
        let parent = self.root.join("checkouts");
        std::fs::create_dir_all(&parent).map_err(SnapshotError::io(&parent))?;
        let tmp = tempfile::Builder::new()
            .prefix(".tmp-")
            .tempdir_in(&parent)
            .map_err(SnapshotError::io(&parent))?;
        for entry in &manifest {
            let to = tmp.path().join(entry.path());
            match entry {
                Entry::Dir { .. } => {
                    std::fs::create_dir_all(&to).map_err(SnapshotError::io(&to))?;
                }
                Entry::File { blob, exec, .. } => {
                    ensure_parent(&to)?;
                    self.link_blob(blob, *exec, &to)?;
                }
                Entry::Symlink { target, .. } => {
                    ensure_parent(&to)?;
                    std::os::unix::fs::symlink(target, &to).map_err(SnapshotError::io(&to))?;
                }
            }
        }
        for (path, target) in &sorted {
            if path.is_absolute()
                || path
                    .components()
                    .any(|c| !matches!(c, std::path::Component::Normal(_)))
            {
                return Err(SnapshotError::Walk {
                    path: path.clone(),
                    message: "a volume path must stay inside the service's folder".into(),
                });
            }
            let to = tmp.path().join(path);
            ensure_parent(&to)?;
            if std::fs::symlink_metadata(&to).is_ok() {
                let _ = std::fs::remove_dir_all(&to).or_else(|_| std::fs::remove_file(&to));
            }
            std::os::unix::fs::symlink(target, &to).map_err(SnapshotError::io(&to))?;
        }
        let built = tmp.keep();
        // A temporary folder is private (0700); the checkout is read like any code folder.
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&built, std::fs::Permissions::from_mode(0o755));
        match std::fs::rename(&built, &dir) {
            Ok(()) => Ok(dir),
            // Another start made the same checkout first.
            Err(_) if dir.is_dir() => {
                let _ = std::fs::remove_dir_all(&built);
                Ok(dir)
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(&built);
                Err(SnapshotError::Io {
                    path: dir,
                    source: e,
                })
            }
        }
    }

    /// Hard-links a blob to `to`; copies it where the blob has as many links as the file
    /// system allows (ext4: 65,000; an empty `__init__.py` can be in thousands of trees).
    fn link_blob(&self, blob: &str, exec: bool, to: &Path) -> Result<()> {
        let from = self.blob_path(blob, exec);
        match std::fs::hard_link(&from, to) {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc_emlink()) => {
                std::fs::copy(&from, to).map_err(SnapshotError::io(to))?;
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !from.exists() => {
                Err(SnapshotError::Walk {
                    path: from,
                    message: "a file of this snapshot is missing from the code store".into(),
                })
            }
            Err(e) => Err(SnapshotError::Io {
                path: to.to_path_buf(),
                source: e,
            }),
        }
    }
}

fn libc_emlink() -> i32 {
    rustix::io::Errno::MLINK.raw_os_error()
}

fn ensure_parent(path: &Path) -> Result<()> {
    match path.parent() {
        Some(p) if !p.is_dir() => std::fs::create_dir_all(p).map_err(SnapshotError::io(p)),
        _ => Ok(()),
    }
}

impl CodeStore {
    /// Removes the checkouts that are not in `in_use` and were made more than `min_age`
    /// ago (a release or one-off command may be about to run in a younger one). Checkouts
    /// are cheap to make again from the store: only their folders and links cost disk.
    /// Returns how many were removed.
    pub fn prune_checkouts(
        &self,
        in_use: &std::collections::HashSet<PathBuf>,
        min_age: std::time::Duration,
    ) -> usize {
        let parent = self.root.join("checkouts");
        let Ok(entries) = std::fs::read_dir(&parent) else {
            return 0;
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let path = entry.path();
            let old_enough = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= min_age);
            if !old_enough || in_use.contains(&path) {
                continue;
            }
            // A half-built one (`.tmp-…`) is as stale as a finished one at this age.
            if std::fs::remove_dir_all(&path).is_ok() {
                removed += 1;
            }
        }
        removed
    }
}
