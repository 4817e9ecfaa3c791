//! Unit tests of the export: what each spec field becomes, and what is refused.

use std::path::Path;

use serde_json::{Value, json};

use crate::{Document, ExportError, Options, Target, TrafficTarget, export, helm, inert_fields};

const SPEC: &str = "\
app: shop
services:
  web:
    image: shop/web:1
    command: [./server, --port, $PORT]
    routes: [/]
    env: { MODE: fast }
    secrets: [TOKEN]
    uses: [db]
    resources: { cpu: 0.5, memory: 64Mi, pids: 64 }
    scaling: { min: 0, max: 4, concurrency: 10, max_concurrency: 20 }
    health:
      ready: { http: /ready, interval: 2s, timeout: 500ms, failures: 2 }
      live: { http: /live, interval: 5s, failures: 3 }
      startup_timeout: 60s
    shutdown: { grace: 15s }
    traffic: { sticky: true }
  job:
    run: [./job]
databases:
  db: { engine: postgres }
environments:
  production:
    host: shop.example.com
    services: { web: { scaling: { min: 2, max: 8 } } }
";

fn spec(environment: &str) -> slipway_spec::Spec {
    slipway_spec::parse_env(SPEC, Path::new("/srv/shop"), environment).expect("valid spec")
}

fn options(target: Target) -> Options {
    let mut options = Options::new(target);
    options.skip_native = true;
    options
}

fn find<'a>(documents: &'a [Document], id: &str) -> &'a Value {
    &documents
        .iter()
        .find(|d| d.id() == id)
        .unwrap_or_else(|| {
            panic!(
                "no {id} in {:?}",
                documents.iter().map(Document::id).collect::<Vec<_>>()
            )
        })
        .value
}

#[test]
fn a_native_service_is_refused_with_its_name_and_what_to_add() {
    let error = export(&spec("development"), &Options::new(Target::Kubernetes))
        .expect_err("`job` has no image");
    assert_eq!(
        error,
        ExportError::Native {
            services: vec!["job".into()],
            target: Target::Kubernetes
        }
    );
    let message = error.to_string();
    assert!(
        message.contains("service `job` runs as a native process"),
        "{message}"
    );
    assert!(message.contains("image:"), "{message}");
    assert!(message.contains("--skip-native"), "{message}");
}

#[test]
fn skipping_native_services_leaves_a_warning_for_each() {
    let export = export(&spec("development"), &options(Target::Kubernetes)).expect("export");
    assert!(export.documents.iter().all(|d| d.name() != "job"));
    assert!(
        export
            .warnings
            .iter()
            .any(|w| w.subject == "job" && w.message.contains("not exported"))
    );
}

#[test]
fn the_deployment_carries_replicas_rollout_probes_resources_env_and_grace() {
    let export = export(&spec("production"), &options(Target::Kubernetes)).expect("export");
    let deployment = find(&export.documents, "Deployment/web");
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(
        deployment["spec"]["strategy"]["rollingUpdate"],
        json!({ "maxSurge": 1, "maxUnavailable": 0 })
    );
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["terminationGracePeriodSeconds"], 15);
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "shop/web:1");
    assert_eq!(container["args"], json!(["./server", "--port", "8080"]));
    assert_eq!(
        container["readinessProbe"],
        json!({
            "httpGet": { "path": "/ready", "port": 8080 },
            "periodSeconds": 2, "timeoutSeconds": 1, "failureThreshold": 2, "successThreshold": 1
        })
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/live");
    assert_eq!(container["livenessProbe"]["failureThreshold"], 3);
    // 60 s of startup at one probe every 2 s.
    assert_eq!(container["startupProbe"]["failureThreshold"], 30);
    assert_eq!(container["startupProbe"]["periodSeconds"], 2);
    assert_eq!(
        container["resources"],
        json!({
            "limits": { "cpu": "500m", "memory": "64Mi" },
            "requests": { "cpu": "500m", "memory": "64Mi" }
        })
    );
    let env = container["env"].as_array().expect("env");
    assert!(env.contains(&json!({ "name": "MODE", "value": "fast" })));
    assert!(env.contains(&json!({
        "name": "TOKEN",
        "valueFrom": { "secretKeyRef": { "name": "shop-secrets", "key": "TOKEN" } }
    })));
    assert!(env.contains(&json!({
        "name": "DATABASE_URL",
        "valueFrom": { "secretKeyRef": { "name": "shop-secrets", "key": "db-url" } }
    })));
    // The 500 ms probe timeout is rounded up, and says so.
    assert!(
        export
            .warnings
            .iter()
            .any(|w| w.field == "health.ready.timeout" && w.message.contains("500 ms"))
    );
}

