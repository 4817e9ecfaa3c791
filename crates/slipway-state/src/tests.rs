//! Unit tests of the store against real SQLite files in temporary directories.

use super::*;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.db")).unwrap();
    (dir, store)
}

fn ready_revision(s: &Store, app: &str, svc: &str) -> u64 {
    let n = s.create_revision(app, svc, "abc", "{}", "test").unwrap();
    s.set_revision_state(app, svc, n, RevisionState::Ready, "ready")
        .unwrap();
    n
}

#[test]
fn revisions_are_numbered_per_service_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let s = Store::open(&path).unwrap();
        s.upsert_app("clinic", "/x/slipway.yaml", &["api", "web"])
            .unwrap();
        assert_eq!(
            s.create_revision("clinic", "api", "d1", "{}", "t").unwrap(),
            1
        );
        assert_eq!(
            s.create_revision("clinic", "api", "d2", "{}", "t").unwrap(),
            2
        );
        assert_eq!(
            s.create_revision("clinic", "web", "d3", "{}", "t").unwrap(),
            1
        );
        s.set_revision_state("clinic", "api", 1, RevisionState::Ready, "ok")
            .unwrap();
        s.set_traffic(
            "clinic",
            "api",
            &[TrafficTarget {
                revision: 1,
                percent: 100,
            }],
            "deploy",
        )
        .unwrap();
    }
    let s = Store::open(&path).unwrap();
    let revs = s.revisions("clinic", "api").unwrap();
    assert_eq!(revs.len(), 2);
    assert_eq!(revs[0].state, RevisionState::Ready);
    assert_eq!(revs[1].state, RevisionState::Deploying);
    assert_eq!(revs[1].digest, "d2");
    assert_eq!(
        s.traffic("clinic", "api").unwrap(),
        vec![TrafficTarget {
            revision: 1,
            percent: 100
        }]
    );
    assert_eq!(s.services("clinic").unwrap(), vec!["api", "web"]);
    assert_eq!(
        s.revisions_in_state(RevisionState::Deploying)
            .unwrap()
            .len(),
        2
    );
}

#[test]
fn traffic_must_sum_to_100_and_point_at_ready_revisions() {
    let (_d, s) = store();
    s.upsert_app("a", "p", &["svc"]).unwrap();
    let r1 = ready_revision(&s, "a", "svc");
    let r2 = s.create_revision("a", "svc", "x", "{}", "t").unwrap();
    let err = s
        .set_traffic(
            "a",
            "svc",
            &[TrafficTarget {
                revision: r1,
                percent: 90,
            }],
            "m",
        )
        .unwrap_err();
    assert!(err.to_string().contains("sum to 100%, got 90%"), "{err}");
    let err = s
        .set_traffic(
            "a",
            "svc",
            &[TrafficTarget {
                revision: r2,
                percent: 100,
            }],
            "m",
        )
        .unwrap_err();
    assert!(err.to_string().contains("is deploying"), "{err}");
    let err = s
        .set_traffic(
            "a",
            "svc",
            &[TrafficTarget {
                revision: 9,
                percent: 100,
            }],
            "m",
        )
        .unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    // A rejected change leaves the previous traffic untouched.
    assert!(s.traffic("a", "svc").unwrap().is_empty());
}

#[test]
fn every_state_change_is_an_event_in_the_same_transaction() {
    let (_d, s) = store();
    s.upsert_app("a", "p", &["svc"]).unwrap();
    let r1 = ready_revision(&s, "a", "svc");
    s.set_traffic(
        "a",
        "svc",
        &[TrafficTarget {
            revision: r1,
            percent: 100,
        }],
        "deploy finished",
    )
    .unwrap();
    let kinds: Vec<String> = s
        .events(&EventFilter::default())
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            "app.registered",
            "revision.created",
            "revision.ready",
            "traffic.changed"
        ]
    );
    let last = s.events(&EventFilter::default()).unwrap().pop().unwrap();
    assert_eq!(last.message, "deploy finished: r1=100%");
    assert_eq!(last.revision, Some(1));
}

