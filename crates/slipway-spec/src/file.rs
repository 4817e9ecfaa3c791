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
pub(crate) const DNS_LABEL_PATTERN: &str = slipway_core::names::NAME_PATTERN;

/// The regular expression an environment variable name must match.
pub(crate) const ENV_NAME_PATTERN: &str = "^[A-Za-z_][A-Za-z0-9_]*$";
/// Volume names: lowercase letters, digits, `-` and `_`, starting with a letter.
pub(crate) const VOLUME_NAME_PATTERN: &str = "^[a-z][a-z0-9_-]{0,62}$";

/// The regular expression a duration string must match (the exact rules live in `duration.rs`).
pub(crate) const DURATION_PATTERN: &str = r"^\s*([0-9]+(\.[0-9]+)?\s*(ms|s|m|h|d)\s*)+$";

/// The regular expression a percentage (`1%`, `0.5%`) must match; the range is checked in `percent.rs`.
pub(crate) const PERCENT_PATTERN: &str = r"^\s*[0-9]+(\.[0-9]+)?\s*%\s*$";

/// The regular expression a size must match (the exact rules live in `size.rs`).
pub(crate) const SIZE_PATTERN: &str =
    r"^\s*([0-9]+\s*([KkMmGgTt]([Ii][Bb]?|[Bb])|[Bb])|[Uu][Nn][Ll][Ii][Mm][Ii][Tt][Ee][Dd])\s*$";

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
    /// Named environments (DNS labels), each an overlay on the base spec above, e.g.
    /// `production: { host: clinic.example.com, services: { api: { scaling: { min: 2 } } } }`.
    /// In an overlay, mappings merge key by key, while lists and single values replace the
    /// base's. `development` always exists, even when not listed; it is what `slipway deploy`
    /// uses unless told otherwise. Every environment is validated on every run.
    #[schemars(extend("propertyNames" = { "pattern": DNS_LABEL_PATTERN }))]
    #[expect(
        dead_code,
        reason = "environments are read and merged as JSON (`environments.rs`); the field gives them a schema"
    )]
    pub environments: Option<BTreeMap<String, EnvironmentFile>>,
    /// Databases Slipway runs beside the app, keyed by name (a DNS label), e.g.
    /// `db: { engine: postgres, version: "15" }`. Each environment gets its own: staging
    /// never reaches production's data. A service names the ones it needs in `uses`.
    /// Default: none.
    #[schemars(extend("propertyNames" = { "pattern": DNS_LABEL_PATTERN }))]
    pub databases: Option<BTreeMap<String, DatabaseFile>>,
    /// Scheduled backups of every database, each verified by a restore right after it is
    /// taken, e.g. `{ every: 24h, keep: 14 }`. Default: none scheduled (`slipway backup
    /// create` any time).
    pub backups: Option<BackupsFile>,
    /// How the app's hosts treat plain HTTP when the server also serves HTTPS, e.g.
    /// `{ redirect: true, hsts: 365d }`. An environment may set its own (`environments:
    /// { production: { https: { redirect: true } } }`). Default: plain HTTP is served as
    /// is, no HSTS.
    pub https: Option<HttpsFile>,
}

/// HTTPS options of the app.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct HttpsFile {
    /// Answer plain-HTTP requests with a `308 Permanent Redirect` to the same URL over
    /// HTTPS (when the server has an HTTPS listener; ACME challenge requests are still
    /// answered over HTTP). Default: `false`.
    pub redirect: Option<bool>,
    /// Send `Strict-Transport-Security: max-age=<this, in seconds>` with every HTTPS
    /// response, so browsers use HTTPS only for that long, e.g. `365d`; `0s` tells them to
    /// forget an earlier one. Default: none.
    pub hsts: Option<DurationText>,
}

/// When databases are backed up and how many backups each keeps.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BackupsFile {
    /// Time between two scheduled backups of a database (more than 0). Default: `24h`.
    pub every: Option<DurationText>,
    /// How many backups of each database are kept; older ones are deleted after a new one
    /// verified. Default: 14.
    #[schemars(range(min = 1, max = 100_000))]
    pub keep: Option<u32>,
}

