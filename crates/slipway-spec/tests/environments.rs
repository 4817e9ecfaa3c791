//! Environments: overlays on the base spec, their hosts, and where their problems point.

mod support;

use std::time::Duration;

use slipway_spec::render;
use slipway_spec::{Check, Port};
use support::{hint, positions, problems, problems_env, single, valid, valid_env};

/// The base spec: `api` (lines 3-6) and `web` (lines 7-9); `environments:` is line 10.
const BASE: &str = "\
app: shop
services:
  api:
    run: [./api]
    scaling: { max: 2 }
    routes: [/api]
  web:
    run: [./web]
    routes: [/]
environments:
";

/// `BASE` with a `production` environment (line 11) whose overlay for `service` (line 13)
/// has `lines` from line 14 on, each indented by eight spaces.
fn overlay(service: &str, lines: &[&str]) -> String {
    let body: String = lines.iter().map(|l| format!("        {l}\n")).collect();
    format!("{BASE}  production:\n    services:\n      {service}:\n{body}")
}

#[test]
fn an_overlay_merges_maps_and_replaces_lists_and_scalars() {
    let source = format!(
        "{BASE}  production:\n    host: shop.example.com\n    services:\n      api:\n        run: [./api, --prod]\n        scaling: {{ min: 2 }}\n        health: {{ ready: {{ http: /ready }} }}\n      web: {{ port: 9000 }}\n  staging: {{}}\n"
    );
    let production = valid_env(&source, "production");
    let api = &production.services["api"];
    assert_eq!(api.run, ["./api", "--prod"]);
    assert_eq!(production.services["web"].port, Port::Fixed(9000));
    // `min` from the overlay, `max` from the base.
    assert_eq!((api.scaling.min, api.scaling.max), (2, 2));
    assert_eq!(
        api.health.ready.check,
        Check::Http {
            path: "/ready".into()
        }
    );
    assert_eq!(api.health.ready.interval, Duration::from_secs(1));
    assert_eq!(api.routes, ["/api"]);
    assert_eq!(
        production.services["web"].run,
        valid(&source).services["web"].run
    );
    assert_eq!(production.environment, "production");
    assert_eq!(production.host, "shop.example.com");
    assert_eq!(
        production.environments,
        ["development", "production", "staging"]
    );

    let development = valid(&source);
    assert_eq!(development.environment, "development");
    assert_eq!(development.host, "shop.localhost");
    assert_eq!(development.services["api"].run, ["./api"]);
    assert_eq!(development.services["web"].port, Port::Auto);

    let staging = valid_env(&source, "staging");
    assert_eq!(staging.host, "staging.shop.localhost");
    assert_eq!(staging.services, development.services);
}

#[test]
fn a_development_overlay_applies_to_plain_parse() {
    let source = format!(
        "{BASE}  development:\n    host: shop.test\n    services:\n      api: {{ env: {{ DEBUG: \"1\" }} }}\n"
    );
    let spec = valid(&source);
    assert_eq!(spec.services["api"].env["DEBUG"], "1");
    assert_eq!(spec.host, "shop.test");
    assert_eq!(spec.environments, ["development"]);
}

#[test]
fn files_without_environments_have_only_development() {
    let spec = valid("app: shop\nservices:\n  web: { run: [x] }\n");
    assert_eq!(spec.environment, "development");
    assert_eq!(spec.environments, ["development"]);
    assert_eq!(spec.host, "shop.localhost");
    let spec = valid("app: shop\nservices:\n  web: { run: [x] }\nenvironments: {}\n");
    assert_eq!(spec.environments, ["development"]);
}

