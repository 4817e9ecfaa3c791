//! What both targets share: labels, the container of a service (image, command, env,
//! secrets, probes, resources), the Secret template, and the warnings about the app as a
//! whole and about service fields that neither target can express.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, Probe as KubeProbe,
    ResourceRequirements, Secret, SecretKeySelector, TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use slipway_spec::{Check, Port, Probe, ServiceSpec, Spec};

use crate::{Document, File, Options, Output, Target};

/// The port a container listens on when the spec says `port: auto` (Cloud Run's and
/// Knative's default).
pub(crate) const AUTO_PORT: u16 = 8080;

/// One service being exported.
pub(crate) struct Context<'a> {
    pub spec: &'a Spec,
    pub options: &'a Options,
    pub name: &'a str,
    pub service: &'a ServiceSpec,
}

impl Context<'_> {
    /// The port the container listens on.
    pub fn port(&self) -> u16 {
        match self.service.port {
            Port::Auto => AUTO_PORT,
            Port::Fixed(port) => port,
        }
    }

    /// The labels of every object made for the service.
    pub fn labels(&self) -> BTreeMap<String, String> {
        labels(&self.spec.app, self.name)
    }

    /// The labels that select the service's pods.
    pub fn selector(&self) -> BTreeMap<String, String> {
        selector(&self.spec.app, self.name)
    }

    pub fn meta(&self, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(self.labels()),
            ..Default::default()
        }
    }

    pub fn warn(&self, out: &mut Output, field: &str, message: impl Into<String>) {
        out.warn(self.name, field, message);
    }

    pub fn map(&self, out: &mut Output, field: &str, document: &str, pointer: &str) {
        out.map(self.name, field, document, pointer);
    }

    /// The service's host of its own, `<service>.<app host>`.
    pub fn own_host(&self) -> String {
        format!("{}.{}", self.name, self.spec.host)
    }
}

pub(crate) fn labels(app: &str, component: &str) -> BTreeMap<String, String> {
    let mut labels = selector(app, component);
    labels.insert("app.kubernetes.io/managed-by".into(), "slipway".into());
    labels
}

pub(crate) fn selector(app: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/part-of".to_owned(), app.to_owned()),
        (
            "app.kubernetes.io/component".to_owned(),
            component.to_owned(),
        ),
    ])
}

/// The name of the Secret every secret reference points into.
pub(crate) fn secret_name(app: &str) -> String {
    format!("{app}-secrets")
}

/// The Secret key that holds the URL of database `database`.
pub(crate) fn database_url_key(database: &str) -> String {
    format!("{database}-url")
}

/// Whole seconds, rounded up (Kubernetes counts probes and grace periods in seconds).
pub(crate) fn seconds(duration: Duration) -> i64 {
    let whole = duration.as_secs();
    let up = if duration.subsec_nanos() > 0 {
        whole + 1
    } else {
        whole
    };
    i64::try_from(up).unwrap_or(i64::MAX)
}

/// A duration as Knative and Kubernetes annotations write it: `90s`.
pub(crate) fn seconds_text(duration: Duration) -> String {
    format!("{}s", seconds(duration))
}

/// The service's command with `$PORT` replaced by the port: Kubernetes only expands
/// `$(VAR)`, and Knative sets `PORT` itself.
pub(crate) fn with_port(args: &[String], port: u16) -> Vec<String> {
    args.iter()
        .map(|arg| {
            arg.replace("${PORT}", &port.to_string())
                .replace("$PORT", &port.to_string())
        })
        .collect()
}

fn secret_env(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn plain_env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..Default::default()
    }
}

