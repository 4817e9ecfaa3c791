//! Progressive delivery: `deploy.strategy`, canary `steps`, `interval`, `analysis`,
//! `on_failure`, and the per-service `traffic` settings.

mod support;

use std::time::Duration;

use slipway_spec::{Analysis, DeploySettings, OnFailure, Strategy, TrafficSettings};
use support::{hint, problems, service, single, valid};

fn deploy_of(extra: &str) -> DeploySettings {
    valid(&service(extra)).services["web"].deploy.clone()
}

#[test]
fn a_canary_without_details_gets_the_defaults() {
    let deploy = deploy_of("    deploy: { strategy: canary }\n");
    assert_eq!(
        deploy,
        DeploySettings {
            keep_previous: Duration::from_secs(30),
            strategy: Strategy::Canary,
            steps: vec![10, 50, 100],
            interval: Duration::from_secs(30),
            analysis: Analysis {
                max_error_rate: 0.01,
                max_p95: None,
                min_requests: 20,
            },
            on_failure: OnFailure::Rollback,
            verify: false,
        }
    );
    assert_eq!(deploy_of("").strategy, Strategy::BlueGreen);
    assert_eq!(deploy_of("").on_failure, OnFailure::Rollback);
}

#[test]
fn a_written_analysis_makes_a_blue_green_deploy_judge_its_switch() {
    assert!(!deploy_of("").verify);
    assert!(!deploy_of("    deploy: { keep_previous: 5s }\n").verify);
    assert!(deploy_of("    deploy: { analysis: { max_error_rate: 2% } }\n").verify);
    assert!(
        deploy_of("    deploy: { strategy: blue-green, analysis: { min_requests: 5 } }\n").verify
    );
    // A canary judges its steps instead; rolling and recreate do not judge.
    for strategy in ["canary", "rolling", "recreate"] {
        let deploy = deploy_of(&format!(
            "    deploy: {{ strategy: {strategy}, analysis: {{ max_error_rate: 2% }} }}\n"
        ));
        assert!(!deploy.verify, "{strategy}");
    }
}

#[test]
fn every_key_resolves() {
    let deploy = deploy_of(
        "    deploy:\n      strategy: canary\n      steps: [1, 100]\n      interval: 1m\n      analysis: { max_error_rate: 0.5%, max_p95: 1.5s, min_requests: 5 }\n      on_failure: pause\n      keep_previous: 0s\n",
    );
    assert_eq!(deploy.steps, [1, 100]);
    assert_eq!(deploy.interval, Duration::from_secs(60));
    assert_eq!(deploy.analysis.max_error_rate, 0.005);
    assert_eq!(deploy.analysis.max_p95, Some(Duration::from_millis(1500)));
    assert_eq!(deploy.analysis.min_requests, 5);
    assert_eq!(deploy.on_failure, OnFailure::Pause);
    assert!(deploy.keep_previous.is_zero());
    for (written, strategy) in [
        ("blue-green", Strategy::BlueGreen),
        ("canary", Strategy::Canary),
        ("rolling", Strategy::Rolling),
        ("recreate", Strategy::Recreate),
    ] {
        let deploy = deploy_of(&format!("    deploy: {{ strategy: {written} }}\n"));
        assert_eq!(deploy.strategy, strategy);
        // The stored form is the same kebab-case text.
        assert_eq!(
            serde_json::to_value(strategy).ok(),
            Some(serde_json::Value::String(written.into()))
        );
    }
}

#[test]
fn canary_keys_are_accepted_and_kept_with_other_strategies() {
    let deploy = deploy_of("    deploy: { strategy: rolling, steps: [50, 100], interval: 5s }\n");
    assert_eq!(deploy.strategy, Strategy::Rolling);
    assert_eq!(deploy.steps, [50, 100]);
    assert_eq!(deploy.interval, Duration::from_secs(5));
}

