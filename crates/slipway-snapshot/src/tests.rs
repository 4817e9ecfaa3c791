use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::*;

fn write(root: &Path, rel: &str, content: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, content).unwrap();
}

fn setup() -> (tempfile::TempDir, PathBuf, CodeStore) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("app");
    write(&src, "app.py", "print('v1')");
    write(&src, "pkg/__init__.py", "");
    write(&src, "pkg/mod.py", "X = 1");
    std::fs::create_dir_all(src.join("empty")).unwrap();
    let store = CodeStore::new(dir.path().join("code"));
    (dir, src, store)
}

#[test]
fn equal_folders_give_equal_digests_and_a_code_edit_a_new_one() {
    let (_dir, src, store) = setup();
    let first = store.take(&src, &[]).unwrap();
    assert_eq!(first.files, 3);
    assert_eq!(first.new_files, 3);
    let again = store.take(&src, &[]).unwrap();
    assert_eq!(again.digest, first.digest);
    assert_eq!(again.new_files, 0, "nothing new to store");
    write(&src, "pkg/mod.py", "X = 2");
    let edited = store.take(&src, &[]).unwrap();
    assert_ne!(edited.digest, first.digest);
    assert_eq!((edited.new_files, edited.new_bytes), (1, 5));
    // An executable bit is part of the code too.
    let p = src.join("app.py");
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_ne!(store.take(&src, &[]).unwrap().digest, edited.digest);
}

#[test]
fn a_checkout_holds_the_snapshot_not_todays_files() {
    let (_dir, src, store) = setup();
    let v1 = store.take(&src, &[]).unwrap();
    write(&src, "app.py", "print('v2')");
    let v2 = store.take(&src, &[]).unwrap();
    let c1 = store.checkout(&v1.digest, &[]).unwrap();
    let c2 = store.checkout(&v2.digest, &[]).unwrap();
    assert_eq!(
        std::fs::read_to_string(c1.join("app.py")).unwrap(),
        "print('v1')"
    );
    assert_eq!(
        std::fs::read_to_string(c2.join("app.py")).unwrap(),
        "print('v2')"
    );
    assert!(c1.join("empty").is_dir());
    // Unchanged files are one inode shared by both checkouts: no content is copied.
    let a = std::fs::metadata(c1.join("pkg/mod.py")).unwrap();
    let b = std::fs::metadata(c2.join("pkg/mod.py")).unwrap();
    assert_eq!(a.ino(), b.ino());
    assert_eq!(
        a.permissions().mode() & 0o777,
        0o444,
        "shared blobs are read-only"
    );
    // The same checkout again is the same folder.
    assert_eq!(store.checkout(&v1.digest, &[]).unwrap(), c1);
    assert!(matches!(
        store.checkout(&"0".repeat(64), &[]),
        Err(SnapshotError::Missing(_))
    ));
}

#[test]
fn ignore_rules_and_defaults_leave_files_out() {
    let (_dir, src, store) = setup();
    let base = store.take(&src, &[]).unwrap();
    write(&src, ".git/HEAD", "ref: main");
    write(&src, "pkg/__pycache__/mod.cpython-311.pyc", "bytecode");
    write(&src, "logs/today.log", "noise");
    write(&src, "keep.log", "kept");
    write(&src, ".slipwayignore", "logs/\n*.tmp\n");
    write(&src, "scratch.tmp", "x");
    let taken = store.take(&src, &[]).unwrap();
    let c = store.checkout(&taken.digest, &[]).unwrap();
    assert!(!c.join(".git").exists());
    assert!(!c.join("pkg/__pycache__").exists());
    assert!(!c.join("logs").exists());
    assert!(!c.join("scratch.tmp").exists());
    assert!(!c.join(".slipwayignore").exists());
    assert!(c.join("keep.log").exists());
    std::fs::remove_file(src.join("keep.log")).unwrap();
    assert_eq!(store.take(&src, &[]).unwrap().digest, base.digest);
}

#[test]
fn volumes_stay_out_and_appear_as_links() {
    let (dir, src, store) = setup();
    write(&src, "data/db.sqlite3", "SQLite format 3\0rest");
    let err = store.take(&src, &[]).unwrap_err();
    match err {
        SnapshotError::LiveDatabase { path, what } => {
            assert!(path.ends_with("data/db.sqlite3"));
            assert_eq!(what, "SQLite database");
        }
        other => panic!("{other}"),
    }
    let taken = store.take(&src, &[PathBuf::from("data")]).unwrap();
    let volume = dir.path().join("volume");
    std::fs::create_dir_all(&volume).unwrap();
    std::fs::write(volume.join("shared.txt"), "state").unwrap();
    let c = store
        .checkout(&taken.digest, &[(PathBuf::from("data"), volume.clone())])
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(c.join("data/shared.txt")).unwrap(),
        "state"
    );
    // A different volume makes a different checkout of the same snapshot.
    let other = dir.path().join("other");
    let c2 = store
        .checkout(&taken.digest, &[(PathBuf::from("data"), other)])
        .unwrap();
    assert_ne!(c, c2);
    assert!(
        store
            .checkout(&taken.digest, &[(PathBuf::from("../x"), volume)])
            .is_err()
    );
}

