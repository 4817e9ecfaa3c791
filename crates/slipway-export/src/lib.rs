//! The resolved `slipway.yaml` of one environment as Kubernetes or Knative manifests.
//!
//! [`export`] turns a [`Spec`] into a list of manifest [`Document`]s and a list of
//! [`Warning`]s: everything of the spec that the target cannot express is a warning, never
//! dropped silently. Each field that *is* carried over is recorded as a [`Mapping`] (which
//! document, which JSON pointer), so a test can walk the spec and the output together.
//! [`helm::chart`] makes a Helm chart of the same manifests whose values hold what each
//! environment changes; [`yaml`] renders documents and the README of an export.
//!
//! Per service, the `kubernetes` target makes a Deployment, a Service, a
//! HorizontalPodAutoscaler (when `max > min`), a PodDisruptionBudget, an Ingress (or
//! Gateway API HTTPRoutes) and, for a release command, a Job. The `knative` target makes a
//! `serving.knative.dev/v1` Service instead of the Deployment, Service, autoscaler and
//! routes (a release command's Job stays). Both make a StatefulSet, a headless Service and
//! a claim template per database, and one Secret *template* that names every secret key the
//! manifests refer to, with empty values: an export never contains a secret's value.
//!
//! Architecture invariant: pure. No I/O, no clock, no network; the caller reads the spec
//! and writes the files.

mod common;
mod databases;
pub mod helm;
mod knative;
mod kubernetes;
#[cfg(test)]
mod tests;
pub mod yaml;

use std::collections::BTreeMap;

use serde_json::Value;
use slipway_spec::{ServiceSpec, Spec, Strategy};

/// The engine the manifests are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Plain Kubernetes (apps/v1, autoscaling/v2, networking.k8s.io/v1, …).
    Kubernetes,
    /// Knative Serving (`serving.knative.dev/v1`), and so Cloud Run.
    Knative,
}

impl Target {
    /// `kubernetes` or `knative`.
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Kubernetes => "kubernetes",
            Target::Knative => "knative",
        }
    }
}

/// How to export.
#[derive(Debug, Clone)]
pub struct Options {
    /// The engine.
    pub target: Target,
    /// Kubernetes: Gateway API HTTPRoutes instead of Ingresses.
    pub gateway: bool,
    /// Leave native-process services out (with a warning each) instead of refusing them.
    pub skip_native: bool,
    /// The current traffic of each service (by name), when known; empty: all on the
    /// revision the manifests describe.
    pub traffic: BTreeMap<String, Vec<TrafficTarget>>,
}

impl Options {
    /// The defaults for `target`: Ingresses, native services refused, no known traffic.
    pub fn new(target: Target) -> Options {
        Options {
            target,
            gateway: false,
            skip_native: false,
            traffic: BTreeMap::new(),
        }
    }
}

/// One share of a service's traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrafficTarget {
    /// The revision's number.
    pub revision: u64,
    /// Whether it is the newest revision, the one the manifests describe.
    pub latest: bool,
    /// Its percent of the traffic.
    pub percent: u32,
    /// Its tag, if it has one.
    pub tag: Option<String>,
}

/// The file of the output folder a document goes in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum File {
    /// `manifests.yaml`: everything to apply.
    Manifests,
    /// `secrets.template.yaml`: the Secret with its keys and empty values, to fill in.
    SecretTemplate,
}

impl File {
    /// The file's name.
    pub fn name(self) -> &'static str {
        match self {
            File::Manifests => "manifests.yaml",
            File::SecretTemplate => "secrets.template.yaml",
        }
    }
}

/// One manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// Where it is written.
    pub file: File,
    /// The object, as JSON (`apiVersion`, `kind`, `metadata`, …).
    pub value: Value,
}

impl Document {
    fn new(file: File, value: impl serde::Serialize) -> Document {
        let value = match serde_json::to_value(value) {
            Ok(value) => value,
            // The k8s-openapi types and this crate's own serialize to JSON infallibly (no
            // maps with non-string keys, no non-finite floats).
            Err(error) => Value::String(format!("unserializable manifest: {error}")),
        };
        Document { file, value }
    }

    /// `kind`.
    pub fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or("")
    }

    /// `metadata.name`.
    pub fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or("")
    }

    /// `Kind/name`, as `kubectl` names objects.
    pub fn id(&self) -> String {
        format!("{}/{}", self.kind(), self.name())
    }
}

/// Something of the spec the target cannot express, or expresses only approximately.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Warning {
    /// The service or database it is about, or the app's name for the whole app.
    pub subject: String,
    /// The spec field, as its path in the resolved spec (`scaling.max_concurrency`).
    pub field: String,
    /// What happens instead, and what to do.
    pub message: String,
}

/// Where a spec field of a service went in the output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// The service.
    pub service: String,
    /// The spec field, as its path in the resolved spec (`health.ready.interval`).
    pub field: String,
    /// The document, as `Kind/name`.
    pub document: String,
    /// The JSON pointer in that document.
    pub pointer: String,
}

/// The result of [`export`].
#[derive(Debug, Clone)]
pub struct Export {
    /// The manifests, in the order they are written.
    pub documents: Vec<Document>,
    /// What could not be expressed, sorted by subject and field.
    pub warnings: Vec<Warning>,
    /// Where each carried-over field went.
    pub mappings: Vec<Mapping>,
}

