//! The rules pass: value formats and cross-field rules, checked on the JSON tree.
//!
//! Each rule runs whenever the values it looks at are individually well-formed, even if
//! other parts of the file are broken, so one run reports as many problems as possible:
//! names, durations, ports, probes, routes (within and across services), `min <= max`,
//! fixed ports, commands, secrets, and (in submodules) the deploy strategy and the
//! autoscaling windows. Values whose whole check lives here are added to `owned`, so the
//! structural pass does not report them a second time with a vaguer message.
//!
//! The same rules run on the base spec and on every environment's merged view of it
//! (see `environments.rs`); the environments section itself is checked there.

mod databases;
mod deploy;
mod resources;
mod scaling;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::diagnostic::{Diagnostic, Pos};
use crate::duration::{self, DurationError};
use crate::size::{self, SizeError};
use crate::structure::value_kind;
use crate::tree::{Tree, display_path, escape_pointer};

/// Runs every rule over `tree`.
pub(crate) fn check(tree: &Tree, out: &mut Vec<Diagnostic>, owned: &mut HashSet<String>) {
    let Some(root) = tree.json.as_object() else {
        return;
    };
    if let Some(Value::String(app)) = root.get("app")
        && !is_dns_label(app)
    {
        out.push(
            Diagnostic::at(tree.value_pos("/app"), format!("bad app name `{app}`"))
                .hint(dns_label_hint(app)),
        );
    }
    let Some(Value::Object(services)) = root.get("services") else {
        return;
    };
    let mut rules = Rules {
        tree,
        out,
        owned,
        routes: HashMap::new(),
        ports: HashMap::new(),
    };
    // Services are visited in file order, so "first" and "second" mean what the reader sees.
    let mut in_file_order: Vec<(&String, &Value)> = services.iter().collect();
    in_file_order.sort_by_key(|(name, _)| tree.key_pos(&service_pointer(name)).offset);
    for (name, service) in in_file_order {
        rules.service(name, service);
    }
    if let Some(Value::Object(https)) = root.get("https")
        && let Some(hsts) = https.get("hsts")
    {
        // `0s` is how a site withdraws an HSTS policy it sent before.
        rules.duration("/https/hsts", hsts, true);
    }
    databases::check(tree, root, rules.out);
}

fn service_pointer(name: &str) -> String {
    format!("/services/{}", escape_pointer(name))
}

/// State shared across services: which routes and fixed ports are taken, and by whom.
struct Rules<'a> {
    tree: &'a Tree,
    out: &'a mut Vec<Diagnostic>,
    owned: &'a mut HashSet<String>,
    /// Normalised route -> (service, line) of its first claim.
    routes: HashMap<String, (String, usize)>,
    /// Fixed port -> (service, line) of its first use.
    ports: HashMap<u64, (String, usize)>,
}

