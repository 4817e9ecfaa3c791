//! The canary state machine: steps, analysis windows, judgements and operator actions, with
//! values in and decisions out.
//!
//! The control plane owns the clock, the router weights and the store. It calls
//! [`Rollout::tick`] with fresh figures (every few seconds, and at least at
//! [`Rollout::next_check_at`]), applies the returned [`Decision`], and persists
//! [`Rollout::state`] whenever it changed.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::assess::{Assessment, Figures, assess};
use crate::config::{CanaryConfig, OnFailure};
use crate::duration_ms;
use crate::format;

/// Where a rollout stands: everything [`Rollout::restore`] needs after a restart.
///
/// Serialized as JSON like `{"step": 1, "step_started_ms": 30000, "phase": {"kind":
/// "progressing"}, "history": [...]}`; times are milliseconds since the caller's epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutState {
    /// The current step, an index into [`CanaryConfig::steps`] counted from 0 (messages count
    /// from 1: index 1 is "step 2 of 4").
    pub step: usize,
    /// When the current step's analysis window started.
    #[serde(rename = "step_started_ms", with = "duration_ms")]
    pub step_started: Duration,
    /// Whether the rollout is moving, waiting for an operator, or finished.
    pub phase: Phase,
    /// Every finished window and operator action, oldest first.
    #[serde(default)]
    pub history: Vec<StepRecord>,
}

/// Whether a rollout is moving, waiting for an operator, or finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Phase {
    /// Steps advance as windows pass.
    Progressing,
    /// Weights are held at the current step until an operator resumes, promotes or aborts.
    Paused { reason: String },
    /// All traffic is on the new revision; the old one can be retired.
    Complete,
    /// All traffic is back on the old revision.
    RolledBack { reason: String },
}

/// One finished analysis window, or one operator action on a paused rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The step index, counted from 0.
    pub step: usize,
    /// The percent of traffic the new revision had at that step.
    pub percent: u32,
    /// When the window started; for an action on a paused rollout, when the action happened.
    #[serde(rename = "started_ms", with = "duration_ms")]
    pub started: Duration,
    /// When the window ended (for [`Outcome::Interrupted`], when the rollout was restored).
    #[serde(rename = "ended_ms", with = "duration_ms")]
    pub ended: Duration,
    /// How it ended.
    pub outcome: Outcome,
}

/// How a window ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// The figures were within the limits; the rollout moved on.
    Passed { summary: String },
    /// A figure was over its limit.
    Failed { reason: String },
    /// Too few requests until the wait limit; the rollout paused.
    Inconclusive { reason: String },
    /// An operator paused the rollout.
    Paused { reason: String },
    /// An operator promoted the new revision to all traffic.
    Promoted,
    /// An operator aborted the rollout, moving all traffic back.
    Aborted { reason: String },
    /// The server stopped during the window; the window was restarted on restore.
    Interrupted,
}

/// What the control plane must do after a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Give the new revision `new_percent` % of traffic (the old one the rest). A new
    /// analysis window starts now: reset both revisions' counters.
    SetWeight { new_percent: u32 },
    /// Nothing to change. Tick again by `until` at the latest, and earlier whenever fresh
    /// figures are available so that breaches and late requests are judged promptly.
    Wait { until: Duration },
    /// Move all traffic back to the old revision at once.
    RollBack { reason: String },
    /// Hold the current weights and tell an operator why.
    Pause { reason: String },
    /// Give the new revision all traffic; the old revision can be retired.
    Complete,
}

/// An operator action on a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// [`Rollout::promote`].
    Promote,
    /// [`Rollout::pause`].
    Pause,
    /// [`Rollout::resume`].
    Resume,
    /// [`Rollout::abort`].
    Abort,
}

/// An operator action that does not apply to the rollout's phase, with what to do instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedAction {
    /// The action that was asked for.
    pub action: Action,
    /// Why it does not apply, and what to do instead.
    pub message: String,
}

/// A canary rollout: its configuration and its state.
#[derive(Debug, Clone)]
pub struct Rollout {
    config: CanaryConfig,
    state: RolloutState,
    /// When the next judgement is due: the end of the window, or after it the end of the
    /// extension for too few requests. Derived, so not persisted.
    next_check: Option<Duration>,
}

// === impl Rollout ===

impl Rollout {
    /// Starts a rollout at its first step; the decision is `SetWeight { steps[0] }`.
    ///
    /// # Errors
    ///
    /// Every problem [`CanaryConfig::validate`] finds.
    pub fn start(config: CanaryConfig, now: Duration) -> Result<(Rollout, Decision), Vec<String>> {
        config.validate()?;
        let state = RolloutState {
            step: 0,
            step_started: now,
            phase: Phase::Progressing,
            history: Vec::new(),
        };
        let mut rollout = Rollout {
            config,
            state,
            next_check: None,
        };
        let decision = rollout.begin_window(now);
        Ok((rollout, decision))
    }

