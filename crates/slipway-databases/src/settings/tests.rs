//! The diff and the announcement as pure functions; planning and applying against the
//! host's real PostgreSQL 15.

use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::{OsUser, generate_password};

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

#[test]
fn diff_names_added_changed_and_removed_settings_only() {
    let before = map(&[
        ("work_mem", "4MB"),
        ("jit", "off"),
        ("max_connections", "100"),
    ]);
    let after = map(&[("work_mem", "16MB"), ("jit", "off"), ("search_path", "app")]);
    assert_eq!(
        diff(&before, &after),
        vec![
            ("max_connections".to_owned(), Some("100".to_owned()), None),
            ("search_path".to_owned(), None, Some("app".to_owned())),
            (
                "work_mem".to_owned(),
                Some("4MB".to_owned()),
                Some("16MB".to_owned())
            ),
        ]
    );
    assert!(diff(&after, &after).is_empty());
}

#[test]
fn the_announcement_says_reload_or_restart_before_anything_is_done() {
    let plan = SettingsPlan {
        database: "db".into(),
        changes: vec![
            Change {
                name: "max_connections".into(),
                from: Some("100".into()),
                to: Some("200".into()),
                restart: true,
            },
            Change {
                name: "work_mem".into(),
                from: Some("4MB".into()),
                to: None,
                restart: false,
            },
        ],
        running: true,
        settings: BTreeMap::new(),
    };
    assert!(plan.needs_restart());
    assert_eq!(
        plan.describe(),
        vec![
            "database db: max_connections 100 -> 200 needs a restart: the app's connections drop for about 2 s",
            "database db: work_mem 4MB -> (default) is applied in place (no connection drops)",
        ]
    );
    // A stopped database restarts nobody: it reads the file when it starts.
    let stopped = SettingsPlan {
        running: false,
        ..plan
    };
    assert!(!stopped.needs_restart());
    assert_eq!(
        stopped.describe()[0],
        "database db: max_connections 100 -> 200 takes effect when the database starts (it is stopped)"
    );
}

#[test]
fn the_file_round_trips_quotes_and_all() {
    let settings = map(&[("search_path", "\"$user\", app's"), ("work_mem", "16MB")]);
    let text = render(&settings);
    assert!(
        text.contains("search_path = '\"$user\", app''s'\n"),
        "{text}"
    );
    assert_eq!(parse(&text), settings);
}

#[test]
fn the_server_message_keeps_postgresqls_words_only() {
    let out = "2026-12-06 09:05:03.899 UTC [19928] LOG:  invalid value for parameter \"work_mem\": \"16XB\"\n2026-12-06 09:05:03.899 UTC [19928] HINT:  Valid units for this parameter are \"B\", \"kB\".\n2026-12-06 09:05:03.899 UTC [19928] FATAL:  configuration file \"/x/slipway.settings.conf\" contains errors\n";
    assert_eq!(
        server_message(out),
        "invalid value for parameter \"work_mem\": \"16XB\" / HINT: Valid units for this parameter are \"B\", \"kB\"."
    );
    assert_eq!(
        server_message(
            "2026-12-06 09:05:03.899 UTC [1] FATAL:  unrecognized configuration parameter \"x\"\n"
        ),
        "unrecognized configuration parameter \"x\""
    );
}

/// A running cluster in a temporary folder, stopped when dropped.
struct Cluster {
    pg: Postgres,
    _tmp: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.pg.stop();
    }
}

fn cluster(settings: &BTreeMap<String, String>) -> Cluster {
    let tmp = tempfile::tempdir().unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o711)).unwrap();
    let user = OsUser::for_databases().unwrap();
    let pg = Postgres::open(&tmp.path().join("db"), "db", Some("15"), user).unwrap();
    pg.ensure_with_settings(&generate_password().unwrap(), settings)
        .unwrap();
    Cluster { pg, _tmp: tmp }
}

fn show(pg: &Postgres, name: &str) -> String {
    pg.psql_admin("postgres", &format!("SHOW {name};"), &[])
        .unwrap()
        .trim()
        .to_owned()
}

fn postmaster_pid(pg: &Postgres) -> String {
    let text = fs::read_to_string(pg.data_dir().join("postmaster.pid")).unwrap();
    text.lines().next().unwrap().to_owned()
}

