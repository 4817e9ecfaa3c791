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
use crate::duration;
use crate::file::{DurationText, ProbeFile, ServiceFile, SpecFile};
use crate::model::{
    Check, DeploySettings, Health, Port, Probe, Scaling, ServiceSpec, Shutdown, Spec,
};
use crate::tree::{Tree, escape_pointer};

/// Resolves `file` (already validated) against `base_dir`, the spec file's directory.
pub(crate) fn resolve(file: SpecFile, tree: &Tree, base_dir: &Path) -> Result<Spec, Diagnostic> {
    let base_dir = absolute(base_dir);
    let mut services = BTreeMap::new();
    for (name, service) in file.services {
        let pointer = format!("/services/{}", escape_pointer(&name));
        let resolved = Resolver {
            tree,
            pointer: &pointer,
        }
        .service(service, &base_dir)?;
        services.insert(name, resolved);
    }
    Ok(Spec {
        app: file.app,
        services,
    })
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
            Some(scaling) => match (scaling.min, scaling.max) {
                (Some(min), Some(max)) => Scaling { min, max },
                (Some(min), None) => Scaling {
                    min,
                    max: min.max(1),
                },
                (None, Some(max)) => Scaling {
                    min: max.min(1),
                    max,
                },
                (None, None) => Scaling::default(),
            },
        };
        let shutdown = Shutdown {
            grace: self.duration(
                service.shutdown.and_then(|s| s.grace),
                "shutdown/grace",
                Shutdown::default().grace,
            )?,
        };
        let deploy = DeploySettings {
            keep_previous: self.duration(
                service.deploy.and_then(|d| d.keep_previous),
                "deploy/keep_previous",
                DeploySettings::default().keep_previous,
            )?,
        };
        Ok(ServiceSpec {
            run: service.run,
            workdir,
            env,
            port,
            health,
            scaling,
            routes: service.routes.unwrap_or_default(),
            shutdown,
            deploy,
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
fn normalise(path: &Path) -> PathBuf {
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
