//! A database's settings from the spec (`databases.<name>.settings`), applied so that a
//! change says what it will do before doing it.
//!
//! PostgreSQL: the settings live in `slipway.settings.conf` in the cluster's data folder,
//! which `postgresql.conf` includes (`include_if_exists`); Slipway owns that file and writes
//! it atomically. Planning a change asks PostgreSQL itself: the candidate file is checked by
//! `postgres -C` (the server binary reading the configuration as a start would, without
//! touching the running server), which refuses an invalid value with PostgreSQL's own
//! message, and `pg_settings.context` says which changes need a restart (`postmaster`). The
//! plan is pure data ([`SettingsPlan`]); the caller announces it, then applies it: a reload
//! (`pg_reload_conf()`), and `pg_ctl restart -m fast` only when a change needs it.
//!
//! The diff and the wording of what is announced are pure ([`diff`], [`SettingsPlan::describe`]).

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Instant;

use crate::{Error, Postgres, Result, io};

/// The file Slipway writes the settings into, in the cluster's data folder.
pub const SETTINGS_FILE: &str = "slipway.settings.conf";

/// The line of `postgresql.conf` that reads it.
pub(crate) const INCLUDE_LINE: &str = "include_if_exists = 'slipway.settings.conf'";

/// How long the app's connections are down for a restart, as announced: a fast shutdown
/// and a start of a cluster on this kind of host take about a second each.
pub const RESTART_ESTIMATE_SECS: u64 = 2;

/// One setting whose value a deploy changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The setting's name.
    pub name: String,
    /// Its value now, as the server shows it (`SHOW`); `None` when the server does not know
    /// it (not running, or an extension's setting not loaded).
    pub from: Option<String>,
    /// The value the spec asks for; `None` when the spec no longer sets it (back to the
    /// default).
    pub to: Option<String>,
    /// Whether it takes a restart to take effect (PostgreSQL's `postmaster` context).
    pub restart: bool,
}

/// What applying the spec's settings to a database does, decided before anything changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsPlan {
    /// The database's name.
    pub database: String,
    /// The settings whose value changes, by name.
    pub changes: Vec<Change>,
    /// Whether the database runs (a stopped one takes the file at its next start).
    pub running: bool,
    /// The settings to write.
    pub(crate) settings: BTreeMap<String, String>,
}

/// How a plan was applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Nothing to do.
    Unchanged,
    /// The file was written; the database is stopped and reads it when it starts.
    Written,
    /// The server reloaded its configuration: no connection dropped.
    Reloaded,
    /// The server was restarted; the app's connections were down this long.
    Restarted {
        /// Milliseconds from the restart's start to accepting connections again.
        downtime_ms: u64,
    },
}

/// A setting the spec set, as the running server has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    /// The setting's name.
    pub name: String,
    /// The value written from the spec.
    pub value: String,
    /// What the server shows (`SHOW`); `None` when it is stopped.
    pub now: Option<String>,
    /// Whether the server waits for a restart to take the written value.
    pub pending_restart: bool,
}

/// What the running server says of one setting.
struct ServerSetting {
    /// As `SHOW` prints it.
    shown: String,
    /// In the base unit (`pg_settings.setting`).
    raw: String,
    /// `pg_settings.context`: `postmaster` needs a restart.
    context: String,
    /// `pg_settings.pending_restart`.
    pending: bool,
}

/// The names whose value differs between `before` and `after`, with both values.
pub fn diff(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
) -> Vec<(String, Option<String>, Option<String>)> {
    let mut names: Vec<&String> = before.keys().chain(after.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|n| before.get(*n) != after.get(*n))
        .map(|n| (n.clone(), before.get(n).cloned(), after.get(n).cloned()))
        .collect()
}

// === impl SettingsPlan ===

impl SettingsPlan {
    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Whether a change needs the database restarted (and it runs).
    pub fn needs_restart(&self) -> bool {
        self.running && self.changes.iter().any(|c| c.restart)
    }

    /// One line per change, saying what it will do: `database db: max_connections 100 ->
    /// 200 needs a restart: the app's connections drop for about 2 s`, `database db:
    /// work_mem 4MB -> 16MB is applied in place (no connection drops)`.
    pub fn describe(&self) -> Vec<String> {
        self.changes
            .iter()
            .map(|c| {
                let from = c.from.as_deref().unwrap_or("(unset)");
                let to = c.to.as_deref().unwrap_or("(default)");
                let what = if !self.running {
                    "takes effect when the database starts (it is stopped)".to_owned()
                } else if c.restart {
                    format!(
                        "needs a restart: the app's connections drop for about {RESTART_ESTIMATE_SECS} s"
                    )
                } else {
                    "is applied in place (no connection drops)".to_owned()
                };
                format!("database {}: {} {from} -> {to} {what}", self.database, c.name)
            })
            .collect()
    }
}

