//! Against the host's real PostgreSQL (as the tests run everything they can).

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use super::*;

/// A temporary folder the database user can enter.
fn open_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o711)).unwrap();
    dir
}

/// Stops a database when a test ends, passed or not, so a failed assertion leaves no server
/// running.
struct StopOnDrop(Database);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = self.0.stop();
    }
}

/// Runs SQL through the app's URL, as the app would connect (password, Unix socket).
fn app_sql(pg: &Postgres, url: &str, sql: &str) -> Result<String, String> {
    let out = Command::new(pg.tool("psql"))
        .args([
            url,
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ])
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn a_cluster_is_made_started_adopted_stopped_and_started_again_with_its_data() {
    let tmp = open_tempdir();
    let dir = tmp.path().join("db");
    let user = OsUser::for_databases().unwrap();
    let pg = Postgres::open(&dir, "db", Some("15"), user.clone()).unwrap();
    let _stop = StopOnDrop(Database::Postgres(pg.clone()));
    let password = generate_password().unwrap();
    assert_eq!(pg.ensure(&password).unwrap(), Started::Created);
    assert_eq!(pg.health(), Health::Ready);
    assert_eq!(
        fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert!(owned_by(&dir, user.uid));
    let url = pg.url(&password);
    app_sql(
        &pg,
        &url,
        "CREATE TABLE t (n int); INSERT INTO t VALUES (1), (2);",
    )
    .unwrap();

    // A wrong password is refused: the socket alone is not a way in.
    let wrong = pg.url("not-the-password");
    let refused = app_sql(&pg, &wrong, "SELECT 1").unwrap_err();
    assert!(
        refused.contains("password authentication failed"),
        "{refused}"
    );

    // Running: adopted, not started twice.
    assert_eq!(pg.ensure(&password).unwrap(), Started::Adopted);
    assert!(pg.stop().unwrap());
    assert_eq!(pg.health(), Health::Down);
    assert!(
        !pg.stop().unwrap(),
        "stopping a stopped database is a no-op"
    );
    let again = Postgres::open(&dir, "db", None, user).unwrap();
    assert_eq!(again.meta().version, "15");
    assert_eq!(again.ensure(&password).unwrap(), Started::Started);
    assert_eq!(
        app_sql(&again, &url, "SELECT count(*) FROM t").unwrap(),
        "2"
    );
    again.stop().unwrap();
}

#[test]
fn a_major_version_change_and_a_missing_version_are_refused_with_what_to_do() {
    let tmp = open_tempdir();
    let dir = tmp.path().join("db");
    let user = OsUser::for_databases().unwrap();
    let missing = Postgres::open(&dir, "db", Some("99"), user.clone()).unwrap_err();
    assert!(
        missing
            .to_string()
            .contains("PostgreSQL 99 is not installed"),
        "{missing}"
    );
    fs::create_dir_all(&dir).unwrap();
    fs::write(
        dir.join("database.json"),
        r#"{"engine":"postgres","version":"14","name":"db"}"#,
    )
    .unwrap();
    let refused = Postgres::open(&dir, "db", Some("15"), user).unwrap_err();
    let text = refused.to_string();
    assert!(text.contains("holds PostgreSQL 14 data"), "{text}");
    assert!(
        text.contains("hint: migrate it with `slipway db upgrade db --to 15`"),
        "{text}"
    );
    assert!(text.contains("or keep `version: \"14\"`"), "{text}");
    // Asking for an older major than the data: set the spec to the data's, or revert.
    fs::write(
        dir.join("database.json"),
        r#"{"engine":"postgres","version":"16","name":"db"}"#,
    )
    .unwrap();
    let older = Postgres::open(&dir, "db", Some("15"), OsUser::for_databases().unwrap())
        .unwrap_err()
        .to_string();
    assert!(older.contains("hint: set `version: \"16\"`"), "{older}");
    assert!(older.contains("--revert"), "{older}");
}

#[test]
fn a_folder_the_database_user_cannot_enter_is_named_with_the_fix() {
    let user = OsUser::for_databases().unwrap();
    if user.uid == 0 || user.uid == rustix::process::geteuid().as_raw() {
        // Only a server running as root hands databases to another user.
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o700)).unwrap();
    let dir = tmp.path().join("db");
    let pg = Postgres::open(&dir, "db", Some("15"), user).unwrap();
    let error = pg.ensure("x").unwrap_err().to_string();
    assert!(error.contains("cannot enter"), "{error}");
    assert!(error.contains("chmod o+x"), "{error}");
}

#[test]
fn urls_carry_the_socket_folder_encoded_and_passwd_lines_parse() {
    assert_eq!(encode_path(Path::new("/a b/s")), "/a%20b/s");
    assert_eq!(
        user::parse_line(
            "postgres:x:104:110:PostgreSQL administrator,,,:/var/lib/postgresql:/bin/bash"
        ),
        Some(OsUser {
            name: "postgres".into(),
            uid: 104,
            gid: 110
        })
    );
    assert_eq!(user::parse_line("broken"), None);
    let password = generate_password().unwrap();
    assert_eq!(password.len(), 48);
    assert!(password.chars().all(|c| c.is_ascii_hexdigit()));
}

#[test]
fn passage_through_a_private_folder_is_granted_by_an_acl_and_the_mode_stays() {
    let user = OsUser::for_databases().unwrap();
    if user.uid == rustix::process::geteuid().as_raw() {
        return;
    }
    let tmp = open_tempdir();
    let private = tmp.path().join("private");
    fs::create_dir(&private).unwrap();
    fs::set_permissions(&private, fs::Permissions::from_mode(0o700)).unwrap();
    let inner = private.join("db");
    fs::create_dir(&inner).unwrap();
    fs::set_permissions(&inner, fs::Permissions::from_mode(0o700)).unwrap();
    user.own(&inner).unwrap();
    let refused = user.check_reaches(&inner).unwrap_err().to_string();
    assert!(
        refused.contains(&format!("cannot enter {}", private.display())),
        "{refused}"
    );
    user.grant_passage(&private).unwrap();
    user.check_reaches(&inner).unwrap();
    // Owner and others keep what they had; only the named user may pass (not list).
    let mode = fs::metadata(&private).unwrap().permissions().mode() & 0o707;
    assert_eq!(mode, 0o700);
}

#[test]
fn a_redis_is_made_answers_only_with_its_password_survives_a_restart_and_is_adopted() {
    let tmp = open_tempdir();
    let dir = tmp.path().join("cache");
    let user = OsUser::for_databases().unwrap();
    let redis = Redis::open(&dir, "cache", None, user.clone()).unwrap();
    let _stop = StopOnDrop(Database::Redis(redis.clone()));
    let password = generate_password().unwrap();
    assert_eq!(redis.ensure(&password).unwrap(), Started::Created);
    assert_eq!(redis.health(), Health::Ready);
    assert!(redis.url(&password).starts_with("unix://:"));
    redis
        .command(&password, &[b"SET".as_slice(), b"k", b"v"])
        .unwrap();
    let refused = redis
        .command("wrong", &[b"GET".as_slice(), b"k"])
        .unwrap_err()
        .to_string();
    assert!(refused.contains("WRONGPASS"), "{refused}");
    assert_eq!(redis.ensure(&password).unwrap(), Started::Adopted);
    assert!(redis.stop().unwrap());
    assert_eq!(redis.health(), Health::Down);
    assert_eq!(redis.ensure(&password).unwrap(), Started::Started);
    assert_eq!(
        redis
            .command(&password, &[b"GET".as_slice(), b"k"])
            .unwrap(),
        Reply::Bulk(Some(b"v".to_vec())),
        "the append-only file kept the write"
    );
    // An engine change is refused, not converted.
    let error = Database::open(Engine::Postgres, &dir, "cache", None, user)
        .unwrap_err()
        .to_string();
    assert!(error.contains("holds redis data"), "{error}");
    redis.stop().unwrap();
}

#[test]
fn resp_replies_parse() {
    let mut input: &[u8] = b"+OK\r\n-ERR no\r\n:42\r\n$3\r\nabc\r\n$-1\r\n*2\r\n:1\r\n$1\r\nx\r\n";
    let mut replies = Vec::new();
    for _ in 0..6 {
        replies.push(redis::read_reply(&mut input).unwrap());
    }
    assert_eq!(
        replies,
        vec![
            Reply::Simple("OK".into()),
            Reply::Error("ERR no".into()),
            Reply::Integer(42),
            Reply::Bulk(Some(b"abc".to_vec())),
            Reply::Bulk(None),
            Reply::Array(vec![Reply::Integer(1), Reply::Bulk(Some(b"x".to_vec()))]),
        ]
    );
    assert!(redis::read_reply(&mut input).is_err());
}

#[test]
fn a_dump_counts_its_rows_verifies_in_a_scratch_cluster_detects_a_flipped_byte_and_restores() {
    use crate::backup;
    let tmp = open_tempdir();
    let user = OsUser::for_databases().unwrap();
    let pg = Postgres::open(&tmp.path().join("db"), "db", Some("15"), user.clone()).unwrap();
    let _stop = StopOnDrop(Database::Postgres(pg.clone()));
    let password = generate_password().unwrap();
    pg.ensure(&password).unwrap();
    let url = pg.url(&password);
    app_sql(
        &pg,
        &url,
        "CREATE TABLE t (n int); INSERT INTO t SELECT generate_series(1, 1000); CREATE TABLE e (x text);",
    )
    .unwrap();
    let file = tmp.path().join("db.dump");
    let facts = pg.dump(&file).unwrap();
    assert_eq!(facts.tables["public.t"], 1000);
    assert_eq!(facts.tables["public.e"], 0);
    assert!(facts.server_version.starts_with("15."), "{facts:?}");
    let scratch = tmp.path().join("scratch");
    let found = backup::verify_dump(&file, &facts.tables, "15", &scratch, user.clone()).unwrap();
    assert_eq!(found, facts.tables);
    assert!(!scratch.exists(), "the scratch cluster is removed");

    // A count that does not match fails, naming the table.
    let mut wrong = facts.tables.clone();
    wrong.insert("public.t".into(), 999);
    let error = backup::verify_dump(&file, &wrong, "15", &scratch, user.clone())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("table public.t: 1000 rows restored, 999 at dump time"),
        "{error}"
    );

    // One flipped byte: the manifest's SHA-256 says so.
    let recorded = backup::file_facts(&file).unwrap();
    let mut bytes = fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    fs::write(&file, &bytes).unwrap();
    let error = backup::check_file(tmp.path(), &recorded)
        .unwrap_err()
        .to_string();
    assert!(error.contains("db.dump: SHA-256"), "{error}");
    bytes[middle] ^= 0x01;
    fs::write(&file, &bytes).unwrap();

    // Restore replaces the contents, and the app's role owns what comes back.
    app_sql(&pg, &url, "DELETE FROM t; DROP TABLE e;").unwrap();
    pg.restore(&file).unwrap();
    assert_eq!(
        app_sql(&pg, &url, "SELECT count(*) FROM t").unwrap(),
        "1000"
    );
    app_sql(&pg, &url, "INSERT INTO e VALUES ('writable by the app')").unwrap();
    pg.stop().unwrap();
}