#[test]
fn strategies_and_failure_actions_are_known_words() {
    let d = single(&service("    deploy: { strategy: blue_green }\n"), 5, 25);
    assert_eq!(d.message, "unknown strategy `blue_green`");
    assert_eq!(hint(&d), "did you mean `blue-green`?");

    let d = single(&service("    deploy: { strategy: fast }\n"), 5, 25);
    assert_eq!(d.message, "unknown strategy `fast`");
    assert_eq!(
        hint(&d),
        "use one of `blue-green`, `canary`, `rolling` or `recreate`"
    );

    let d = single(&service("    deploy: { strategy: 3 }\n"), 5, 25);
    assert_eq!(
        d.message,
        "`services.web.deploy.strategy` must be one of `blue-green`, `canary`, `rolling` or `recreate`, not a number"
    );

    let d = single(&service("    deploy: { on_failure: abort }\n"), 5, 27);
    assert_eq!(d.message, "unknown `on_failure` action `abort`");
    assert_eq!(hint(&d), "use `rollback` or `pause`");

    let d = single(&service("    deploy: { on_failure: pase }\n"), 5, 27);
    assert_eq!(hint(&d), "did you mean `pause`?");
}

/// A canary service whose `steps` line (line 7) is `      steps: <steps>`; the list
/// opens at column 14 and its first item is at column 15.
fn with_steps(steps: &str) -> String {
    service(&format!(
        "    deploy:\n      strategy: canary\n      steps: {steps}\n"
    ))
}

#[test]
fn canary_steps_increase_and_end_at_100() {
    let d = single(&with_steps("[50, 25, 100]"), 7, 19);
    assert_eq!(
        d.message,
        "canary steps must increase, but 25 comes after 50"
    );
    assert_eq!(
        hint(&d),
        "list each percent once, from smallest to largest, e.g. `[10, 50, 100]`"
    );

    let d = single(&with_steps("[50, 50, 100]"), 7, 19);
    assert_eq!(
        d.message,
        "canary steps must increase, but 50 comes after 50"
    );

    let d = single(&with_steps("[5, 25, 50]"), 7, 22);
    assert_eq!(d.message, "the last canary step must be 100, not 50");
    assert_eq!(
        hint(&d),
        "a canary ends with all traffic on the new revision; add 100 at the end: `steps: [5, 25, 50, 100]`"
    );

    // Both problems at once, each where it is.
    let found: Vec<_> = problems(&with_steps("[50, 25]"))
        .into_iter()
        .map(|d| (d.line, d.column, d.message))
        .collect();
    assert_eq!(
        found,
        vec![
            (
                7,
                19,
                "canary steps must increase, but 25 comes after 50".to_owned()
            ),
            (7, 19, "the last canary step must be 100, not 25".to_owned()),
        ]
    );
}

#[test]
fn canary_steps_are_percents_from_1_to_100() {
    let found: Vec<_> = problems(&with_steps("[0, 150, 100]"))
        .into_iter()
        .map(|d| (d.line, d.column, d.message))
        .collect();
    assert_eq!(
        found,
        vec![
            (
                7,
                15,
                "canary step `0` is not a percent from 1 to 100".to_owned()
            ),
            (
                7,
                18,
                "canary step `150` is not a percent from 1 to 100".to_owned()
            ),
        ]
    );

    let d = single(&with_steps("[\"5%\", 100]"), 7, 15);
    assert_eq!(d.message, "canary step `5%` is not a percent from 1 to 100");
    assert_eq!(hint(&d), "write the number without `%`: `5`");

    let d = single(&with_steps("[12.5, 100]"), 7, 15);
    assert_eq!(
        d.message,
        "canary step `12.5` is not a percent from 1 to 100"
    );
    assert_eq!(
        hint(&d),
        "each step is the percent of traffic on the new revision, a whole number such as `25`"
    );

    let d = single(&with_steps("[]"), 7, 14);
    assert_eq!(d.message, "`services.web.deploy.steps` is empty");
    assert_eq!(
        hint(&d),
        "list the percent of traffic on the new revision at each step, ending at 100, e.g. `[10, 50, 100]`"
    );

    let d = single(&with_steps("100"), 7, 14);
    assert_eq!(
        d.message,
        "`services.web.deploy.steps` must be a list, not a number"
    );
}

