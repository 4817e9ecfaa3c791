//! Environments: the `environments:` section, and the merged view of the spec per environment.
//!
//! An environment is an overlay on the base spec: [`apply`] builds, for one environment,
//! the [`Tree`] the base would be if the overlay had been written into it (mappings merge
//! key by key, lists and single values replace), carrying the overlay's source positions
//! for every value it contributed. The ordinary rules and the schema then run on that view,
//! so a problem caused by an overlay points into the overlay. [`check`] covers the section
//! itself: environment names, hosts, and overlays naming services or databases that do
//! not exist. An environment changes services and the settings of databases.

use std::collections::HashSet;

use serde_json::{Map, Value};

use crate::DEVELOPMENT;
use crate::diagnostic::{Diagnostic, Pos};
use crate::rules::{dns_label_hint, is_dns_label};
use crate::structure::closest;
use crate::tree::{Tree, escape_pointer};

/// The environments the file declares: `development` first, then the others in file order.
pub(crate) fn declared(tree: &Tree) -> Vec<String> {
    let mut names = vec![DEVELOPMENT.to_owned()];
    if let Some(Value::Object(environments)) = tree.json.get("environments") {
        let mut in_file_order: Vec<&String> = environments
            .keys()
            .filter(|name| *name != DEVELOPMENT)
            .collect();
        in_file_order.sort_by_key(|name| tree.key_pos(&pointer(name)).offset);
        names.extend(in_file_order.into_iter().cloned());
    }
    names
}

/// The JSON pointer of an environment.
fn pointer(name: &str) -> String {
    format!("/environments/{}", escape_pointer(name))
}

/// Whether `environment` changes any service (otherwise its view is the base itself).
pub(crate) fn has_overlay(tree: &Tree, environment: &str) -> bool {
    let non_empty = |key: &str| {
        tree.json
            .pointer(&format!("{}/{key}", pointer(environment)))
            .and_then(Value::as_object)
            .is_some_and(|map| !map.is_empty())
    };
    non_empty("services") || non_empty("databases") || non_empty("https")
}

/// The app's host in `environment`: its `host`, or `<app>.localhost` for `development`
/// and `<environment>.<app>.localhost` for the others.
pub(crate) fn host(tree: &Tree, app: &str, environment: &str) -> String {
    let written = tree
        .json
        .pointer(&format!("{}/host", pointer(environment)))
        .and_then(Value::as_str);
    match written {
        Some(host) => host.to_owned(),
        None if environment == DEVELOPMENT => format!("{app}.localhost"),
        None => format!("{environment}.{app}.localhost"),
    }
}

/// The diagnostic for asking for an environment the file does not declare: at the
/// `environments` key, or at the start of the file if there is none.
pub(crate) fn unknown(tree: &Tree, environment: &str, declared: &[String]) -> Diagnostic {
    let message = format!("unknown environment `{environment}`");
    match tree.keys.get("/environments") {
        Some(pos) => {
            let list: Vec<String> = declared.iter().map(|name| format!("`{name}`")).collect();
            let hint = match closest(environment, declared) {
                Some(suggestion) => format!("did you mean `{suggestion}`?"),
                None => format!(
                    "the environments here are {}; to add it, write `{environment}: {{}}` under `environments`",
                    list.join(", ")
                ),
            };
            Diagnostic::at(*pos, message).hint(hint)
        }
        None => Diagnostic::at(Pos::START, message).hint(format!(
            "this file declares only `{DEVELOPMENT}`; to add `{environment}`, add `environments: {{ {environment}: {{}} }}`"
        )),
    }
}

/// Checks the `environments:` section of the base tree: names, hosts, and that overlays
/// name existing services. Shapes and unknown keys are left to the schema.
pub(crate) fn check(tree: &Tree, out: &mut Vec<Diagnostic>) {
    let Some(Value::Object(environments)) = tree.json.get("environments") else {
        return;
    };
    let services: Vec<String> = match tree.json.get("services") {
        Some(Value::Object(services)) => services.keys().cloned().collect(),
        _ => Vec::new(),
    };
    for (name, environment) in environments {
        let here = pointer(name);
        if !is_dns_label(name) {
            out.push(
                Diagnostic::at(
                    tree.key_pos(&here),
                    format!("bad environment name `{name}`"),
                )
                .hint(dns_label_hint(name)),
            );
        }
        let Value::Object(environment) = environment else {
            continue;
        };
        if let Some(Value::String(host)) = environment.get("host")
            && !is_hostname(host)
        {
            out.push(
                Diagnostic::at(
                    tree.value_pos(&format!("{here}/host")),
                    format!("bad host `{host}` for environment `{name}`"),
                )
                .hint(host_hint(host)),
            );
        }
        if let Some(Value::Object(overlays)) = environment.get("services") {
            check_overlay_names(tree, name, &here, overlays, &services, out);
        }
        if let Some(Value::Object(overlays)) = environment.get("databases") {
            check_database_overlay_names(tree, name, &here, overlays, out);
        }
    }
}