/// The text of the settings file: one `name = 'value'` line each, quotes doubled.
pub(crate) fn render(settings: &BTreeMap<String, String>) -> String {
    let mut text = String::from(
        "# Written by Slipway from `databases.<name>.settings` in slipway.yaml; edits are overwritten.\n",
    );
    for (name, value) in settings {
        text.push_str(&format!("{name} = '{}'\n", value.replace('\'', "''")));
    }
    text
}

/// The settings of a file written by [`render`].
pub(crate) fn parse(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.split_once(" = ")?;
            let value = value.strip_prefix('\'')?.strip_suffix('\'')?;
            Some((name.to_owned(), value.replace("''", "'")))
        })
        .collect()
}

/// The text of a Redis settings file: one `name "value"` line each (`\` and `"` escaped).
pub(crate) fn render_redis(settings: &BTreeMap<String, String>) -> String {
    let mut text = String::from(
        "# Written by Slipway from `databases.<name>.settings` in slipway.yaml; edits are overwritten.\n",
    );
    for (name, value) in settings {
        let value = value.replace('\\', "\\\\").replace('"', "\\\"");
        text.push_str(&format!("{name} \"{value}\"\n"));
    }
    text
}

/// The settings of a file written by [`render_redis`].
pub(crate) fn parse_redis(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name, value) = l.split_once(' ')?;
            let value = value.strip_prefix('"')?.strip_suffix('"')?;
            let mut unescaped = String::with_capacity(value.len());
            let mut chars = value.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => unescaped.extend(chars.next()),
                    c => unescaped.push(c),
                }
            }
            Some((name.to_owned(), unescaped))
        })
        .collect()
}

/// PostgreSQL's own message in the output of a server binary (`postgres -C`), without the
/// log line prefix, the level of each line (its hints kept as `HINT:`) and the closing line
/// that only says the file has errors: `invalid value for parameter "work_mem": "16XB" /
/// HINT: Valid units …`.
pub(crate) fn server_message(output: &str) -> String {
    let lines: Vec<String> = output
        .lines()
        .map(|l| match l.find("] ") {
            Some(at) if l[..at].contains(" [") => l[at + 2..].trim(),
            _ => l.trim(),
        })
        .filter(|l| !l.is_empty())
        .filter(|l| !l.contains("skipping missing configuration file"))
        .filter(|l| !(l.starts_with("FATAL:") && l.contains("contains errors")))
        .map(|l| {
            for level in ["LOG:", "FATAL:", "ERROR:", "WARNING:"] {
                if let Some(rest) = l.strip_prefix(level) {
                    return rest.trim().to_owned();
                }
            }
            match l.strip_prefix("HINT:") {
                Some(rest) => format!("HINT: {}", rest.trim()),
                None => l.to_owned(),
            }
        })
        .collect();
    lines.join(" / ")
}

// === impl Postgres (settings) ===

impl Postgres {
    /// The settings file in the cluster's data folder.
    pub fn settings_file(&self) -> PathBuf {
        self.data_dir().join(SETTINGS_FILE)
    }

    /// The settings the file holds now (what was last applied).
    pub fn written_settings(&self) -> Result<BTreeMap<String, String>> {
        match fs::read_to_string(self.settings_file()) {
            Ok(text) => Ok(parse(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(io(format!(
                "cannot read {}",
                self.settings_file().display()
            ))(e)),
        }
    }

    /// Writes `text` as the settings file: a temporary file beside it, then a rename, so the
    /// server never reads half a file.
    pub(crate) fn write_settings_text(&self, text: &str) -> Result<()> {
        let path = self.settings_file();
        let tmp = self.data_dir().join(format!(".{SETTINGS_FILE}.tmp"));
        fs::write(&tmp, text).map_err(io(format!("cannot write {}", tmp.display())))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))
            .map_err(io(format!("cannot set the mode of {}", tmp.display())))?;
        self.user.own(&tmp)?;
        fs::rename(&tmp, &path).map_err(io(format!(
            "cannot rename {} to {}",
            tmp.display(),
            path.display()
        )))
    }