/// The service's container. `document` and `base` say where it lands (for the mappings):
/// `Deployment/web` and `/spec/template/spec/containers/0`.
pub(crate) fn container(ctx: &Context, out: &mut Output, document: &str, base: &str) -> Container {
    let service = ctx.service;
    let port = ctx.port();
    let image = service.image.clone().unwrap_or_default();
    ctx.map(out, "image", document, &format!("{base}/image"));
    let args = service.command.as_ref().map(|command| {
        ctx.map(out, "command", document, &format!("{base}/args"));
        with_port(command, port)
    });
    if let Some(dockerfile) = &service.dockerfile {
        ctx.warn(
            out,
            "dockerfile",
            format!(
                "the image is built from {} at each deploy by Slipway; build it and push `{image}` to a registry the cluster pulls from",
                dockerfile.display()
            ),
        );
    }
    let mut env = Vec::new();
    // Knative sets PORT itself and refuses a container that sets it.
    if ctx.options.target == Target::Kubernetes && !service.env.contains_key("PORT") {
        env.push(plain_env("PORT", &port.to_string()));
    }
    for (name, value) in &service.env {
        ctx.map(
            out,
            &format!("env.{name}"),
            document,
            &format!("{base}/env/{}", env.len()),
        );
        env.push(plain_env(name, value));
    }
    let secret = secret_name(&ctx.spec.app);
    for name in &service.secrets {
        ctx.map(
            out,
            "secrets",
            document,
            &format!("{base}/env/{}/valueFrom/secretKeyRef", env.len()),
        );
        env.push(secret_env(name, &secret, name));
    }
    for used in &service.uses {
        ctx.map(
            out,
            "uses",
            document,
            &format!("{base}/env/{}/valueFrom/secretKeyRef", env.len()),
        );
        env.push(secret_env(
            &used.database.env,
            &secret,
            &database_url_key(&used.name),
        ));
    }
    ctx.map(
        out,
        "port",
        document,
        &format!("{base}/ports/0/containerPort"),
    );
    let resources = resources(ctx, out, document, base);
    let readiness = probe(&service.health.ready, port);
    ctx.map(
        out,
        "health.ready",
        document,
        &format!("{base}/readinessProbe"),
    );
    ctx.map(
        out,
        "health.ready.interval",
        document,
        &format!("{base}/readinessProbe/periodSeconds"),
    );
    ctx.map(
        out,
        "health.ready.timeout",
        document,
        &format!("{base}/readinessProbe/timeoutSeconds"),
    );
    ctx.map(
        out,
        "health.ready.failures",
        document,
        &format!("{base}/readinessProbe/failureThreshold"),
    );
    rounding(ctx, out, "health.ready", &service.health.ready);
    let liveness = service.health.live.as_ref().map(|live| {
        ctx.map(
            out,
            "health.live",
            document,
            &format!("{base}/livenessProbe"),
        );
        ctx.map(
            out,
            "health.live.interval",
            document,
            &format!("{base}/livenessProbe/periodSeconds"),
        );
        ctx.map(
            out,
            "health.live.timeout",
            document,
            &format!("{base}/livenessProbe/timeoutSeconds"),
        );
        ctx.map(
            out,
            "health.live.failures",
            document,
            &format!("{base}/livenessProbe/failureThreshold"),
        );
        rounding(ctx, out, "health.live", live);
        probe(live, port)
    });
    Container {
        name: ctx.name.to_owned(),
        image: Some(image),
        args,
        env: (!env.is_empty()).then_some(env),
        ports: Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: i32::from(port),
            protocol: Some("TCP".into()),
            ..Default::default()
        }]),
        readiness_probe: Some(readiness),
        liveness_probe: liveness,
        resources,
        ..Default::default()
    }
}

/// A probe whose timings are not whole seconds is rounded up; say so.
fn rounding(ctx: &Context, out: &mut Output, field: &str, probe: &Probe) {
    for (what, value) in [("interval", probe.interval), ("timeout", probe.timeout)] {
        if value.subsec_nanos() > 0 || value.is_zero() {
            ctx.warn(
                out,
                &format!("{field}.{what}"),
                format!(
                    "{} ms rounded up to {} s: Kubernetes counts probe timings in whole seconds",
                    value.as_millis(),
                    seconds(value).max(1)
                ),
            );
        }
    }
}

/// A Kubernetes probe of `probe`'s check with its timings.
pub(crate) fn probe(probe: &Probe, port: u16) -> KubeProbe {
    let mut kube = action(&probe.check, port);
    kube.period_seconds = Some(to_i32(seconds(probe.interval).max(1)));
    kube.timeout_seconds = Some(to_i32(seconds(probe.timeout).max(1)));
    kube.failure_threshold = Some(to_i32(i64::from(probe.failures.max(1))));
    kube.success_threshold = Some(1);
    kube
}

/// A probe that only says what to check.
pub(crate) fn action(check: &Check, port: u16) -> KubeProbe {
    let port = IntOrString::Int(i32::from(port));
    match check {
        Check::Http { path } => KubeProbe {
            http_get: Some(HTTPGetAction {
                path: Some(path.clone()),
                port,
                ..Default::default()
            }),
            ..Default::default()
        },
        Check::Tcp => KubeProbe {
            tcp_socket: Some(TCPSocketAction { port, host: None }),
            ..Default::default()
        },
    }
}

