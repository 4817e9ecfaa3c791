//! Unit tests of the secret store and the master key file, on temporary directories.

use std::os::unix::fs::PermissionsExt;

use super::*;
use crate::EventFilter;

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("state.db")).unwrap();
    (dir, store)
}

#[test]
fn a_new_key_file_is_private_hex_and_reads_back_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    let created = MasterKey::load_or_create(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.trim().len(), 64, "{text}");
    let again = MasterKey::load_or_create(&path).unwrap();
    assert_eq!(*created.bytes, *again.bytes);
    // The key never shows in debug output.
    assert!(!format!("{created:?}").contains(text.trim()));
}

#[test]
fn a_key_file_other_users_can_read_or_a_damaged_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("master.key");
    std::fs::write(&path, "00".repeat(32)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = MasterKey::load(&path).unwrap_err().to_string();
    assert!(
        err.contains("mode 644") && err.contains("chmod 600"),
        "{err}"
    );
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(MasterKey::load(&path).unwrap().is_some());
    std::fs::write(&path, "not a key").unwrap();
    let err = MasterKey::load(&path).unwrap_err().to_string();
    assert!(err.contains("does not hold a key"), "{err}");
    assert!(
        MasterKey::load(&dir.path().join("absent"))
            .unwrap()
            .is_none()
    );
}

#[test]
fn versions_are_kept_and_each_decrypts_to_its_own_value() {
    let (_dir, s) = store();
    let key = MasterKey::from_bytes([7; 32]);
    let v1 = s
        .set_secret(
            &key,
            "shop",
            "production",
            "DB",
            b"postgres://one",
            "shop@production",
        )
        .unwrap();
    let v2 = s
        .set_secret(
            &key,
            "shop",
            "production",
            "DB",
            b"postgres://two",
            "shop@production",
        )
        .unwrap();
    assert_eq!((v1, v2), (1, 2));
    assert_eq!(
        s.secret_version("shop", "production", "DB").unwrap(),
        Some(2)
    );
    assert_eq!(
        &s.secret_value(&key, "shop", "production", "DB", 1).unwrap()[..],
        b"postgres://one"
    );
    assert_eq!(
        &s.secret_value(&key, "shop", "production", "DB", 2).unwrap()[..],
        b"postgres://two"
    );
    // Another environment is another secret.
    assert_eq!(s.secret_version("shop", "staging", "DB").unwrap(), None);
    let listed = s.secrets("shop", "production").unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].name.as_str(), listed[0].version), ("DB", 2));
    // The event names the secret and the version, never the value.
    let events = s.events(&EventFilter::default()).unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.kind == "secret.set" && e.message.contains("version 2"))
    );
    assert!(events.iter().all(|e| !e.message.contains("postgres://")));
}

#[test]
fn removing_a_secret_hides_it_but_old_versions_still_decrypt() {
    let (_dir, s) = store();
    let key = MasterKey::from_bytes([1; 32]);
    s.set_secret(&key, "shop", "development", "TOKEN", b"t1", "shop")
        .unwrap();
    assert!(
        s.remove_secret("shop", "development", "TOKEN", "shop")
            .unwrap()
    );
    assert!(
        !s.remove_secret("shop", "development", "TOKEN", "shop")
            .unwrap()
    );
    assert_eq!(
        s.secret_version("shop", "development", "TOKEN").unwrap(),
        None
    );
    assert!(s.secrets("shop", "development").unwrap().is_empty());
    assert_eq!(
        &s.secret_value(&key, "shop", "development", "TOKEN", 1)
            .unwrap()[..],
        b"t1"
    );
    let err = s
        .secret_value(&key, "shop", "development", "TOKEN", 2)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("has no version 2") && err.contains("slipway secret set TOKEN"),
        "{err}"
    );
    // Setting it again continues the numbering.
    assert_eq!(
        s.set_secret(&key, "shop", "development", "TOKEN", b"t3", "shop")
            .unwrap(),
        3
    );
}

#[test]
fn the_clear_value_is_not_in_the_database_and_rows_cannot_be_moved_or_read_with_another_key() {
    let (dir, s) = store();
    let key = MasterKey::from_bytes([9; 32]);
    let value = b"hunter2-very-secret-value";
    s.set_secret(&key, "shop", "production", "A", value, "shop@production")
        .unwrap();
    s.set_secret(&key, "shop", "production", "B", b"other", "shop@production")
        .unwrap();
    drop(s);
    for entry in std::fs::read_dir(dir.path()).unwrap().flatten() {
        let bytes = std::fs::read(entry.path()).unwrap();
        assert!(
            !bytes.windows(value.len()).any(|w| w == value),
            "{} holds the clear value",
            entry.path().display()
        );
    }
    let s = Store::open(&dir.path().join("state.db")).unwrap();
    // Copy A's ciphertext onto B: authentication fails instead of decrypting to A's value.
    s.lock()
        .execute_batch(
            "UPDATE secrets SET nonce = (SELECT nonce FROM secrets WHERE name = 'A'),
                                ciphertext = (SELECT ciphertext FROM secrets WHERE name = 'A')
             WHERE name = 'B'",
        )
        .unwrap();
    let err = s
        .secret_value(&key, "shop", "production", "B", 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot be decrypted"), "{err}");
    let other = MasterKey::from_bytes([8; 32]);
    assert!(
        s.secret_value(&other, "shop", "production", "A", 1)
            .is_err()
    );
    assert_eq!(
        &s.secret_value(&key, "shop", "production", "A", 1).unwrap()[..],
        value
    );
}

#[test]
fn a_sealed_file_opens_only_with_its_key_and_purpose() {
    let key = MasterKey::from_bytes([7; KEY_LEN]);
    let sealed = key.seal("acme-cert:a.example", b"-----BEGIN").unwrap();
    assert!(!sealed.windows(10).any(|w| w == b"-----BEGIN"));
    assert_eq!(
        key.open("acme-cert:a.example", &sealed).unwrap().as_slice(),
        b"-----BEGIN"
    );
    assert!(key.open("acme-cert:b.example", &sealed).is_none());
    assert!(
        MasterKey::from_bytes([8; KEY_LEN])
            .open("acme-cert:a.example", &sealed)
            .is_none()
    );
    let mut altered = sealed.clone();
    *altered.last_mut().unwrap() ^= 1;
    assert!(key.open("acme-cert:a.example", &altered).is_none());
    assert!(key.open("acme-cert:a.example", &sealed[..10]).is_none());
}