#[test]
fn the_secret_template_names_every_key_and_holds_no_value() {
    let export = export(&spec("production"), &options(Target::Kubernetes)).expect("export");
    let secret = find(&export.documents, "Secret/shop-secrets");
    assert_eq!(
        secret["stringData"],
        json!({ "TOKEN": "", "db-url": "", "db-password": "" })
    );
}

#[test]
fn autoscaler_budget_ingress_and_database_objects_are_made() {
    let export = export(&spec("production"), &options(Target::Kubernetes)).expect("export");
    let hpa = find(&export.documents, "HorizontalPodAutoscaler/web");
    assert_eq!(
        (
            hpa["spec"]["minReplicas"].clone(),
            hpa["spec"]["maxReplicas"].clone()
        ),
        (json!(2), json!(8))
    );
    assert!(
        export
            .warnings
            .iter()
            .any(|w| w.field == "scaling.concurrency" && w.message.starts_with("approximated"))
    );
    let pdb = find(&export.documents, "PodDisruptionBudget/web");
    assert_eq!(pdb["spec"]["maxUnavailable"], 1);
    let ingress = find(&export.documents, "Ingress/web");
    assert_eq!(ingress["spec"]["rules"][0]["host"], "shop.example.com");
    assert_eq!(ingress["spec"]["rules"][0]["http"]["paths"][0]["path"], "/");
    assert_eq!(ingress["spec"]["rules"][1]["host"], "web.shop.example.com");
    assert_eq!(ingress["spec"]["tls"][0]["secretName"], "shop-tls");
    let statefulset = find(&export.documents, "StatefulSet/db-postgres");
    assert_eq!(
        statefulset["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"],
        "1Gi"
    );
    find(&export.documents, "Service/db-postgres");
    let warning = export
        .warnings
        .iter()
        .find(|w| w.subject == "db")
        .expect("a database warning");
    assert!(
        warning.message.contains("managed PostgreSQL"),
        "{}",
        warning.message
    );
    assert!(
        warning.message.contains("DATABASE_URL"),
        "{}",
        warning.message
    );
}

#[test]
fn gateway_routes_replace_the_ingress() {
    let mut options = options(Target::Kubernetes);
    options.gateway = true;
    let export = export(&spec("production"), &options).expect("export");
    assert!(export.documents.iter().all(|d| d.kind() != "Ingress"));
    let routes = find(&export.documents, "HTTPRoute/web-routes");
    assert_eq!(routes["spec"]["hostnames"], json!(["shop.example.com"]));
    assert_eq!(
        routes["spec"]["rules"][0]["matches"][0]["path"],
        json!({ "type": "PathPrefix", "value": "/" })
    );
    let own = find(&export.documents, "HTTPRoute/web");
    assert_eq!(own["spec"]["hostnames"], json!(["web.shop.example.com"]));
}