pub(crate) fn to_i32(value: i64) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

/// `resources:` as requests equal to limits (a Guaranteed pod: the limit Slipway enforces
/// is also what the scheduler reserves).
fn resources(
    ctx: &Context,
    out: &mut Output,
    document: &str,
    base: &str,
) -> Option<ResourceRequirements> {
    let limits = &ctx.service.resources;
    let mut quantities = BTreeMap::new();
    if let Some(cpu) = limits.cpu_millis {
        quantities.insert("cpu".to_owned(), Quantity(cpu_quantity(cpu)));
        ctx.map(
            out,
            "resources.cpu_millis",
            document,
            &format!("{base}/resources/limits/cpu"),
        );
    }
    if let Some(memory) = limits.memory_bytes {
        quantities.insert("memory".to_owned(), Quantity(memory_quantity(memory)));
        ctx.map(
            out,
            "resources.memory_bytes",
            document,
            &format!("{base}/resources/limits/memory"),
        );
    }
    if let Some(pids) = limits.pids {
        ctx.warn(
            out,
            "resources.pids",
            format!(
                "a limit of {pids} processes has no per-pod field; the kubelet's podPidsLimit sets one for every pod of a node"
            ),
        );
    }
    if quantities.is_empty() {
        return None;
    }
    Some(ResourceRequirements {
        limits: Some(quantities.clone()),
        requests: Some(quantities),
        ..Default::default()
    })
}

/// Warnings about fields neither target can express.
pub(crate) fn service_warnings(ctx: &Context, out: &mut Output) {
    let service = ctx.service;
    let traffic = &service.traffic;
    if traffic.sticky {
        ctx.warn(
            out,
            "traffic.sticky",
            "sticky sessions (a client kept on its revision while two share traffic) need a service mesh or an ingress controller's cookie affinity",
        );
    }
    if traffic.header_override {
        ctx.warn(
            out,
            "traffic.header_override",
            "the `Slipway-Revision` request header has no equivalent; use tagged revisions (Knative) or header-matched routes (Gateway API) by hand",
        );
    }
    let body = match service.limits.body {
        Some(body) => format!("the request body limit ({body} bytes)"),
        None => "no request body limit".to_owned(),
    };
    let instead = match (ctx.options.target, ctx.options.gateway) {
        (Target::Kubernetes, false) => {
            "is up to the ingress controller: the Ingress carries it as ingress-nginx's proxy-body-size annotation, other controllers need their own setting"
        }
        (Target::Kubernetes, true) => {
            "has no Gateway API field: set it in the Gateway implementation's own policy"
        }
        (Target::Knative, _) => {
            "has no Knative setting: set it in the networking layer (Kourier, Istio, Contour)"
        }
    };
    ctx.warn(out, "limits.body", format!("{body} {instead}"));
    if !service.deploy.keep_previous.is_zero() {
        ctx.warn(
            out,
            "deploy.keep_previous",
            format!(
                "the previous revision is not kept running for {} s after a switch; roll back with `kubectl rollout undo` (or by traffic on Knative), which starts it again",
                seconds(service.deploy.keep_previous)
            ),
        );
    }
    let analysis = &service.deploy.analysis;
    if service.deploy.strategy == slipway_spec::Strategy::Canary || service.deploy.verify {
        ctx.warn(
            out,
            "deploy.analysis",
            format!(
                "the analysis thresholds (at most {}% errors{}, at least {} requests per step) are not enforced by the cluster: use Argo Rollouts or Flagger",
                analysis.max_error_rate * 100.0,
                analysis
                    .max_p95
                    .map(|p| format!(", p95 at most {} ms", p.as_millis()))
                    .unwrap_or_default(),
                analysis.min_requests
            ),
        );
        ctx.warn(
            out,
            "deploy.on_failure",
            format!(
                "`on_failure: {}` after a failed analysis is not automatic on the cluster",
                serde_json::to_value(service.deploy.on_failure)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            ),
        );
    }
    if service.deploy.strategy == slipway_spec::Strategy::Canary {
        ctx.warn(
            out,
            "deploy.steps",
            format!(
                "canary steps {:?} percent are not progressed by the cluster: set the traffic of each step yourself, or use Argo Rollouts or Flagger",
                service.deploy.steps
            ),
        );
        ctx.warn(
            out,
            "deploy.interval",
            format!(
                "the {} s between canary steps is not timed by the cluster",
                seconds(service.deploy.interval)
            ),
        );
    }
    if service.scaling.max_concurrency > 0 && ctx.options.target == Target::Kubernetes {
        ctx.warn(
            out,
            "scaling.max_concurrency",
            format!(
                "at most {} requests in flight per instance, with the rest queued, has no equivalent on plain Kubernetes (Knative's containerConcurrency has)",
                service.scaling.max_concurrency
            ),
        );
    }
    for (field, value) in [("build", &service.build), ("test", &service.test)] {
        if value.is_some() {
            ctx.warn(
                out,
                field,
                format!("`{field}` runs before Slipway deploys; run it in the pipeline that builds the image"),
            );
        }
    }
    if service.artifact.is_some() {
        ctx.warn(
            out,
            "artifact",
            "a build artifact belongs in the image; the cluster runs the image as it is",
        );
    }
    for (volume, path) in &service.volumes {
        ctx.warn(
            out,
            &format!("volumes.{volume}"),
            format!(
                "the persistent folder {} is not exported; mount a PersistentVolumeClaim there",
                path.display()
            ),
        );
    }
    if !service.run.is_empty() {
        ctx.warn(out, "run", "a native command does not run in a container");
    }
}

