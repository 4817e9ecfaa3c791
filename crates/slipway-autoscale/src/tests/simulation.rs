//! A replay of one synthetic trace through the decider: steady load, a 10x spike, a slow
//! ramp, bursty on/off traffic and a quiet tail. It asserts the key points and prints the
//! instances over time; see it with
//! `cargo test -p slipway-autoscale -- --nocapture simulation`.

use super::{Rng, Sim, config};

/// The phases of the trace, in simulated seconds (target 10 per instance, max 60).
const STEADY_END: u64 = 180; // 45 in flight +-10 %: 5 instances
const SPIKE_END: u64 = 300; // 450 in flight: 45 instances
const SETTLE_END: u64 = 420; // back to 45: down to 5, gradually
const RAMP_END: u64 = 1020; // 45 -> 195 over ten minutes: up to 20, without panic
const BURSTY_END: u64 = 1420; // 10 s at 40, 30 s off: never zero
const END: u64 = 1560; // nothing: zero after `idle`

fn phase(t: u64) -> &'static str {
    if t <= STEADY_END {
        "steady"
    } else if t <= SPIKE_END {
        "spike"
    } else if t <= SETTLE_END {
        "settle"
    } else if t <= RAMP_END {
        "ramp"
    } else if t <= BURSTY_END {
        "bursty"
    } else {
        "quiet"
    }
}

fn load(t: u64, rng: &mut Rng) -> f64 {
    match phase(t) {
        "steady" | "settle" => 45.0 * rng.between(0.9, 1.1),
        "spike" => 450.0,
        "ramp" => 45.0 + 150.0 * (t - SETTLE_END) as f64 / (RAMP_END - SETTLE_END) as f64,
        "bursty" if (t - RAMP_END - 1) % 40 < 10 => 40.0,
        _ => 0.0,
    }
}

/// One printed row of the table.
struct Row {
    t: u64,
    phase: &'static str,
    load: f64,
    stable: f64,
    burst: f64,
    desired: u32,
    panic: bool,
}

#[test]
fn simulation_of_a_mixed_trace() {
    let mut rng = Rng(42);
    let mut sim = Sim::new(config(0, 60, 10.0), 1);
    let mut rows = Vec::new();
    let mut desired = Vec::new();
    let mut panics = Vec::new();
    for t in 1..=END {
        let load = load(t, &mut rng);
        let decision = sim.tick(load);
        // A row every 30 s, every second of the first 6 s of a phase, and whenever panic
        // starts or ends or the count reaches or leaves zero.
        let phase_start = (1..=6).any(|back| t > back && phase(t - back) != phase(t));
        let panic_toggled = panics
            .last()
            .is_some_and(|&before| before != decision.panic);
        let zero_toggled = desired
            .last()
            .is_some_and(|&before: &u32| (before == 0) != (decision.desired == 0));
        if t == 1 || t % 30 == 0 || phase_start || panic_toggled || zero_toggled {
            rows.push(Row {
                t,
                phase: phase(t),
                load,
                stable: decision.stable_concurrency,
                burst: decision.panic_concurrency,
                desired: decision.desired,
                panic: decision.panic,
            });
        }
        desired.push(decision.desired);
        panics.push(decision.panic);
    }
    print_table(&rows);

    // `desired[t - 1]` and `panics[t - 1]` are the decisions at second t.
    let at = |t: u64| desired[t as usize - 1];
    let panic_at = |t: u64| panics[t as usize - 1];
    let during = |from: u64, to: u64| &desired[from as usize - 1..to as usize];

    // Steady: 5 instances, settled and calm well before the spike.
    assert!(during(120, STEADY_END).iter().all(|&n| n == 5));
    assert!(!panic_at(STEADY_END));
    // Spike: panic within a second, at least 36 of the 45 needed within 6 s.
    assert!(panic_at(STEADY_END + 1));
    assert!(
        during(STEADY_END + 1, STEADY_END + 6)
            .iter()
            .any(|&n| n >= 36)
    );
    assert_eq!(at(STEADY_END + 10), 45);
    assert!(during(STEADY_END + 10, SPIKE_END).iter().all(|&n| n == 45));
    // Settle: no drop while the scale-down delay runs, then down to 5 and never below.
    assert!(
        during(SPIKE_END + 1, SPIKE_END + 30)
            .iter()
            .all(|&n| n == 45)
    );
    assert!(during(SPIKE_END + 1, SETTLE_END).iter().all(|&n| n >= 5));
    assert_eq!(at(SETTLE_END), 5);
    // Ramp: follows up to 20 without panic and without going down.
    assert!(!panics[SETTLE_END as usize..RAMP_END as usize].contains(&true));
    let ramp = during(SETTLE_END + 1, RAMP_END);
    assert!(ramp.windows(2).all(|pair| pair[0] <= pair[1]), "{ramp:?}");
    assert!((18..=20).contains(&at(RAMP_END)), "{}", at(RAMP_END));
    // Bursty: gaps of 30 s are shorter than `idle`, so never zero.
    assert!(during(RAMP_END + 1, BURSTY_END).iter().all(|&n| n >= 1));
    // Quiet: zero once more than 60 s have passed since the last burst second.
    let last_busy = (RAMP_END + 1..=BURSTY_END)
        .rev()
        .find(|&t| load(t, &mut Rng(0)) > 0.0)
        .unwrap();
    assert!(at(last_busy + 60) >= 1);
    assert_eq!(at(last_busy + 61), 0);
    assert!(during(last_busy + 61, END).iter().all(|&n| n == 0));
}

fn print_table(rows: &[Row]) {
    println!("     t  phase    load  stable  6s avg  desired");
    for row in rows {
        println!(
            "{:>5}s  {:<6} {:>6.1}  {:>6.1}  {:>6.1}  {:>3} {} {}",
            row.t,
            row.phase,
            row.load,
            row.stable,
            row.burst,
            row.desired,
            if row.panic { "P" } else { " " },
            "#".repeat(row.desired as usize)
        );
    }
}