#[test]
fn an_unknown_environment_lists_the_declared_ones() {
    let source = format!("{BASE}  production: {{}}\n");
    let found = problems_env(&source, "prod");
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!((found[0].line, found[0].column), (10, 1));
    assert_eq!(found[0].message, "unknown environment `prod`");
    assert_eq!(hint(&found[0]), "did you mean `production`?");

    let found = problems_env(&source, "qa");
    assert_eq!((found[0].line, found[0].column), (10, 1));
    assert_eq!(
        hint(&found[0]),
        "the environments here are `development`, `production`; to add it, write `qa: {}` under `environments`"
    );

    let found = problems_env("app: shop\nservices:\n  web: { run: [x] }\n", "qa");
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!((found[0].line, found[0].column), (1, 1));
    assert_eq!(found[0].message, "unknown environment `qa`");
    assert_eq!(
        hint(&found[0]),
        "this file declares only `development`; to add `qa`, add `environments: { qa: {} }`"
    );

    // Other problems are reported with it, in file order.
    let found = problems_env("app: Shop\nservices:\n  web: { run: [x] }\n", "qa");
    let messages: Vec<&str> = found.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(
        messages,
        ["unknown environment `qa`", "bad app name `Shop`"]
    );
}

#[test]
fn an_overlay_may_only_change_defined_services() {
    let d = single(&overlay("apii", &["port: 80"]), 13, 7);
    assert_eq!(
        d.message,
        "environment `production` changes service `apii`, which is not defined under `services`"
    );
    assert_eq!(hint(&d), "did you mean `api`?");

    let d = single(&overlay("worker", &["port: 80"]), 13, 7);
    assert_eq!(
        hint(&d),
        "an environment can only change services defined under `services`: `api`, `web`"
    );
}

#[test]
fn problems_in_an_overlay_point_into_it_and_name_the_environment() {
    let d = single(&overlay("api", &["scaling: { min: 5 }"]), 14, 25);
    assert_eq!(
        d.message,
        "`scaling.min` (5) is greater than `scaling.max` (2) (in environment `production`)"
    );
    assert_eq!(hint(&d), "raise `max` to at least 5, or lower `min`");

    let d = single(&overlay("api", &["helth: {}"]), 14, 9);
    assert_eq!(
        d.message,
        "unknown key `helth` in `services.api` (in environment `production`)"
    );
    assert_eq!(hint(&d), "did you mean `health`?");

    let d = single(&overlay("api", &["port: [80]"]), 14, 15);
    assert_eq!(
        d.message,
        "`port` must be `auto` or a number, not a list (in environment `production`)"
    );

    let d = single(
        &overlay("api", &["health: { startup_timeout: 30 }"]),
        14,
        36,
    );
    assert_eq!(
        d.message,
        "bad duration `30`: add a unit, e.g. `30s` (in environment `production`)"
    );

    let d = single(&overlay("api", &["run:"]), 14, 9);
    assert_eq!(
        d.message,
        "`services.api.run` must be a list, not empty (in environment `production`)"
    );

    let d = single(&overlay("web", &["routes: [/, /api]"]), 14, 21);
    assert_eq!(
        d.message,
        "route `/api` is already claimed by service `api` (line 6) (in environment `production`)"
    );

    let d = single(
        &format!("{BASE}  production:\n    services:\n      api: 3\n"),
        13,
        12,
    );
    assert_eq!(
        d.message,
        "`services.api` must be a mapping, not a number (in environment `production`)"
    );
}

#[test]
fn an_overlay_value_is_checked_against_the_base_it_merges_with() {
    // The secret is in the base, the conflicting variable in the overlay: the problem
    // points at the overlay, which is what made it one.
    let source = "\
app: shop
services:
  api:
    run: [./api]
    secrets: [TOKEN]
environments:
  staging:
    services:
      api: { env: { TOKEN: x } }
";
    let d = single(source, 9, 21);
    assert_eq!(
        d.message,
        "`TOKEN` is set in `env` but is also a secret (line 5) (in environment `staging`)"
    );
}