#[test]
fn scale_to_zero_is_a_warning_on_kubernetes_and_an_annotation_on_knative() {
    let kube = export(&spec("development"), &options(Target::Kubernetes)).expect("export");
    assert_eq!(
        find(&kube.documents, "Deployment/web")["spec"]["replicas"],
        1
    );
    assert!(kube.warnings.iter().any(|w| w.field == "scaling.min"));
    let knative = export(&spec("development"), &options(Target::Knative)).expect("export");
    let service = find(&knative.documents, "Service/web");
    let annotations = &service["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["autoscaling.knative.dev/min-scale"], "0");
    assert_eq!(annotations["autoscaling.knative.dev/max-scale"], "4");
    assert_eq!(annotations["autoscaling.knative.dev/target"], "10");
    assert_eq!(
        service["spec"]["template"]["spec"]["containerConcurrency"],
        20
    );
    assert_eq!(
        service["spec"]["traffic"],
        json!([{ "latestRevision": true, "percent": 100 }])
    );
    let container = &service["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["ports"][0]["name"], "http1");
    assert!(
        container["env"]
            .as_array()
            .expect("env")
            .iter()
            .all(|e| e["name"] != "PORT"),
        "Knative refuses a container that sets PORT"
    );
    assert!(knative.warnings.iter().all(|w| w.field != "scaling.min"));
}

#[test]
fn knative_traffic_follows_the_split_and_tags() {
    let mut options = options(Target::Knative);
    options.traffic.insert(
        "web".into(),
        vec![
            TrafficTarget {
                revision: 3,
                latest: false,
                percent: 90,
                tag: Some("stable".into()),
            },
            TrafficTarget {
                revision: 4,
                latest: true,
                percent: 10,
                tag: Some("next".into()),
            },
        ],
    );
    let export = export(&spec("production"), &options).expect("export");
    let service = find(&export.documents, "Service/web");
    assert_eq!(service["spec"]["template"]["metadata"]["name"], "web-r4");
    assert_eq!(
        service["spec"]["traffic"],
        json!([
            { "revisionName": "web-r3", "latestRevision": false, "percent": 90, "tag": "stable" },
            { "revisionName": "web-r4", "latestRevision": false, "percent": 10, "tag": "next" },
        ])
    );
    assert!(
        export
            .warnings
            .iter()
            .any(|w| w.field == "traffic" && w.message.contains("web-r3"))
    );
    // On plain Kubernetes the tags have no URL: a warning each.
    let mut kube = options.clone();
    kube.target = Target::Kubernetes;
    let export = crate::export(&spec("production"), &kube).expect("export");
    assert_eq!(
        export.warnings.iter().filter(|w| w.field == "tags").count(),
        2
    );
}

#[test]
fn a_release_command_becomes_a_job_with_its_own_labels() {
    let mut spec = spec("production");
    let web = spec.services.get_mut("web").expect("web");
    web.release = Some(vec!["./migrate".into()]);
    let export = export(&spec, &options(Target::Kubernetes)).expect("export");
    let job = find(&export.documents, "Job/web-release");
    assert_eq!(
        job["spec"]["template"]["spec"]["containers"][0]["args"],
        json!(["./migrate"])
    );
    assert_eq!(job["spec"]["activeDeadlineSeconds"], 300);
    assert_eq!(job["spec"]["backoffLimit"], 0);
    assert_eq!(
        job["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"], "web-release",
        "the Service must not select the release pod"
    );
}

#[test]
fn a_database_named_like_a_services_object_is_refused() {
    let text = SPEC
        .replace(
            "  db: { engine: postgres }",
            "  db: { engine: postgres }\n  x: { engine: redis }",
        )
        .replace(
            "  job:\n    run: [./job]",
            "  x-redis:\n    image: shop/x:1",
        );
    let spec = slipway_spec::parse_env(&text, Path::new("/srv"), "production").expect("valid");
    let error = export(&spec, &Options::new(Target::Kubernetes)).expect_err("clash");
    assert!(error.to_string().contains("`x-redis`"), "{error}");
}

#[test]
fn the_chart_holds_what_environments_change_as_values() {
    let exports: Vec<_> = ["development", "production"]
        .into_iter()
        .map(|env| {
            (
                env.to_owned(),
                export(&spec(env), &options(Target::Kubernetes)).expect("export"),
            )
        })
        .collect();
    let chart = helm::chart("shop", "production", &options(Target::Kubernetes), &exports);
    let file = |name: &str| {
        chart
            .files
            .iter()
            .find(|(path, _)| path == name)
            .map(|(_, text)| text.clone())
            .unwrap_or_else(|| panic!("no {name}"))
    };
    let deployment = file("chart/templates/deployment-web.yaml");
    assert!(
        deployment.contains(r#"replicas: {{ index .Values "manifests" "Deployment/web" "/spec/replicas" | toJson }}"#),
        "{deployment}"
    );
    let production: Value =
        serde_saphyr::from_str(&file("chart/values-production.yaml")).expect("yaml");
    assert_eq!(
        production["manifests"]["Deployment/web"]["/spec/replicas"],
        2
    );
    let development: Value =
        serde_saphyr::from_str(&file("chart/values-development.yaml")).expect("yaml");
    assert_eq!(
        development["manifests"]["Deployment/web"]["/spec/replicas"],
        1
    );
    assert_eq!(
        file("chart/values.yaml"),
        file("chart/values-production.yaml")
    );
    // The image is the same everywhere: written as it is.
    assert!(deployment.contains("image: shop/web:1"), "{deployment}");
}

#[test]
fn inert_fields_are_those_slipway_itself_ignores() {
    let spec = spec("production");
    let inert = inert_fields(&spec.services["web"]);
    assert!(inert.contains(&"workdir"));
    assert!(inert.contains(&"deploy.steps"));
    assert!(inert.contains(&"scaling.idle"), "min is 2 in production");
    assert!(!inert.contains(&"scaling.concurrency"));
}

/// A container service with every field set away from its default, and the native-only
/// fields (which the spec refuses next to `image:`) filled in on the resolved struct.
fn everything() -> slipway_spec::Spec {
    let text = "\
app: full
services:
  svc:
    image: full/svc:1
    command: [./serve, $PORT]
    dockerfile: Dockerfile
    env: { MODE: fast }
    port: 9000
    secrets: [TOKEN]
    uses: [db, cache]
    routes: [/svc]
    resources: { cpu: 0.25, memory: 32Mi, pids: 32 }
    scaling: { min: 0, max: 1, concurrency: 7, max_concurrency: 9, idle: 5m, stable_window: 2m, panic_window: 10s }
    health:
      ready: { http: /ready, interval: 3s, timeout: 2s, failures: 4 }
      live: { tcp: true, interval: 7s, timeout: 3s, failures: 5 }
      startup_timeout: 90s
    shutdown: { grace: 25s }
    deploy:
      strategy: canary
      steps: [5, 100]
      interval: 2m
      keep_previous: 1m
      on_failure: pause
      analysis: { max_error_rate: 5%, max_p95: 250ms, min_requests: 50 }
    traffic: { sticky: true, header_override: true }
    limits: { body: 1MiB }
databases:
  db: { engine: postgres }
  cache: { engine: redis }
";
    let mut spec = slipway_spec::parse_env(text, Path::new("/srv/full"), "development")
        .unwrap_or_else(|d| panic!("{}", slipway_spec::render(&d, text, "full.yaml")));
    let svc = spec.services.get_mut("svc").expect("svc");
    svc.run = vec!["./native".into()];
    svc.build = Some(vec!["make".into()]);
    svc.test = Some(vec!["make".into(), "test".into()]);
    svc.artifact = Some("/srv/full/out".into());
    svc.release = Some(vec!["./migrate".into()]);
    svc.release_timeout = std::time::Duration::from_secs(120);
    svc.volumes.insert("data".into(), "data".into());
    spec
}

/// The paths of the leaves of `value` (objects walked, arrays and scalars are leaves),
/// leaving out nulls and empty collections (fields that are not set).
fn leaves(value: &Value, path: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, child) in map {
                let child_path = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                leaves(child, &child_path, out);
            }
        }
        Value::Null => {}
        Value::Array(items) if items.is_empty() => {}
        Value::Object(_) => {}
        _ => out.push(path.to_owned()),
    }
}

