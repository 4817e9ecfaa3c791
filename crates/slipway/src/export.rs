//! `slipway export`: reads the spec file (offline, no server), exports it through
//! `slipway-export` and writes the files, with the warnings table on stderr.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use slipway_control::dto;
use slipway_export::{Options, Target, TrafficTarget};

use crate::cli::{ExportFormat, ExportTarget};
use crate::client::Client;

/// Written into the output folder: the files the last export wrote, one per line, so the
/// next export replaces them and never touches anything else.
const MARKER: &str = ".slipway-export";

pub(crate) struct Request {
    pub file: PathBuf,
    pub target: ExportTarget,
    pub environment: String,
    pub out: Option<PathBuf>,
    pub format: ExportFormat,
    pub gateway: bool,
    pub skip_native: bool,
    pub offline: bool,
}

pub(crate) async fn run(request: Request, client: &Client) -> anyhow::Result<ExitCode> {
    let target = match request.target {
        ExportTarget::Kubernetes => Target::Kubernetes,
        ExportTarget::Knative => Target::Knative,
    };
    if request.gateway && target == Target::Knative {
        bail!(
            "--gateway applies to --target kubernetes\n  hint: Knative Services bring their own routing; leave out --gateway"
        );
    }
    let mut options = Options::new(target);
    options.gateway = request.gateway;
    options.skip_native = request.skip_native;
    let Some(spec) = load(&request.file, &request.environment)? else {
        return Ok(ExitCode::FAILURE);
    };

    let (files, warnings) = match request.format {
        ExportFormat::Yaml => {
            if !request.offline {
                options.traffic = current_traffic(client, &spec).await.unwrap_or_default();
            }
            let export = slipway_export::export(&spec, &options).map_err(|e| anyhow::anyhow!(e))?;
            let files =
                slipway_export::yaml::files(&spec.app, &spec.environment, &options, &export);
            (files, export.warnings)
        }
        ExportFormat::Helm => {
            let mut exports = Vec::new();
            for environment in &spec.environments {
                let Some(one) = load(&request.file, environment)? else {
                    return Ok(ExitCode::FAILURE);
                };
                let mut options = options.clone();
                if !request.offline {
                    options.traffic = current_traffic(client, &one).await.unwrap_or_default();
                }
                let export = slipway_export::export(&one, &options)
                    .map_err(|e| anyhow::anyhow!("environment `{environment}`: {e}"))?;
                exports.push((environment.clone(), export));
            }
            let chart =
                slipway_export::helm::chart(&spec.app, &spec.environment, &options, &exports);
            (chart.files, chart.warnings)
        }
    };
    let out = request
        .out
        .map(|p| crate::absolute(&p))
        .unwrap_or_else(|| crate::absolute(Path::new(&format!("slipway-{}", target.as_str()))));
    write(&out, &files)?;
    if !warnings.is_empty() {
        eprint!("{}", slipway_export::yaml::warnings_table(&warnings));
        eprintln!(
            "{} things not carried over, also listed in {}",
            warnings.len(),
            out.join("README.md").display()
        );
    }
    println!(
        "wrote {} files for {} ({} environment) to {}",
        files.len(),
        target.as_str(),
        spec.environment,
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// The traffic split and tags of each service of the app as deployed, when a server
/// answers on the data directory's socket and knows the app in this environment; `None`
/// otherwise (the export then puts all traffic on the revision it describes).
async fn current_traffic(
    client: &Client,
    spec: &slipway_spec::Spec,
) -> Option<std::collections::BTreeMap<String, Vec<TrafficTarget>>> {
    if !client.is_up().await {
        return None;
    }
    let key = slipway_control::AppKey::new(&spec.app, &spec.environment).ok()?;
    let status: dto::AppStatus = client.get(&format!("/v1/apps/{key}")).await.ok()?;
    let mut traffic = std::collections::BTreeMap::new();
    for service in status.services {
        let Some(latest) = service.latest_revision else {
            continue;
        };
        let mut targets: Vec<TrafficTarget> = service
            .traffic
            .iter()
            .map(|share| TrafficTarget {
                revision: share.revision,
                latest: share.revision == latest,
                percent: share.percent,
                tag: None,
            })
            .collect();
        for tag in &service.tags {
            match targets
                .iter_mut()
                .find(|t| t.revision == tag.revision && t.tag.is_none())
            {
                Some(target) => target.tag = Some(tag.tag.clone()),
                // A tag on a revision without traffic: reachable by its URL only.
                None => targets.push(TrafficTarget {
                    revision: tag.revision,
                    latest: tag.revision == latest,
                    percent: 0,
                    tag: Some(tag.tag.clone()),
                }),
            }
        }
        // All on the newest revision, untagged, is what the export does without a server.
        let plain = targets.len() == 1 && targets[0].latest && targets[0].tag.is_none();
        if !targets.is_empty() && !plain {
            eprintln!(
                "{}: traffic as the server routes it now ({}); slipway.yaml is taken as revision {latest}",
                service.name,
                targets
                    .iter()
                    .map(|t| format!(
                        "revision {} {} %{}",
                        t.revision,
                        t.percent,
                        t.tag
                            .as_ref()
                            .map(|g| format!(" tag {g}"))
                            .unwrap_or_default()
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            traffic.insert(service.name, targets);
        }
    }
    Some(traffic)
}

/// The spec of `environment`, or `None` once its problems are printed.
fn load(file: &Path, environment: &str) -> anyhow::Result<Option<slipway_spec::Spec>> {
    match slipway_spec::load_env(file, environment) {
        Ok(spec) => Ok(Some(spec)),
        Err(slipway_spec::LoadError::Io { path, source }) => bail!(
            "cannot read {}: {source}\n  hint: pass the directory that holds slipway.yaml, or the file itself",
            path.display()
        ),
        Err(e @ slipway_spec::LoadError::Invalid { .. }) => {
            eprintln!("{e}");
            Ok(None)
        }
    }
}

/// Writes `files` under `out`, after removing what the previous export there wrote. A
/// folder that holds anything else and no marker is refused, so an export never mixes
/// with, or deletes, files it did not write.
fn write(out: &Path, files: &[(String, String)]) -> anyhow::Result<()> {
    let marker = out.join(MARKER);
    if out.exists() {
        if !out.is_dir() {
            bail!(
                "{} is not a folder\n  hint: pass --out with a folder to write the manifests into",
                out.display()
            );
        }
        match fs::read_to_string(&marker) {
            Ok(previous) => {
                for name in previous
                    .lines()
                    .filter(|l| !l.is_empty() && !l.contains(".."))
                {
                    let path = out.join(name);
                    if path.is_file() {
                        fs::remove_file(&path)
                            .with_context(|| format!("cannot remove {}", path.display()))?;
                    }
                }
            }
            Err(_) => {
                let mut entries =
                    fs::read_dir(out).with_context(|| format!("cannot read {}", out.display()))?;
                if entries.next().is_some() {
                    bail!(
                        "{} is not empty and was not written by slipway export\n  hint: pass --out with a new or empty folder",
                        out.display()
                    );
                }
            }
        }
    }
    for (name, text) in files {
        let path = out.join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let names: String = files.iter().map(|(name, _)| format!("{name}\n")).collect();
    fs::write(&marker, names).with_context(|| format!("cannot write {}", marker.display()))?;
    Ok(())
}
