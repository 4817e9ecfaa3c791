//! The JSON shapes of the REST API under `/v1`.
//!
//! These types are the API boundary: the CLI builds and reads exactly these, and the
//! OpenAPI document at `/v1/openapi.json` is derived from them. Internal types (store
//! rows, runtime states) are converted into them by hand, so changing an internal type
//! never silently changes the API.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Registers an app from a spec file on the server's machine, or re-reads it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApplyRequest {
    /// Absolute path of the `slipway.yaml` file, on the server's machine.
    #[schema(pattern = "^/")]
    pub spec_path: String,
    /// The environment to resolve the spec for; default `development`.
    #[serde(default)]
    pub environment: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ApplyResponse {
    /// The app's key: its name in `development`, `<app>@<environment>` in the others.
    /// Every `/v1/apps/{app}` path takes this key.
    pub app: String,
    #[serde(default)]
    pub environment: String,
    /// The app's host in that environment.
    #[serde(default)]
    pub host: String,
    pub services: Vec<String>,
}

pub use slipway_core::deploy::{RolloutAction, Strategy};

/// Deploys some or all services of an app from its spec file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct DeployRequest {
    /// Services to deploy; empty means every service in the spec.
    #[serde(default)]
    pub services: Vec<String>,
    /// Overrides the spec's `deploy.strategy` for this deploy.
    #[serde(default)]
    #[schema(value_type = Option<StrategyName>)]
    pub strategy: Option<slipway_core::deploy::Strategy>,
    /// Create a new revision even when the config did not change.
    #[serde(default)]
    pub force: bool,
    /// Allow a change of a database's settings that needs the database restarted (its
    /// connections drop for a few seconds); without it such a deploy is refused before
    /// anything changes.
    #[serde(default)]
    pub restart_databases: bool,
}