/// Reports database overlays for databases that the base does not declare.
fn check_database_overlay_names(
    tree: &Tree,
    environment: &str,
    here: &str,
    overlays: &Map<String, Value>,
    out: &mut Vec<Diagnostic>,
) {
    let declared: Vec<String> = match tree.json.get("databases") {
        Some(Value::Object(databases)) => databases.keys().cloned().collect(),
        _ => Vec::new(),
    };
    for name in overlays.keys().filter(|name| !declared.contains(name)) {
        let key = format!("{here}/databases/{}", escape_pointer(name));
        let hint = match closest(name, &declared) {
            Some(suggestion) => format!("did you mean `{suggestion}`?"),
            None => format!(
                "declare it under the top-level `databases` first, e.g. `databases: {{ {name}: {{ engine: postgres }} }}`"
            ),
        };
        out.push(
            Diagnostic::at(
                tree.key_pos(&key),
                format!(
                    "environment `{environment}` changes database `{name}`, which is not declared under `databases`"
                ),
            )
            .hint(hint),
        );
    }
}

/// Reports overlays for services that the base does not define.
fn check_overlay_names(
    tree: &Tree,
    environment: &str,
    here: &str,
    overlays: &Map<String, Value>,
    services: &[String],
    out: &mut Vec<Diagnostic>,
) {
    let known: HashSet<&str> = services.iter().map(String::as_str).collect();
    for name in overlays
        .keys()
        .filter(|name| !known.contains(name.as_str()))
    {
        let key = format!("{here}/services/{}", escape_pointer(name));
        let hint = match closest(name, services) {
            Some(suggestion) => format!("did you mean `{suggestion}`?"),
            None if services.is_empty() => "define the service under `services` first".to_owned(),
            None => format!(
                "an environment can only change services defined under `services`: {}",
                services
                    .iter()
                    .map(|s| format!("`{s}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        out.push(
            Diagnostic::at(
                tree.key_pos(&key),
                format!(
                    "environment `{environment}` changes service `{name}`, which is not defined under `services`"
                ),
            )
            .hint(hint),
        );
    }
}

/// Whether `host` is a lowercase DNS name: labels of `[a-z0-9-]` (1 to 63 characters, no
/// `-` at either end) separated by dots, at most 253 characters in all.
pub(crate) fn is_hostname(host: &str) -> bool {
    (1..=253).contains(&host.len())
        && host.split('.').all(|label| {
            let bytes = label.as_bytes();
            let edge_ok = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
            (1..=63).contains(&bytes.len())
                && bytes.first().is_some_and(edge_ok)
                && bytes.last().is_some_and(edge_ok)
                && bytes.iter().all(|b| edge_ok(b) || *b == b'-')
        })
}

/// Suggests a host name for a rejected `host`: without scheme, path or port, in lowercase.
fn host_hint(host: &str) -> String {
    let rule = "a host is lowercase names of letters, digits and `-` separated by dots, without a scheme, port or path";
    let without_scheme = host.split_once("://").map_or(host, |(_, rest)| rest);
    let without_path = without_scheme.split('/').next().unwrap_or_default();
    let without_port = without_path.split(':').next().unwrap_or_default();
    let suggestion = without_port.trim().trim_end_matches('.').to_lowercase();
    if is_hostname(&suggestion) && suggestion != host {
        format!("{rule}, e.g. `{suggestion}`")
    } else {
        rule.to_owned()
    }
}

/// Builds the view of the spec in `environment`: the base tree without its `environments`
/// section, with the environment's service overlays merged in.
///
/// Positions follow the values: anything the overlay wrote keeps the overlay's line and
/// column; anything it did not touch keeps the base's. A mapping present in both keeps the
/// base's own position, while its keys come from wherever they were written. Overlays for
/// services missing from the base are skipped (`check` reports them).
pub(crate) fn apply(base: &Tree, environment: &str) -> Tree {
    let mut json = base.json.clone();
    if let Some(root) = json.as_object_mut() {
        root.remove("environments");
    }
    let outside = |pointer: &&String| !within(pointer, "/environments");
    let mut view = Tree {
        json,
        values: base
            .values
            .iter()
            .filter(|(p, _)| outside(p))
            .map(|(p, pos)| (p.clone(), *pos))
            .collect(),
        keys: base
            .keys
            .iter()
            .filter(|(p, _)| outside(p))
            .map(|(p, pos)| (p.clone(), *pos))
            .collect(),
        scalar_text: base
            .scalar_text
            .iter()
            .filter(|(p, _)| outside(p))
            .map(|(p, text)| (p.clone(), text.clone()))
            .collect(),
    };
    let source = format!("{}/services", pointer(environment));
    if let Some(Value::Object(overlays)) = base.json.pointer(&source) {
        let defined: Vec<String> = match view.json.get("services") {
            Some(Value::Object(services)) => services.keys().cloned().collect(),
            _ => Vec::new(),
        };
        let known: Map<String, Value> = overlays
            .iter()
            .filter(|(name, _)| defined.contains(name))
            .map(|(name, overlay)| (name.clone(), overlay.clone()))
            .collect();
        for (name, overlay) in &known {
            // `run` and `image` say how a service runs: an overlay that sets one replaces
            // the other, so an environment can run a process service as a container.
            let service = format!("/services/{}", escape_pointer(name));
            if overlay.get("image").is_some() {
                // What makes and runs a native process's code; the image replaces all of
                // it. `release` stays: a release command does not apply to containers, and
                // dropping a migration silently would be worse than the error that says so.
                for native in ["run", "workdir", "build", "artifact", "test", "volumes"] {
                    forget(&mut view, &service, native);
                }
            }
            if overlay.get("run").is_some() {
                forget(&mut view, &service, "image");
                forget(&mut view, &service, "command");
                forget(&mut view, &service, "dockerfile");
            }
        }
        merge_map(&mut view, base, "/services", &source, &known);
    }
    // The environment's `https` merges into the top-level one, key by key.
    if let Some(https) = base
        .json
        .pointer(&format!("{}/https", pointer(environment)))
    {
        let overlay: Map<String, Value> =
            [("https".to_owned(), https.clone())].into_iter().collect();
        merge_map(&mut view, base, "", &pointer(environment), &overlay);
    }
    let source = format!("{}/databases", pointer(environment));
    if let Some(Value::Object(overlays)) = base.json.pointer(&source) {
        let known: Map<String, Value> = match view.json.get("databases") {
            // Only `settings` may differ between environments (the schema says so of the
            // rest, which is left out of the view rather than merged into it).
            Some(Value::Object(declared)) => overlays
                .iter()
                .filter(|(name, _)| declared.contains_key(*name))
                .filter_map(|(name, overlay)| {
                    let settings = overlay.get("settings")?.clone();
                    let only: Map<String, Value> =
                        std::iter::once(("settings".to_owned(), settings)).collect();
                    Some((name.clone(), Value::Object(only)))
                })
                .collect(),
            _ => Map::new(),
        };
        merge_map(&mut view, base, "/databases", &source, &known);
    }
    view
}

/// Removes `key` of the mapping at `parent` from the view, with its positions.
fn forget(view: &mut Tree, parent: &str, key: &str) {
    let removed = view
        .json
        .pointer_mut(parent)
        .and_then(Value::as_object_mut)
        .and_then(|map| map.remove(key));
    if removed.is_some() {
        let child = format!("{parent}/{}", escape_pointer(key));
        view.values.retain(|p, _| !within(p, &child));
        view.keys.retain(|p, _| !within(p, &child));
        view.scalar_text.retain(|p, _| !within(p, &child));
    }
}

/// Merges the overlay mapping `overlay` (at `source` in `base`) into the mapping at
/// `target` in `view`, key by key.
fn merge_map(
    view: &mut Tree,
    base: &Tree,
    target: &str,
    source: &str,
    overlay: &Map<String, Value>,
) {
    for (key, value) in overlay {
        let escaped = escape_pointer(key);
        let target_child = format!("{target}/{escaped}");
        let source_child = format!("{source}/{escaped}");
        let both_maps = value.is_object()
            && view
                .json
                .pointer(&target_child)
                .is_some_and(Value::is_object);
        if let (true, Value::Object(inner)) = (both_maps, value) {
            merge_map(view, base, &target_child, &source_child, inner);
            continue;
        }
        // Replace: forget every position under the old value, then take the overlay's.
        view.values.retain(|p, _| !within(p, &target_child));
        view.keys.retain(|p, _| !within(p, &target_child));
        view.scalar_text.retain(|p, _| !within(p, &target_child));
        if let Some(parent) = view.json.pointer_mut(target).and_then(Value::as_object_mut) {
            parent.insert(key.clone(), value.clone());
        }
        let moved = |p: &str| format!("{target_child}{}", &p[source_child.len()..]);
        for (p, pos) in base.values.iter().filter(|(p, _)| within(p, &source_child)) {
            view.values.insert(moved(p), *pos);
        }
        for (p, pos) in base.keys.iter().filter(|(p, _)| within(p, &source_child)) {
            view.keys.insert(moved(p), *pos);
        }
        for (p, text) in base
            .scalar_text
            .iter()
            .filter(|(p, _)| within(p, &source_child))
        {
            view.scalar_text.insert(moved(p), text.clone());
        }
    }
}

/// Whether `pointer` is `prefix` itself or inside it.
fn within(pointer: &str, prefix: &str) -> bool {
    pointer
        .strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Whether `pointer` lies in a service overlay (`/environments/<name>/services/<service>`
/// or below). The structural pass leaves those to the merged views, which report them with
/// the service's full context.
pub(crate) fn in_service_overlay(pointer: &str) -> bool {
    let mut segments = pointer.split('/').skip(1);
    segments.next() == Some("environments")
        && segments.next().is_some()
        && segments.next() == Some("services")
        && segments.next().is_some()
}

#[cfg(test)]
mod tests;
