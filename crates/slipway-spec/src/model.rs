//! The resolved spec: what the rest of Slipway works with, every default applied.
//!
//! These types are stored in the database as JSON, so their serde form is a contract:
//! durations are integer milliseconds, [`Port`] is `"auto"` or a number, and
//! [`ServiceSpec::digest`] hashes that same JSON to tell whether a service's config changed.
//! Fields added after the first release carry a serde default (per field, or for the whole
//! struct when it has a `Default` with the documented defaults), so JSON stored by older
//! versions still reads, with those defaults filled in.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// A validated `slipway.yaml` with defaults applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    /// The app's name (a DNS label).
    pub app: String,
    /// The services by name (DNS labels), with the environment's overlay applied.
    pub services: BTreeMap<String, ServiceSpec>,
    /// The environment this spec was resolved for; `development` unless another was asked for.
    #[serde(default = "default_environment")]
    pub environment: String,
    /// The app's host in this environment: the `host` set for it, or `<app>.localhost` for
    /// `development` and `<environment>.<app>.localhost` for the others. Empty in JSON
    /// written before environments existed.
    #[serde(default)]
    pub host: String,
    /// Every environment the file declares: `development` first (it always exists), then
    /// the others in file order.
    #[serde(default = "default_environments")]
    pub environments: Vec<String>,
    /// The databases the app declares, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub databases: BTreeMap<String, DatabaseSpec>,
}

/// A database Slipway runs for the app (one per environment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseSpec {
    /// The engine.
    pub engine: Engine,
    /// The major version asked for; `None` keeps the one it was made with (else the newest
    /// installed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The environment variable that carries its URL.
    pub env: String,
    /// Scheduled backups (the spec's top-level `backups`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backups: Option<BackupPolicy>,
    /// The engine's settings by name, each value as the engine reads it (`true` is `on` for
    /// PostgreSQL and `yes` for Redis). Absent from the JSON when empty, so specs without
    /// settings keep their digest.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, String>,
}

/// When a database is backed up and how many backups it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupPolicy {
    /// Time between two scheduled backups.
    #[serde(with = "duration_ms")]
    pub every: Duration,
    /// How many backups are kept.
    pub keep: u32,
}

impl BackupPolicy {
    /// Once a day, 14 kept.
    pub const DEFAULT: BackupPolicy = BackupPolicy {
        every: Duration::from_secs(24 * 3600),
        keep: 14,
    };
}

/// A database engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// PostgreSQL.
    Postgres,
    /// Redis.
    Redis,
}

impl Engine {
    /// `postgres` or `redis`.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Postgres => "postgres",
            Engine::Redis => "redis",
        }
    }

    /// The variable its URL goes in unless the spec names another.
    pub fn default_env(self) -> &'static str {
        match self {
            Engine::Postgres => "DATABASE_URL",
            Engine::Redis => "REDIS_URL",
        }
    }
}

/// A database a service uses: its name and how it is declared, so that a revision alone
/// says what to run and what to inject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DatabaseUse {
    /// The database's name.
    pub name: String,
    /// How it is declared.
    pub database: DatabaseSpec,
}

fn default_environment() -> String {
    crate::DEVELOPMENT.to_owned()
}

fn default_environments() -> Vec<String> {
    vec![default_environment()]
}

