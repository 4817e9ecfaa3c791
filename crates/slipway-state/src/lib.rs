//! The embedded state store: the single source of truth for desired state.
//!
//! Everything the control plane must remember across a crash lives here, in one SQLite
//! database opened in WAL mode with `synchronous=FULL`: registered apps, the immutable
//! numbered revisions of each service (with the resolved config they were created from),
//! the traffic assignment of each service, the event log (the audit trail), and the
//! process ids of running instances (so that a restarted server can clean up after a
//! `kill -9`), and the API tokens (hashed, never their values).
//!
//! Every write that changes desired state happens in one transaction together with the
//! event that describes it, so the event log never disagrees with the state it narrates.
//! An event recorded on its own (`add_event`: an instance started or became ready, an API
//! call) is committed without an fsync of its own: it survives a crash of the server at
//! once and reaches the disk with the next state change, so only a power loss can take
//! the last few back.
//!
//! This crate knows nothing about tokio, HTTP or processes; callers serialise access
//! through the internal mutex (one writer, short transactions).

use slipway_core::app_key::DEVELOPMENT;
use slipway_core::events::EventKind;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Serialize;

mod secrets;
mod tokens;

pub use secrets::{MasterKey, SecretInfo};
pub use tokens::{NewToken, TokenRow};
pub use zeroize::Zeroizing;

