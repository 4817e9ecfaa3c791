//! The code store: a service's folder frozen into a snapshot that its revisions run from.
//!
//! A revision must hold its code as well as its config, or a rollback runs today's files.
//! [`CodeStore::take`] walks a folder (honouring `.slipwayignore` in gitignore syntax and a
//! few defaults such as `.git`), stores every file once by content (SHA-256) under
//! `blobs/`, and records the tree — names, executable bits, symlinks, empty folders — as
//! one object per folder under `trees/<digest>` (see `tree.rs`). The root folder's digest
//! names the snapshot: equal folders give equal digests, so an unchanged folder makes no new
//! revision, and a one-file edit stores one new blob and the objects of the folders on its
//! path.
//!
//! [`CodeStore::checkout`] materialises a snapshot as a folder of hard links to the blobs
//! (no file content is copied), plus the symlinks that put persistent volumes at their
//! place. Blobs are read-only (0444, or 0555 when executable) because every checkout shares
//! them. Checkouts are keyed by snapshot and volume links, so environments with different
//! volumes never share one.
//!
//! A snapshot refuses what looks like a live database (an SQLite file, a PostgreSQL data
//! folder): a copy per revision would silently give each revision its own data.
//!
//! Re-hashing an unchanged 100 MB folder on every deploy would cost a second or more, so a
//! stat cache per source folder (size, mtime, ctime, inode → blob), like git's index,
//! skips files that have not changed; entries too recent to trust are not cached.
//!
//! **Architecture Invariant:** file-system code only: no tokio, no store, no processes. The
//! caller runs it on a blocking thread.

mod cache;
mod checkout;
mod take;
mod tree;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use take::Taken;

/// The file the ignore rules are read from, in the folder and its parents.
pub const IGNORE_FILE: &str = ".slipwayignore";

/// Names never snapshotted: version-control metadata and caches that tools rebuild.
pub const DEFAULT_IGNORED: &[&str] = &[
    ".git",
    ".hg",
    ".svn",
    "__pycache__",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    ".DS_Store",
    IGNORE_FILE,
];

/// Why a snapshot or checkout failed.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Walk { path: PathBuf, message: String },
    /// A file or folder that holds a live database, found inside the snapshot.
    #[error("{} looks like a live {what}", path.display())]
    LiveDatabase { path: PathBuf, what: &'static str },
    #[error("snapshot {0} is not in the code store")]
    Missing(String),
}

impl SnapshotError {
    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
        move |source| SnapshotError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

pub type Result<T, E = SnapshotError> = std::result::Result<T, E>;

/// One entry of a snapshot's manifest, in path order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
enum Entry {
    Dir {
        path: String,
    },
    File {
        path: String,
        /// The SHA-256 of the content.
        blob: String,
        size: u64,
        exec: bool,
    },
    Symlink {
        path: String,
        target: String,
    },
}

impl Entry {
    fn path(&self) -> &str {
        match self {
            Entry::Dir { path } | Entry::File { path, .. } | Entry::Symlink { path, .. } => path,
        }
    }
}

/// The content-addressed code store under one root (`<data dir>/code`).
#[derive(Debug, Clone)]
pub struct CodeStore {
    root: PathBuf,
}

impl CodeStore {
    pub fn new(root: impl Into<PathBuf>) -> CodeStore {
        CodeStore { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether the snapshot `digest` is stored (its root folder's object exists; the others
    /// are written before it).
    pub fn has(&self, digest: &str) -> bool {
        is_digest(digest) && self.tree_path(digest).is_file()
    }

    fn tree_path(&self, digest: &str) -> PathBuf {
        self.root.join("trees").join(digest)
    }

    fn blob_path(&self, blob: &str, exec: bool) -> PathBuf {
        let name = if exec {
            format!("{}.x", &blob[2..])
        } else {
            blob[2..].to_owned()
        };
        self.root.join("blobs").join(&blob[..2]).join(name)
    }

    /// The number of files and their total size in snapshot `digest`.
    pub fn size(&self, digest: &str) -> Result<(u64, u64)> {
        let mut files = 0;
        let mut bytes = 0;
        for e in self.manifest(digest)? {
            if let Entry::File { size, .. } = e {
                files += 1;
                bytes += size;
            }
        }
        Ok((files, bytes))
    }
}

/// A digest is 64 lowercase hex characters; anything else never names a path.
fn is_digest(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Writes `bytes` to `path` through a temporary file beside it, synced, then renamed: a
/// crash leaves the old file or the new one, never half of one.
fn write_atomically(path: &Path, bytes: &[u8], sync: bool) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(SnapshotError::io(dir))?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(SnapshotError::io(dir))?;
    tmp.write_all(bytes).map_err(SnapshotError::io(path))?;
    if sync {
        tmp.as_file().sync_all().map_err(SnapshotError::io(path))?;
    }
    tmp.persist(path).map_err(|e| SnapshotError::Io {
        path: path.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}

#[cfg(test)]
mod tests;
