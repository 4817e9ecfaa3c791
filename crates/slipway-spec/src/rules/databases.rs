//! `databases:` and the services' `uses:`: every used name is declared, used once per
//! service, and its URL's variable clashes with nothing else the service sets.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::service_pointer;
use crate::diagnostic::Diagnostic;
use crate::tree::{Tree, escape_pointer};

/// The variable a database's URL goes in: its `env`, else the engine's default.
fn env_of(database: &Map<String, Value>) -> Option<String> {
    if let Some(Value::String(env)) = database.get("env") {
        return Some(env.clone());
    }
    match database.get("engine") {
        Some(Value::String(engine)) if engine == "postgres" => Some("DATABASE_URL".into()),
        Some(Value::String(engine)) if engine == "redis" => Some("REDIS_URL".into()),
        _ => None,
    }
}

pub(super) fn check(tree: &Tree, root: &Map<String, Value>, out: &mut Vec<Diagnostic>) {
    if let Some(Value::Object(backups)) = root.get("backups")
        && let Some(Value::String(every)) = backups.get("every")
        && crate::duration::parse(every).is_ok_and(|d| d.is_zero())
    {
        out.push(
            Diagnostic::at(
                tree.value_pos("/backups/every"),
                "`backups.every` must be more than 0",
            )
            .hint(
                "e.g. `every: 24h`; leave `backups` out to back up only on `slipway backup create`",
            ),
        );
    }
    let declared = match root.get("databases") {
        Some(Value::Object(databases)) => databases.clone(),
        _ => Map::new(),
    };
    let Some(Value::Object(services)) = root.get("services") else {
        return;
    };
    for (service_name, service) in services {
        let pointer = service_pointer(service_name);
        let Some(Value::Array(uses)) = service.get("uses") else {
            continue;
        };
        // Name or variable -> line of the entry that took it first.
        let mut names: HashMap<&str, usize> = HashMap::new();
        let mut vars: HashMap<String, (String, usize)> = HashMap::new();
        for (index, used) in uses.iter().enumerate() {
            let Value::String(name) = used else {
                continue;
            };
            let pos = tree.value_pos(&format!("{pointer}/uses/{index}"));
            let Some(database) = declared.get(name) else {
                let known: Vec<&str> = declared.keys().map(String::as_str).collect();
                let hint = if known.is_empty() {
                    format!(
                        "declare it at the top level: `databases: {{ {name}: {{ engine: postgres }} }}`"
                    )
                } else {
                    format!(
                        "the declared databases are: {}; or declare `{name}` under `databases`",
                        known.join(", ")
                    )
                };
                out.push(
                    Diagnostic::at(
                        pos,
                        format!(
                            "service `{service_name}` uses database `{name}`, which is not declared"
                        ),
                    )
                    .hint(hint),
                );
                continue;
            };
            if let Some(line) = names.get(name.as_str()) {
                out.push(
                    Diagnostic::at(pos, format!("database `{name}` is listed twice in `uses`"))
                        .hint(format!("remove one of them (the first is on line {line})")),
                );
                continue;
            }
            names.insert(name, pos.line);
            let Some(env) = database.as_object().and_then(env_of) else {
                continue;
            };
            if let Some((other, line)) = vars.get(&env) {
                out.push(
                    Diagnostic::at(
                        pos,
                        format!(
                            "databases `{other}` (line {line}) and `{name}` would both set `{env}` in service `{service_name}`"
                        ),
                    )
                    .hint(format!(
                        "give one of them another variable, e.g. `databases: {{ {name}: {{ env: {}_URL }} }}`",
                        name.to_uppercase().replace('-', "_")
                    )),
                );
                continue;
            }
            vars.insert(env.clone(), (name.clone(), pos.line));
            let in_env = service
                .get("env")
                .and_then(Value::as_object)
                .is_some_and(|e| e.contains_key(&env));
            let in_secrets = service
                .get("secrets")
                .and_then(Value::as_array)
                .is_some_and(|s| s.iter().any(|v| v.as_str() == Some(env.as_str())));
            if in_env || in_secrets {
                let (key, place) = if in_env {
                    (
                        tree.key_pos(&format!("{pointer}/env/{}", escape_pointer(&env))),
                        "env",
                    )
                } else {
                    (pos, "secrets")
                };
                out.push(
                    Diagnostic::at(
                        key,
                        format!(
                            "`{env}` is set in `{place}` of service `{service_name}` but also carries the URL of database `{name}` (line {})",
                            pos.line
                        ),
                    )
                    .hint(format!(
                        "remove `{env}` from `{place}`, or give the database another variable with `env:` under `databases.{name}`"
                    )),
                );
            }
        }
    }
}
