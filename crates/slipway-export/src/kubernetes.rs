//! The `kubernetes` target: per service a Deployment, a Service, a HorizontalPodAutoscaler,
//! a PodDisruptionBudget, an Ingress or Gateway API HTTPRoutes, and a Job for the release
//! command.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HPAScalingRules, HorizontalPodAutoscaler,
    HorizontalPodAutoscalerBehavior, HorizontalPodAutoscalerSpec, MetricSpec, MetricTarget,
    ResourceMetricSource,
};
use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::json;
use slipway_spec::Strategy;

use crate::common::{self, Context, seconds, to_i32};
use crate::{Document, File, Output};

/// The port the Service answers on inside the cluster.
pub(crate) const SERVICE_PORT: u16 = 80;

/// The HPA's CPU target, in percent of the request.
pub(crate) const CPU_TARGET: i32 = 80;

pub(crate) fn service(ctx: &Context, out: &mut Output) {
    deployment(ctx, out);
    cluster_service(ctx, out);
    autoscaler(ctx, out);
    disruption_budget(ctx, out);
    if ctx.options.gateway {
        http_routes(ctx, out);
    } else {
        ingress(ctx, out);
    }
    release_job(ctx, out);
    common::service_warnings(ctx, out);
    for target in ctx.options.traffic.get(ctx.name).into_iter().flatten() {
        if let Some(tag) = &target.tag {
            ctx.warn(
                out,
                "tags",
                format!(
                    "the tag `{tag}` (revision {}) and its URL have no equivalent on plain Kubernetes, which runs one revision per Deployment: use the knative target",
                    target.revision
                ),
            );
        }
        if !target.latest && target.percent > 0 {
            ctx.warn(
                out,
                "traffic",
                format!(
                    "{} % of the traffic on revision {} is not exported: the Deployment runs the newest revision only",
                    target.percent, target.revision
                ),
            );
        }
    }
}

