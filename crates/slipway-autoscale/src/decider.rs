//! The [`Decider`]: from in-flight request samples and the ready instance count to a
//! desired instance count, one [`Decision`] at a time.
//!
//! The steps of [`Decider::scale`], in order:
//! 1. Scale to zero: with `min == 0` and nothing in flight or arriving for longer than
//!    `idle`, the answer is 0 and the panic and delay state is reset.
//! 2. Stable demand: `ceil(stable average / target)`, with a hysteresis band: the ready
//!    count is kept while it carries at most `tolerance` over the target and one instance
//!    fewer would carry more than the target; scaling down lands at the bottom of the band,
//!    and never below what the panic window still needs.
//! 3. Panic: when `newest / target >= panic_threshold x ready`, where `newest` is the last
//!    sample or the panic window's average if that is higher, panic starts
//!    (or goes on); in panic the answer is the largest demand seen since panic started, so
//!    it only grows. Panic ends a full stable window after the condition last held.
//! 4. The result is capped at `max`, then the scale-down delay keeps the largest value
//!    wanted during the last `scale_down_delay`, then the scale-down rate keeps at least
//!    `floor(ready / max_scale_down_rate)`.
//! 5. The result is raised to `min`, or to 1 when `min == 0` but a request was seen within
//!    `idle` (this is how a request at zero activates the service).

use std::time::Duration;

use serde::Serialize;

use crate::config::{Config, show_duration};
use crate::window::{DelayWindow, SampleWindow};

/// One observation of a revision's traffic, taken by the control plane about once a second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// When the sample was taken: time since an arbitrary epoch of the caller's clock
    /// (a monotonic clock; the same one as the `now` given to [`Decider::scale`]).
    pub at: Duration,
    /// The number of in-flight requests, summed over all instances of the revision (and any
    /// requests waiting for an instance to start): an average over the sampling interval if
    /// the caller keeps one, else the count at the moment of the sample (Slipway's controller
    /// passes the count at its one-second tick; the stable and panic windows do the averaging).
    pub concurrency: f64,
    /// How many requests arrived during the sampling interval. A short request between
    /// two samples may leave no trace in `concurrency`; this count still marks the
    /// revision as active.
    pub requests: u64,
}

/// What the decider wants, and why. Serializes to JSON for the API and the event log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// The instance count to converge to, always within `[min, max]` (0 only if `min == 0`).
    pub desired: u32,
    /// Whether panic mode is on: the decider is reacting to a burst and will not scale down.
    pub panic: bool,
    /// The average in-flight requests over the stable window (0 without samples).
    pub stable_concurrency: f64,
    /// The average in-flight requests over the panic window (0 without samples).
    pub panic_concurrency: f64,
    /// A one-line explanation quoting the inputs, e.g.
    /// "stable avg 412.0 in-flight / target 50 -> 9".
    pub reason: String,
}

/// The autoscaler state of one revision. Feed it every [`Sample`] with [`Decider::record`],
/// call [`Decider::poke`] when a request reaches the revision while it has no instance, and
/// ask [`Decider::scale`] for a decision every second or two.
///
/// It never reads a clock and never acts: time is an argument and the decision is a value,
/// so it is driven the same way by the control plane and by tests.
///
/// ```
/// use std::time::Duration;
/// use slipway_autoscale::{Config, Decider, Sample};
///
/// let config = Config { min: 0, max: 10, target: 50.0, ..Config::default() };
/// config.validate().unwrap();
/// let mut decider = Decider::new(config);
/// let mut ready = 1;
/// for second in 1..=10 {
///     let at = Duration::from_secs(second);
///     decider.record(Sample { at, concurrency: 412.0, requests: 900 });
///     ready = decider.scale(at, ready).desired;
/// }
/// assert_eq!(ready, 9); // ceil(412 / 50)
/// ```
#[derive(Debug, Clone)]
pub struct Decider {
    config: Config,
    samples: SampleWindow,
    delay: DelayWindow,
    /// The last time a request was in flight or arrived. Starts at the first time the
    /// decider sees (sample, poke or decision), so a new decider gives its instances one
    /// full `idle` before scaling them to zero.
    last_active: Option<Duration>,
    /// Present while in panic mode.
    panic: Option<Panic>,
}

/// The state of a panic episode.
#[derive(Debug, Clone, Copy)]
struct Panic {
    /// When this episode started.
    since: Duration,
    /// The last decision time at which the panic condition held.
    last_over: Duration,
    /// The largest instance count wanted during this episode; panic never goes below it.
    most: u32,
}

// === impl Decider ===

impl Decider {
    /// A decider with no history. `config` should have passed [`Config::validate`]; an
    /// invalid one does not panic but gives meaningless decisions.
    pub fn new(config: Config) -> Decider {
        Decider {
            samples: SampleWindow::new(config.stable_window, config.panic_window),
            delay: DelayWindow::new(config.scale_down_delay),
            config,
            last_active: None,
            panic: None,
        }
    }

