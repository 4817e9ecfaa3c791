//! Databases: a StatefulSet with a claim template and a headless Service each, for trying
//! the app on a cluster, with a warning that recommends a managed database for production
//! and names the variable to point at it.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, EnvVarSource, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodSpec, PodTemplateSpec, SecretKeySelector, Service, ServicePort,
    ServiceSpec, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use slipway_spec::{DatabaseSpec, Engine, Spec};

use crate::common::{self, database_url_key, labels, secret_name, selector};
use crate::{Document, File, Output};

/// The size each database's claim asks for.
pub(crate) const VOLUME_SIZE: &str = "1Gi";

/// The objects of every database of the app.
pub(crate) fn all(spec: &Spec, out: &mut Output) {
    for (name, database) in &spec.databases {
        one(spec, name, database, out);
    }
}

/// The name of a database's objects: `<name>-postgres`, `<name>-redis`.
pub(crate) fn object_name(name: &str, engine: Engine) -> String {
    format!("{name}-{}", engine.as_str())
}

fn one(spec: &Spec, name: &str, database: &DatabaseSpec, out: &mut Output) {
    let object = object_name(name, database.engine);
    let secret = secret_name(&spec.app);
    let password_key = format!("{name}-password");
    let password = EnvVar {
        name: match database.engine {
            Engine::Postgres => "POSTGRES_PASSWORD".into(),
            Engine::Redis => "REDIS_PASSWORD".into(),
        },
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.clone(),
                key: password_key,
                optional: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let (image, port, data, env, args) = match database.engine {
        Engine::Postgres => (
            format!("postgres:{}", database.version.as_deref().unwrap_or("17")),
            5432,
            "/var/lib/postgresql/data",
            vec![
                EnvVar {
                    name: "POSTGRES_USER".into(),
                    value: Some(spec.app.clone()),
                    ..Default::default()
                },
                EnvVar {
                    name: "POSTGRES_DB".into(),
                    value: Some(spec.app.clone()),
                    ..Default::default()
                },
                // A folder below the mount: a fresh volume may hold `lost+found`, which
                // initdb refuses.
                EnvVar {
                    name: "PGDATA".into(),
                    value: Some("/var/lib/postgresql/data/pgdata".into()),
                    ..Default::default()
                },
                password,
            ],
            None,
        ),
        Engine::Redis => (
            format!("redis:{}", database.version.as_deref().unwrap_or("7")),
            6379,
            "/data",
            vec![password],
            Some(vec![
                "redis-server".to_owned(),
                "--appendonly".to_owned(),
                "yes".to_owned(),
                "--requirepass".to_owned(),
                "$(REDIS_PASSWORD)".to_owned(),
            ]),
        ),
    };
    let users: Vec<&str> = spec
        .services
        .iter()
        .filter(|(_, s)| s.is_container() && s.uses.iter().any(|u| u.name == name))
        .map(|(n, _)| n.as_str())
        .collect();
    let example = match database.engine {
        Engine::Postgres => format!("postgres://{0}:PASSWORD@{object}:5432/{0}", spec.app),
        Engine::Redis => format!("redis://:PASSWORD@{object}:6379/0"),
    };
    out.warn(
        name,
        "databases",
        format!(
            "{} runs in the cluster as the StatefulSet `{object}` ({VOLUME_SIZE}, no backups, no failover), for trying the app out; for production use a managed {} and put its URL in `{}` (key `{}` of the Secret `{secret}`, read by {}); in-cluster it is {example}",
            database.engine.as_str(),
            match database.engine {
                Engine::Postgres => "PostgreSQL",
                Engine::Redis => "Redis",
            },
            database.env,
            database_url_key(name),
            if users.is_empty() {
                "no exported service".to_owned()
            } else {
                users.join(", ")
            },
        ),
    );
    if let Some(backups) = &database.backups {
        out.warn(
            name,
            "backups",
            format!(
                "scheduled backups (every {} s, {} kept) are not exported: use the managed database's backups, or a CronJob with pg_dump",
                common::seconds(backups.every),
                backups.keep
            ),
        );
    }
    let labels = labels(&spec.app, &object);
    let selector = selector(&spec.app, &object);
    let statefulset = StatefulSet {
        metadata: ObjectMeta {
            name: Some(object.clone()),
            labels: Some(labels.clone()),
            ..Default::default()
        },
        spec: Some(StatefulSetSpec {
            service_name: Some(object.clone()),
            replicas: Some(1),
            selector: LabelSelector {
                match_labels: Some(selector.clone()),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels.clone()),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: database.engine.as_str().to_owned(),
                        image: Some(image),
                        args,
                        env: Some(env),
                        ports: Some(vec![ContainerPort {
                            name: Some(database.engine.as_str().to_owned()),
                            container_port: port,
                            protocol: Some("TCP".into()),
                            ..Default::default()
                        }]),
                        readiness_probe: Some(common::probe(
                            &slipway_spec::Probe::default_ready(slipway_spec::Check::Tcp),
                            u16::try_from(port).unwrap_or(0),
                        )),
                        volume_mounts: Some(vec![VolumeMount {
                            name: "data".into(),
                            mount_path: data.into(),
                            ..Default::default()
                        }]),
                        ..Default::default()
                    }],
                    enable_service_links: Some(false),
                    ..Default::default()
                }),
            },
            volume_claim_templates: Some(vec![PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some("data".into()),
                    ..Default::default()
                },
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(vec!["ReadWriteOnce".into()]),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(BTreeMap::from([(
                            "storage".to_owned(),
                            Quantity(VOLUME_SIZE.into()),
                        )])),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    out.push(Document::new(File::Manifests, statefulset));
    let service = Service {
        metadata: ObjectMeta {
            name: Some(object.clone()),
            labels: Some(labels),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(selector),
            ports: Some(vec![ServicePort {
                name: Some(database.engine.as_str().to_owned()),
                port,
                target_port: Some(
                    k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(port),
                ),
                protocol: Some("TCP".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    out.push(Document::new(File::Manifests, service));
}