/// One service, fully resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// The program and its arguments; `$PORT` is left for the runtime to substitute. Empty
    /// for a container service ([`ServiceSpec::image`]).
    pub run: Vec<String>,
    /// The container image a container service runs, as written (`name[:tag]`); `None` for
    /// a native process. Absent from the JSON when `None`, so process services keep their
    /// digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The command a container service's containers run instead of the image's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// The absolute path of the Dockerfile a container service's image is built from at
    /// deploy time, if it is built.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dockerfile: Option<PathBuf>,
    /// The absolute working directory.
    pub workdir: PathBuf,
    /// Extra environment variables.
    pub env: BTreeMap<String, String>,
    /// The port each instance listens on.
    pub port: Port,
    /// Readiness and liveness checks.
    pub health: Health,
    /// The number of instances.
    pub scaling: Scaling,
    /// Limits each instance gets. Absent from the JSON when none is set, so specs without
    /// limits keep their digest.
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub resources: Resources,
    /// Path prefixes on the app host routed to this service (may be empty).
    pub routes: Vec<String>,
    /// How instances are stopped.
    pub shutdown: Shutdown,
    /// How new revisions are rolled out.
    pub deploy: DeploySettings,
    /// How the router treats clients while two revisions share traffic.
    #[serde(default)]
    pub traffic: TrafficSettings,
    /// The app's `https:` options (left out of the stored config while off, so revisions
    /// made before the option keep their digest).
    #[serde(default, skip_serializing_if = "HttpsSettings::is_off")]
    pub https: HttpsSettings,
    /// The build command, run in `workdir` before a revision is created.
    #[serde(default)]
    pub build: Option<Vec<String>>,
    /// The absolute path of the file or directory the build produces.
    #[serde(default)]
    pub artifact: Option<PathBuf>,
    /// The test command, run in `workdir` after `build`.
    #[serde(default)]
    pub test: Option<Vec<String>>,
    /// The command run once per deploy before traffic moves to the new revision.
    #[serde(default)]
    pub release: Option<Vec<String>>,
    /// How long `release` may run (more than 0).
    #[serde(default = "default_release_timeout", with = "duration_ms")]
    pub release_timeout: Duration,
    /// Names of environment variables whose values come from the secret store, as written
    /// (none of them is also in `env`).
    #[serde(default)]
    pub secrets: Vec<String>,
    /// Persistent folders: volume name -> path relative to `workdir` (normalised, inside
    /// it). Left out of the code snapshot; every revision sees the same folder there.
    /// Absent from the JSON when empty, so specs without volumes keep their digest.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub volumes: BTreeMap<String, PathBuf>,
    /// What the router lets through to the service. Absent from the JSON when all default,
    /// so specs written before it existed keep their digest.
    #[serde(default, skip_serializing_if = "Limits::is_default")]
    pub limits: Limits,
    /// The databases whose URL the service gets, in spec order. Absent from the JSON when
    /// empty, so specs without databases keep their digest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uses: Vec<DatabaseUse>,
}

/// What the router lets through to a service.
///
/// Fields missing from stored JSON take the values of [`Limits::default`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// The longest request body passed on, in bytes; `None` means no limit. A longer body
    /// is answered 413 by the router.
    pub body: Option<u64>,
}

impl Limits {
    /// The default body limit: 100 MiB.
    pub const DEFAULT_BODY: u64 = 100 * 1024 * 1024;

    fn is_default(&self) -> bool {
        *self == Limits::default()
    }
}

impl Default for Limits {
    /// Request bodies up to 100 MiB.
    fn default() -> Self {
        Limits {
            body: Some(Limits::DEFAULT_BODY),
        }
    }
}

/// What each instance may use (`resources:`); `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// Cpu time in millicores: 500 is half a core.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_millis: Option<u32>,
    /// Memory in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Processes and threads at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u32>,
}

impl Resources {
    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        *self == Resources::default()
    }

    /// `cpu 500m, memory 64Mi, pids 256`, naming the limits that are set.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(cpu) = self.cpu_millis {
            parts.push(format!("cpu {}", crate::quantity::show_cpu(cpu)));
        }
        if let Some(memory) = self.memory_bytes {
            parts.push(format!("memory {}", crate::quantity::show_memory(memory)));
        }
        if let Some(pids) = self.pids {
            parts.push(format!("pids {pids}"));
        }
        parts.join(", ")
    }
}

/// The default of [`ServiceSpec::release_timeout`]: 5 minutes.
pub(crate) fn default_release_timeout() -> Duration {
    Duration::from_secs(5 * 60)
}

impl ServiceSpec {
    /// Whether the service runs as containers (`image:`) rather than native processes.
    pub fn is_container(&self) -> bool {
        self.image.is_some()
    }

    /// The SHA-256 (lowercase hex, 64 characters) of this service's canonical JSON form.
    ///
    /// Equal configs give equal digests across runs and machines with the same paths; any
    /// change to any field changes it. The first 12 characters are enough to show to users.
    pub fn digest(&self) -> String {
        let mut hasher = HashWriter(Sha256::new());
        if serde_json::to_writer(&mut hasher, self).is_err() {
            // Only a working directory that is not valid UTF-8 can fail to serialize;
            // hash its lossless debug form instead so the digest still reflects it.
            hasher = HashWriter(Sha256::new());
            hasher.0.update(format!("{self:?}").as_bytes());
        }
        hex::encode(hasher.0.finalize())
    }
}

/// Feeds serialized bytes straight into a hasher.
struct HashWriter(Sha256);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The port an instance listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Port {
    /// A free port is chosen per instance and passed as `$PORT`. Serialized as `"auto"`.
    #[default]
    Auto,
    /// A fixed port (only one instance can run at a time). Serialized as a number.
    Fixed(u16),
}

