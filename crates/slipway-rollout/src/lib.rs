//! Progressive delivery: the canary step machine judged by live metrics, and rolling plans.
//!
//! A canary rollout moves traffic to a new revision in steps (`steps: [5, 25, 50, 100]`
//! percent). Each step holds for `interval`, then the new revision's own figures for that
//! step's window (requests, errors, p95 latency, as measured by the router) are judged
//! against the limits in [`AnalysisConfig`]:
//!
//! - **Pass**: the next step's weight is set and a fresh window starts; after the last step
//!   (always 100 %) the rollout is [`Phase::Complete`].
//! - **Fail** (error rate or p95 over its limit): per [`OnFailure`], all traffic goes back to
//!   the old revision at once ([`Decision::RollBack`]), or the weights are held and the rollout
//!   waits for an operator ([`Decision::Pause`]). A breach backed by enough requests fails at
//!   once, mid-step, without waiting for the window to end.
//! - **Inconclusive** (fewer than `min_requests`): the window is extended, up to
//!   `max_wait_factor x interval` from its start, and then the rollout pauses. It never
//!   promotes blindly.
//!
//! A worked timeline with `interval: 30s`, `min_requests: 50`, `max_wait_factor: 3`, and a
//! step that started at t = 100 s: ticks before t = 130 s only look for breaches; at t = 130 s
//! the window is judged; if it has only 12 requests, ticks keep judging the growing window
//! until t = 100 + 3 x 30 = 190 s, when the rollout pauses as inconclusive.
//!
//! [`Rollout`] is the state machine: [`Rollout::start`], [`Rollout::tick`] with the current
//! figures, and the operator actions [`Rollout::promote`], [`Rollout::pause`],
//! [`Rollout::resume`] and [`Rollout::abort`]. Every call returns the [`Decision`] the control
//! plane applies. [`RolloutState`] is serializable so it can be persisted after every
//! transition; [`Rollout::restore`] resumes it after a server restart, restarting the current
//! step's window so that no traffic goes unjudged.
//!
//! [`assess`] is the pure judgement of one window, and [`rolling_plan`] the instance sequence
//! of the `rolling` strategy. [`Strategy`] names all four strategies.
//!
//! Architecture invariant: this crate is pure. No tokio, no I/O, no clock reads: time is
//! always the `now` argument, a [`Duration`](std::time::Duration) since an epoch the caller
//! chooses (the Unix epoch is a good one) and keeps for the life of a rollout.

mod assess;
mod config;
mod duration_ms;
mod format;
mod plan;
mod rollout;

pub use assess::{Assessment, Figures, assess};
pub use config::{AnalysisConfig, CanaryConfig, OnFailure, Strategy};
pub use plan::rolling_plan;
pub use rollout::{
    Action, Decision, Outcome, Phase, RejectedAction, Rollout, RolloutState, StepRecord,
};

#[cfg(test)]
mod tests;