/// Warnings about the app as a whole.
pub(crate) fn app_warnings(spec: &Spec, options: &Options, out: &mut Output) {
    if spec.host.ends_with(".localhost") || spec.host == "localhost" {
        out.warn(
            &spec.app,
            "host",
            format!(
                "the host `{}` is Slipway's local default; set `host:` for environment `{}` to the name clients use",
                spec.host, spec.environment
            ),
        );
    }
    match (options.target, options.gateway) {
        (Target::Kubernetes, false) => out.warn(
            &spec.app,
            "tls",
            format!(
                "the Ingresses expect a certificate for the app's hosts in the Secret `{}-tls` (e.g. from cert-manager); Slipway's own certificates are not exported",
                spec.app
            ),
        ),
        (Target::Kubernetes, true) => out.warn(
            &spec.app,
            "tls",
            format!(
                "HTTPS is set on the Gateway's listeners (the HTTPRoutes attach to the Gateway `{}`, which is not exported)",
                spec.app
            ),
        ),
        (Target::Knative, _) => out.warn(
            &spec.app,
            "tls",
            "HTTPS for Knative Services comes from Knative's own certificate provisioning (external-domain-tls)",
        ),
    }
}

/// The Secret template: every key the manifests refer to, with an empty value.
pub(crate) fn secret_template(spec: &Spec, out: &mut Output) {
    let mut keys = std::collections::BTreeSet::new();
    for document in &out.documents {
        collect_secret_keys(&document.value, &secret_name(&spec.app), &mut keys);
    }
    if keys.is_empty() {
        return;
    }
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(secret_name(&spec.app)),
            labels: Some(labels(&spec.app, "secrets")),
            annotations: Some(BTreeMap::from([(
                "slipway.dev/template".to_owned(),
                "fill in every value before applying; an export never carries secret values"
                    .to_owned(),
            )])),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        string_data: Some(keys.into_iter().map(|k| (k, String::new())).collect()),
        ..Default::default()
    };
    out.push(Document::new(File::SecretTemplate, secret));
}

fn collect_secret_keys(
    value: &serde_json::Value,
    secret: &str,
    keys: &mut std::collections::BTreeSet<String>,
) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(reference) = map.get("secretKeyRef")
                && reference["name"] == secret
                && let Some(key) = reference["key"].as_str()
            {
                keys.insert(key.to_owned());
            }
            for child in map.values() {
                collect_secret_keys(child, secret, keys);
            }
        }
        serde_json::Value::Array(items) => {
            for child in items {
                collect_secret_keys(child, secret, keys);
            }
        }
        _ => {}
    }
}

/// Millicores as Kubernetes writes them: `500m`, or `2` for whole cores.
pub(crate) fn cpu_quantity(millis: u32) -> String {
    if millis.is_multiple_of(1000) {
        (millis / 1000).to_string()
    } else {
        format!("{millis}m")
    }
}

/// Bytes in the largest binary unit that divides them: `512Mi`, `1Gi`, or plain bytes.
pub(crate) fn memory_quantity(bytes: u64) -> String {
    for (unit, size) in [
        ("Ti", 1u64 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ] {
        if bytes > 0 && bytes.is_multiple_of(size) {
            return format!("{}{unit}", bytes / size);
        }
    }
    bytes.to_string()
}
