//! Managed databases in the controller: made and started the first time a process that
//! uses one starts, adopted when a crashed server left them running, their URL injected
//! into that process's environment, probed every few seconds for `status` and events, and
//! stopped by `down` and by a clean server stop (never by a deploy, nor by a crash).
//!
//! A database lives in `<data_dir>/databases/<app>/<environment>/<name>` (see
//! `slipway_databases`): one cluster per app environment and name, so staging and
//! production never share data. Its generated password is a secret of that environment,
//! `SLIPWAY_DATABASE_<NAME>_PASSWORD`, encrypted in the store like any other.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;

use slipway_databases::{Database, Health, OsUser, Started};
use slipway_spec::DatabaseUse;
use slipway_state::Zeroizing;

use super::*;

/// How often the databases that run are probed.
const HEALTH_EVERY: Duration = Duration::from_secs(2);

/// The controller's databases: the ones this server runs (or adopted), and their health.
#[derive(Default)]
pub(super) struct Databases {
    /// Held while a database is made, started or stopped: one at a time.
    ensure: tokio::sync::Mutex<()>,
    /// The databases known to run, by folder.
    pub(super) running: Mutex<BTreeMap<PathBuf, RunningDatabase>>,
    /// Whether the health loop runs.
    probing: std::sync::atomic::AtomicBool,
    /// Held while a backup is taken or restored: one at a time.
    pub(super) backup_lock: tokio::sync::Mutex<()>,
    /// What is known of each database's backups, by folder.
    pub(super) backups: Mutex<BTreeMap<PathBuf, super::backups::BackupRecord>>,
}

#[derive(Clone)]
pub(super) struct RunningDatabase {
    pub(super) key: AppKey,
    pub(super) database: Database,
    health: Health,
    /// The backup schedule of the revision that last started a process using it.
    pub(super) policy: Option<slipway_spec::BackupPolicy>,
}

/// The secret that holds a database's password.
fn password_secret(name: &str) -> String {
    format!(
        "SLIPWAY_DATABASE_{}_PASSWORD",
        name.to_ascii_uppercase().replace('-', "_")
    )
}

fn failure(e: impl std::fmt::Display) -> Failure {
    Failure::msg(e.to_string())
}

// === impl Controller (databases) ===

impl Controller {
    /// The folder of database `name` of the app stored under `key`.
    pub(super) fn database_dir(&self, key: &AppKey, name: &str) -> PathBuf {
        self.config
            .data_dir
            .join("databases")
            .join(key.app())
            .join(key.environment())
            .join(name)
    }

    /// The database's password: the secret's current value, made (and stored encrypted)
    /// when there is none.
    pub(super) fn database_password(
        &self,
        key: &AppKey,
        name: &str,
    ) -> Result<Zeroizing<String>, Failure> {
        let (app, environment) = (key.app(), key.environment());
        let secret = password_secret(name);
        if let Some(version) = self
            .store
            .secret_version(app, environment, &secret)
            .map_err(failure)?
        {
            let master = self.master_key(false).map_err(failure)?;
            let value = self
                .store
                .secret_value(&master, app, environment, &secret, version)
                .map_err(failure)?;
            return Ok(Zeroizing::new(String::from_utf8_lossy(&value).into_owned()));
        }
        let password = slipway_databases::generate_password().map_err(failure)?;
        let master = self.master_key(true).map_err(failure)?;
        self.store
            .set_secret(
                &master,
                app,
                environment,
                &secret,
                password.as_bytes(),
                key.as_str(),
            )
            .map_err(failure)?;
        Ok(Zeroizing::new(password))
    }

