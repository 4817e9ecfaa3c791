//! A PostgreSQL major version upgrade, asked for explicitly (`slipway db upgrade`), and its
//! way back.
//!
//! `pg_upgrade` (of the new version) migrates the stopped cluster into a new one made by the
//! new `initdb` beside it, in copy mode, so the old cluster is left as it was. Then `data/`
//! becomes `data-<old major>/`, kept until [`Postgres::remove_old`], and the new cluster
//! becomes `data/`, started on the same socket: the app's URL and password do not change
//! (`pg_upgrade` carries the roles and their password hashes over). [`Postgres::revert`]
//! swaps back to the kept cluster, which has none of what was written after the upgrade.
//!
//! The app's connections fail while the cluster is down: from the stop of the old server to
//! the start of the new one (`pg_upgrade` itself, seconds for a small database; it copies the
//! data files, so it takes about as long as copying the cluster).

use std::fs;
use std::path::{Path, PathBuf};

use crate::{Error, Meta, Postgres, Result, io, postgres_bin};

/// What [`Postgres::upgrade`] and [`Postgres::revert`] did.
#[derive(Debug, Clone)]
pub struct Upgraded {
    /// The database as it now is (the new version, running).
    pub database: Postgres,
    /// The major version it had.
    pub from: String,
    /// Where the cluster it had is kept.
    pub kept: PathBuf,
}

/// The kept clusters in the database's folder: `data-<major>` (major, path), oldest first.
fn kept_clusters(dir: &Path) -> Vec<(u32, PathBuf)> {
    let mut kept: Vec<(u32, PathBuf)> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let e = e.ok()?;
            let major = e
                .file_name()
                .to_str()?
                .strip_prefix("data-")?
                .parse()
                .ok()?;
            Some((major, e.path()))
        })
        .filter(|(_, p)| p.join("PG_VERSION").exists())
        .collect();
    kept.sort();
    kept
}

fn major(version: &str) -> Option<u32> {
    version.parse().ok()
}

impl Postgres {
    /// This database with another major version's binaries (its folder and user unchanged).
    fn as_version(&self, version: &str) -> Postgres {
        Postgres {
            dir: self.dir.clone(),
            meta: Meta {
                version: version.to_owned(),
                ..self.meta.clone()
            },
            bin: postgres_bin(version),
            user: self.user.clone(),
        }
    }

    /// The clusters an upgrade kept, as (major version, folder).
    pub fn kept(&self) -> Vec<(String, PathBuf)> {
        kept_clusters(&self.dir)
            .into_iter()
            .map(|(v, p)| (v.to_string(), p))
            .collect()
    }

    /// Checks that the cluster can be upgraded to major version `to` (a newer version, its
    /// binaries installed, no cluster of an earlier upgrade still kept, a cluster to upgrade),
    /// without changing anything; returns the database as it would be.
    pub fn check_upgrade(&self, to: &str) -> Result<Postgres> {
        let name = &self.meta.name;
        let from = &self.meta.version;
        let (Some(old), Some(new)) = (major(from), major(to)) else {
            return Err(Error::Setup(format!(
                "`{to}` is not a PostgreSQL major version\n  hint: give a number, e.g. `--to 16`"
            )));
        };
        if new == old {
            return Err(Error::Setup(format!(
                "database {name} already runs PostgreSQL {from}; nothing to upgrade"
            )));
        }
        if new < old {
            return Err(Error::Setup(format!(
                "database {name} runs PostgreSQL {from}; PostgreSQL cannot move data to an older major version ({to})\n  hint: `slipway db upgrade {name} --revert` goes back to the cluster an upgrade kept, if there is one"
            )));
        }
        if let Some((v, path)) = kept_clusters(&self.dir).first() {
            return Err(Error::Setup(format!(
                "database {name} still keeps the PostgreSQL {v} cluster of an earlier upgrade in {}\n  hint: remove it first with `slipway db upgrade {name} --remove-old` (or go back to it with `--revert`)",
                path.display()
            )));
        }
        let target = self.as_version(to);
        for tool in ["postgres", "initdb", "pg_upgrade", "pg_ctl"] {
            if !target.tool(tool).exists() {
                return Err(Error::Setup(format!(
                    "PostgreSQL {to} is not installed on this host ({} has no `{tool}`), so database {name} cannot be upgraded to it\n  hint: install it (Debian: `apt-get install postgresql-{to}`), or point SLIPWAY_POSTGRES_{to}_BIN at its binaries",
                    target.bin.display()
                )));
            }
        }
        if !self.exists() {
            return Err(Error::Setup(format!(
                "database {name} has no cluster yet ({} is missing); it is made at its first start, in the version the spec asks for",
                self.data_dir().display()
            )));
        }
        Ok(target)
    }