#[test]
fn the_step_interval_is_a_duration_above_zero() {
    let d = single(&service("    deploy: { interval: 0s }\n"), 5, 25);
    assert_eq!(
        d.message,
        "`services.web.deploy.interval` must be longer than 0"
    );
    let d = single(&service("    deploy: { interval: 30 }\n"), 5, 25);
    assert_eq!(d.message, "bad duration `30`: add a unit, e.g. `30s`");
}

/// A service whose `analysis` line (line 7) is `        <line>`, so a value after
/// `max_error_rate: ` starts at column 25.
fn with_analysis(line: &str) -> String {
    service(&format!("    deploy:\n      analysis:\n        {line}\n"))
}

#[test]
fn the_error_rate_is_a_percentage_with_a_sign() {
    let d = single(&with_analysis("max_error_rate: 1"), 7, 25);
    assert_eq!(d.message, "bad error rate `1`: add a `%` sign, e.g. `1%`");
    assert_eq!(hint(&d), "write `1%`");

    let d = single(&with_analysis("max_error_rate: 0.01"), 7, 25);
    assert_eq!(
        d.message,
        "bad error rate `0.01`: add a `%` sign, e.g. `1%`"
    );
    assert_eq!(
        hint(&d),
        "write `0.01%` for 0.01 percent, or `1%` if 0.01 is a fraction"
    );

    let d = single(&with_analysis("max_error_rate: \"2\""), 7, 25);
    assert_eq!(d.message, "bad error rate `2`: add a `%` sign, e.g. `1%`");

    let d = single(&with_analysis("max_error_rate: 150%"), 7, 25);
    assert_eq!(
        d.message,
        "bad error rate `150%`: it cannot be more than 100%"
    );

    let d = single(&with_analysis("max_error_rate: some"), 7, 25);
    assert_eq!(d.message, "bad error rate `some`");
    assert_eq!(
        hint(&d),
        "write a number from 0 to 100 followed by `%`, e.g. `1%` or `0.5%`"
    );

    let d = single(&with_analysis("max_error_rate: [1%]"), 7, 25);
    assert_eq!(
        d.message,
        "`services.web.deploy.analysis.max_error_rate` must be a percentage such as `1%`, not a list"
    );

    // The edges are allowed.
    for (written, fraction) in [("0%", 0.0), ("100%", 1.0), ("0.1%", 0.001)] {
        let spec = valid(&with_analysis(&format!("max_error_rate: {written}")));
        assert_eq!(
            spec.services["web"].deploy.analysis.max_error_rate,
            fraction
        );
    }
}

#[test]
fn the_other_analysis_limits_are_checked() {
    let d = single(&with_analysis("max_p95: 0ms"), 7, 18);
    assert_eq!(
        d.message,
        "`services.web.deploy.analysis.max_p95` must be longer than 0"
    );
    let d = single(&with_analysis("max_p95: 300"), 7, 18);
    assert_eq!(d.message, "bad duration `300`: add a unit, e.g. `300s`");
    let d = single(&with_analysis("min_requests: 0"), 7, 23);
    assert_eq!(
        d.message,
        "`services.web.deploy.analysis.min_requests` must be at least 1, found 0"
    );
    let d = single(&with_analysis("max_p99: 1s"), 7, 9);
    assert_eq!(
        d.message,
        "unknown key `max_p99` in `services.web.deploy.analysis`"
    );
    assert_eq!(hint(&d), "did you mean `max_p95`?");
}

#[test]
fn traffic_settings_are_booleans() {
    let web = &valid(&service("    traffic: { sticky: true }\n")).services["web"];
    assert_eq!(
        web.traffic,
        TrafficSettings {
            sticky: true,
            header_override: false
        }
    );
    assert_eq!(
        valid(&service("")).services["web"].traffic,
        TrafficSettings::default()
    );

    // YAML 1.2: `yes` is text, not a boolean.
    let d = single(&service("    traffic: { header_override: yes }\n"), 5, 33);
    assert_eq!(
        d.message,
        "`services.web.traffic.header_override` must be `true` or `false`, not a string"
    );
    let d = single(&service("    traffic: { stickey: true }\n"), 5, 16);
    assert_eq!(d.message, "unknown key `stickey` in `services.web.traffic`");
    assert_eq!(hint(&d), "did you mean `sticky`?");
}
