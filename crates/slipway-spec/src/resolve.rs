//! Turns a validated file model into the resolved [`Spec`], applying every default.
//!
//! This runs only after both validation passes found nothing, so the conversions here
//! cannot fail on user input; if one does anyway, it is reported as a diagnostic at the
//! value concerned rather than a panic.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::diagnostic::Diagnostic;
use crate::file::{
    AnalysisFile, DatabaseFile, DeployFile, DurationText, EngineFile, OnFailureFile, ProbeFile,
    ScalingFile, ServiceFile, SpecFile, StrategyFile,
};
use crate::model::{
    Analysis, BackupPolicy, Check, DatabaseSpec, DatabaseUse, DeploySettings, Engine, Health,
    HttpsSettings, Limits, OnFailure, Port, Probe, Resources, Scaling, ServiceSpec, Shutdown, Spec,
    Strategy, TrafficSettings, default_release_timeout,
};
use crate::tree::{Tree, escape_pointer};
use crate::{duration, percent, quantity, size};

/// The environment a spec is resolved for.
pub(crate) struct Environment {
    /// Its name.
    pub name: String,
    /// The app's host in it.
    pub host: String,
    /// Every environment the file declares, `development` first.
    pub declared: Vec<String>,
}

/// Resolves `file` (already validated, and already merged with the environment's overlay)
/// against `base_dir`, the spec file's directory.
pub(crate) fn resolve(
    file: SpecFile,
    tree: &Tree,
    base_dir: &Path,
    environment: Environment,
) -> Result<Spec, Diagnostic> {
    let base_dir = absolute(base_dir);
    let backups = match file.backups {
        None => None,
        Some(b) => Some(BackupPolicy {
            every: match b.every {
                None => BackupPolicy::DEFAULT.every,
                Some(text) => duration::parse(&text.0).map_err(|_| {
                    Diagnostic::at(
                        tree.value_pos("/backups/every"),
                        format!(
                            "the spec passed validation but `{}` is not a duration",
                            text.0
                        ),
                    )
                    .hint("please report this as a Slipway bug")
                })?,
            },
            keep: b.keep.unwrap_or(BackupPolicy::DEFAULT.keep),
        }),
    };
    let databases: BTreeMap<String, DatabaseSpec> = file
        .databases
        .unwrap_or_default()
        .into_iter()
        .map(|(name, db)| (name, database(db, backups)))
        .collect();
    let https = match file.https {
        None => HttpsSettings::default(),
        Some(https) => HttpsSettings {
            redirect: https.redirect.unwrap_or(false),
            hsts_max_age_secs: match https.hsts {
                None => None,
                Some(text) => Some(
                    duration::parse(&text.0)
                        .map_err(|_| {
                            Diagnostic::at(
                                tree.value_pos("/https/hsts"),
                                format!(
                                    "the spec passed validation but `{}` is not a duration",
                                    text.0
                                ),
                            )
                            .hint("please report this as a Slipway bug")
                        })?
                        .as_secs(),
                ),
            },
        },
    };
    let mut services = BTreeMap::new();
    for (name, service) in file.services {
        let pointer = format!("/services/{}", escape_pointer(&name));
        let uses = service.uses.clone().unwrap_or_default();
        let mut resolved = Resolver {
            tree,
            pointer: &pointer,
        }
        .service(service, &base_dir)?;
        resolved.https = https;
        for (index, used) in uses.into_iter().enumerate() {
            // The rules pass checked that every name is declared.
            let database = databases.get(&used).cloned().ok_or_else(|| {
                Diagnostic::at(
                    tree.value_pos(&format!("{pointer}/uses/{index}")),
                    format!("the spec passed validation but database `{used}` is not declared"),
                )
                .hint("please report this as a Slipway bug")
            })?;
            resolved.uses.push(DatabaseUse {
                name: used,
                database,
            });
        }
        services.insert(name, resolved);
    }
    Ok(Spec {
        databases,
        app: file.app,
        services,
        environment: environment.name,
        host: environment.host,
        environments: environment.declared,
    })
}