fn deployment(ctx: &Context, out: &mut Output) {
    let service = ctx.service;
    let id = format!("Deployment/{}", ctx.name);
    let base = "/spec/template/spec/containers/0";
    let mut container = common::container(ctx, out, &id, base);
    // Startup: the readiness check, given `startup_timeout` in all before the pod is
    // restarted; readiness and liveness only start once it passed.
    let ready = &service.health.ready;
    let period = seconds(ready.interval).max(1);
    let mut startup = common::action(&ready.check, ctx.port());
    startup.period_seconds = Some(to_i32(period));
    startup.timeout_seconds = Some(to_i32(seconds(ready.timeout).max(1)));
    startup.failure_threshold =
        Some(to_i32((seconds(service.health.startup_timeout) + period - 1) / period).max(1));
    container.startup_probe = Some(startup);
    ctx.map(
        out,
        "health.startup_timeout",
        &id,
        &format!("{base}/startupProbe/failureThreshold"),
    );
    ctx.map(
        out,
        "health.ready.check",
        &id,
        &format!("{base}/startupProbe"),
    );
    let scaling = &service.scaling;
    if scaling.min == 0 {
        ctx.warn(
            out,
            "scaling.min",
            "scale to zero (`min: 0`) has no equivalent on plain Kubernetes: one replica stays running (the knative target scales to zero)",
        );
        ctx.warn(
            out,
            "scaling.idle",
            format!(
                "the {} s before the last instance stops applies to scale to zero, which plain Kubernetes does not do",
                seconds(scaling.idle)
            ),
        );
    }
    ctx.map(out, "scaling.min", &id, "/spec/replicas");
    let strategy = match service.deploy.strategy {
        Strategy::Recreate => {
            ctx.map(out, "deploy.strategy", &id, "/spec/strategy/type");
            DeploymentStrategy {
                type_: Some("Recreate".into()),
                rolling_update: None,
            }
        }
        other => {
            ctx.map(out, "deploy.strategy", &id, "/spec/strategy/rollingUpdate");
            if other != Strategy::Rolling {
                ctx.warn(
                    out,
                    "deploy.strategy",
                    format!(
                        "{} becomes a rolling update (maxSurge 1, maxUnavailable 0): old and new pods serve side by side until it ends",
                        if other == Strategy::Canary { "a canary" } else { "blue-green" }
                    ),
                );
            }
            DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_surge: Some(IntOrString::Int(1)),
                    max_unavailable: Some(IntOrString::Int(0)),
                }),
            }
        }
    };
    ctx.map(
        out,
        "shutdown.grace",
        &id,
        "/spec/template/spec/terminationGracePeriodSeconds",
    );
    let deployment = Deployment {
        metadata: ctx.meta(ctx.name),
        spec: Some(DeploymentSpec {
            replicas: Some(to_i32(i64::from(scaling.min.max(1)))),
            selector: LabelSelector {
                match_labels: Some(ctx.selector()),
                ..Default::default()
            },
            strategy: Some(strategy),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(ctx.labels()),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    termination_grace_period_seconds: Some(seconds(service.shutdown.grace)),
                    // Service links would add variables named after other services
                    // (`API_PORT`, …) that the app never had under Slipway.
                    enable_service_links: Some(false),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    out.push(Document::new(File::Manifests, deployment));
}

fn cluster_service(ctx: &Context, out: &mut Output) {
    let service = Service {
        metadata: ctx.meta(ctx.name),
        spec: Some(ServiceSpec {
            selector: Some(ctx.selector()),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: i32::from(SERVICE_PORT),
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    out.push(Document::new(File::Manifests, service));
}

fn autoscaler(ctx: &Context, out: &mut Output) {
    let scaling = &ctx.service.scaling;
    let min = scaling.min.max(1);
    if scaling.max <= min {
        // `min: 0, max: 1` scales only between none and one instance: with scale to zero
        // gone, one replica runs and the autoscaler's settings have nothing to act on.
        if scaling.min != scaling.max {
            for field in [
                "scaling.max",
                "scaling.concurrency",
                "scaling.stable_window",
                "scaling.panic_window",
            ] {
                ctx.warn(
                    out,
                    field,
                    "the service only scales between zero and one instance, and plain Kubernetes does not scale to zero: one replica runs, without an autoscaler",
                );
            }
        }
        return;
    }
    let id = format!("HorizontalPodAutoscaler/{}", ctx.name);
    ctx.map(out, "scaling.max", &id, "/spec/maxReplicas");
    ctx.map(
        out,
        "scaling.stable_window",
        &id,
        "/spec/behavior/scaleDown/stabilizationWindowSeconds",
    );
    ctx.map(
        out,
        "scaling.concurrency",
        &id,
        "/metadata/annotations/slipway.dev~1concurrency-target",
    );
    ctx.warn(
        out,
        "scaling.concurrency",
        format!(
            "approximated: the HorizontalPodAutoscaler scales on CPU ({CPU_TARGET} % of the request) instead of {} requests in flight per instance; for the exact target use the knative target, or KEDA with an in-flight metric",
            scaling.concurrency
        ),
    );
    if ctx.service.resources.cpu_millis.is_none() {
        ctx.warn(
            out,
            "resources.cpu_millis",
            "no cpu limit, so no cpu request: the HorizontalPodAutoscaler cannot compute utilisation until `resources: { cpu: … }` is set",
        );
    }
    ctx.warn(
        out,
        "scaling.panic_window",
        format!(
            "the {} s panic window (immediate scale-up on a burst) has no HPA equivalent; scale-up is immediate but follows the metrics-server's scrape interval",
            seconds(scaling.panic_window)
        ),
    );
    let hpa = HorizontalPodAutoscaler {
        metadata: ObjectMeta {
            annotations: Some(BTreeMap::from([(
                "slipway.dev/concurrency-target".to_owned(),
                scaling.concurrency.to_string(),
            )])),
            ..ctx.meta(ctx.name)
        },
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: ctx.name.to_owned(),
            },
            min_replicas: Some(to_i32(i64::from(min))),
            max_replicas: to_i32(i64::from(scaling.max)),
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(CPU_TARGET),
                        ..Default::default()
                    },
                }),
                ..Default::default()
            }]),
            behavior: Some(HorizontalPodAutoscalerBehavior {
                scale_down: Some(HPAScalingRules {
                    stabilization_window_seconds: Some(to_i32(seconds(scaling.stable_window))),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }),
        ..Default::default()
    };
    out.push(Document::new(File::Manifests, hpa));
}