#[test]
fn a_postgres_data_folder_is_refused() {
    let (_dir, src, store) = setup();
    write(&src, "pgdata/PG_VERSION", "15");
    write(&src, "pgdata/global/pg_control", "control");
    match store.take(&src, &[]).unwrap_err() {
        SnapshotError::LiveDatabase { path, what } => {
            assert!(path.ends_with("pgdata"), "{}", path.display());
            assert_eq!(what, "PostgreSQL data folder");
        }
        other => panic!("{other}"),
    }
}

#[test]
fn the_stat_cache_skips_unchanged_files_but_sees_edits() {
    let (_dir, src, store) = setup();
    // Files older than the racy window are cached.
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
    for rel in ["app.py", "pkg/__init__.py", "pkg/mod.py"] {
        let f = std::fs::File::options()
            .write(true)
            .open(src.join(rel))
            .unwrap();
        f.set_modified(old).unwrap();
    }
    let first = store.take(&src, &[]).unwrap();
    assert_eq!(first.hashed_files, 3);
    let second = store.take(&src, &[]).unwrap();
    // ctime moved when set_modified ran, so the cache may hold none of them yet; it must
    // never give a wrong answer, which the edit below checks.
    assert_eq!(second.digest, first.digest);
    write(&src, "app.py", "print('edited')");
    let third = store.take(&src, &[]).unwrap();
    assert_ne!(third.digest, first.digest);
    assert!(third.hashed_files >= 1);
}

#[test]
fn symlinks_are_kept_as_links() {
    let (_dir, src, store) = setup();
    std::os::unix::fs::symlink("app.py", src.join("main.py")).unwrap();
    let taken = store.take(&src, &[]).unwrap();
    let c = store.checkout(&taken.digest, &[]).unwrap();
    assert_eq!(
        std::fs::read_link(c.join("main.py")).unwrap(),
        PathBuf::from("app.py")
    );
    assert_eq!(store.size(&taken.digest).unwrap(), (3, 16));
}

#[test]
fn a_digest_alone_stores_nothing_and_matches_the_snapshot() {
    let (_dir, src, store) = setup();
    let digest = store.digest(&src, &[]).unwrap();
    assert!(!store.has(&digest));
    assert!(!store.root().join("blobs").exists());
    let taken = store.take(&src, &[]).unwrap();
    assert_eq!(taken.digest, digest);
    assert!(store.has(&digest));
    // A database inside the folder is an input like any file here; `take` refuses it.
    write(&src, "db.sqlite3", "SQLite format 3\0");
    assert_ne!(store.digest(&src, &[]).unwrap(), digest);
}

#[test]
fn a_one_file_edit_writes_only_the_folders_on_its_path() {
    let (dir, src, store) = setup();
    for i in 0..20 {
        write(&src, &format!("other{i}/file.py"), &format!("N = {i}"));
    }
    let trees = |store: &CodeStore| {
        std::fs::read_dir(store.root().join("trees"))
            .unwrap()
            .count()
    };
    let first = store.take(&src, &[]).unwrap();
    // The root, pkg, empty and the 20 others.
    assert_eq!(trees(&store), 23);
    write(&src, "pkg/mod.py", "X = 2");
    let edited = store.take(&src, &[]).unwrap();
    assert_eq!(
        trees(&store),
        25,
        "pkg's object and the root's, nothing else"
    );
    // Both read back whole.
    for (digest, x) in [(&first.digest, "X = 1"), (&edited.digest, "X = 2")] {
        let out = store.checkout(digest, &[]).unwrap();
        assert_eq!(std::fs::read_to_string(out.join("pkg/mod.py")).unwrap(), x);
        assert_eq!(
            std::fs::read_to_string(out.join("other7/file.py")).unwrap(),
            "N = 7"
        );
        assert!(out.join("empty").is_dir());
        assert_eq!(store.size(digest).unwrap().0, 23);
    }
    drop(dir);
}

#[test]
fn a_snapshot_of_the_first_format_still_checks_out() {
    let (_dir, src, store) = setup();
    let taken = store.take(&src, &[]).unwrap();
    // A flat list of every path, as the first format stored it, under a digest of its own.
    let flat = store.manifest(&taken.digest).unwrap();
    let old = "1".repeat(64);
    std::fs::write(
        store.root().join("trees").join(&old),
        serde_json::to_vec(&flat).unwrap(),
    )
    .unwrap();
    let out = store.checkout(&old, &[]).unwrap();
    assert_eq!(
        std::fs::read_to_string(out.join("app.py")).unwrap(),
        "print('v1')"
    );
    assert!(out.join("empty").is_dir());
}

#[test]
fn unused_checkouts_are_pruned_and_made_again_on_demand() {
    let (_dir, src, store) = setup();
    let v1 = store.take(&src, &[]).unwrap();
    write(&src, "app.py", "print('v2')");
    let v2 = store.take(&src, &[]).unwrap();
    let one = store.checkout(&v1.digest, &[]).unwrap();
    let two = store.checkout(&v2.digest, &[]).unwrap();
    let in_use = std::collections::HashSet::from([two.clone()]);
    // Too young to go.
    assert_eq!(
        store.prune_checkouts(&in_use, std::time::Duration::from_secs(3600)),
        0
    );
    assert_eq!(store.prune_checkouts(&in_use, std::time::Duration::ZERO), 1);
    assert!(!one.exists() && two.exists());
    // The snapshot is still whole: its checkout comes back.
    let again = store.checkout(&v1.digest, &[]).unwrap();
    assert_eq!(again, one);
    assert_eq!(
        std::fs::read_to_string(again.join("app.py")).unwrap(),
        "print('v1')"
    );
}
