//! Unit tests: rollout timelines with an injected clock, the judgement and its messages, the
//! persisted format, configuration validation and rolling plans.

use std::time::Duration;

use super::*;

/// The configuration of the example: 5, 25, 50, 100 % for 30 s each, at most 1 %
/// errors and 300 ms p95, judged on at least 50 requests, waiting up to 3 intervals.
fn config() -> CanaryConfig {
    CanaryConfig {
        steps: vec![5, 25, 50, 100],
        interval: Duration::from_secs(30),
        analysis: AnalysisConfig {
            max_error_rate: 0.01,
            max_p95: Some(Duration::from_millis(300)),
            min_requests: 50,
            max_wait_factor: 3,
        },
        on_failure: OnFailure::Rollback,
    }
}

/// Seconds since the test's epoch; rollouts start at t(1000) so that a time before the start
/// is representable.
fn t(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

fn figures(requests: u64, errors: u64, p95_ms: u64) -> Figures {
    Figures {
        requests,
        errors,
        p95: Some(Duration::from_millis(p95_ms)),
    }
}

/// A healthy window for the new revision.
fn good() -> Figures {
    figures(500, 1, 120)
}

/// The old revision over the same window: 1 error in 1000 requests, p95 110 ms.
fn baseline() -> Figures {
    figures(1000, 1, 110)
}

fn started(config: CanaryConfig) -> Rollout {
    let (rollout, decision) = Rollout::start(config, t(1000)).unwrap();
    assert_eq!(decision, Decision::SetWeight { new_percent: 5 });
    rollout
}

/// Passes the first step at t(1030), so the rollout is at step 2 (25 %) from t(1030).
fn at_step_two(config: CanaryConfig) -> Rollout {
    let mut rollout = started(config);
    assert_eq!(
        rollout.tick(t(1030), &good(), &baseline()),
        Decision::SetWeight { new_percent: 25 }
    );
    rollout
}

fn outcomes(rollout: &Rollout) -> Vec<(usize, u32, Outcome)> {
    rollout
        .state()
        .history
        .iter()
        .map(|r| (r.step, r.percent, r.outcome.clone()))
        .collect()
}

// --- timelines ---

#[test]
fn happy_path_moves_through_every_step_then_completes() {
    let mut r = started(config());
    assert_eq!(r.current_percent(), 5);
    assert_eq!(r.next_check_at(), Some(t(1030)));

    // Mid-step ticks with good figures change nothing.
    assert_eq!(
        r.tick(t(1010), &good(), &baseline()),
        Decision::Wait { until: t(1030) }
    );
    let timeline = [
        (1030, Decision::SetWeight { new_percent: 25 }),
        (1060, Decision::SetWeight { new_percent: 50 }),
        (1090, Decision::SetWeight { new_percent: 100 }),
        (1120, Decision::Complete),
    ];
    for (secs, expected) in timeline {
        assert_eq!(
            r.tick(t(secs), &good(), &baseline()),
            expected,
            "at t={secs}"
        );
    }
    assert_eq!(r.state().phase, Phase::Complete);
    assert_eq!(r.current_percent(), 100);
    assert_eq!(r.next_check_at(), None);

    let history = &r.state().history;
    let percents: Vec<u32> = history.iter().map(|h| h.percent).collect();
    assert_eq!(percents, [5, 25, 50, 100]);
    assert_eq!(
        history[1],
        StepRecord {
            step: 1,
            percent: 25,
            started: t(1030),
            ended: t(1060),
            outcome: Outcome::Passed {
                summary: "step 2 of 4 (25 %): error rate 0.2 % (1/500) <= limit 1 % (baseline \
                          0.1 %), p95 120 ms <= limit 300 ms (baseline 110 ms)"
                    .to_string()
            },
        }
    );
    // A finished rollout stays finished.
    assert_eq!(
        r.tick(t(2000), &figures(500, 500, 9000), &baseline()),
        Decision::Complete
    );
}

#[test]
fn breach_at_step_two_rolls_back_with_the_numbers() {
    let mut r = at_step_two(config());
    let bad = figures(500, 21, 120);
    let decision = r.tick(t(1060), &bad, &baseline());
    let reason = "step 2 of 4 (25 %): error rate 4.2 % (21/500) > limit 1 % (baseline 0.1 %)";
    assert_eq!(
        decision,
        Decision::RollBack {
            reason: reason.to_string()
        }
    );
    assert_eq!(
        r.state().phase,
        Phase::RolledBack {
            reason: reason.to_string()
        }
    );
    assert_eq!(r.current_percent(), 0);
    assert_eq!(r.next_check_at(), None);
    assert_eq!(
        outcomes(&r).last(),
        Some(&(
            1,
            25,
            Outcome::Failed {
                reason: reason.to_string()
            }
        ))
    );
    // Ticking again repeats the decision and records nothing new.
    assert_eq!(r.tick(t(1090), &good(), &baseline()), decision);
    assert_eq!(r.state().history.len(), 2);
}

#[test]
fn latency_breach_and_both_breaches_quote_every_limit() {
    let mut r = at_step_two(config());
    let slow = figures(500, 0, 412);
    assert_eq!(
        r.tick(t(1060), &slow, &baseline()),
        Decision::RollBack {
            reason: "step 2 of 4 (25 %): p95 412 ms > limit 300 ms (baseline 110 ms)".to_string()
        }
    );

    let both = figures(500, 21, 412);
    let quiet_baseline = Figures::default();
    assert_eq!(
        assess(&config().analysis, &both, &quiet_baseline),
        Assessment::Fail {
            reason: "error rate 4.2 % (21/500) > limit 1 % (baseline: no requests); p95 412 ms \
                     > limit 300 ms (baseline: not measured)"
                .to_string()
        }
    );
}

#[test]
fn breach_with_on_failure_pause_holds_the_weights() {
    let mut cfg = config();
    cfg.on_failure = OnFailure::Pause;
    let mut r = at_step_two(cfg);
    let decision = r.tick(t(1060), &figures(500, 21, 120), &baseline());
    let reason = "step 2 of 4 (25 %): error rate 4.2 % (21/500) > limit 1 % (baseline 0.1 %); \
                  paused (on_failure: pause); hint: resume to judge this step again with a \
                  fresh window, promote to finish anyway, or abort to roll back";
    assert_eq!(
        decision,
        Decision::Pause {
            reason: reason.to_string()
        }
    );
    assert_eq!(r.current_percent(), 25);
    assert_eq!(r.next_check_at(), None);
    // Paused rollouts do not move on ticks, even with good figures.
    assert_eq!(r.tick(t(1200), &good(), &baseline()), decision);

    // Resuming judges the same step again in a fresh window.
    assert_eq!(
        r.resume(t(1300)),
        Ok(Decision::SetWeight { new_percent: 25 })
    );
    assert_eq!(r.state().step_started, t(1300));
    assert_eq!(r.next_check_at(), Some(t(1330)));
    assert_eq!(
        r.tick(t(1330), &good(), &baseline()),
        Decision::SetWeight { new_percent: 50 }
    );
}

#[test]
fn too_few_requests_waits_up_to_the_limit_then_pauses() {
    let mut r = at_step_two(config());
    let quiet = figures(12, 0, 80);
    // The interval ends at 1060; the window may grow until 1030 + 3 x 30 = 1120.
    assert_eq!(
        r.tick(t(1060), &quiet, &baseline()),
        Decision::Wait { until: t(1120) }
    );
    assert_eq!(r.next_check_at(), Some(t(1120)));
    assert_eq!(
        r.tick(t(1100), &quiet, &baseline()),
        Decision::Wait { until: t(1120) }
    );
    let reason = "step 2 of 4 (25 %): still inconclusive 1m30s into the window (the limit is 3 \
                  x the 30s interval): only 12 requests reached the new revision, at least 50 \
                  are needed to judge it; paused rather than promoted blindly; hint: resume to \
                  judge this step again with a fresh window, promote to finish anyway, or \
                  abort to roll back";
    assert_eq!(
        r.tick(t(1120), &quiet, &baseline()),
        Decision::Pause {
            reason: reason.to_string()
        }
    );
    assert_eq!(r.current_percent(), 25);
    assert_eq!(
        outcomes(&r).last(),
        Some(&(
            1,
            25,
            Outcome::Inconclusive {
                reason: reason.to_string()
            }
        ))
    );
}

#[test]
fn requests_arriving_during_the_extension_are_judged_at_once() {
    let mut r = at_step_two(config());
    assert_eq!(
        r.tick(t(1060), &figures(12, 0, 80), &baseline()),
        Decision::Wait { until: t(1120) }
    );
    assert_eq!(
        r.tick(t(1075), &figures(60, 0, 80), &baseline()),
        Decision::SetWeight { new_percent: 50 }
    );
    assert_eq!(r.state().step_started, t(1075));
}

#[test]
fn a_wait_factor_of_one_pauses_as_soon_as_the_interval_is_too_quiet() {
    let mut cfg = config();
    cfg.analysis.max_wait_factor = 1;
    let mut r = at_step_two(cfg);
    assert!(matches!(
        r.tick(t(1060), &figures(12, 0, 80), &baseline()),
        Decision::Pause { .. }
    ));
}

#[test]
fn a_missing_p95_is_inconclusive_not_a_pass() {
    let mut r = at_step_two(config());
    let no_latency = Figures {
        requests: 500,
        errors: 0,
        p95: None,
    };
    assert_eq!(
        r.tick(t(1060), &no_latency, &baseline()),
        Decision::Wait { until: t(1120) }
    );
    let Decision::Pause { reason } = r.tick(t(1120), &no_latency, &baseline()) else {
        panic!("expected a pause, got {:?}", r.state().phase);
    };
    assert!(
        reason.contains("the p95 latency of the new revision was not measured over 500 requests"),
        "{reason}"
    );
}

#[test]
fn mid_step_breach_fails_at_once() {
    let mut r = at_step_two(config());
    let decision = r.tick(t(1042), &figures(100, 10, 120), &baseline());
    assert_eq!(
        decision,
        Decision::RollBack {
            reason: "step 2 of 4 (25 %), 12s into the 30s window: error rate 10 % (10/100) > \
                     limit 1 % (baseline 0.1 %)"
                .to_string()
        }
    );
    let last = r.state().history.last().unwrap();
    assert_eq!((last.started, last.ended), (t(1030), t(1042)));
}

#[test]
fn mid_step_errors_on_too_few_requests_wait_for_more() {
    let mut r = at_step_two(config());
    assert_eq!(
        r.tick(t(1035), &figures(10, 10, 900), &baseline()),
        Decision::Wait { until: t(1060) }
    );
    assert_eq!(r.state().phase, Phase::Progressing);
}

#[test]
fn a_clock_that_goes_back_does_not_end_the_window() {
    let mut r = at_step_two(config());
    assert_eq!(
        r.tick(t(500), &good(), &baseline()),
        Decision::Wait { until: t(1060) }
    );
}

// --- operator actions ---

#[test]
fn promote_skips_the_remaining_steps() {
    let mut r = at_step_two(config());
    assert_eq!(r.promote(t(1040)), Ok(Decision::Complete));
    assert_eq!(r.state().phase, Phase::Complete);
    assert_eq!(r.state().step, 3);
    assert_eq!(r.current_percent(), 100);
    assert_eq!(outcomes(&r).last(), Some(&(1, 25, Outcome::Promoted)));
    // Promoting again is a no-op.
    assert_eq!(r.promote(t(1050)), Ok(Decision::Complete));
    assert_eq!(r.state().history.len(), 2);
}

#[test]
fn pause_and_resume_restart_the_window() {
    let mut r = at_step_two(config());
    assert_eq!(
        r.pause(t(1040), "checking dashboards"),
        Ok(Decision::Pause {
            reason: "checking dashboards".to_string()
        })
    );
    assert_eq!(r.next_check_at(), None);
    assert_eq!(r.current_percent(), 25);
    // A second pause keeps the first reason; an empty reason gets a default.
    assert_eq!(
        r.pause(t(1041), "again"),
        Ok(Decision::Pause {
            reason: "checking dashboards".to_string()
        })
    );
    // While paused, even the original window's end passes without a step.
    assert_eq!(
        r.tick(t(1060), &good(), &baseline()),
        Decision::Pause {
            reason: "checking dashboards".to_string()
        }
    );
    assert_eq!(
        r.resume(t(1100)),
        Ok(Decision::SetWeight { new_percent: 25 })
    );
    assert_eq!(r.resume(t(1101)), Ok(Decision::Wait { until: t(1130) }));
    assert_eq!(
        r.tick(t(1120), &good(), &baseline()),
        Decision::Wait { until: t(1130) }
    );
    assert_eq!(
        r.tick(t(1130), &good(), &baseline()),
        Decision::SetWeight { new_percent: 50 }
    );

    let mut r = at_step_two(config());
    assert_eq!(
        r.pause(t(1040), "  "),
        Ok(Decision::Pause {
            reason: "paused by an operator".to_string()
        })
    );
}

#[test]
fn abort_rolls_back_from_progressing_or_paused() {
    let mut r = at_step_two(config());
    assert_eq!(
        r.abort(t(1040), "bad feeling"),
        Ok(Decision::RollBack {
            reason: "bad feeling".to_string()
        })
    );
    assert_eq!(r.current_percent(), 0);
    assert_eq!(
        outcomes(&r).last(),
        Some(&(
            1,
            25,
            Outcome::Aborted {
                reason: "bad feeling".to_string()
            }
        ))
    );

    let mut r = at_step_two(config());
    r.pause(t(1040), "look").unwrap();
    assert_eq!(
        r.abort(t(1050), ""),
        Ok(Decision::RollBack {
            reason: "aborted by an operator".to_string()
        })
    );
    let last = r.state().history.last().unwrap();
    assert_eq!((last.started, last.ended), (t(1050), t(1050)));
    // Aborting again keeps the first reason.
    assert_eq!(
        r.abort(t(1060), "twice"),
        Ok(Decision::RollBack {
            reason: "aborted by an operator".to_string()
        })
    );
}

#[test]
fn actions_that_do_not_apply_say_why() {
    let mut done = started(config());
    done.promote(t(1010)).unwrap();
    let mut rolled_back = started(config());
    rolled_back.abort(t(1010), "nope").unwrap();

    let messages = [
        done.abort(t(1020), "x"),
        done.pause(t(1020), "x"),
        done.resume(t(1020)),
        rolled_back.promote(t(1020)),
        rolled_back.pause(t(1020), "x"),
        rolled_back.resume(t(1020)),
    ]
    .map(|result| result.unwrap_err().to_string());
    assert_eq!(
        messages,
        [
            "cannot abort the rollout: it is complete: the new revision already takes all \
             traffic; hint: roll the service back to the previous revision instead",
            "cannot pause the rollout: it is complete: the new revision already takes all traffic",
            "cannot resume the rollout: it is complete: there is nothing left to resume",
            "cannot promote the rollout: it was rolled back (nope); hint: deploy the revision \
             again to start a new rollout",
            "cannot pause the rollout: it was rolled back (nope): all traffic is already on the \
             previous revision",
            "cannot resume the rollout: it was rolled back (nope); hint: deploy the revision \
             again to start a new rollout",
        ]
    );
    // A rejected action changes nothing.
    assert_eq!(done.state().phase, Phase::Complete);
    assert_eq!(done.state().history.len(), 1);
}

// --- persistence ---

#[test]
fn a_restored_rollout_restarts_the_interrupted_window() {
    let mut r = at_step_two(config());
    assert_eq!(
        r.tick(t(1040), &good(), &baseline()),
        Decision::Wait { until: t(1060) }
    );
    let json = serde_json::to_string(r.state()).unwrap();

    // The server restarts much later.
    let state: RolloutState = serde_json::from_str(&json).unwrap();
    assert_eq!(&state, r.state());
    let (mut restored, decision) = Rollout::restore(config(), state, t(5000)).unwrap();
    assert_eq!(decision, Decision::SetWeight { new_percent: 25 });
    assert_eq!(restored.state().step, 1);
    assert_eq!(restored.state().step_started, t(5000));
    assert_eq!(restored.next_check_at(), Some(t(5030)));
    assert_eq!(
        restored.state().history.last(),
        Some(&StepRecord {
            step: 1,
            percent: 25,
            started: t(1030),
            ended: t(5000),
            outcome: Outcome::Interrupted,
        })
    );
    // The old window's end has long passed, but the fresh one must run its full interval.
    assert_eq!(
        restored.tick(t(5010), &good(), &baseline()),
        Decision::Wait { until: t(5030) }
    );
    assert_eq!(
        restored.tick(t(5030), &good(), &baseline()),
        Decision::SetWeight { new_percent: 50 }
    );
}

#[test]
fn restoring_a_paused_or_finished_rollout_keeps_its_decision() {
    let mut paused = at_step_two(config());
    paused.pause(t(1040), "hold").unwrap();
    let (restored, decision) = Rollout::restore(config(), paused.state().clone(), t(9000)).unwrap();
    assert_eq!(
        decision,
        Decision::Pause {
            reason: "hold".to_string()
        }
    );
    assert_eq!(restored.current_percent(), 25);
    assert_eq!(restored.state(), paused.state());

    let mut rolled_back = at_step_two(config());
    rolled_back.abort(t(1040), "stop").unwrap();
    let (restored, decision) =
        Rollout::restore(config(), rolled_back.state().clone(), t(9000)).unwrap();
    assert_eq!(
        decision,
        Decision::RollBack {
            reason: "stop".to_string()
        }
    );
    assert_eq!(restored.current_percent(), 0);
}

#[test]
fn restoring_a_step_the_config_does_not_have_is_refused() {
    let state = RolloutState {
        step: 4,
        step_started: t(0),
        phase: Phase::Progressing,
        history: Vec::new(),
    };
    let err = Rollout::restore(config(), state, t(10)).unwrap_err();
    assert_eq!(
        err,
        [
            "the stored rollout is at step 5 but deploy.steps has only 4 steps, so the canary \
             configuration changed under a running rollout; hint: abort the rollout and deploy \
             again"
        ]
    );
}

#[test]
fn the_persisted_format_is_stable() {
    let mut r = at_step_two(config());
    r.pause(t(1040), "hold").unwrap();
    let json = serde_json::to_value(r.state()).unwrap();
    let summary = "step 1 of 4 (5 %): error rate 0.2 % (1/500) <= limit 1 % (baseline 0.1 %), \
                   p95 120 ms <= limit 300 ms (baseline 110 ms)";
    assert_eq!(
        json,
        serde_json::json!({
            "step": 1,
            "step_started_ms": 1_030_000,
            "phase": { "kind": "paused", "reason": "hold" },
            "history": [
                {
                    "step": 0, "percent": 5, "started_ms": 1_000_000, "ended_ms": 1_030_000,
                    "outcome": { "kind": "passed", "summary": summary }
                },
                {
                    "step": 1, "percent": 25, "started_ms": 1_030_000, "ended_ms": 1_040_000,
                    "outcome": { "kind": "paused", "reason": "hold" }
                }
            ]
        })
    );

    let config_json = serde_json::to_value(config()).unwrap();
    assert_eq!(
        config_json,
        serde_json::json!({
            "steps": [5, 25, 50, 100],
            "interval_ms": 30_000,
            "analysis": {
                "max_error_rate": 0.01,
                "max_p95_ms": 300,
                "min_requests": 50,
                "max_wait_factor": 3
            },
            "on_failure": "rollback"
        })
    );
    let back: CanaryConfig = serde_json::from_value(config_json).unwrap();
    assert_eq!(back, config());
}

// --- judgement ---

#[test]
fn assess_never_passes_without_requests_or_a_sane_limit() {
    let mut analysis = config().analysis;
    analysis.min_requests = 0;
    assert_eq!(
        assess(&analysis, &Figures::default(), &baseline()),
        Assessment::Inconclusive {
            reason: "only 0 requests reached the new revision, at least 1 are needed to judge it"
                .to_string()
        }
    );
    analysis.max_error_rate = f64::NAN;
    assert!(matches!(
        assess(&analysis, &figures(500, 0, 100), &baseline()),
        Assessment::Fail { .. }
    ));
}

#[test]
fn limits_are_inclusive_and_latency_is_optional() {
    let mut analysis = config().analysis;
    // 5 errors in 500 requests is exactly 1 %, and 300 ms exactly the p95 limit.
    assert!(matches!(
        assess(&analysis, &figures(500, 5, 300), &baseline()),
        Assessment::Pass { .. }
    ));
    // Just over either limit fails, and the message shows the difference.
    assert_eq!(
        assess(
            &analysis,
            &Figures {
                requests: 500,
                errors: 0,
                p95: Some(Duration::from_micros(300_400)),
            },
            &baseline()
        ),
        Assessment::Fail {
            reason: "p95 300.4 ms > limit 300 ms (baseline 110 ms)".to_string()
        }
    );
    analysis.max_p95 = None;
    let no_latency = Figures {
        requests: 500,
        errors: 0,
        p95: None,
    };
    assert_eq!(
        assess(&analysis, &no_latency, &baseline()),
        Assessment::Pass {
            summary: "error rate 0 % (0/500) <= limit 1 % (baseline 0.1 %)".to_string()
        }
    );
}

#[test]
fn numbers_print_exactly_enough() {
    assert_eq!(format::percent(0.042), "4.2");
    assert_eq!(format::percent(0.01), "1");
    assert_eq!(format::percent(1.0 / 3.0), "33.33");
    assert_eq!(format::percent(0.00001), "0.001");
    assert_eq!(format::percent(0.0), "0");
    assert_eq!(format::millis(Duration::from_micros(250)), "0.25");
    assert_eq!(format::millis(Duration::from_millis(2500)), "2500");
    assert_eq!(format::span(Duration::from_millis(500)), "500ms");
    assert_eq!(format::span(Duration::from_millis(1500)), "1.5s");
    assert_eq!(format::span(Duration::from_secs(90)), "1m30s");
    assert_eq!(format::span(Duration::from_secs(3725)), "1h2m5s");
    assert_eq!(format::span(Duration::from_secs(3600)), "1h");
}

// --- configuration ---

#[test]
fn the_default_config_is_valid_and_the_spec_example() {
    assert_eq!(CanaryConfig::default().validate(), Ok(()));
    let mut cfg = config();
    cfg.analysis.max_p95 = None;
    assert_eq!(cfg, CanaryConfig::default());
    let single = CanaryConfig {
        steps: vec![100],
        ..config()
    };
    assert_eq!(single.validate(), Ok(()));
}

#[test]
fn validation_reports_every_problem_at_once() {
    let bad = CanaryConfig {
        steps: vec![0, 50, 40, 90],
        interval: Duration::ZERO,
        analysis: AnalysisConfig {
            max_error_rate: 1.5,
            max_p95: Some(Duration::ZERO),
            min_requests: 0,
            max_wait_factor: 0,
        },
        on_failure: OnFailure::Pause,
    };
    assert_eq!(
        bad.validate().unwrap_err(),
        [
            "deploy.steps[0] is 0: a step is a percent of traffic from 1 to 100",
            "deploy.steps[2] is 40, not more than the step before it (50): steps must strictly \
             increase; hint: remove the repeated or out-of-order step",
            "deploy.steps ends at 90: the last step must be 100 so the rollout finishes with \
             all traffic on the new revision; hint: add 100 at the end",
            "deploy.interval is 0s: each step needs time to gather requests to judge; hint: \
             use a duration such as 30s",
            "deploy.analysis.max_error_rate is 150 %: it must be from 0 % to 100 %; hint: 1 % \
             is a common limit",
            "deploy.analysis.max_p95 is 0ms: no request is that fast, so every step would \
             fail; hint: use a latency such as 300ms, or leave it out not to judge latency",
            "deploy.analysis.min_requests is 0: a step with no requests would be promoted \
             blindly; hint: use at least 1, e.g. 50",
            "deploy.analysis.max_wait_factor is 0: a step's window cannot end before its \
             interval; hint: use 1 to pause as soon as an interval has too few requests, or 3 \
             to wait up to three intervals",
        ]
    );
}

#[test]
fn validation_of_steps_out_of_range_or_missing() {
    let over = CanaryConfig {
        steps: vec![50, 150],
        ..config()
    };
    assert_eq!(
        over.validate().unwrap_err(),
        ["deploy.steps[1] is 150: a step is a percent of traffic from 1 to 100"]
    );
    let empty = CanaryConfig {
        steps: vec![],
        ..config()
    };
    assert_eq!(
        empty.validate().unwrap_err(),
        [
            "deploy.steps is empty: a canary needs at least one step; hint: list the percents \
             of traffic for the new revision, e.g. [5, 25, 50, 100]"
        ]
    );
    let nan = CanaryConfig {
        analysis: AnalysisConfig {
            max_error_rate: f64::NAN,
            ..config().analysis
        },
        ..config()
    };
    assert_eq!(nan.validate().unwrap_err().len(), 1);
    // An invalid configuration cannot start a rollout.
    assert_eq!(
        Rollout::start(empty, t(0)).unwrap_err().len(),
        1,
        "start must validate"
    );
}

// --- other strategies ---

#[test]
fn rolling_plan_replaces_one_at_a_time_without_losing_capacity() {
    assert_eq!(
        rolling_plan(3, 3),
        [(3, 0), (3, 1), (2, 1), (2, 2), (1, 2), (1, 3), (0, 3)]
    );
    assert_eq!(rolling_plan(1, 3), [(1, 0), (1, 1), (1, 2), (1, 3), (0, 3)]);
    assert_eq!(rolling_plan(3, 1), [(3, 0), (3, 1), (2, 1), (1, 1), (0, 1)]);
    assert_eq!(rolling_plan(0, 2), [(0, 0), (0, 1), (0, 2)]);
    assert_eq!(rolling_plan(0, 0), [(0, 0)]);
    for (old, new) in [(3, 3), (1, 3), (3, 1), (5, 2), (2, 5)] {
        let plan = rolling_plan(old, new);
        for pair in plan.windows(2) {
            let (before, after) = (pair[0].0 + pair[0].1, pair[1].0 + pair[1].1);
            assert!(after <= old.max(new) + 1, "surge over 1 in {plan:?}");
            assert!(
                after >= before.min(old.min(new)),
                "capacity lost in {plan:?}"
            );
        }
    }
}

#[test]
fn only_recreate_has_downtime() {
    let all = [
        Strategy::BlueGreen,
        Strategy::Canary,
        Strategy::Rolling,
        Strategy::Recreate,
    ];
    let names: Vec<String> = all
        .iter()
        .map(|s| {
            serde_json::to_value(s)
                .unwrap()
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(names, ["blue-green", "canary", "rolling", "recreate"]);
    let downtime: Vec<bool> = all.iter().map(|s| s.has_downtime()).collect();
    assert_eq!(downtime, [false, false, false, true]);
    assert_eq!(Strategy::default(), Strategy::BlueGreen);
}