#[test]
fn events_paginate_with_after_and_limit() {
    let (_d, s) = store();
    s.upsert_app("a", "p", &[]).unwrap();
    for i in 0..10 {
        s.add_event(&NewEvent {
            app: "a",
            service: None,
            revision: None,
            kind: slipway_core::events::EventKind::AppUp,
            message: format!("e{i}"),
        })
        .unwrap();
    }
    let newest = s
        .events(&EventFilter {
            limit: Some(3),
            ..Default::default()
        })
        .unwrap();
    let msgs: Vec<_> = newest.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(msgs, ["e7", "e8", "e9"]);
    let page = s
        .events(&EventFilter {
            after: Some(newest[0].id - 3),
            limit: Some(2),
            ..Default::default()
        })
        .unwrap();
    let msgs: Vec<_> = page.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(msgs, ["e5", "e6"]);
}

#[test]
fn foreign_and_corrupt_files_are_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.db");
    std::fs::write(
        &junk,
        b"this is not a database, just some text ...............",
    )
    .unwrap();
    let err = Store::open(&junk).err().unwrap();
    assert!(
        err.to_string().contains("is not a Slipway state database"),
        "{err}"
    );

    let other = dir.path().join("other.db");
    {
        let c = Connection::open(&other).unwrap();
        c.execute("CREATE TABLE users(id INTEGER)", []).unwrap();
    }
    let err = Store::open(&other).err().unwrap();
    assert!(err.to_string().contains("other tables: users"), "{err}");
}

#[test]
fn instances_are_recorded_and_forgotten() {
    let (_d, s) = store();
    let row = InstanceRow {
        id: "api-r1-x".into(),
        app: "a".into(),
        service: "api".into(),
        revision: 1,
        pid: 42,
        start_ticks: 7,
        port: 4000,
        started_at: now(),
    };
    s.record_instance(&row).unwrap();
    assert_eq!(s.instances().unwrap(), vec![row]);
    s.forget_instance("api-r1-x").unwrap();
    assert!(s.instances().unwrap().is_empty());
}

#[test]
fn removed_services_keep_history_and_lose_traffic() {
    let (_d, s) = store();
    s.upsert_app("a", "p", &["api", "old"]).unwrap();
    let r = ready_revision(&s, "a", "old");
    s.set_traffic(
        "a",
        "old",
        &[TrafficTarget {
            revision: r,
            percent: 100,
        }],
        "m",
    )
    .unwrap();
    s.remove_service("a", "old").unwrap();
    assert_eq!(s.services("a").unwrap(), vec!["api"]);
    assert!(s.traffic("a", "old").unwrap().is_empty());
    assert_eq!(s.revisions("a", "old").unwrap().len(), 1);
}

#[test]
fn tags_point_at_existing_non_failed_revisions() {
    let (_d, s) = store();
    s.upsert_app("a", "p", &["svc"]).unwrap();
    let r1 = ready_revision(&s, "a", "svc");
    let r2 = s.create_revision("a", "svc", "x", "{}", "t").unwrap();
    s.set_revision_state("a", "svc", r2, RevisionState::Failed, "boom")
        .unwrap();
    s.set_tag("a", "svc", "green", r1).unwrap();
    let err = s.set_tag("a", "svc", "blue", r2).unwrap_err();
    assert!(err.to_string().contains("failed"), "{err}");
    let err = s.set_tag("a", "svc", "blue", 9).unwrap_err();
    assert!(err.to_string().contains("does not exist"), "{err}");
    assert_eq!(s.tags("a", "svc").unwrap(), vec![("green".to_owned(), r1)]);
    assert!(s.remove_tag("a", "svc", "green").unwrap());
    assert!(!s.remove_tag("a", "svc", "green").unwrap());
    assert!(s.tags("a", "svc").unwrap().is_empty());
}

