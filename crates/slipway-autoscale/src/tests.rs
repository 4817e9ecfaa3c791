//! Behaviour tests of the decider, written as timelines in simulated seconds (like Knative's
//! autoscaler tests), plus a property-style run over random traces. `simulation` replays a
//! longer mixed trace and prints it.

use std::time::Duration;

use crate::{Config, Decider, Decision, Sample};

mod simulation;

fn secs(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}

/// The default tuning with the given bounds and target.
fn config(min: u32, max: u32, target: f64) -> Config {
    Config {
        min,
        max,
        target,
        ..Config::default()
    }
}

/// A small deterministic pseudo-random generator (SplitMix64), so that noisy traces are the
/// same on every run.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A float in [0, 1), from the top 53 bits.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A float in [low, high).
    fn between(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.unit()
    }

    /// An integer in [0, n).
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Drives a decider the way the control plane does: one sample and one decision per
/// simulated second, with instances ready as soon as they are asked for.
struct Sim {
    decider: Decider,
    now: Duration,
    ready: u32,
}

impl Sim {
    fn new(config: Config, ready: u32) -> Sim {
        Sim {
            decider: Decider::new(config),
            now: Duration::ZERO,
            ready,
        }
    }

    /// Advances one second with `concurrency` in flight; any load also means arrivals.
    fn tick(&mut self, concurrency: f64) -> Decision {
        self.now += secs(1);
        let requests = if concurrency > 0.0 {
            concurrency.ceil() as u64
        } else {
            0
        };
        self.decider.record(Sample {
            at: self.now,
            concurrency,
            requests,
        });
        self.decide()
    }

    /// Decides at the current time and makes the answer ready.
    fn decide(&mut self) -> Decision {
        let decision = self.decider.scale(self.now, self.ready);
        self.ready = decision.desired;
        decision
    }

    /// Ticks `seconds` times at a constant load and returns the desired counts.
    fn hold(&mut self, seconds: u64, concurrency: f64) -> Vec<u32> {
        (0..seconds)
            .map(|_| self.tick(concurrency).desired)
            .collect()
    }
}

/// How many times consecutive values differ.
fn changes(values: &[u32]) -> usize {
    values.windows(2).filter(|pair| pair[0] != pair[1]).count()
}

#[test]
fn default_config_is_valid() {
    assert_eq!(Config::default().validate(), Ok(()));
    assert_eq!(config(0, 10, 50.0).validate(), Ok(()));
}

#[test]
fn validate_names_every_bad_field() {
    let bad = Config {
        min: 3,
        max: 2,
        target: 0.0,
        panic_window: secs(90),
        panic_threshold: 0.5,
        max_scale_down_rate: f64::NAN,
        tolerance: 1.0,
        ..Config::default()
    };
    let message = bad.validate().unwrap_err();
    let lines: Vec<&str> = message.lines().collect();
    assert_eq!(lines.len(), 6, "{message}");
    assert!(lines[0].starts_with("`scaling.concurrency` must be > 0, got 0; hint:"));
    assert!(lines[1].starts_with("`scaling.min` (3) is greater than `scaling.max` (2)"));
    assert!(lines[2].starts_with(
        "`scaling.panic_window` (90s) must be longer than 0s and no longer than \
         `scaling.stable_window` (60s)"
    ));
    assert!(lines[3].starts_with("`scaling.panic_threshold` must be > 1.0, got 0.5"));
    assert!(lines[4].starts_with("`scaling.max_scale_down_rate` must be > 1.0, got NaN"));
    assert!(lines[5].starts_with("`scaling.tolerance` must be at least 0 and below 1, got 1"));

    let zero = Config {
        max: 0,
        stable_window: Duration::ZERO,
        panic_window: Duration::from_millis(1500),
        ..Config::default()
    };
    let message = zero.validate().unwrap_err();
    assert!(
        message.contains("`scaling.max` must be at least 1, got 0"),
        "{message}"
    );
    assert!(message.contains("`scaling.min` (1) is greater than `scaling.max` (0)"));
    assert!(message.contains("`scaling.stable_window` must be longer than 0s"));
    assert!(
        message.contains("`scaling.panic_window` (1.5s)"),
        "{message}"
    );
}

#[test]
fn desired_is_the_stable_average_over_the_target() {
    // The example of the issue: 412 in flight, target 50, max 10.
    let mut sim = Sim::new(config(0, 10, 50.0), 9);
    let decision = sim.tick(412.0);
    assert_eq!(decision.desired, 9);
    assert!(!decision.panic);
    assert_eq!(decision.stable_concurrency, 412.0);
    assert_eq!(
        decision.reason,
        "stable avg 412.0 in-flight / target 50 -> 9"
    );
    let json = serde_json::to_value(&decision).unwrap();
    assert_eq!(json["desired"], 9);
    assert_eq!(json["panic"], false);
}

