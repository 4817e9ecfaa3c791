//! Architecture invariants, checked on every test run (see ARCHITECTURE.md): the leaf
//! crates stay leaves, and the pure spec crate stays free of I/O-heavy dependencies.

use std::path::Path;

fn dependencies(krate: &str) -> Vec<String> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(krate)
        .join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let mut in_deps = false;
    let mut deps = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps && let Some((name, _)) = line.split_once(['=', '.']) {
            deps.push(name.trim().to_owned());
        }
    }
    deps
}

#[test]
fn leaf_crates_do_not_depend_on_each_other_or_on_control() {
    // `slipway-core` is the shared base every crate may use; it depends on no other.
    assert!(
        dependencies("slipway-core")
            .iter()
            .all(|d| !d.starts_with("slipway")),
        "slipway-core depends on another slipway crate"
    );
    for leaf in [
        "slipway-spec",
        "slipway-state",
        "slipway-runtime",
        "slipway-router",
        "slipway-autoscale",
        "slipway-rollout",
        "slipway-snapshot",
    ] {
        let deps = dependencies(leaf);
        let internal: Vec<_> = deps
            .iter()
            .filter(|d| d.starts_with("slipway") && *d != "slipway-core")
            .collect();
        assert!(internal.is_empty(), "{leaf} depends on {internal:?}");
    }
}

#[test]
fn the_export_crate_reads_the_spec_and_nothing_else_of_slipway() {
    let internal: Vec<_> = dependencies("slipway-export")
        .into_iter()
        .filter(|d| d.starts_with("slipway"))
        .collect();
    assert_eq!(internal, ["slipway-spec"]);
}

#[test]
fn only_the_state_crate_talks_to_sqlite_and_spec_is_pure() {
    for krate in [
        "slipway-spec",
        "slipway-runtime",
        "slipway-router",
        "slipway-control",
        "slipway",
    ] {
        assert!(
            !dependencies(krate).contains(&"rusqlite".to_owned()),
            "{krate} uses rusqlite"
        );
    }
    for pure in [
        "slipway-spec",
        "slipway-export",
        "slipway-autoscale",
        "slipway-rollout",
        "slipway-core",
    ] {
        let deps = dependencies(pure);
        for io in ["tokio", "hyper", "axum", "rusqlite", "bollard", "kube"] {
            assert!(!deps.contains(&io.to_owned()), "{pure} depends on {io}");
        }
    }
    let state = dependencies("slipway-state");
    for io in ["tokio", "hyper", "axum"] {
        assert!(
            !state.contains(&io.to_owned()),
            "slipway-state depends on {io}"
        );
    }
}
