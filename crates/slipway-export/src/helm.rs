//! A Helm chart of the manifests, whose values hold what each environment changes.
//!
//! The chart is made from the exports of every environment the spec declares: a value that
//! is the same in all of them is written into the template as it is; one that differs (an
//! overlay's replicas, image, env, host, …) becomes a hole the values fill:
//! `{{ index .Values "manifests" "Deployment/web" "/spec/replicas" | toJson }}`, keyed by
//! the document and the JSON pointer of the value. A document that only some environments
//! have is wrapped in `if` on its `enabled` value. `values.yaml` holds the values of the
//! environment asked for and `values-<environment>.yaml` those of each environment, so
//! `helm template chart -f chart/values-production.yaml` renders the same manifests as
//! `slipway export --env production`.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::{Export, File, Options, Warning, yaml};

/// The chart's files: path relative to the output folder, and contents.
#[derive(Debug, Clone)]
pub struct Chart {
    /// `chart/Chart.yaml`, `chart/values*.yaml`, `chart/templates/*.yaml`, the Secret
    /// template and the README.
    pub files: Vec<(String, String)>,
    /// The warnings of every environment; one that not all share names its environments
    /// after the subject.
    pub warnings: Vec<Warning>,
}

/// The chart of `exports` (one per environment, in the spec's order), with `environment`'s
/// values as the chart's defaults, plus the Secret template and the README of that
/// environment's export.
pub fn chart(
    app: &str,
    environment: &str,
    options: &Options,
    exports: &[(String, Export)],
) -> Chart {
    let default = exports
        .iter()
        .position(|(name, _)| name == environment)
        .unwrap_or(0);
    // Every document of the chart, keyed by `Kind/name`, in the order of the environment
    // asked for, then those only other environments have.
    let mut order: Vec<String> = Vec::new();
    let mut seen = BTreeSet::new();
    for index in std::iter::once(default).chain(0..exports.len()) {
        for document in &exports[index].1.documents {
            if document.file == File::Manifests && seen.insert(document.id()) {
                order.push(document.id());
            }
        }
    }
    let mut values: Vec<Map<String, Value>> = vec![Map::new(); exports.len()];
    let mut templates = Vec::new();
    for id in &order {
        let per_env: Vec<Option<&Value>> = exports
            .iter()
            .map(|(_, export)| {
                export
                    .documents
                    .iter()
                    .find(|d| d.file == File::Manifests && &d.id() == id)
                    .map(|d| &d.value)
            })
            .collect();
        let reference = per_env[default]
            .or_else(|| per_env.iter().flatten().next().copied())
            .cloned()
            .unwrap_or(Value::Null);
        let present: Vec<usize> = (0..exports.len())
            .filter(|&i| per_env[i].is_some())
            .collect();
        let mut holes = Vec::new();
        let mut template = reference;
        punch(
            &mut template,
            "",
            &present
                .iter()
                .map(|&i| per_env[i].unwrap_or(&Value::Null))
                .collect::<Vec<_>>(),
            &mut holes,
        );
        let mut text = yaml::document(&template);
        for (number, pointer) in holes.iter().enumerate() {
            let reference =
                format!("{{{{ index .Values \"manifests\" \"{id}\" \"{pointer}\" | toJson }}}}");
            let placeholder = placeholder(number);
            for form in [
                format!("\"{placeholder}\""),
                format!("'{placeholder}'"),
                placeholder.clone(),
            ] {
                text = text.replace(&form, &reference);
            }
        }
        let conditional = present.len() != exports.len();
        for (index, env_values) in values.iter_mut().enumerate() {
            let mut own = Map::new();
            if conditional {
                own.insert("enabled".into(), Value::Bool(per_env[index].is_some()));
            }
            if let Some(value) = per_env[index] {
                for pointer in &holes {
                    own.insert(
                        pointer.clone(),
                        value.pointer(pointer).cloned().unwrap_or(Value::Null),
                    );
                }
            }
            if !own.is_empty() {
                env_values.insert(id.clone(), Value::Object(own));
            }
        }
        let body = if conditional {
            format!(
                "{{{{- if index .Values \"manifests\" \"{id}\" \"enabled\" }}}}\n{text}{{{{- end }}}}\n"
            )
        } else {
            text
        };
        templates.push((template_name(id), body));
    }
    let mut files = vec![(
        "chart/Chart.yaml".to_owned(),
        yaml::document(&json!({
            "apiVersion": "v2",
            "name": app,
            "description": format!("{app}, exported by slipway from slipway.yaml ({} target)", options.target.as_str()),
            "type": "application",
            "version": "0.1.0",
        })),
    )];
    let values_file = |map: &Map<String, Value>| {
        format!(
            "# Made by slipway export: the values that differ between environments, by document and JSON pointer.\n{}",
            yaml::document(&json!({ "manifests": map }))
        )
    };
    files.push((
        "chart/values.yaml".to_owned(),
        values_file(&values[default]),
    ));
    for (index, (name, _)) in exports.iter().enumerate() {
        files.push((
            format!("chart/values-{name}.yaml"),
            values_file(&values[index]),
        ));
    }
    for (name, body) in templates {
        files.push((format!("chart/templates/{name}"), body));
    }
    let export = &exports[default].1;
    let secrets = yaml::file(&export.documents, File::SecretTemplate);
    if !secrets.is_empty() {
        files.push((File::SecretTemplate.name().to_owned(), secrets));
    }
    let mut readme = export.clone();
    readme.warnings = warnings_of_all(exports);
    files.push((
        "README.md".to_owned(),
        yaml::readme(app, environment, options, &readme, true),
    ));
    Chart {
        files,
        warnings: readme.warnings,
    }
}