#[test]
fn steady_noisy_load_settles_without_flapping() {
    // 100 in flight +-20 % per sample, target 10: 10 instances, whatever the noise.
    let mut rng = Rng(7);
    let mut sim = Sim::new(config(0, 20, 10.0), 1);
    let desired: Vec<u32> = (0..600)
        .map(|_| sim.tick(100.0 * rng.between(0.8, 1.2)).desired)
        .collect();
    // Warm-up: the first sample panics up, then the stable window and the delay settle.
    let settled = &desired[120..];
    assert!(changes(settled) <= 2, "{settled:?}");
    assert!(
        settled.iter().all(|&n| (9..=11).contains(&n)),
        "{settled:?}"
    );
    assert_eq!(desired.last(), Some(&10));
    assert!(!sim.decider.in_panic());
}

#[test]
fn steady_load_is_capped_at_max() {
    let mut rng = Rng(11);
    let mut sim = Sim::new(config(0, 8, 10.0), 1);
    let desired: Vec<u32> = (0..600)
        .map(|_| sim.tick(100.0 * rng.between(0.8, 1.2)).desired)
        .collect();
    assert!(desired.iter().all(|&n| n <= 8), "{desired:?}");
    assert!(desired[5..].iter().all(|&n| n == 8), "{desired:?}");
}

#[test]
fn a_tenfold_spike_panics_up_at_the_first_decision() {
    let mut sim = Sim::new(config(0, 20, 10.0), 1);
    assert!(sim.hold(120, 10.0).iter().all(|&n| n == 1));
    // t0 is the last second at 10; from t0+1s on, 100 are in flight. The 6 s average
    // climbs 25, 40, 55, 70, 85, 100, but the newest sample says 100 at once: panic asks
    // for all 10 at the first decision (Knative's KPA, on the average, went 3, 4, 6, 7, 9, 10).
    let first = sim.tick(100.0);
    assert_eq!(
        first.reason,
        "panic since 121.0s: newest 100.0 in-flight (6s avg 25.0) / target 10 = 10.00 (>= 2x 1 \
         ready) -> 10; stable avg 11.5 in-flight / target 10 -> 2; never down in panic -> 10"
    );
    let mut timeline = vec![first.desired];
    for _ in 2..=6 {
        let decision = sim.tick(100.0);
        assert!(decision.panic, "{decision:?}");
        timeline.push(decision.desired);
    }
    assert_eq!(timeline, [10, 10, 10, 10, 10, 10]);

    // Panic lasts a full stable window after the condition last held (t0+1s, when 3 were
    // wanted with 1 ready), and the count stays at 10 throughout and after.
    let after = sim.hold(54, 100.0);
    assert!(after.iter().all(|&n| n == 10), "{after:?}");
    assert!(sim.decider.in_panic());
    let decision = sim.tick(100.0);
    assert!(!decision.panic, "{decision:?}");
    assert_eq!(decision.desired, 10);
    assert!(
        decision.reason.contains("panic over after 60s"),
        "{}",
        decision.reason
    );
}

#[test]
fn panic_never_scales_down() {
    let mut sim = Sim::new(config(0, 20, 10.0), 1);
    sim.hold(60, 10.0);
    sim.hold(6, 150.0);
    assert_eq!(sim.ready, 15);
    // The burst ends at once, but panic holds its peak until it is over.
    for _ in 0..40 {
        let decision = sim.tick(10.0);
        assert!(decision.panic);
        assert_eq!(decision.desired, 15, "{}", decision.reason);
    }
}

#[test]
fn panic_is_capped_at_max() {
    let mut sim = Sim::new(config(0, 5, 10.0), 1);
    sim.hold(60, 10.0);
    let decision = sim.tick(1000.0);
    assert!(decision.panic);
    assert_eq!(decision.desired, 5);
    assert!(
        decision.reason.ends_with("; max 5 -> 5"),
        "{}",
        decision.reason
    );
}