fn covers(field: &str, leaf: &str) -> bool {
    leaf == field || leaf.starts_with(&format!("{field}."))
}

/// The round trip: every field of the service is either found in the output where the
/// export says it put it, or listed as a warning, or changes nothing in Slipway either. A
/// new spec field with neither an export nor a warning fails here.
#[test]
fn every_spec_field_is_exported_or_warned_about() {
    let spec = everything();
    let service = &spec.services["svc"];
    let mut fields = Vec::new();
    leaves(
        &serde_json::to_value(service).expect("json"),
        "",
        &mut fields,
    );
    assert!(fields.len() > 40, "the walk found only {fields:?}");
    let inert = inert_fields(service);
    for (target, gateway) in [
        (Target::Kubernetes, false),
        (Target::Kubernetes, true),
        (Target::Knative, false),
    ] {
        let mut options = Options::new(target);
        options.gateway = gateway;
        let export = export(&spec, &options).expect("export");
        for mapping in &export.mappings {
            let document = find(&export.documents, &mapping.document);
            assert!(
                document
                    .pointer(&mapping.pointer)
                    .is_some_and(|v| !v.is_null()),
                "{target:?}: {} of `{}` is said to be at {} {}, which is missing",
                mapping.field,
                mapping.service,
                mapping.document,
                mapping.pointer
            );
        }
        let mut missing = Vec::new();
        for leaf in &fields {
            let mapped = export
                .mappings
                .iter()
                .any(|m| m.service == "svc" && covers(&m.field, leaf));
            let warned = export
                .warnings
                .iter()
                .any(|w| w.subject == "svc" && covers(&w.field, leaf));
            let ignored = inert.iter().any(|f| covers(f, leaf));
            if !(mapped || warned || ignored) {
                missing.push(leaf.clone());
            }
        }
        assert!(
            missing.is_empty(),
            "{target:?} (gateway {gateway}): these fields are neither exported nor warned about: {missing:?}"
        );
    }
}