#[test]
fn a_redis_snapshot_counts_its_keys_verifies_in_a_scratch_server_and_restores_them() {
    let tmp = open_tempdir();
    let user = OsUser::for_databases().unwrap();
    let redis = Redis::open(&tmp.path().join("cache"), "cache", None, user.clone()).unwrap();
    let _stop = StopOnDrop(Database::Redis(redis.clone()));
    let password = generate_password().unwrap();
    redis.ensure(&password).unwrap();
    for i in 0..50 {
        let key = format!("k{i}");
        redis
            .command(&password, &[b"SET".as_slice(), key.as_bytes(), b"v"])
            .unwrap();
    }
    let rdb = tmp.path().join("cache.rdb");
    assert_eq!(redis.snapshot(&password, &rdb).unwrap(), 50);
    let scratch = tmp.path().join("scratch");
    assert_eq!(
        redis::verify_snapshot(&rdb, 50, &scratch, user.clone()).unwrap(),
        50
    );
    assert!(!scratch.exists());
    let error = redis::verify_snapshot(&rdb, 51, &scratch, user)
        .unwrap_err()
        .to_string();
    assert!(error.contains("50 keys, 51 at snapshot time"), "{error}");
    // Restored in place: the same keys, and they stay across a restart (the append-only
    // file was written anew from them).
    redis.command(&password, &[b"FLUSHALL".as_slice()]).unwrap();
    redis.load_snapshot(&password, &rdb).unwrap();
    assert_eq!(redis.key_count(&password).unwrap(), 50);
    redis.stop().unwrap();
    redis.ensure(&password).unwrap();
    assert_eq!(redis.key_count(&password).unwrap(), 50);
}
