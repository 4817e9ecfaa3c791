//! What happened, for the event log: one kind per fact, spelled `area.what` in the store,
//! the API and `slipway events`. Every place that records an event names one of these, so
//! the list below is the whole vocabulary of the audit trail.

use std::fmt;

/// The kind of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// `app.registered`
    AppRegistered,
    /// `app.down`
    AppDown,
    /// `app.up`
    AppUp,
    /// `service.removed`
    ServiceRemoved,
    /// `revision.created`
    RevisionCreated,
    /// `revision.deploying`
    RevisionDeploying,
    /// `revision.ready`
    RevisionReady,
    /// `revision.failed`
    RevisionFailed,
    /// `revision.start_failed`
    RevisionStartFailed,
    /// `instance.started`
    InstanceStarted,
    /// `instance.ready`
    InstanceReady,
    /// `instance.unready`
    InstanceUnready,
    /// `instance.crashed`
    InstanceCrashed,
    /// `instance.failed`
    InstanceFailed,
    /// `instance.stopped`
    InstanceStopped,
    /// `instance.orphan_killed`
    InstanceOrphanKilled,
    /// `traffic.changed`
    TrafficChanged,
    /// `tag.set`
    TagSet,
    /// `tag.removed`
    TagRemoved,
    /// `secret.set`
    SecretSet,
    /// `secret.removed`
    SecretRemoved,
    /// `deploy.watching`
    DeployWatching,
    /// `deploy.verified`
    DeployVerified,
    /// `deploy.rolled_back`
    DeployRolledBack,
    /// `rollout.step`
    RolloutStep,
    /// `rollout.paused`
    RolloutPaused,
    /// `rollout.complete`
    RolloutComplete,
    /// `rollout.rolled_back`
    RolloutRolledBack,
    /// `rollout.unreadable`
    RolloutUnreadable,
    /// `scale.decision`
    ScaleDecision,
    /// `scale.failed`
    ScaleFailed,
    /// `scale.cold_start`
    ScaleColdStart,
    /// `scale.cold_start_failed`
    ScaleColdStartFailed,
    /// `run.started`
    RunStarted,
    /// `run.succeeded`
    RunSucceeded,
    /// `run.failed`
    RunFailed,
    /// `database.created`
    DatabaseCreated,
    /// `database.started`
    DatabaseStarted,
    /// `database.adopted`
    DatabaseAdopted,
    /// `database.stopped`
    DatabaseStopped,
    /// `database.failed`
    DatabaseFailed,
    /// `database.unhealthy`
    DatabaseUnhealthy,
    /// `database.healthy`
    DatabaseHealthy,
    /// `database.upgraded`: a major version upgrade, its revert, or the removal of a kept
    /// cluster (`slipway db upgrade`).
    DatabaseUpgraded,
    /// `database.settings`: a deploy changes a database's settings; what each change does
    /// (a reload, or a restart that drops the app's connections) is recorded before it is
    /// done, and how it went after.
    DatabaseSettings,
    /// `backup.succeeded`
    BackupSucceeded,
    /// `backup.failed`
    BackupFailed,
    /// `backup.verified`
    BackupVerified,
    /// `backup.restored`
    BackupRestored,
    /// `backup.pruned`
    BackupPruned,
    /// `api.request`: a call that changes something, with the actor who made it
    ApiRequest,
    /// `token.created`
    TokenCreated,
    /// `token.revoked`
    TokenRevoked,
    /// `certificate.issued`
    CertificateIssued,
    /// `certificate.renewed`
    CertificateRenewed,
    /// `certificate.failed`
    CertificateFailed,
}

impl EventKind {
    pub const ALL: [EventKind; 56] = [
        EventKind::AppRegistered,
        EventKind::AppDown,
        EventKind::AppUp,
        EventKind::ServiceRemoved,
        EventKind::RevisionCreated,
        EventKind::RevisionDeploying,
        EventKind::RevisionReady,
        EventKind::RevisionFailed,
        EventKind::RevisionStartFailed,
        EventKind::InstanceStarted,
        EventKind::InstanceReady,
        EventKind::InstanceUnready,
        EventKind::InstanceCrashed,
        EventKind::InstanceFailed,
        EventKind::InstanceStopped,
        EventKind::InstanceOrphanKilled,
        EventKind::TrafficChanged,
        EventKind::TagSet,
        EventKind::TagRemoved,
        EventKind::SecretSet,
        EventKind::SecretRemoved,
        EventKind::DeployWatching,
        EventKind::DeployVerified,
        EventKind::DeployRolledBack,
        EventKind::RolloutStep,
        EventKind::RolloutPaused,
        EventKind::RolloutComplete,
        EventKind::RolloutRolledBack,
        EventKind::RolloutUnreadable,
        EventKind::ScaleDecision,
        EventKind::ScaleFailed,
        EventKind::ScaleColdStart,
        EventKind::ScaleColdStartFailed,
        EventKind::RunStarted,
        EventKind::RunSucceeded,
        EventKind::RunFailed,
        EventKind::DatabaseCreated,
        EventKind::DatabaseStarted,
        EventKind::DatabaseAdopted,
        EventKind::DatabaseStopped,
        EventKind::DatabaseFailed,
        EventKind::DatabaseUnhealthy,
        EventKind::DatabaseHealthy,
        EventKind::DatabaseUpgraded,
        EventKind::DatabaseSettings,
        EventKind::BackupSucceeded,
        EventKind::BackupFailed,
        EventKind::BackupVerified,
        EventKind::BackupRestored,
        EventKind::BackupPruned,
        EventKind::ApiRequest,
        EventKind::TokenCreated,
        EventKind::TokenRevoked,
        EventKind::CertificateIssued,
        EventKind::CertificateRenewed,
        EventKind::CertificateFailed,
    ];