/// Values, not only places: the round trip reads a few fields back from the manifests.
#[test]
fn exported_values_read_back_as_written() {
    let spec = everything();
    let export = export(&spec, &Options::new(Target::Kubernetes)).expect("export");
    let deployment = find(&export.documents, "Deployment/svc");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["ports"][0]["containerPort"], 9000);
    assert_eq!(container["args"], json!(["./serve", "9000"]));
    assert_eq!(container["livenessProbe"]["tcpSocket"]["port"], 9000);
    assert_eq!(container["livenessProbe"]["periodSeconds"], 7);
    assert_eq!(container["livenessProbe"]["failureThreshold"], 5);
    assert_eq!(
        container["startupProbe"]["failureThreshold"], 30,
        "90 s at one probe every 3 s"
    );
    assert_eq!(
        deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"],
        25
    );
    let ingress = find(&export.documents, "Ingress/svc");
    assert_eq!(
        ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-body-size"],
        "1048576"
    );
    let knative = crate::export(&spec, &Options::new(Target::Knative)).expect("export");
    let service = find(&knative.documents, "Service/svc");
    let annotations = &service["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["autoscaling.knative.dev/window"], "120s");
    assert_eq!(
        annotations["autoscaling.knative.dev/panic-window-percentage"],
        "8.3"
    );
    assert_eq!(
        annotations["autoscaling.knative.dev/scale-to-zero-pod-retention-period"],
        "300s"
    );
    assert_eq!(
        service["spec"]["template"]["spec"]["containerConcurrency"],
        9
    );
}
