//! The resolved model: defaults, JSON round trip, digests, the JSON Schema, rendering and `load`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use slipway_spec::{
    Analysis, Check, DeploySettings, Health, Limits, LoadError, OnFailure, Port, Probe, Resources,
    Scaling, ServiceSpec, Shutdown, Spec, Strategy, TrafficSettings, json_schema, load, load_env,
    parse, parse_env, render,
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
    assert_eq!(
        api.scaling,
        Scaling {
            min: 1,
            max: 4,
            concurrency: 50,
            max_concurrency: 0,
            idle: Duration::from_secs(60),
            stable_window: Duration::from_secs(60),
            panic_window: Duration::from_secs(6),
        }
    );
    assert_eq!(api.routes, ["/api"]);
    assert_eq!(api.shutdown.grace, Duration::from_secs(10));
    assert_eq!(
        api.deploy,
        DeploySettings {
            keep_previous: Duration::from_secs(30),
            strategy: Strategy::Canary,
            steps: vec![5, 25, 50, 100],
            interval: Duration::from_secs(30),
            analysis: Analysis {
                max_error_rate: 0.01,
                max_p95: Some(Duration::from_millis(300)),
                min_requests: 50,
            },
            on_failure: OnFailure::Rollback,
            verify: false,
        }
    );
    assert_eq!(
        api.traffic,
        TrafficSettings {
            sticky: true,
            header_override: true
        }
    );
    assert_eq!(
        api.build.as_deref(),
        Some(&["python3", "-m", "compileall", "-q", "."].map(String::from)[..])
    );
    assert_eq!(
        api.artifact,
        Some(PathBuf::from("/srv/shop/services/api/__pycache__"))
    );
    assert_eq!(
        api.test.as_deref(),
        Some(&["python3", "-m", "unittest"].map(String::from)[..])
    );
    assert_eq!(
        api.release.as_deref(),
        Some(&["python3", "manage.py", "migrate"].map(String::from)[..])
    );
    assert_eq!(api.release_timeout, Duration::from_secs(300));
    assert_eq!(api.secrets, ["DATABASE_URL"]);
    assert_eq!(spec.services["web"].routes, ["/"]);
    assert_eq!(spec.environment, "development");
    assert_eq!(spec.host, "clinic.localhost");
    assert_eq!(spec.environments, ["development", "staging", "production"]);
}

#[test]
fn the_example_resolves_for_each_environment() {
    let env = |name: &str| match parse_env(EXAMPLE, Path::new("/srv/shop"), name) {
        Ok(spec) => spec,
        Err(diagnostics) => panic!("{}", render(&diagnostics, EXAMPLE, "test.yaml")),
    };
    let development = env("development");
    assert_eq!(development, valid(EXAMPLE));

    let staging = env("staging");
    assert_eq!(staging.environment, "staging");
    assert_eq!(staging.host, "staging.clinic.localhost");
    // Only `min` changes; the rest of `scaling` merges in from the base.
    let scaling = staging.services["api"].scaling;
    assert_eq!((scaling.min, scaling.max, scaling.concurrency), (0, 4, 50));

    let production = env("production");
    assert_eq!(production.host, "clinic.localhost");
    let api = &production.services["api"];
    assert_eq!((api.scaling.min, api.scaling.max), (2, 10));
    // `env` merges key by key; `routes` (a list) replaces the base's.
    assert_eq!(api.env["LOG_LEVEL"], "warn");
    assert_eq!(api.env["WORKERS"], "4");
    assert_eq!(production.services["web"].routes, ["/", "/static"]);
    // What the overlay does not touch is the base's.
    assert_eq!(api.deploy, development.services["api"].deploy);
    assert_eq!(api.secrets, development.services["api"].secrets);
    assert_ne!(api.digest(), development.services["api"].digest());
    assert_eq!(
        production.services["web"].run,
        development.services["web"].run
    );
}

