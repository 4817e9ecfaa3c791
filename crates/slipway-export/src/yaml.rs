//! Rendering: the documents of a file as YAML, and the README of an export with its
//! warnings table.

use std::fmt::Write as _;

use serde_json::Value;

use crate::{Document, Export, File, Options, Target, Warning};

/// One document as YAML (keys sorted, as `kubectl get -o yaml` shows them).
pub fn document(value: &Value) -> String {
    match serde_saphyr::to_string(value) {
        Ok(text) => text,
        // serde_json values always serialize; keep the reason visible if one ever did not.
        Err(error) => format!("# cannot render this document: {error}\n"),
    }
}

/// The documents that go in `file`, joined with `---`.
pub fn file(documents: &[Document], file: File) -> String {
    let mut text = String::new();
    for one in documents.iter().filter(|d| d.file == file) {
        text.push_str("---\n");
        text.push_str(&document(&one.value));
    }
    text
}

/// The files of a plain export: name and contents, README included.
pub fn files(
    spec_app: &str,
    environment: &str,
    options: &Options,
    export: &Export,
) -> Vec<(String, String)> {
    let mut files = Vec::new();
    for kind in [File::Manifests, File::SecretTemplate] {
        let text = file(&export.documents, kind);
        if !text.is_empty() {
            files.push((kind.name().to_owned(), text));
        }
    }
    files.push((
        "README.md".to_owned(),
        readme(spec_app, environment, options, export, false),
    ));
    files
}

/// The warnings as a table for a terminal: subject, field, message.
pub fn warnings_table(warnings: &[Warning]) -> String {
    let subject = warnings
        .iter()
        .map(|w| w.subject.len())
        .chain([7])
        .max()
        .unwrap_or(7);
    let field = warnings
        .iter()
        .map(|w| w.field.len())
        .chain([5])
        .max()
        .unwrap_or(5);
    let mut text = format!(
        "{:subject$}  {:field$}  NOT CARRIED OVER\n",
        "SUBJECT", "FIELD"
    );
    for warning in warnings {
        let _ = writeln!(
            text,
            "{:subject$}  {:field$}  {}",
            warning.subject, warning.field, warning.message
        );
    }
    text
}

/// The README written into the output folder: what is there, how to apply it, and every
/// warning.
pub fn readme(
    app: &str,
    environment: &str,
    options: &Options,
    export: &Export,
    helm: bool,
) -> String {
    let mut text = format!(
        "# {app} ({environment}) for {}\n\nMade by `slipway export --target {} --env {environment}{}` from slipway.yaml.\n\n",
        match options.target {
            Target::Kubernetes => "Kubernetes",
            Target::Knative => "Knative Serving",
        },
        options.target.as_str(),
        [
            (helm, " --format helm"),
            (options.gateway, " --gateway"),
            (options.skip_native, " --skip-native"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, flag)| *flag)
        .collect::<String>()
    );
    let secrets = export
        .documents
        .iter()
        .any(|d| d.file == File::SecretTemplate);
    if helm {
        text.push_str(
            "## Files\n\n- `chart/`: a Helm chart; `values.yaml` holds this environment's values and `values-<environment>.yaml` those of each environment (what its overlay changes).\n",
        );
        text.push_str("\n## Apply\n\n```\n");
        if secrets {
            text.push_str("# fill in the values of secrets.template.yaml first\nkubectl apply -f secrets.template.yaml\n");
        }
        let _ = writeln!(
            text,
            "helm upgrade --install {app} chart -f chart/values-{environment}.yaml\n```"
        );
        if secrets {
            text.push_str("\n`secrets.template.yaml` is outside the chart so an upgrade never overwrites the secret's values.\n");
        }
    } else {
        text.push_str("## Files\n\n- `manifests.yaml`: everything to apply.\n");
        if secrets {
            text.push_str("- `secrets.template.yaml`: the Secret the manifests read, with every key and empty values: an export never carries secret values. Fill it in (or create the Secret with `kubectl create secret generic`) before applying.\n");
        }
        text.push_str("\n## Apply\n\n```\n");
        if secrets {
            text.push_str("kubectl apply -f secrets.template.yaml   # once filled in\n");
        }
        text.push_str("kubectl apply -f manifests.yaml\n```\n");
    }
    text.push_str("\n## Not carried over\n\nWhat the target cannot express, or expresses only approximately:\n\n| subject | field | what happens instead |\n|---|---|---|\n");
    for warning in &export.warnings {
        let _ = writeln!(
            text,
            "| {} | `{}` | {} |",
            warning.subject,
            warning.field,
            warning.message.replace('|', "\\|")
        );
    }
    text
}