/// A database Slipway runs for the app.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DatabaseFile {
    /// The engine: `postgres` (the host's PostgreSQL) or `redis` (the host's Redis).
    pub engine: EngineFile,
    /// The engine's major version, e.g. `"15"`; it must be installed on the server's host. An
    /// existing database keeps the version it was made with: a different one is refused.
    /// Default: the version it was made with, else the newest installed.
    pub version: Option<VersionText>,
    /// The environment variable that carries its URL to the services that use it.
    /// Default: `DATABASE_URL` for PostgreSQL, `REDIS_URL` for Redis.
    #[schemars(regex(pattern = ENV_NAME_PATTERN))]
    pub env: Option<String>,
    /// The engine's own settings, by name: a string, a number or a boolean each, e.g.
    /// `{ max_connections: 200, work_mem: 16MB }` (PostgreSQL) or `{ maxmemory: 100mb,
    /// maxmemory-policy: allkeys-lru }` (Redis). A deploy that changes them says whether the
    /// change is a reload or a restart; a restart needs `slipway deploy --restart-databases`.
    /// The settings Slipway owns (its socket, port, files, password) are refused.
    /// Default: the engine's defaults.
    pub settings: Option<BTreeMap<String, SettingValue>>,
}

/// The value of a database setting: a string, a number or a boolean.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub(crate) struct SettingValue(pub serde_json::Value);

impl JsonSchema for SettingValue {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "DatabaseSetting".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": ["string", "number", "boolean"],
            "description": "A setting's value, e.g. `16MB`, `200` or `on`.",
            "examples": ["16MB", 200],
        })
    }
}

/// A database engine.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum EngineFile {
    /// PostgreSQL, from the host's packages, on a Unix socket.
    Postgres,
    /// Redis, from the host's packages, on a Unix socket, with a password.
    Redis,
}

/// A major version: `"15"` or `15`.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub(crate) struct VersionText(pub serde_json::Value);

impl JsonSchema for VersionText {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "MajorVersion".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "anyOf": [
                { "type": "string", "pattern": "^[1-9][0-9]{0,2}$" },
                { "type": "integer", "minimum": 1, "maximum": 999 },
            ],
            "description": "A major version, e.g. `\"15\"`.",
            "examples": ["15"],
        })
    }
}

/// One environment: its host and what it changes in the base spec.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[expect(
    dead_code,
    reason = "environments are read and merged as JSON (`environments.rs`); this type gives them a schema"
)]
pub(crate) struct EnvironmentFile {
    /// The app's host name in this environment, e.g. `clinic.example.com` (lowercase DNS
    /// labels separated by dots). Default: `<app>.localhost` for `development` and
    /// `<environment>.<app>.localhost` for the others.
    pub host: Option<String>,
    /// The environment's HTTPS options, merged key by key into the top-level `https`.
    pub https: Option<HttpsFile>,
    /// Per-service overrides, keyed by the name of a service defined under the top-level
    /// `services`. Any service key may be set; mappings merge into the base service, lists
    /// and single values replace the base's.
    #[schemars(schema_with = "service_overlays")]
    #[serde(default)]
    pub services: Option<BTreeMap<String, serde_json::Value>>,
    /// Per-database settings in this environment, keyed by the name of a database declared
    /// under the top-level `databases`, e.g. `db: { settings: { max_connections: 300 } }`;
    /// they merge into the database's `settings` name by name.
    #[schemars(extend("propertyNames" = { "pattern": DNS_LABEL_PATTERN }))]
    pub databases: Option<BTreeMap<String, DatabaseOverlayFile>>,
}

/// What an environment may change about a database: its settings.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DatabaseOverlayFile {
    /// Settings that replace or add to the database's `settings` in this environment.
    #[expect(
        dead_code,
        reason = "environments are read and merged as JSON (`environments.rs`); the field gives them a schema"
    )]
    pub settings: Option<BTreeMap<String, SettingValue>>,
}

