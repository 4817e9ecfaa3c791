//! The file model: the shape of `slipway.yaml` exactly as a user writes it.
//!
//! These types are the single source of truth for the published JSON Schema (see
//! [`crate::json_schema`]) and for the structural validation pass, which checks the parsed
//! YAML tree against that same schema. Fields the user may leave out are `Option`s here;
//! defaults are applied later, when the file model is resolved into [`crate::Spec`].
//! The doc comments on fields become `description`s in the schema, so editors show them.

use std::collections::BTreeMap;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::Deserialize;

/// The regular expression a DNS label (the app name and service names) must match.
pub(crate) const DNS_LABEL_PATTERN: &str = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$";

/// The regular expression an environment variable name must match.
pub(crate) const ENV_NAME_PATTERN: &str = "^[A-Za-z_][A-Za-z0-9_]*$";

/// The regular expression a duration string must match (the exact rules live in `duration.rs`).
pub(crate) const DURATION_PATTERN: &str = r"^\s*([0-9]+(\.[0-9]+)?\s*(ms|s|m|h|d)\s*)+$";

/// A Slipway app: a set of services deployed together from one `slipway.yaml`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "slipway.yaml")]
pub(crate) struct SpecFile {
    /// The app's name: a DNS label (lowercase letters, digits and `-`, at most 40 characters).
    #[schemars(regex(pattern = DNS_LABEL_PATTERN))]
    pub app: String,
    /// The app's services, keyed by service name (a DNS label). At least one is required.
    #[schemars(extend("minProperties" = 1, "propertyNames" = { "pattern": DNS_LABEL_PATTERN }))]
    pub services: BTreeMap<String, ServiceFile>,
}

/// One service: a native process that Slipway runs, health-checks, scales and routes to.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServiceFile {
    /// The program and its arguments, as a list, e.g. `["python3", "-m", "http.server", "$PORT"]`.
    /// `$PORT` is replaced by the port the instance must listen on.
    #[schemars(length(min = 1))]
    pub run: Vec<String>,
    /// The working directory, relative to the directory of `slipway.yaml` (or absolute).
    /// Default: the directory of `slipway.yaml`.
    #[schemars(length(min = 1))]
    pub workdir: Option<String>,
    /// Extra environment variables. Names must match `[A-Za-z_][A-Za-z0-9_]*`; numbers and
    /// booleans are passed as written.
    #[schemars(extend("propertyNames" = { "pattern": ENV_NAME_PATTERN }))]
    pub env: Option<BTreeMap<String, EnvValue>>,
    /// The port each instance listens on: `auto` (default; a free port is chosen and passed as
    /// `$PORT`) or a fixed number from 1 to 65535.
    pub port: Option<PortSetting>,
    /// Health checks. Default: a TCP readiness check, no liveness check.
    pub health: Option<HealthFile>,
    /// How many instances to run. Default: `{ min: 1, max: 1 }`.
    pub scaling: Option<ScalingFile>,
    /// Path prefixes on the app's host that go to this service, e.g. `["/api"]`. Each prefix
    /// must start with `/` and belong to one service only. Default: none (own host only).
    pub routes: Option<Vec<String>>,
    /// How the service is stopped.
    pub shutdown: Option<ShutdownFile>,
    /// How new revisions are rolled out.
    pub deploy: Option<DeployFile>,
}

/// Health checks of a service.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct HealthFile {
    /// The readiness probe: an instance gets traffic only once it passes.
    /// Default: `{ tcp: true, interval: 1s, timeout: 1s, failures: 1 }`.
    pub ready: Option<ProbeFile>,
    /// The liveness probe: an instance that fails it is restarted. Default: none.
    /// Omitted fields default to `interval: 5s, timeout: 1s, failures: 3`.
    pub live: Option<ProbeFile>,
    /// How long a new instance may take to become ready before it is counted as failed.
    /// Default: `30s`.
    pub startup_timeout: Option<DurationText>,
}