    /// Resumes a persisted rollout after a restart.
    ///
    /// A progressing rollout's window was interrupted: its figures since the restart are all
    /// the router has, so the window restarts at `now` with the same step
    /// ([`Outcome::Interrupted`] is recorded) and the decision is `SetWeight` for that step,
    /// which re-applies the weights. Any other phase returns its standing decision
    /// (`Pause`, `Complete`, `RollBack`); the weights to apply are [`Rollout::current_percent`].
    /// Because the window restarts, `now` may come from a different epoch than the stored
    /// times without harm.
    ///
    /// # Errors
    ///
    /// Every problem of the configuration, or a stored step that the configuration does not
    /// have (the configuration changed under a running rollout).
    pub fn restore(
        config: CanaryConfig,
        state: RolloutState,
        now: Duration,
    ) -> Result<(Rollout, Decision), Vec<String>> {
        config.validate()?;
        if state.step >= config.steps.len() {
            return Err(vec![format!(
                "the stored rollout is at step {} but deploy.steps has only {} steps, so the \
                 canary configuration changed under a running rollout; hint: abort the rollout \
                 and deploy again",
                state.step + 1,
                config.steps.len()
            )]);
        }
        let mut rollout = Rollout {
            config,
            state,
            next_check: None,
        };
        let decision = if rollout.state.phase == Phase::Progressing {
            rollout.record(now, Outcome::Interrupted);
            rollout.begin_window(now)
        } else {
            rollout.standing_decision()
        };
        Ok((rollout, decision))
    }

    /// Judges the current window with the new revision's figures (`canary`) and the old
    /// revision's (`baseline`), and moves the rollout on if the judgement says so.
    ///
    /// # Guarantees
    ///
    /// - Before the window's interval is over, only a failure backed by at least
    ///   `min_requests` requests acts (at once); anything else is `Wait { until: end }`.
    /// - At or after the end, a pass sets the next step's weight (or completes after the last
    ///   step), a failure rolls back or pauses per `on_failure`, and too few requests wait
    ///   until `max_wait_factor x interval` from the window's start, then pause. A rollout is
    ///   never promoted on an inconclusive window.
    /// - A rollout that is paused or finished is not changed: its standing decision is
    ///   returned again, so a decision can be re-applied after a crash. New transitions show
    ///   as a changed [`RolloutState::phase`] or a new [`RolloutState::history`] record.
    ///
    /// # Assumptions
    ///
    /// The figures cover the current window, from [`RolloutState::step_started`]; `now` never
    /// goes back (if it does, the window is simply not over yet).
    pub fn tick(&mut self, now: Duration, canary: &Figures, baseline: &Figures) -> Decision {
        // A paused or finished rollout only moves by an operator's action.
        if self.state.phase != Phase::Progressing {
            return self.standing_decision();
        }
        let interval = self.config.interval;
        let due = self.state.step_started.saturating_add(interval);
        let elapsed = now.saturating_sub(self.state.step_started);
        let assessment = assess(&self.config.analysis, canary, baseline);

        if now < due {
            // Mid-step: a breach with enough requests behind it is already decisive, and
            // more traffic on a failing revision only hurts more users.
            if let Assessment::Fail { reason } = assessment {
                let reason = format!(
                    "{}, {} into the {} window: {reason}",
                    self.label(),
                    format::span(elapsed),
                    format::span(interval)
                );
                return self.fail(now, reason);
            }
            self.next_check = Some(due);
            return Decision::Wait { until: due };
        }

        match assessment {
            Assessment::Pass { summary } => self.pass(now, summary),
            Assessment::Fail { reason } => {
                let reason = format!("{}: {reason}", self.label());
                self.fail(now, reason)
            }
            Assessment::Inconclusive { reason } => {
                let deadline = self.deadline();
                if now < deadline {
                    // The window keeps growing; judge it again as requests arrive.
                    self.next_check = Some(deadline);
                    return Decision::Wait { until: deadline };
                }
                let reason = format!(
                    "{}: still inconclusive {} into the window (the limit is {} x the {} \
                     interval): {reason}; paused rather than promoted blindly; hint: {}",
                    self.label(),
                    format::span(elapsed),
                    self.config.analysis.max_wait_factor,
                    format::span(interval),
                    PAUSED_HINT
                );
                self.record(
                    now,
                    Outcome::Inconclusive {
                        reason: reason.clone(),
                    },
                );
                self.enter_pause(reason)
            }
        }
    }