#[test]
fn every_environment_is_checked_whichever_is_asked_for() {
    let source = format!(
        "{BASE}  production:\n    services:\n      api: {{ scaling: {{ min: 5 }} }}\n  staging:\n    services:\n      web: {{ port: 0 }}\n"
    );
    let expected = vec![
        (
            13,
            30,
            "`scaling.min` (5) is greater than `scaling.max` (2) (in environment `production`)"
                .to_owned(),
        ),
        (
            16,
            20,
            "port 0 is out of range (in environment `staging`)".to_owned(),
        ),
    ];
    assert_eq!(positions(&source), expected);
    for environment in ["production", "staging"] {
        let found: Vec<_> = problems_env(&source, environment)
            .into_iter()
            .map(|d| (d.line, d.column, d.message))
            .collect();
        assert_eq!(found, expected);
    }
}

#[test]
fn a_problem_in_the_base_is_reported_once_without_an_environment() {
    // The base must be valid by itself, even where every environment overrides it.
    let source = "\
app: shop
services:
  api:
    run: [./api]
    scaling: { min: 3, max: 2 }
environments:
  production:
    services:
      api: { env: { A: b } }
  staging:
    services:
      api: { env: { A: c } }
";
    assert_eq!(
        positions(source),
        vec![(
            5,
            21,
            "`scaling.min` (3) is greater than `scaling.max` (2)".to_owned()
        )]
    );
}

#[test]
fn the_environments_section_is_checked() {
    let d = single(&format!("{BASE}  Prod: {{}}\n"), 11, 3);
    assert_eq!(d.message, "bad environment name `Prod`");
    assert_eq!(
        hint(&d),
        "use lowercase letters, digits and `-` (not at either end), at most 40 characters, e.g. `prod`"
    );

    let d = single(
        &format!("{BASE}  production: {{ host: \"https://Shop.example.com\" }}\n"),
        11,
        23,
    );
    assert_eq!(
        d.message,
        "bad host `https://Shop.example.com` for environment `production`"
    );
    assert_eq!(
        hint(&d),
        "a host is lowercase names of letters, digits and `-` separated by dots, without a scheme, port or path, e.g. `shop.example.com`"
    );

    let d = single(&format!("{BASE}  staging:\n"), 11, 3);
    assert_eq!(
        d.message,
        "`environments.staging` must be a mapping, not empty"
    );
    assert_eq!(
        hint(&d),
        "write `staging: {}` to declare it without changes"
    );

    let d = single(&format!("{BASE}  staging: {{ hosts: x }}\n"), 11, 14);
    assert_eq!(d.message, "unknown key `hosts` in `environments.staging`");
    assert_eq!(hint(&d), "did you mean `host`?");

    let d = single(&format!("{BASE}  staging: {{ services: [api] }}\n"), 11, 24);
    assert_eq!(
        d.message,
        "`environments.staging.services` must be a mapping, not a list"
    );

    let d = single(
        "app: shop\nservices:\n  web: { run: [x] }\nenvironments: [production]\n",
        4,
        15,
    );
    assert_eq!(d.message, "`environments` must be a mapping, not a list");
}

#[test]
fn overlays_are_checked_like_the_base() {
    // Overlays are validated like the base: every new key works in them too.
    let d = single(
        &overlay(
            "api",
            &["deploy: { strategy: canary, steps: [50, 25, 100] }"],
        ),
        14,
        49,
    );
    assert_eq!(
        d.message,
        "canary steps must increase, but 25 comes after 50 (in environment `production`)"
    );
    let found = problems(&overlay("api", &["secrets: [A, A]"]));
    assert_eq!(
        found[0].message,
        "secret `A` is listed twice (in environment `production`)"
    );
}

#[test]
fn an_overlay_problem_renders_at_the_overlay() {
    let source = overlay("api", &["scaling: { min: 5 }"]);
    let expected = "\
error: `scaling.min` (5) is greater than `scaling.max` (2) (in environment `production`)
  --> slipway.yaml:14:25
   |
14 |         scaling: { min: 5 }
   |                         ^
   |
   = help: raise `max` to at least 5, or lower `min`

1 problem found in slipway.yaml";
    assert_eq!(
        render(&problems(&source), &source, "slipway.yaml"),
        expected
    );
}