/// A deploy strategy.
// The names of `slipway_core::deploy::Strategy` for the document; that type has no schema.
#[derive(ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "kebab-case")]
pub enum StrategyName {
    BlueGreen,
    Canary,
    Rolling,
    Recreate,
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
    /// What a change of a database's settings does, said before it is done (a reload, or a
    /// restart that drops the app's connections), then how it went.
    Database { database: String, message: String },
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
    /// The new revision's release command (`release:`) runs now, in its code snapshot,
    /// before any of its instances starts; its output follows as `Output` lines.
    ReleaseStarted {
        service: String,
        revision: u64,
        command: String,
    },
    /// The release command succeeded; `summary` says how long it took and where its
    /// output is kept.
    ReleaseSucceeded {
        service: String,
        revision: u64,
        summary: String,
    },
    /// A build or test command started (`step` is `build` or `test`).
    Step {
        service: String,
        step: String,
        command: String,
    },
    /// One line of a build, test or release command's output.
    Output { service: String, line: String },
    /// A build or test command succeeded.
    StepDone {
        service: String,
        step: String,
        elapsed_ms: u64,
    },
    /// A promotion began: the artifact of `from` is being deployed.
    Promoting {
        service: String,
        from: String,
        digest: String,
    },
    /// The artifact was stored under this content digest.
    Artifact { service: String, digest: String },
    /// The service's folder was frozen as the code snapshot `digest`: `files` files of
    /// `bytes` in all, of which `new_files` (`new_bytes`) were not stored before.
    Snapshot {
        service: String,
        digest: String,
        files: u64,
        bytes: u64,
        new_files: u64,
        new_bytes: u64,
        elapsed_ms: u64,
    },
    /// A build or test command did not run, and why (its inputs did not change).
    StepSkipped {
        service: String,
        step: String,
        reason: String,
    },
    /// The whole operation is over; `ok` is false when any service failed.
    Done { ok: bool },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct RollbackRequest {
    /// Revision to return to; default: the ready revision before the serving one.
    #[serde(default, deserialize_with = "whole::optional")]
    pub to: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AppSummary {
    /// The app's key (`app`, or `app@environment` outside `development`).
    pub name: String,
    #[serde(default)]
    pub environment: String,
    #[serde(default)]
    pub host: String,
    pub spec_path: String,
    pub down: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AppStatus {
    /// The app's key (`app`, or `app@environment` outside `development`).
    pub app: String,
    #[serde(default)]
    pub environment: String,
    /// The app's host: `http://<host>` serves its routes, `http://<service>.<host>` each service.
    #[serde(default)]
    pub host: String,
    pub down: bool,
    /// The router's address, for building URLs.
    pub router: String,
    pub services: Vec<ServiceStatus>,
    /// Why the server cannot enforce `resources:` limits (instances run without them), if
    /// it cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits_unavailable: Option<String>,
    /// The app's managed databases in this environment.
    #[serde(default)]
    pub databases: Vec<DatabaseStatus>,
    /// The certificates the server obtains over ACME for the app's hosts.
    #[serde(default)]
    pub certificates: Vec<CertificateStatus>,
}

/// A managed database and its health.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DatabaseStatus {
    pub name: String,
    /// `postgres` or `redis`.
    pub engine: String,
    /// The engine's major version its data was made with.
    pub version: String,
    /// `ready`, `starting` (answers but refuses connections), `down` (nothing answers on its
    /// socket: red), or `stopped` (not started by this server: by `down`, or not used yet).
    pub state: String,
    /// Its backups: the last success, and the last failure if it came after it (red).
    #[serde(default)]
    pub backup: BackupHealth,
}

/// The certificate of a routed host, from a file or obtained over ACME, and how it is doing.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct CertificateStatus {
    pub host: String,
    /// The app key whose route the host is.
    pub app: String,
    /// `acme` or `file`.
    pub source: String,
    /// `valid`; `expiring` (red: over ACME, past the renewal point and not renewed yet;
    /// from a file, in the last third of its lifetime or its last 30 days); `expired` (red);
    /// `pending` (being obtained); `failed` (none obtained yet, attempts fail: red).
    pub state: String,
    pub not_before: Option<String>,
    pub not_after: Option<String>,
    /// Seconds until `not_after` (negative once expired).
    pub expires_in_secs: Option<i64>,
    /// When renewal starts (two thirds into the lifetime).
    pub renew_after: Option<String>,
    /// Failed attempts since the last success.
    pub failures: u32,
    /// Failed attempts since the server started.
    pub failures_total: u64,
    /// Certificates obtained since the server started.
    pub issued_total: u64,
    /// Why the last attempt failed, while attempts fail.
    pub last_error: Option<String>,
    /// When the next attempt starts, after a failure.
    pub next_attempt_in_secs: Option<u64>,
}

/// How a database's backups are doing.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct BackupHealth {
    /// When the newest verified backup was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<String>,
    /// Why the last backup failed, when it failed after the last success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing: Option<String>,
}

/// A backup, as its manifest (`manifest.json` beside its files) records it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BackupInfo {
    /// `<database>-<time>`, unique within the app's environment.
    pub id: String,
    pub app: String,
    pub environment: String,
    pub database: String,
    /// `postgres` or `redis`.
    pub engine: String,
    /// The major version of the engine that made it, and the server's full version.
    pub version: String,
    pub server_version: String,
    /// `manual`, `scheduled`, or `safety` (taken before a restore).
    pub kind: String,
    /// When it was taken (RFC 3339), and the same in milliseconds since the epoch.
    pub created_at: String,
    pub created_unix_ms: u64,
    pub files: Vec<BackupFile>,
    /// Rows per table (`schema.table`) in the dump's snapshot (PostgreSQL).
    pub tables: BTreeMap<String, u64>,
    /// Keys in the snapshot (Redis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<u64>,
    /// The revisions serving when it was taken.
    pub revisions: Vec<ServingRevision>,
    /// When its restore into a scratch instance matched the counts above.
    pub verified_at: String,
    /// How long the dump and the verification took, in seconds.
    pub dump_seconds: f64,
    pub verify_seconds: f64,
}

/// A platform backup: Slipway's own state (the store, code snapshots, artifacts; secrets
/// encrypted, the master key left out).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PlatformBackup {
    pub id: String,
    /// The archive's folder on the server's host.
    pub path: String,
    pub created_at: String,
    pub files: u64,
    pub bytes: u64,
}

/// A file of a backup.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct BackupFile {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

