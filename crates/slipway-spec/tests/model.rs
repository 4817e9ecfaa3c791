//! The resolved model: defaults, JSON round trip, digests, the JSON Schema, rendering and `load`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use slipway_spec::{
    Check, DeploySettings, Health, LoadError, Port, Probe, Scaling, ServiceSpec, Shutdown, Spec,
    json_schema, load, parse, render,
};

const EXAMPLE: &str = include_str!("fixtures/slipway.yaml");

fn valid(source: &str) -> Spec {
    match parse(source, Path::new("/srv/shop")) {
        Ok(spec) => spec,
        Err(diagnostics) => panic!("{}", render(&diagnostics, source, "test.yaml")),
    }
}

fn one_service(service_yaml: &str) -> ServiceSpec {
    let spec = valid(&format!("app: shop\nservices:\n  web:\n{service_yaml}"));
    spec.services["web"].clone()
}

#[test]
fn the_example_resolves_completely() {
    let spec = valid(EXAMPLE);
    assert_eq!(spec.app, "clinic");
    let api = &spec.services["api"];
    assert_eq!(api.run, ["python3", "-m", "http.server", "$PORT"]);
    assert_eq!(api.workdir, PathBuf::from("/srv/shop/services/api"));
    assert_eq!(api.env["LOG_LEVEL"], "info");
    assert_eq!(api.port, Port::Auto);
    assert_eq!(
        api.health,
        Health {
            ready: Probe {
                check: Check::Http {
                    path: "/ready".into()
                },
                interval: Duration::from_secs(1),
                timeout: Duration::from_secs(2),
                failures: 1,
            },
            live: Some(Probe {
                check: Check::Http {
                    path: "/health".into()
                },
                interval: Duration::from_secs(5),
                timeout: Duration::from_secs(2),
                failures: 3,
            }),
            startup_timeout: Duration::from_secs(30),
        }
    );
    assert_eq!(api.scaling, Scaling { min: 1, max: 4 });
    assert_eq!(api.routes, ["/api"]);
    assert_eq!(api.shutdown.grace, Duration::from_secs(10));
    assert_eq!(api.deploy.keep_previous, Duration::from_secs(30));
    assert_eq!(spec.services["web"].routes, ["/"]);
}

#[test]
fn defaults_apply_to_everything_left_out() {
    let web = one_service("    run: [./server]\n");
    assert_eq!(
        web,
        ServiceSpec {
            run: vec!["./server".into()],
            workdir: PathBuf::from("/srv/shop"),
            env: BTreeMap::new(),
            port: Port::Auto,
            health: Health {
                ready: Probe {
                    check: Check::Tcp,
                    interval: Duration::from_secs(1),
                    timeout: Duration::from_secs(1),
                    failures: 1,
                },
                live: None,
                startup_timeout: Duration::from_secs(30),
            },
            scaling: Scaling { min: 1, max: 1 },
            routes: vec![],
            shutdown: Shutdown {
                grace: Duration::from_secs(10)
            },
            deploy: DeploySettings {
                keep_previous: Duration::from_secs(30)
            },
        }
    );
    assert_eq!(web.health, Health::default());
    assert_eq!(web.scaling, Scaling::default());
}

#[test]
fn probe_fields_default_per_probe_kind() {
    let web = one_service(
        "    run: [x]\n    health:\n      ready: { http: /ready }\n      live: { tcp: true, timeout: 3s }\n",
    );
    assert_eq!(
        web.health.ready,
        Probe::default_ready(Check::Http {
            path: "/ready".into()
        })
    );
    assert_eq!(
        web.health.live,
        Some(Probe {
            timeout: Duration::from_secs(3),
            ..Probe::default_live(Check::Tcp)
        })
    );
    assert_eq!(
        web.health.live.as_ref().map(|p| p.interval),
        Some(Duration::from_secs(5))
    );
    assert_eq!(web.health.live.as_ref().map(|p| p.failures), Some(3));
}