#[test]
fn a_rollout_step_and_its_traffic_commit_together() {
    let (_d, s) = store();
    s.upsert_app("a", "p", &["svc"]).unwrap();
    let r1 = ready_revision(&s, "a", "svc");
    let r2 = ready_revision(&s, "a", "svc");
    let mut row = RolloutRow {
        app: "a".into(),
        service: "svc".into(),
        revision: r2,
        baseline: r1,
        config: "{}".into(),
        state: "{\"step\":0}".into(),
        active: true,
        updated_at: String::new(),
    };
    let split = [
        TrafficTarget {
            revision: r1,
            percent: 95,
        },
        TrafficTarget {
            revision: r2,
            percent: 5,
        },
    ];
    s.save_rollout(&row, Some((&split, "canary step 1")))
        .unwrap();
    assert_eq!(s.traffic("a", "svc").unwrap(), split.to_vec());
    assert_eq!(s.active_rollouts().unwrap().len(), 1);
    // A bad split is refused and changes neither the rollout nor the traffic.
    row.state = "{\"step\":1}".into();
    let bad = [TrafficTarget {
        revision: r2,
        percent: 50,
    }];
    assert!(s.save_rollout(&row, Some((&bad, "m"))).is_err());
    assert_eq!(
        s.latest_rollout("a", "svc").unwrap().unwrap().state,
        "{\"step\":0}"
    );
    assert_eq!(s.traffic("a", "svc").unwrap(), split.to_vec());
    row.active = false;
    s.save_rollout(&row, None).unwrap();
    assert!(s.active_rollouts().unwrap().is_empty());
    // Unsynced: readers see it at once; `sync` makes it durable.
    row.active = true;
    row.state = "{\"step\":2}".into();
    s.save_rollout_unsynced(&row, Some((&split, "canary step 2")))
        .unwrap();
    assert_eq!(s.active_rollouts().unwrap()[0].state, "{\"step\":2}");
    s.sync().unwrap();
}

#[test]
fn an_apps_table_from_before_environments_gains_its_columns_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    {
        let s = Store::open(&path).unwrap();
        s.upsert_app("clinic", "/x/slipway.yaml", &["api"]).unwrap();
        // Shape the table as the first release wrote it.
        s.lock()
            .execute_batch(
                "ALTER TABLE apps DROP COLUMN environment; ALTER TABLE apps DROP COLUMN host;",
            )
            .unwrap();
    }
    let s = Store::open(&path).unwrap();
    let app = s.app("clinic").unwrap().unwrap();
    assert_eq!(
        (app.environment.as_str(), app.host.as_str()),
        ("development", "")
    );
    let key = slipway_core::app_key::AppKey::new("clinic", "staging").unwrap();
    s.register_app(
        key.as_str(),
        "/x/slipway.yaml",
        &["api"],
        "staging",
        "staging.clinic.localhost",
    )
    .unwrap();
    let staging = s.app("clinic@staging").unwrap().unwrap();
    assert_eq!(staging.host, "staging.clinic.localhost");
    assert_eq!(staging.name, "clinic@staging");
}

#[test]
fn routing_gathers_every_routed_service_in_one_read() {
    let (_d, s) = store();
    let share = |revision, percent| TrafficTarget { revision, percent };
    s.upsert_app("b", "p", &["web", "api", "idle", "gone"])
        .unwrap();
    s.upsert_app("a", "p", &["svc"]).unwrap();
    let a1 = ready_revision(&s, "a", "svc");
    let a2 = ready_revision(&s, "a", "svc");
    s.set_traffic("a", "svc", &[share(a1, 10), share(a2, 90)], "m")
        .unwrap();
    s.set_tag("a", "svc", "old", a1).unwrap();
    s.set_tag("a", "svc", "candidate", a2).unwrap();
    for svc in ["web", "api", "gone"] {
        let r = ready_revision(&s, "b", svc);
        s.set_traffic("b", svc, &[share(r, 100)], "m").unwrap();
    }
    // A tagged revision of a service without traffic routes nothing.
    let idle = ready_revision(&s, "b", "idle");
    s.set_tag("b", "idle", "t", idle).unwrap();
    s.remove_service("b", "gone").unwrap();

    let routing = s.routing().unwrap();
    let names: Vec<(&str, &str)> = routing
        .iter()
        .map(|r| (r.app.as_str(), r.service.as_str()))
        .collect();
    assert_eq!(names, [("a", "svc"), ("b", "api"), ("b", "web")]);
    // The same as the per-service queries.
    for r in &routing {
        assert_eq!(r.traffic, s.traffic(&r.app, &r.service).unwrap());
        assert_eq!(r.tags, s.tags(&r.app, &r.service).unwrap());
    }
    assert_eq!(
        routing[0].tags,
        [("candidate".to_owned(), a2), ("old".to_owned(), a1)]
    );
}

