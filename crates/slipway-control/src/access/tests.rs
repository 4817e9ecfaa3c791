//! The role/route policy, as a table: each class of route against each role, with and
//! without environments; and every operation of the API document has the class it should.

use super::*;

fn class(method: Method, path: &str) -> Class {
    let (path, query) = path
        .split_once('?')
        .map_or((path, None), |(p, q)| (p, Some(q)));
    classify(&method, path, query)
}

fn read(env: &str) -> Class {
    Class::Read {
        environment: Some(env.into()),
    }
}

fn deploy(env: &str) -> Class {
    Class::Deploy {
        environment: env.into(),
    }
}

fn not_an_app(needs: Role) -> Class {
    Class::NotAnApp { needs }
}

#[test]
fn routes_fall_into_their_classes() {
    use Method as M;
    let cases = [
        (M::GET, "/healthz", Class::Open),
        (M::GET, "/", Class::Open),
        (M::GET, "/dashboard/app.js", Class::Open),
        (M::GET, "/metrics", Class::Metrics),
        (M::GET, "/v1/server", Class::Info),
        (M::GET, "/v1/openapi.json", Class::Info),
        (M::GET, "/v1/apps", Class::AppList),
        (M::GET, "/v1/apps/clinic", read("development")),
        (M::HEAD, "/v1/apps/clinic@staging", read("staging")),
        (
            M::GET,
            "/v1/apps/clinic%40staging/services/api/logs",
            read("staging"),
        ),
        (
            M::GET,
            "/v1/apps/clinic/services/api/revisions",
            read("development"),
        ),
        (M::GET, "/v1/apps/clinic@prod/backups", read("prod")),
        (M::GET, "/v1/events?app=clinic@prod&limit=5", read("prod")),
        (M::GET, "/v1/events/stream?app=clinic", read("development")),
        (M::GET, "/v1/events", Class::Read { environment: None }),
        // Two `app`s: which one the handler takes is not for the gate to guess.
        (
            M::GET,
            "/v1/events?app=a@x&app=a@y",
            Class::Read { environment: None },
        ),
        (M::POST, "/v1/apps/clinic@prod/deploy", deploy("prod")),
        (M::POST, "/v1/apps/clinic@prod/down", deploy("prod")),
        (
            M::POST,
            "/v1/apps/clinic@prod/services/api/rollback",
            deploy("prod"),
        ),
        (
            M::POST,
            "/v1/apps/clinic@prod/services/api/traffic",
            deploy("prod"),
        ),
        (
            M::POST,
            "/v1/apps/clinic@prod/services/api/rollout/pause",
            deploy("prod"),
        ),
        (
            M::POST,
            "/v1/apps/clinic@prod/backups/b1/verify",
            deploy("prod"),
        ),
        (M::GET, "/v1/apps/clinic/secrets", Class::Admin),
        (M::PUT, "/v1/apps/clinic/secrets/KEY", Class::Admin),
        (
            M::GET,
            "/v1/apps/clinic/databases/db/connection",
            Class::Admin,
        ),
        (M::POST, "/v1/apps/clinic/backups/b1/restore", Class::Admin),
        (M::POST, "/v1/apps/clinic/services/api/runs", Class::Admin),
        (M::POST, "/v1/apps", Class::Admin),
        (M::POST, "/v1/server/stop", Class::Admin),
        (M::GET, "/v1/tokens", Class::Admin),
        (M::DELETE, "/v1/tokens/ci", Class::Admin),
        // Unknown routes are the administrator's until they are classified.
        (M::GET, "/v1/something/new", Class::Admin),
        (M::POST, "/healthz", Class::Admin),
        (M::GET, "/v1/apps/clinic/deploy", Class::Admin),
        // Text that is no app key names no environment.
        (M::GET, "/v1/apps/Clinic", not_an_app(Role::Viewer)),
        (
            M::GET,
            "/v1/apps/clinic@development/services/api/logs",
            not_an_app(Role::Viewer),
        ),
        (M::GET, "/v1/events?app=", not_an_app(Role::Viewer)),
        (M::GET, "/v1/events?app=a%40B", not_an_app(Role::Viewer)),
        (
            M::POST,
            "/v1/apps/clinic@prod@eu/deploy",
            not_an_app(Role::Deployer),
        ),
    ];
    for (method, path, expected) in cases {
        assert_eq!(class(method.clone(), path), expected, "{method} {path}");
    }
}