impl Rules<'_> {
    fn service(&mut self, name: &str, service: &Value) {
        let pointer = service_pointer(name);
        if !is_dns_label(name) {
            self.out.push(
                Diagnostic::at(
                    self.tree.key_pos(&pointer),
                    format!("bad service name `{name}`"),
                )
                .hint(dns_label_hint(name)),
            );
        }
        let Some(service) = service.as_object() else {
            return;
        };
        self.process_or_container(name, &pointer, service);
        for (command, example) in COMMANDS {
            if let Some(Value::Array(argv)) = service.get(command)
                && let Some(Value::String(program)) = argv.first()
                && program.trim().is_empty()
            {
                self.out.push(
                    Diagnostic::at(
                        self.tree.value_pos(&format!("{pointer}/{command}/0")),
                        format!("the program in `{command}` is empty"),
                    )
                    .hint(format!(
                        "the first item of `{command}` is the program to start, e.g. `{example}`"
                    )),
                );
            }
        }
        if let Some(Value::Object(env)) = service.get("env") {
            self.env(&pointer, env);
        }
        if let Some(Value::Array(secrets)) = service.get("secrets") {
            self.secrets(
                &pointer,
                secrets,
                service.get("env").and_then(Value::as_object),
            );
        }
        if let Some(Value::Object(volumes)) = service.get("volumes") {
            self.volumes(&pointer, volumes);
        }
        if let Some(timeout) = service.get("release_timeout") {
            self.duration(&format!("{pointer}/release_timeout"), timeout, false);
        }
        let port = service
            .get("port")
            .and_then(|port| self.port(name, &format!("{pointer}/port"), port));
        if let Some(Value::Object(health)) = service.get("health") {
            self.health(&format!("{pointer}/health"), health);
        }
        let max_instances = match service.get("scaling") {
            None => Some(1),
            Some(Value::Object(scaling)) => self.scaling(&format!("{pointer}/scaling"), scaling),
            Some(_) => None,
        };
        if let (Some((port, port_pos)), Some(max)) = (port, max_instances)
            && max > 1
        {
            let message = format!(
                "service `{name}` has the fixed port {port} but may run up to {max} instances"
            );
            self.out.push(
                Diagnostic::at(port_pos, message)
                    .hint("two instances cannot share a port; use `port: auto`"),
            );
        }
        if let Some(Value::Object(resources)) = service.get("resources") {
            self.resources(&format!("{pointer}/resources"), resources);
        }
        if let Some(Value::Array(routes)) = service.get("routes") {
            self.routes(name, &format!("{pointer}/routes"), routes);
        }
        if let Some(Value::Object(shutdown)) = service.get("shutdown")
            && let Some(grace) = shutdown.get("grace")
        {
            self.duration(&format!("{pointer}/shutdown/grace"), grace, true);
        }
        if let Some(Value::Object(deploy)) = service.get("deploy") {
            self.deploy(&format!("{pointer}/deploy"), deploy);
        }
        if let Some(Value::Object(limits)) = service.get("limits")
            && let Some(body) = limits.get("body")
        {
            self.size(&format!("{pointer}/limits/body"), body);
        }
    }

    /// Checks a size value such as `10MiB` (or `unlimited`).
    fn size(&mut self, pointer: &str, value: &Value) {
        self.owned.insert(pointer.to_owned());
        let pos = self.tree.value_pos(pointer);
        let units = "units are B, kB, MB, GB, TB and KiB, MiB, GiB, TiB (powers of 1024); \
                     or write `unlimited`";
        let text = match value {
            Value::String(text) => text.clone(),
            Value::Number(_) => self
                .tree
                .scalar_text
                .get(pointer)
                .cloned()
                .unwrap_or_else(|| value.to_string()),
            other => {
                self.out.push(
                    Diagnostic::at(
                        pos,
                        format!(
                            "`{}` must be a size such as `10MiB`, not {}",
                            display_path(pointer),
                            value_kind(other)
                        ),
                    )
                    .hint(units),
                );
                return;
            }
        };
        let problem = match size::parse(&text) {
            Ok(_) => return,
            Err(SizeError::MissingUnit(number)) => Diagnostic::at(
                pos,
                format!("bad size `{}`: add a unit, e.g. `{number}MiB`", text.trim()),
            )
            .hint(units),
            Err(SizeError::UnknownUnit(unit)) => Diagnostic::at(
                pos,
                format!("bad size `{}`: unknown unit `{unit}`", text.trim()),
            )
            .hint(units),
            Err(SizeError::TooLarge) => {
                Diagnostic::at(pos, format!("bad size `{}`: too large", text.trim()))
                    .hint("write `unlimited` for no limit")
            }
            Err(SizeError::Malformed) => {
                Diagnostic::at(pos, format!("bad size `{}`", text.trim())).hint(
                    "write a whole number followed by a unit, e.g. `512KiB` or `10MiB`, or `unlimited`",
                )
            }
        };
        self.out.push(problem);
    }

    /// Checks that a service has exactly one of `run` (a native process) and `image` (a
    /// container), a well-formed image name, and no key that only the other kind uses.
    fn process_or_container(&mut self, name: &str, pointer: &str, service: &Map<String, Value>) {
        let key = |k: &str| format!("{pointer}/{k}");
        match (service.get("run"), service.get("image")) {
            (None, None) => self.out.push(
                Diagnostic::at(
                    self.tree.key_pos(pointer),
                    format!("missing `run` or `image` in service `{name}`"),
                )
                .hint("add `run: [\"./server\"]` to run a native process, or `image: name:tag` to run a container"),
            ),
            (Some(_), Some(_)) => {
                let run_line = self.tree.key_pos(&key("run")).line;
                self.out.push(
                    Diagnostic::at(
                        self.tree.key_pos(&key("image")),
                        format!("service `{name}` has both `run` (line {run_line}) and `image`"),
                    )
                    .hint("a service runs either a native process (`run`) or a container (`image`); remove one of them"),
                );
            }
            _ => {}
        }
        if let Some(Value::String(image)) = service.get("image")
            && !is_image_reference(image)
        {
            self.out.push(
                Diagnostic::at(
                    self.tree.value_pos(&key("image")),
                    format!("bad image `{image}`"),
                )
                .hint("write the image as `name[:tag]` or `name@sha256:<digest>`, without spaces, e.g. `clinic/api:1.4`"),
            );
        }
        if service.contains_key("image") {
            for only_run in ["build", "artifact", "test", "volumes", "workdir"] {
                if service.contains_key(only_run) {
                    self.out.push(
                        Diagnostic::at(
                            self.tree.key_pos(&key(only_run)),
                            format!("`{only_run}` applies to native processes (`run`), not to the container service `{name}`"),
                        )
                        .hint("a container runs its image as it is: build the image before deploying (e.g. `docker build -t name:tag .`), and remove this key"),
                    );
                }
            }
        } else {
            if service.contains_key("command") {
                self.out.push(
                    Diagnostic::at(
                        self.tree.key_pos(&key("command")),
                        format!(
                            "`command` applies to container services (`image`), not to `{name}`"
                        ),
                    )
                    .hint("for a native process, the program and its arguments go in `run`"),
                );
            }
            if service.contains_key("dockerfile") {
                self.out.push(
                    Diagnostic::at(
                        self.tree.key_pos(&key("dockerfile")),
                        format!("`dockerfile` applies to container services (`image`), not to `{name}`"),
                    )
                    .hint("add `image: name:tag` to build and run the Dockerfile's image as a container, or use `build:` for a native process"),
                );
            }
        }
    }

    /// Checks secret names: well-formed, listed once, and not also set in `env`.
    fn secrets(&mut self, pointer: &str, secrets: &[Value], env: Option<&Map<String, Value>>) {
        // Name -> line of its first listing, for repeated names.
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (i, secret) in secrets.iter().enumerate() {
            let Value::String(name) = secret else {
                continue;
            };
            let pos = self.tree.value_pos(&format!("{pointer}/secrets/{i}"));
            if !is_env_name(name) {
                self.out.push(
                    Diagnostic::at(pos, format!("bad secret name `{name}`")).hint(format!(
                        "secrets are environment variables: names use letters, digits and `_`, and do not start with a digit, e.g. `{}`",
                        env_name_suggestion(name)
                    )),
                );
                continue;
            }
            if let Some(line) = seen.get(name.as_str()) {
                self.out.push(
                    Diagnostic::at(pos, format!("secret `{name}` is listed twice"))
                        .hint(format!("remove one of them (the first is on line {line})")),
                );
                continue;
            }
            seen.insert(name, pos.line);
            if env.is_some_and(|env| env.contains_key(name)) {
                let key = format!("{pointer}/env/{}", escape_pointer(name));
                self.out.push(
                    Diagnostic::at(
                        self.tree.key_pos(&key),
                        format!("`{name}` is set in `env` but is also a secret (line {})", pos.line),
                    )
                    .hint(format!(
                        "a secret's value comes from the secret store; remove `{name}` from `env`, or from `secrets` to keep this value"
                    )),
                );
            }
        }
    }

    /// Checks volume paths: relative, inside the service's folder, not the folder itself,
    /// and not inside one another.
    fn volumes(&mut self, pointer: &str, volumes: &Map<String, Value>) {
        let mut seen: Vec<(std::path::PathBuf, &str)> = Vec::new();
        for (name, path) in volumes {
            let Value::String(path) = path else {
                continue;
            };
            let at = format!("{pointer}/volumes/{}", escape_pointer(name));
            let pos = self.tree.value_pos(&at);
            let normal = crate::resolve::normalise(std::path::Path::new(path));
            let inside = !path.starts_with('/')
                && normal
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_)))
                && normal.components().next().is_some();
            if !inside {
                self.out.push(
                    Diagnostic::at(pos, format!("volume `{name}` must be a folder inside the service's folder, not `{path}`"))
                        .hint("give a relative path below `workdir`, e.g. `./data`; the code snapshot leaves it out and every revision sees the same folder there"),
                );
                continue;
            }
            if let Some((other, other_name)) = seen
                .iter()
                .find(|(p, _)| p.starts_with(&normal) || normal.starts_with(p))
            {
                self.out.push(
                    Diagnostic::at(
                        pos,
                        format!(
                            "volume `{name}` overlaps volume `{other_name}` ({})",
                            other.display()
                        ),
                    )
                    .hint("volumes are separate folders; declare one of them"),
                );
                continue;
            }
            seen.push((normal, name));
        }
    }

    fn env(&mut self, pointer: &str, env: &Map<String, Value>) {
        for name in env.keys() {
            if !is_env_name(name) {
                let key = format!("{pointer}/env/{}", escape_pointer(name));
                self.out.push(
                    Diagnostic::at(
                        self.tree.key_pos(&key),
                        format!("bad environment variable name `{name}`"),
                    )
                    .hint(format!(
                        "names use letters, digits and `_`, and do not start with a digit, e.g. `{}`",
                        env_name_suggestion(name)
                    )),
                );
            }
        }
    }

    /// Checks `port`; returns the fixed port and its position, if it is a valid fixed port.
    fn port(&mut self, service: &str, pointer: &str, port: &Value) -> Option<(u64, Pos)> {
        self.owned.insert(pointer.to_owned());
        let pos = self.tree.value_pos(pointer);
        let hint = "use `auto` or a port number from 1 to 65535";
        match port {
            Value::String(text) if text == "auto" => None,
            Value::Number(number) => match number.as_u64() {
                Some(n @ 1..=65535) => {
                    match self.ports.get(&n) {
                        Some((other, line)) => self.out.push(
                            Diagnostic::at(
                                pos,
                                format!(
                                    "port {n} is already used by service `{other}` (line {line})"
                                ),
                            )
                            .hint("give each service its own port, or use `port: auto`"),
                        ),
                        None => {
                            self.ports.insert(n, (service.to_owned(), pos.line));
                        }
                    }
                    Some((n, pos))
                }
                _ => {
                    self.out.push(
                        Diagnostic::at(pos, format!("port {number} is out of range")).hint(hint),
                    );
                    None
                }
            },
            Value::String(text) => {
                self.out
                    .push(Diagnostic::at(pos, format!("bad port `{text}`")).hint(hint));
                None
            }
            other => {
                self.out.push(
                    Diagnostic::at(
                        pos,
                        format!(
                            "`port` must be `auto` or a number, not {}",
                            value_kind(other)
                        ),
                    )
                    .hint(hint),
                );
                None
            }
        }
    }

    fn health(&mut self, pointer: &str, health: &Map<String, Value>) {
        for probe in ["ready", "live"] {
            if let Some(Value::Object(settings)) = health.get(probe) {
                self.probe(&format!("{pointer}/{probe}"), probe, settings);
            }
        }
        if let Some(timeout) = health.get("startup_timeout") {
            self.duration(&format!("{pointer}/startup_timeout"), timeout, false);
        }
    }

    fn probe(&mut self, pointer: &str, name: &str, probe: &Map<String, Value>) {
        let http = probe.get("http");
        let tcp = probe.get("tcp");
        if let Some(Value::String(path)) = http
            && !path.starts_with('/')
        {
            self.out.push(
                Diagnostic::at(
                    self.tree.value_pos(&format!("{pointer}/http")),
                    format!("health check path `{path}` must start with `/`"),
                )
                .hint(format!("write `/{path}`")),
            );
        }
        let http_ok = http.is_none_or(Value::is_string);
        let tcp_ok = tcp.is_none_or(Value::is_boolean);
        if http_ok && tcp_ok {
            let uses_tcp = tcp == Some(&Value::Bool(true));
            if http.is_some() && uses_tcp {
                self.out.push(
                    Diagnostic::at(
                        self.tree.key_pos(&format!("{pointer}/tcp")),
                        format!("the `{name}` probe sets both `http` and `tcp`"),
                    )
                    .hint("use one: remove `tcp: true` to probe over HTTP, or remove `http`"),
                );
            } else if http.is_none() && !uses_tcp {
                self.out.push(
                    Diagnostic::at(
                        self.tree.key_pos(pointer),
                        format!("the `{name}` probe needs `http: <path>` or `tcp: true`"),
                    )
                    .hint(format!("e.g. `{name}: {{ http: /health }}`")),
                );
            }
        }
        for field in ["interval", "timeout"] {
            if let Some(value) = probe.get(field) {
                self.duration(&format!("{pointer}/{field}"), value, false);
            }
        }
    }

    /// Checks `min <= max` and the autoscaling windows; returns the effective maximum if
    /// both bounds are well-formed.
    fn scaling(&mut self, pointer: &str, scaling: &Map<String, Value>) -> Option<u32> {
        self.scaling_windows(pointer, scaling);
        let min = count(scaling.get("min"))?;
        let max = count(scaling.get("max"))?;
        match (min, max) {
            (Some(min), Some(max)) if min > max => {
                self.out.push(
                    Diagnostic::at(
                        self.tree.value_pos(&format!("{pointer}/min")),
                        format!("`scaling.min` ({min}) is greater than `scaling.max` ({max})"),
                    )
                    .hint(format!("raise `max` to at least {min}, or lower `min`")),
                );
                None
            }
            (_, Some(max)) => Some(max),
            (Some(min), None) => Some(min.max(1)),
            (None, None) => Some(1),
        }
    }

    fn routes(&mut self, service: &str, pointer: &str, routes: &[Value]) {
        // Normalised route -> line, for duplicates within this service.
        let mut own: HashMap<String, usize> = HashMap::new();
        for (i, route) in routes.iter().enumerate() {
            let Value::String(route) = route else {
                continue;
            };
            let pos = self.tree.value_pos(&format!("{pointer}/{i}"));
            if !route.starts_with('/') {
                self.out.push(
                    Diagnostic::at(pos, format!("route `{route}` must start with `/`"))
                        .hint(format!("write `/{route}`")),
                );
                continue;
            }
            if route.contains(|c: char| c.is_whitespace() || c == '?' || c == '#') {
                self.out.push(
                    Diagnostic::at(
                        pos,
                        format!("route `{route}` must not contain spaces, `?` or `#`"),
                    )
                    .hint("a route is a plain path prefix such as `/api`"),
                );
                continue;
            }
            let key = normalise_route(route);
            if let Some(line) = own.get(&key) {
                self.out.push(
                    Diagnostic::at(
                        pos,
                        format!("route `{route}` is listed twice in service `{service}`"),
                    )
                    .hint(format!("remove one of them (the first is on line {line})")),
                );
                continue;
            }
            own.insert(key.clone(), pos.line);
            match self.routes.get(&key) {
                Some((other, line)) => self.out.push(
                    Diagnostic::at(
                        pos,
                        format!(
                            "route `{route}` is already claimed by service `{other}` (line {line})"
                        ),
                    )
                    .hint("a path prefix can go to one service only; remove it from one of them"),
                ),
                None => {
                    self.routes.insert(key, (service.to_owned(), pos.line));
                }
            }
        }
    }

    /// Checks a duration value; `allow_zero` says whether `0s` makes sense for it.
    /// Returns the duration if it is valid.
    fn duration(&mut self, pointer: &str, value: &Value, allow_zero: bool) -> Option<Duration> {
        self.owned.insert(pointer.to_owned());
        let pos = self.tree.value_pos(pointer);
        let path = display_path(pointer);
        let units = "units are ms, s, m, h and d; combine them like `1h30m`";
        let text = match value {
            Value::String(text) => text.clone(),
            Value::Number(_) => {
                let written = self
                    .tree
                    .scalar_text
                    .get(pointer)
                    .cloned()
                    .unwrap_or_else(|| value.to_string());
                self.out.push(
                    Diagnostic::at(
                        pos,
                        format!("bad duration `{written}`: add a unit, e.g. `{written}s`"),
                    )
                    .hint(units),
                );
                return None;
            }
            other => {
                self.out.push(
                    Diagnostic::at(
                        pos,
                        format!(
                            "`{path}` must be a duration such as `5s`, not {}",
                            value_kind(other)
                        ),
                    )
                    .hint(units),
                );
                return None;
            }
        };
        let problem = match duration::parse(&text) {
            Ok(d) if d == Duration::ZERO && !allow_zero => {
                Diagnostic::at(pos, format!("`{path}` must be longer than 0")).hint("e.g. `1s`")
            }
            Ok(d) => return Some(d),
            Err(DurationError::MissingUnit(number)) => Diagnostic::at(
                pos,
                format!("bad duration `{text}`: add a unit, e.g. `{number}s`"),
            )
            .hint(units),
            Err(DurationError::UnknownUnit(unit)) => {
                Diagnostic::at(pos, format!("bad duration `{text}`: unknown unit `{unit}`"))
                    .hint(units)
            }
            Err(DurationError::UnitOrder) => Diagnostic::at(
                pos,
                format!("bad duration `{text}`: units must go from largest to smallest, each once"),
            )
            .hint("e.g. `1h30m`"),
            Err(DurationError::SubMillisecond) => Diagnostic::at(
                pos,
                format!("bad duration `{text}`: the smallest step is 1ms"),
            )
            .hint("round it to whole milliseconds"),
            Err(DurationError::TooLarge) => {
                Diagnostic::at(pos, format!("bad duration `{text}`: too large"))
            }
            Err(DurationError::Malformed) => Diagnostic::at(pos, format!("bad duration `{text}`"))
                .hint("write a number followed by a unit, e.g. `500ms`, `30s` or `1h30m`"),
        };
        self.out.push(problem);
        None
    }
}

