//! Unit tests of the overlay merge and its position bookkeeping.

use super::*;
use crate::tree;

fn parse(source: &str) -> Tree {
    match tree::parse(source) {
        Ok((tree, problems)) if problems.is_empty() => tree,
        _ => panic!("test source must be valid YAML without duplicates"),
    }
}

const SOURCE: &str = "\
app: shop
services:
  api:
    run: [./api]
    env: { A: '1', B: '2' }
    routes: [/api, /v1]
    scaling: { min: 1, max: 2 }
environments:
  production:
    services:
      api:
        env: { B: '3' }
        routes: [/x]
        scaling: { max: 5 }
  staging: {}
";

#[test]
fn maps_merge_lists_and_scalars_replace() {
    let view = apply(&parse(SOURCE), "production");
    let api = &view.json["services"]["api"];
    assert_eq!(api["env"], serde_json::json!({ "A": "1", "B": "3" }));
    assert_eq!(api["routes"], serde_json::json!(["/x"]));
    assert_eq!(api["scaling"], serde_json::json!({ "min": 1, "max": 5 }));
    assert_eq!(api["run"], serde_json::json!(["./api"]));
    assert!(view.json.get("environments").is_none());
}

#[test]
fn positions_follow_the_values() {
    let view = apply(&parse(SOURCE), "production");
    let at = |pointer: &str| {
        let pos = view.value_pos(pointer);
        (pos.line, pos.column)
    };
    // Untouched: the base's position.
    assert_eq!(at("/services/api/env/A"), (5, 15));
    assert_eq!(at("/services/api/scaling/min"), (7, 21));
    // Written by the overlay: the overlay's position.
    assert_eq!(at("/services/api/env/B"), (12, 19));
    assert_eq!(at("/services/api/scaling/max"), (14, 25));
    assert_eq!(at("/services/api/routes/0"), (13, 18));
    // The replaced list's second item is gone, with its position.
    assert!(!view.values.contains_key("/services/api/routes/1"));
    assert_eq!(view.key_pos("/services/api/routes").line, 13);
    // Nothing of the environments section is left.
    assert!(view.values.keys().all(|p| !p.starts_with("/environments")));
}

#[test]
fn environments_without_overlays_are_the_base() {
    let base = parse(SOURCE);
    assert!(has_overlay(&base, "production"));
    assert!(!has_overlay(&base, "staging"));
    assert!(!has_overlay(&base, "development"));
    let view = apply(&base, "staging");
    assert_eq!(view.json["services"], base.json["services"]);
    assert_eq!(
        declared(&base),
        ["development", "production", "staging"].map(String::from)
    );
}

#[test]
fn hosts_default_per_environment() {
    let base = parse(SOURCE);
    assert_eq!(host(&base, "shop", "development"), "shop.localhost");
    assert_eq!(host(&base, "shop", "staging"), "staging.shop.localhost");
    let base =
        parse("app: shop\nservices: {}\nenvironments:\n  production: { host: shop.example.com }\n");
    assert_eq!(host(&base, "shop", "production"), "shop.example.com");
}

#[test]
fn host_names_are_lowercase_dns_names() {
    assert!(is_hostname("clinic.localhost"));
    assert!(is_hostname("a-b.c1.example"));
    assert!(is_hostname("localhost"));
    assert!(!is_hostname("Clinic.localhost"));
    assert!(!is_hostname("clinic..localhost"));
    assert!(!is_hostname("-a.b"));
    assert!(!is_hostname("a.b:8080"));
    assert!(!is_hostname(""));
    assert!(!is_hostname(&"a".repeat(64)));
    assert_eq!(
        host_hint("https://Shop.Example.com:8443/app"),
        "a host is lowercase names of letters, digits and `-` separated by dots, without a scheme, port or path, e.g. `shop.example.com`"
    );
}

#[test]
fn overlay_pointers_are_recognised() {
    assert!(in_service_overlay("/environments/prod/services/api"));
    assert!(in_service_overlay(
        "/environments/prod/services/api/scaling/min"
    ));
    assert!(!in_service_overlay("/environments/prod/services"));
    assert!(!in_service_overlay("/environments/prod/host"));
    assert!(!in_service_overlay("/services/api"));
    assert!(within("/a/b", "/a"));
    assert!(within("/a", "/a"));
    assert!(!within("/ab", "/a"));
}