#[test]
fn a_slow_ramp_follows_without_panic() {
    let mut sim = Sim::new(config(0, 20, 10.0), 1);
    sim.hold(60, 10.0);
    // From 10 to 100 in flight over ten minutes.
    let mut previous = sim.ready;
    for second in 1..=600u32 {
        let load = 10.0 + 90.0 * f64::from(second) / 600.0;
        let decision = sim.tick(load);
        assert!(!decision.panic, "at {second} s: {decision:?}");
        assert!(decision.desired >= previous, "at {second} s: {decision:?}");
        // The stable average lags the load by about 4.5 in flight (half the window at
        // 0.15 per second), and rounding costs up to one instance.
        assert!(
            f64::from(decision.desired) + 1.0 >= 0.8 * load / 10.0,
            "at {second} s the load is {load:.1}: {decision:?}"
        );
        previous = decision.desired;
    }
    let held = sim.hold(120, 100.0);
    assert_eq!(held.last(), Some(&10));
}

#[test]
fn bursts_more_often_than_idle_keep_an_instance() {
    let mut sim = Sim::new(config(0, 10, 10.0), 1);
    // 10 s at 30 in flight, then 40 s idle, for ten minutes: the gaps are shorter than
    // `idle` (60 s), so the service never goes to zero.
    for _ in 0..12 {
        assert!(sim.hold(10, 30.0).iter().all(|&n| n >= 1));
        assert!(sim.hold(40, 0.0).iter().all(|&n| n >= 1));
    }
    // When the bursts stop, zero comes once more than 60 s passed since the last one.
    let quiet = sim.hold(20, 0.0);
    assert!(quiet.iter().all(|&n| n >= 1));
    assert_eq!(sim.tick(0.0).desired, 0);
}

#[test]
fn bursts_rarer_than_idle_go_to_zero_and_wake_at_once() {
    let mut sim = Sim::new(config(0, 10, 10.0), 1);
    for _ in 0..3 {
        let burst = sim.hold(5, 30.0);
        assert!(burst.iter().all(|&n| n >= 1), "{burst:?}");
        let gap = sim.hold(90, 0.0);
        // 5 s of burst, then the last busy second is 60 s behind after 61 quiet seconds.
        assert!(gap[..60].iter().all(|&n| n >= 1), "{gap:?}");
        assert!(gap[60..].iter().all(|&n| n == 0), "{gap:?}");
    }
}

#[test]
fn scales_to_zero_after_idle_with_min_zero() {
    let mut sim = Sim::new(config(0, 10, 10.0), 1);
    sim.hold(30, 20.0);
    let last_busy = sim.now;
    // Up to exactly `idle` after the last busy sample, one instance stays; one second
    // later it goes.
    let quiet = sim.hold(60, 0.0);
    assert!(quiet.iter().all(|&n| n >= 1), "{quiet:?}");
    assert_eq!(sim.now - last_busy, secs(60));
    let decision = sim.tick(0.0);
    assert_eq!(decision.desired, 0);
    assert_eq!(
        decision.reason,
        "no request for 61.0s (idle 60s, min 0) -> 0"
    );
    assert!(sim.hold(600, 0.0).iter().all(|&n| n == 0));
}

#[test]
fn a_new_decider_waits_idle_before_zero() {
    let mut sim = Sim::new(config(0, 10, 10.0), 1);
    // The first sample, at 1 s, starts the idle clock; at 61 s it has run for exactly 60 s.
    let quiet = sim.hold(62, 0.0);
    assert!(quiet[..61].iter().all(|&n| n == 1), "{quiet:?}");
    assert_eq!(quiet[61], 0);
}

#[test]
fn never_scales_to_zero_with_min_one() {
    let mut sim = Sim::new(config(1, 10, 10.0), 1);
    assert!(sim.hold(30, 20.0).iter().all(|&n| n == 2));
    let quiet = sim.hold(600, 0.0);
    assert!(quiet.iter().all(|&n| n >= 1), "{quiet:?}");
    assert!(quiet[100..].iter().all(|&n| n == 1), "{quiet:?}");
}

#[test]
fn a_poke_at_zero_asks_for_one_at_once() {
    let mut sim = Sim::new(config(0, 10, 10.0), 1);
    sim.hold(100, 0.0);
    assert_eq!(sim.ready, 0);
    sim.now += Duration::from_millis(300);
    sim.decider.poke(sim.now);
    let decision = sim.decide();
    assert_eq!(decision.desired, 1);
    assert_eq!(
        decision.reason,
        "stable avg 0.0 in-flight / target 10 -> 0; request at 100.3s while at 0 -> 1"
    );
    // Without further requests, the instance goes once `idle` has passed again.
    let after = sim.hold(61, 0.0);
    assert!(after[..60].iter().all(|&n| n == 1), "{after:?}");
    assert_eq!(after[60], 0);
}

