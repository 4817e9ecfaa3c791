//! Slipway's autoscaler decider: how many instances a revision should run, from the
//! in-flight requests the router counts, in the style of Knative's pod autoscaler (KPA).
//!
//! It serves the `scaling:` section of `slipway.yaml`:
//!
//! ```yaml
//! scaling:
//!   min: 0                 # 0 = scale to zero when idle
//!   max: 10
//!   concurrency: 50        # target in-flight requests per instance (soft)
//!   idle: 60s              # scale-to-zero grace after the last request
//! ```
//!
//! (`max_concurrency`, the router's hard per-instance limit, is not the decider's concern.)
//!
//! # How the control plane drives it
//!
//! One [`Decider`] per revision that can scale. About once a second the control plane
//! reads the router's in-flight counter for the revision and calls [`Decider::record`]
//! with a [`Sample`] (average in-flight requests and requests arrived in the interval),
//! then [`Decider::scale`] with the same time and the number of ready instances, and
//! converges the revision to [`Decision::desired`]. When a request reaches a revision with
//! no instance, the router tells the control plane, which calls [`Decider::poke`] and
//! decides at once. Time is always an argument (a [`std::time::Duration`] since any
//! epoch of a monotonic clock), never read here.
//!
//! # The rules, with numbers (target 10, max 20, default windows)
//!
//! - **Stable mode.** Desired = ceil(average over the last 60 s / target): a stable average
//!   of 95 in flight asks for ceil(9.5) = 10 instances. Scaling up waits until the ready
//!   instances carry more than 10 % over the target (10 ready stay 10 up to 110 in
//!   flight), and scaling down lands on the fewest instances within that 10 %, so a load
//!   hovering around 100 settles at 10 instead of flapping between 10 and 11.
//! - **Panic mode** scales up on the newest evidence: the last sample, or the 6 s average
//!   when that is higher. If it asks for at least twice the ready instances (1 ready, 100
//!   in flight is a demand of 10 >= 2 x 1) panic starts: the answer is that demand at once
//!   (10) and never goes down until a full 60 s has passed without the condition. A step
//!   from 10 to 100 in flight asks for 10 instances at the first decision after it
//!   (Knative's KPA, which panics on the 6 s average, climbs 3, 4, 6, 7, 9, 10 over 6 s).
//!   One noisy sample under twice the ready capacity changes nothing.
//! - **Scale down** only after the wanted count has stayed lower for `scale_down_delay`
//!   (30 s), by at most half of the ready instances per decision (10 -> 5 -> 2 -> 1), and
//!   never below what the 6 s average still needs (a burst of 40 in flight keeps 4).
//! - **Scale to zero** only with `min: 0`, once nothing has been in flight or arrived for
//!   longer than `idle` (60 s), straight from any count (the idle grace is the delay); a
//!   [`Decider::poke`] or a sample with requests while at zero asks for 1 at once.
//! - **Bounds.** The answer is always within `[min, max]`, in panic too.
//!
//! Memory is bounded: samples are kept in at most one bucket per second of the stable
//! window (4096 buckets at most), and the scale-down delay keeps at most `max + 1` values.
//!
//! Architecture invariant: pure. No tokio, no I/O, no clock reads; serde is the only
//! dependency.

mod config;
mod decider;
mod window;

#[cfg(test)]
mod tests;

pub use config::Config;
pub use decider::{Decider, Decision, Sample};