#[test]
fn defaults_apply_to_everything_left_out() {
    let web = one_service("    run: [./server]\n");
    assert_eq!(
        web,
        ServiceSpec {
            run: vec!["./server".into()],
            image: None,
            command: None,
            dockerfile: None,
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
            scaling: Scaling {
                min: 1,
                max: 1,
                concurrency: 100,
                max_concurrency: 0,
                idle: Duration::from_secs(60),
                stable_window: Duration::from_secs(60),
                panic_window: Duration::from_secs(6),
            },
            resources: Resources::default(),
            routes: vec![],
            shutdown: Shutdown {
                grace: Duration::from_secs(10)
            },
            deploy: DeploySettings {
                keep_previous: Duration::from_secs(30),
                strategy: Strategy::BlueGreen,
                steps: vec![10, 50, 100],
                interval: Duration::from_secs(30),
                analysis: Analysis {
                    max_error_rate: 0.01,
                    max_p95: None,
                    min_requests: 20,
                },
                on_failure: OnFailure::Rollback,
                verify: false,
            },
            traffic: TrafficSettings {
                sticky: false,
                header_override: false,
            },
            build: None,
            artifact: None,
            test: None,
            release: None,
            release_timeout: Duration::from_secs(300),
            secrets: vec![],
            volumes: Default::default(),
            limits: Limits {
                body: Some(100 * 1024 * 1024),
            },
            uses: vec![],
            https: Default::default(),
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
    assert_eq!(
        scaling("{ min: 3 }"),
        Scaling {
            min: 3,
            max: 3,
            ..Scaling::default()
        }
    );
    assert_eq!(
        scaling("{ min: 0 }"),
        Scaling {
            min: 0,
            max: 1,
            ..Scaling::default()
        }
    );
    assert_eq!(
        scaling("{ max: 4 }"),
        Scaling {
            min: 1,
            max: 4,
            ..Scaling::default()
        }
    );
    assert_eq!(
        scaling("{ min: 0, max: 2 }"),
        Scaling {
            min: 0,
            max: 2,
            ..Scaling::default()
        }
    );
    assert_eq!(
        scaling("{ min: 2, max: 2 }"),
        Scaling {
            min: 2,
            max: 2,
            ..Scaling::default()
        }
    );
    assert_eq!(
        scaling("{ min: 0, max: 1 }"),
        Scaling {
            min: 0,
            max: 1,
            ..Scaling::default()
        }
    );
    assert_eq!(
        scaling("{}"),
        Scaling {
            min: 1,
            max: 1,
            ..Scaling::default()
        }
    );
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
    assert_eq!(
        spec.services["api"].scaling,
        Scaling {
            min: 2,
            max: 2,
            ..Scaling::default()
        }
    );
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
    // The stored JSON form, every default spelled out, and its SHA-256 (checked
    // independently with `sha256sum`): the digest must not change between runs or builds.
    // If the stored JSON form changes on purpose, every deployed service will look changed;
    // update both values knowingly.
    assert_eq!(
        serde_json::to_string(&web).expect("serializes"),
        concat!(
            r#"{"run":["./server","--port","$PORT"],"workdir":"/srv/shop","env":{"A":"b"},"#,
            r#""port":"auto","health":{"ready":{"check":"tcp","interval":1000,"timeout":1000,"#,
            r#""failures":1},"live":null,"startup_timeout":30000},"scaling":{"min":1,"max":1,"#,
            r#""concurrency":100,"max_concurrency":0,"idle":60000,"stable_window":60000,"#,
            r#""panic_window":6000},"routes":[],"shutdown":{"grace":10000},"deploy":{"#,
            r#""keep_previous":30000,"strategy":"blue-green","steps":[10,50,100],"#,
            r#""interval":30000,"analysis":{"max_error_rate":0.01,"max_p95":null,"#,
            r#""min_requests":20},"on_failure":"rollback"},"traffic":{"sticky":false,"#,
            r#""header_override":false},"build":null,"artifact":null,"test":null,"#,
            r#""release":null,"release_timeout":300000,"secrets":[]}"#,
        )
    );
    assert_eq!(
        web.digest(),
        "d44408c2185f56560ef87164c0236e3b8ea1d823e3994f101b25c377da881e8f"
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
    let mut changed = web.clone();
    changed.deploy.steps = vec![50, 100];
    assert_ne!(changed.digest(), web.digest());
    let mut changed = web.clone();
    changed.deploy.analysis.max_error_rate = 0.005;
    assert_ne!(changed.digest(), web.digest());
    let mut changed = web.clone();
    changed.scaling.panic_window = Duration::from_secs(5);
    assert_ne!(changed.digest(), web.digest());
    let mut changed = web.clone();
    changed.secrets.push("TOKEN".into());
    assert_ne!(changed.digest(), web.digest());
    let mut changed = web.clone();
    changed.traffic.sticky = true;
    assert_ne!(changed.digest(), web.digest());
}

#[test]
fn json_stored_by_older_versions_still_reads() {
    // A service and a spec as the first release stored them, before delivery strategies,
    // autoscaling, environments, builds and secrets existed.
    let old_service = r#"{"run":["./server"],"workdir":"/srv/shop","env":{},"port":8080,
        "health":{"ready":{"check":{"http":{"path":"/ready"}},"interval":1000,"timeout":1000,"failures":1},
        "live":null,"startup_timeout":30000},"scaling":{"min":2,"max":3},"routes":["/"],
        "shutdown":{"grace":10000},"deploy":{"keep_previous":5000}}"#;
    let service: ServiceSpec = serde_json::from_str(old_service).expect("old JSON reads");
    assert_eq!(
        service.scaling,
        Scaling {
            min: 2,
            max: 3,
            ..Scaling::default()
        }
    );
    assert_eq!(
        service.deploy,
        DeploySettings {
            keep_previous: Duration::from_secs(5),
            ..DeploySettings::default()
        }
    );
    assert_eq!(service.traffic, TrafficSettings::default());
    assert_eq!(service.build, None);
    assert_eq!(service.artifact, None);
    assert_eq!(service.release_timeout, Duration::from_secs(300));
    assert!(service.secrets.is_empty());

    let old_spec = format!(r#"{{"app":"shop","services":{{"web":{old_service}}}}}"#);
    let spec: Spec = serde_json::from_str(&old_spec).expect("old JSON reads");
    assert_eq!(spec.environment, "development");
    assert_eq!(spec.environments, ["development"]);
    assert_eq!(spec.host, "");
    assert_eq!(spec.services["web"], service);

    // And what this version writes reads back the same.
    let example = valid(EXAMPLE);
    let back: Spec =
        serde_json::from_str(&serde_json::to_string(&example).expect("serializes")).expect("reads");
    assert_eq!(back, example);
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

    // Every key of every mapping is documented, so editors can explain each one.
    let mut undocumented = Vec::new();
    let mut owners = vec![("(root)".to_owned(), &schema)];
    if let Some(definitions) = schema["definitions"].as_object() {
        owners.extend(definitions.iter().map(|(name, def)| (name.clone(), def)));
    }
    for (owner, definition) in owners {
        for (key, property) in definition["properties"].as_object().into_iter().flatten() {
            if !property["description"].is_string() {
                undocumented.push(format!("{owner}.{key}"));
            }
        }
    }
    assert!(
        undocumented.is_empty(),
        "undocumented keys: {undocumented:?}"
    );

    // An environment's service overlay has every service key and requires none.
    let service = &schema["definitions"]["ServiceFile"];
    let overlay = &schema["definitions"]["ServiceOverlay"];
    assert_eq!(overlay["properties"], service["properties"]);
    // `run` or `image`: exactly one, checked by the rules with a message of its own.
    assert!(service.get("required").is_none());
    assert!(overlay.get("required").is_none());
    let mut partial = example.clone();
    partial["environments"]["staging"]["services"]["web"] = serde_json::json!({ "port": 8080 });
    assert!(validator.is_valid(&partial));
    partial["environments"]["staging"]["services"]["web"] = serde_json::json!({ "prot": 8080 });
    assert!(!validator.is_valid(&partial));
    // The strategies are listed for completion.
    let strategies: Vec<&str> = schema["definitions"]["StrategyFile"]["oneOf"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|variant| variant["const"].as_str())
        .collect();
    assert_eq!(strategies, ["blue-green", "canary", "rolling", "recreate"]);
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

    // `load_env` resolves a declared environment, and reports an unknown one.
    std::fs::write(
        &path,
        "app: shop\nservices:\n  web: { run: [x] }\nenvironments:\n  production: { host: shop.example.com }\n",
    )
    .expect("write");
    let spec = load_env(&path, "production").expect("valid");
    assert_eq!(spec.host, "shop.example.com");
    match load_env(&path, "prod") {
        Err(error @ LoadError::Invalid { .. }) => {
            let text = error.to_string();
            assert!(
                text.starts_with("error: unknown environment `prod`\n"),
                "{text}"
            );
            assert!(
                text.contains(&format!("--> {}:4:1", path.display())),
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
