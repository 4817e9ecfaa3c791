//! Taking a snapshot: walk, hash, store new blobs, write the manifest.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::cache::{Cached, StatCache};
use crate::{CodeStore, DEFAULT_IGNORED, Entry, IGNORE_FILE, Result, SnapshotError};

/// The first 16 bytes of every SQLite database file.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// What [`CodeStore::take`] stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    /// The snapshot's name: the digest of its root folder's object.
    pub digest: String,
    /// Files in the snapshot and their total size.
    pub files: u64,
    pub bytes: u64,
    /// Files whose content was not in the store before, and their size: what this
    /// snapshot added to the disk.
    pub new_files: u64,
    pub new_bytes: u64,
    /// Files read and hashed (the rest came from the stat cache).
    pub hashed_files: u64,
}

impl CodeStore {
    /// Snapshots the folder `source`, leaving out the ignored paths and `exclude` (paths
    /// relative to `source`, e.g. volumes), and returns its digest.
    ///
    /// # Errors
    /// An unreadable file, a damaged ignore file, or a live database inside the folder.
    pub fn take(&self, source: &Path, exclude: &[PathBuf]) -> Result<Taken> {
        self.scan(source, exclude, true)
    }

    /// The digest [`CodeStore::take`] would give the folder now, without storing anything
    /// and without refusing databases: how a deploy tells whether a build's inputs changed.
    pub fn digest(&self, source: &Path, exclude: &[PathBuf]) -> Result<String> {
        Ok(self.scan(source, exclude, false)?.digest)
    }

    fn scan(&self, source: &Path, exclude: &[PathBuf], store: bool) -> Result<Taken> {
        let meta = std::fs::metadata(source).map_err(SnapshotError::io(source))?;
        if !meta.is_dir() {
            return Err(SnapshotError::Walk {
                path: source.to_path_buf(),
                message: "not a folder".into(),
            });
        }
        let cache_path = self.cache_path(source);
        let old = StatCache::load(&cache_path);
        let mut new_cache = StatCache::default();
        let mut taken = Taken {
            digest: String::new(),
            files: 0,
            bytes: 0,
            new_files: 0,
            new_bytes: 0,
            hashed_files: 0,
        };
        let mut entries = Vec::new();
        for found in walk(source, exclude)? {
            let (rel, path, file_type) = found;
            if file_type.is_dir() {
                entries.push(Entry::Dir { path: rel });
                continue;
            }
            if file_type.is_symlink() {
                let target = std::fs::read_link(&path).map_err(SnapshotError::io(&path))?;
                entries.push(Entry::Symlink {
                    path: rel,
                    target: target.to_string_lossy().into_owned(),
                });
                continue;
            }
            if !file_type.is_file() {
                // Sockets and pipes are run-time state, not code.
                continue;
            }
            if store
                && rel.rsplit('/').next() == Some("PG_VERSION")
                && path.with_file_name("global").join("pg_control").exists()
            {
                return Err(SnapshotError::LiveDatabase {
                    path: path.parent().unwrap_or(&path).to_path_buf(),
                    what: "PostgreSQL data folder",
                });
            }
            let meta = std::fs::symlink_metadata(&path).map_err(SnapshotError::io(&path))?;
            let exec = meta.permissions().mode() & 0o111 != 0;
            let cached = old
                .get(&rel, &meta)
                .filter(|c| c.exec == exec && (!store || self.blob_path(&c.blob, exec).is_file()));
            let file = match cached {
                Some(c) => c.clone(),
                None if !store => {
                    taken.hashed_files += 1;
                    hash_file(&path, exec)?
                }
                None => {
                    taken.hashed_files += 1;
                    let (c, added) = self.store_blob(&path, exec)?;
                    if added {
                        taken.new_files += 1;
                        taken.new_bytes += c.size;
                    }
                    c
                }
            };
            if store && file.sqlite {
                return Err(SnapshotError::LiveDatabase {
                    path,
                    what: "SQLite database",
                });
            }
            new_cache.insert(rel.clone(), &meta, file.clone());
            taken.files += 1;
            taken.bytes += file.size;
            entries.push(Entry::File {
                path: rel,
                blob: file.blob,
                size: file.size,
                exec,
            });
        }
        let folders = crate::tree::folders(&entries);
        let Some((root, _)) = folders.last() else {
            unreachable!("the root folder is always there");
        };
        taken.digest = root.clone();
        if store && !self.tree_path(&taken.digest).is_file() {
            // New blobs and folder objects reach the disk before the root object that makes
            // the snapshot exist.
            let mut written = false;
            for (digest, bytes) in &folders[..folders.len() - 1] {
                let path = self.tree_path(digest);
                if !path.is_file() {
                    crate::write_atomically(&path, bytes, false)?;
                    written = true;
                }
            }
            if taken.new_files > 0 || written {
                let blobs = self.root.join("blobs");
                std::fs::create_dir_all(&blobs).map_err(SnapshotError::io(&blobs))?;
                let dir = std::fs::File::open(&blobs).map_err(SnapshotError::io(&blobs))?;
                rustix::fs::syncfs(&dir).map_err(|e| SnapshotError::Io {
                    path: blobs,
                    source: e.into(),
                })?;
            }
            let (_, root_bytes) = &folders[folders.len() - 1];
            crate::write_atomically(&self.tree_path(&taken.digest), root_bytes, true)?;
        }
        // The cache only saves work; failing to write it costs a re-hash next time.
        let _ = new_cache.save(&cache_path);
        Ok(taken)
    }