#[test]
fn a_new_cluster_starts_with_its_settings_and_a_reload_changes_them_in_place() {
    let c = cluster(&map(&[("work_mem", "8MB")]));
    assert_eq!(show(&c.pg, "work_mem"), "8MB");
    let pid = postmaster_pid(&c.pg);

    // Same value in other words: nothing to do.
    let same = c.pg.plan_settings(&map(&[("work_mem", "8192kB")])).unwrap();
    assert!(same.is_empty(), "{same:?}");

    let plan = c.pg.plan_settings(&map(&[("work_mem", "16MB")])).unwrap();
    assert_eq!(
        plan.changes,
        vec![Change {
            name: "work_mem".into(),
            from: Some("8MB".into()),
            to: Some("16MB".into()),
            restart: false,
        }]
    );
    // Planning changed nothing.
    assert_eq!(show(&c.pg, "work_mem"), "8MB");
    assert_eq!(
        c.pg.written_settings().unwrap(),
        map(&[("work_mem", "8MB")])
    );
    assert_eq!(c.pg.apply_settings(&plan).unwrap(), Applied::Reloaded);
    assert_eq!(show(&c.pg, "work_mem"), "16MB");
    assert_eq!(postmaster_pid(&c.pg), pid, "a reload keeps the postmaster");
}

#[test]
fn a_change_that_needs_a_restart_is_planned_as_one_and_restarts() {
    let c = cluster(&BTreeMap::new());
    let pid = postmaster_pid(&c.pg);
    let plan =
        c.pg.plan_settings(&map(&[("max_connections", "200"), ("work_mem", "16MB")]))
            .unwrap();
    assert!(plan.needs_restart());
    let restart: Vec<(&str, bool)> = plan
        .changes
        .iter()
        .map(|c| (c.name.as_str(), c.restart))
        .collect();
    assert_eq!(
        restart,
        vec![("max_connections", true), ("work_mem", false)]
    );
    assert_eq!(show(&c.pg, "max_connections"), "100");
    assert!(matches!(
        c.pg.apply_settings(&plan).unwrap(),
        Applied::Restarted { .. }
    ));
    assert_eq!(show(&c.pg, "max_connections"), "200");
    assert_ne!(postmaster_pid(&c.pg), pid);
    let effective = c.pg.effective_settings().unwrap();
    assert_eq!(
        effective[0],
        Effective {
            name: "max_connections".into(),
            value: "200".into(),
            now: Some("200".into()),
            pending_restart: false,
        }
    );

    // Removing it goes back to postgresql.conf's value, again by a restart.
    let back = c.pg.plan_settings(&map(&[("work_mem", "16MB")])).unwrap();
    assert_eq!(back.changes.len(), 1);
    assert_eq!(back.changes[0].to, None);
    assert!(back.needs_restart());
}

#[test]
fn an_invalid_value_is_refused_with_postgresqls_message_and_nothing_changes() {
    let c = cluster(&map(&[("work_mem", "8MB")]));
    let before = fs::read_to_string(c.pg.settings_file()).unwrap();
    let error =
        c.pg.plan_settings(&map(&[("work_mem", "16XB")]))
            .unwrap_err()
            .to_string();
    assert!(
        error.contains("invalid value for parameter \"work_mem\": \"16XB\""),
        "{error}"
    );
    assert!(error.contains("Valid units for this parameter"), "{error}");
    assert_eq!(fs::read_to_string(c.pg.settings_file()).unwrap(), before);
    assert_eq!(show(&c.pg, "work_mem"), "8MB");

    let error =
        c.pg.plan_settings(&map(&[("no_such_setting", "1")]))
            .unwrap_err()
            .to_string();
    assert!(
        error.contains("unrecognized configuration parameter \"no_such_setting\""),
        "{error}"
    );
    assert_eq!(fs::read_to_string(c.pg.settings_file()).unwrap(), before);

    // A new cluster with an invalid value is refused before it ever starts.
    let tmp = tempfile::tempdir().unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o711)).unwrap();
    let pg = Postgres::open(
        &tmp.path().join("db"),
        "db",
        Some("15"),
        OsUser::for_databases().unwrap(),
    )
    .unwrap();
    let error = pg
        .ensure_with_settings("x", &map(&[("shared_buffers", "1")]))
        .unwrap_err()
        .to_string();
    assert!(error.contains("outside the valid range"), "{error}");
    assert!(!pg.running().unwrap());
    assert!(!pg.settings_file().exists());
}