/// Whether `image` can name a container image: not empty, no whitespace or control
/// characters, not starting with `-` (the engine checks the rest when it resolves it).
fn is_image_reference(image: &str) -> bool {
    !image.is_empty()
        && !image.starts_with('-')
        && !image.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// The commands a service may give, with an example program for hints.
const COMMANDS: [(&str, &str); 5] = [
    ("run", "./server"),
    ("command", "/bin/server"),
    ("build", "cargo"),
    ("test", "pytest"),
    ("release", "./migrate"),
];

/// Reads an optional instance count: `Some(None)` if absent, `None` if not a valid `u32`.
fn count(value: Option<&Value>) -> Option<Option<u32>> {
    match value {
        None => Some(None),
        Some(value) => value.as_u64().and_then(|n| u32::try_from(n).ok()).map(Some),
    }
}

/// Routes `/api` and `/api/` claim the same prefix.
fn normalise_route(route: &str) -> String {
    let trimmed = route.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_owned()
    } else {
        trimmed.to_owned()
    }
}

pub(crate) use slipway_core::names::{is_name as is_dns_label, name_hint as dns_label_hint};

/// Whether `name` is a valid environment variable name: `[A-Za-z_][A-Za-z0-9_]*`.
pub(crate) fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn env_name_suggestion(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if cleaned.starts_with(|c: char| c.is_ascii_digit()) || cleaned.is_empty() {
        format!("_{cleaned}")
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_names() {
        assert!(is_env_name("LOG_LEVEL"));
        assert!(is_env_name("_x1"));
        assert!(!is_env_name("1X"));
        assert!(!is_env_name("LOG-LEVEL"));
        assert!(!is_env_name(""));
        assert_eq!(env_name_suggestion("LOG-LEVEL"), "LOG_LEVEL");
        assert_eq!(env_name_suggestion("9LIVES"), "_9LIVES");
    }

    #[test]
    fn routes_with_and_without_trailing_slash_are_the_same() {
        assert_eq!(normalise_route("/api/"), "/api");
        assert_eq!(normalise_route("/api"), "/api");
        assert_eq!(normalise_route("/"), "/");
        assert_eq!(normalise_route("//"), "/");
    }
}
