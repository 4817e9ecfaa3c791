//! The structural pass: the JSON tree checked against the file model's own JSON Schema.
//!
//! The validator reports every structural problem at once (unknown keys, wrong types,
//! missing keys, out-of-range numbers), each with the JSON pointer of the offending value,
//! which [`Tree`] maps back to a line and column. The messages of the validator are
//! rewritten here into `slipway.yaml` terms ("a list", "a mapping"). Value formats with a
//! better message of their own (names, durations, ports) are left to `rules.rs`.

use std::collections::HashSet;
use std::sync::OnceLock;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::{JsonType, Validator};
use serde_json::Value;

use crate::diagnostic::{Diagnostic, Pos};
use crate::environments::in_service_overlay;
use crate::tree::{Tree, display_path, escape_pointer};

/// The schema and its compiled validator, built once per process.
struct Compiled {
    schema: Value,
    validator: Validator,
}

fn compiled() -> &'static Compiled {
    static COMPILED: OnceLock<Compiled> = OnceLock::new();
    COMPILED.get_or_init(|| {
        let schema = crate::file::schema();
        // The schema is generated from our own types and checked by a unit test, so a
        // failure here is a bug in this crate, never a problem with the user's file.
        let validator = jsonschema::validator_for(&schema)
            .expect("the generated slipway.yaml schema is a valid JSON Schema");
        Compiled { schema, validator }
    })
}

/// Validates `tree` against the schema, skipping errors at the `owned` pointers, whose
/// values the rules pass has already checked with more specific messages.
pub(crate) fn check(tree: &Tree, owned: &HashSet<String>, out: &mut Vec<Diagnostic>) {
    let compiled = compiled();
    for error in compiled.validator.iter_errors(&tree.json) {
        let pointer = error.instance_path().as_str().to_owned();
        let path = display_path(&pointer);
        let instance = error.instance();
        match error.kind() {
            // Names and durations get their own messages in `rules.rs`.
            ValidationErrorKind::Pattern { .. } | ValidationErrorKind::PropertyNames { .. } => {}
            _ if owned.contains(&pointer) => {}
            // Service overlays are checked in each environment's merged view instead.
            _ if in_service_overlay(&pointer) => {}
            ValidationErrorKind::AdditionalProperties { unexpected } => {
                let known = known_keys(&compiled.schema, error.schema_path().as_str());
                for key in unexpected {
                    let key_pointer = format!("{pointer}/{}", escape_pointer(key));
                    out.push(unknown_key(tree.key_pos(&key_pointer), key, &path, &known));
                }
            }
            ValidationErrorKind::Required { property } => {
                let property = property.as_str().unwrap_or_default();
                out.push(missing_key(tree, &pointer, property));
            }
            ValidationErrorKind::Type { kind } => {
                // An empty value sits after its key's colon; pointing at the key reads better.
                let pos = if instance.is_null() {
                    tree.key_pos(&pointer)
                } else {
                    tree.value_pos(&pointer)
                };
                let written = tree.scalar_text.get(&pointer).map(String::as_str);
                out.push(wrong_type(pos, &path, kind, instance, written));
            }
            ValidationErrorKind::MinItems { .. } if path.ends_with("run") => {
                out.push(
                    Diagnostic::at(tree.value_pos(&pointer), format!("`{path}` is empty"))
                        .hint("list the program and its arguments, e.g. `run: [\"./server\"]`"),
                );
            }
            ValidationErrorKind::MinItems { .. }
                if ["build", "test", "release"]
                    .iter()
                    .any(|command| path.ends_with(&format!(".{command}"))) =>
            {
                out.push(
                    Diagnostic::at(tree.value_pos(&pointer), format!("`{path}` is empty")).hint(
                        "list the program and its arguments, e.g. `[\"make\", \"all\"]`, or remove the key",
                    ),
                );
            }
            ValidationErrorKind::MinItems { .. } if path.ends_with(".deploy.steps") => {
                out.push(
                    Diagnostic::at(tree.value_pos(&pointer), format!("`{path}` is empty")).hint(
                        "list the percent of traffic on the new revision at each step, ending at 100, e.g. `[10, 50, 100]`",
                    ),
                );
            }
            ValidationErrorKind::MinProperties { .. } if pointer == "/services" => {
                out.push(
                    Diagnostic::at(tree.key_pos(&pointer), "`services` is empty")
                        .hint("define at least one service, e.g. `web: { run: [\"./server\"] }`"),
                );
            }
            ValidationErrorKind::MinLength { .. } => {
                out.push(Diagnostic::at(
                    tree.value_pos(&pointer),
                    format!("`{path}` must not be empty"),
                ));
            }
            ValidationErrorKind::Minimum { limit } => {
                out.push(Diagnostic::at(
                    tree.value_pos(&pointer),
                    format!("`{path}` must be at least {limit}, found {instance}"),
                ));
            }
            ValidationErrorKind::Maximum { limit } => {
                out.push(Diagnostic::at(
                    tree.value_pos(&pointer),
                    format!("`{path}` must be at most {limit}, found {instance}"),
                ));
            }
            _ => {
                let what = if path.is_empty() {
                    "the file".to_owned()
                } else {
                    format!("`{path}`")
                };
                out.push(Diagnostic::at(
                    tree.value_pos(&pointer),
                    format!("{what} is not valid: {error}"),
                ));
            }
        }
    }
}