/// A database with its defaults applied.
fn database(db: DatabaseFile, backups: Option<BackupPolicy>) -> DatabaseSpec {
    let engine = match db.engine {
        EngineFile::Postgres => Engine::Postgres,
        EngineFile::Redis => Engine::Redis,
    };
    DatabaseSpec {
        engine,
        version: db.version.map(|v| match v.0 {
            Value::String(text) => text,
            other => other.to_string(),
        }),
        env: db.env.unwrap_or_else(|| engine.default_env().to_owned()),
        backups,
        settings: db
            .settings
            .unwrap_or_default()
            .into_iter()
            .map(|(name, value)| {
                let value = match value.0 {
                    Value::String(text) => text,
                    Value::Bool(on) => match (engine, on) {
                        (Engine::Postgres, true) => "on".to_owned(),
                        (Engine::Postgres, false) => "off".to_owned(),
                        (Engine::Redis, true) => "yes".to_owned(),
                        (Engine::Redis, false) => "no".to_owned(),
                    },
                    other => other.to_string(),
                };
                (name, value)
            })
            .collect(),
    }
}

/// Resolves one service, knowing its JSON pointer for error positions and env text.
struct Resolver<'a> {
    tree: &'a Tree,
    pointer: &'a str,
}

impl Resolver<'_> {
    fn service(&self, service: ServiceFile, base_dir: &Path) -> Result<ServiceSpec, Diagnostic> {
        let workdir = match service.workdir {
            Some(dir) => normalise(&base_dir.join(dir)),
            None => base_dir.to_path_buf(),
        };
        let env = service
            .env
            .unwrap_or_default()
            .into_iter()
            .map(|(name, value)| {
                let text = match value.0 {
                    Value::String(s) => s,
                    other => {
                        let pointer = format!("{}/env/{}", self.pointer, escape_pointer(&name));
                        self.tree
                            .scalar_text
                            .get(&pointer)
                            .cloned()
                            .unwrap_or_else(|| other.to_string())
                    }
                };
                (name, text)
            })
            .collect();
        let port = match service.port.map(|p| p.0) {
            None => Port::Auto,
            Some(Value::String(s)) if s == "auto" => Port::Auto,
            Some(Value::Number(n)) => match n.as_u64().and_then(|n| u16::try_from(n).ok()) {
                Some(port) if port > 0 => Port::Fixed(port),
                _ => return Err(self.internal("port", "port out of range")),
            },
            Some(_) => return Err(self.internal("port", "unexpected port value")),
        };
        let health = match service.health {
            None => Health::default(),
            Some(health) => Health {
                ready: match health.ready {
                    None => Health::default().ready,
                    Some(probe) => self.probe(probe, "health/ready", Probe::default_ready)?,
                },
                live: match health.live {
                    None => None,
                    Some(probe) => Some(self.probe(probe, "health/live", Probe::default_live)?),
                },
                startup_timeout: self.duration(
                    health.startup_timeout,
                    "health/startup_timeout",
                    Health::default().startup_timeout,
                )?,
            },
        };
        let scaling = match service.scaling {
            None => Scaling::default(),
            Some(scaling) => self.scaling(scaling)?,
        };
        let resources = match service.resources {
            None => Resources::default(),
            Some(resources) => Resources {
                cpu_millis: match resources.cpu {
                    None => None,
                    Some(text) => Some(
                        quantity::parse_cpu(&quantity_text(&text.0))
                            .map_err(|_| self.internal("resources/cpu", "bad cpu quantity"))?,
                    ),
                },
                memory_bytes: match resources.memory {
                    None => None,
                    Some(text) => Some(
                        quantity::parse_memory(&quantity_text(&text.0)).map_err(|_| {
                            self.internal("resources/memory", "bad memory quantity")
                        })?,
                    ),
                },
                pids: resources.pids,
            },
        };
        let shutdown = Shutdown {
            grace: self.duration(
                service.shutdown.and_then(|s| s.grace),
                "shutdown/grace",
                Shutdown::default().grace,
            )?,
        };
        let deploy = match service.deploy {
            None => DeploySettings::default(),
            Some(deploy) => self.deploy(deploy)?,
        };
        let traffic = service.traffic.map_or_else(TrafficSettings::default, |t| {
            let defaults = TrafficSettings::default();
            TrafficSettings {
                sticky: t.sticky.unwrap_or(defaults.sticky),
                header_override: t.header_override.unwrap_or(defaults.header_override),
            }
        });
        let limits = match service.limits.and_then(|l| l.body) {
            None => Limits::default(),
            Some(text) => Limits {
                body: size::parse(&text.0)
                    .map_err(|_| self.internal("limits/body", &format!("bad size `{}`", text.0)))?,
            },
        };
        let artifact = service.artifact.map(|path| normalise(&workdir.join(path)));
        let release_timeout = self.duration(
            service.release_timeout,
            "release_timeout",
            default_release_timeout(),
        )?;
        Ok(ServiceSpec {
            run: service.run.unwrap_or_default(),
            image: service.image,
            command: service.command,
            dockerfile: service
                .dockerfile
                .map(|path| normalise(&workdir.join(path))),
            workdir,
            env,
            port,
            health,
            scaling,
            resources,
            routes: service.routes.unwrap_or_default(),
            shutdown,
            deploy,
            traffic,
            build: service.build,
            artifact,
            test: service.test,
            release: service.release,
            release_timeout,
            secrets: service.secrets.unwrap_or_default(),
            volumes: service
                .volumes
                .unwrap_or_default()
                .into_iter()
                .map(|(name, path)| (name, normalise(Path::new(&path))))
                .collect(),
            limits,
            uses: Vec::new(),
            https: HttpsSettings::default(),
        })
    }

    fn scaling(&self, scaling: ScalingFile) -> Result<Scaling, Diagnostic> {
        let defaults = Scaling::default();
        // A missing bound follows the other: `{ min: 3 }` is 3..=3, `{ max: 4 }` is 1..=4,
        // and `{ min: 0 }` is 0..=1 (max is at least 1).
        let (min, max) = match (scaling.min, scaling.max) {
            (Some(min), Some(max)) => (min, max),
            (Some(min), None) => (min, min.max(1)),
            (None, Some(max)) => (max.min(1), max),
            (None, None) => (defaults.min, defaults.max),
        };
        Ok(Scaling {
            min,
            max,
            concurrency: scaling.concurrency.unwrap_or(defaults.concurrency),
            max_concurrency: scaling.max_concurrency.unwrap_or(defaults.max_concurrency),
            idle: self.duration(scaling.idle, "scaling/idle", defaults.idle)?,
            stable_window: self.duration(
                scaling.stable_window,
                "scaling/stable_window",
                defaults.stable_window,
            )?,
            panic_window: self.duration(
                scaling.panic_window,
                "scaling/panic_window",
                defaults.panic_window,
            )?,
        })
    }

    fn deploy(&self, deploy: DeployFile) -> Result<DeploySettings, Diagnostic> {
        let defaults = DeploySettings::default();
        let strategy = match deploy.strategy {
            None => defaults.strategy,
            Some(StrategyFile::BlueGreen) => Strategy::BlueGreen,
            Some(StrategyFile::Canary) => Strategy::Canary,
            Some(StrategyFile::Rolling) => Strategy::Rolling,
            Some(StrategyFile::Recreate) => Strategy::Recreate,
        };
        let on_failure = match deploy.on_failure {
            None => defaults.on_failure,
            Some(OnFailureFile::Rollback) => OnFailure::Rollback,
            Some(OnFailureFile::Pause) => OnFailure::Pause,
        };
        let verify = strategy == Strategy::BlueGreen && deploy.analysis.is_some();
        let analysis = match deploy.analysis {
            None => defaults.analysis,
            Some(analysis) => self.analysis(analysis)?,
        };
        Ok(DeploySettings {
            keep_previous: self.duration(
                deploy.keep_previous,
                "deploy/keep_previous",
                defaults.keep_previous,
            )?,
            strategy,
            steps: deploy.steps.unwrap_or(defaults.steps),
            interval: self.duration(deploy.interval, "deploy/interval", defaults.interval)?,
            analysis,
            on_failure,
            verify,
        })
    }

    fn analysis(&self, analysis: AnalysisFile) -> Result<Analysis, Diagnostic> {
        let defaults = Analysis::default();
        let max_error_rate = match analysis.max_error_rate {
            None => defaults.max_error_rate,
            Some(text) => percent::parse(&text.0).map_err(|_| {
                self.internal(
                    "deploy/analysis/max_error_rate",
                    &format!("bad error rate `{}`", text.0),
                )
            })?,
        };
        let max_p95 = match analysis.max_p95 {
            None => None,
            Some(text) => {
                Some(self.duration(Some(text), "deploy/analysis/max_p95", Duration::ZERO)?)
            }
        };
        Ok(Analysis {
            max_error_rate,
            max_p95,
            min_requests: analysis.min_requests.unwrap_or(defaults.min_requests),
        })
    }

    fn probe(
        &self,
        probe: ProbeFile,
        field: &str,
        defaults: fn(Check) -> Probe,
    ) -> Result<Probe, Diagnostic> {
        let check = match (probe.http, probe.tcp) {
            (Some(path), _) => Check::Http { path },
            (None, Some(true)) => Check::Tcp,
            (None, _) => return Err(self.internal(field, "probe without `http` or `tcp`")),
        };
        let base = defaults(check);
        Ok(Probe {
            interval: self.duration(probe.interval, &format!("{field}/interval"), base.interval)?,
            timeout: self.duration(probe.timeout, &format!("{field}/timeout"), base.timeout)?,
            failures: probe.failures.unwrap_or(base.failures),
            check: base.check,
        })
    }

    fn duration(
        &self,
        text: Option<DurationText>,
        field: &str,
        default: Duration,
    ) -> Result<Duration, Diagnostic> {
        match text {
            None => Ok(default),
            Some(text) => duration::parse(&text.0)
                .map_err(|_| self.internal(field, &format!("bad duration `{}`", text.0))),
        }
    }

    /// A problem that validation should have caught; reported, never panicked on.
    fn internal(&self, field: &str, message: &str) -> Diagnostic {
        let pointer = format!("{}/{field}", self.pointer);
        Diagnostic::at(self.tree.value_pos(&pointer), message.to_owned())
            .hint("this should have been caught by validation; please report it as a Slipway bug")
    }
}

/// Makes `path` absolute against the current directory, without touching the file system
/// beyond reading the current directory.
fn absolute(path: &Path) -> PathBuf {
    let path = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    normalise(&std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()))
}

/// Removes `.` and resolves `..` components lexically (symlinks are not followed).
pub(crate) fn normalise(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                // `..` above the root is the root itself.
                Some(Component::RootDir | Component::Prefix(_)) => {}
                _ => out.push(component),
            },
            other => out.push(other),
        }
    }
    out
}

/// The text of a quantity as written: a string as is, a number in its JSON form.
pub(crate) fn quantity_text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalise_resolves_dots_lexically() {
        assert_eq!(
            normalise(Path::new("/a/b/../c/./d")),
            PathBuf::from("/a/c/d")
        );
        assert_eq!(normalise(Path::new("/a/../../b")), PathBuf::from("/b"));
    }
}
