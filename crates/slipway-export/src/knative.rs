//! The `knative` target: per service a `serving.knative.dev/v1` Service, whose revision
//! template carries the container and the autoscaler's annotations, and whose `traffic`
//! carries the current split and tags.
//!
//! No maintained crate types Knative Serving, so its few objects are written here, with
//! k8s-openapi's `ObjectMeta` and `PodSpec` inside.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::Serialize;
use slipway_spec::Strategy;

use crate::common::{self, Context, seconds, seconds_text};
use crate::{Document, File, Output};

/// `serving.knative.dev/v1` `Service`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct KnativeService {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub metadata: ObjectMeta,
    pub spec: KnativeServiceSpec,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct KnativeServiceSpec {
    pub template: RevisionTemplate,
    pub traffic: Vec<TrafficTarget>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RevisionTemplate {
    pub metadata: ObjectMeta,
    pub spec: RevisionSpec,
}

/// A Knative revision: a pod spec plus Knative's own fields.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RevisionSpec {
    #[serde(flatten)]
    pub pod: PodSpec,
    /// The hard limit of requests in flight per instance; 0 is none.
    pub container_concurrency: i64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TrafficTarget {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision_name: Option<String>,
    pub latest_revision: bool,
    pub percent: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
}

/// The name of revision `revision` of service `name`.
fn revision_name(name: &str, revision: u64) -> String {
    format!("{name}-r{revision}")
}

pub(crate) fn service(ctx: &Context, out: &mut Output) {
    let service = ctx.service;
    let scaling = &service.scaling;
    let id = format!("Service/{}", ctx.name);
    let base = "/spec/template/spec/containers/0";
    let mut container = common::container(ctx, out, &id, base);
    // Knative names the one port after its protocol.
    if let Some(port) = container.ports.as_mut().and_then(|p| p.first_mut()) {
        port.name = Some("http1".into());
    }
    let mut annotations = BTreeMap::from([
        (
            "autoscaling.knative.dev/min-scale".to_owned(),
            scaling.min.to_string(),
        ),
        (
            "autoscaling.knative.dev/max-scale".to_owned(),
            scaling.max.to_string(),
        ),
        (
            "autoscaling.knative.dev/target".to_owned(),
            scaling.concurrency.to_string(),
        ),
        (
            "autoscaling.knative.dev/window".to_owned(),
            seconds_text(scaling.stable_window),
        ),
    ]);
    let annotation =
        |key: &str| format!("/spec/template/metadata/annotations/autoscaling.knative.dev~1{key}");
    ctx.map(out, "scaling.min", &id, &annotation("min-scale"));
    ctx.map(out, "scaling.max", &id, &annotation("max-scale"));
    ctx.map(out, "scaling.concurrency", &id, &annotation("target"));
    ctx.map(out, "scaling.stable_window", &id, &annotation("window"));
    // Knative's panic window is a percentage of the stable window (1 to 100).
    let stable = scaling.stable_window.as_millis().max(1);
    let percent = (scaling.panic_window.as_millis() * 1000 / stable) as f64 / 10.0;
    annotations.insert(
        "autoscaling.knative.dev/panic-window-percentage".to_owned(),
        format!("{:.1}", percent.clamp(1.0, 100.0)),
    );
    ctx.map(
        out,
        "scaling.panic_window",
        &id,
        &annotation("panic-window-percentage"),
    );
    if scaling.min == 0 {
        annotations.insert(
            "autoscaling.knative.dev/scale-to-zero-pod-retention-period".to_owned(),
            seconds_text(scaling.idle),
        );
        ctx.map(
            out,
            "scaling.idle",
            &id,
            &annotation("scale-to-zero-pod-retention-period"),
        );
    }
    ctx.map(
        out,
        "scaling.max_concurrency",
        &id,
        "/spec/template/spec/containerConcurrency",
    );
    // Knative waits `progress-deadline` for a new revision to become ready.
    annotations.insert(
        "serving.knative.dev/progress-deadline".to_owned(),
        seconds_text(service.health.startup_timeout),
    );
    ctx.map(
        out,
        "health.startup_timeout",
        &id,
        "/spec/template/metadata/annotations/serving.knative.dev~1progress-deadline",
    );
    ctx.warn(
        out,
        "shutdown.grace",
        format!(
            "Knative does not take terminationGracePeriodSeconds: its queue-proxy drains requests before the container gets SIGTERM, and then the pod's default grace applies instead of {} s",
            seconds(service.shutdown.grace)
        ),
    );
    match service.deploy.strategy {
        Strategy::BlueGreen | Strategy::Canary => {
            ctx.map(out, "deploy.strategy", &id, "/spec/traffic");
        }
        Strategy::Rolling => ctx.warn(
            out,
            "deploy.strategy",
            "a rolling deploy becomes Knative's switch: all traffic moves to the new revision once it is ready",
        ),
        Strategy::Recreate => ctx.warn(
            out,
            "deploy.strategy",
            "recreate (never two revisions at once) has no Knative equivalent: the new revision starts beside the old one",
        ),
    }
    if !service.routes.is_empty() {
        ctx.warn(
            out,
            "routes",
            format!(
                "the path prefixes {} on `{}` are not exported: a Knative Service has a host of its own; put an ingress or Gateway in front to route paths to it",
                service.routes.join(", "),
                ctx.spec.host
            ),
        );
    }
    ctx.warn(
        out,
        "host",
        format!(
            "the host `{}` is not exported: map it to the Service with a Knative DomainMapping",
            ctx.own_host()
        ),
    );
    let traffic = traffic(ctx, out);
    let latest = ctx
        .options
        .traffic
        .get(ctx.name)
        .and_then(|targets| targets.iter().find(|t| t.latest))
        .map(|t| revision_name(ctx.name, t.revision));
    let knative = KnativeService {
        api_version: "serving.knative.dev/v1",
        kind: "Service",
        metadata: ctx.meta(ctx.name),
        spec: KnativeServiceSpec {
            template: RevisionTemplate {
                metadata: ObjectMeta {
                    name: latest,
                    labels: Some(ctx.labels()),
                    annotations: Some(annotations),
                    ..Default::default()
                },
                spec: RevisionSpec {
                    pod: PodSpec {
                        containers: vec![container],
                        enable_service_links: Some(false),
                        ..Default::default()
                    },
                    container_concurrency: i64::from(scaling.max_concurrency),
                },
            },
            traffic,
        },
    };
    out.push(Document::new(File::Manifests, knative));
    // The release command runs as a plain Job beside the Knative Service.
    crate::kubernetes::release_job(ctx, out);
    common::service_warnings(ctx, out);
}

/// The current split and tags, or everything on the latest revision.
fn traffic(ctx: &Context, out: &mut Output) -> Vec<TrafficTarget> {
    let Some(targets) = ctx.options.traffic.get(ctx.name).filter(|t| !t.is_empty()) else {
        return vec![TrafficTarget {
            revision_name: None,
            latest_revision: true,
            percent: 100,
            tag: None,
        }];
    };
    let mut traffic = Vec::new();
    for target in targets {
        if !target.latest {
            ctx.warn(
                out,
                "traffic",
                format!(
                    "revision {} ({} %{}) must already exist on the cluster as `{}`: only the newest revision is in these manifests",
                    target.revision,
                    target.percent,
                    target
                        .tag
                        .as_ref()
                        .map(|t| format!(", tag `{t}`"))
                        .unwrap_or_default(),
                    revision_name(ctx.name, target.revision)
                ),
            );
        }
        traffic.push(TrafficTarget {
            revision_name: Some(revision_name(ctx.name, target.revision)),
            latest_revision: false,
            percent: target.percent,
            tag: target.tag.clone(),
        });
    }
    traffic
}
