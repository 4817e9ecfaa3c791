//! The stat cache of one source folder: which blob a file held when it last had this
//! size, mtime, ctime and inode. Like git's index, an entry changed within the last
//! second before the cache was written is not kept: a write in the same clock tick could
//! leave every stat field equal while the content differs.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::take::stat_key;

/// What a cached file is known to hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Cached {
    pub blob: String,
    pub size: u64,
    pub exec: bool,
    /// The content starts with the SQLite header.
    pub sqlite: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct Row {
    stat: (u64, i64, i64, i64, i64, u64),
    file: Cached,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct StatCache {
    rows: HashMap<String, Row>,
}

/// How recent a change may be and still be trusted when the cache is written.
const RACY: Duration = Duration::from_secs(1);

impl StatCache {
    /// The cache at `path`; empty when missing or unreadable.
    pub fn load(path: &Path) -> StatCache {
        std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    pub fn get(&self, rel: &str, meta: &std::fs::Metadata) -> Option<&Cached> {
        self.rows
            .get(rel)
            .filter(|r| r.stat == stat_key(meta))
            .map(|r| &r.file)
    }

    pub fn insert(&mut self, rel: String, meta: &std::fs::Metadata, file: Cached) {
        let stat = stat_key(meta);
        let changed = SystemTime::UNIX_EPOCH
            + Duration::new(stat.1.max(stat.3).max(0) as u64, 0)
            + Duration::from_secs(1);
        if SystemTime::now()
            .duration_since(changed)
            .unwrap_or_default()
            < RACY
        {
            return;
        }
        self.rows.insert(rel, Row { stat, file });
    }

    pub fn save(&self, path: &Path) -> crate::Result<()> {
        let bytes = serde_json::to_vec(self).map_err(|e| crate::SnapshotError::Walk {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        crate::write_atomically(path, &bytes, false)
    }
}