    fn cache_path(&self, source: &Path) -> PathBuf {
        let digest = Sha256::digest(source.as_os_str().as_encoded_bytes());
        self.root
            .join("cache")
            .join(format!("{}.json", &hex::encode(digest)[..24]))
    }

    /// Copies a file into a temporary blob while hashing it, then moves it into place
    /// unless that content is stored already. Copying before knowing the digest means a
    /// file edited meanwhile is stored under the digest of what was actually copied.
    /// Returns the blob and whether it was new.
    fn store_blob(&self, path: &Path, exec: bool) -> Result<(Cached, bool)> {
        let tmp_dir = self.root.join("blobs").join("tmp");
        std::fs::create_dir_all(&tmp_dir).map_err(SnapshotError::io(&tmp_dir))?;
        let mut tmp =
            tempfile::NamedTempFile::new_in(&tmp_dir).map_err(SnapshotError::io(&tmp_dir))?;
        let tmp_path = tmp.path().to_path_buf();
        let cached = read_hashing(path, exec, Some((tmp.as_file_mut(), &tmp_path)))?;
        let blob = cached.blob.clone();
        let target = self.blob_path(&blob, exec);
        if target.is_file() {
            return Ok((cached, false));
        }
        let mode = if exec { 0o555 } else { 0o444 };
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(SnapshotError::io(tmp.path()))?;
        let dir = target.parent().unwrap_or(&self.root);
        std::fs::create_dir_all(dir).map_err(SnapshotError::io(dir))?;
        tmp.persist_noclobber(&target).or_else(|e| {
            // Another snapshot stored the same content first.
            if target.is_file() {
                Ok(std::fs::File::open(&target).map_err(SnapshotError::io(&target))?)
            } else {
                Err(SnapshotError::Io {
                    path: target.clone(),
                    source: e.error,
                })
            }
        })?;
        Ok((cached, true))
    }
}

/// Hashes a file without storing it.
fn hash_file(path: &Path, exec: bool) -> Result<Cached> {
    read_hashing(path, exec, None)
}

/// Reads a file once: its SHA-256, size and whether it starts with SQLite's header, and a
/// copy of its bytes into `copy` (a file and its path, for errors) when given.
fn read_hashing(
    path: &Path,
    exec: bool,
    mut copy: Option<(&mut std::fs::File, &Path)>,
) -> Result<Cached> {
    let mut src = std::fs::File::open(path).map_err(SnapshotError::io(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    let mut head = Vec::with_capacity(16);
    loop {
        let n = src.read(&mut buf).map_err(SnapshotError::io(path))?;
        if n == 0 {
            break;
        }
        if head.len() < 16 {
            head.extend_from_slice(&buf[..(16 - head.len()).min(n)]);
        }
        hasher.update(&buf[..n]);
        if let Some((file, to)) = copy.as_mut() {
            file.write_all(&buf[..n]).map_err(SnapshotError::io(to))?;
        }
        size += n as u64;
    }
    Ok(Cached {
        blob: hex::encode(hasher.finalize()),
        size,
        exec,
        sqlite: head == SQLITE_HEADER,
    })
}

/// The entries under `source` to snapshot, as (relative path with `/`, full path, type),
/// without the folder itself.
fn walk(source: &Path, exclude: &[PathBuf]) -> Result<Vec<(String, PathBuf, std::fs::FileType)>> {
    let excluded: Vec<PathBuf> = exclude.iter().map(|p| source.join(p)).collect();
    let mut builder = ignore::WalkBuilder::new(source);
    builder
        .standard_filters(false)
        .hidden(false)
        .parents(true)
        .follow_links(false)
        .add_custom_ignore_filename(IGNORE_FILE)
        .filter_entry(move |e| {
            let name = e.file_name().to_string_lossy();
            e.depth() == 0
                || !(DEFAULT_IGNORED.contains(&name.as_ref())
                    || excluded.iter().any(|x| x == e.path()))
        });
    let mut out = Vec::new();
    for item in builder.build() {
        let entry = item.map_err(|e| SnapshotError::Walk {
            path: source.to_path_buf(),
            message: e.to_string(),
        })?;
        if entry.depth() == 0 {
            continue;
        }
        let Some(file_type) = entry.file_type() else {
            continue;
        };
        let rel = entry
            .path()
            .strip_prefix(source)
            .unwrap_or(entry.path())
            .to_string_lossy()
            .into_owned();
        out.push((rel, entry.path().to_path_buf(), file_type));
    }
    Ok(out)
}

/// The inode number, for the stat cache: an editor that saves by rename changes it.
pub(crate) fn stat_key(meta: &std::fs::Metadata) -> (u64, i64, i64, i64, i64, u64) {
    (
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec(),
        meta.ctime(),
        meta.ctime_nsec(),
        meta.ino(),
    )
}
