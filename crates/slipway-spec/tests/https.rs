//! `https:`: the redirect of plain HTTP to HTTPS and HSTS, for every service of the app,
//! per environment, with positioned diagnostics.

mod support;

use slipway_spec::{HttpsSettings, json_schema};
use support::{hint, positions, single, valid, valid_env};

const TWO_SERVICES: &str = "app: a\nservices:\n  web:\n    run: [x]\n  api:\n    run: [y]\n";

#[test]
fn without_https_nothing_changes_and_nothing_is_stored() {
    let spec = valid(TWO_SERVICES);
    for service in spec.services.values() {
        assert_eq!(service.https, HttpsSettings::default());
        // Off, the option is left out of the stored config: older revisions keep their digest.
        let stored = serde_json::to_string(service).unwrap();
        assert!(!stored.contains("https"), "{stored}");
    }
}

#[test]
fn redirect_and_hsts_apply_to_every_service() {
    let spec = valid(&format!(
        "{TWO_SERVICES}https:\n  redirect: true\n  hsts: 365d\n"
    ));
    for service in spec.services.values() {
        assert_eq!(
            service.https,
            HttpsSettings {
                redirect: true,
                hsts_max_age_secs: Some(365 * 24 * 3600),
            }
        );
    }
    let web = &spec.services["web"];
    let stored: slipway_spec::ServiceSpec =
        serde_json::from_str(&serde_json::to_string(web).unwrap()).unwrap();
    assert_eq!(stored.https, web.https);
    assert_ne!(
        stored.digest(),
        valid(TWO_SERVICES).services["web"].digest()
    );
    // `0s` withdraws an earlier policy.
    let spec = valid(&format!("{TWO_SERVICES}https: {{ hsts: 0s }}\n"));
    assert_eq!(spec.services["api"].https.hsts_max_age_secs, Some(0));
    assert!(!spec.services["api"].https.redirect);
}

#[test]
fn an_environment_merges_its_own_https_into_the_apps() {
    let source = format!(
        "{TWO_SERVICES}https: {{ hsts: 1d }}\nenvironments:\n  production:\n    host: a.example.com\n    https: {{ redirect: true }}\n  staging: {{}}\n"
    );
    let production = valid_env(&source, "production");
    assert_eq!(
        production.services["web"].https,
        HttpsSettings {
            redirect: true,
            hsts_max_age_secs: Some(86_400),
        }
    );
    let staging = valid_env(&source, "staging");
    assert_eq!(
        staging.services["web"].https,
        HttpsSettings {
            redirect: false,
            hsts_max_age_secs: Some(86_400),
        }
    );
}

#[test]
fn bad_values_are_reported_where_they_are_written() {
    let d = single(&format!("{TWO_SERVICES}https:\n  hsts: 10\n"), 8, 9);
    assert!(d.message.contains("add a unit"), "{d:?}");
    let d = single(&format!("{TWO_SERVICES}https:\n  hsts: 1y\n"), 8, 9);
    assert!(d.message.contains("unknown unit `y`"), "{d:?}");
    assert!(hint(&d).contains("units are ms, s, m, h and d"), "{d:?}");
    let d = single(
        &format!("{TWO_SERVICES}https:\n  redirect: sometimes\n"),
        8,
        13,
    );
    assert!(d.message.contains("redirect"), "{d:?}");
    let d = single(&format!("{TWO_SERVICES}https:\n  redirct: true\n"), 8, 3);
    assert!(d.message.contains("redirct"), "{d:?}");
    assert!(hint(&d).contains("redirect"), "{d:?}");
    // In an environment's overlay, at the overlay's own line.
    let found = positions(&format!(
        "{TWO_SERVICES}environments:\n  production:\n    https: {{ hsts: forever }}\n"
    ));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].0, found[0].1), (9, 20), "{found:?}");
}

#[test]
fn the_schema_describes_https() {
    let schema = json_schema();
    let https = &schema["definitions"]["HttpsFile"]["properties"];
    assert!(
        https["redirect"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("308")),
        "{https}"
    );
    assert!(https["hsts"].is_object(), "{https}");
}