    /// Opens database `name` of `key` as declared.
    fn open_database(
        &self,
        key: &AppKey,
        name: &str,
        engine: slipway_databases::Engine,
        version: Option<&str>,
    ) -> Result<Database, Failure> {
        let user = OsUser::for_databases().map_err(failure)?;
        let dir = self.database_dir(key, name);
        // The data directory stays private (0700): the database user gets passage only.
        user.grant_passage(&self.config.data_dir).map_err(failure)?;
        // The folders on the way are the server's; the database user only passes through.
        let mut parent = dir.parent();
        while let Some(p) = parent {
            if p == self.config.data_dir || !p.starts_with(&self.config.data_dir) {
                break;
            }
            if !p.exists() {
                std::fs::create_dir_all(p)
                    .map_err(|e| failure(format!("cannot create {}: {e}", p.display())))?;
                let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o711));
            }
            parent = p.parent();
        }
        Database::open(engine, &dir, name, version, user).map_err(failure)
    }

    /// Makes sure database `name` of `key` runs (making or starting it if needed, adopting it
    /// if it already runs) and returns its URL.
    pub(super) async fn ensure_database(
        &self,
        key: &AppKey,
        used: &DatabaseUse,
    ) -> Result<Zeroizing<String>, Failure> {
        let _guard = self.databases.ensure.lock().await;
        let dir = self.database_dir(key, &used.name);
        // A revision's `uses` (not a backup or a restore, which name no variable) says what
        // the schedule is.
        let from_revision = !used.database.env.is_empty();
        let known = {
            let mut running = self
                .databases
                .running
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if from_revision && let Some(entry) = running.get_mut(&dir) {
                entry.policy = used.database.backups;
            }
            running.get(&dir).cloned()
        };
        let policy = if from_revision {
            used.database.backups
        } else {
            known.as_ref().and_then(|k| k.policy)
        };
        let password = self.database_password(key, &used.name)?;
        if let Some(known) = known
            && known.database.meta().engine.as_str() == used.database.engine.as_str()
            && used.database.version.as_deref().is_none_or(|asked| {
                slipway_databases::serves_version(&dir, &known.database.meta().version, asked)
            })
            && known.health == Health::Ready
        {
            return Ok(Zeroizing::new(known.database.url(&password)));
        }
        let engine = match used.database.engine {
            slipway_spec::Engine::Postgres => slipway_databases::Engine::Postgres,
            slipway_spec::Engine::Redis => slipway_databases::Engine::Redis,
        };
        let database =
            self.open_database(key, &used.name, engine, used.database.version.as_deref())?;
        let this = database.clone();
        let secret = password.clone();
        let settings = used.database.settings.clone();
        let started = tokio::task::spawn_blocking(move || this.ensure(&secret, &settings))
            .await
            .map_err(failure)?;
        let (app, environment) = (key.app(), key.environment());
        let what = format!(
            "database {} ({} {}) of {app} in {environment}",
            used.name,
            database.meta().engine.as_str(),
            database.meta().version
        );
        let started = match started {
            Ok(started) => started,
            Err(e) => {
                self.event(
                    key,
                    None,
                    None,
                    EventKind::DatabaseFailed,
                    format!("{what} could not start: {e}"),
                );
                return Err(failure(format!("{what} could not start: {e}")));
            }
        };
        let (kind, verb) = match started {
            Started::Created => (EventKind::DatabaseCreated, "created and started"),
            Started::Started => (EventKind::DatabaseStarted, "started"),
            Started::Adopted => (EventKind::DatabaseAdopted, "found running and adopted"),
        };
        self.event(key, None, None, kind, format!("{what} {verb}"));
        let url = database.url(&password);
        self.databases
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                dir,
                RunningDatabase {
                    key: key.clone(),
                    database,
                    health: Health::Ready,
                    policy,
                },
            );
        Ok(Zeroizing::new(url))
    }

    /// A deploy's change of the settings of the app's databases (`databases.<name>.settings`),
    /// before any revision is made: for each database that exists, the engine decides what
    /// the change needs (see `slipway_databases::settings`, `Redis::plan_settings`); each
    /// change is said — on the deploy's stream and as a `database.settings` event — before
    /// it is done. A change that needs a restart is refused unless `restart` allows it, and
    /// an invalid value is refused with the engine's message; both leave the database as it
    /// was. A database not made yet
    /// starts with its settings when a process first uses it. Returns whether the deploy may
    /// go on.
    pub(super) async fn apply_database_settings(
        &self,
        key: &AppKey,
        spec: &slipway_spec::Spec,
        restart: bool,
        tx: &mpsc::UnboundedSender<Progress>,
    ) -> bool {
        for (name, declared) in &spec.databases {
            let dir = self.database_dir(key, name);
            // Not made yet: it is made with these settings when a process first uses it.
            let Ok(Some(meta)) = slipway_databases::read_meta(&dir) else {
                continue;
            };
            if meta.engine.as_str() != declared.engine.as_str() {
                // `ensure_database` refuses it with what to do.
                continue;
            }
            let _guard = self.databases.ensure.lock().await;
            // A change refused before anything was done is a `database.settings` event; a
            // database that could not be reached or changed is a `database.failed` one.
            let refuse = |kind: EventKind, error: String| {
                self.event(key, None, None, kind, error.clone());
                let _ = tx.send(Progress::Failed {
                    service: String::new(),
                    revision: None,
                    error,
                    last_lines: vec![],
                });
                false
            };
            let database = match self.open_database(key, name, meta.engine, Some(&meta.version)) {
                Ok(database) => database,
                Err(f) => {
                    return refuse(
                        EventKind::DatabaseFailed,
                        format!("database {name}: {}", f.error),
                    );
                }
            };
            let password = match self.database_password(key, name) {
                Ok(password) => password,
                Err(f) => {
                    return refuse(
                        EventKind::DatabaseFailed,
                        format!("database {name}: {}", f.error),
                    );
                }
            };
            let wanted = declared.settings.clone();
            let (this, secret) = (database.clone(), password.clone());
            let plan =
                match tokio::task::spawn_blocking(move || this.plan_settings(&secret, &wanted))
                    .await
                {
                    Ok(Ok(plan)) => plan,
                    Ok(Err(e)) => {
                        return refuse(
                            EventKind::DatabaseSettings,
                            format!("database {name}: {e}"),
                        );
                    }
                    Err(e) => {
                        return refuse(EventKind::DatabaseFailed, format!("database {name}: {e}"));
                    }
                };
            // No value changes, but the file may say them in other words (`16384kB` for
            // `16MB`): it takes the spec's words, silently, as nothing else changes.
            let quiet = plan.is_empty();
            let lines = plan.describe();
            if plan.needs_restart() && !restart {
                return refuse(
                    EventKind::DatabaseSettings,
                    format!(
                        "{}\n  nothing was changed: a restart drops the connections of every service that uses database {name}\n  hint: deploy with `slipway deploy --restart-databases` to restart it now, or keep the setting as it is",
                        lines.join("\n  ")
                    ),
                );
            }
            // Said before it is done.
            if !quiet {
                self.event(
                    key,
                    None,
                    None,
                    EventKind::DatabaseSettings,
                    lines.join("; "),
                );
            }
            for message in &lines {
                let _ = tx.send(Progress::Database {
                    database: name.clone(),
                    message: message.clone(),
                });
            }
            if plan.needs_restart() {
                let _ = tx.send(Progress::Database {
                    database: name.clone(),
                    message: format!("database {name}: restarting"),
                });
            }
            let (this, secret) = (database.clone(), password.clone());
            let applied = match tokio::task::spawn_blocking(move || {
                this.apply_settings(&secret, &plan)
            })
            .await
            {
                Ok(Ok(applied)) => applied,
                Ok(Err(e)) => {
                    return refuse(EventKind::DatabaseFailed, format!("database {name}: {e}"));
                }
                Err(e) => {
                    return refuse(EventKind::DatabaseFailed, format!("database {name}: {e}"));
                }
            };
            let done = match applied {
                _ if quiet => continue,
                slipway_databases::Applied::Unchanged => continue,
                slipway_databases::Applied::Written => {
                    format!("database {name}: settings written; it reads them when it starts")
                }
                slipway_databases::Applied::Reloaded => {
                    format!("database {name}: settings applied in place, no connection dropped")
                }
                slipway_databases::Applied::Restarted { downtime_ms } => format!(
                    "database {name}: restarted with the new settings; connections were refused for {:.1} s",
                    downtime_ms as f64 / 1000.0
                ),
            };
            self.event(key, None, None, EventKind::DatabaseSettings, done.clone());
            let _ = tx.send(Progress::Database {
                database: name.clone(),
                message: done,
            });
        }
        true
    }

    /// The URLs of the databases a process uses, as environment variables, each database made
    /// or started first if needed.
    pub(super) async fn database_env(
        &self,
        key: &AppKey,
        uses: &[DatabaseUse],
    ) -> Result<Vec<(String, Zeroizing<String>)>, Failure> {
        let mut env = Vec::with_capacity(uses.len());
        for used in uses {
            let url = self.ensure_database(key, used).await?;
            env.push((used.database.env.clone(), url));
        }
        Ok(env)
    }

    /// Probes every running database every [`HEALTH_EVERY`] (started once, by `recover`);
    /// a change of health is an event.
    pub(super) fn start_database_probes(self: &Arc<Self>) {
        use std::sync::atomic::Ordering;
        if self.databases.probing.swap(true, Ordering::SeqCst) {
            return;
        }
        let this = self.clone();
        self.spawn(async move {
            loop {
                tokio::select! {
                    _ = this.cancel.cancelled() => return,
                    _ = tokio::time::sleep(HEALTH_EVERY) => {}
                }
                let all: Vec<(PathBuf, RunningDatabase)> = this
                    .databases
                    .running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .map(|(d, r)| (d.clone(), r.clone()))
                    .collect();
                for (dir, db) in all {
                    let database = db.database.clone();
                    let Ok(health) = tokio::task::spawn_blocking(move || database.health()).await
                    else {
                        continue;
                    };
                    let mut running = this
                        .databases
                        .running
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    let Some(entry) = running.get_mut(&dir) else {
                        continue;
                    };
                    if entry.health == health {
                        continue;
                    }
                    let before = entry.health;
                    entry.health = health;
                    drop(running);
                    let kind = if health == Health::Ready {
                        EventKind::DatabaseHealthy
                    } else {
                        EventKind::DatabaseUnhealthy
                    };
                    this.event(
                        &db.key,
                        None,
                        None,
                        kind,
                        format!(
                            "database {} is {} (was {})",
                            db.database.meta().name,
                            health.as_str(),
                            before.as_str()
                        ),
                    );
                }
            }
        });
    }

    /// `slipway_database_up` of every running database.
    pub(super) fn database_gauges(&self) -> Vec<(crate::metrics::Labels, i64)> {
        self.databases
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|r| {
                let meta = r.database.meta();
                (
                    vec![
                        ("app".to_owned(), r.key.to_string()),
                        ("database".to_owned(), meta.name.clone()),
                        ("engine".to_owned(), meta.engine.as_str().to_owned()),
                    ],
                    i64::from(r.health == Health::Ready),
                )
            })
            .collect()
    }

    /// The databases of the app stored under `key`, from their folders, with their health.
    pub(super) fn database_status(&self, key: &AppKey) -> Vec<dto::DatabaseStatus> {
        let (app, environment) = (key.app(), key.environment());
        let root = self
            .config
            .data_dir
            .join("databases")
            .join(app)
            .join(environment);
        let Ok(entries) = std::fs::read_dir(&root) else {
            return Vec::new();
        };
        let running = self
            .databases
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let dir = entry.path();
            let Ok(Some(meta)) = slipway_databases::read_meta(&dir) else {
                continue;
            };
            let state = running
                .get(&dir)
                .map_or("stopped", |r| r.health.as_str())
                .to_owned();
            let backup = self.backup_health(&dir);
            out.push(dto::DatabaseStatus {
                name: meta.name,
                engine: meta.engine.as_str().into(),
                version: meta.version,
                state,
                backup,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The folder and [`slipway_databases::Meta`] of database `name` of the app stored under
    /// `key`, which must have been made (the first start of a service that uses it).
    fn existing_database(
        &self,
        key: &AppKey,
        name: &str,
    ) -> Result<(PathBuf, slipway_databases::Meta)> {
        slipway_core::names::check_name("database", name).map_err(ControlError::NotFound)?;
        let (app, environment) = (key.app(), key.environment());
        let dir = self.database_dir(key, name);
        match slipway_databases::read_meta(&dir)
            .map_err(|e| ControlError::Invalid(e.to_string()))?
        {
            Some(meta) => Ok((dir, meta)),
            None => Err(ControlError::NotFound(format!(
                "app {app} has no database `{name}` in environment {environment}; a database is made when a service that `uses` it first starts (`slipway up`)"
            ))),
        }
    }

    /// What the health loop last saw of the database in `dir`, as [`dto::DatabaseStatus::state`]
    /// (`stopped` when this server does not run it).
    fn database_state(&self, dir: &Path) -> String {
        self.databases
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(dir)
            .map_or("stopped", |r| r.health.as_str())
            .to_owned()
    }

    /// How to connect to database `name` of the app stored under `key` (for `slipway db`).
    pub async fn database_connection(
        self: &Arc<Self>,
        key: &AppKey,
        name: &str,
    ) -> Result<dto::DatabaseConnection> {
        let (dir, meta) = self.existing_database(key, name)?;
        let database = self
            .open_database(key, name, meta.engine, Some(&meta.version))
            .map_err(|f| ControlError::Invalid(f.error))?;
        let password = self
            .database_password(key, name)
            .map_err(|f| ControlError::Invalid(f.error))?;
        let state = self.database_state(&dir);
        let (client, host) = database.client();
        Ok(dto::DatabaseConnection {
            name: name.to_owned(),
            engine: meta.engine.as_str().into(),
            version: meta.version,
            url: database.url(&password),
            client: client.display().to_string(),
            host: host.display().to_string(),
            port: match meta.engine {
                slipway_databases::Engine::Postgres => slipway_databases::PG_PORT,
                slipway_databases::Engine::Redis => 0,
            },
            user: name.to_owned(),
            database: name.to_owned(),
            password: password.as_str().to_owned(),
            state,
        })
    }

    /// The settings the spec set on database `name` of `key` (for `slipway db settings`),
    /// with the running server's value of each.
    pub async fn database_settings(
        self: &Arc<Self>,
        key: &AppKey,
        name: &str,
    ) -> Result<dto::DatabaseSettings> {
        let (dir, meta) = self.existing_database(key, name)?;
        let state = self.database_state(&dir);
        let database = self
            .open_database(key, name, meta.engine, Some(&meta.version))
            .map_err(|f| ControlError::Invalid(f.error))?;
        let password = self
            .database_password(key, name)
            .map_err(|f| ControlError::Invalid(f.error))?;
        let settings = tokio::task::spawn_blocking(move || database.effective_settings(&password))
            .await
            .map_err(|e| ControlError::Invalid(e.to_string()))?
            .map_err(|e| ControlError::Invalid(e.to_string()))?;
        Ok(dto::DatabaseSettings {
            name: name.to_owned(),
            engine: meta.engine.as_str().into(),
            state,
            settings: settings
                .into_iter()
                .map(|e| dto::DatabaseSetting {
                    name: e.name,
                    value: e.value,
                    effective: e.now,
                    pending_restart: e.pending_restart,
                })
                .collect(),
        })
    }

    /// `slipway db upgrade`: migrates database `name` of `key` to another PostgreSQL major
    /// version (after a verified backup; the old cluster kept), goes back to the kept
    /// cluster, or removes it. The app's connections fail while the cluster is down.
    pub async fn upgrade_database(
        self: &Arc<Self>,
        key: &AppKey,
        name: &str,
        request: dto::UpgradeRequest,
    ) -> Result<dto::UpgradeOutcome> {
        slipway_core::names::check_name("database", name).map_err(ControlError::NotFound)?;
        let asked = usize::from(request.to.is_some())
            + usize::from(request.revert)
            + usize::from(request.remove_old);
        if asked != 1 {
            return Err(ControlError::Invalid(
                "say what to do: `to` a major version, `revert`, or `remove_old` (one of them)"
                    .into(),
            ));
        }
        let (dir, meta) = self.existing_database(key, name)?;
        if meta.engine != slipway_databases::Engine::Postgres {
            return Err(ControlError::Invalid(format!(
                "database {name} is {}; `slipway db upgrade` migrates PostgreSQL clusters",
                meta.engine.as_str()
            )));
        }
        let open = |this: &Self| match this
            .open_database(key, name, meta.engine, Some(&meta.version))
            .map_err(|f| ControlError::Invalid(f.error))?
        {
            Database::Postgres(postgres) => Ok(postgres),
            Database::Redis(_) => Err(ControlError::Invalid(format!(
                "database {name} is not PostgreSQL"
            ))),
        };
        // What would be refused is refused before anything is done, the backup included.
        if let Some(to) = &request.to {
            open(self)?
                .check_upgrade(to)
                .map_err(|e| ControlError::Invalid(e.to_string()))?;
        }
        // A verified backup first: an upgrade that goes wrong can always be undone from it.
        let backup = match &request.to {
            Some(_) => Some(
                self.take_backup(key, name, "upgrade")
                    .await
                    .map_err(|e| {
                        ControlError::Invalid(format!(
                            "the backup before the upgrade failed, so nothing was changed: {e}"
                        ))
                    })?
                    .id,
            ),
            None => None,
        };
        let _guard = self.databases.ensure.lock().await;
        let _backups = self.databases.backup_lock.lock().await;
        let postgres = open(self)?;
        let request2 = request.clone();
        let done = tokio::task::spawn_blocking(move || {
            if let Some(to) = &request2.to {
                postgres.upgrade(to).map(|u| (Some(u), Vec::new()))
            } else if request2.revert {
                postgres.revert().map(|u| (Some(u), Vec::new()))
            } else {
                postgres.remove_old().map(|removed| (None, removed))
            }
        })
        .await
        .map_err(|e| ControlError::Invalid(e.to_string()))?;
        let (upgraded, removed) = match done {
            Ok(done) => done,
            Err(e) => {
                self.event(
                    key,
                    None,
                    None,
                    EventKind::DatabaseFailed,
                    format!("database {name}: {e}"),
                );
                return Err(ControlError::Invalid(e.to_string()));
            }
        };
        let outcome = match upgraded {
            Some(upgraded) => {
                let version = upgraded.database.meta().version.clone();
                let verb = if request.revert {
                    "reverted"
                } else {
                    "upgraded"
                };
                self.event(
                    key,
                    None,
                    None,
                    EventKind::DatabaseUpgraded,
                    format!(
                        "database {name} {verb} from PostgreSQL {} to {version}; the previous cluster is kept in {}",
                        upgraded.from,
                        upgraded.kept.display()
                    ),
                );
                let mut running = self
                    .databases
                    .running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                let policy = running.get(&dir).and_then(|r| r.policy);
                running.insert(
                    dir,
                    RunningDatabase {
                        key: key.clone(),
                        database: Database::Postgres(upgraded.database),
                        health: Health::Ready,
                        policy,
                    },
                );
                dto::UpgradeOutcome {
                    database: name.to_owned(),
                    from: upgraded.from,
                    version,
                    backup,
                    kept: Some(upgraded.kept.display().to_string()),
                    removed: Vec::new(),
                }
            }
            None => {
                let removed: Vec<String> =
                    removed.iter().map(|p| p.display().to_string()).collect();
                if !removed.is_empty() {
                    self.event(
                        key,
                        None,
                        None,
                        EventKind::DatabaseUpgraded,
                        format!(
                            "database {name}: the cluster kept by an upgrade was removed ({})",
                            removed.join(", ")
                        ),
                    );
                }
                dto::UpgradeOutcome {
                    database: name.to_owned(),
                    from: meta.version.clone(),
                    version: meta.version,
                    backup: None,
                    kept: None,
                    removed,
                }
            }
        };
        Ok(outcome)
    }

    /// Stops the databases of the app stored under `key` (`slipway down`), after its
    /// instances stopped. Their data stays; the next start of a service that uses one starts it.
    pub(super) async fn stop_databases(self: &Arc<Self>, key: &AppKey) {
        let dirs: Vec<PathBuf> = self
            .databases
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|(_, r)| r.key == *key)
            .map(|(d, _)| d.clone())
            .collect();
        self.stop_database_dirs(dirs).await;
    }

    /// Stops every database this server runs (a clean server stop; a crash leaves them
    /// running, and the next server adopts them).
    pub(super) async fn stop_all_databases(self: &Arc<Self>) {
        let dirs: Vec<PathBuf> = self
            .databases
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        self.stop_database_dirs(dirs).await;
    }

    async fn stop_database_dirs(self: &Arc<Self>, dirs: Vec<PathBuf>) {
        let _guard = self.databases.ensure.lock().await;
        for dir in dirs {
            let Some(db) = self
                .databases
                .running
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&dir)
            else {
                continue;
            };
            let database = db.database.clone();
            let stopped = tokio::task::spawn_blocking(move || database.stop()).await;
            let name = &db.database.meta().name;
            match stopped {
                Ok(Ok(_)) => self.event(
                    &db.key,
                    None,
                    None,
                    EventKind::DatabaseStopped,
                    format!("database {name} stopped (its data stays)"),
                ),
                Ok(Err(e)) => self.event(
                    &db.key,
                    None,
                    None,
                    EventKind::DatabaseFailed,
                    format!("database {name} could not be stopped: {e}"),
                ),
                Err(e) => tracing::error!(%e, "stopping database {name}"),
            }
        }
    }
}