    /// Promotes the new revision to all traffic at once, skipping the remaining steps and
    /// their analysis; the decision is `Complete`. Promoting a complete rollout is a no-op.
    ///
    /// # Errors
    ///
    /// A rolled-back rollout cannot be promoted.
    pub fn promote(&mut self, now: Duration) -> Result<Decision, RejectedAction> {
        match &self.state.phase {
            Phase::Progressing | Phase::Paused { .. } => {
                self.record(now, Outcome::Promoted);
                self.state.step = self.config.steps.len().saturating_sub(1);
                self.state.phase = Phase::Complete;
                self.next_check = None;
                Ok(Decision::Complete)
            }
            Phase::Complete => Ok(Decision::Complete),
            Phase::RolledBack { reason } => Err(RejectedAction {
                action: Action::Promote,
                message: format!(
                    "it was rolled back ({reason}); hint: deploy the revision again to start a \
                     new rollout"
                ),
            }),
        }
    }

    /// Pauses a progressing rollout, holding the current weights; the decision is `Pause`.
    /// An empty `reason` becomes "paused by an operator". Pausing a paused rollout is a no-op
    /// that keeps the first reason.
    ///
    /// # Errors
    ///
    /// A complete or rolled-back rollout cannot be paused.
    pub fn pause(
        &mut self,
        now: Duration,
        reason: impl Into<String>,
    ) -> Result<Decision, RejectedAction> {
        match &self.state.phase {
            Phase::Progressing => {
                let reason = or_default(reason.into(), "paused by an operator");
                self.record(
                    now,
                    Outcome::Paused {
                        reason: reason.clone(),
                    },
                );
                Ok(self.enter_pause(reason))
            }
            Phase::Paused { reason } => Ok(Decision::Pause {
                reason: reason.clone(),
            }),
            Phase::Complete => Err(RejectedAction {
                action: Action::Pause,
                message: "it is complete: the new revision already takes all traffic".to_string(),
            }),
            Phase::RolledBack { reason } => Err(RejectedAction {
                action: Action::Pause,
                message: format!(
                    "it was rolled back ({reason}): all traffic is already on the previous \
                     revision"
                ),
            }),
        }
    }

    /// Resumes a paused rollout at the same step with a fresh window (the figures gathered
    /// while paused are not judged); the decision is `SetWeight` for that step. Resuming a
    /// progressing rollout is a no-op returning its `Wait`.
    ///
    /// # Errors
    ///
    /// A complete or rolled-back rollout cannot be resumed.
    pub fn resume(&mut self, now: Duration) -> Result<Decision, RejectedAction> {
        match &self.state.phase {
            Phase::Paused { .. } => {
                self.state.phase = Phase::Progressing;
                Ok(self.begin_window(now))
            }
            Phase::Progressing => Ok(self.standing_decision()),
            Phase::Complete => Err(RejectedAction {
                action: Action::Resume,
                message: "it is complete: there is nothing left to resume".to_string(),
            }),
            Phase::RolledBack { reason } => Err(RejectedAction {
                action: Action::Resume,
                message: format!(
                    "it was rolled back ({reason}); hint: deploy the revision again to start a \
                     new rollout"
                ),
            }),
        }
    }

    /// Aborts the rollout, moving all traffic back to the old revision; the decision is
    /// `RollBack`. An empty `reason` becomes "aborted by an operator". Aborting a rolled-back
    /// rollout is a no-op that keeps the first reason.
    ///
    /// # Errors
    ///
    /// A complete rollout cannot be aborted: the old revision may be gone, and going back is
    /// a rollback of the service.
    pub fn abort(
        &mut self,
        now: Duration,
        reason: impl Into<String>,
    ) -> Result<Decision, RejectedAction> {
        match &self.state.phase {
            Phase::Progressing | Phase::Paused { .. } => {
                let reason = or_default(reason.into(), "aborted by an operator");
                self.record(
                    now,
                    Outcome::Aborted {
                        reason: reason.clone(),
                    },
                );
                Ok(self.enter_rollback(reason))
            }
            Phase::RolledBack { reason } => Ok(Decision::RollBack {
                reason: reason.clone(),
            }),
            Phase::Complete => Err(RejectedAction {
                action: Action::Abort,
                message: "it is complete: the new revision already takes all traffic; hint: \
                          roll the service back to the previous revision instead"
                    .to_string(),
            }),
        }
    }

    /// The state to persist.
    pub fn state(&self) -> &RolloutState {
        &self.state
    }

    /// The configuration the rollout runs with.
    pub fn config(&self) -> &CanaryConfig {
        &self.config
    }

