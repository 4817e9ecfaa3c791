//! Autoscaling: the `scaling:` keys beyond `min` and `max`, and scale to zero.

mod support;

use std::time::Duration;

use slipway_spec::Scaling;
use support::{hint, positions, service, single, valid};

fn scaling_of(yaml: &str) -> Scaling {
    valid(&service(&format!("    scaling: {yaml}\n"))).services["web"].scaling
}

/// A service with a block `scaling:` on line 5 and `lines` below it (line 6 on), each
/// indented by six spaces: a value after `stable_window: ` starts at column 22, after
/// `panic_window: ` at column 21.
fn with_scaling(lines: &[&str]) -> String {
    let body: String = lines.iter().map(|l| format!("      {l}\n")).collect();
    service(&format!("    scaling:\n{body}"))
}

#[test]
fn every_key_resolves_and_defaults_apply() {
    assert_eq!(
        scaling_of(
            "{ min: 0, max: 10, concurrency: 50, max_concurrency: 80, idle: 0s, stable_window: 2m, panic_window: 10s }"
        ),
        Scaling {
            min: 0,
            max: 10,
            concurrency: 50,
            max_concurrency: 80,
            idle: Duration::ZERO,
            stable_window: Duration::from_secs(120),
            panic_window: Duration::from_secs(10),
        }
    );
    let defaults = scaling_of("{ max: 3 }");
    assert_eq!(
        (
            defaults.concurrency,
            defaults.max_concurrency,
            defaults.idle,
            defaults.stable_window,
            defaults.panic_window
        ),
        (
            100,
            0,
            Duration::from_secs(60),
            Duration::from_secs(60),
            Duration::from_secs(6)
        )
    );
    // A hard limit below the target is allowed (documented: the target is never reached).
    assert_eq!(
        scaling_of("{ concurrency: 50, max_concurrency: 10 }").max_concurrency,
        10
    );
}

#[test]
fn scaling_to_zero_is_allowed() {
    let zero = scaling_of("{ min: 0 }");
    assert_eq!((zero.min, zero.max), (0, 1));
    let zero = scaling_of("{ min: 0, max: 10, idle: 5m }");
    assert_eq!((zero.min, zero.max), (0, 10));
    assert_eq!(zero.idle, Duration::from_secs(300));
    // `max` still needs room for one instance.
    let d = single(&service("    scaling: { min: 0, max: 0 }\n"), 5, 29);
    assert_eq!(
        d.message,
        "`services.web.scaling.max` must be at least 1, found 0"
    );
}

#[test]
fn concurrency_limits_are_checked() {
    let d = single(&service("    scaling: { concurrency: 0 }\n"), 5, 29);
    assert_eq!(
        d.message,
        "`services.web.scaling.concurrency` must be at least 1, found 0"
    );
    let d = single(&service("    scaling: { max_concurrency: -1 }\n"), 5, 33);
    assert_eq!(
        d.message,
        "`services.web.scaling.max_concurrency` must be at least 0, found -1"
    );
    let d = single(&service("    scaling: { concurrency: lots }\n"), 5, 29);
    assert_eq!(
        d.message,
        "`services.web.scaling.concurrency` must be a whole number, not a string"
    );
}

#[test]
fn windows_and_idle_are_durations() {
    let d = single(&service("    scaling: { idle: 30 }\n"), 5, 22);
    assert_eq!(d.message, "bad duration `30`: add a unit, e.g. `30s`");
    let d = single(&with_scaling(&["stable_window: 0s"]), 6, 22);
    assert_eq!(
        d.message,
        "`services.web.scaling.stable_window` must be longer than 0"
    );
    let d = single(&with_scaling(&["panic_window: 0s"]), 6, 21);
    assert_eq!(
        d.message,
        "`services.web.scaling.panic_window` must be longer than 0"
    );
}

#[test]
fn the_panic_window_is_shorter_than_the_stable_window() {
    let d = single(&with_scaling(&["panic_window: 60s"]), 6, 21);
    assert_eq!(
        d.message,
        "`scaling.panic_window` (60s) must be shorter than `scaling.stable_window` (60s, the default)"
    );
    assert_eq!(
        hint(&d),
        "the panic window catches bursts within the stable window; shorten it, e.g. `panic_window: 6s`"
    );

    let d = single(
        &with_scaling(&["stable_window: 30s", "panic_window: 45s"]),
        7,
        21,
    );
    assert_eq!(
        d.message,
        "`scaling.panic_window` (45s) must be shorter than `scaling.stable_window` (30s)"
    );
    assert_eq!(
        hint(&d),
        "the panic window catches bursts within the stable window; shorten it, e.g. `panic_window: 3s`"
    );

    // Only the stable window written: the default panic window (6s) no longer fits.
    let d = single(&with_scaling(&["stable_window: 5s"]), 6, 22);
    assert_eq!(
        d.message,
        "`scaling.stable_window` (5s) must be longer than `scaling.panic_window` (6s, the default)"
    );
    assert_eq!(
        hint(&d),
        "lengthen it, or set a shorter `panic_window`, e.g. `panic_window: 500ms`"
    );

    // Nothing shorter than 1ms to suggest.
    let d = single(
        &with_scaling(&["stable_window: 1ms", "panic_window: 1ms"]),
        7,
        21,
    );
    assert_eq!(
        hint(&d),
        "the panic window catches bursts within the stable window; shorten it"
    );

    // A broken window is reported once, without a comparison built on it.
    assert_eq!(
        positions(&with_scaling(&["stable_window: 0s", "panic_window: 10s"])),
        vec![(
            6,
            22,
            "`services.web.scaling.stable_window` must be longer than 0".to_owned()
        )]
    );

    let fits = valid(&with_scaling(&[
        "stable_window: 6s",
        "panic_window: 5999ms",
    ]));
    assert_eq!(
        fits.services["web"].scaling.panic_window,
        Duration::from_millis(5999)
    );
}