    /// The settings this decider was built with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Adds a sample. Only what the windows need is kept: one bucket per second of the
    /// stable window (see the crate docs), whatever the number of samples. A sample with
    /// any concurrency or any arrived request marks the revision active at `sample.at`.
    /// Negative or non-finite concurrency counts as 0.
    pub fn record(&mut self, sample: Sample) {
        self.samples.record(sample.at, sample.concurrency);
        self.observe(sample.at);
        if sample.concurrency > 0.0 || sample.requests > 0 {
            self.mark_active(sample.at);
        }
    }

    /// Tells the decider that a request arrived at `now`, typically while the revision has
    /// no instance: the next decision asks for at least one instance (at least `min`),
    /// without waiting for a sample.
    pub fn poke(&mut self, now: Duration) {
        self.observe(now);
        self.mark_active(now);
    }

    /// Decides how many instances the revision should have at `now`, given the instances
    /// that are `ready` to serve (starting ones do not count). Call it every second or two;
    /// the panic, delay and scale-down rate rules count decisions, not samples.
    pub fn scale(&mut self, now: Duration, ready: u32) -> Decision {
        self.samples.prune(now);
        self.observe(now);
        let config = &self.config;
        let stable = self
            .samples
            .average(now, config.stable_window)
            .unwrap_or(0.0);
        let burst = self
            .samples
            .average(now, config.panic_window)
            .unwrap_or(0.0);
        // Scaling up follows the newest evidence: the last sample when it says more than
        // the panic window's average (the first second of a step from 5 to 100 in flight
        // averages 20.8 over 6 s, but the last sample is 100).
        let newest = self
            .samples
            .newest(now, config.panic_window)
            .unwrap_or(0.0)
            .max(burst);
        let last_active = self.last_active.unwrap_or(now);
        let quiet = now.saturating_sub(last_active);

        // Step 1: scale to zero. The idle grace replaces the scale-down delay and rate here:
        // with nothing in flight for that long, no instance has work to lose.
        if config.min == 0 && quiet > config.idle {
            self.panic = None;
            self.delay.clear();
            return Decision {
                desired: 0,
                panic: false,
                stable_concurrency: stable,
                panic_concurrency: burst,
                reason: format!(
                    "no request for {:.1}s (idle {}, min 0) -> 0",
                    quiet.as_secs_f64(),
                    show_duration(config.idle)
                ),
            };
        }

        // Step 2: stable demand, with a hysteresis band. `exact` instances carry at most the
        // target each; `enough` carry at most `tolerance` over it. The ready count is kept
        // anywhere in between; below the band it goes up to `exact` (full headroom), above
        // it down to `enough` (the fewest that are fine). With a tolerance of 0.1, target
        // 10 and a stable average of 104: exact = ceil(10.4) = 11, enough = ceil(9.45) = 10,
        // so 10 ready stay 10, 8 ready go to 11 and 14 ready go to 10. An average hovering
        // around 100 therefore settles instead of flapping between 10 and 11.
        let stable_demand = stable / config.target;
        let exact = instances(stable_demand);
        let enough = instances(stable_demand / (1.0 + config.tolerance)).min(exact);
        let stable_want = if ready < enough {
            exact
        } else if ready > exact {
            enough
        } else {
            ready
        };
        let mut reason = if stable_want != exact {
            format!(
                "stable avg {stable:.1} in-flight / target {} = {stable_demand:.2}, {stable_want} \
                 within {}% over target -> {stable_want}",
                config.target,
                config.tolerance * 100.0
            )
        } else {
            format!(
                "stable avg {stable:.1} in-flight / target {} -> {stable_want}",
                config.target
            )
        };
        let mut desired = stable_want;

        // A scale-down never goes below what the panic window still needs (within the same
        // tolerance): after a quiet minute the stable average of 13 asks for 2, but while a
        // burst keeps 40 in flight (ceil(4 / 1.1) = 4) the 4 ready instances stay. Knative
        // would shrink to 2 here and panic back up to 4 a few seconds later.
        let burst_demand = burst / config.target;
        let burst_floor = instances(burst_demand / (1.0 + config.tolerance)).min(ready);
        let newest_demand = newest / config.target;
        let burst_want = instances(newest_demand);
        if burst_floor > desired {
            desired = burst_floor;
            reason.push_str(&format!(
                "; {} avg {burst:.1} in-flight still needs {desired} -> {desired}",
                show_duration(config.panic_window)
            ));
        }

        // Step 3: panic. The condition compares the burst demand with the ready instances,
        // counting 0 ready as 1: with a threshold of 2, 3 ready and a target of 10, a 6 s
        // average of 60 in flight (demand 6.0 = 2 x 3) starts panic. The demand is compared
        // before rounding up, so that 10.1 in flight on 1 instance (demand 1.01, rounded 2)
        // is not a burst.
        let over = newest_demand / f64::from(ready.max(1)) >= config.panic_threshold;
        match (&mut self.panic, over) {
            (None, true) => {
                self.panic = Some(Panic {
                    since: now,
                    last_over: now,
                    most: 0,
                })
            }
            (Some(panic), true) => panic.last_over = now,
            (Some(panic), false) if now.saturating_sub(panic.last_over) >= config.stable_window => {
                self.panic = None;
                reason.push_str(&format!(
                    "; panic over after {} below {}x",
                    show_duration(config.stable_window),
                    config.panic_threshold
                ));
            }
            _ => {}
        }
        if let Some(panic) = &mut self.panic {
            desired = desired.max(burst_want).max(panic.most);
            panic.most = desired;
            reason = format!(
                "panic since {:.1}s: newest {newest:.1} in-flight ({} avg {burst:.1}) / target \
                 {} = {newest_demand:.2} ({} {}x {ready} ready) -> {burst_want}; {reason}; \
                 never down in panic -> {desired}",
                panic.since.as_secs_f64(),
                show_duration(config.panic_window),
                config.target,
                if over { ">=" } else { "was >=" },
                config.panic_threshold,
            );
        }

        // Step 4: cap, then delay and rate-limit scale-downs. Capping first keeps the delay window's values
        // (and so its length) within 0..=max.
        if desired > config.max {
            desired = config.max;
            reason.push_str(&format!("; max {} -> {desired}", config.max));
        }
        let delayed = self.delay.record(now, desired);
        if delayed > desired {
            desired = delayed;
            reason.push_str(&format!(
                "; scale-down delay {} keeps {desired}",
                show_duration(config.scale_down_delay)
            ));
        }
        // The scale-down rate applies after the delay, so that once the delay has passed
        // the count shrinks one step per decision: with a rate of 2, 16 ready instances go
        // to at least floor(16 / 2) = 8, then 4, 2, 1. From 1 it allows 0, but scaling to
        // zero is decided by `idle` above and the floor below keeps 1.
        let slowest = saturating_count((f64::from(ready) / config.max_scale_down_rate).floor())
            .min(config.max);
        if slowest > desired {
            desired = slowest;
            reason.push_str(&format!(
                "; at most /{} per decision from {ready} ready -> {desired}",
                config.max_scale_down_rate
            ));
        }

        // Step 5: the floor. `min`, or one instance while the revision is not idle.
        if desired < config.min {
            desired = config.min;
            reason.push_str(&format!("; min {} -> {desired}", config.min));
        } else if desired == 0 {
            desired = 1;
            if ready == 0 {
                reason.push_str(&format!(
                    "; request at {:.1}s while at 0 -> 1",
                    last_active.as_secs_f64()
                ));
            } else {
                reason.push_str(&format!(
                    "; last request {:.1}s ago, within idle {} -> 1",
                    quiet.as_secs_f64(),
                    show_duration(config.idle)
                ));
            }
        }
        // An invalid config (min > max, or max 0) still never exceeds max.
        desired = desired.min(config.max);

        Decision {
            desired,
            panic: self.panic.is_some(),
            stable_concurrency: stable,
            panic_concurrency: burst,
            reason,
        }
    }

