//! The words of a deploy that cross crate and API boundaries: how a revision replaces the
//! serving one ([`Strategy`]), what a failed canary does ([`OnFailure`]), and what an
//! operator can do to a canary in progress ([`RolloutAction`]). Each has one spelling, used
//! by the spec, the stored state, the API and the CLI alike.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How a new revision replaces the serving one (`deploy.strategy`, `--strategy`).
/// Spelled in kebab-case: `blue-green`, `canary`, `rolling`, `recreate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Start the new revision beside the old one, wait until it is ready, then move all
    /// traffic in one atomic step. No downtime; needs room for both revisions at once.
    #[default]
    BlueGreen,
    /// Move traffic in steps, each judged by the router's live measurements of the new
    /// revision, with automatic rollback.
    Canary,
    /// Replace instances one at a time, at most one extra instance and never fewer ready
    /// instances than before. No downtime.
    Rolling,
    /// Stop every old instance, then start the new ones. **This has downtime**: from the
    /// moment the old instances stop until the first new one is ready, requests get 503.
    /// Use it only when two revisions must never run at once (an exclusive lock on a file,
    /// a migration the old code cannot survive).
    Recreate,
}

impl Strategy {
    pub const ALL: [Strategy; 4] = [
        Strategy::BlueGreen,
        Strategy::Canary,
        Strategy::Rolling,
        Strategy::Recreate,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Strategy::BlueGreen => "blue-green",
            Strategy::Canary => "canary",
            Strategy::Rolling => "rolling",
            Strategy::Recreate => "recreate",
        }
    }

    /// Whether the service stops answering for a while during a deploy: only for
    /// [`Strategy::Recreate`].
    pub fn has_downtime(self) -> bool {
        matches!(self, Strategy::Recreate)
    }
}

/// What a failed canary step does (`deploy.on_failure`): `rollback` or `pause`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailure {
    /// Move all traffic back to the previous revision at once. The default.
    #[default]
    Rollback,
    /// Hold the current weights and wait for an operator to resume, promote or abort.
    Pause,
}

/// What an operator can do to a canary in progress (`slipway rollout ACTION`,
/// `POST …/rollout/{action}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RolloutAction {
    /// Skip the remaining steps: all traffic to the new revision.
    Promote,
    /// Hold the current weights.
    Pause,
    /// Go on from a pause.
    Resume,
    /// All traffic back to the old revision; the new one is marked failed.
    Abort,
}

impl RolloutAction {
    pub const ALL: [RolloutAction; 4] = [
        RolloutAction::Promote,
        RolloutAction::Pause,
        RolloutAction::Resume,
        RolloutAction::Abort,
    ];

    pub fn name(self) -> &'static str {
        match self {
            RolloutAction::Promote => "promote",
            RolloutAction::Pause => "pause",
            RolloutAction::Resume => "resume",
            RolloutAction::Abort => "abort",
        }
    }
}

/// Parses one of `all` by its name, or says which names there are.
fn parse<T: Copy>(
    what: &str,
    text: &str,
    all: &[T],
    name: impl Fn(T) -> &'static str,
) -> Result<T, String> {
    all.iter()
        .copied()
        .find(|v| name(*v) == text)
        .ok_or_else(|| {
            let names: Vec<&str> = all.iter().map(|v| name(*v)).collect();
            format!("unknown {what} `{text}`: use {}", names.join(", "))
        })
}

impl FromStr for Strategy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        parse("strategy", s, &Strategy::ALL, Strategy::name)
    }
}

impl FromStr for RolloutAction {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        parse(
            "rollout action",
            s,
            &RolloutAction::ALL,
            RolloutAction::name,
        )
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for RolloutAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back_and_match_the_serialised_form() {
        for s in Strategy::ALL {
            assert_eq!(s.name().parse::<Strategy>(), Ok(s));
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        for a in RolloutAction::ALL {
            assert_eq!(a.name().parse::<RolloutAction>(), Ok(a));
            assert_eq!(serde_json::to_string(&a).unwrap(), format!("\"{a}\""));
        }
        assert_eq!(
            "bluegreen".parse::<Strategy>(),
            Err("unknown strategy `bluegreen`: use blue-green, canary, rolling, recreate".into())
        );
        assert_eq!(
            serde_json::to_string(&OnFailure::Pause).unwrap(),
            "\"pause\""
        );
    }
}