#[test]
fn a_sample_with_arrivals_at_zero_asks_for_one_at_once() {
    let mut sim = Sim::new(config(0, 10, 10.0), 1);
    sim.hold(100, 0.0);
    assert_eq!(sim.ready, 0);
    // Short requests that finished between samples: nothing in flight, two arrivals.
    sim.now += secs(1);
    sim.decider.record(Sample {
        at: sim.now,
        concurrency: 0.0,
        requests: 2,
    });
    assert_eq!(sim.decide().desired, 1);
}

#[test]
fn a_burst_at_zero_panics_straight_up() {
    let mut sim = Sim::new(config(0, 20, 10.0), 1);
    sim.hold(100, 0.0);
    assert_eq!(sim.ready, 0);
    sim.decider.poke(sim.now);
    assert_eq!(sim.decide().desired, 1);
    // The 6 s average climbs 16.7, 33.3, 50, 66.7, 83.3, 100, but the first sample of 100
    // in flight is ten times the target, over twice the one ready: 10 at once.
    let timeline = sim.hold(6, 100.0);
    assert_eq!(timeline, [10, 10, 10, 10, 10, 10]);
}

#[test]
fn min_is_kept_without_load() {
    let mut sim = Sim::new(config(3, 10, 10.0), 0);
    let decision = sim.tick(0.0);
    assert_eq!(decision.desired, 3);
    assert!(
        decision.reason.ends_with("; min 3 -> 3"),
        "{}",
        decision.reason
    );
}

#[test]
fn scale_down_waits_for_the_delay_then_halves_per_decision() {
    // A short stable window, so that the wanted count drops within two seconds and what
    // follows is only the delay and the rate.
    let config = Config {
        min: 1,
        max: 20,
        target: 10.0,
        stable_window: secs(2),
        panic_window: secs(1),
        scale_down_delay: secs(30),
        ..Config::default()
    };
    let mut sim = Sim::new(config, 16);
    assert!(sim.hold(60, 160.0).iter().all(|&n| n == 16));
    // t0 wanted 16 for the last time; from t0+1s only 10 are in flight (1 instance).
    let held = sim.hold(29, 10.0);
    assert!(held.iter().all(|&n| n == 16), "{held:?}");
    let decision = sim.tick(10.0);
    assert!(
        decision.reason.contains("scale-down delay 30s keeps 8"),
        "{}",
        decision.reason
    );
    // t0+30s: the 16 is 30 s old; the highest wish since wins: 8 at t0+1s, for a stable
    // average of (160 + 10) / 2 = 85 (ceil(8.5 / 1.1) = 8). Then the rate limit halves
    // per decision.
    let mut timeline = vec![decision.desired];
    timeline.extend(sim.hold(4, 10.0));
    assert_eq!(timeline, [8, 4, 2, 1, 1]);
}

#[test]
fn scale_down_without_delay_is_still_gradual() {
    let config = Config {
        min: 0,
        max: 20,
        target: 10.0,
        stable_window: secs(2),
        panic_window: secs(1),
        scale_down_delay: Duration::ZERO,
        ..Config::default()
    };
    let mut sim = Sim::new(config, 16);
    sim.hold(60, 160.0);
    let decision = sim.tick(5.0);
    // Stable average (160 + 5) / 2 = 82.5: 8 instances carry it within 10 % over target
    // (ceil(8.25 / 1.1) = 8), which is also the rate floor of 16 / 2.
    assert_eq!(decision.desired, 8);
    let decision = sim.tick(5.0);
    assert_eq!(decision.desired, 4);
    assert!(
        decision
            .reason
            .ends_with("; at most /2 per decision from 8 ready -> 4"),
        "{}",
        decision.reason
    );
    assert_eq!(sim.hold(3, 5.0), [2, 1, 1]);
}

#[test]
fn tolerance_keeps_the_ready_count() {
    let mut sim = Sim::new(config(0, 20, 10.0), 10);
    let decision = sim.tick(104.0);
    assert_eq!(decision.desired, 10);
    assert_eq!(
        decision.reason,
        "stable avg 104.0 in-flight / target 10 = 10.40, 10 within 10% over target -> 10"
    );
    // Outside the tolerance the exact ceil applies.
    let mut sim = Sim::new(config(0, 20, 10.0), 10);
    assert_eq!(sim.tick(112.0).desired, 12);
}

