//! The deploy strategies and the canary configuration (`deploy:` with `strategy: canary`),
//! with a validation that reports every problem at once.
//!
//! Parsing `slipway.yaml` happens in `slipway-spec`; this crate defines what a valid canary
//! configuration is, so that the state machine can rely on it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration_ms;
use crate::format;

pub use slipway_core::deploy::{OnFailure, Strategy};

/// The limits a step's window is judged against (`deploy.analysis`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AnalysisConfig {
    /// The highest acceptable share of failed requests, as a fraction: 0.01 is 1 %. A failed
    /// request is a 5xx answer or a connection failure. Equal to the limit passes.
    pub max_error_rate: f64,
    /// The highest acceptable 95th percentile latency, or `None` not to judge latency at all.
    /// Equal to the limit passes.
    #[serde(rename = "max_p95_ms", with = "duration_ms::option")]
    pub max_p95: Option<Duration>,
    /// The fewest requests a window must have before it is judged; with fewer, the window is
    /// extended instead (at least 1).
    pub min_requests: u64,
    /// How long a window may be extended while it has too few requests, as a multiple of
    /// `interval` counted from the window's start (at least 1; 1 means no extension). With
    /// `interval: 30s` and 3, a quiet step pauses 90 s after it started.
    pub max_wait_factor: u32,
}

impl Default for AnalysisConfig {
    /// 1 % errors, no latency limit, 50 requests, windows extended up to 3 x interval.
    fn default() -> Self {
        AnalysisConfig {
            max_error_rate: 0.01,
            max_p95: None,
            min_requests: 50,
            max_wait_factor: 3,
        }
    }
}

/// A canary rollout's configuration (`deploy:` with `strategy: canary`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CanaryConfig {
    /// The percent of traffic on the new revision at each step, strictly increasing, each
    /// from 1 to 100, and ending at 100. The last step is judged like the others before the
    /// rollout completes. A missing 100 is an error rather than added silently, so the file
    /// says exactly what happens.
    pub steps: Vec<u32>,
    /// How long each step holds before its window is judged.
    #[serde(rename = "interval_ms", with = "duration_ms")]
    pub interval: Duration,
    /// The limits each window is judged against.
    pub analysis: AnalysisConfig,
    /// What a failed judgement does.
    pub on_failure: OnFailure,
}

impl Default for CanaryConfig {
    /// Steps 5, 25, 50, 100 percent, 30 s each, default analysis, rollback on failure.
    fn default() -> Self {
        CanaryConfig {
            steps: vec![5, 25, 50, 100],
            interval: Duration::from_secs(30),
            analysis: AnalysisConfig::default(),
            on_failure: OnFailure::Rollback,
        }
    }
}

// === impl CanaryConfig ===

impl CanaryConfig {
    /// Checks the configuration and returns every problem at once.
    ///
    /// Each message names the field as it appears under a service in `slipway.yaml`
    /// (`deploy.steps[2]`), quotes the bad value and says what to write instead.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        self.check_steps(&mut problems);
        if self.interval.is_zero() {
            problems.push(
                "deploy.interval is 0s: each step needs time to gather requests to judge; \
                 hint: use a duration such as 30s"
                    .to_string(),
            );
        }
        check_analysis(&self.analysis, &mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    fn check_steps(&self, problems: &mut Vec<String>) {
        let steps = &self.steps;
        let Some(&last) = steps.last() else {
            problems.push(
                "deploy.steps is empty: a canary needs at least one step; \
                 hint: list the percents of traffic for the new revision, e.g. [5, 25, 50, 100]"
                    .to_string(),
            );
            return;
        };
        for (i, &percent) in steps.iter().enumerate() {
            if percent == 0 || percent > 100 {
                problems.push(format!(
                    "deploy.steps[{i}] is {percent}: a step is a percent of traffic from 1 to 100"
                ));
            }
        }
        for (i, pair) in steps.windows(2).enumerate() {
            if pair[1] <= pair[0] {
                problems.push(format!(
                    "deploy.steps[{}] is {}, not more than the step before it ({}): steps must \
                     strictly increase; hint: remove the repeated or out-of-order step",
                    i + 1,
                    pair[1],
                    pair[0]
                ));
            }
        }
        // A last step over 100 was reported above as out of range; saying it is not 100 too
        // would only repeat that.
        if (1..100).contains(&last) {
            problems.push(format!(
                "deploy.steps ends at {last}: the last step must be 100 so the rollout finishes \
                 with all traffic on the new revision; hint: add 100 at the end"
            ));
        }
    }
}

fn check_analysis(analysis: &AnalysisConfig, problems: &mut Vec<String>) {
    let rate = analysis.max_error_rate;
    if !(0.0..=1.0).contains(&rate) {
        problems.push(format!(
            "deploy.analysis.max_error_rate is {} %: it must be from 0 % to 100 %; \
             hint: 1 % is a common limit",
            format::percent(rate)
        ));
    }
    if analysis.max_p95.is_some_and(|p95| p95.is_zero()) {
        problems.push(
            "deploy.analysis.max_p95 is 0ms: no request is that fast, so every step would \
             fail; hint: use a latency such as 300ms, or leave it out not to judge latency"
                .to_string(),
        );
    }
    if analysis.min_requests == 0 {
        problems.push(
            "deploy.analysis.min_requests is 0: a step with no requests would be promoted \
             blindly; hint: use at least 1, e.g. 50"
                .to_string(),
        );
    }
    if analysis.max_wait_factor == 0 {
        problems.push(
            "deploy.analysis.max_wait_factor is 0: a step's window cannot end before its \
             interval; hint: use 1 to pause as soon as an interval has too few requests, or 3 \
             to wait up to three intervals"
                .to_string(),
        );
    }
}
