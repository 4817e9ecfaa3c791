//! `databases:` and the services' `uses:`: every used name is declared, used once per
//! service, and its URL's variable clashes with nothing else the service sets; each
//! database's `settings` are plausible names of its engine, none of them one Slipway owns.

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
    for (name, database) in &declared {
        settings(tree, name, database, out);
    }
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

/// The PostgreSQL settings Slipway sets itself, and why a spec may not.
const POSTGRES_OWNED: &[(&str, &str)] = &[
    (
        "listen_addresses",
        "the database listens on a Unix socket only, never on TCP",
    ),
    ("port", "the socket's name carries the port Slipway chose"),
    (
        "unix_socket_directories",
        "the socket is in the database's private folder, where the URL points",
    ),
    (
        "unix_socket_group",
        "the socket's folder is private to the database's user",
    ),
    (
        "unix_socket_permissions",
        "the socket's folder is private to the database's user",
    ),
    (
        "data_directory",
        "the data is in the folder Slipway made for this database",
    ),
    ("config_file", "Slipway writes the configuration files"),
    (
        "hba_file",
        "Slipway writes who may connect (peer for itself, a password for the app)",
    ),
    (
        "ident_file",
        "Slipway writes who may connect (peer for itself, a password for the app)",
    ),
    (
        "external_pid_file",
        "Slipway finds the server through postmaster.pid",
    ),
    ("include", "Slipway writes the configuration files"),
    ("include_dir", "Slipway writes the configuration files"),
    (
        "include_if_exists",
        "Slipway writes the configuration files",
    ),
];

/// The Redis settings Slipway sets itself, and why a spec may not.
const REDIS_OWNED: &[(&str, &str)] = &[
    ("port", "Redis listens on a Unix socket only, never on TCP"),
    ("bind", "Redis listens on a Unix socket only, never on TCP"),
    (
        "unixsocket",
        "the socket is in the database's private folder, where the URL points",
    ),
    (
        "unixsocketperm",
        "the socket is private to the database's user",
    ),
    (
        "requirepass",
        "the password is generated and kept as an encrypted secret",
    ),
    (
        "masterauth",
        "the password is generated and kept as an encrypted secret",
    ),
    (
        "aclfile",
        "the password is generated and kept as an encrypted secret",
    ),
    (
        "user",
        "the password is generated and kept as an encrypted secret",
    ),
    (
        "dir",
        "the data is in the folder Slipway made for this database",
    ),
    (
        "dbfilename",
        "backups read the snapshot where Slipway put it",
    ),
    (
        "appendonly",
        "the append-only file is what keeps acknowledged writes across a crash",
    ),
    (
        "appendfilename",
        "the append-only file is where Slipway put it",
    ),
    (
        "appenddirname",
        "the append-only file is where Slipway put it",
    ),
    ("daemonize", "Slipway starts and finds the server"),
    ("pidfile", "Slipway starts and finds the server"),
    ("logfile", "the log is in the database's folder"),
    ("supervised", "Slipway starts and finds the server"),
    ("include", "Slipway writes the configuration file"),
    ("rename-command", "Slipway sends these commands itself"),
    (
        "tls-port",
        "Redis listens on a Unix socket only, never on TCP",
    ),
];

/// Whether `name` can be a PostgreSQL setting: lowercase letters, digits and `_`, with one
/// `.` for an extension's (`auto_explain.log_min_duration`).
fn postgres_name(name: &str) -> bool {
    let word = |w: &str| {
        w.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && w.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    match name.split_once('.') {
        Some((ext, rest)) => word(ext) && word(rest),
        None => word(name),
    }
}

/// Whether `name` can be a Redis setting: lowercase letters, digits and `-`.
fn redis_name(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// The longest setting value taken.
const MAX_VALUE: usize = 1024;

fn settings(tree: &Tree, database: &str, spec: &Value, out: &mut Vec<Diagnostic>) {
    let Some(Value::Object(settings)) = spec.get("settings") else {
        return;
    };
    let (engine, owned, plausible, shape): (_, _, fn(&str) -> bool, _) =
        match spec.get("engine").and_then(Value::as_str) {
            Some("postgres") => (
                "PostgreSQL",
                POSTGRES_OWNED,
                postgres_name,
                "lowercase letters, digits and `_`, e.g. `work_mem`",
            ),
            Some("redis") => (
                "Redis",
                REDIS_OWNED,
                redis_name,
                "lowercase letters, digits and `-`, e.g. `maxmemory-policy`",
            ),
            _ => return,
        };
    let base = format!("/databases/{}/settings", escape_pointer(database));
    for (name, value) in settings {
        let pointer = format!("{base}/{}", escape_pointer(name));
        if let Some((_, why)) = owned.iter().find(|(owned, _)| *owned == name) {
            out.push(
                Diagnostic::at(
                    tree.key_pos(&pointer),
                    format!("`{name}` of database `{database}` is set by Slipway: {why}"),
                )
                .hint(format!(
                    "remove `{name}` from `databases.{database}.settings`"
                )),
            );
            continue;
        }
        if !plausible(name) {
            out.push(
                Diagnostic::at(
                    tree.key_pos(&pointer),
                    format!("`{name}` is not a {engine} setting name (database `{database}`)"),
                )
                .hint(format!("a setting's name is {shape}")),
            );
            continue;
        }
        if let Value::String(text) = value {
            if text.contains(['\n', '\r', '\0']) {
                out.push(
                    Diagnostic::at(
                        tree.value_pos(&pointer),
                        format!("the value of `{name}` (database `{database}`) has a line break or a NUL character, which a configuration file cannot hold"),
                    )
                    .hint("write the value on one line"),
                );
            } else if text.len() > MAX_VALUE {
                out.push(
                    Diagnostic::at(
                        tree.value_pos(&pointer),
                        format!("the value of `{name}` (database `{database}`) is {} bytes long, more than the {MAX_VALUE} taken", text.len()),
                    )
                    .hint("shorten it"),
                );
            }
        }
    }
}