#[test]
fn scaling_fills_in_the_missing_bound() {
    let scaling = |yaml: &str| one_service(&format!("    run: [x]\n    scaling: {yaml}\n")).scaling;
    assert_eq!(scaling("{ min: 3 }"), Scaling { min: 3, max: 3 });
    assert_eq!(scaling("{ min: 0 }"), Scaling { min: 0, max: 1 });
    assert_eq!(scaling("{ max: 4 }"), Scaling { min: 1, max: 4 });
    assert_eq!(scaling("{ min: 0, max: 2 }"), Scaling { min: 0, max: 2 });
    assert_eq!(scaling("{ min: 2, max: 2 }"), Scaling { min: 2, max: 2 });
    assert_eq!(scaling("{ min: 0, max: 1 }"), Scaling { min: 0, max: 1 });
    assert_eq!(scaling("{}"), Scaling { min: 1, max: 1 });
}

#[test]
fn fixed_ports_and_workdirs_resolve() {
    let web = one_service("    run: [x]\n    port: 8080\n    workdir: ../other/./dir\n");
    assert_eq!(web.port, Port::Fixed(8080));
    assert_eq!(web.workdir, PathBuf::from("/srv/other/dir"));
    let web = one_service("    run: [x]\n    workdir: /opt/app\n");
    assert_eq!(web.workdir, PathBuf::from("/opt/app"));
}

#[test]
fn env_values_are_taken_as_written() {
    let web = one_service(
        "    run: [y, on]\n    env: { A: yes, B: 1.50, C: 4, D: false, E: 0x1F, F: \"quoted\", G: 0755 }\n",
    );
    // YAML 1.1 spellings stay strings (YAML 1.2), so `run: [y, on]` is two words.
    assert_eq!(web.run, ["y", "on"]);
    let env: Vec<(&str, &str)> = web
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        env,
        [
            ("A", "yes"),
            ("B", "1.50"),
            ("C", "4"),
            ("D", "false"),
            ("E", "0x1F"),
            ("F", "quoted"),
            ("G", "0755"),
        ]
    );
}

#[test]
fn yaml_anchors_and_merge_keys_work() {
    let spec = valid(
        "app: a\nservices:\n  web: &base\n    run: [x]\n    scaling: { min: 2 }\n  api:\n    <<: *base\n    run: [y]\n",
    );
    assert_eq!(spec.services["api"].scaling, Scaling { min: 2, max: 2 });
    assert_eq!(spec.services["api"].run, ["y"]);
    assert_eq!(spec.services["web"].run, ["x"]);
}

#[test]
fn the_spec_round_trips_through_json() {
    let spec = valid(EXAMPLE);
    let json = serde_json::to_string(&spec).expect("serializes");
    let back: Spec = serde_json::from_str(&json).expect("deserializes");
    assert_eq!(back, spec);

    // The stored form: durations in milliseconds, ports as "auto" or a number.
    let value = serde_json::to_value(&spec.services["api"]).expect("serializes");
    assert_eq!(value["port"], "auto");
    assert_eq!(value["health"]["ready"]["timeout"], 2000);
    assert_eq!(value["health"]["ready"]["check"]["http"]["path"], "/ready");
    assert_eq!(value["shutdown"]["grace"], 10_000);
    let web = serde_json::to_value(&spec.services["web"]).expect("serializes");
    assert_eq!(web["health"]["ready"]["check"], "tcp");

    assert_eq!(
        serde_json::to_string(&Port::Fixed(8080)).ok(),
        Some("8080".into())
    );
    assert_eq!(
        serde_json::from_str::<Port>("8080").ok(),
        Some(Port::Fixed(8080))
    );
    assert_eq!(
        serde_json::from_str::<Port>("\"auto\"").ok(),
        Some(Port::Auto)
    );
    assert!(serde_json::from_str::<Port>("0").is_err());
    assert!(serde_json::from_str::<Port>("70000").is_err());
    assert!(serde_json::from_str::<Port>("\"manual\"").is_err());
}