#[test]
fn serving_revisions_are_the_shares_and_the_tag_only_revisions_of_apps_that_are_up() {
    let (_d, s) = store();
    let share = |revision, percent| TrafficTarget { revision, percent };
    s.upsert_app("b", "p", &["web", "idle", "gone"]).unwrap();
    s.upsert_app("a", "p", &["svc"]).unwrap();
    s.upsert_app("c", "p", &["web"]).unwrap();
    let a1 = ready_revision(&s, "a", "svc");
    let a2 = ready_revision(&s, "a", "svc");
    let a3 = ready_revision(&s, "a", "svc");
    s.set_traffic("a", "svc", &[share(a1, 10), share(a2, 90)], "m")
        .unwrap();
    s.set_tag("a", "svc", "current", a2).unwrap();
    s.set_tag("a", "svc", "next", a3).unwrap();
    for svc in ["web", "gone"] {
        let r = ready_revision(&s, "b", svc);
        s.set_traffic("b", svc, &[share(r, 100)], "m").unwrap();
    }
    let idle = ready_revision(&s, "b", "idle");
    s.set_tag("b", "idle", "t", idle).unwrap();
    s.remove_service("b", "gone").unwrap();
    let c1 = ready_revision(&s, "c", "web");
    s.set_traffic("c", "web", &[share(c1, 100)], "m").unwrap();
    s.set_app_down("c", true).unwrap();

    let rows: Vec<(String, String, u64, bool)> = s
        .serving_revisions()
        .unwrap()
        .into_iter()
        .map(|r| (r.app, r.service, r.revision, r.tag_only))
        .collect();
    let row = |a: &str, sv: &str, r, t| (a.to_owned(), sv.to_owned(), r, t);
    assert_eq!(
        rows,
        [
            row("a", "svc", a1, false),
            row("a", "svc", a2, false),
            row("a", "svc", a3, true),
            row("b", "idle", idle, true),
            row("b", "web", 1, false),
        ]
    );
}

#[test]
fn an_online_backup_is_a_complete_store_that_opens_while_the_source_keeps_writing() {
    let (dir, s) = store();
    s.upsert_app("shop", "/srv/shop/slipway.yaml", &["web"])
        .unwrap();
    let first = ready_revision(&s, "shop", "web");
    let copy = dir.path().join("copy.db");
    s.backup_to(&copy).unwrap();
    // The source keeps working after (and during: the copy holds only a read transaction).
    ready_revision(&s, "shop", "web");
    let restored = Store::open(&copy).unwrap();
    let revisions = restored.revisions("shop", "web").unwrap();
    assert_eq!(revisions.len(), 1);
    assert_eq!(revisions[0].number, first);
}

fn new_token<'a>(id: &'a str, name: &'a str, envs: &'a [String]) -> NewToken<'a> {
    NewToken {
        id,
        name,
        role: "deployer",
        environments: envs,
        hash: &[1, 2, 3],
        expires_at: Some("2030-01-01T00:00:00.000Z"),
    }
}

#[test]
fn tokens_are_found_by_id_listed_by_name_and_revoked_by_name() {
    let (_dir, s) = store();
    let envs = vec!["staging".to_owned(), "production".to_owned()];
    let created = s.create_token(&new_token("id1", "ci", &envs)).unwrap();
    assert_eq!(created.environments, envs);
    let found = s.token("id1").unwrap().unwrap();
    assert_eq!(found, created);
    assert_eq!(found.hash, vec![1, 2, 3]);
    assert!(s.token("id2").unwrap().is_none());

    // One live token per name.
    let err = s.create_token(&new_token("id2", "ci", &[])).unwrap_err();
    assert!(err.to_string().contains("a token named ci exists"), "{err}");

    s.touch_token("id1", "2026-01-01T00:00:00.000Z").unwrap();
    assert_eq!(
        s.tokens().unwrap()[0].last_used_at.as_deref(),
        Some("2026-01-01T00:00:00.000Z")
    );

    assert!(s.revoke_token("ci").unwrap());
    assert!(!s.revoke_token("ci").unwrap(), "already revoked");
    assert!(s.tokens().unwrap().is_empty());
    // Still found by id, as revoked, and the name is free again.
    assert!(s.token("id1").unwrap().unwrap().revoked_at.is_some());
    let again = s.create_token(&new_token("id2", "ci", &[])).unwrap();
    assert!(again.environments.is_empty());

    let kinds: Vec<String> = s
        .events(&EventFilter::default())
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(kinds, ["token.created", "token.revoked", "token.created"]);
}