    /// The percent of traffic the new revision should have now, in every phase: the current
    /// step's while progressing or paused, 100 once complete, 0 once rolled back.
    pub fn current_percent(&self) -> u32 {
        match self.state.phase {
            Phase::Progressing | Phase::Paused { .. } => {
                // The step index is checked against the steps on start and restore; 0 keeps
                // an unverified revision out of traffic if that ever failed.
                self.config.steps.get(self.state.step).copied().unwrap_or(0)
            }
            Phase::Complete => 100,
            Phase::RolledBack { .. } => 0,
        }
    }

    /// When the next judgement is due, while progressing: the end of the current window, or,
    /// once a window is being extended for too few requests, the end of that extension.
    /// `None` when paused or finished, which only an operator action changes.
    pub fn next_check_at(&self) -> Option<Duration> {
        match self.state.phase {
            Phase::Progressing => self.next_check,
            _ => None,
        }
    }

    // --- transitions ---

    /// Starts a fresh window for the current step at `now` and asks for its weight.
    fn begin_window(&mut self, now: Duration) -> Decision {
        self.state.step_started = now;
        self.next_check = Some(now.saturating_add(self.config.interval));
        Decision::SetWeight {
            new_percent: self.current_percent(),
        }
    }

    /// Records a passed window and moves to the next step, or completes after the last.
    fn pass(&mut self, now: Duration, summary: String) -> Decision {
        let summary = format!("{}: {summary}", self.label());
        self.record(now, Outcome::Passed { summary });
        if self.state.step + 1 < self.config.steps.len() {
            self.state.step += 1;
            self.begin_window(now)
        } else {
            self.state.phase = Phase::Complete;
            self.next_check = None;
            Decision::Complete
        }
    }

    /// Records a failed window and rolls back or pauses per `on_failure`.
    fn fail(&mut self, now: Duration, reason: String) -> Decision {
        self.record(
            now,
            Outcome::Failed {
                reason: reason.clone(),
            },
        );
        match self.config.on_failure {
            OnFailure::Rollback => self.enter_rollback(reason),
            OnFailure::Pause => self.enter_pause(format!(
                "{reason}; paused (on_failure: pause); hint: {PAUSED_HINT}"
            )),
        }
    }

    fn enter_pause(&mut self, reason: String) -> Decision {
        self.state.phase = Phase::Paused {
            reason: reason.clone(),
        };
        self.next_check = None;
        Decision::Pause { reason }
    }

    fn enter_rollback(&mut self, reason: String) -> Decision {
        self.state.phase = Phase::RolledBack {
            reason: reason.clone(),
        };
        self.next_check = None;
        Decision::RollBack { reason }
    }

    /// Appends a history record for the current step. A progressing rollout's record spans
    /// its window; a paused rollout's window already ended, so its record is the instant `now`.
    fn record(&mut self, now: Duration, outcome: Outcome) {
        let started = match self.state.phase {
            Phase::Progressing => self.state.step_started,
            _ => now,
        };
        self.state.history.push(StepRecord {
            step: self.state.step,
            percent: self.current_percent(),
            started,
            ended: now,
            outcome,
        });
    }

    // --- derived values ---

    /// The decision that stands while nothing changes: what a no-op call returns.
    fn standing_decision(&self) -> Decision {
        match &self.state.phase {
            Phase::Progressing => Decision::Wait {
                until: self.next_check.unwrap_or_else(|| {
                    self.state.step_started.saturating_add(self.config.interval)
                }),
            },
            Phase::Paused { reason } => Decision::Pause {
                reason: reason.clone(),
            },
            Phase::Complete => Decision::Complete,
            Phase::RolledBack { reason } => Decision::RollBack {
                reason: reason.clone(),
            },
        }
    }

    /// The latest end of the current window while it has too few requests:
    /// start + interval x max_wait_factor, e.g. 100 s + 30 s x 3 = 190 s.
    fn deadline(&self) -> Duration {
        let factor = self.config.analysis.max_wait_factor.max(1);
        self.state
            .step_started
            .saturating_add(self.config.interval.saturating_mul(factor))
    }

    /// "step 2 of 4 (25 %)" for the current step.
    fn label(&self) -> String {
        format!(
            "step {} of {} ({} %)",
            self.state.step + 1,
            self.config.steps.len(),
            self.current_percent()
        )
    }
}

/// What an operator can do with a paused rollout.
const PAUSED_HINT: &str = "resume to judge this step again with a fresh window, promote to \
                           finish anyway, or abort to roll back";

fn or_default(reason: String, default: &str) -> String {
    if reason.trim().is_empty() {
        default.to_string()
    } else {
        reason
    }
}

// === impl Action ===

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Action::Promote => "promote",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Abort => "abort",
        })
    }
}

// === impl RejectedAction ===

impl fmt::Display for RejectedAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot {} the rollout: {}", self.action, self.message)
    }
}

impl std::error::Error for RejectedAction {}