/// A revision that carried traffic when a backup was taken.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServingRevision {
    pub service: String,
    pub revision: u64,
    pub percent: u32,
}

/// `POST /v1/apps/{app}/backups`
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    /// The database to back up; all of the app's environment when absent.
    #[serde(default)]
    pub database: Option<String>,
}

/// `POST /v1/apps/{app}/backups/{id}/restore`
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    /// Restore into this database (made if missing) instead of the one backed up, which is
    /// then left alone.
    #[serde(default)]
    pub to: Option<String>,
}

/// `POST /v1/apps/{app}/databases/{name}/upgrade`: exactly one of `to`, `revert` and
/// `remove_old`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpgradeRequest {
    /// Migrate to this PostgreSQL major version (a verified backup is taken first; the old
    /// cluster is kept).
    #[serde(default)]
    pub to: Option<String>,
    /// Go back to the cluster the last upgrade kept.
    #[serde(default)]
    pub revert: bool,
    /// Remove the clusters earlier upgrades kept.
    #[serde(default)]
    pub remove_old: bool,
}

/// What `slipway db upgrade` did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct UpgradeOutcome {
    pub database: String,
    /// The major version it had, and the one it has now.
    pub from: String,
    pub version: String,
    /// The verified backup taken before the upgrade.
    pub backup: Option<String>,
    /// Where the previous cluster is kept (upgrade, revert).
    pub kept: Option<String>,
    /// The kept clusters that were removed (`remove_old`).
    pub removed: Vec<String>,
}

/// What a restore did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RestoreOutcome {
    /// The database whose contents were replaced.
    pub database: String,
    /// The backup taken of it first, when it had contents to lose.
    pub safety_backup: Option<String>,
    /// Rows per table after the restore (PostgreSQL).
    pub tables: BTreeMap<String, u64>,
    /// Keys after the restore (Redis).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<u64>,
}

/// The settings of a managed database that the spec set (`databases.<name>.settings`), as
/// last applied by a deploy, with what the running server has for each.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DatabaseSettings {
    pub name: String,
    pub engine: String,
    /// As in [`DatabaseStatus::state`].
    pub state: String,
    pub settings: Vec<DatabaseSetting>,
}

/// One setting of a managed database.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DatabaseSetting {
    pub name: String,
    /// The value written from the spec.
    pub value: String,
    /// The value the running server has (`SHOW`); absent when it is stopped.
    pub effective: Option<String>,
    /// Whether the server waits for a restart to take the value.
    pub pending_restart: bool,
}

/// How to connect to a managed database (the Unix-socket API only: it holds the password).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DatabaseConnection {
    pub name: String,
    pub engine: String,
    pub version: String,
    /// The URL the services get, password included.
    pub url: String,
    /// The engine's client on the server's host (`psql`, `redis-cli`).
    pub client: String,
    /// The parts of the URL: the socket's folder (PostgreSQL) or the socket (Redis), the
    /// port in the socket's name (PostgreSQL; 0 for Redis), the role, the database and the
    /// password.
    pub host: String,
    pub port: u16,
    pub user: String,
    pub database: String,
    pub password: String,
    /// As in [`DatabaseStatus::state`].
    pub state: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ServiceStatus {
    pub name: String,
    /// `http://<service>.<host>:<port>/`
    pub url: String,
    /// `http://<host>:<port><route>` for each path-prefix route.
    pub route_urls: Vec<String>,
    pub traffic: Vec<TrafficShare>,
    pub latest_revision: Option<u64>,
    /// The service's tags and the revision each points at.
    #[serde(default)]
    pub tags: Vec<TagInfo>,
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

/// Request figures as measured by the router: over the last minute, but `rps`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct Figures {
    pub requests: u64,
    /// 5xx answers and upstream failures.
    pub errors: u64,
    /// Requests per second over the last 5 seconds (the current second and the 4 before it),
    /// so that a service that stops getting requests shows 0 within seconds.
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
    #[serde(deserialize_with = "whole::required")]
    pub revision: u64,
    #[serde(deserialize_with = "whole::required")]
    pub percent: u32,
}