/// The warnings of every environment: those all share as they are, the others with the
/// environments they apply to after the subject (`api (production)`).
fn warnings_of_all(exports: &[(String, Export)]) -> Vec<Warning> {
    let mut all = Vec::new();
    for (_, export) in exports {
        for warning in &export.warnings {
            if all.contains(warning) {
                continue;
            }
            let holders: Vec<&str> = exports
                .iter()
                .filter(|(_, e)| e.warnings.contains(warning))
                .map(|(name, _)| name.as_str())
                .collect();
            let mut shown = warning.clone();
            if holders.len() != exports.len() {
                shown.subject = format!("{} ({})", warning.subject, holders.join(", "));
            }
            if !all.contains(&shown) {
                all.push(shown);
            }
        }
    }
    all.sort();
    all
}

fn placeholder(number: usize) -> String {
    format!("__slipway_hole_{number}__")
}

/// `Deployment/web` → `deployment-web.yaml`.
fn template_name(id: &str) -> String {
    format!("{}.yaml", id.to_lowercase().replace('/', "-"))
}

/// Replaces in `template` every value that differs between `versions` (the same document
/// in each environment that has it) with a placeholder, recording its pointer in `holes`.
/// Objects with the same keys and arrays of the same length are compared member by member;
/// anything else that differs becomes one hole.
fn punch(template: &mut Value, pointer: &str, versions: &[&Value], holes: &mut Vec<String>) {
    if versions.iter().all(|v| *v == versions[0]) {
        return;
    }
    match template {
        Value::Object(map) => {
            let keys: BTreeSet<&String> = map.keys().collect();
            let same_keys = versions.iter().all(|v| {
                v.as_object()
                    .is_some_and(|m| m.keys().collect::<BTreeSet<_>>() == keys)
            });
            if same_keys {
                let names: Vec<String> = map.keys().cloned().collect();
                for name in names {
                    let child_pointer = format!("{pointer}/{}", escape(&name));
                    let children: Vec<&Value> = versions.iter().map(|v| &v[&name]).collect();
                    if let Some(child) = map.get_mut(&name) {
                        punch(child, &child_pointer, &children, holes);
                    }
                }
                return;
            }
        }
        Value::Array(items) => {
            let same_len = versions
                .iter()
                .all(|v| v.as_array().is_some_and(|a| a.len() == items.len()));
            if same_len {
                for (index, item) in items.iter_mut().enumerate() {
                    let children: Vec<&Value> = versions.iter().map(|v| &v[index]).collect();
                    punch(item, &format!("{pointer}/{index}"), &children, holes);
                }
                return;
            }
        }
        _ => {}
    }
    *template = Value::String(placeholder(holes.len()));
    holes.push(pointer.to_owned());
}

/// A JSON pointer token: `~` → `~0`, `/` → `~1`.
fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}
