//! Every validation rule of `slipway.yaml`, each checked for its exact position and message.

use std::path::Path;

use slipway_spec::{Diagnostic, parse};

/// Parses `source`, expecting it to be invalid, and returns its diagnostics.
fn problems(source: &str) -> Vec<Diagnostic> {
    match parse(source, Path::new("/srv/shop")) {
        Ok(spec) => panic!("expected problems, got a valid spec: {spec:?}"),
        Err(diagnostics) => diagnostics,
    }
}

/// The (line, column, message) of every diagnostic.
fn positions(source: &str) -> Vec<(usize, usize, String)> {
    problems(source)
        .into_iter()
        .map(|d| (d.line, d.column, d.message))
        .collect()
}

/// Asserts that `source` has exactly one problem, at `line:column`, and returns it.
fn single(source: &str, line: usize, column: usize) -> Diagnostic {
    let diagnostics = problems(source);
    assert_eq!(
        diagnostics.len(),
        1,
        "expected one problem, got {diagnostics:#?}"
    );
    let diagnostic = diagnostics.into_iter().next().expect("one diagnostic");
    assert_eq!(
        (diagnostic.line, diagnostic.column),
        (line, column),
        "wrong position for {diagnostic:?}"
    );
    diagnostic
}

fn hint(diagnostic: &Diagnostic) -> &str {
    diagnostic.hint.as_deref().unwrap_or("")
}