#[test]
fn the_digest_is_stable_and_follows_every_change() {
    let web = one_service("    run: [./server, --port, $PORT]\n    env: { A: b }\n");
    // A fixed value (the SHA-256 of the compact JSON form, checked independently): the
    // digest must not change between runs or builds. If the stored JSON form changes on
    // purpose, every deployed service will look changed; update this value knowingly.
    assert_eq!(
        web.digest(),
        "3ac8740bc9b338a610d086dc456fc79cb04f28de660ddefce16f310389bce46d"
    );
    assert_eq!(web.digest().len(), 64);
    assert_eq!(web.digest(), web.clone().digest());

    let mut changed = web.clone();
    changed.env.insert("A".into(), "c".into());
    assert_ne!(changed.digest(), web.digest());
    let mut changed = web.clone();
    changed.scaling.max = 2;
    assert_ne!(changed.digest(), web.digest());
    let mut changed = web.clone();
    changed.workdir = PathBuf::from("/elsewhere");
    assert_ne!(changed.digest(), web.digest());
    let mut changed = web.clone();
    changed.health.ready.interval = Duration::from_millis(1001);
    assert_ne!(changed.digest(), web.digest());
}

#[test]
fn the_schema_is_valid_and_accepts_the_example() {
    let schema = json_schema();
    assert!(
        jsonschema::meta::is_valid(&schema),
        "not a valid JSON Schema"
    );
    let validator = jsonschema::validator_for(&schema).expect("compiles");
    let example: serde_json::Value = serde_saphyr::from_str(EXAMPLE).expect("example is YAML");
    let errors: Vec<String> = validator
        .iter_errors(&example)
        .map(|e| e.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");

    let mut bad = example.clone();
    bad["services"]["api"]["helth"] = serde_json::json!({});
    assert!(!validator.is_valid(&bad));

    // Editors show the doc comments as descriptions.
    let run = &schema["definitions"]["ServiceFile"]["properties"]["run"]["description"];
    assert!(
        run.as_str()
            .is_some_and(|d| d.contains("program and its arguments")),
        "{run}"
    );
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
}

#[test]
fn rendering_shows_every_problem_with_its_snippet_and_help() {
    let source = "\
app: shop
services:
  api:
    run: ./api --port $PORT
    helth: { ready: { http: /ready } }
    scaling: { min: 3, max: 1 }
";
    let diagnostics = parse(source, Path::new("/srv")).expect_err("invalid");
    let expected = "\
error: `services.api.run` must be a list, not a string
 --> slipway.yaml:4:10
  |
4 |     run: ./api --port $PORT
  |          ^^^^^^^^^^^^^^^^^^
  |
  = help: write the command as a list of arguments: `run: [\"./api\", \"--port\", \"$PORT\"]`

error: unknown key `helth` in `services.api`
 --> slipway.yaml:5:5
  |
5 |     helth: { ready: { http: /ready } }
  |     ^^^^^
  |
  = help: did you mean `health`?

error: `scaling.min` (3) is greater than `scaling.max` (1)
 --> slipway.yaml:6:21
  |
6 |     scaling: { min: 3, max: 1 }
  |                     ^
  |
  = help: raise `max` to at least 3, or lower `min`

3 problems found in slipway.yaml";
    assert_eq!(render(&diagnostics, source, "slipway.yaml"), expected);
    assert_eq!(render(&[], source, "x.yaml"), "0 problems found in x.yaml");
}

#[test]
fn load_reads_the_file_and_resolves_against_its_directory() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("slipway.yaml");
    std::fs::write(
        &path,
        "app: shop\nservices:\n  web: { run: [x], workdir: web }\n",
    )
    .expect("write");
    let spec = load(&path).expect("valid");
    assert_eq!(spec.services["web"].workdir, dir.path().join("web"));

    std::fs::write(&path, "app: Shop\nservices:\n  web: { run: [x] }\n").expect("write");
    match load(&path) {
        Err(error @ LoadError::Invalid { .. }) => {
            let text = error.to_string();
            assert!(text.starts_with("error: bad app name `Shop`\n"), "{text}");
            assert!(
                text.contains(&format!("--> {}:1:6", path.display())),
                "{text}"
            );
            assert!(
                text.ends_with(&format!("1 problem found in {}", path.display())),
                "{text}"
            );
        }
        other => panic!("expected Invalid, got {other:?}"),
    }

    let missing = dir.path().join("nope.yaml");
    match load(&missing) {
        Err(error @ LoadError::Io { .. }) => {
            assert!(
                error
                    .to_string()
                    .starts_with(&format!("cannot read {}: ", missing.display()))
            );
        }
        other => panic!("expected Io, got {other:?}"),
    }
}