impl Serialize for Port {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Port::Auto => serializer.serialize_str("auto"),
            Port::Fixed(port) => serializer.serialize_u16(*port),
        }
    }
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Port, D::Error> {
        struct PortVisitor;

        impl Visitor<'_> for PortVisitor {
            type Value = Port;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"auto\" or a port number from 1 to 65535")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Port, E> {
                if v == "auto" {
                    Ok(Port::Auto)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(v), &self))
                }
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Port, E> {
                match u16::try_from(v) {
                    Ok(port) if port > 0 => Ok(Port::Fixed(port)),
                    _ => Err(E::invalid_value(de::Unexpected::Unsigned(v), &self)),
                }
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Port, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::invalid_value(de::Unexpected::Signed(v), &self)),
                }
            }
        }

        deserializer.deserialize_any(PortVisitor)
    }
}

/// Health checks of a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// Must pass before an instance gets traffic.
    pub ready: Probe,
    /// If set, an instance failing it is restarted.
    pub live: Option<Probe>,
    /// How long a new instance may take to become ready.
    #[serde(with = "duration_ms")]
    pub startup_timeout: Duration,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            ready: Probe::default_ready(Check::Tcp),
            live: None,
            startup_timeout: Duration::from_secs(30),
        }
    }
}

/// One health probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Probe {
    /// What is checked.
    pub check: Check,
    /// Time between probes.
    #[serde(with = "duration_ms")]
    pub interval: Duration,
    /// How long one probe may take.
    #[serde(with = "duration_ms")]
    pub timeout: Duration,
    /// Consecutive failures before the check counts as failed (at least 1).
    pub failures: u32,
}

impl Probe {
    /// A readiness probe with the default settings: every 1s, 1s timeout, 1 failure.
    pub fn default_ready(check: Check) -> Probe {
        Probe {
            check,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            failures: 1,
        }
    }

    /// A liveness probe with the default settings: every 5s, 1s timeout, 3 failures.
    pub fn default_live(check: Check) -> Probe {
        Probe {
            check,
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            failures: 3,
        }
    }
}

/// What a probe checks. Serialized as `{"http":{"path":"/ready"}}` or `"tcp"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Check {
    /// An HTTP GET of `path` must answer with a 2xx or 3xx status.
    Http {
        /// The request path, starting with `/`.
        path: String,
    },
    /// A TCP connection to the instance's port must succeed.
    Tcp,
}

/// The number of instances of a service and how it follows the load.
///
/// Always `min <= max`, `max >= 1`, `concurrency >= 1` and `0 < panic_window < stable_window`.
/// Fields missing from stored JSON take the values of [`Scaling::default`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Scaling {
    /// The fewest instances (0 allows scaling to zero after `idle`).
    pub min: u32,
    /// The most instances.
    pub max: u32,
    /// The target of requests in flight per instance (at least 1).
    pub concurrency: u32,
    /// The hard limit of requests in flight per instance; 0 means none.
    pub max_concurrency: u32,
    /// With `min == 0`, how long without requests before the last instance stops (may be 0).
    #[serde(with = "duration_ms")]
    pub idle: Duration,
    /// The window whose average drives normal decisions.
    #[serde(with = "duration_ms")]
    pub stable_window: Duration,
    /// The short window that detects bursts.
    #[serde(with = "duration_ms")]
    pub panic_window: Duration,
}

impl Default for Scaling {
    /// One instance; a target of 100 in flight, no hard limit, `idle` 60s, windows 60s and 6s.
    fn default() -> Self {
        Scaling {
            min: 1,
            max: 1,
            concurrency: 100,
            max_concurrency: 0,
            idle: Duration::from_secs(60),
            stable_window: Duration::from_secs(60),
            panic_window: Duration::from_secs(6),
        }
    }
}

/// How a service is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shutdown {
    /// Time between SIGTERM and SIGKILL (may be 0).
    #[serde(with = "duration_ms")]
    pub grace: Duration,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            grace: Duration::from_secs(10),
        }
    }
}

