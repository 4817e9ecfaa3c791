//! The judgement of one analysis window: the new revision's figures against the limits, with
//! the old revision's figures quoted beside them.

use std::cmp::Ordering;
use std::time::Duration;

use crate::config::AnalysisConfig;
use crate::format;

/// One revision's measurements over the current step's window, as the router counted them.
///
/// The window starts at [`RolloutState::step_started`](crate::RolloutState::step_started):
/// the control plane resets its counters whenever a [`Decision::SetWeight`](crate::Decision)
/// starts a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Figures {
    /// Requests answered or failed in the window.
    pub requests: u64,
    /// Of those, 5xx answers and connection failures.
    pub errors: u64,
    /// The 95th percentile latency, or `None` if it was not measured (no requests).
    pub p95: Option<Duration>,
}

/// The verdict on one window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Assessment {
    /// Every judged figure is within its limit; `summary` quotes them, e.g. "error rate 0.2 %
    /// (1/500) <= limit 1 % (baseline 0.1 %), p95 120 ms <= limit 300 ms (baseline 110 ms)".
    Pass { summary: String },
    /// At least one figure is over its limit, with enough requests to be sure; `reason` quotes
    /// each breach, e.g. "error rate 4.2 % (21/500) > limit 1 % (baseline 0.1 %)".
    Fail { reason: String },
    /// Too little data to judge: fewer requests than `min_requests`, or no p95 measured while
    /// a p95 limit is set.
    Inconclusive { reason: String },
}

/// Judges the new revision's figures (`canary`) against `analysis`; `baseline`, the old
/// revision's figures over the same window, is only quoted in the messages.
///
/// A window with fewer than `min_requests` requests (or none at all, whatever the limit) is
/// inconclusive, never a pass. Error rate = errors / requests; 21 errors in 500 requests is
/// 0.042, over a limit of 0.01. A figure equal to its limit passes. A limit that is not a
/// number (an unvalidated NaN) fails rather than passes.
pub fn assess(analysis: &AnalysisConfig, canary: &Figures, baseline: &Figures) -> Assessment {
    if canary.requests == 0 || canary.requests < analysis.min_requests {
        return Assessment::Inconclusive {
            reason: format!(
                "only {} requests reached the new revision, at least {} are needed to judge it",
                canary.requests,
                analysis.min_requests.max(1)
            ),
        };
    }
    let mut breaches = Vec::new();
    let mut within = Vec::new();

    let rate = canary.errors as f64 / canary.requests as f64;
    let rate_text = format!(
        "error rate {} % ({}/{})",
        format::percent(rate),
        canary.errors,
        canary.requests
    );
    let rate_limit = format!(
        "limit {} % ({})",
        format::percent(analysis.max_error_rate),
        baseline_rate(baseline)
    );
    // Only a rate below or equal to the limit passes; `None` means one side is NaN.
    match rate.partial_cmp(&analysis.max_error_rate) {
        Some(Ordering::Less | Ordering::Equal) => {
            within.push(format!("{rate_text} <= {rate_limit}"))
        }
        Some(Ordering::Greater) | None => breaches.push(format!("{rate_text} > {rate_limit}")),
    }

    let mut unmeasured = None;
    if let Some(limit) = analysis.max_p95 {
        let limit_text = format!(
            "limit {} ms ({})",
            format::millis(limit),
            baseline_p95(baseline)
        );
        match canary.p95 {
            Some(p95) if p95 > limit => {
                breaches.push(format!("p95 {} ms > {limit_text}", format::millis(p95)));
            }
            Some(p95) => within.push(format!("p95 {} ms <= {limit_text}", format::millis(p95))),
            None => {
                unmeasured = Some(format!(
                    "the p95 latency of the new revision was not measured over {} requests, \
                     so it cannot be judged against the {limit_text}",
                    canary.requests
                ));
            }
        }
    }

    // A breach is decisive even if another figure is missing.
    if !breaches.is_empty() {
        return Assessment::Fail {
            reason: breaches.join("; "),
        };
    }
    if let Some(reason) = unmeasured {
        return Assessment::Inconclusive { reason };
    }
    Assessment::Pass {
        summary: within.join(", "),
    }
}

/// "baseline 0.1 %", or a note that the old revision had no requests to compare with.
fn baseline_rate(baseline: &Figures) -> String {
    if baseline.requests == 0 {
        "baseline: no requests".to_string()
    } else {
        let rate = baseline.errors as f64 / baseline.requests as f64;
        format!("baseline {} %", format::percent(rate))
    }
}

/// "baseline 110 ms", or a note that the old revision's p95 was not measured.
fn baseline_p95(baseline: &Figures) -> String {
    match baseline.p95 {
        Some(p95) => format!("baseline {} ms", format::millis(p95)),
        None => "baseline: not measured".to_string(),
    }
}
