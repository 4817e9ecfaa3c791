//! `databases:` and `uses:`: managed databases declared once, used by services, their URL in a
//! variable each.

mod support;

use slipway_spec::{DatabaseSpec, Engine};
use support::{hint, positions, single, valid, valid_env};

const BASE: &str = "\
app: a
databases:
  db: { engine: postgres, version: \"15\" }
  other: { engine: postgres, env: OTHER_URL }
services:
  web:
    run: [x]
    uses: [db, other]
";

#[test]
fn used_databases_resolve_with_their_variable_and_version() {
    let spec = valid(BASE);
    assert_eq!(
        spec.databases["db"],
        DatabaseSpec {
            engine: Engine::Postgres,
            version: Some("15".into()),
            env: "DATABASE_URL".into(),
            backups: None,
        }
    );
    let uses = &spec.services["web"].uses;
    assert_eq!(uses.len(), 2);
    assert_eq!(
        (uses[0].name.as_str(), uses[0].database.env.as_str()),
        ("db", "DATABASE_URL")
    );
    assert_eq!(
        (uses[1].name.as_str(), uses[1].database.env.as_str()),
        ("other", "OTHER_URL")
    );
    assert_eq!(uses[1].database.version, None);
    // A number is a version too.
    let numeric = valid(
        "app: a\ndatabases: { db: { engine: postgres, version: 15 } }\nservices: { web: { run: [x], uses: [db] } }\n",
    );
    assert_eq!(numeric.databases["db"].version.as_deref(), Some("15"));
}

#[test]
fn redis_goes_in_redis_url_beside_postgres_in_database_url() {
    let spec = valid(
        "app: a\ndatabases: { db: { engine: postgres }, cache: { engine: redis } }\nservices: { web: { run: [x], uses: [db, cache] } }\n",
    );
    let uses = &spec.services["web"].uses;
    assert_eq!(uses[1].database.engine, Engine::Redis);
    assert_eq!(uses[1].database.env, "REDIS_URL");
    assert_eq!(uses[0].database.env, "DATABASE_URL");
}

#[test]
fn backups_apply_to_every_database_with_their_defaults() {
    use slipway_spec::BackupPolicy;
    use std::time::Duration;
    let spec = valid(
        "app: a\ndatabases: { db: { engine: postgres } }\nbackups: { every: 6h }\nservices: { web: { run: [x], uses: [db] } }\n",
    );
    assert_eq!(
        spec.databases["db"].backups,
        Some(BackupPolicy {
            every: Duration::from_secs(6 * 3600),
            keep: 14
        })
    );
    assert_eq!(
        spec.services["web"].uses[0].database.backups,
        spec.databases["db"].backups
    );
    let none =
        valid("app: a\ndatabases: { db: { engine: postgres } }\nservices: { web: { run: [x] } }\n");
    assert_eq!(none.databases["db"].backups, None);
    let zero = single(
        "app: a\ndatabases: { db: { engine: postgres } }\nbackups: { every: 0s, keep: 3 }\nservices: { web: { run: [x] } }\n",
        3,
        19,
    );
    assert!(zero.message.contains("more than 0"), "{zero:?}");
    let found = positions("app: a\nbackups: { keep: 0 }\nservices: { web: { run: [x] } }\n");
    assert_eq!((found[0].0, found[0].1), (2, 18), "{found:#?}");
}

#[test]
fn a_service_without_uses_keeps_its_digest() {
    let with_db =
        valid("app: a\ndatabases: { db: { engine: postgres } }\nservices: { web: { run: [x] } }\n");
    let without = valid("app: a\nservices: { web: { run: [x] } }\n");
    assert_eq!(
        with_db.services["web"].digest(),
        without.services["web"].digest()
    );
}

#[test]
fn an_undeclared_database_is_named_at_its_entry() {
    let source = "app: a\ndatabases: { db: { engine: postgres } }\nservices:\n  web:\n    run: [x]\n    uses: [db, cache]\n";
    let problem = single(source, 6, 16);
    assert!(
        problem
            .message
            .contains("uses database `cache`, which is not declared"),
        "{problem:?}"
    );
    assert!(
        hint(&problem).contains("the declared databases are: db"),
        "{problem:?}"
    );
}

#[test]
fn two_databases_in_one_variable_and_a_variable_also_in_env_are_refused() {
    let source = "\
app: a
databases:
  one: { engine: postgres }
  two: { engine: postgres }
services:
  web:
    run: [x]
    env: { DATABASE_URL: x }
    uses: [one, two, one]
";
    let found = positions(source);
    assert!(
        found
            .iter()
            .any(|(l, c, m)| (*l, *c) == (8, 12)
                && m.contains("also carries the URL of database `one`")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|(l, c, m)| (*l, *c) == (9, 17) && m.contains("would both set `DATABASE_URL`")),
        "{found:#?}"
    );
    assert!(
        found
            .iter()
            .any(|(l, c, m)| (*l, *c) == (9, 22) && m.contains("listed twice")),
        "{found:#?}"
    );
}

#[test]
fn engines_versions_and_unknown_keys_are_checked_by_the_schema() {
    let found = positions(
        "app: a\ndatabases:\n  db: { engine: mysql, version: \"15.2\", size: 1 }\nservices: { web: { run: [x] } }\n",
    );
    assert_eq!(found.len(), 3, "{found:#?}");
    assert_eq!((found[0].0, found[0].1), (3, 17), "{found:#?}");
    assert_eq!((found[1].0, found[1].1), (3, 33), "{found:#?}");
    assert!(found[2].2.contains("size"), "{found:#?}");
}

#[test]
fn an_environment_may_change_what_a_service_uses() {
    let source = "\
app: a
databases: { db: { engine: postgres } }
services: { web: { run: [x], uses: [db] } }
environments:
  staging: { services: { web: { uses: [] } } }
";
    assert_eq!(valid_env(source, "staging").services["web"].uses, vec![]);
    assert_eq!(valid(source).services["web"].uses.len(), 1);
}