fn disruption_budget(ctx: &Context, out: &mut Output) {
    // At most one pod down at a time for voluntary disruptions (drains), as a rolling
    // deploy never has more than one missing; a budget of `minAvailable: 1` on a single
    // replica would block every drain.
    let pdb = PodDisruptionBudget {
        metadata: ctx.meta(ctx.name),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(ctx.selector()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    out.push(Document::new(File::Manifests, pdb));
}

fn backend(ctx: &Context) -> IngressBackend {
    IngressBackend {
        service: Some(IngressServiceBackend {
            name: ctx.name.to_owned(),
            port: Some(ServiceBackendPort {
                number: Some(i32::from(SERVICE_PORT)),
                name: None,
            }),
        }),
        resource: None,
    }
}

fn prefix_path(ctx: &Context, path: &str) -> HTTPIngressPath {
    HTTPIngressPath {
        path: Some(path.to_owned()),
        path_type: "Prefix".into(),
        backend: backend(ctx),
    }
}

fn ingress(ctx: &Context, out: &mut Output) {
    let id = format!("Ingress/{}", ctx.name);
    let host = &ctx.spec.host;
    let own = ctx.own_host();
    let mut rules = Vec::new();
    let mut hosts = Vec::new();
    if !ctx.service.routes.is_empty() {
        ctx.map(out, "routes", &id, "/spec/rules/0/http/paths");
        rules.push(IngressRule {
            host: Some(host.clone()),
            http: Some(HTTPIngressRuleValue {
                paths: ctx
                    .service
                    .routes
                    .iter()
                    .map(|route| prefix_path(ctx, route))
                    .collect(),
            }),
        });
        hosts.push(host.clone());
    }
    rules.push(IngressRule {
        host: Some(own.clone()),
        http: Some(HTTPIngressRuleValue {
            paths: vec![prefix_path(ctx, "/")],
        }),
    });
    hosts.push(own);
    let mut annotations = BTreeMap::new();
    // ingress-nginx's name for the body limit; `0` is no limit.
    let body = ctx.service.limits.body.unwrap_or(0);
    annotations.insert(
        "nginx.ingress.kubernetes.io/proxy-body-size".to_owned(),
        body.to_string(),
    );
    if ctx.service.limits.body.is_some() {
        ctx.map(
            out,
            "limits.body",
            &id,
            "/metadata/annotations/nginx.ingress.kubernetes.io~1proxy-body-size",
        );
    }
    let ingress = Ingress {
        metadata: ObjectMeta {
            annotations: Some(annotations),
            ..ctx.meta(ctx.name)
        },
        spec: Some(IngressSpec {
            rules: Some(rules),
            tls: Some(vec![IngressTLS {
                hosts: Some(hosts),
                secret_name: Some(format!("{}-tls", ctx.spec.app)),
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    out.push(Document::new(File::Manifests, ingress));
}

/// Gateway API routes: one for the service's own host, one for its path prefixes on the
/// app's host (hostnames belong to a whole route). Not in k8s-openapi, so written as JSON.
fn http_routes(ctx: &Context, out: &mut Output) {
    let route = |name: &str, hostname: &str, paths: &[String]| {
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": { "name": name, "labels": ctx.labels() },
            "spec": {
                "parentRefs": [{ "name": ctx.spec.app }],
                "hostnames": [hostname],
                "rules": [{
                    "matches": paths.iter().map(|p| json!({
                        "path": { "type": "PathPrefix", "value": p }
                    })).collect::<Vec<_>>(),
                    "backendRefs": [{ "name": ctx.name, "port": SERVICE_PORT }],
                }],
            },
        })
    };
    out.push(Document {
        file: File::Manifests,
        value: route(ctx.name, &ctx.own_host(), &["/".to_owned()]),
    });
    if !ctx.service.routes.is_empty() {
        let name = format!("{}-routes", ctx.name);
        ctx.map(
            out,
            "routes",
            &format!("HTTPRoute/{name}"),
            "/spec/rules/0/matches",
        );
        out.push(Document {
            file: File::Manifests,
            value: route(&name, &ctx.spec.host, &ctx.service.routes),
        });
    }
}

/// The release command as a Job of the service's image, env and secrets.
pub(crate) fn release_job(ctx: &Context, out: &mut Output) {
    let Some(release) = &ctx.service.release else {
        return;
    };
    let name = format!("{}-release", ctx.name);
    let id = format!("Job/{name}");
    let base = "/spec/template/spec/containers/0";
    let mut container = common::container(ctx, &mut Output::default(), &id, base);
    container.args = Some(common::with_port(release, ctx.port()));
    container.readiness_probe = None;
    container.liveness_probe = None;
    container.ports = None;
    ctx.map(out, "release", &id, &format!("{base}/args"));
    ctx.map(out, "release_timeout", &id, "/spec/activeDeadlineSeconds");
    ctx.warn(
        out,
        "release",
        "the release Job runs when applied, but the service does not wait for it: apply it and wait (`kubectl wait --for=condition=complete job/…`) before the service's manifests",
    );
    // Labels of its own: the Service and the budget must not select the Job's pod.
    let labels = common::labels(&ctx.spec.app, &name);
    let job = Job {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(labels.clone()),
            ..Default::default()
        },
        spec: Some(JobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: Some(seconds(ctx.service.release_timeout).max(1)),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(k8s_openapi::api::core::v1::PodSpec {
                    containers: vec![container],
                    restart_policy: Some("Never".into()),
                    enable_service_links: Some(false),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    };
    out.push(Document::new(File::Manifests, job));
}
