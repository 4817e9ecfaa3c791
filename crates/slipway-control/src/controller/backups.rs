//! Backups of the managed databases: taken on demand (`slipway backup create`) and on the
//! spec's schedule (`backups: { every, keep }`), each verified by a restore into a scratch
//! instance before it counts, stored with a manifest, pruned per `keep`; verified again and
//! restored on demand. A failure is loud: a `backup.failed` event, the
//! `slipway_backup_failures` counter, a red line in `status`, an error answer (a non-zero
//! CLI exit).
//!
//! Layout: `<data_dir>/backups/<app>/<environment>/<id>/` holds `manifest.json` and the
//! dump (`<database>.dump`); a backup is written in `.partial-<id>/` and renamed once it
//! verified, so a crash never leaves a backup that looks complete. Scratch instances live in
//! `<data_dir>/backups/.scratch/` for the length of a verification.

use std::os::unix::fs::PermissionsExt;
use std::time::SystemTime;

use slipway_databases::backup;
use slipway_databases::{Database, Engine, OsUser};
use slipway_spec::{BackupPolicy, DatabaseSpec, DatabaseUse};

use super::*;

/// How often the schedule is looked at.
const SCHEDULE_TICK: Duration = Duration::from_secs(1);

/// What is known of a database's backups.
#[derive(Debug, Clone, Default)]
pub(super) struct BackupRecord {
    /// The last attempt (ms since the epoch), for the schedule.
    last_attempt: Option<u64>,
    /// The last success.
    last_success: Option<(u64, String)>,
    /// The last failure, if after the last success.
    failing: Option<String>,
}