/// The value of `meta.format`: identifies a database written by Slipway.
const FORMAT: &str = "slipway-state";
/// The schema version this build writes and understands.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS apps (
    name       TEXT PRIMARY KEY,
    spec_path  TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    down       INTEGER NOT NULL DEFAULT 0,
    environment TEXT NOT NULL DEFAULT 'development',
    host       TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS services (
    app        TEXT NOT NULL REFERENCES apps(name),
    name       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    removed    INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (app, name)
);
CREATE TABLE IF NOT EXISTS revisions (
    app        TEXT NOT NULL,
    service    TEXT NOT NULL,
    number     INTEGER NOT NULL,
    created_at TEXT NOT NULL,
    digest     TEXT NOT NULL,
    config     TEXT NOT NULL,
    state      TEXT NOT NULL,
    message    TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (app, service, number),
    FOREIGN KEY (app, service) REFERENCES services(app, name)
);
CREATE TABLE IF NOT EXISTS traffic (
    app      TEXT NOT NULL,
    service  TEXT NOT NULL,
    revision INTEGER NOT NULL,
    percent  INTEGER NOT NULL CHECK (percent BETWEEN 0 AND 100),
    PRIMARY KEY (app, service, revision),
    FOREIGN KEY (app, service, revision) REFERENCES revisions(app, service, number)
);
CREATE TABLE IF NOT EXISTS events (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    ts       TEXT NOT NULL,
    app      TEXT NOT NULL,
    service  TEXT,
    revision INTEGER,
    kind     TEXT NOT NULL,
    message  TEXT NOT NULL,
    actor    TEXT
);
CREATE INDEX IF NOT EXISTS events_by_app ON events(app, id);
CREATE TABLE IF NOT EXISTS tags (
    app      TEXT NOT NULL,
    service  TEXT NOT NULL,
    tag      TEXT NOT NULL,
    revision INTEGER NOT NULL,
    PRIMARY KEY (app, service, tag),
    FOREIGN KEY (app, service, revision) REFERENCES revisions(app, service, number)
);
CREATE TABLE IF NOT EXISTS rollouts (
    app        TEXT NOT NULL,
    service    TEXT NOT NULL,
    revision   INTEGER NOT NULL,
    baseline   INTEGER NOT NULL,
    config     TEXT NOT NULL,
    state      TEXT NOT NULL,
    active     INTEGER NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (app, service, revision)
);
CREATE TABLE IF NOT EXISTS secrets (
    app         TEXT NOT NULL,
    environment TEXT NOT NULL,
    name        TEXT NOT NULL,
    version     INTEGER NOT NULL,
    nonce       BLOB NOT NULL,
    ciphertext  BLOB NOT NULL,
    removed     INTEGER NOT NULL DEFAULT 0,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (app, environment, name, version)
);
CREATE TABLE IF NOT EXISTS tokens (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    role         TEXT NOT NULL,
    environments TEXT NOT NULL DEFAULT '',
    hash         BLOB NOT NULL,
    created_at   TEXT NOT NULL,
    expires_at   TEXT,
    last_used_at TEXT,
    revoked_at   TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS tokens_by_name ON tokens(name) WHERE revoked_at IS NULL;
CREATE TABLE IF NOT EXISTS instances (
    id          TEXT PRIMARY KEY,
    app         TEXT NOT NULL,
    service     TEXT NOT NULL,
    revision    INTEGER NOT NULL,
    pid         INTEGER NOT NULL,
    start_ticks INTEGER NOT NULL,
    port        INTEGER NOT NULL,
    started_at  TEXT NOT NULL
);
"#;

/// Errors of the state store. Each says which file is involved and what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot open the state database {path}: {source}\n  hint: check that the data directory exists and is writable, or choose another with --data-dir"
    )]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "{path} is not a Slipway state database ({detail})\n  hint: point --data-dir (or SLIPWAY_HOME) at an empty directory or at one created by Slipway; move the file away if it is damaged"
    )]
    Foreign { path: PathBuf, detail: String },
    #[error(
        "{path} was written by a newer Slipway (schema {found}, this build understands {SCHEMA_VERSION})\n  hint: upgrade slipway, or use another --data-dir"
    )]
    TooNew { path: PathBuf, found: i64 },
    #[error("state database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("{0}")]
    Invalid(String),
    /// A secret or the master key could not be used; the message says which and why.
    #[error("{0}")]
    Secret(String),
    #[error(
        "cannot make the state database's log {path} durable: {source}\n  hint: check the disk holding the data directory"
    )]
    Sync {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The lifecycle of a revision. Whether it serves is told by the traffic table, not here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RevisionState {
    /// Created; instances are starting and have not all passed readiness yet.
    Deploying,
    /// Became ready at least once: it may receive traffic and is a rollback target.
    Ready,
    /// Never became ready (or the deploy was interrupted); never receives traffic.
    Failed,
}

impl RevisionState {
    pub fn as_str(self) -> &'static str {
        match self {
            RevisionState::Deploying => "deploying",
            RevisionState::Ready => "ready",
            RevisionState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        match s {
            "deploying" => Ok(RevisionState::Deploying),
            "ready" => Ok(RevisionState::Ready),
            "failed" => Ok(RevisionState::Failed),
            other => Err(StoreError::Invalid(format!(
                "unknown revision state `{other}` in the database"
            ))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppRow {
    /// The app's key in the store: the string form of its [`slipway_core::app_key::AppKey`].
    pub name: String,
    pub spec_path: String,
    pub created_at: String,
    pub updated_at: String,
    pub down: bool,
    /// The environment the app was deployed to.
    pub environment: String,
    /// The app's host in that environment (empty in rows written before environments).
    pub host: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RevisionRow {
    pub app: String,
    pub service: String,
    pub number: u64,
    pub created_at: String,
    pub digest: String,
    /// The resolved service config as JSON, exactly as it was when the revision was made.
    pub config: String,
    pub state: RevisionState,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub id: i64,
    pub ts: String,
    pub app: String,
    pub service: Option<String>,
    pub revision: Option<u64>,
    pub kind: String,
    pub message: String,
    /// Who made the call that the event records (`api.request`): a token's name, or
    /// `local` for the Unix socket. `None` for what the server does by itself.
    pub actor: Option<String>,
}

/// An event to append; `ts` and `id` are assigned by the store.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub app: &'a str,
    pub service: Option<&'a str>,
    pub revision: Option<u64>,
    pub kind: EventKind,
    pub message: String,
}

/// A revision that can receive requests ([`Store::serving_revisions`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServingRevision {
    pub app: String,
    pub service: String,
    pub revision: u64,
    /// Reachable only through a tag: it has no traffic share.
    pub tag_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceRow {
    pub id: String,
    pub app: String,
    pub service: String,
    pub revision: u64,
    pub pid: u32,
    pub start_ticks: u64,
    pub port: u16,
    pub started_at: String,
}

/// One target of a service's traffic: a revision and its share in percent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TrafficTarget {
    pub revision: u64,
    pub percent: u32,
}

/// What routing needs of one service with traffic (see [`Store::routing`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRouting {
    pub app: String,
    pub service: String,
    /// Shares above zero, by revision number.
    pub traffic: Vec<TrafficTarget>,
    /// Tags by name.
    pub tags: Vec<(String, u64)>,
}

/// A progressive rollout of `revision` against `baseline`, persisted after every step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RolloutRow {
    pub app: String,
    pub service: String,
    pub revision: u64,
    pub baseline: u64,
    /// The rollout's configuration as JSON (owned by the rollout engine).
    pub config: String,
    /// The rollout's state as JSON (owned by the rollout engine).
    pub state: String,
    /// In progress or paused; false once complete or rolled back.
    pub active: bool,
    pub updated_at: String,
}

/// Which events to list.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub app: Option<String>,
    pub service: Option<String>,
    /// Only events with an id greater than this.
    pub after: Option<i64>,
    /// At most this many (the newest ones when `after` is absent), oldest first.
    pub limit: Option<u32>,
}

/// The store. Cheap operations, one connection, serialised by a mutex.
pub struct Store {
    path: PathBuf,
    conn: Mutex<Connection>,
}

// === impl Store ===

impl Store {
    /// Opens (or creates) the database at `path`.
    ///
    /// # Errors
    /// A file that is not a SQLite database, or a SQLite database that Slipway did not
    /// write, gives [`StoreError::Foreign`]; a newer schema gives [`StoreError::TooNew`].
    pub fn open(path: &Path) -> Result<Store> {
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
        let foreign = |detail: String| StoreError::Foreign {
            path: path.to_owned(),
            detail,
        };
        // The first read of the schema fails on a file that is not a database at all.
        let tables: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
            .and_then(|mut s| {
                s.query_map([], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .map_err(|e| foreign(e.to_string()))?;
        if !tables.is_empty() && !tables.iter().any(|t| t == "meta") {
            return Err(foreign(format!(
                "it holds other tables: {}",
                tables.join(", ")
            )));
        }
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| foreign(e.to_string()))?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // Every query is prepared through the cache (`prepare_cached`): parsing the SQL was
        // a sixth of the server's CPU while it routed 1,000 services. A few dozen distinct
        // statements exist.
        conn.set_prepared_statement_cache_capacity(64);
        // Without the query planner stability guarantee, SQLite marks a statement whose plan
        // looked at a bound value (`WHERE app = ?1 AND service = ?2 ORDER BY number` does)
        // to be compiled again whenever that value changes: every cached `revisions`,
        // `traffic` and `tags` query was re-parsed on each call, half of the time of a
        // status of 1,000 services. The plans here do not depend on the values.
        conn.set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
            true,
        )?;
        if tables.is_empty() {
            conn.execute_batch(SCHEMA)?;
            conn.execute(
                "INSERT INTO meta(key, value) VALUES ('format', ?1), ('schema_version', ?2)",
                params![FORMAT, SCHEMA_VERSION.to_string()],
            )?;
        } else {
            let format: Option<String> = conn
                .query_row("SELECT value FROM meta WHERE key = 'format'", [], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(|e| foreign(e.to_string()))?;
            if format.as_deref() != Some(FORMAT) {
                return Err(foreign(format!(
                    "meta.format is {:?}, expected {FORMAT:?}",
                    format.unwrap_or_default()
                )));
            }
            let version: i64 = conn
                .query_row(
                    "SELECT value FROM meta WHERE key = 'schema_version'",
                    [],
                    |r| r.get::<_, String>(0),
                )
                .map_err(|e| foreign(e.to_string()))?
                .parse()
                .map_err(|_| foreign("meta.schema_version is not a number".into()))?;
            if version > SCHEMA_VERSION {
                return Err(StoreError::TooNew {
                    path: path.to_owned(),
                    found: version,
                });
            }
            // Creating missing tables keeps older databases of the same version usable.
            conn.execute_batch(SCHEMA)?;
            migrate_columns(&conn)?;
        }
        let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
        if check != "ok" {
            return Err(foreign(format!("integrity check failed: {check}")));
        }
        Ok(Store {
            path: path.to_owned(),
            conn: Mutex::new(conn),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Copies the whole database to `dest` (a new file) with SQLite's online backup API,
    /// from a read-only connection of its own: one read transaction, so the copy is one
    /// consistent state and the server's writes go on meanwhile (WAL).
    pub fn backup_to(&self, dest: &Path) -> Result<()> {
        let source = Connection::open_with_flags(
            &self.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| StoreError::Open {
            path: self.path.clone(),
            source,
        })?;
        source.busy_timeout(std::time::Duration::from_secs(5))?;
        let mut target = Connection::open(dest).map_err(|source| StoreError::Open {
            path: dest.to_path_buf(),
            source,
        })?;
        let backup = rusqlite::backup::Backup::new(&source, &mut target)?;
        // All pages in one step: one read transaction, never restarted by a write.
        backup.step(-1)?;
        drop(backup);
        let check: String = target.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        if check != "ok" {
            return Err(StoreError::Invalid(format!(
                "the copy of the state database in {} fails its integrity check: {check}",
                dest.display()
            )));
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        slipway_core::plane::assert_control_plane("a store call");
        // A panic while holding the lock cannot leave a transaction half-applied
        // (SQLite rolls it back), so the poisoned connection is still consistent.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        commit(&mut self.lock(), f)
    }

    /// Like [`Store::write`], but the commit does not wait for the disk
    /// (`synchronous=NORMAL` for this one transaction): it is in the WAL at once, safe from a
    /// crash of the server, and reaches the disk with the next synced commit or checkpoint,
    /// so only a power loss or a crash of the machine can take it back. For an event
    /// recorded on its own (an instance became ready, an API call was made): a deploy
    /// records several, and each fsync (3-8 ms here) was on the deploy's path; and for the
    /// rows of running instances.
    fn write_unsynced<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.lock();
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let out = commit(&mut conn, f);
        // Every other write stays synced, whatever happened above.
        conn.pragma_update(None, "synchronous", "FULL")?;
        out
    }

    /// [`Store::write`] when `synced`, else [`Store::write_unsynced`].
    fn write_as<T>(
        &self,
        synced: bool,
        f: impl FnOnce(&Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        if synced {
            self.write(f)
        } else {
            self.write_unsynced(f)
        }
    }

    // --- apps and services ---

    /// Registers an app in `development` (or updates its spec path) and makes sure each
    /// named service exists.
    pub fn upsert_app(&self, name: &str, spec_path: &str, services: &[&str]) -> Result<()> {
        self.register_app(
            name,
            spec_path,
            services,
            DEVELOPMENT,
            &format!("{name}.localhost"),
        )
    }

    /// Registers the app stored under `key` (the string form of an
    /// [`slipway_core::app_key::AppKey`]) in `environment` with its `host`, or updates its
    /// spec path and host, and makes sure each named service exists.
    pub fn register_app(
        &self,
        key: &str,
        spec_path: &str,
        services: &[&str],
        environment: &str,
        host: &str,
    ) -> Result<()> {
        self.write(|tx| {
            let now = now();
            let existed: bool = tx
                .query_row("SELECT 1 FROM apps WHERE name = ?1", [key], |_| Ok(()))
                .optional()?
                .is_some();
            tx.execute(
                "INSERT INTO apps(name, spec_path, created_at, updated_at, environment, host) VALUES (?1, ?2, ?3, ?3, ?4, ?5)
                 ON CONFLICT(name) DO UPDATE SET spec_path = excluded.spec_path, updated_at = excluded.updated_at,
                   environment = excluded.environment, host = excluded.host",
                params![key, spec_path, now, environment, host],
            )?;
            if !existed {
                insert_event(
                    tx,
                    &NewEvent {
                        app: key,
                        kind: EventKind::AppRegistered,
                        message: format!(
                            "app {key} registered from {spec_path} (environment {environment}, host {host})"
                        ),
                        service: None,
                        revision: None,
                    },
                )?;
            }
            for svc in services {
                tx.execute(
                    "INSERT INTO services(app, name, created_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT(app, name) DO UPDATE SET removed = 0",
                    params![key, svc, now],
                )?;
            }
            Ok(())
        })
    }

    pub fn apps(&self) -> Result<Vec<AppRow>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT name, spec_path, created_at, updated_at, down, environment, host FROM apps ORDER BY name",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok(AppRow {
                    name: r.get(0)?,
                    spec_path: r.get(1)?,
                    created_at: r.get(2)?,
                    updated_at: r.get(3)?,
                    down: r.get(4)?,
                    environment: r.get(5)?,
                    host: r.get(6)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    pub fn app(&self, name: &str) -> Result<Option<AppRow>> {
        Ok(self.apps()?.into_iter().find(|a| a.name == name))
    }

    /// Marks an app as stopped (`down`) or running; recorded with an event.
    pub fn set_app_down(&self, name: &str, down: bool) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE apps SET down = ?2, updated_at = ?3 WHERE name = ?1",
                params![name, down, now()],
            )?;
            insert_event(
                tx,
                &NewEvent {
                    app: name,
                    kind: if down {
                        EventKind::AppDown
                    } else {
                        EventKind::AppUp
                    },
                    message: format!("app {name} {}", if down { "stopped" } else { "started" }),
                    service: None,
                    revision: None,
                },
            )
        })
    }

    /// The services of an app that are still in its spec, by name.
    pub fn services(&self, app: &str) -> Result<Vec<String>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT name FROM services WHERE app = ?1 AND removed = 0 ORDER BY name",
        )?;
        let rows = stmt
            .query_map([app], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(rows)
    }

    /// Marks a service as removed from the spec; its history stays.
    pub fn remove_service(&self, app: &str, service: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE services SET removed = 1 WHERE app = ?1 AND name = ?2",
                params![app, service],
            )?;
            tx.execute(
                "DELETE FROM traffic WHERE app = ?1 AND service = ?2",
                params![app, service],
            )?;
            insert_event(
                tx,
                &NewEvent {
                    app,
                    service: Some(service),
                    kind: EventKind::ServiceRemoved,
                    message: format!("service {service} removed from the spec"),
                    revision: None,
                },
            )
        })
    }

    // --- revisions ---

    /// Creates the next numbered revision of a service in state `deploying`.
    pub fn create_revision(
        &self,
        app: &str,
        service: &str,
        digest: &str,
        config: &str,
        cause: &str,
    ) -> Result<u64> {
        self.write(|tx| {
            let next: u64 = tx.query_row(
                "SELECT COALESCE(MAX(number), 0) + 1 FROM revisions WHERE app = ?1 AND service = ?2",
                params![app, service],
                |r| r.get(0),
            )?;
            tx.execute(
                "INSERT INTO revisions(app, service, number, created_at, digest, config, state)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'deploying')",
                params![app, service, next, now(), digest, config],
            )?;
            insert_event(
                tx,
                &NewEvent {
                    app,
                    service: Some(service),
                    revision: Some(next),
                    kind: EventKind::RevisionCreated,
                    message: format!(
                        "revision {next} of {service} created ({cause}, config {})",
                        short(digest)
                    ),
                },
            )?;
            Ok(next)
        })
    }

    /// Sets a revision's lifecycle state, with an event of `kind` carrying `message`.
    pub fn set_revision_state(
        &self,
        app: &str,
        service: &str,
        number: u64,
        state: RevisionState,
        message: &str,
    ) -> Result<()> {
        self.write(|tx| {
            let n = tx.execute(
                "UPDATE revisions SET state = ?4, message = ?5 WHERE app = ?1 AND service = ?2 AND number = ?3",
                params![app, service, number, state.as_str(), message],
            )?;
            if n == 0 {
                return Err(StoreError::Invalid(format!(
                    "revision {number} of {app}/{service} does not exist"
                )));
            }
            insert_event(
                tx,
                &NewEvent {
                    app,
                    service: Some(service),
                    revision: Some(number),
                    kind: match state {
                        RevisionState::Deploying => EventKind::RevisionDeploying,
                        RevisionState::Ready => EventKind::RevisionReady,
                        RevisionState::Failed => EventKind::RevisionFailed,
                    },
                    message: message.to_owned(),
                },
            )
        })
    }

    /// All revisions of a service, oldest first.
    pub fn revisions(&self, app: &str, service: &str) -> Result<Vec<RevisionRow>> {
        self.query_revisions(
            "WHERE app = ?1 AND service = ?2 ORDER BY number",
            params![app, service],
        )
    }

    pub fn revision(&self, app: &str, service: &str, number: u64) -> Result<Option<RevisionRow>> {
        Ok(self
            .query_revisions(
                "WHERE app = ?1 AND service = ?2 AND number = ?3",
                params![app, service, number],
            )?
            .pop())
    }

    /// Revisions in a given state across all apps (used at startup to find interrupted deploys).
    pub fn revisions_in_state(&self, state: RevisionState) -> Result<Vec<RevisionRow>> {
        self.query_revisions(
            "WHERE state = ?1 ORDER BY app, service, number",
            params![state.as_str()],
        )
    }

    fn query_revisions(
        &self,
        clause: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<RevisionRow>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT app, service, number, created_at, digest, config, state, message FROM revisions {clause}"
        ))?;
        let raw = stmt
            .query_map(args, |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, u64>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                    r.get::<_, String>(6)?,
                    r.get::<_, String>(7)?,
                ))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        raw.into_iter()
            .map(
                |(app, service, number, created_at, digest, config, state, message)| {
                    Ok(RevisionRow {
                        app,
                        service,
                        number,
                        created_at,
                        digest,
                        config,
                        state: RevisionState::parse(&state)?,
                        message,
                    })
                },
            )
            .collect()
    }

    // --- traffic ---

    /// The current traffic of a service (targets with a non-zero share), by revision.
    pub fn traffic(&self, app: &str, service: &str) -> Result<Vec<TrafficTarget>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT revision, percent FROM traffic WHERE app = ?1 AND service = ?2 AND percent > 0 ORDER BY revision",
        )?;
        let rows = stmt
            .query_map(params![app, service], |r| {
                Ok(TrafficTarget {
                    revision: r.get(0)?,
                    percent: r.get(1)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Replaces a service's traffic atomically. The shares must sum to 100 and every
    /// revision must exist and be `ready`; the change and its event commit together.
    pub fn set_traffic(
        &self,
        app: &str,
        service: &str,
        targets: &[TrafficTarget],
        message: &str,
    ) -> Result<()> {
        self.store_traffic(app, service, targets, message, true)
    }

    /// [`Store::set_traffic`] committed without waiting for the disk; [`Store::sync`] makes
    /// it durable (see [`Store::save_rollout_unsynced`]).
    pub fn set_traffic_unsynced(
        &self,
        app: &str,
        service: &str,
        targets: &[TrafficTarget],
        message: &str,
    ) -> Result<()> {
        self.store_traffic(app, service, targets, message, false)
    }

    fn store_traffic(
        &self,
        app: &str,
        service: &str,
        targets: &[TrafficTarget],
        message: &str,
        synced: bool,
    ) -> Result<()> {
        check_shares(service, targets)?;
        self.write_as(synced, |tx| {
            replace_traffic(tx, app, service, targets, message)
        })
    }

    // --- tags ---

    /// Points `tag` of a service at a revision (which must exist and not have failed).
    pub fn set_tag(&self, app: &str, service: &str, tag: &str, revision: u64) -> Result<()> {
        self.write(|tx| {
            let state: Option<String> = tx
                .query_row(
                    "SELECT state FROM revisions WHERE app = ?1 AND service = ?2 AND number = ?3",
                    params![app, service, revision],
                    |r| r.get(0),
                )
                .optional()?;
            match state.as_deref() {
                None => {
                    return Err(StoreError::Invalid(format!(
                        "revision {revision} of {service} does not exist"
                    )));
                }
                Some("failed") => {
                    return Err(StoreError::Invalid(format!(
                        "revision {revision} of {service} failed; only a revision that became ready can be tagged"
                    )));
                }
                Some(_) => {}
            }
            tx.execute(
                "INSERT INTO tags(app, service, tag, revision) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(app, service, tag) DO UPDATE SET revision = excluded.revision",
                params![app, service, tag, revision],
            )?;
            insert_event(
                tx,
                &NewEvent {
                    app,
                    service: Some(service),
                    revision: Some(revision),
                    kind: EventKind::TagSet,
                    message: format!("tag {tag} of {service} now points at revision {revision}"),
                },
            )
        })
    }

    /// Removes a tag; returns whether it existed.
    pub fn remove_tag(&self, app: &str, service: &str, tag: &str) -> Result<bool> {
        self.write(|tx| {
            let n = tx.execute(
                "DELETE FROM tags WHERE app = ?1 AND service = ?2 AND tag = ?3",
                params![app, service, tag],
            )?;
            if n > 0 {
                insert_event(
                    tx,
                    &NewEvent {
                        app,
                        service: Some(service),
                        kind: EventKind::TagRemoved,
                        message: format!("tag {tag} of {service} removed"),
                        revision: None,
                    },
                )?;
            }
            Ok(n > 0)
        })
    }

    /// The traffic (shares above zero) and the tags of every service that has traffic,
    /// ordered by app and service: what the route table is built from, in two queries
    /// rather than two per service.
    pub fn routing(&self) -> Result<Vec<ServiceRouting>> {
        let conn = self.lock();
        let mut routing: Vec<ServiceRouting> = Vec::new();
        let mut stmt = conn.prepare_cached(
            "SELECT t.app, t.service, t.revision, t.percent FROM traffic t
             JOIN services s ON s.app = t.app AND s.name = t.service
             WHERE s.removed = 0 AND t.percent > 0
             ORDER BY t.app, t.service, t.revision",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let target = TrafficTarget {
                revision: row.get(2)?,
                percent: row.get(3)?,
            };
            let (app, service): (String, String) = (row.get(0)?, row.get(1)?);
            match routing.last_mut() {
                Some(last) if last.app == app && last.service == service => {
                    last.traffic.push(target)
                }
                _ => routing.push(ServiceRouting {
                    app,
                    service,
                    traffic: vec![target],
                    tags: Vec::new(),
                }),
            }
        }
        let mut stmt = conn.prepare_cached(
            "SELECT app, service, tag, revision FROM tags ORDER BY app, service, tag",
        )?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let (app, service): (String, String) = (row.get(0)?, row.get(1)?);
            let key = (app.as_str(), service.as_str());
            if let Ok(at) =
                routing.binary_search_by(|r| (r.app.as_str(), r.service.as_str()).cmp(&key))
            {
                routing[at].tags.push((row.get(2)?, row.get(3)?));
            }
        }
        Ok(routing)
    }

    /// A service's tags, by name.
    pub fn tags(&self, app: &str, service: &str) -> Result<Vec<(String, u64)>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT tag, revision FROM tags WHERE app = ?1 AND service = ?2 ORDER BY tag",
        )?;
        let rows = stmt
            .query_map(params![app, service], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Every revision that can receive requests, of every service in the spec of an app
    /// that is not down: those with a traffic share (`tag_only` false), then those reachable
    /// only through a tag (`tag_only` true), each once, sorted by app, service and revision.
    /// One query for what the autoscaler looks at every second (per service it took two).
    pub fn serving_revisions(&self) -> Result<Vec<ServingRevision>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT t.app, t.service, t.revision, 0 FROM traffic t
               JOIN services s ON s.app = t.app AND s.name = t.service AND s.removed = 0
               JOIN apps a ON a.name = t.app AND a.down = 0
              WHERE t.percent > 0
             UNION
             SELECT g.app, g.service, g.revision, 1 FROM tags g
               JOIN services s ON s.app = g.app AND s.name = g.service AND s.removed = 0
               JOIN apps a ON a.name = g.app AND a.down = 0
              WHERE NOT EXISTS (SELECT 1 FROM traffic t WHERE t.app = g.app
                                AND t.service = g.service AND t.revision = g.revision
                                AND t.percent > 0)
             ORDER BY 1, 2, 3",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok(ServingRevision {
                    app: r.get(0)?,
                    service: r.get(1)?,
                    revision: r.get(2)?,
                    tag_only: r.get(3)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    // --- rollouts ---

    /// Records a rollout's state; with `traffic`, the traffic change commits in the same
    /// transaction, so a restart never sees a step's weights without the step (or the
    /// reverse).
    pub fn save_rollout(
        &self,
        rollout: &RolloutRow,
        traffic: Option<(&[TrafficTarget], &str)>,
    ) -> Result<()> {
        self.store_rollout(rollout, traffic, true)
    }

    /// [`Store::save_rollout`] committed without waiting for the disk (as
    /// [`Store::write_unsynced`] commits): readers see it at once and a crash of the server
    /// keeps it; [`Store::sync`] then makes it durable. So that a rollout's traffic can move
    /// (a failing canary's go back) before the fsync rather than after it.
    pub fn save_rollout_unsynced(
        &self,
        rollout: &RolloutRow,
        traffic: Option<(&[TrafficTarget], &str)>,
    ) -> Result<()> {
        self.store_rollout(rollout, traffic, false)
    }

    /// Makes every commit so far durable, unsynced ones included: an fsync of the
    /// write-ahead log, which is what a synced commit ends with.
    pub fn sync(&self) -> Result<()> {
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        let wal = PathBuf::from(wal);
        let synced = match std::fs::File::open(&wal) {
            Ok(file) => file.sync_data(),
            // No log: nothing is waiting in one.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(err) => Err(err),
        };
        synced.map_err(|source| StoreError::Sync { path: wal, source })
    }

    fn store_rollout(
        &self,
        rollout: &RolloutRow,
        traffic: Option<(&[TrafficTarget], &str)>,
        synced: bool,
    ) -> Result<()> {
        if let Some((targets, _)) = traffic {
            check_shares(&rollout.service, targets)?;
        }
        self.write_as(synced, |tx| {
            tx.execute(
                "INSERT INTO rollouts(app, service, revision, baseline, config, state, active, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(app, service, revision) DO UPDATE SET
                   config = excluded.config, state = excluded.state, active = excluded.active,
                   updated_at = excluded.updated_at",
                params![
                    rollout.app,
                    rollout.service,
                    rollout.revision,
                    rollout.baseline,
                    rollout.config,
                    rollout.state,
                    rollout.active,
                    now()
                ],
            )?;
            if let Some((targets, message)) = traffic {
                replace_traffic(tx, &rollout.app, &rollout.service, targets, message)?;
            }
            Ok(())
        })
    }

    /// The rollouts still in progress (or paused), across all apps.
    pub fn active_rollouts(&self) -> Result<Vec<RolloutRow>> {
        self.query_rollouts("WHERE active = 1", params![])
    }

    /// The latest rollout of a service, if any.
    pub fn latest_rollout(&self, app: &str, service: &str) -> Result<Option<RolloutRow>> {
        Ok(self
            .query_rollouts(
                "WHERE app = ?1 AND service = ?2 ORDER BY revision DESC LIMIT 1",
                params![app, service],
            )?
            .pop())
    }

    fn query_rollouts(&self, clause: &str, args: impl rusqlite::Params) -> Result<Vec<RolloutRow>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT app, service, revision, baseline, config, state, active, updated_at FROM rollouts {clause}"
        ))?;
        let rows = stmt
            .query_map(args, |r| {
                Ok(RolloutRow {
                    app: r.get(0)?,
                    service: r.get(1)?,
                    revision: r.get(2)?,
                    baseline: r.get(3)?,
                    config: r.get(4)?,
                    state: r.get(5)?,
                    active: r.get(6)?,
                    updated_at: r.get(7)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    // --- events ---

    pub fn add_event(&self, event: &NewEvent<'_>) -> Result<()> {
        self.write_unsynced(|tx| insert_event(tx, event))
    }

    /// Appends an event that records what `actor` did (see [`Event::actor`]).
    pub fn add_event_by(&self, event: &NewEvent<'_>, actor: &str) -> Result<()> {
        self.write_unsynced(|tx| insert_event_by(tx, event, Some(actor)))
    }

    /// Events matching the filter, oldest first.
    pub fn events(&self, filter: &EventFilter) -> Result<Vec<Event>> {
        let conn = self.lock();
        let limit = filter.limit.unwrap_or(1000).min(10_000) as i64;
        let after = filter.after.unwrap_or(0);
        // Without `after`, take the newest `limit` events; with it, the next `limit` ones.
        let order = if filter.after.is_some() {
            "ASC"
        } else {
            "DESC"
        };
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT id, ts, app, service, revision, kind, message, actor FROM events
             WHERE id > ?1 AND (?2 IS NULL OR app = ?2) AND (?3 IS NULL OR service = ?3)
             ORDER BY id {order} LIMIT ?4"
        ))?;
        let mut rows = stmt
            .query_map(params![after, filter.app, filter.service, limit], |r| {
                Ok(Event {
                    id: r.get(0)?,
                    ts: r.get(1)?,
                    app: r.get(2)?,
                    service: r.get(3)?,
                    revision: r.get(4)?,
                    kind: r.get(5)?,
                    message: r.get(6)?,
                    actor: r.get(7)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        if filter.after.is_none() {
            rows.reverse();
        }
        Ok(rows)
    }

    // --- instances ---
    //
    // An instance row lets the next server find a process the previous one left behind
    // when it crashed (`kill_orphan`). Its writes do not wait for the disk
    // ([`Store::write_unsynced`]): a crash of the server keeps them, and the power loss or
    // machine crash that could take one back takes the process with it. One was synced on
    // every instance start and stop, after the spawn and before the readiness wait.

    pub fn record_instance(&self, row: &InstanceRow) -> Result<()> {
        self.write_unsynced(|tx| {
            tx.execute(
                "INSERT OR REPLACE INTO instances(id, app, service, revision, pid, start_ticks, port, started_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    row.id,
                    row.app,
                    row.service,
                    row.revision,
                    row.pid,
                    row.start_ticks,
                    row.port,
                    row.started_at
                ],
            )?;
            Ok(())
        })
    }

    pub fn forget_instance(&self, id: &str) -> Result<()> {
        self.write_unsynced(|tx| {
            tx.execute("DELETE FROM instances WHERE id = ?1", [id])?;
            Ok(())
        })
    }

    /// Forgets every recorded instance: for a store restored from a backup, whose processes
    /// belonged to another server (on this machine, its pids could be live processes that a
    /// restart must not kill).
    pub fn forget_all_instances(&self) -> Result<()> {
        self.write(|tx| {
            tx.execute("DELETE FROM instances", [])?;
            Ok(())
        })
    }

    pub fn instances(&self) -> Result<Vec<InstanceRow>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT id, app, service, revision, pid, start_ticks, port, started_at FROM instances ORDER BY id",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok(InstanceRow {
                    id: r.get(0)?,
                    app: r.get(1)?,
                    service: r.get(2)?,
                    revision: r.get(3)?,
                    pid: r.get(4)?,
                    start_ticks: r.get(5)?,
                    port: r.get(6)?,
                    started_at: r.get(7)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }
}

/// Adds the columns that later versions of the same schema gave existing tables
/// (`CREATE TABLE IF NOT EXISTS` leaves an existing table as it is).
fn migrate_columns(conn: &Connection) -> Result<()> {
    let added = [
        ("apps", "environment", "TEXT NOT NULL DEFAULT 'development'"),
        ("apps", "host", "TEXT NOT NULL DEFAULT ''"),
        ("events", "actor", "TEXT"),
    ];
    for (table, column, definition) in added {
        let exists: bool = conn
            .prepare(&format!(
                "SELECT 1 FROM pragma_table_info('{table}') WHERE name = ?1"
            ))?
            .exists([column])?;
        if !exists {
            conn.execute_batch(&format!(
                "ALTER TABLE {table} ADD COLUMN {column} {definition}"
            ))?;
        }
    }
    Ok(())
}

/// Replaces a service's traffic rows and records the change (inside a transaction).
fn replace_traffic(
    tx: &Transaction<'_>,
    app: &str,
    service: &str,
    targets: &[TrafficTarget],
    message: &str,
) -> Result<()> {
    for t in targets {
        let state: Option<String> = tx
            .query_row(
                "SELECT state FROM revisions WHERE app = ?1 AND service = ?2 AND number = ?3",
                params![app, service, t.revision],
                |r| r.get(0),
            )
            .optional()?;
        match state.as_deref() {
            Some("ready") => {}
            Some(other) => {
                return Err(StoreError::Invalid(format!(
                    "revision {} of {service} is {other}; only a ready revision can receive traffic",
                    t.revision
                )));
            }
            None => {
                return Err(StoreError::Invalid(format!(
                    "revision {} of {service} does not exist",
                    t.revision
                )));
            }
        }
    }
    tx.execute(
        "DELETE FROM traffic WHERE app = ?1 AND service = ?2",
        params![app, service],
    )?;
    for t in targets {
        tx.execute(
            "INSERT INTO traffic(app, service, revision, percent) VALUES (?1, ?2, ?3, ?4)",
            params![app, service, t.revision, t.percent],
        )?;
    }
    let split = targets
        .iter()
        .map(|t| format!("r{}={}%", t.revision, t.percent))
        .collect::<Vec<_>>()
        .join(", ");
    insert_event(
        tx,
        &NewEvent {
            app,
            service: Some(service),
            revision: targets.iter().max_by_key(|t| t.percent).map(|t| t.revision),
            kind: EventKind::TrafficChanged,
            message: format!("{message}: {split}"),
        },
    )
}

/// Refuses a traffic split whose shares do not sum to 100.
fn check_shares(service: &str, targets: &[TrafficTarget]) -> Result<()> {
    let sum: u32 = targets.iter().map(|t| t.percent).sum();
    if sum != 100 {
        return Err(StoreError::Invalid(format!(
            "traffic of {service} must sum to 100%, got {sum}%"
        )));
    }
    Ok(())
}

/// Runs `f` in one immediate transaction on `conn` and commits it.
fn commit<T>(conn: &mut Connection, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    let out = f(&tx)?;
    tx.commit()?;
    Ok(out)
}

fn insert_event(tx: &Transaction<'_>, e: &NewEvent<'_>) -> Result<()> {
    insert_event_by(tx, e, None)
}

fn insert_event_by(tx: &Transaction<'_>, e: &NewEvent<'_>, actor: Option<&str>) -> Result<()> {
    tx.execute(
        "INSERT INTO events(ts, app, service, revision, kind, message, actor) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![now(), e.app, e.service, e.revision, e.kind.as_str(), e.message, actor],
    )?;
    Ok(())
}

/// The current time as an RFC 3339 UTC timestamp with milliseconds.
pub fn now() -> String {
    format!("{:.3}", jiff::Timestamp::now())
}

fn short(digest: &str) -> &str {
    &digest[..digest.len().min(12)]
}

#[cfg(test)]
mod tests;