#[test]
fn an_event_records_its_actor() {
    let (_dir, s) = store();
    let event = NewEvent {
        app: "clinic",
        service: Some("api"),
        revision: None,
        kind: EventKind::ApiRequest,
        message: "POST /v1/apps/clinic/deploy: 200".into(),
    };
    s.add_event_by(&event, "ci").unwrap();
    s.add_event(&event).unwrap();
    let actors: Vec<Option<String>> = s
        .events(&EventFilter::default())
        .unwrap()
        .into_iter()
        .map(|e| e.actor)
        .collect();
    assert_eq!(actors, [Some("ci".to_owned()), None]);
}

#[test]
fn a_database_without_the_actor_column_gets_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    drop(Store::open(&path).unwrap());
    {
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("DROP TABLE events; DROP TABLE tokens; CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, ts TEXT NOT NULL, app TEXT NOT NULL, service TEXT, revision INTEGER, kind TEXT NOT NULL, message TEXT NOT NULL);")
            .unwrap();
    }
    let s = Store::open(&path).unwrap();
    s.add_event_by(
        &NewEvent {
            app: "clinic",
            service: None,
            revision: None,
            kind: EventKind::ApiRequest,
            message: "x".into(),
        },
        "local",
    )
    .unwrap();
    assert_eq!(
        s.events(&EventFilter::default()).unwrap()[0]
            .actor
            .as_deref(),
        Some("local")
    );
    s.create_token(&new_token("id1", "ci", &[])).unwrap();
}

#[test]
fn an_event_on_its_own_is_committed_unsynced_and_every_other_write_stays_synced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let synchronous = |s: &Store| -> i64 {
        s.lock()
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap()
    };
    let s = Store::open(&path).unwrap();
    assert_eq!(synchronous(&s), 2, "FULL from the start");
    s.upsert_app("a", "p", &[]).unwrap();
    let event = |message: &str| NewEvent {
        app: "a",
        service: None,
        revision: None,
        kind: slipway_core::events::EventKind::AppUp,
        message: message.to_owned(),
    };
    s.add_event(&event("alone")).unwrap();
    assert_eq!(synchronous(&s), 2, "FULL again after the unsynced commit");
    s.add_event_by(&event("by someone"), "local").unwrap();
    assert_eq!(synchronous(&s), 2);
    drop(s);
    // Committed: a new connection (a restarted server) reads it.
    let s = Store::open(&path).unwrap();
    let events = s.events(&EventFilter::default()).unwrap();
    assert!(events.iter().any(|e| e.message == "alone"), "{events:?}");
    assert!(
        events.iter().any(|e| e.message == "by someone"),
        "{events:?}"
    );
}

#[test]
fn cached_queries_are_not_compiled_again_for_other_values() {
    let (_dir, s) = store();
    s.upsert_app("clinic", "/x/slipway.yaml", &["api", "web"])
        .unwrap();
    for svc in ["api", "web"] {
        ready_revision(&s, "clinic", svc);
    }
    for _ in 0..5 {
        for svc in ["api", "web"] {
            assert_eq!(s.revisions("clinic", svc).unwrap().len(), 1);
            s.traffic("clinic", svc).unwrap();
        }
    }
    let conn = s.lock();
    let revisions = conn
        .prepare_cached(
            "SELECT app, service, number, created_at, digest, config, state, message FROM revisions \
             WHERE app = ?1 AND service = ?2 ORDER BY number",
        )
        .unwrap();
    // The ten calls above ran the one cached statement with alternating values.
    assert_eq!(
        revisions.get_status(rusqlite::StatementStatus::RePrepare),
        0
    );
}
