//! The JSON shapes of the REST API under `/v1`.
//!
//! These types are the API boundary: the CLI builds and reads exactly these, and the
//! OpenAPI document at `/v1/openapi.json` is derived from them. Internal types (store
//! rows, runtime states) are converted into them by hand, so changing an internal type
//! never silently changes the API.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Registers an app from a spec file on the server's machine, or re-reads it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApplyRequest {
    /// Absolute path of the `slipway.yaml` file.
    pub spec_path: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApplyResponse {
    pub app: String,
    pub services: Vec<String>,
}

/// Deploys some or all services of an app from its spec file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct DeployRequest {
    /// Services to deploy; empty means every service in the spec.
    #[serde(default)]
    pub services: Vec<String>,
    /// Overrides the spec's `deploy.strategy` for this deploy
    /// (blue-green | canary | rolling | recreate).
    #[serde(default)]
    pub strategy: Option<String>,
    /// Create a new revision even when the config did not change.
    #[serde(default)]
    pub force: bool,
}

/// One line of the newline-delimited JSON stream answered by deploy and rollback.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Progress {
    /// A service's deploy began: a new revision is starting.
    Starting {
        service: String,
        revision: u64,
        instances: u32,
    },
    /// The config of a service did not change; nothing to do.
    Unchanged { service: String, revision: u64 },
    /// One instance of the new revision passed its readiness check.
    InstanceReady {
        service: String,
        revision: u64,
        instance: String,
        elapsed_ms: u64,
    },
    /// All traffic of the service now goes to `revision`.
    Switched {
        service: String,
        revision: u64,
        previous: Option<u64>,
        elapsed_ms: u64,
    },
    /// The deploy of this service failed; the previous revision keeps serving.
    Failed {
        service: String,
        revision: Option<u64>,
        error: String,
        last_lines: Vec<String>,
    },
    /// A canary rollout began: `percent` of traffic on the new revision.
    RolloutStarted {
        service: String,
        revision: u64,
        baseline: u64,
        percent: u32,
        steps: Vec<u32>,
        interval_ms: u64,
    },
    /// The recreate strategy stopped the old revision before starting the new one: the
    /// service answered 503 for this long.
    Downtime { service: String, downtime_ms: u64 },
    /// The whole operation is over; `ok` is false when any service failed.
    Done { ok: bool },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct RollbackRequest {
    /// Revision to return to; default: the ready revision before the serving one.
    pub to: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AppSummary {
    pub name: String,
    pub spec_path: String,
    pub down: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AppStatus {
    pub app: String,
    pub down: bool,
    /// The router's address, for building URLs.
    pub router: String,
    pub services: Vec<ServiceStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServiceStatus {
    pub name: String,
    /// `http://<service>.<app>.localhost:<port>/`
    pub url: String,
    /// `http://<app>.localhost:<port><route>` for each path-prefix route.
    pub route_urls: Vec<String>,
    pub traffic: Vec<TrafficShare>,
    pub latest_revision: Option<u64>,
    pub instances: Vec<InstanceStatus>,
    pub ready: u32,
    pub total: u32,
    /// Set when something is wrong (crash loop, failed deploy), with the reason.
    pub problem: Option<String>,
    /// The last output lines of the instance that has the problem.
    pub problem_lines: Vec<String>,
    /// What the router measured over the last minute.
    pub figures: Figures,
}

/// Request figures over a window, as measured by the router.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct Figures {
    pub requests: u64,
    /// 5xx answers and upstream failures.
    pub errors: u64,
    pub rps: f64,
    pub in_flight: u64,
    /// Latency percentiles in milliseconds (absent without requests). With several
    /// serving revisions, the worst of them.
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TrafficShare {
    pub revision: u64,
    pub percent: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InstanceStatus {
    pub id: String,
    pub revision: u64,
    /// starting | ready | unready | backoff | stopping | stopped | failed
    pub state: String,
    pub detail: Option<String>,
    pub port: u16,
    pub pid: Option<u32>,
    pub restarts: u32,
    /// Requests being served right now.
    pub in_flight: usize,
    /// Whether the router sends new requests to it.
    pub routed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RevisionInfo {
    pub number: u64,
    pub created_at: String,
    pub digest: String,
    /// deploying | ready | failed
    pub state: String,
    /// Share of traffic now, in percent.
    pub traffic: u32,
    /// Instances currently running for this revision.
    pub instances: u32,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct LogLine {
    pub ts: String,
    pub instance: String,
    pub stream: String,
    pub text: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EventInfo {
    pub id: i64,
    pub ts: String,
    pub app: String,
    pub service: Option<String>,
    pub revision: Option<u64>,
    pub kind: String,
    pub message: String,
}

/// The body of every error answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApiError {
    pub error: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServerInfo {
    pub version: String,
    pub pid: u32,
    pub data_dir: String,
    pub router: String,
    pub admin: String,
}

/// Sets a service's traffic split.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct TrafficRequest {
    /// Revision shares in percent, summing to 100.
    #[serde(default)]
    pub targets: Vec<TrafficShare>,
    /// Send everything to the newest ready revision instead.
    #[serde(default)]
    pub latest: bool,
}

/// Points a tag at a revision, or removes it (`revision: null`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TagRequest {
    pub tag: String,
    pub revision: Option<u64>,
}

/// A canary rollout: where it stands and the figures it is judged on.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RolloutStatus {
    pub service: String,
    pub revision: u64,
    pub baseline: u64,
    /// In progress or paused.
    pub active: bool,
    /// The rollout engine's configuration (steps, interval, analysis thresholds).
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    /// The rollout engine's state (step, phase, history with reasons).
    #[schema(value_type = Object)]
    pub state: serde_json::Value,
    pub traffic: Vec<TrafficShare>,
    /// The new revision's figures in the current step's window.
    pub canary: Option<StepFigures>,
    /// The old revision's figures in the same window.
    pub baseline_figures: Option<StepFigures>,
    pub next_check_in_ms: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct StepFigures {
    pub requests: u64,
    pub errors: u64,
    pub p95_ms: Option<f64>,
}