/// How new revisions are rolled out.
///
/// `steps`, `interval`, `analysis` and `on_failure` are always filled in (with their
/// defaults when not written) but only matter for [`Strategy::Canary`], except that a
/// written `analysis` also makes a blue-green deploy [`DeploySettings::verify`] its switch. Fields missing from
/// stored JSON take the values of [`DeploySettings::default`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DeploySettings {
    /// How long the previous revision stays warm, unrouted, after a switch (may be 0).
    #[serde(with = "duration_ms")]
    pub keep_previous: Duration,
    /// How a new revision replaces the serving one.
    pub strategy: Strategy,
    /// Canary: percent of traffic on the new revision per step; strictly increasing, each
    /// from 1 to 100, ending at 100.
    pub steps: Vec<u32>,
    /// Canary: how long each step lasts (more than 0).
    #[serde(with = "duration_ms")]
    pub interval: Duration,
    /// Canary: the limits each step is judged against.
    pub analysis: Analysis,
    /// Canary: what a failed step does.
    pub on_failure: OnFailure,
    /// Blue-green: judge the new revision by `analysis` for `keep_previous` after the switch,
    /// while the previous revision stays warm, and switch back if a limit is breached. On
    /// when `analysis` is written for a blue-green service. Left out of the stored JSON when
    /// off, so specs written before it existed keep their digest.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub verify: bool,
}

impl Default for DeploySettings {
    /// Blue-green, previous revision kept 30s; for canaries: steps 10, 50, 100 percent,
    /// 30s each, the default [`Analysis`], rollback on failure.
    fn default() -> Self {
        DeploySettings {
            keep_previous: Duration::from_secs(30),
            strategy: Strategy::BlueGreen,
            steps: vec![10, 50, 100],
            interval: Duration::from_secs(30),
            analysis: Analysis::default(),
            on_failure: OnFailure::Rollback,
            verify: false,
        }
    }
}

pub use slipway_core::deploy::{OnFailure, Strategy};

/// The limits a canary step is judged against.
///
/// Fields missing from stored JSON take the values of [`Analysis::default`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Analysis {
    /// The highest acceptable share of failed requests as a fraction from 0 to 1:
    /// `1%` in the file is 0.01.
    pub max_error_rate: f64,
    /// The highest acceptable 95th percentile latency; `None` means latency is not judged.
    #[serde(with = "duration_ms::option")]
    pub max_p95: Option<Duration>,
    /// The fewest requests a step needs before it is judged (at least 1).
    pub min_requests: u64,
}

/// `max_error_rate` is never NaN (it is parsed from `N%` with 0 <= N <= 100, and JSON has
/// no NaN), so equality is reflexive and `Eq` holds; this keeps [`ServiceSpec`] `Eq`.
impl Eq for Analysis {}

impl Default for Analysis {
    /// At most 1% failed requests, no latency limit, at least 20 requests per step.
    fn default() -> Self {
        Analysis {
            max_error_rate: 0.01,
            max_p95: None,
            min_requests: 20,
        }
    }
}

/// How the router treats the app's plain-HTTP and HTTPS clients (`https:`, the same for
/// every service of the app).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct HttpsSettings {
    /// Plain HTTP gets a 308 to the same URL over HTTPS.
    pub redirect: bool,
    /// `Strict-Transport-Security: max-age=<seconds>` on HTTPS responses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hsts_max_age_secs: Option<u64>,
}

impl HttpsSettings {
    /// Whether nothing is asked for (what configs stored before the option read as).
    pub fn is_off(&self) -> bool {
        *self == HttpsSettings::default()
    }
}

/// How the router treats clients while two revisions of a service share traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TrafficSettings {
    /// Pin a client to its revision with a `slipway-revision` cookie.
    pub sticky: bool,
    /// Honour a `Slipway-Revision: <number or tag>` request header.
    pub header_override: bool,
}

/// Serde helper: a [`Duration`] as integer milliseconds (`#[serde(with = "duration_ms")]`).
///
/// Sub-millisecond parts are dropped; durations beyond `u64::MAX` milliseconds saturate.
pub mod duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes `duration` as whole milliseconds.
    pub fn serialize<S: Serializer>(duration: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u64(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
    }

    /// Deserializes whole milliseconds into a [`Duration`].
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        u64::deserialize(deserializer).map(Duration::from_millis)
    }

    /// The same for an `Option<Duration>`, with `None` as `null`
    /// (`#[serde(with = "duration_ms::option")]`).
    pub mod option {
        use std::time::Duration;

        use serde::{Deserialize, Deserializer, Serializer};

        /// Serializes `Some(duration)` as whole milliseconds and `None` as `null`.
        pub fn serialize<S: Serializer>(
            duration: &Option<Duration>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match duration {
                Some(duration) => super::serialize(duration, serializer),
                None => serializer.serialize_none(),
            }
        }

        /// Deserializes whole milliseconds or `null`.
        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<Duration>, D::Error> {
            Option::<u64>::deserialize(deserializer).map(|ms| ms.map(Duration::from_millis))
        }
    }
}