#[test]
fn the_redis_file_round_trips_quotes_and_backslashes() {
    let settings = map(&[("notify-keyspace-events", "Ex\\\"q"), ("save", "3600 1")]);
    let text = render_redis(&settings);
    assert!(text.contains("save \"3600 1\"\n"), "{text}");
    assert_eq!(parse_redis(&text), settings);
}

/// A running Redis in a temporary folder, stopped when dropped.
struct RedisServer {
    redis: crate::Redis,
    password: String,
    _tmp: tempfile::TempDir,
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.redis.stop();
    }
}

fn redis_server(settings: &BTreeMap<String, String>) -> RedisServer {
    let tmp = tempfile::tempdir().unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o711)).unwrap();
    let user = OsUser::for_databases().unwrap();
    let redis = crate::Redis::open(&tmp.path().join("cache"), "cache", None, user).unwrap();
    let password = generate_password().unwrap();
    redis.ensure_with_settings(&password, settings).unwrap();
    RedisServer {
        redis,
        password,
        _tmp: tmp,
    }
}

fn config_get(r: &RedisServer, name: &str) -> String {
    match r
        .redis
        .command(&r.password, &[b"CONFIG", b"GET", name.as_bytes()])
        .unwrap()
    {
        crate::Reply::Array(pair) => match &pair[1] {
            crate::Reply::Bulk(Some(v)) => String::from_utf8_lossy(v).into_owned(),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

fn redis_pid(r: &RedisServer) -> String {
    fs::read_to_string(r._tmp.path().join("cache/redis.pid")).unwrap()
}

#[test]
fn redis_settings_change_in_place_and_a_refused_value_changes_nothing() {
    let r = redis_server(&map(&[("maxmemory-policy", "allkeys-lru")]));
    assert_eq!(config_get(&r, "maxmemory-policy"), "allkeys-lru");
    let pid = redis_pid(&r);

    let plan = r
        .redis
        .plan_settings(
            &r.password,
            &map(&[("maxmemory-policy", "volatile-lru"), ("maxmemory", "100mb")]),
        )
        .unwrap();
    assert!(!plan.needs_restart(), "{plan:?}");
    assert_eq!(
        plan.describe(),
        vec![
            "database cache: maxmemory 0 -> 100mb is applied in place (no connection drops)",
            "database cache: maxmemory-policy allkeys-lru -> volatile-lru is applied in place (no connection drops)",
        ]
    );
    assert_eq!(
        config_get(&r, "maxmemory-policy"),
        "allkeys-lru",
        "planning changed it"
    );
    assert_eq!(
        r.redis.apply_settings(&r.password, &plan).unwrap(),
        Applied::Reloaded
    );
    assert_eq!(config_get(&r, "maxmemory-policy"), "volatile-lru");
    assert_eq!(config_get(&r, "maxmemory"), "104857600");
    assert_eq!(redis_pid(&r), pid, "changed in place");

    // Redis refuses a value; neither setting changes, nor the file.
    let before = fs::read_to_string(r.redis.settings_file()).unwrap();
    let plan = r
        .redis
        .plan_settings(
            &r.password,
            &map(&[("maxmemory-policy", "bogus"), ("maxmemory", "200mb")]),
        )
        .unwrap();
    let error = r
        .redis
        .apply_settings(&r.password, &plan)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("argument(s) must be one of the following"),
        "{error}"
    );
    assert_eq!(config_get(&r, "maxmemory"), "104857600");
    assert_eq!(fs::read_to_string(r.redis.settings_file()).unwrap(), before);

    // A setting Redis reads only at start is planned as a restart; an unknown one is refused.
    let plan = r
        .redis
        .plan_settings(
            &r.password,
            &map(&[
                ("maxmemory-policy", "volatile-lru"),
                ("maxmemory", "100mb"),
                ("databases", "32"),
            ]),
        )
        .unwrap();
    assert!(plan.needs_restart(), "{plan:?}");
    assert!(matches!(
        r.redis.apply_settings(&r.password, &plan).unwrap(),
        Applied::Restarted { .. }
    ));
    assert_eq!(config_get(&r, "databases"), "32");
    assert_ne!(redis_pid(&r), pid);
    let error = r
        .redis
        .plan_settings(&r.password, &map(&[("no-such-setting", "1")]))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("Redis does not know the setting `no-such-setting`"),
        "{error}"
    );
}