/// What each role may do, per class: allowed (true) or 403 (false).
#[test]
fn each_role_is_allowed_exactly_its_classes() {
    let classes = [
        ("info", Class::Info),
        ("app list", Class::AppList),
        ("metrics", Class::Metrics),
        ("read", read("staging")),
        ("read all", Class::Read { environment: None }),
        ("deploy", deploy("staging")),
        ("admin", Class::Admin),
        ("read no app", not_an_app(Role::Viewer)),
        ("deploy no app", not_an_app(Role::Deployer)),
    ];
    #[rustfmt::skip]
    let table: [(Role, [bool; 9]); 4] = [
        //                 info   list   metric read   all    deploy admin  read?  deploy?
        (Role::Metrics,  [false, false, true,  false, false, false, false, false, false]),
        (Role::Viewer,   [true,  true,  true,  true,  true,  false, false, true,  false]),
        (Role::Deployer, [true,  true,  true,  true,  true,  true,  false, true,  true]),
        (Role::Admin,    [true,  true,  true,  true,  true,  true,  true,  true,  true]),
    ];
    for (role, allowed) in table {
        for ((name, class), expected) in classes.iter().zip(allowed) {
            let got = authorize(role, &[], class);
            assert_eq!(got.is_ok(), expected, "{role} on {name}: {got:?}");
        }
        assert!(authorize(role, &[], &Class::Open).is_ok());
    }
}

#[test]
fn environments_limit_reads_and_deploys_to_themselves() {
    let staging = vec!["staging".to_owned()];
    for role in [Role::Viewer, Role::Deployer] {
        assert!(authorize(role, &staging, &read("staging")).is_ok());
        let Err(Denied(why)) = authorize(role, &staging, &read("production")) else {
            panic!("{role} read production")
        };
        assert!(why.contains("limited to the environments staging"), "{why}");
        assert!(authorize(role, &staging, &Class::Read { environment: None }).is_err());
        assert!(authorize(role, &staging, &Class::Metrics).is_err());
        assert!(authorize(role, &staging, &Class::Info).is_ok());
        assert!(authorize(role, &staging, &Class::AppList).is_ok());
    }
    assert!(authorize(Role::Deployer, &staging, &deploy("staging")).is_ok());
    assert!(authorize(Role::Deployer, &staging, &deploy("production")).is_err());
    let Err(Denied(why)) = authorize(Role::Viewer, &staging, &deploy("staging")) else {
        panic!("a viewer deployed")
    };
    assert!(why.contains("needs the deployer role"), "{why}");
    // A key that names no environment is none of a limited token's.
    for role in [Role::Viewer, Role::Deployer, Role::Admin] {
        let Err(Denied(why)) = authorize(role, &staging, &not_an_app(Role::Viewer)) else {
            panic!("{role} read what is no app")
        };
        assert!(why.contains("names no app in any environment"), "{why}");
    }
}

#[test]
fn the_caller_sees_its_environments() {
    assert!(Caller::Local.sees("production"));
    assert_eq!(Caller::Local.actor(), "local");
    let ci = Caller::Token {
        name: "ci".into(),
        role: Role::Deployer,
        environments: vec!["staging".into()],
    };
    assert_eq!(ci.actor(), "ci");
    assert!(ci.sees("staging") && !ci.sees("production"));
}

#[test]
fn roles_parse_from_their_names_only() {
    for role in Role::ALL {
        assert_eq!(Role::parse(role.as_str()), Ok(role));
    }
    let err = Role::parse("root").unwrap_err();
    assert!(err.contains("viewer, deployer, admin and metrics"), "{err}");
}

/// Every operation the API document lists gets the class its description calls for: reads
/// of an app are reads in its environment, and no documented operation is left to the
/// `Admin` default by accident (the exceptions are named).
#[test]
fn every_documented_operation_is_classified_on_purpose() {
    let admin_on_purpose = [
        "POST /v1/server/stop",
        "POST /v1/server/backup",
        "POST /v1/apps",
        "GET /v1/apps/{app}/secrets",
        "PUT /v1/apps/{app}/secrets/{name}",
        "DELETE /v1/apps/{app}/secrets/{name}",
        "GET /v1/apps/{app}/databases/{name}/connection",
        "POST /v1/apps/{app}/backups/{id}/restore",
        "POST /v1/apps/{app}/databases/{name}/upgrade",
        "POST /v1/apps/{app}/services/{service}/runs",
        "POST /v1/apps/{app}/services/{service}/runs/finished",
        "POST /v1/tokens",
        "GET /v1/tokens",
        "DELETE /v1/tokens/{name}",
    ];
    let doc = serde_json::to_value(crate::api::openapi_document()).unwrap();
    let mut seen = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let label = format!("{} {path}", method.to_uppercase());
            let concrete = path
                .replace("{app}", "clinic@staging")
                .replace("{service}", "api")
                .replace("{name}", "x")
                .replace("{id}", "b1")
                .replace("{action}", "pause");
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let got = class(method.clone(), &concrete);
            let expected = if admin_on_purpose.contains(&label.as_str()) {
                Class::Admin
            } else if path.contains("{app}") && method == Method::GET {
                read("staging")
            } else if path.contains("{app}") {
                deploy("staging")
            } else if path == "/v1/apps" {
                Class::AppList
            } else if path == "/v1/server" || path == "/v1/openapi.json" {
                Class::Info
            } else {
                Class::Read { environment: None }
            };
            assert_eq!(got, expected, "{label}");
            seen += 1;
        }
    }
    assert!(seen > 30, "only {seen} operations in the document");
}