    /// The stored spelling, such as `revision.created`.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::AppRegistered => "app.registered",
            EventKind::AppDown => "app.down",
            EventKind::AppUp => "app.up",
            EventKind::ServiceRemoved => "service.removed",
            EventKind::RevisionCreated => "revision.created",
            EventKind::RevisionDeploying => "revision.deploying",
            EventKind::RevisionReady => "revision.ready",
            EventKind::RevisionFailed => "revision.failed",
            EventKind::RevisionStartFailed => "revision.start_failed",
            EventKind::InstanceStarted => "instance.started",
            EventKind::InstanceReady => "instance.ready",
            EventKind::InstanceUnready => "instance.unready",
            EventKind::InstanceCrashed => "instance.crashed",
            EventKind::InstanceFailed => "instance.failed",
            EventKind::InstanceStopped => "instance.stopped",
            EventKind::InstanceOrphanKilled => "instance.orphan_killed",
            EventKind::TrafficChanged => "traffic.changed",
            EventKind::TagSet => "tag.set",
            EventKind::TagRemoved => "tag.removed",
            EventKind::SecretSet => "secret.set",
            EventKind::SecretRemoved => "secret.removed",
            EventKind::DeployWatching => "deploy.watching",
            EventKind::DeployVerified => "deploy.verified",
            EventKind::DeployRolledBack => "deploy.rolled_back",
            EventKind::RolloutStep => "rollout.step",
            EventKind::RolloutPaused => "rollout.paused",
            EventKind::RolloutComplete => "rollout.complete",
            EventKind::RolloutRolledBack => "rollout.rolled_back",
            EventKind::RolloutUnreadable => "rollout.unreadable",
            EventKind::ScaleDecision => "scale.decision",
            EventKind::ScaleFailed => "scale.failed",
            EventKind::ScaleColdStart => "scale.cold_start",
            EventKind::ScaleColdStartFailed => "scale.cold_start_failed",
            EventKind::RunStarted => "run.started",
            EventKind::RunSucceeded => "run.succeeded",
            EventKind::RunFailed => "run.failed",
            EventKind::DatabaseCreated => "database.created",
            EventKind::DatabaseStarted => "database.started",
            EventKind::DatabaseAdopted => "database.adopted",
            EventKind::DatabaseStopped => "database.stopped",
            EventKind::DatabaseFailed => "database.failed",
            EventKind::DatabaseUnhealthy => "database.unhealthy",
            EventKind::DatabaseHealthy => "database.healthy",
            EventKind::DatabaseUpgraded => "database.upgraded",
            EventKind::DatabaseSettings => "database.settings",
            EventKind::BackupSucceeded => "backup.succeeded",
            EventKind::BackupFailed => "backup.failed",
            EventKind::BackupVerified => "backup.verified",
            EventKind::BackupRestored => "backup.restored",
            EventKind::BackupPruned => "backup.pruned",
            EventKind::ApiRequest => "api.request",
            EventKind::TokenCreated => "token.created",
            EventKind::TokenRevoked => "token.revoked",
            EventKind::CertificateIssued => "certificate.issued",
            EventKind::CertificateRenewed => "certificate.renewed",
            EventKind::CertificateFailed => "certificate.failed",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_spelled_area_dot_what_and_only_once() {
        let mut seen = std::collections::HashSet::new();
        for kind in EventKind::ALL {
            let s = kind.as_str();
            let (area, what) = s.split_once('.').unwrap();
            assert!(!area.is_empty() && !what.is_empty(), "{s}");
            assert!(
                s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_'),
                "{s}"
            );
            assert!(seen.insert(s), "{s} twice");
        }
    }
}