/// A health probe: exactly one of `http` or `tcp`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProbeFile {
    /// Probe with an HTTP GET of this path (starting with `/`); any 2xx or 3xx status passes.
    pub http: Option<String>,
    /// Probe by opening a TCP connection to the instance's port.
    pub tcp: Option<bool>,
    /// Time between two probes.
    pub interval: Option<DurationText>,
    /// How long one probe may take.
    pub timeout: Option<DurationText>,
    /// How many probes in a row must fail before the check counts as failed.
    #[schemars(range(min = 1, max = 4_294_967_295u32))]
    pub failures: Option<u32>,
}

/// The number of instances of a service.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScalingFile {
    /// The fewest instances to keep running (0 allows scaling to zero). Default: 1.
    #[schemars(range(min = 0, max = 4_294_967_295u32))]
    pub min: Option<u32>,
    /// The most instances to run; at least 1 and at least `min`. Default: `min`, or 1.
    #[schemars(range(min = 1, max = 4_294_967_295u32))]
    pub max: Option<u32>,
}

/// How a service is stopped.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ShutdownFile {
    /// How long an instance has to exit after SIGTERM before it is killed. Default: `10s`.
    pub grace: Option<DurationText>,
}

/// How new revisions of a service are rolled out.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeployFile {
    /// How long the previous revision stays warm (without traffic) after a switch, so a
    /// rollback is instant. Default: `30s`.
    pub keep_previous: Option<DurationText>,
}

/// A duration written with units, e.g. `500ms`, `1s`, `2m`, `1h30m`, `1.5s`.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub(crate) struct DurationText(pub String);

impl JsonSchema for DurationText {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": DURATION_PATTERN,
            "description": "A duration: a number followed by a unit (ms, s, m, h, d), e.g. `500ms`, `30s`, `1h30m`, `1.5s`.",
            "examples": ["500ms", "1s", "1h30m"],
        })
    }
}

/// The value of an environment variable: a string, or a number or boolean taken as written.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub(crate) struct EnvValue(pub serde_json::Value);

impl JsonSchema for EnvValue {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "EnvValue".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": ["string", "number", "boolean"],
            "description": "The variable's value; numbers and booleans are passed as written.",
        })
    }
}

/// The `port` setting: `auto` or a fixed port number.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub(crate) struct PortSetting(pub serde_json::Value);

impl JsonSchema for PortSetting {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Port".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "anyOf": [
                { "const": "auto" },
                { "type": "integer", "minimum": 1, "maximum": 65535 },
            ],
            "description": "`auto` (a free port is chosen and passed as `$PORT`) or a fixed port from 1 to 65535.",
        })
    }
}

/// Builds the JSON Schema of the file model (draft 7, which editors support best).
///
/// Optional fields are *not* nullable: schemars marks `Option` fields as accepting `null`,
/// but an empty value in `slipway.yaml` (`live:` with nothing after it) is almost always a
/// mistake, so `null` is removed from every type list and `anyOf` here.
pub(crate) fn schema() -> serde_json::Value {
    let generator = schemars::generate::SchemaSettings::draft07().into_generator();
    let mut schema = generator.into_root_schema_for::<SpecFile>().to_value();
    strip_null(&mut schema);
    if let Some(object) = schema.as_object_mut() {
        object.insert(
            "description".into(),
            "A Slipway app: its services, how they run, are health-checked, scaled, routed and deployed.".into(),
        );
    }
    schema
}

/// Removes `null` from `type` arrays and `{"type": "null"}` branches from `anyOf`, recursively.
fn strip_null(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::Object(object) => {
            if let Some(Value::Array(types)) = object.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types.remove(0);
                    object.insert("type".into(), only);
                }
            }
            if let Some(Value::Array(branches)) = object.get_mut("anyOf") {
                branches.retain(|b| b.get("type").is_none_or(|t| t != "null"));
                if branches.len() == 1 {
                    let only = branches.remove(0);
                    object.remove("anyOf");
                    if let Value::Object(inner) = only {
                        for (k, v) in inner {
                            object.entry(k).or_insert(v);
                        }
                    }
                }
            }
            for child in object.values_mut() {
                strip_null(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strip_null),
        _ => {}
    }
}