/// Lists the keys the schema object owning `schema_path` (".../additionalProperties") allows.
fn known_keys(schema: &Value, schema_path: &str) -> Vec<String> {
    let owner = schema_path
        .strip_suffix("/additionalProperties")
        .unwrap_or(schema_path);
    schema
        .pointer(owner)
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object)
        .map(|properties| properties.keys().cloned().collect())
        .unwrap_or_default()
}

fn unknown_key(pos: Pos, key: &str, path: &str, known: &[String]) -> Diagnostic {
    let place = if path.is_empty() {
        "at the top level".to_owned()
    } else {
        format!("in `{path}`")
    };
    let diagnostic = Diagnostic::at(pos, format!("unknown key `{key}` {place}"));
    match closest(key, known) {
        Some(suggestion) => diagnostic.hint(format!("did you mean `{suggestion}`?")),
        None if known.is_empty() => diagnostic,
        None => diagnostic.hint(format!(
            "the keys allowed here are {}",
            known
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

fn missing_key(tree: &Tree, pointer: &str, property: &str) -> Diagnostic {
    let hint = match property {
        "app" => "add `app: <name>` at the top of the file, e.g. `app: shop`",
        "services" => "add a `services:` mapping with at least one service",
        "run" => {
            "add the command that starts the service, e.g. `run: [\"./server\", \"--port\", \"$PORT\"]`"
        }
        _ => "add it",
    };
    if pointer.is_empty() {
        // The document root has no key of its own; point at its start.
        let pos = tree.value_pos(pointer);
        return Diagnostic::at(Pos { len: 0, ..pos }, format!("missing `{property}`")).hint(hint);
    }
    let owner = match pointer.strip_prefix("/services/") {
        Some(name) if !name.contains('/') => format!(
            "service `{}`",
            display_path(pointer).trim_start_matches("services.")
        ),
        _ => format!("`{}`", display_path(pointer)),
    };
    Diagnostic::at(
        tree.key_pos(pointer),
        format!("missing `{property}` in {owner}"),
    )
    .hint(hint)
}

fn wrong_type(
    pos: Pos,
    path: &str,
    kind: &TypeKind,
    instance: &Value,
    written: Option<&str>,
) -> Diagnostic {
    let expected = match kind {
        TypeKind::Single(t) => type_name(*t).to_owned(),
        TypeKind::Multiple(set) => {
            let names: Vec<&str> = set
                .iter()
                .map(|t| match t {
                    JsonType::Boolean => "a boolean",
                    other => type_name(other),
                })
                .collect();
            match names.split_last() {
                Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
                _ => names.join(""),
            }
        }
    };
    let found = value_kind(instance);
    let what = if path.is_empty() {
        "the file".to_owned()
    } else {
        format!("`{path}`")
    };
    let diagnostic = Diagnostic::at(pos, format!("{what} must be {expected}, not {found}"));
    let is_list = matches!(kind, TypeKind::Single(JsonType::Array));
    match (path.rsplit('.').next(), instance) {
        (Some(key @ ("run" | "build" | "test" | "release")), Value::String(command)) if is_list => {
            let words: Vec<String> = command
                .split_whitespace()
                .map(|w| Value::String(w.to_owned()).to_string())
                .collect();
            diagnostic.hint(format!(
                "write the command as a list of arguments: `{key}: [{}]`",
                words.join(", ")
            ))
        }
        (Some(key @ ("routes" | "secrets")), Value::String(item)) if is_list => {
            diagnostic.hint(format!("write it as a list: `{key}: [\"{item}\"]`"))
        }
        (Some(name), Value::Null) if path == format!("environments.{name}") => diagnostic.hint(
            format!("write `{name}: {{}}` to declare it without changes"),
        ),
        (_, Value::Null) => {
            diagnostic.hint("give it a value, or remove the key to use the default")
        }
        (_, Value::Number(_) | Value::Bool(_))
            if matches!(kind, TypeKind::Single(JsonType::String)) =>
        {
            let text = written.map_or_else(|| instance.to_string(), str::to_owned);
            diagnostic.hint(format!("quote it to make it text: `\"{text}\"`"))
        }
        _ if path.is_empty() => {
            diagnostic.hint("the file must be a mapping with `app` and `services` keys")
        }
        _ => diagnostic,
    }
}

/// Names a JSON Schema type the way a YAML author thinks of it.
fn type_name(t: JsonType) -> &'static str {
    match t {
        JsonType::Null => "empty",
        JsonType::Boolean => "`true` or `false`",
        JsonType::Integer => "a whole number",
        JsonType::Number => "a number",
        JsonType::String => "a string",
        JsonType::Array => "a list",
        JsonType::Object => "a mapping",
    }
}

/// Names the kind of a value found in the file.
pub(crate) fn value_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "empty",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a number with a fraction",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Finds the known key closest to `key`, if it is close enough to be a likely typo.
pub(crate) fn closest<'a>(key: &str, known: &'a [String]) -> Option<&'a str> {
    let key = key.to_lowercase();
    known
        .iter()
        .map(|candidate| (edit_distance(&key, candidate), candidate))
        .filter(|(distance, candidate)| {
            *distance <= (candidate.chars().count() / 3).max(1)
                || (key.len() >= 3 && candidate.starts_with(&key))
        })
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate.as_str())
}

/// The edit distance between two strings in characters, counting an insertion, deletion,
/// substitution or swap of two neighbours as one edit (optimal string alignment).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    // rows[i][j] is the distance between the first i chars of `a` and the first j of `b`.
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("helth", "health"), 1);
        assert_eq!(edit_distance("port", "port"), 0);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("prot", "port"), 1);
    }

    #[test]
    fn suggests_only_close_keys() {
        let known: Vec<String> = ["run", "health", "scaling", "routes", "port"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(closest("helth", &known), Some("health"));
        assert_eq!(closest("Port", &known), Some("port"));
        assert_eq!(closest("route", &known), Some("routes"));
        assert_eq!(closest("scal", &known), Some("scaling"));
        assert_eq!(closest("banana", &known), None);
    }

    #[test]
    fn the_schema_compiles_and_is_a_valid_draft7_schema() {
        let compiled = compiled();
        assert!(jsonschema::meta::is_valid(&compiled.schema));
    }
}
