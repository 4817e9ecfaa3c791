//! The autoscaler's settings ([`Config`]), their defaults and their validation.
//!
//! The user-facing names are the `scaling:` keys of `slipway.yaml` (`min`, `max`,
//! `concurrency`, `idle`); the remaining fields are tuning knobs with Knative's defaults.
//! Error messages name the field as `scaling.<name>` so the spec layer can show them as is.

use std::time::Duration;

/// How one service scales. Build it from the spec's `scaling:` section, call
/// [`Config::validate`], then hand it to [`crate::Decider::new`].
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The fewest instances to keep (`scaling.min`). 0 allows scaling to zero after `idle`.
    pub min: u32,
    /// The most instances ever asked for (`scaling.max`); a hard cap, also in panic mode.
    pub max: u32,
    /// The in-flight requests one instance should carry (`scaling.concurrency`). A soft
    /// target: `desired = ceil(average concurrency / target)`, so 412 in flight with a
    /// target of 50 asks for ceil(8.24) = 9 instances.
    pub target: f64,
    /// The long window whose average drives normal (stable mode) decisions. Default 60 s.
    pub stable_window: Duration,
    /// The short window whose average detects bursts (panic mode). Default 6 s; it must not
    /// be longer than `stable_window`.
    pub panic_window: Duration,
    /// Panic starts when the panic-window demand reaches this multiple of the ready
    /// instances: with 2.0 (200 %), 4 ready instances and a target of 10, a 6 s average of
    /// 80 in flight (demand 8 = 2 x 4) starts panic. Default 2.0; must be > 1.
    pub panic_threshold: f64,
    /// How long a lower instance count must be wanted before it is applied: the decision
    /// is the highest count wanted during the last `scale_down_delay`. Scale-ups are never
    /// delayed. Default 30 s; 0 disables the delay.
    pub scale_down_delay: Duration,
    /// With `min == 0`, scale to zero once no request has been in flight or arrived for
    /// longer than this (`scaling.idle`). Default 60 s.
    pub idle: Duration,
    /// The largest factor one decision may shrink by: 2.0 means at most halve, so 10 ready
    /// instances go to at least floor(10 / 2) = 5. Default 2.0; must be > 1.
    pub max_scale_down_rate: f64,
    /// Hysteresis in stable mode: how far over the target the instances may run before
    /// scaling up, and what scaling down aims at. With 0.1 and a target of 10, 10 ready
    /// instances stay 10 up to a stable average of 110 in flight (an exact ceil would ask
    /// for 11 at 100.1, so a load hovering around 100 would flap), and a scale-down from
    /// 14 at an average of 104 lands at ceil(104 / 11) = 10. Default 0.1 (the tolerance of
    /// Kubernetes' HPA); must be in [0, 1).
    pub tolerance: f64,
}

impl Default for Config {
    /// One instance, never more, never zero, with Knative's windows: `min 1`, `max 1`,
    /// `target 100`, `stable_window 60s`, `panic_window 6s`, `panic_threshold 2.0`,
    /// `scale_down_delay 30s`, `idle 60s`, `max_scale_down_rate 2.0`, `tolerance 0.1`.
    fn default() -> Config {
        Config {
            min: 1,
            max: 1,
            target: 100.0,
            stable_window: Duration::from_secs(60),
            panic_window: Duration::from_secs(6),
            panic_threshold: 2.0,
            scale_down_delay: Duration::from_secs(30),
            idle: Duration::from_secs(60),
            max_scale_down_rate: 2.0,
            tolerance: 0.1,
        }
    }
}

impl Config {
    /// Checks every field and reports all problems at once, one per line, each naming the
    /// field, quoting the bad value and saying what to do.
    ///
    /// A [`crate::Decider`] built from an invalid config does not panic, but its decisions
    /// are meaningless (for example, a target of 0 asks for `max` whenever anything is in
    /// flight), so callers should refuse such a config.
    pub fn validate(&self) -> Result<(), String> {
        let mut errors = Vec::new();
        if !(self.target.is_finite() && self.target > 0.0) {
            errors.push(format!(
                "`scaling.concurrency` must be > 0, got {}; hint: set how many in-flight \
                 requests one instance should carry, e.g. `concurrency: 50`",
                self.target
            ));
        }
        if self.max == 0 {
            errors.push(
                "`scaling.max` must be at least 1, got 0; hint: use `min: 0` to allow \
                 scaling to zero when idle"
                    .to_string(),
            );
        }
        if self.min > self.max {
            errors.push(format!(
                "`scaling.min` ({}) is greater than `scaling.max` ({}); hint: raise `max` \
                 or lower `min`",
                self.min, self.max
            ));
        }
        if self.stable_window.is_zero() {
            errors.push(
                "`scaling.stable_window` must be longer than 0s; hint: Knative uses 60s"
                    .to_string(),
            );
        }
        if self.panic_window.is_zero() || self.panic_window > self.stable_window {
            errors.push(format!(
                "`scaling.panic_window` ({}) must be longer than 0s and no longer than \
                 `scaling.stable_window` ({}); hint: Knative uses a tenth of the stable \
                 window, e.g. 6s for 60s",
                show_duration(self.panic_window),
                show_duration(self.stable_window)
            ));
        }
        if !(self.panic_threshold.is_finite() && self.panic_threshold > 1.0) {
            errors.push(format!(
                "`scaling.panic_threshold` must be > 1.0, got {}; hint: 2.0 starts panic \
                 when the burst needs twice the ready instances",
                self.panic_threshold
            ));
        }
        if !(self.max_scale_down_rate.is_finite() && self.max_scale_down_rate > 1.0) {
            errors.push(format!(
                "`scaling.max_scale_down_rate` must be > 1.0, got {}; hint: 2.0 lets one \
                 decision at most halve the instances",
                self.max_scale_down_rate
            ));
        }
        if !(self.tolerance.is_finite() && (0.0..1.0).contains(&self.tolerance)) {
            errors.push(format!(
                "`scaling.tolerance` must be at least 0 and below 1, got {}; hint: 0.1 \
                 scales up only when instances carry more than 110 % of the target",
                self.tolerance
            ));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("\n"))
        }
    }
}

/// Renders a duration the way `slipway.yaml` writes them: "60s", "1.5s", "500ms".
pub(crate) fn show_duration(duration: Duration) -> String {
    if duration.subsec_nanos() == 0 {
        format!("{}s", duration.as_secs())
    } else if duration < Duration::from_secs(1) && duration.subsec_nanos().is_multiple_of(1_000_000)
    {
        format!("{}ms", duration.as_millis())
    } else {
        format!("{}s", duration.as_secs_f64())
    }
}