#[test]
fn five_different_mistakes_are_all_reported_at_once() {
    let source = "\
app: shop
services:
  api:
    run: [\"./api\"]
    helth: { ready: { http: /ready } }
    env: { LOG_LEVEL: [debug] }
    shutdown: { grace: 5 }
    scaling: { min: 3, max: 1 }
    routes: [\"/api\"]
  web:
    run: [\"./web\"]
    routes: [\"/\", \"/api\"]
";
    let diagnostics = problems(source);
    let summary: Vec<_> = diagnostics
        .iter()
        .map(|d| (d.line, d.column, d.len, d.message.as_str(), hint(d)))
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                5,
                5,
                5,
                "unknown key `helth` in `services.api`",
                "did you mean `health`?"
            ),
            (
                6,
                23,
                1,
                "`services.api.env.LOG_LEVEL` must be a boolean, a number or a string, not a list",
                "",
            ),
            (
                7,
                24,
                1,
                "bad duration `5`: add a unit, e.g. `5s`",
                "units are ms, s, m, h and d; combine them like `1h30m`",
            ),
            (
                8,
                21,
                1,
                "`scaling.min` (3) is greater than `scaling.max` (1)",
                "raise `max` to at least 3, or lower `min`",
            ),
            (
                12,
                19,
                6,
                "route `/api` is already claimed by service `api` (line 9)",
                "a path prefix can go to one service only; remove it from one of them",
            ),
        ]
    );
    // Offsets are bytes into the source and agree with line and column.
    let line_start: usize = source.lines().take(4).map(|l| l.len() + 1).sum();
    assert_eq!(diagnostics[0].offset, line_start + 4);
}

#[test]
fn unknown_keys_suggest_the_closest_known_key() {
    let d = single(
        "app: a\nservices:\n  web:\n    run: [x]\n    prot: 80\n",
        5,
        5,
    );
    assert_eq!(d.message, "unknown key `prot` in `services.web`");
    assert_eq!(hint(&d), "did you mean `port`?");

    let d = single("app: a\nservices: { web: { run: [x] } }\nbanana: 1\n", 3, 1);
    assert_eq!(d.message, "unknown key `banana` at the top level");
    assert_eq!(
        hint(&d),
        "the keys allowed here are `app`, `backups`, `databases`, `environments`, `https`, `services`"
    );

    let d = single(
        "app: a\nservices:\n  web:\n    run: [x]\n    health: { ready: { tcp: true, intervall: 1s } }\n",
        5,
        35,
    );
    assert_eq!(
        d.message,
        "unknown key `intervall` in `services.web.health.ready`"
    );
    assert_eq!(hint(&d), "did you mean `interval`?");
}

#[test]
fn a_command_string_is_a_type_error_with_a_list_hint() {
    let d = single(
        "app: a\nservices:\n  web:\n    run: python3 -m http.server\n",
        4,
        10,
    );
    assert_eq!(d.message, "`services.web.run` must be a list, not a string");
    assert_eq!(
        hint(&d),
        "write the command as a list of arguments: `run: [\"python3\", \"-m\", \"http.server\"]`"
    );
}

#[test]
fn wrong_types_name_what_was_expected_and_found() {
    let d = single(
        "app: a\nservices:\n  web:\n    run: [x]\n    scaling: { min: one }\n",
        5,
        21,
    );
    assert_eq!(
        d.message,
        "`services.web.scaling.min` must be a whole number, not a string"
    );

    let d = single(
        "app: a\nservices:\n  web:\n    run: [x]\n    health:\n",
        5,
        5,
    );
    assert_eq!(
        d.message,
        "`services.web.health` must be a mapping, not empty"
    );
    assert_eq!(
        hint(&d),
        "give it a value, or remove the key to use the default"
    );

    let d = single("app: [a]\nservices: { web: { run: [x] } }\n", 1, 6);
    assert_eq!(d.message, "`app` must be a string, not a list");

    let d = single(
        "app: a\nservices:\n  web:\n    run: [./server, --workers, 4]\n",
        4,
        32,
    );
    assert_eq!(
        d.message,
        "`services.web.run.2` must be a string, not a number"
    );
    assert_eq!(hint(&d), "quote it to make it text: `\"4\"`");

    let d = single("- app\n", 1, 1);
    assert_eq!(d.message, "the file must be a mapping, not a list");
}

#[test]
fn missing_keys_point_at_their_owner() {
    let d = single("app: a\nservices:\n  web:\n    port: auto\n", 3, 3);
    assert_eq!(d.message, "missing `run` or `image` in service `web`");

    assert_eq!(
        positions("services: { web: { run: [x] } }\n"),
        vec![(1, 1, "missing `app`".to_owned())]
    );
    assert_eq!(
        positions("app: a\n"),
        vec![(1, 1, "missing `services`".to_owned())]
    );
    let d = single("app: a\nservices: {}\n", 2, 1);
    assert_eq!(d.message, "`services` is empty");
}

#[test]
fn durations_need_a_unit_and_a_sensible_value() {
    let service =
        |health: &str| format!("app: a\nservices:\n  web:\n    run: [x]\n    health: {health}\n");
    let d = single(&service("{ startup_timeout: 30 }"), 5, 32);
    assert_eq!(d.message, "bad duration `30`: add a unit, e.g. `30s`");
    let d = single(&service("{ startup_timeout: \"1.5\" }"), 5, 32);
    assert_eq!(d.message, "bad duration `1.5`: add a unit, e.g. `1.5s`");
    let d = single(&service("{ startup_timeout: soon }"), 5, 32);
    assert_eq!(d.message, "bad duration `soon`");
    let d = single(&service("{ startup_timeout: 5 sec }"), 5, 32);
    assert_eq!(d.message, "bad duration `5 sec`: unknown unit `sec`");
    let d = single(&service("{ startup_timeout: 30m1h }"), 5, 32);
    assert_eq!(
        d.message,
        "bad duration `30m1h`: units must go from largest to smallest, each once"
    );
    let d = single(&service("{ startup_timeout: [1s] }"), 5, 32);
    assert_eq!(
        d.message,
        "`services.web.health.startup_timeout` must be a duration such as `5s`, not a list"
    );
    let d = single(&service("{ ready: { tcp: true, timeout: 0s } }"), 5, 44);
    assert_eq!(
        d.message,
        "`services.web.health.ready.timeout` must be longer than 0"
    );
    let d = single(&service("{ live: { tcp: true, interval: 0ms } }"), 5, 44);
    assert_eq!(
        d.message,
        "`services.web.health.live.interval` must be longer than 0"
    );

    // Zero makes sense for the grace period and for keeping the previous revision.
    let spec = parse(
        "app: a\nservices:\n  web:\n    run: [x]\n    shutdown: { grace: 0s }\n    deploy: { keep_previous: 0s }\n",
        Path::new("/srv"),
    )
    .expect("zero grace and keep_previous are valid");
    assert!(spec.services["web"].shutdown.grace.is_zero());
    assert!(spec.services["web"].deploy.keep_previous.is_zero());
}

#[test]
fn body_limits_are_sizes_with_a_unit() {
    let service =
        |limits: &str| format!("app: a\nservices:\n  web:\n    run: [x]\n    limits: {limits}\n");
    let d = single(&service("{ body: 10 }"), 5, 21);
    assert_eq!(d.message, "bad size `10`: add a unit, e.g. `10MiB`");
    let d = single(&service("{ body: 10 bits }"), 5, 21);
    assert_eq!(d.message, "bad size `10 bits`: unknown unit `bits`");
    let d = single(&service("{ body: 1.5MiB }"), 5, 21);
    assert_eq!(d.message, "bad size `1.5MiB`");
    assert!(hint(&d).contains("whole number"), "{d:?}");
    let d = single(&service("{ body: 99999999999TiB }"), 5, 21);
    assert_eq!(d.message, "bad size `99999999999TiB`: too large");
    let d = single(&service("{ body: [1MiB] }"), 5, 21);
    assert_eq!(
        d.message,
        "`services.web.limits.body` must be a size such as `10MiB`, not a list"
    );
    let d = single(&service("{ bdy: 1MiB }"), 5, 15);
    assert!(d.message.contains("bdy"), "{d:?}");

    let body = |limits: &str| {
        parse(&service(limits), Path::new("/srv"))
            .expect("valid")
            .services["web"]
            .limits
            .body
    };
    assert_eq!(body("{ body: 10MiB }"), Some(10 << 20));
    assert_eq!(body("{ body: 512kB }"), Some(512_000));
    assert_eq!(body("{ body: unlimited }"), None);
    assert_eq!(body("{}"), Some(100 << 20));
}

#[test]
fn app_and_service_names_are_dns_labels() {
    let d = single("app: My_Shop\nservices: { web: { run: [x] } }\n", 1, 6);
    assert_eq!(d.message, "bad app name `My_Shop`");
    assert_eq!(
        hint(&d),
        "use lowercase letters, digits and `-` (not at either end), at most 40 characters, e.g. `my-shop`"
    );
    let long = "a".repeat(41);
    let d = single(
        &format!("app: {long}\nservices: {{ web: {{ run: [x] }} }}\n"),
        1,
        6,
    );
    assert_eq!(d.message, format!("bad app name `{long}`"));

    let d = single("app: shop\nservices:\n  -web: { run: [x] }\n", 3, 3);
    assert_eq!(d.message, "bad service name `-web`");
}

#[test]
fn run_must_name_a_program() {
    let d = single("app: a\nservices:\n  web:\n    run: []\n", 4, 10);
    assert_eq!(d.message, "`services.web.run` is empty");
    let d = single("app: a\nservices:\n  web:\n    run: [\"\", x]\n", 4, 11);
    assert_eq!(d.message, "the program in `run` is empty");
}

#[test]
fn routes_start_with_a_slash_and_are_not_repeated() {
    let d = single(
        "app: a\nservices:\n  web:\n    run: [x]\n    routes: [api]\n",
        5,
        14,
    );
    assert_eq!(d.message, "route `api` must start with `/`");
    assert_eq!(hint(&d), "write `/api`");

    let d = single(
        "app: a\nservices:\n  web:\n    run: [x]\n    routes:\n      - /api\n      - /api/\n",
        7,
        9,
    );
    assert_eq!(d.message, "route `/api/` is listed twice in service `web`");
    assert_eq!(hint(&d), "remove one of them (the first is on line 6)");

    let d = single(
        "app: a\nservices:\n  web:\n    run: [x]\n    routes: [\"/a b\"]\n",
        5,
        14,
    );
    assert_eq!(
        d.message,
        "route `/a b` must not contain spaces, `?` or `#`"
    );
}

#[test]
fn a_route_claimed_by_two_services_points_at_the_second() {
    // The services are in reverse alphabetical order, to show "second" means in the file.
    let source = "app: a\nservices:\n  web:\n    run: [x]\n    routes: [\"/\"]\n  api:\n    run: [y]\n    routes: [\"/api\", \"/\"]\n";
    let d = single(source, 8, 22);
    assert_eq!(
        d.message,
        "route `/` is already claimed by service `web` (line 5)"
    );
}

#[test]
fn scaling_min_must_not_exceed_max() {
    let d = single(
        "app: a\nservices:\n  web:\n    run: [x]\n    scaling:\n      min: 5\n      max: 2\n",
        6,
        12,
    );
    assert_eq!(
        d.message,
        "`scaling.min` (5) is greater than `scaling.max` (2)"
    );
    let d = single(
        "app: a\nservices:\n  web:\n    run: [x]\n    scaling: { max: 0 }\n",
        5,
        21,
    );
    assert_eq!(
        d.message,
        "`services.web.scaling.max` must be at least 1, found 0"
    );
    let d = single(
        "app: a\nservices:\n  web:\n    run: [x]\n    scaling: { min: -1 }\n",
        5,
        21,
    );
    assert_eq!(
        d.message,
        "`services.web.scaling.min` must be at least 0, found -1"
    );
}

#[test]
fn ports_are_auto_or_in_range() {
    let service =
        |port: &str| format!("app: a\nservices:\n  web:\n    run: [x]\n    port: {port}\n");
    let d = single(&service("0"), 5, 11);
    assert_eq!(d.message, "port 0 is out of range");
    assert_eq!(hint(&d), "use `auto` or a port number from 1 to 65535");
    let d = single(&service("65536"), 5, 11);
    assert_eq!(d.message, "port 65536 is out of range");
    let d = single(&service("-80"), 5, 11);
    assert_eq!(d.message, "port -80 is out of range");
    let d = single(&service("eighty"), 5, 11);
    assert_eq!(d.message, "bad port `eighty`");
    let d = single(&service("[80]"), 5, 11);
    assert_eq!(d.message, "`port` must be `auto` or a number, not a list");
}

#[test]
fn a_fixed_port_serves_one_service_and_one_instance() {
    let source = "app: a\nservices:\n  web:\n    run: [x]\n    port: 8080\n  api:\n    run: [y]\n    port: 8080\n";
    let d = single(source, 8, 11);
    assert_eq!(
        d.message,
        "port 8080 is already used by service `web` (line 5)"
    );
    assert_eq!(
        hint(&d),
        "give each service its own port, or use `port: auto`"
    );

    let source =
        "app: a\nservices:\n  web:\n    run: [x]\n    port: 8080\n    scaling: { max: 3 }\n";
    let d = single(source, 5, 11);
    assert_eq!(
        d.message,
        "service `web` has the fixed port 8080 but may run up to 3 instances"
    );
    assert_eq!(
        hint(&d),
        "two instances cannot share a port; use `port: auto`"
    );

    // With only `min`, the maximum follows it.
    let source =
        "app: a\nservices:\n  web:\n    run: [x]\n    port: 8080\n    scaling: { min: 2 }\n";
    let d = single(source, 5, 11);
    assert_eq!(
        d.message,
        "service `web` has the fixed port 8080 but may run up to 2 instances"
    );
}

#[test]
fn environment_variable_names_are_checked() {
    let d = single(
        "app: a\nservices:\n  web:\n    run: [x]\n    env:\n      9LIVES: x\n",
        6,
        7,
    );
    assert_eq!(d.message, "bad environment variable name `9LIVES`");
    assert_eq!(
        hint(&d),
        "names use letters, digits and `_`, and do not start with a digit, e.g. `_9LIVES`"
    );
}

#[test]
fn probes_use_exactly_one_of_http_and_tcp() {
    let service =
        |health: &str| format!("app: a\nservices:\n  web:\n    run: [x]\n    health:\n{health}");
    let d = single(&service("      ready: { http: /r, tcp: true }\n"), 6, 26);
    assert_eq!(d.message, "the `ready` probe sets both `http` and `tcp`");
    let d = single(&service("      live: { interval: 2s }\n"), 6, 7);
    assert_eq!(
        d.message,
        "the `live` probe needs `http: <path>` or `tcp: true`"
    );
    let d = single(&service("      ready: { tcp: false }\n"), 6, 7);
    assert_eq!(
        d.message,
        "the `ready` probe needs `http: <path>` or `tcp: true`"
    );
    let d = single(&service("      ready: { http: health }\n"), 6, 22);
    assert_eq!(d.message, "health check path `health` must start with `/`");
    let d = single(&service("      ready: { tcp: true, failures: 0 }\n"), 6, 37);
    assert_eq!(
        d.message,
        "`services.web.health.ready.failures` must be at least 1, found 0"
    );
}

#[test]
fn yaml_syntax_errors_are_one_diagnostic_with_a_position() {
    let d = single(
        "app: a\nservices:\n  web:\n    run: [x, y\n    port: 3\n",
        5,
        9,
    );
    assert!(d.message.starts_with("invalid YAML: "), "{}", d.message);
    let source = "app: a\nservices:\n  web:\n    run: [x, y\n    port: 3\n";
    assert_eq!(d.offset, source.find("port").expect("present") + 4);

    let d = single("app: a\n  bad: indent\n", 2, 6);
    assert!(d.message.starts_with("invalid YAML: "), "{}", d.message);
}

#[test]
fn duplicate_keys_are_reported_at_the_repetition() {
    let source = "app: a\nservices:\n  web: { run: [x] }\n  web: { run: [y] }\napp: b\n";
    let diagnostics = positions(source);
    assert_eq!(
        diagnostics,
        vec![
            (4, 3, "duplicate key `web`".to_owned()),
            (5, 1, "duplicate key `app`".to_owned()),
        ]
    );
    let d = &problems(source)[0];
    assert_eq!(
        hint(d),
        "`web` is already set on line 3; remove one of them"
    );
}

#[test]
fn an_empty_file_says_so() {
    let d = single("# nothing here yet\n", 1, 1);
    assert_eq!(d.message, "the spec file is empty");
    let d = single("", 1, 1);
    assert_eq!(d.message, "the spec file is empty");
}

#[test]
fn diagnostics_are_sorted_by_position() {
    let source = "servics: 1\napp: Bad\nservices:\n  b: { run: [x], port: 0 }\n  a: { run: [] }\n";
    let diagnostics = problems(source);
    assert!(diagnostics.len() >= 4, "{diagnostics:#?}");
    assert!(diagnostics.windows(2).all(|w| w[0].offset <= w[1].offset));
}

#[test]
fn columns_count_characters_and_offsets_count_bytes() {
    let source =
        "app: a\nservices:\n  web:\n    run: [x]\n    env: { GREETING: grüße, \"A-B\": x }\n";
    let d = single(source, 5, 29);
    assert_eq!(d.message, "bad environment variable name `A-B`");
    assert_eq!(d.offset, source.find("\"A-B\"").expect("present"));
    assert_eq!(d.len, 5);
}

/// `app_name` reads `app:` alone: a file with problems elsewhere still names its app, and a
/// file without a valid one names none (the full load then says why).
#[test]
fn app_name_reads_only_the_app() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("slipway.yaml");
    let write = |text: &str| std::fs::write(&file, text).expect("write");

    write("app: shop\nservices:\n  web:\n    run: [./server]\n    porrt: 8080\n");
    assert!(slipway_spec::load(&file).is_err(), "the typo is a problem");
    assert_eq!(slipway_spec::app_name(&file).as_deref(), Some("shop"));

    for text in [
        "app: Shop_1\nservices: {}\n",
        "app: [shop]\n",
        "services: {}\n",
        "app: shop\napp: other\n",
        "app: shop\n  bad: : indentation\n",
    ] {
        write(text);
        assert_eq!(slipway_spec::app_name(&file), None, "{text:?}");
    }
    assert_eq!(
        slipway_spec::app_name(&dir.path().join("missing.yaml")),
        None
    );
}