#[test]
fn invalid_configs_do_not_panic_and_respect_max() {
    let configs = [
        Config {
            min: 5,
            max: 2,
            ..config(0, 0, 10.0)
        },
        config(0, 0, 10.0),
        config(0, 10, 0.0),
        config(0, 10, f64::NAN),
        config(0, 10, -1.0),
        Config {
            stable_window: Duration::ZERO,
            panic_window: Duration::ZERO,
            scale_down_delay: Duration::MAX,
            idle: Duration::MAX,
            max_scale_down_rate: 0.0,
            panic_threshold: f64::NAN,
            tolerance: f64::INFINITY,
            ..config(0, 10, 10.0)
        },
    ];
    for config in configs {
        let max = config.max;
        let mut sim = Sim::new(config.clone(), 3);
        for load in [0.0, 5.0, 1e300, f64::INFINITY, f64::NAN, -3.0, 0.0] {
            let decision = sim.tick(load);
            assert!(decision.desired <= max, "{config:?}: {decision:?}");
        }
        sim.decider.poke(Duration::MAX);
        assert!(sim.decider.scale(Duration::MAX, u32::MAX).desired <= max);
    }
}

#[test]
fn random_traces_stay_within_bounds_and_bounded_memory() {
    let mut rng = Rng(2024);
    for trace in 0..300 {
        let min = rng.below(4) as u32;
        let max = min.max(1) + rng.below(30) as u32;
        let stable = 1 + rng.below(120);
        let config = Config {
            min,
            max,
            target: rng.between(0.5, 100.0),
            stable_window: secs(stable),
            panic_window: secs(1 + rng.below(stable)),
            panic_threshold: rng.between(1.1, 4.0),
            scale_down_delay: secs(rng.below(60)),
            idle: secs(rng.below(120)),
            max_scale_down_rate: rng.between(1.1, 5.0),
            tolerance: rng.between(0.0, 0.5),
        };
        assert_eq!(config.validate(), Ok(()), "trace {trace}");
        let mut decider = Decider::new(config.clone());
        let mut now = Duration::ZERO;
        let mut ready = rng.below(u64::from(max) + 5) as u32;
        let mut load: f64 = 0.0;
        for step in 0..600 {
            now += Duration::from_millis(200 + rng.below(2_000));
            // A random walk with occasional jumps to zero and spikes.
            load = match rng.below(20) {
                0 => 0.0,
                1 => load * 10.0 + 50.0,
                _ => (load * rng.between(0.7, 1.3) + rng.between(-5.0, 5.0)).max(0.0),
            }
            .min(100_000.0);
            let requests = if rng.below(3) == 0 { 0 } else { rng.below(500) };
            decider.record(Sample {
                at: now,
                concurrency: load,
                requests,
            });
            let poked = rng.below(50) == 0;
            if poked {
                decider.poke(now);
            }
            let decision = decider.scale(now, ready);
            let context = || format!("trace {trace} step {step}: {config:?} {decision:?}");
            assert!(decision.desired <= max, "{}", context());
            if min > 0 {
                assert!(decision.desired >= min, "{}", context());
            }
            if poked {
                assert!(decision.desired >= 1, "{}", context());
            }
            assert!(
                decider.sample_window().len() <= decider.sample_window().bound(),
                "{}",
                context()
            );
            assert!(
                decider.delay_window().len() <= max as usize + 1,
                "{}",
                context()
            );
            // Instances become ready some of the time, and some crash.
            ready = match rng.below(4) {
                0 => ready,
                1 => rng.below(u64::from(max) + 5) as u32,
                _ => decision.desired,
            };
        }
    }
}

#[test]
fn a_scale_down_keeps_what_the_panic_window_needs() {
    let mut decider = Decider::new(config(0, 10, 10.0));
    // 54 quiet seconds, then 6 s at 40 in flight: the stable average is 240 / 60 = 4
    // (1 instance), the 6 s average 40 (4 instances).
    for second in 1..=60 {
        let concurrency = if second > 54 { 40.0 } else { 0.0 };
        decider.record(Sample {
            at: secs(second),
            concurrency,
            requests: concurrency as u64,
        });
    }
    let decision = decider.scale(secs(60), 4);
    assert_eq!(decision.desired, 4);
    assert!(!decision.panic);
    assert_eq!(
        decision.reason,
        "stable avg 4.0 in-flight / target 10 -> 1; 6s avg 40.0 in-flight still needs 4 -> 4"
    );
}

#[test]
fn a_single_sample_under_twice_the_ready_capacity_does_not_panic() {
    // Noise is not a spike: 10 ready at target 10 see one sample of 190 in flight (1.9x).
    let mut sim = Sim::new(config(0, 20, 10.0), 10);
    assert!(sim.hold(120, 100.0).iter().all(|&n| n == 10));
    let decision = sim.tick(190.0);
    assert!(!decision.panic, "{decision:?}");
    assert_eq!(decision.desired, 10);
    // Twice the ready capacity in the newest sample does.
    let decision = sim.tick(200.0);
    assert!(decision.panic, "{decision:?}");
    assert_eq!(decision.desired, 20);
}