    /// Makes sure `postgresql.conf` reads the settings file (clusters made before settings
    /// existed do not); appending the line changes nothing until the file exists.
    fn ensure_include(&self) -> Result<()> {
        let conf = self.data_dir().join("postgresql.conf");
        let text =
            fs::read_to_string(&conf).map_err(io(format!("cannot read {}", conf.display())))?;
        if text.lines().any(|l| l.trim() == INCLUDE_LINE) {
            return Ok(());
        }
        let text = format!(
            "{text}\n# Slipway: the settings of slipway.yaml (`databases.<name>.settings`).\n{INCLUDE_LINE}\n"
        );
        fs::write(&conf, text).map_err(io(format!("cannot write {}", conf.display())))
    }

    /// Reads the configuration as a start would, with the server binary (`postgres -C`),
    /// leaving the running server alone; returns the value `name` would have (in the
    /// server's base unit), or PostgreSQL's message for what is wrong.
    fn configured_value(&self, name: &str) -> Result<String> {
        let out = self
            .as_user(&self.tool("postgres"))
            .arg("-D")
            .arg(self.data_dir())
            .arg("-C")
            .arg(name)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .map_err(io(format!(
                "cannot run {}",
                self.tool("postgres").display()
            )))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
        } else {
            Err(Error::Setup(format!(
                "PostgreSQL refuses these settings: {}\n  hint: fix `databases.{}.settings` in slipway.yaml; nothing was changed",
                server_message(&String::from_utf8_lossy(&out.stderr)),
                self.meta.name
            )))
        }
    }

    /// What the running server says of `names`, by name.
    fn server_settings(&self, names: &[&str]) -> Result<BTreeMap<String, ServerSetting>> {
        let sql = "SELECT name, current_setting(name), setting, context, pending_restart FROM pg_settings WHERE name = ANY (string_to_array(:'names', ','))";
        let out = self.psql_admin_fields("postgres", sql, &[("names", &names.join(","))])?;
        Ok(out
            .into_iter()
            .filter_map(|row| match row.as_slice() {
                [name, shown, raw, context, pending] => Some((
                    name.clone(),
                    ServerSetting {
                        shown: shown.clone(),
                        raw: raw.clone(),
                        context: context.clone(),
                        pending: pending == "t",
                    },
                )),
                _ => None,
            })
            .collect())
    }

    /// Rows of a query, fields split on the unit separator.
    fn psql_admin_fields(
        &self,
        db: &str,
        sql: &str,
        vars: &[(&str, &str)],
    ) -> Result<Vec<Vec<String>>> {
        let sql = format!("\\pset fieldsep '\\037'\n{sql};\n");
        let out = self.psql_admin(db, &sql, vars)?;
        Ok(out
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.split('\u{1f}').map(str::to_owned).collect())
            .collect())
    }

    /// Decides what applying `settings` does, changing nothing: the candidate file is
    /// checked by PostgreSQL (an invalid value is refused with its message), and each
    /// changed setting is compared with the running server's value and context.
    ///
    /// # Guarantees
    /// The settings file is as it was when this returns, whatever it returns.
    pub fn plan_settings(&self, settings: &BTreeMap<String, String>) -> Result<SettingsPlan> {
        let before = self.written_settings()?;
        let changed = diff(&before, settings);
        let mut plan = SettingsPlan {
            database: self.meta.name.clone(),
            changes: Vec::new(),
            running: self.running()?,
            settings: settings.clone(),
        };
        if changed.is_empty() {
            return Ok(plan);
        }
        self.ensure_include()?;
        let previous = fs::read_to_string(self.settings_file()).ok();
        self.write_settings_text(&render(settings))?;
        let configured: Result<Vec<(String, String)>> = changed
            .iter()
            .map(|(name, _, _)| Ok((name.clone(), self.configured_value(name)?)))
            .collect();
        // The file goes back as it was before anything else: planning changes nothing.
        let restored = match &previous {
            Some(text) => self.write_settings_text(text),
            None => fs::remove_file(self.settings_file()).map_err(io(format!(
                "cannot remove {}",
                self.settings_file().display()
            ))),
        };
        let configured = configured?;
        restored?;
        let names: Vec<&str> = changed.iter().map(|(n, _, _)| n.as_str()).collect();
        let server = if plan.running {
            self.server_settings(&names)?
        } else {
            BTreeMap::new()
        };
        for ((name, _, to), (_, value)) in changed.iter().zip(configured) {
            let known = server.get(name);
            // The same value in other words (`16384kB` for `16MB`) changes nothing.
            if known.is_some_and(|k| k.raw == value && !k.pending) {
                continue;
            }
            plan.changes.push(Change {
                name: name.clone(),
                from: known.map(|k| k.shown.clone()),
                to: to.clone(),
                restart: known.is_some_and(|k| k.context == "postmaster"),
            });
        }
        Ok(plan)
    }

    /// Applies a plan made by [`Postgres::plan_settings`]: writes the file, reloads, and
    /// restarts (`pg_ctl restart -m fast`) only when a change needs it. A reload that
    /// PostgreSQL does not accept puts the previous file back and reloads again.
    pub fn apply_settings(&self, plan: &SettingsPlan) -> Result<Applied> {
        let previous = fs::read_to_string(self.settings_file()).ok();
        let text = render(&plan.settings);
        if previous.as_deref() == Some(text.as_str())
            || (previous.is_none() && plan.settings.is_empty())
        {
            return Ok(Applied::Unchanged);
        }
        self.ensure_include()?;
        self.write_settings_text(&text)?;
        if !self.running()? {
            return Ok(Applied::Written);
        }
        self.psql_admin("postgres", "SELECT pg_reload_conf();", &[])?;
        let errors = self.psql_admin_fields(
            "postgres",
            "SELECT name, error FROM pg_file_settings WHERE error IS NOT NULL AND sourcefile LIKE '%/' || :'file'",
            &[("file", SETTINGS_FILE)],
        )?;
        let restart = plan.needs_restart();
        // A change that needs a restart shows as "could not be applied" until the restart.
        let pending: Vec<&str> = plan
            .changes
            .iter()
            .filter(|c| c.restart)
            .map(|c| c.name.as_str())
            .collect();
        let refused: Vec<String> = errors
            .iter()
            .filter(|row| !row.first().is_some_and(|n| pending.contains(&n.as_str())))
            .map(|row| row.join(": "))
            .collect();
        if !refused.is_empty() {
            match &previous {
                Some(text) => self.write_settings_text(text)?,
                None => fs::remove_file(self.settings_file()).map_err(io(format!(
                    "cannot remove {}",
                    self.settings_file().display()
                )))?,
            }
            self.psql_admin("postgres", "SELECT pg_reload_conf();", &[])?;
            return Err(Error::Setup(format!(
                "PostgreSQL did not accept these settings ({}); the previous settings were put back\n  hint: see {}",
                refused.join(", "),
                self.log_file().display()
            )));
        }
        if !restart {
            return Ok(Applied::Reloaded);
        }
        let started = Instant::now();
        let mut command = self.as_user(&self.tool("pg_ctl"));
        command
            .arg("restart")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.log_file())
            .args(["-m", "fast", "-w", "-t", "120", "-s"]);
        self.run("pg_ctl restart", &mut command).map_err(|e| {
            Error::Tool(format!(
                "{e}\n  the server's log: {}",
                crate::last_lines(&self.log_file(), 10)
            ))
        })?;
        Ok(Applied::Restarted {
            downtime_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// The settings the spec set, with the running server's value of each.
    pub fn effective_settings(&self) -> Result<Vec<Effective>> {
        let written = self.written_settings()?;
        let names: Vec<&str> = written.keys().map(String::as_str).collect();
        let server = if !names.is_empty() && self.running()? {
            self.server_settings(&names)?
        } else {
            BTreeMap::new()
        };
        Ok(written
            .iter()
            .map(|(name, value)| {
                let known = server.get(name);
                Effective {
                    name: name.clone(),
                    value: value.clone(),
                    now: known.map(|k| k.shown.clone()),
                    pending_restart: known.is_some_and(|k| k.pending),
                }
            })
            .collect())
    }

    /// Writes the settings of a cluster about to start for the first time, checked by
    /// PostgreSQL first (a refused value leaves no file behind).
    pub(crate) fn write_initial_settings(&self, settings: &BTreeMap<String, String>) -> Result<()> {
        if settings.is_empty() {
            return Ok(());
        }
        self.write_settings_text(&render(settings))?;
        let checked: Result<Vec<String>> = settings
            .keys()
            .map(|name| self.configured_value(name))
            .collect();
        if let Err(e) = checked {
            let _ = fs::remove_file(self.settings_file());
            return Err(e);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