/// One service: a native process or a container that Slipway runs, health-checks, scales
/// and routes to. It has exactly one of `run` (a native process) and `image` (a container).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServiceFile {
    /// The program and its arguments, as a list, e.g. `["python3", "-m", "http.server", "$PORT"]`.
    /// `$PORT` is replaced by the port the instance must listen on. Runs the service as a
    /// native process; give either `run` or `image`.
    #[schemars(length(min = 1))]
    pub run: Option<Vec<String>>,
    /// A container image, `name[:tag]` or `name@sha256:…`, e.g. `clinic/api:1.4`: the service
    /// runs as containers of it (through the Docker Engine API) instead of a native process.
    /// The image's id is recorded in the revision at deploy time, so a retag makes a new
    /// revision and a rollback runs the exact image it ran before. The container listens on
    /// `$PORT`. Give either `run` or `image`.
    #[schemars(length(min = 1))]
    pub image: Option<String>,
    /// With `image`: the command the container runs, as a list, instead of the image's
    /// own (`CMD`), e.g. `["/bin/httpd", "-f", "-p", "$PORT"]`. `$PORT` is replaced as in
    /// `run`. Default: the image's command.
    #[schemars(length(min = 1))]
    pub command: Option<Vec<String>>,
    /// With `image`: a Dockerfile (relative to the directory of `slipway.yaml`, or absolute)
    /// to build the image from at each deploy, tagged `image`; its folder is the build
    /// context. The revision records the id built, so rollback and `promote` reuse that
    /// image without building again. Default: none (the image must exist or be pullable).
    #[schemars(length(min = 1))]
    pub dockerfile: Option<String>,
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
    /// Limits each instance gets: `{ cpu: 0.5, memory: 512Mi, pids: 256 }`. Default: none.
    pub resources: Option<ResourcesFile>,
    /// Path prefixes on the app's host that go to this service, e.g. `["/api"]`. Each prefix
    /// must start with `/` and belong to one service only. Default: none (own host only).
    pub routes: Option<Vec<String>>,
    /// How the service is stopped.
    pub shutdown: Option<ShutdownFile>,
    /// How new revisions are rolled out. Default: blue-green, previous revision kept warm for `30s`.
    pub deploy: Option<DeployFile>,
    /// How the router treats clients while two revisions share traffic (during a canary).
    /// Default: no stickiness, no header override.
    pub traffic: Option<TrafficFile>,
    /// The build command, as a list of arguments, run in `workdir` before a new revision is
    /// created, e.g. `["cargo", "build", "--release"]`. A failing build stops the deploy.
    /// Default: none.
    #[schemars(length(min = 1))]
    pub build: Option<Vec<String>>,
    /// The file or directory the build produces, relative to `workdir` (or absolute), e.g.
    /// `target/release/api`. May be given without `build` for a prebuilt artifact.
    /// Default: none.
    #[schemars(length(min = 1))]
    pub artifact: Option<String>,
    /// The test command, as a list of arguments, run in `workdir` after `build`; a failure
    /// stops the deploy. Default: none.
    #[schemars(length(min = 1))]
    pub test: Option<Vec<String>>,
    /// The release command, as a list of arguments, run once per deploy in `workdir` with the
    /// service's `env` and `secrets`, after the new revision is built and before any traffic
    /// moves to it, e.g. a database migration. A failure stops the deploy. Default: none.
    #[schemars(length(min = 1))]
    pub release: Option<Vec<String>>,
    /// How long `release` may run before it is stopped and the deploy fails. Default: `5m`.
    pub release_timeout: Option<DurationText>,
    /// Names of environment variables whose values come from Slipway's secret store instead
    /// of this file, e.g. `["DATABASE_URL"]`. Same naming rule as `env`; a name may not also
    /// be set in `env`. Default: none.
    #[schemars(inner(regex(pattern = ENV_NAME_PATTERN)))]
    pub secrets: Option<Vec<String>>,
    /// Persistent folders, by name: `{ data: ./data }`. The path (relative to `workdir`,
    /// inside it) is left out of the code snapshot, and every revision of the service sees
    /// the same folder there, so data such as an SQLite database survives deploys and
    /// rollbacks. In `development` it is that folder of the working tree; in other
    /// environments a folder of their own under Slipway's data directory, shared by the
    /// services of the app that name the same volume. Default: none.
    #[schemars(extend("propertyNames" = { "pattern": VOLUME_NAME_PATTERN }))]
    pub volumes: Option<BTreeMap<String, String>>,
    /// What the router lets through to the service, e.g. `{ body: 10MiB }`. Default: request
    /// bodies up to `100MiB`.
    pub limits: Option<LimitsFile>,
    /// Databases (declared under the top-level `databases`) whose URL the service gets, in
    /// the variable each database names (`DATABASE_URL` by default), e.g. `[db]`. The name
    /// may not also be set in `env` or `secrets`. Default: none.
    #[schemars(inner(regex(pattern = DNS_LABEL_PATTERN)))]
    pub uses: Option<Vec<String>>,
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