    /// Whether the decider is in panic mode (as of the last decision).
    pub fn in_panic(&self) -> bool {
        self.panic.is_some()
    }

    /// The last time a request was in flight or arrived (or the first time the decider saw,
    /// if no request did), or `None` before anything was recorded.
    pub fn last_active(&self) -> Option<Duration> {
        self.last_active
    }

    /// Starts the idle clock at the first time the decider sees.
    fn observe(&mut self, at: Duration) {
        self.last_active.get_or_insert(at);
    }

    fn mark_active(&mut self, at: Duration) {
        self.last_active = Some(self.last_active.map_or(at, |last| last.max(at)));
    }

    /// The sample window, for the memory-bound tests.
    #[cfg(test)]
    pub(crate) fn sample_window(&self) -> &SampleWindow {
        &self.samples
    }

    /// The delay window, for the memory-bound tests.
    #[cfg(test)]
    pub(crate) fn delay_window(&self) -> &DelayWindow {
        &self.delay
    }
}

/// The instance count for a fractional demand: `ceil(demand)`, so 8.24 needs 9 instances.
/// A billionth is taken off first so that rounding error in an average does not ask for
/// an extra instance: ten samples of 100 with a target of 10 may average to
/// 10.000000000000002 instances, which is 10, not 11. NaN and negative demands need none.
fn instances(demand: f64) -> u32 {
    saturating_count((demand - 1e-9).ceil())
}

/// Converts a whole, possibly huge, negative or NaN number to a count: NaN and negatives
/// are 0, values past `u32::MAX` are `u32::MAX`.
fn saturating_count(value: f64) -> u32 {
    if value.is_nan() || value <= 0.0 {
        0
    } else if value >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        // The value is whole and within range, so the conversion is exact.
        value as u32
    }
}
