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
            settings: Default::default(),
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

#[test]
fn settings_resolve_to_the_text_each_engine_reads() {
    let spec = valid(
        "app: a\ndatabases:\n  db:\n    engine: postgres\n    settings: { max_connections: 200, work_mem: 16MB, jit: false, auto_explain.log_min_duration: 250ms }\n  cache:\n    engine: redis\n    settings: { maxmemory: 100mb, maxmemory-policy: allkeys-lru, lazyfree-lazy-eviction: true }\nservices: { web: { run: [x], uses: [db, cache] } }\n",
    );
    let db = &spec.databases["db"].settings;
    assert_eq!(db["max_connections"], "200");
    assert_eq!(db["work_mem"], "16MB");
    assert_eq!(db["jit"], "off");
    assert_eq!(db["auto_explain.log_min_duration"], "250ms");
    let cache = &spec.databases["cache"].settings;
    assert_eq!(cache["maxmemory-policy"], "allkeys-lru");
    assert_eq!(cache["lazyfree-lazy-eviction"], "yes");
    // The revision of a service that uses the database carries them: a change is a deploy.
    assert_eq!(spec.services["web"].uses[0].database.settings, *db);
}

#[test]
fn settings_change_the_digest_of_the_services_that_use_the_database() {
    let without = valid(BASE);
    let with = valid(&BASE.replace(
        "db: { engine: postgres, version: \"15\" }",
        "db: { engine: postgres, version: \"15\", settings: { work_mem: 16MB } }",
    ));
    assert_ne!(
        without.services["web"].digest(),
        with.services["web"].digest()
    );
    // No settings: the JSON, hence the digest, is what it was before settings existed.
    let json = serde_json::to_string(&without.databases["db"]).expect("json");
    assert!(!json.contains("settings"), "{json}");
}

#[test]
fn a_setting_slipway_owns_is_refused_with_the_reason() {
    let d = single(
        "app: a\ndatabases:\n  db:\n    engine: postgres\n    settings:\n      listen_addresses: '*'\nservices: { web: { run: [x], uses: [db] } }\n",
        6,
        7,
    );
    assert_eq!(
        d.message,
        "`listen_addresses` of database `db` is set by Slipway: the database listens on a Unix socket only, never on TCP"
    );
    assert_eq!(
        hint(&d),
        "remove `listen_addresses` from `databases.db.settings`"
    );
    let d = single(
        "app: a\ndatabases:\n  cache:\n    engine: redis\n    settings: { requirepass: x }\nservices: { web: { run: [x], uses: [cache] } }\n",
        5,
        17,
    );
    assert!(
        d.message
            .contains("`requirepass` of database `cache` is set by Slipway"),
        "{}",
        d.message
    );
}

#[test]
fn implausible_names_and_values_are_refused_where_they_are() {
    let d = single(
        "app: a\ndatabases:\n  db:\n    engine: postgres\n    settings:\n      Work-Mem: 16MB\nservices: { web: { run: [x], uses: [db] } }\n",
        6,
        7,
    );
    assert_eq!(
        d.message,
        "`Work-Mem` is not a PostgreSQL setting name (database `db`)"
    );
    assert!(hint(&d).contains("e.g. `work_mem`"), "{}", hint(&d));
    let d = single(
        "app: a\ndatabases:\n  cache:\n    engine: redis\n    settings:\n      max_memory: 1mb\nservices: { web: { run: [x], uses: [cache] } }\n",
        6,
        7,
    );
    assert_eq!(
        d.message,
        "`max_memory` is not a Redis setting name (database `cache`)"
    );
    let d = single(
        "app: a\ndatabases:\n  db:\n    engine: postgres\n    settings:\n      search_path: \"a\\nb\"\nservices: { web: { run: [x], uses: [db] } }\n",
        6,
        20,
    );
    assert!(d.message.contains("has a line break"), "{}", d.message);
    // A list or a map is not a setting's value: the schema says so, at the value.
    let found = positions(
        "app: a\ndatabases:\n  db:\n    engine: postgres\n    settings:\n      work_mem: [1, 2]\nservices: { web: { run: [x], uses: [db] } }\n",
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].0, found[0].1), (6, 17), "{found:?}");
}

const PER_ENVIRONMENT: &str = "\
app: a
databases:
  db: { engine: postgres, settings: { work_mem: 8MB, max_connections: 100 } }
services:
  web: { run: [x], uses: [db] }
environments:
  staging: {}
  production:
    databases:
      db: { settings: { max_connections: 300 } }
";

#[test]
fn an_environment_changes_a_databases_settings_name_by_name() {
    let production = valid_env(PER_ENVIRONMENT, "production");
    let db = &production.databases["db"].settings;
    assert_eq!(db["max_connections"], "300");
    assert_eq!(db["work_mem"], "8MB", "the base's other settings stay");
    assert_eq!(production.services["web"].uses[0].database.settings, *db);
    let staging = valid_env(PER_ENVIRONMENT, "staging");
    assert_eq!(staging.databases["db"].settings["max_connections"], "100");
}

#[test]
fn an_environments_database_overlay_is_checked_where_it_is_written() {
    let d = single(
        &PER_ENVIRONMENT.replace("      db: { settings", "      dbb: { settings"),
        10,
        7,
    );
    assert_eq!(
        d.message,
        "environment `production` changes database `dbb`, which is not declared under `databases`"
    );
    assert_eq!(hint(&d), "did you mean `db`?");
    let d = single(
        &PER_ENVIRONMENT.replace("max_connections: 300", "port: 5433"),
        10,
        25,
    );
    assert_eq!(
        d.message,
        "`port` of database `db` is set by Slipway: the socket's name carries the port Slipway chose (in environment `production`)"
    );
    // Only settings may differ between environments.
    let found = positions(&PER_ENVIRONMENT.replace("{ settings:", "{ engine: redis, settings:"));
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].0, 10, "{found:?}");
}