/// The number of instances of a service and how it follows the load.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScalingFile {
    /// The fewest instances to keep running; 0 allows scaling to zero after `idle`
    /// without requests. Default: 1.
    #[schemars(range(min = 0, max = 4_294_967_295u32))]
    pub min: Option<u32>,
    /// The most instances to run; at least 1 and at least `min`. Default: `min`, or 1.
    #[schemars(range(min = 1, max = 4_294_967_295u32))]
    pub max: Option<u32>,
    /// The target number of requests in flight per instance: the autoscaler runs about
    /// `in-flight requests / concurrency` instances (rounded up). Default: 100.
    #[schemars(range(min = 1, max = 4_294_967_295u32))]
    pub concurrency: Option<u32>,
    /// A hard limit of requests in flight per instance; requests beyond it wait in the router.
    /// 0 means no limit. It is independent of `concurrency` (a limit below the target keeps
    /// instances from ever reaching it). Default: 0.
    #[schemars(range(min = 0, max = 4_294_967_295u32))]
    pub max_concurrency: Option<u32>,
    /// With `min: 0`, how long a service must be without requests before its last instance
    /// stops. Default: `60s`.
    pub idle: Option<DurationText>,
    /// The window whose average load drives normal scaling decisions. Default: `60s`.
    pub stable_window: Option<DurationText>,
    /// The short window that detects bursts and scales up at once; it must be shorter than
    /// `stable_window`. Default: `6s`.
    pub panic_window: Option<DurationText>,
}

/// What each instance of a service may use, enforced by the kernel (a cgroup per instance).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResourcesFile {
    /// Cores, in Kubernetes notation: `0.5` or `500m` is half a core, `2` two cores. A busy
    /// instance is throttled to this share of cpu time.
    pub cpu: Option<QuantityText>,
    /// Memory, in Kubernetes notation: `512Mi`, `1Gi`, `128M`, or bytes. An instance that
    /// needs more is killed by the kernel (reported as `OOMKilled`) and restarted.
    pub memory: Option<QuantityText>,
    /// The most processes and threads an instance may have at once; a fork bomb stops there.
    #[schemars(range(min = 1, max = 4_294_967_295u32))]
    pub pids: Option<u32>,
}

/// A cpu or memory quantity: a string such as `250m` or `512Mi`, or a number.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub(crate) struct QuantityText(pub serde_json::Value);

impl JsonSchema for QuantityText {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Quantity".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "anyOf": [
                { "type": "string", "pattern": "^\\s*[0-9]*\\.?[0-9]+(m|k|M|G|T|Ki|Mi|Gi|Ti)?\\s*$" },
                { "type": "number", "exclusiveMinimum": 0 },
            ],
            "description": "A Kubernetes quantity: cpu as cores (`0.5`, `2`) or millicores (`250m`); memory as bytes with a suffix (`512Mi`, `1Gi`, `128M`) or without.",
            "examples": ["250m", "0.5", "512Mi", "1Gi"],
        })
    }
}

/// How a service is stopped.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ShutdownFile {
    /// How long an instance has to exit after SIGTERM before it is killed. Default: `10s`.
    pub grace: Option<DurationText>,
}

/// How new revisions of a service are rolled out.
///
/// `steps`, `interval` and `on_failure` only matter with `strategy: canary`; with another
/// strategy they are accepted and ignored. `analysis` judges canary steps, and with
/// `strategy: blue-green` (the default) the new revision after the switch, for
/// `keep_previous`, switching back to the still-warm previous revision if it fails.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeployFile {
    /// How a new revision replaces the serving one. Default: `blue-green`.
    pub strategy: Option<StrategyFile>,
    /// Canary only: the percent of traffic on the new revision at each step, strictly
    /// increasing, each from 1 to 100, the last one 100. Default: `[10, 50, 100]`.
    #[schemars(length(min = 1), inner(range(min = 1, max = 100)))]
    pub steps: Option<Vec<u32>>,
    /// Canary only: how long each step lasts before it is judged. Default: `30s`.
    pub interval: Option<DurationText>,
    /// Canary: what a step must achieve to move on. Blue-green: what the new revision must
    /// keep to while the previous one stays warm after the switch (`keep_previous`); breached,
    /// all traffic goes back. Not written: blue-green deploys are not judged after the switch.
    pub analysis: Option<AnalysisFile>,
    /// Canary only: what a failed step does. Default: `rollback`.
    pub on_failure: Option<OnFailureFile>,
    /// How long the previous revision stays warm (without traffic) after a switch, so a
    /// rollback is instant. Default: `30s`.
    pub keep_previous: Option<DurationText>,
}