/// A `uses` entry for a database the controller runs for a backup or a restore (no variable:
/// it does not change the schedule the revisions set).
fn internal_use(name: &str, engine: Engine, version: &str) -> DatabaseUse {
    DatabaseUse {
        name: name.to_owned(),
        database: DatabaseSpec {
            engine: match engine {
                Engine::Postgres => slipway_spec::Engine::Postgres,
                Engine::Redis => slipway_spec::Engine::Redis,
            },
            version: Some(version.to_owned()),
            env: String::new(),
            backups: None,
            settings: Default::default(),
        },
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Makes a folder (and its parents) with `mode` where missing.
fn make_dir(dir: &Path, mode: u32) -> Result<(), String> {
    if !dir.exists() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot set the mode of {}: {e}", dir.display()))
}

// === impl Controller (backups) ===

impl Controller {
    fn backups_root(&self) -> PathBuf {
        self.config.data_dir.join("backups")
    }

    /// The folder of the backups of the app stored under `key`.
    fn backups_dir(&self, key: &AppKey) -> PathBuf {
        self.backups_root().join(key.app()).join(key.environment())
    }

    /// The backups of the app stored under `key`, newest first (unreadable manifests are
    /// skipped).
    pub fn backups(&self, key: &AppKey) -> Result<Vec<dto::BackupInfo>> {
        let mut all: Vec<dto::BackupInfo> = std::fs::read_dir(self.backups_dir(key))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .filter_map(|e| {
                let text = std::fs::read(e.path().join("manifest.json")).ok()?;
                serde_json::from_slice(&text).ok()
            })
            .collect();
        all.sort_by_key(|b| std::cmp::Reverse(b.created_unix_ms));
        Ok(all)
    }

    /// One backup's manifest.
    fn backup(&self, key: &AppKey, id: &str) -> Result<dto::BackupInfo> {
        let (app, environment) = (key.app(), key.environment());
        let valid = !id.is_empty()
            && id.len() <= 128
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'))
            && !id.starts_with('.');
        let path = self.backups_dir(key).join(id).join("manifest.json");
        let text = (if valid { std::fs::read(&path).ok() } else { None }).ok_or_else(|| {
            ControlError::NotFound(format!(
                "app {app} has no backup `{id}` in environment {environment}; `slipway backup list --app {app} --env {environment}` shows its backups"
            ))
        })?;
        serde_json::from_slice(&text).map_err(|e| {
            ControlError::Invalid(format!(
                "the manifest {} cannot be read ({e}); the backup is damaged",
                path.display()
            ))
        })
    }

    /// The databases of the app stored under `key`: (name, engine, version) from their folders.
    fn databases_of(&self, key: &AppKey) -> Vec<(String, Engine, String)> {
        let (app, environment) = (key.app(), key.environment());
        let root = self
            .config
            .data_dir
            .join("databases")
            .join(app)
            .join(environment);
        let mut out: Vec<(String, Engine, String)> = std::fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| slipway_databases::read_meta(&e.path()).ok().flatten())
            .map(|m| (m.name, m.engine, m.version))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Backs up database `name` of `key` (all of them when `None`) now; fails if any backup
    /// fails, after trying every one.
    pub async fn create_backups(
        &self,
        key: &AppKey,
        name: Option<&str>,
    ) -> Result<Vec<dto::BackupInfo>> {
        let (app, environment) = (key.app(), key.environment());
        let all = self.databases_of(key);
        let chosen: Vec<String> = match name {
            Some(name) => {
                if !all.iter().any(|(n, _, _)| n == name) {
                    return Err(ControlError::NotFound(format!(
                        "app {app} has no database `{name}` in environment {environment}; a database is made when a service that `uses` it first starts"
                    )));
                }
                vec![name.to_owned()]
            }
            None => all.iter().map(|(n, _, _)| n.clone()).collect(),
        };
        if chosen.is_empty() {
            return Err(ControlError::NotFound(format!(
                "app {app} has no database in environment {environment}"
            )));
        }
        let mut done = Vec::new();
        let mut failed = Vec::new();
        for name in chosen {
            match self.take_backup(key, &name, "manual").await {
                Ok(info) => done.push(info),
                Err(e) => failed.push(e),
            }
        }
        if failed.is_empty() {
            Ok(done)
        } else {
            Err(ControlError::Invalid(failed.join("\n")))
        }
    }

    /// Takes, verifies and stores one backup, records the outcome (event, metrics, status),
    /// then prunes per the database's `keep`.
    pub(super) async fn take_backup(
        &self,
        key: &AppKey,
        name: &str,
        kind: &str,
    ) -> Result<dto::BackupInfo, String> {
        let _guard = self.databases.backup_lock.lock().await;
        let dir = self.database_dir(key, name);
        let started = now_ms();
        self.backup_record(&dir, |r| r.last_attempt = Some(started));
        let outcome = self.take_backup_locked(key, name, kind).await;
        let labels = vec![
            ("app".to_owned(), key.to_string()),
            ("database".to_owned(), name.to_owned()),
        ];
        match &outcome {
            Ok(info) => {
                self.backup_record(&dir, |r| {
                    r.last_success = Some((info.created_unix_ms, info.created_at.clone()));
                    r.failing = None;
                });
                let size: u64 = info.files.iter().map(|f| f.size).sum();
                self.event(
                    key,
                    None,
                    None,
                    EventKind::BackupSucceeded,
                    format!(
                        "{kind} backup {} of database {name}: {size} bytes, {} tables, verified by a restore in {:.1}s",
                        info.id,
                        info.tables.len(),
                        info.verify_seconds
                    ),
                );
                self.prune_backups(key, name).await;
            }
            Err(e) => {
                self.backup_record(&dir, |r| r.failing = Some(e.clone()));
                self.counters.inc("slipway_backup_failures", labels);
                self.event(
                    key,
                    None,
                    None,
                    EventKind::BackupFailed,
                    format!("{kind} backup of database {name} failed: {e}"),
                );
            }
        }
        outcome
    }

    fn backup_record(&self, dir: &Path, change: impl FnOnce(&mut BackupRecord)) {
        let mut records = self
            .databases
            .backups
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        change(records.entry(dir.to_path_buf()).or_default());
    }

    async fn take_backup_locked(
        &self,
        key: &AppKey,
        name: &str,
        kind: &str,
    ) -> Result<dto::BackupInfo, String> {
        let (app, environment) = (key.app(), key.environment());
        let dir = self.database_dir(key, name);
        let meta = slipway_databases::read_meta(&dir)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("database {name} does not exist"))?;
        // It must run: started here if it was stopped (`down`).
        let used = internal_use(name, meta.engine, &meta.version);
        self.ensure_database(key, &used)
            .await
            .map_err(|f| f.error)?;
        let user = OsUser::for_databases().map_err(|e| e.to_string())?;
        let database = Database::open(meta.engine, &dir, name, Some(&meta.version), user.clone())
            .map_err(|e| e.to_string())?;
        let password = self.database_password(key, name).map_err(|f| f.error)?;
        let created_at = slipway_state::now();
        let created_unix_ms = now_ms();
        let id = format!(
            "{name}-{}",
            created_at
                .replace([':', '-'], "")
                .trim_end_matches('Z')
                .to_owned()
                + "Z"
        );
        make_dir(&self.backups_root(), 0o711)?;
        make_dir(&self.backups_root().join(app), 0o700)?;
        let folder = self.backups_dir(key);
        make_dir(&folder, 0o700)?;
        let scratch_root = self.backups_root().join(".scratch");
        make_dir(&scratch_root, 0o711)?;
        let partial = folder.join(format!(".partial-{id}"));
        make_dir(&partial, 0o700)?;
        let file = partial.join(match meta.engine {
            Engine::Postgres => format!("{name}.dump"),
            Engine::Redis => format!("{name}.rdb"),
        });
        let scratch = scratch_root.join(&id[id.len().saturating_sub(12)..]);
        let version = meta.version.clone();
        let dump_file = file.clone();
        let work = tokio::task::spawn_blocking(move || {
            let t = Instant::now();
            let facts = match &database {
                Database::Postgres(postgres) => {
                    postgres.dump(&dump_file).map_err(|e| e.to_string())?
                }
                Database::Redis(redis) => {
                    let keys = redis
                        .snapshot(&password, &dump_file)
                        .map_err(|e| e.to_string())?;
                    backup::DumpFacts {
                        tables: [("keys".to_owned(), keys)].into(),
                        server_version: version.clone(),
                    }
                }
            };
            let dump_seconds = t.elapsed().as_secs_f64();
            let file_facts = backup::file_facts(&dump_file).map_err(|e| e.to_string())?;
            let t = Instant::now();
            match &database {
                Database::Postgres(_) => {
                    backup::verify_dump(&dump_file, &facts.tables, &version, &scratch, user)
                        .map(|_| ())
                }
                Database::Redis(_) => slipway_databases::redis::verify_snapshot(
                    &dump_file,
                    facts.tables["keys"],
                    &scratch,
                    user,
                )
                .map(|_| ()),
            }
            .map_err(|e| format!("the backup does not verify: {e}"))?;
            Ok::<_, String>((facts, file_facts, dump_seconds, t.elapsed().as_secs_f64()))
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r);
        let (facts, file_facts, dump_seconds, verify_seconds) = match work {
            Ok(done) => done,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&partial);
                return Err(e);
            }
        };
        let mut revisions = Vec::new();
        for service in self.store.services(key.as_str()).unwrap_or_default() {
            for t in self
                .store
                .traffic(key.as_str(), &service)
                .unwrap_or_default()
            {
                revisions.push(dto::ServingRevision {
                    service: service.clone(),
                    revision: t.revision,
                    percent: t.percent,
                });
            }
        }
        let info = dto::BackupInfo {
            id: id.clone(),
            app: app.to_owned(),
            environment: environment.to_owned(),
            database: name.to_owned(),
            engine: meta.engine.as_str().into(),
            version: meta.version,
            server_version: facts.server_version,
            kind: kind.to_owned(),
            created_at,
            created_unix_ms,
            files: vec![dto::BackupFile {
                name: file_facts.name,
                size: file_facts.size,
                sha256: file_facts.sha256,
            }],
            keys: (meta.engine == Engine::Redis).then(|| facts.tables["keys"]),
            tables: if meta.engine == Engine::Redis {
                BTreeMap::new()
            } else {
                facts.tables
            },
            revisions,
            verified_at: slipway_state::now(),
            dump_seconds,
            verify_seconds,
        };
        let manifest = serde_json::to_vec_pretty(&info).map_err(|e| e.to_string())?;
        let written = std::fs::write(partial.join("manifest.json"), manifest)
            .and_then(|()| std::fs::rename(&partial, folder.join(&id)));
        if let Err(e) = written {
            let _ = std::fs::remove_dir_all(&partial);
            return Err(format!(
                "cannot store backup {id} in {}: {e}",
                folder.display()
            ));
        }
        Ok(info)
    }

    /// Deletes the backups of `name` beyond its policy's `keep` (none without a policy).
    async fn prune_backups(&self, key: &AppKey, name: &str) {
        let dir = self.database_dir(key, name);
        let Some(policy) = self.database_policy(&dir) else {
            return;
        };
        let Ok(all) = self.backups(key) else {
            return;
        };
        let mine: Vec<(String, u64)> = all
            .iter()
            .filter(|b| b.database == name)
            .map(|b| (b.id.clone(), b.created_unix_ms))
            .collect();
        let gone = slipway_databases::retention::to_prune(&mine, policy.keep as usize);
        for id in &gone {
            let _ = std::fs::remove_dir_all(self.backups_dir(key).join(id));
        }
        if !gone.is_empty() {
            self.event(
                key,
                None,
                None,
                EventKind::BackupPruned,
                format!(
                    "{} backup(s) of database {name} deleted to keep {}: {}",
                    gone.len(),
                    policy.keep,
                    gone.join(", ")
                ),
            );
        }
    }

    /// Checks a stored backup again: its files against the manifest (size, SHA-256), then a
    /// restore into a scratch instance with the manifest's row counts.
    pub async fn verify_backup(&self, key: &AppKey, id: &str) -> Result<dto::BackupInfo> {
        let info = self.backup(key, id)?;
        let folder = self.backups_dir(key).join(id);
        let scratch = self
            .backups_root()
            .join(".scratch")
            .join(format!("v-{}", &id[id.len().saturating_sub(10)..]));
        let check = info.clone();
        let _guard = self.databases.backup_lock.lock().await;
        let outcome = tokio::task::spawn_blocking(move || {
            for f in &check.files {
                backup::check_file(
                    &folder,
                    &backup::FileFacts {
                        name: f.name.clone(),
                        size: f.size,
                        sha256: f.sha256.clone(),
                    },
                )
                .map_err(|e| e.to_string())?;
            }
            make_dir(scratch.parent().unwrap_or(&scratch), 0o711)?;
            let user = OsUser::for_databases().map_err(|e| e.to_string())?;
            let file = folder.join(&check.files[0].name);
            match check.keys {
                Some(keys) => {
                    slipway_databases::redis::verify_snapshot(&file, keys, &scratch, user)
                        .map(|_| ())
                }
                None => backup::verify_dump(&file, &check.tables, &check.version, &scratch, user)
                    .map(|_| ()),
            }
            .map_err(|e| format!("{}: {e}", file.display()))
        })
        .await
        .map_err(|e| ControlError::Invalid(e.to_string()))?;
        match outcome {
            Ok(()) => {
                self.event(
                    key,
                    None,
                    None,
                    EventKind::BackupVerified,
                    format!("backup {id} verified: files intact, restore matches its row counts"),
                );
                Ok(info)
            }
            Err(e) => {
                self.event(
                    key,
                    None,
                    None,
                    EventKind::BackupFailed,
                    format!("backup {id} does not verify: {e}"),
                );
                Err(ControlError::Invalid(format!(
                    "backup {id} does not verify: {e}"
                )))
            }
        }
    }

    /// Restores a backup into its database (or into `to`, made if missing, leaving the
    /// original alone), after a safety backup of what is there. The services keep running:
    /// their connections to the database are ended (`DROP DATABASE … WITH (FORCE)`), their
    /// requests fail while the restore runs, and they reconnect after.
    pub async fn restore_backup(
        &self,
        key: &AppKey,
        id: &str,
        to: Option<&str>,
    ) -> Result<dto::RestoreOutcome> {
        let info = self.backup(key, id)?;
        let target = to.unwrap_or(&info.database).to_owned();
        slipway_core::names::check_name("database", &target).map_err(ControlError::Invalid)?;
        let folder = self.backups_dir(key).join(id);
        for f in &info.files {
            backup::check_file(
                &folder,
                &backup::FileFacts {
                    name: f.name.clone(),
                    size: f.size,
                    sha256: f.sha256.clone(),
                },
            )
            .map_err(|e| {
                ControlError::Invalid(format!("backup {id} is damaged, nothing was restored: {e}"))
            })?;
        }
        let exists = self.databases_of(key).iter().any(|(n, _, _)| *n == target);
        let safety_backup = if exists {
            let safety = self.take_backup(key, &target, "safety").await.map_err(|e| {
                ControlError::Invalid(format!(
                    "the safety backup of database {target} failed, so nothing was restored: {e}"
                ))
            })?;
            Some(safety.id)
        } else {
            None
        };
        let engine = if info.keys.is_some() {
            Engine::Redis
        } else {
            Engine::Postgres
        };
        let used = internal_use(&target, engine, &info.version);
        let _guard = self.databases.backup_lock.lock().await;
        self.ensure_database(key, &used)
            .await
            .map_err(|f| ControlError::Invalid(f.error))?;
        let user = OsUser::for_databases().map_err(|e| ControlError::Invalid(e.to_string()))?;
        let database = Database::open(
            engine,
            &self.database_dir(key, &target),
            &target,
            Some(&info.version),
            user,
        )
        .map_err(|e| ControlError::Invalid(e.to_string()))?;
        let password = self
            .database_password(key, &target)
            .map_err(|f| ControlError::Invalid(f.error))?;
        let file = folder.join(&info.files[0].name);
        let (restored, keys) = tokio::task::spawn_blocking(move || match &database {
            Database::Postgres(postgres) => {
                postgres.restore(&file)?;
                Ok((postgres.table_counts(postgres.meta().name.as_str())?, None))
            }
            Database::Redis(redis) => {
                redis.load_snapshot(&password, &file)?;
                Ok((BTreeMap::new(), Some(redis.key_count(&password)?)))
            }
        })
        .await
        .map_err(|e| ControlError::Invalid(e.to_string()))?
        .map_err(|e: slipway_databases::Error| {
            ControlError::Invalid(format!("restore of backup {id} into {target} failed: {e}"))
        })?;
        self.event(
            key,
            None,
            None,
            EventKind::BackupRestored,
            format!(
                "backup {id} restored into database {target}{}",
                safety_backup
                    .as_ref()
                    .map(|s| format!(" (safety backup first: {s})"))
                    .unwrap_or_default()
            ),
        );
        Ok(dto::RestoreOutcome {
            database: target,
            safety_backup,
            tables: restored,
            keys,
        })
    }

    /// Backs up Slipway's own state (see [`crate::platform`]).
    pub async fn platform_backup(&self) -> Result<dto::PlatformBackup> {
        let store = self.store.clone();
        let data_dir = self.config.data_dir.clone();
        let _guard = self.databases.backup_lock.lock().await;
        tokio::task::spawn_blocking(move || crate::platform::backup(&store, &data_dir))
            .await
            .map_err(|e| ControlError::Invalid(e.to_string()))?
            .map_err(|e| ControlError::Invalid(format!("the platform backup failed: {e:#}")))
    }

    /// The backup policy of the running database in `dir`, from the revision that started it.
    fn database_policy(&self, dir: &Path) -> Option<BackupPolicy> {
        self.databases
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(dir)
            .and_then(|r| r.policy)
    }

    /// How the backups of the database in `dir` are doing, for `status`.
    pub(super) fn backup_health(&self, dir: &Path) -> dto::BackupHealth {
        let records = self
            .databases
            .backups
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let record = records.get(dir).cloned().unwrap_or_default();
        dto::BackupHealth {
            last_success: record.last_success.map(|(_, at)| at),
            failing: record.failing,
        }
    }

    /// `slipway_backup_last_success_timestamp_seconds`, by app and database.
    pub(super) fn backup_gauges(&self) -> Vec<(crate::metrics::Labels, i64)> {
        let running = self
            .databases
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(d, r)| (d.clone(), r.key.clone(), r.database.meta().name.clone()))
            .collect::<Vec<_>>();
        let records = self
            .databases
            .backups
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        running
            .into_iter()
            .filter_map(|(dir, key, name)| {
                let (ms, _) = records.get(&dir)?.last_success.clone()?;
                Some((
                    vec![
                        ("app".to_owned(), key.to_string()),
                        ("database".to_owned(), name),
                    ],
                    (ms / 1000) as i64,
                ))
            })
            .collect()
    }

    /// Runs scheduled backups (started once, by `recover`): every second, each running
    /// database whose revision has a policy is backed up once `every` has passed since its
    /// last attempt (or its newest stored backup, after a restart).
    pub(super) fn start_backup_schedule(self: &Arc<Self>) {
        let this = self.clone();
        self.spawn(async move {
            loop {
                tokio::select! {
                    _ = this.cancel.cancelled() => return,
                    _ = tokio::time::sleep(SCHEDULE_TICK) => {}
                }
                let scheduled: Vec<(PathBuf, AppKey, String, BackupPolicy)> = this
                    .databases
                    .running
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .iter()
                    .filter_map(|(d, r)| {
                        Some((
                            d.clone(),
                            r.key.clone(),
                            r.database.meta().name.clone(),
                            r.policy?,
                        ))
                    })
                    .collect();
                for (dir, key, name, policy) in scheduled {
                    let known = this
                        .databases
                        .backups
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(&dir)
                        .and_then(|r| r.last_attempt);
                    let last = known.or_else(|| {
                        let newest = this
                            .backups(&key)
                            .ok()?
                            .into_iter()
                            .find(|b| b.database == name)?;
                        this.backup_record(&dir, |r| {
                            r.last_success =
                                Some((newest.created_unix_ms, newest.created_at.clone()));
                        });
                        Some(newest.created_unix_ms)
                    });
                    let every = policy.every.as_millis() as u64;
                    if slipway_databases::retention::due(last, now_ms(), every) {
                        let _ = this.take_backup(&key, &name, "scheduled").await;
                    }
                }
            }
        });
    }
}
