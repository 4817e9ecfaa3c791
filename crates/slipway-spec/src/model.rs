//! The resolved spec: what the rest of Slipway works with, every default applied.
//!
//! These types are stored in the database as JSON, so their serde form is a contract:
//! durations are integer milliseconds, [`Port`] is `"auto"` or a number, and
//! [`ServiceSpec::digest`] hashes that same JSON to tell whether a service's config changed.

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
    /// The services by name (DNS labels).
    pub services: BTreeMap<String, ServiceSpec>,
}

/// One service, fully resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// The program and its arguments; `$PORT` is left for the runtime to substitute.
    pub run: Vec<String>,
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
    /// Path prefixes on the app host routed to this service (may be empty).
    pub routes: Vec<String>,
    /// How instances are stopped.
    pub shutdown: Shutdown,
    /// How new revisions are rolled out.
    pub deploy: DeploySettings,
}

impl ServiceSpec {
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

/// The number of instances of a service; `min <= max` and `max >= 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scaling {
    /// The fewest instances (0 allows scaling to zero).
    pub min: u32,
    /// The most instances.
    pub max: u32,
}

impl Default for Scaling {
    fn default() -> Self {
        Scaling { min: 1, max: 1 }
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploySettings {
    /// How long the previous revision stays warm, unrouted, after a switch (may be 0).
    #[serde(with = "duration_ms")]
    pub keep_previous: Duration,
}

impl Default for DeploySettings {
    fn default() -> Self {
        DeploySettings {
            keep_previous: Duration::from_secs(30),
        }
    }
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
}