/// A deploy strategy.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum StrategyFile {
    /// Start the new revision beside the old one and move all traffic at once when it is
    /// ready (no downtime).
    BlueGreen,
    /// Move traffic to the new revision in `steps`, judging each step by `analysis`.
    Canary,
    /// Replace instances one at a time (no downtime).
    Rolling,
    /// Stop the old instances, then start the new ones (downtime until the new ones are ready).
    Recreate,
}

/// What a failed canary step does.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum OnFailureFile {
    /// Move all traffic back to the previous revision.
    Rollback,
    /// Keep the current split and wait for an operator.
    Pause,
}

/// The limits a canary step is judged against, measured on the new revision.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AnalysisFile {
    /// The highest acceptable share of failed requests (5xx answers and connection
    /// failures), as a percentage with a `%` sign from `0%` to `100%`, e.g. `1%` or `0.5%`.
    /// Default: `1%`.
    pub max_error_rate: Option<PercentText>,
    /// The highest acceptable 95th percentile latency, e.g. `300ms`. Default: none (latency
    /// is not judged).
    pub max_p95: Option<DurationText>,
    /// The fewest requests a step needs before it is judged. Default: 20.
    #[schemars(range(min = 1))]
    pub min_requests: Option<u64>,
}

/// What the router lets through to the service.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct LimitsFile {
    /// The longest request body the router passes on, e.g. `10MiB`, `512KiB` or `1GB`, or
    /// `unlimited`. A longer body is answered 413 Payload Too Large without reaching the
    /// service: at once when its `Content-Length` says so, else as soon as it grows past the
    /// limit. Default: `100MiB`.
    pub body: Option<SizeText>,
}

/// How the router treats clients while two revisions of a service share traffic.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct TrafficFile {
    /// Set a `slipway-revision` cookie so that a client keeps the revision it first got
    /// while a canary is in progress. Default: `false`.
    pub sticky: Option<bool>,
    /// Honour a `Slipway-Revision: <number or tag>` request header that picks the revision,
    /// e.g. to try a canary before it gets traffic. Default: `false`.
    pub header_override: Option<bool>,
}

/// A percentage with a `%` sign, e.g. `1%` or `0.5%`.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub(crate) struct PercentText(pub String);

impl JsonSchema for PercentText {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Percent".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": PERCENT_PATTERN,
            "description": "A percentage from 0% to 100%, written with a `%` sign, e.g. `1%` or `0.5%`.",
            "examples": ["1%", "0.5%"],
        })
    }
}

/// A byte size written with a unit, e.g. `10MiB`, or `unlimited`.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub(crate) struct SizeText(pub String);

impl JsonSchema for SizeText {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Size".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": SIZE_PATTERN,
            "description": "A size: a whole number followed by a unit (B, kB, MB, GB, TB, or KiB, MiB, GiB, TiB for powers of 1024), e.g. `10MiB`; or `unlimited`.",
            "examples": ["10MiB", "512KiB", "1GB", "unlimited"],
        })
    }
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

/// The schema of `environments.<name>.services`: service overlays keyed by service name.
fn service_overlays(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "propertyNames": { "pattern": DNS_LABEL_PATTERN },
        "additionalProperties": { "$ref": "#/definitions/ServiceOverlay" },
    })
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
    add_service_overlay(&mut schema);
    schema
}

/// Defines `ServiceOverlay`, what an environment may say about a service: the same keys as
/// a service, none of them required. It is derived from `ServiceFile` here so that the two
/// can never drift apart.
fn add_service_overlay(schema: &mut serde_json::Value) {
    let Some(definitions) = schema
        .get_mut("definitions")
        .and_then(serde_json::Value::as_object_mut)
    else {
        return;
    };
    let Some(mut overlay) = definitions.get("ServiceFile").cloned() else {
        return;
    };
    if let Some(object) = overlay.as_object_mut() {
        object.remove("required");
        object.insert(
            "description".into(),
            "Changes to one service in an environment: any service key; mappings merge into the base service, lists and single values replace the base's.".into(),
        );
    }
    definitions.insert("ServiceOverlay".into(), overlay);
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