    /// Migrates the cluster to major version `to` with `pg_upgrade` into a new cluster, keeps
    /// the old one as `data-<old major>/`, and starts the new one. On any failure before the
    /// switch, the new cluster is removed and the old one started again as it was.
    pub fn upgrade(&self, to: &str) -> Result<Upgraded> {
        let name = &self.meta.name;
        let from = self.meta.version.clone();
        let target = self.check_upgrade(to)?;
        let new = &target.meta.version;
        let staging = self.dir.join(format!("data-{new}.init"));
        self.make_cluster(&target.bin, &staging)?;
        let was_running = self.stop()?;
        let mut pg_upgrade = self.as_user(&target.tool("pg_upgrade"));
        pg_upgrade
            .arg("--old-bindir")
            .arg(&self.bin)
            .arg("--new-bindir")
            .arg(&target.bin)
            .arg("--old-datadir")
            .arg(self.data_dir())
            .arg("--new-datadir")
            .arg(&staging)
            .args(["--username", &self.user.name])
            // Its temporary servers listen in the database's own socket folder, on a port
            // of their own (50432), so the app cannot reach a cluster halfway migrated.
            .arg("--socketdir")
            .arg(self.socket_dir());
        if let Err(e) = self.run("pg_upgrade", &mut pg_upgrade) {
            let logs = staging.join("pg_upgrade_output.d");
            let detail = if logs.exists() {
                format!("\n  pg_upgrade's logs were in {}", logs.display())
            } else {
                String::new()
            };
            let _ = fs::remove_dir_all(&staging);
            if was_running {
                self.start()?;
            }
            return Err(Error::Tool(format!(
                "{e}{detail}\n  database {name} keeps running PostgreSQL {from}, as before"
            )));
        }
        let kept = self.dir.join(format!("data-{from}"));
        fs::rename(self.data_dir(), &kept).map_err(io(format!(
            "cannot rename {} to {}",
            self.data_dir().display(),
            kept.display()
        )))?;
        fs::rename(&staging, target.data_dir()).map_err(io(format!(
            "cannot rename {} to {}",
            staging.display(),
            target.data_dir().display()
        )))?;
        // Slipway removes the old cluster itself (`--remove-old`), never this script.
        let _ = fs::remove_file(self.dir.join("delete_old_cluster.sh"));
        target.write_meta()?;
        // The spec's settings go with the data (pg_upgrade carries only the data).
        if let Ok(text) = fs::read_to_string(kept.join(crate::settings::SETTINGS_FILE)) {
            target.write_settings_text(&text)?;
        }
        target.start()?;
        // pg_upgrade does not carry the planner's statistics over: gather them now, as its
        // own output advises, so the first queries are not planned blind.
        let mut analyze = target.as_user(&target.tool("vacuumdb"));
        analyze
            .arg("--host")
            .arg(target.socket_dir())
            .args(["--port", &crate::PG_PORT.to_string()])
            .args(["--username", &self.user.name, "--all", "--analyze-only"]);
        if target.tool("vacuumdb").exists() {
            target.run("vacuumdb", &mut analyze)?;
        }
        Ok(Upgraded {
            database: target,
            from,
            kept,
        })
    }

    /// Goes back to the cluster the last upgrade kept: stops this one, keeps it as
    /// `data-<its major>/`, and starts the kept one as `data/`. What was written since the
    /// upgrade is not in the kept cluster.
    pub fn revert(&self) -> Result<Upgraded> {
        let name = &self.meta.name;
        let from = self.meta.version.clone();
        let Some((version, path)) = kept_clusters(&self.dir).pop() else {
            return Err(Error::Setup(format!(
                "database {name} keeps no cluster of an earlier version to go back to (no data-<version> folder in {})",
                self.dir.display()
            )));
        };
        let target = self.as_version(&version.to_string());
        if !target.tool("postgres").exists() {
            return Err(Error::Setup(format!(
                "the kept cluster of database {name} is PostgreSQL {version}, which is not installed on this host ({} has no `postgres`)\n  hint: install it, or point SLIPWAY_POSTGRES_{version}_BIN at its binaries",
                target.bin.display()
            )));
        }
        self.stop()?;
        let kept = self.dir.join(format!("data-{from}"));
        fs::rename(self.data_dir(), &kept).map_err(io(format!(
            "cannot rename {} to {}",
            self.data_dir().display(),
            kept.display()
        )))?;
        fs::rename(&path, target.data_dir()).map_err(io(format!(
            "cannot rename {} to {}",
            path.display(),
            target.data_dir().display()
        )))?;
        target.write_meta()?;
        target.start()?;
        Ok(Upgraded {
            database: target,
            from,
            kept,
        })
    }

    /// Removes the clusters earlier upgrades kept; returns the folders removed.
    pub fn remove_old(&self) -> Result<Vec<PathBuf>> {
        let mut removed = Vec::new();
        for (_, path) in kept_clusters(&self.dir) {
            fs::remove_dir_all(&path).map_err(io(format!("cannot remove {}", path.display())))?;
            removed.push(path);
        }
        Ok(removed)
    }
}