/// Why nothing was exported.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    /// Services that run as native processes, which a cluster cannot run.
    #[error(
        "{} {} as a native process (`run:`), which {} cannot run\n  hint: give {} an `image: name:tag` (a container image of the service, built with e.g. `docker build -t name:tag .`), or pass --skip-native to export the other services",
        if services.len() == 1 { "service" } else { "services" },
        list(services) + if services.len() == 1 { " runs" } else { " run" },
        target.as_str(),
        if services.len() == 1 { "it" } else { "each" }
    )]
    Native {
        /// Their names.
        services: Vec<String>,
        /// The target asked for.
        target: Target,
    },
    /// Every service was skipped.
    #[error(
        "nothing to export: every service of `{app}` runs as a native process\n  hint: give at least one service an `image: name:tag`"
    )]
    NothingLeft {
        /// The app.
        app: String,
    },
    /// Two objects of the same kind would get the same name.
    #[error(
        "the {kind} `{name}` would be made twice: {first} and {second}\n  hint: rename one of them in slipway.yaml"
    )]
    NameClash {
        /// The kind.
        kind: String,
        /// The name.
        name: String,
        /// What the first one is for.
        first: String,
        /// What the second one is for.
        second: String,
    },
}

fn list(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Exports `spec` (one environment, resolved) for `options.target`.
///
/// # Errors
/// [`ExportError::Native`] when a service has no image and `skip_native` is off;
/// [`ExportError::NothingLeft`] when every service was skipped; [`ExportError::NameClash`]
/// when a database's objects would take a service's name.
pub fn export(spec: &Spec, options: &Options) -> Result<Export, ExportError> {
    let native: Vec<String> = spec
        .services
        .iter()
        .filter(|(_, service)| !service.is_container())
        .map(|(name, _)| name.clone())
        .collect();
    if !native.is_empty() && !options.skip_native {
        return Err(ExportError::Native {
            services: native,
            target: options.target,
        });
    }
    if native.len() == spec.services.len() {
        return Err(ExportError::NothingLeft {
            app: spec.app.clone(),
        });
    }
    let mut out = Output::default();
    for name in &native {
        out.warn(
            name,
            "run",
            "not exported: it runs as a native process (`run:`); give it an `image:` to export it",
        );
    }
    common::app_warnings(spec, options, &mut out);
    for (name, service) in &spec.services {
        if !service.is_container() {
            continue;
        }
        let ctx = common::Context {
            spec,
            options,
            name,
            service,
        };
        match options.target {
            Target::Kubernetes => kubernetes::service(&ctx, &mut out),
            Target::Knative => knative::service(&ctx, &mut out),
        }
    }
    databases::all(spec, &mut out);
    common::secret_template(spec, &mut out);
    check_names(spec, &out.documents)?;
    out.warnings.sort();
    out.warnings.dedup();
    Ok(Export {
        documents: out.documents,
        warnings: out.warnings,
        mappings: out.mappings,
    })
}

/// Refuses two objects of one kind with one name (a database named like a service's job).
fn check_names(spec: &Spec, documents: &[Document]) -> Result<(), ExportError> {
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    for (index, document) in documents.iter().enumerate() {
        let key = (document.kind().to_owned(), document.name().to_owned());
        if let Some(first) = seen.insert(key.clone(), index) {
            let owner = |d: &Document| {
                d.value["metadata"]["labels"]["app.kubernetes.io/component"]
                    .as_str()
                    .map_or_else(|| spec.app.clone(), |c| format!("`{c}`"))
            };
            return Err(ExportError::NameClash {
                kind: key.0,
                name: key.1,
                first: owner(&documents[first]),
                second: owner(document),
            });
        }
    }
    Ok(())
}

/// Fields of a service that change nothing in Slipway itself for this service, and so need
/// no equivalent: `workdir` of a container (it runs in its image's folder), the canary
/// settings of a service that does not deploy as a canary, the autoscaler's settings of a
/// service with a fixed number of instances, `idle` without scale to zero,
/// `release_timeout` without a release command.
pub fn inert_fields(service: &ServiceSpec) -> Vec<&'static str> {
    let mut inert = Vec::new();
    if service.is_container() {
        inert.push("workdir");
    }
    if service.deploy.strategy != Strategy::Canary {
        inert.extend(["deploy.steps", "deploy.interval"]);
        if !service.deploy.verify {
            inert.extend(["deploy.analysis", "deploy.on_failure"]);
        }
    }
    let scaling = &service.scaling;
    if scaling.min == scaling.max {
        inert.extend([
            "scaling.concurrency",
            "scaling.stable_window",
            "scaling.panic_window",
        ]);
    }
    if scaling.min > 0 {
        inert.push("scaling.idle");
    }
    if service.release.is_none() {
        inert.push("release_timeout");
    }
    inert
}

/// What an export collects as it goes.
#[derive(Default)]
struct Output {
    documents: Vec<Document>,
    warnings: Vec<Warning>,
    mappings: Vec<Mapping>,
}

impl Output {
    fn warn(&mut self, subject: &str, field: &str, message: impl Into<String>) {
        self.warnings.push(Warning {
            subject: subject.to_owned(),
            field: field.to_owned(),
            message: message.into(),
        });
    }

    /// Records that `field` of `service` went to `pointer` of the document `Kind/name`.
    fn map(&mut self, service: &str, field: &str, document: &str, pointer: &str) {
        self.mappings.push(Mapping {
            service: service.to_owned(),
            field: field.to_owned(),
            document: document.to_owned(),
            pointer: pointer.to_owned(),
        });
    }

    fn push(&mut self, document: Document) {
        self.documents.push(document);
    }
}