/// A tag: a name that always reaches one revision (`<tag>.<service>.<host>`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TagInfo {
    pub tag: String,
    #[serde(deserialize_with = "whole::required")]
    pub revision: u64,
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
    /// Memory and cpu in use against the limits, from the instance's cgroup; absent when it
    /// runs without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<InstanceResources>,
}

/// What one instance uses, against its `resources:` limits.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InstanceResources {
    /// Memory in use now, in bytes (page cache included, as the kernel charges it).
    pub memory_bytes: u64,
    pub memory_limit_bytes: Option<u64>,
    /// Cores used since the previous reading (at least a second before), or 0 on the first.
    pub cpu_cores: f64,
    pub cpu_limit_cores: Option<f64>,
    /// Cpu time used since the instance started.
    pub cpu_seconds: f64,
    /// Processes and threads now.
    pub pids: u64,
    pub pids_limit: Option<u32>,
    /// Processes the kernel killed for exceeding the memory limit.
    pub oom_kills: u64,
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
    /// Who made the call an `api.request` event records: a token's name, or `local` for
    /// the Unix socket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

/// Makes an API token for the admin listener.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateTokenRequest {
    /// A DNS label: lowercase letters, digits and `-`, at most 40 characters.
    pub name: String,
    pub role: crate::access::Role,
    /// The environments the token is limited to; empty: all of them.
    #[serde(default)]
    pub environments: Vec<String>,
    /// How long the token is valid, in seconds; absent: until revoked.
    #[serde(default, deserialize_with = "whole::optional")]
    #[schema(minimum = 1, maximum = 3_153_600_000_i64)]
    pub expires_in_seconds: Option<u64>,
}

/// A token as the API lists it: never its value.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenInfo {
    pub name: String,
    pub role: crate::access::Role,
    /// Empty: all environments.
    pub environments: Vec<String>,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
}

/// A token just made: the only answer that carries its value, which is not stored.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub info: TokenInfo,
    /// `slp_<id>_<secret>`: send it as `Authorization: Bearer <token>`.
    pub token: String,
}

impl std::fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedToken")
            .field("info", &self.info)
            .field("token", &"<redacted>")
            .finish()
    }
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
    /// Whether the admin listener serves HTTPS.
    #[serde(default)]
    pub admin_https: bool,
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
    #[serde(default, deserialize_with = "whole::optional")]
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

/// A secret as the API shows it: its name and current version, never its value.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SecretInfo {
    pub name: String,
    /// Counts every set and removal; a revision records the version it was created with.
    pub version: u64,
    pub updated_at: String,
}

/// Sets a secret. The value only travels in this request body (over the Unix socket or
/// with an admin token), never in a URL, and is never sent back.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct SetSecretRequest {
    pub value: String,
}

impl std::fmt::Debug for SetSecretRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SetSecretRequest { value: <redacted> }")
    }
}

impl Drop for SetSecretRequest {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.value);
    }
}

/// The output of a revision's release command, secrets redacted.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReleaseOutput {
    pub revision: u64,
    /// Where the server keeps it.
    pub path: String,
    pub lines: Vec<String>,
}

/// A one-off command to run in a revision's code (`slipway run`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunRequest {
    /// The program and its arguments.
    pub command: Vec<String>,
    /// The revision whose code, env and secrets it gets; default: the serving one.
    #[serde(default, deserialize_with = "whole::optional")]
    pub revision: Option<u64>,
    /// The local user running it, for the event log.
    #[serde(default)]
    pub user: String,
}

/// How to run a one-off command: the CLI runs `argv` in `workdir` with `env` added to its
/// own environment. Holds secret values: served on the Unix socket only.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunPlan {
    pub id: String,
    pub revision: u64,
    pub workdir: String,
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
}

/// How a one-off command ended.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunExit {
    pub id: String,
    #[serde(deserialize_with = "whole::required")]
    pub revision: u64,
    /// The exit code, when it exited.
    #[serde(default, deserialize_with = "whole::optional")]
    pub code: Option<i32>,
    /// The signal that killed it, when one did (e.g. `SIGKILL`).
    pub signal: Option<String>,
    #[serde(deserialize_with = "whole::required")]
    pub elapsed_ms: u64,
}

