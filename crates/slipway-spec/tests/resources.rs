//! Resource limits: `resources: { cpu, memory, pids }` in Kubernetes quantity notation.

mod support;

use slipway_spec::Resources;
use support::{hint, service, single, valid};

fn resources_of(yaml: &str) -> Resources {
    valid(&service(&format!("    resources: {yaml}\n"))).services["web"].resources
}

#[test]
fn quantities_resolve_to_millicores_and_bytes() {
    assert_eq!(
        resources_of("{ cpu: 0.5, memory: 512Mi, pids: 256 }"),
        Resources {
            cpu_millis: Some(500),
            memory_bytes: Some(512 << 20),
            pids: Some(256),
        }
    );
    assert_eq!(resources_of("{ cpu: 250m }").cpu_millis, Some(250));
    assert_eq!(resources_of("{ cpu: 2 }").cpu_millis, Some(2000));
    assert_eq!(resources_of("{ memory: 1Gi }").memory_bytes, Some(1 << 30));
    assert_eq!(
        resources_of("{ memory: 128M }").memory_bytes,
        Some(128_000_000)
    );
    assert_eq!(
        resources_of("{ memory: 67108864 }").memory_bytes,
        Some(64 << 20)
    );
    assert_eq!(
        resources_of("{ cpu: 1, memory: 64Mi, pids: 10 }").describe(),
        "cpu 1, memory 64Mi, pids 10"
    );
}

#[test]
fn no_resources_keeps_the_digest_of_a_spec_written_before_them() {
    let spec = valid(&service(""));
    assert!(spec.services["web"].resources.is_empty());
    let json = serde_json::to_string(&spec.services["web"]).unwrap();
    assert!(!json.contains("resources"), "{json}");
    // A limit is part of the config: changing it makes a new revision.
    let limited = valid(&service("    resources: { memory: 64Mi }\n"));
    assert_ne!(
        spec.services["web"].digest(),
        limited.services["web"].digest()
    );
}

#[test]
fn bad_quantities_are_reported_where_they_are_with_a_fix() {
    let d = single(&service("    resources: { memory: 512MB }\n"), 5, 26);
    assert_eq!(d.message, "bad `resources.memory` quantity `512MB`");
    assert!(
        hint(&d).contains("`MB` is not a memory unit"),
        "{}",
        hint(&d)
    );
    assert!(hint(&d).contains("Mi"), "{}", hint(&d));

    let d = single(&service("    resources: { cpu: 2cores }\n"), 5, 23);
    assert_eq!(d.message, "bad `resources.cpu` quantity `2cores`");
    assert!(hint(&d).contains("millicores"), "{}", hint(&d));

    let d = single(&service("    resources: { cpu: 0.0001 }\n"), 5, 23);
    assert!(hint(&d).contains("millicore"), "{}", hint(&d));

    let d = single(&service("    resources: { memory: 0Mi }\n"), 5, 26);
    assert!(
        hint(&d).contains("never let an instance run"),
        "{}",
        hint(&d)
    );

    let d = single(&service("    resources: { cpu: [1] }\n"), 5, 23);
    assert_eq!(d.message, "`resources.cpu` must be a quantity, not a list");

    let d = single(&service("    resources: { pids: 0 }\n"), 5, 24);
    assert!(d.message.contains("pids"), "{}", d.message);

    let d = single(&service("    resources: { disk: 1Gi }\n"), 5, 18);
    assert!(d.message.contains("disk"), "{}", d.message);
}