/// Deploys the artifact serving in another environment of the same app.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PromoteRequest {
    /// The environment whose serving revision is promoted, e.g. `staging`.
    pub from: String,
}

/// Reads the integer fields of request bodies. JSON has one kind of number, and JSON Schema
/// counts `3.0` as the integer 3, so a field declared `integer` takes any number without a
/// fractional part. The range is what the document declares for the field's Rust type, read
/// through `i64` (`format: int64` ends at `i64::MAX`, also for `u64` fields); a number outside
/// it, or with a fractional part, is refused with a message that says which.
mod whole {
    use std::fmt;
    use std::marker::PhantomData;

    use serde::Deserializer;
    use serde::de::{self, Visitor};

    struct Whole<T>(PhantomData<T>);

    impl<T: TryFrom<i64>> Visitor<'_> for Whole<T> {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(f, "a whole number that fits {}", std::any::type_name::<T>())
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
            T::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
            i64::try_from(v)
                .ok()
                .and_then(|v| T::try_from(v).ok())
                .ok_or_else(|| E::invalid_value(de::Unexpected::Unsigned(v), &self))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
            // `i64::MIN as f64` is exact, and `i64::MAX as f64` is 2^63, the first float out
            // of range.
            let whole = v.fract() == 0.0 && v >= i64::MIN as f64 && v < i64::MAX as f64;
            if !whole {
                return Err(E::invalid_value(de::Unexpected::Float(v), &self));
            }
            self.visit_i64(v as i64)
        }
    }

    struct Optional<T>(PhantomData<T>);

    impl<'de, T: TryFrom<i64>> Visitor<'de> for Optional<T> {
        type Value = Option<T>;

        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            write!(
                f,
                "null or a whole number that fits {}",
                std::any::type_name::<T>()
            )
        }

        fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
            Ok(None)
        }

        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
            required(d).map(Some)
        }
    }

    pub fn required<'de, D: Deserializer<'de>, T: TryFrom<i64>>(d: D) -> Result<T, D::Error> {
        d.deserialize_any(Whole(PhantomData))
    }

    pub fn optional<'de, D: Deserializer<'de>, T: TryFrom<i64>>(
        d: D,
    ) -> Result<Option<T>, D::Error> {
        d.deserialize_option(Optional(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_fields_take_whole_numbers_written_as_floats() {
        let exit: RunExit = serde_json::from_str(
            r#"{"id": "r1", "revision": 3.0, "code": -1.0, "elapsed_ms": 1080}"#,
        )
        .unwrap();
        assert_eq!(
            (exit.revision, exit.code, exit.elapsed_ms),
            (3, Some(-1), 1080)
        );
        let tag: TagRequest = serde_json::from_str(r#"{"tag": "v1"}"#).unwrap();
        assert_eq!(tag.revision, None, "a missing optional number is none");
        let tag: TagRequest = serde_json::from_str(r#"{"tag": "v1", "revision": null}"#).unwrap();
        assert_eq!(tag.revision, None);
        let back: RollbackRequest = serde_json::from_str(r#"{"to": 2.0}"#).unwrap();
        assert_eq!(back.to, Some(2));
    }

    #[test]
    fn integer_fields_refuse_fractions_and_numbers_out_of_the_declared_range() {
        for (json, why) in [
            (r#"{"to": 2.5}"#, "a fraction"),
            (r#"{"to": -1}"#, "below a u64's range"),
            // `format: int64`: the document's range ends at i64::MAX, for u64 fields too.
            (r#"{"to": 9223372036854775808}"#, "above i64::MAX"),
            (r#"{"to": 9223372036854775808.0}"#, "a float above i64::MAX"),
            (r#"{"to": "2"}"#, "a string"),
        ] {
            let err = serde_json::from_str::<RollbackRequest>(json)
                .err()
                .unwrap_or_else(|| panic!("{why} ({json}) was taken"));
            assert!(err.to_string().contains("whole number"), "{why}: {err}");
        }
        let code = serde_json::from_str::<RunExit>(
            r#"{"id": "r1", "revision": 1, "code": 2147483648, "elapsed_ms": 0}"#,
        );
        assert!(code.is_err(), "an exit code above i32::MAX was taken");
    }
}
