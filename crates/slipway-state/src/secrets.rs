//! Secrets at rest: the master key file and the encrypted `secrets` table.
//!
//! A secret is a named value for one app in one environment (`DATABASE_URL` of `clinic`
//! in `production`). Every `set` adds a new numbered version and `remove` adds a
//! tombstone version; no row is ever overwritten, so a revision that recorded version 3
//! can still be started (and rolled back to) after the secret moved on to version 5.
//!
//! Values are sealed with XChaCha20-Poly1305 under a 32-byte master key kept outside the
//! database (`<data dir>/master.key`, created with mode 0600, or the file named by
//! `SLIPWAY_MASTER_KEY_FILE`). Each version gets a fresh random 24-byte nonce, so the
//! same value set twice gives two unrelated ciphertexts. The associated data binds a
//! ciphertext to its app, environment, name and version: a row copied to another secret
//! (or another version) fails authentication instead of decrypting to the wrong place.
//!
//! Plaintext buffers handed out are [`Zeroizing`], so they are wiped when dropped.

use std::io::Write;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use slipway_core::events::EventKind;
use zeroize::Zeroizing;

use crate::{NewEvent, Result, Store, StoreError, insert_event, now};

/// The length of a master key in bytes (256 bits).
const KEY_LEN: usize = 32;
/// The length of an XChaCha20 nonce in bytes (192 bits: random nonces never repeat in
/// practice, unlike the 96-bit nonces of plain ChaCha20-Poly1305).
const NONCE_LEN: usize = 24;

/// The key that seals every secret of a data dir. Wiped from memory when dropped.
pub struct MasterKey {
    bytes: Zeroizing<[u8; KEY_LEN]>,
    path: PathBuf,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key itself.
        write!(f, "MasterKey({})", self.path.display())
    }
}

// === impl MasterKey ===

impl MasterKey {
    /// Reads the key at `path`, creating it first (32 random bytes, written as 64 hex
    /// characters, mode 0600, refusing to replace an existing file) when it is missing.
    ///
    /// # Errors
    /// A file that is not 32 bytes or 64 hex characters, a file that other users can read,
    /// or an I/O failure: [`StoreError::Secret`] saying which file and what to do.
    pub fn load_or_create(path: &Path) -> Result<MasterKey> {
        match Self::load(path)? {
            Some(key) => Ok(key),
            None => Self::create(path),
        }
    }

    /// Reads the key at `path`; `None` when the file does not exist.
    pub fn load(path: &Path) -> Result<Option<MasterKey>> {
        use std::os::unix::fs::PermissionsExt;
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(key_error(
                    path,
                    &e.to_string(),
                    "check the file's permissions",
                ));
            }
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(key_error(
                path,
                &format!("the file is readable or writable by other users (mode {mode:o})"),
                &format!("run `chmod 600 {}`", path.display()),
            ));
        }
        let raw = Zeroizing::new(
            std::fs::read(path)
                .map_err(|e| key_error(path, &e.to_string(), "check the file's permissions"))?,
        );
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        let text = std::str::from_utf8(&raw).map(str::trim).unwrap_or("");
        if raw.len() == KEY_LEN {
            bytes.copy_from_slice(&raw);
        } else if text.len() == 2 * KEY_LEN && hex::decode_to_slice(text, &mut bytes[..]).is_ok() {
        } else {
            return Err(key_error(
                path,
                "it does not hold a key (32 bytes, or 64 hex characters)",
                "restore the original key file; without it the stored secrets cannot be read",
            ));
        }
        Ok(Some(MasterKey {
            bytes,
            path: path.to_owned(),
        }))
    }

    /// Creates a new random key at `path` (mode 0600); if another process created it
    /// first, reads that one instead.
    fn create(path: &Path) -> Result<MasterKey> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        getrandom::fill(&mut bytes[..]).map_err(|e| {
            key_error(
                path,
                &format!("no randomness from the OS: {e}"),
                "try again",
            )
        })?;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        let mut file = match file {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Self::load(path)?.ok_or_else(|| {
                    key_error(path, "it vanished while being created", "try again")
                });
            }
            Err(e) => {
                return Err(key_error(
                    path,
                    &e.to_string(),
                    "check that the directory exists and is writable, or set SLIPWAY_MASTER_KEY_FILE",
                ));
            }
        };
        let text = Zeroizing::new(format!("{}\n", hex::encode(&bytes[..])));
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| key_error(path, &e.to_string(), "check the free space"))?;
        Ok(MasterKey {
            bytes,
            path: path.to_owned(),
        })
    }

    /// A key from raw bytes (for tests and tools).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> MasterKey {
        MasterKey {
            bytes: Zeroizing::new(bytes),
            path: PathBuf::from("<memory>"),
        }
    }

    /// Where the key was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Seals `plaintext` for storage outside the database (a file under the data dir):
    /// nonce then ciphertext, bound to `purpose` (e.g. `acme-cert:example.com`) so a sealed
    /// file copied to another purpose fails to open.
    ///
    /// # Errors
    /// No randomness from the OS, or an encryption failure.
    pub fn seal(&self, purpose: &str, plaintext: &[u8]) -> Result<Vec<u8>> {
        let aad = format!("slipway-sealed/v1\0{purpose}");
        let (nonce, ciphertext) = seal(self, aad.as_bytes(), plaintext)?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ciphertext);
        Ok(sealed)
    }

    /// Opens what [`MasterKey::seal`] sealed for `purpose`; `None` when it was sealed under
    /// another key or purpose, or altered.
    pub fn open(&self, purpose: &str, sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let aad = format!("slipway-sealed/v1\0{purpose}");
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        open(self, aad.as_bytes(), nonce, ciphertext)
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&Key::from(*self.bytes))
    }
}

fn key_error(path: &Path, what: &str, hint: &str) -> StoreError {
    StoreError::Secret(format!(
        "master key {}: {what}\n  hint: {hint}",
        path.display()
    ))
}

/// The associated data of one secret version: what the ciphertext is bound to. Fields are
/// separated by NUL bytes, which no name contains, so `("a", "bc")` and `("ab", "c")`
/// cannot collide.
fn associated_data(app: &str, environment: &str, name: &str, version: u64) -> Vec<u8> {
    format!("slipway-secret/v1\0{app}\0{environment}\0{name}\0{version}").into_bytes()
}

/// Encrypts `plaintext` under `key` with a fresh random nonce.
fn seal(key: &MasterKey, aad: &[u8], plaintext: &[u8]) -> Result<([u8; NONCE_LEN], Vec<u8>)> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce)
        .map_err(|e| StoreError::Secret(format!("no randomness from the OS: {e}")))?;
    let ciphertext = key
        .cipher()
        .encrypt(
            &XNonce::from(nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .map_err(|_| StoreError::Secret("encryption failed".into()))?;
    Ok((nonce, ciphertext))
}

/// Decrypts and authenticates one stored version.
fn open(
    key: &MasterKey,
    aad: &[u8],
    nonce: &[u8],
    ciphertext: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
    key.cipher()
        .decrypt(
            &XNonce::from(nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .ok()
        .map(Zeroizing::new)
}

/// What `secret list` shows of a secret: never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretInfo {
    pub name: String,
    /// The current version (versions count every set and remove).
    pub version: u64,
    pub updated_at: String,
}

// === impl Store (secrets) ===

impl Store {
    /// Stores a new version of a secret, encrypted under `key`, and returns its number.
    /// The change commits with a `secret.set` event on `event_app` that names the secret
    /// and the version, never the value.
    pub fn set_secret(
        &self,
        key: &MasterKey,
        app: &str,
        environment: &str,
        name: &str,
        value: &[u8],
        event_app: &str,
    ) -> Result<u64> {
        self.write(|tx| {
            let version: u64 = tx.query_row(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM secrets
                 WHERE app = ?1 AND environment = ?2 AND name = ?3",
                params![app, environment, name],
                |r| r.get(0),
            )?;
            let aad = associated_data(app, environment, name, version);
            let (nonce, ciphertext) = seal(key, &aad, value)?;
            tx.execute(
                "INSERT INTO secrets(app, environment, name, version, nonce, ciphertext, removed, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, ?7)",
                params![app, environment, name, version, &nonce[..], ciphertext, now()],
            )?;
            insert_event(
                tx,
                &NewEvent {
                    app: event_app,
                    kind: EventKind::SecretSet,
                    message: format!(
                        "secret {name} of {app} in {environment} set (version {version})"
                    ),
                    service: None,
                    revision: None,
                },
            )?;
            Ok(version)
        })
    }

    /// Removes a secret by adding a tombstone version (older versions stay readable for
    /// the revisions that use them). Returns whether the secret was set.
    pub fn remove_secret(
        &self,
        app: &str,
        environment: &str,
        name: &str,
        event_app: &str,
    ) -> Result<bool> {
        self.write(|tx| {
            let Some(version) = current_version(tx, app, environment, name)? else {
                return Ok(false);
            };
            let next = version + 1;
            tx.execute(
                "INSERT INTO secrets(app, environment, name, version, nonce, ciphertext, removed, updated_at)
                 VALUES (?1, ?2, ?3, ?4, x'', x'', 1, ?5)",
                params![app, environment, name, next, now()],
            )?;
            insert_event(
                tx,
                &NewEvent {
                    app: event_app,
                    kind: EventKind::SecretRemoved,
                    message: format!("secret {name} of {app} in {environment} removed"),
                    service: None,
                    revision: None,
                },
            )?;
            Ok(true)
        })
    }

    /// The secrets that are set for an app in an environment, by name.
    pub fn secrets(&self, app: &str, environment: &str) -> Result<Vec<SecretInfo>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(
            "SELECT s.name, s.version, s.updated_at FROM secrets s
             WHERE s.app = ?1 AND s.environment = ?2 AND s.removed = 0
               AND s.version = (SELECT MAX(version) FROM secrets t
                                WHERE t.app = s.app AND t.environment = s.environment AND t.name = s.name)
             ORDER BY s.name",
        )?;
        let rows = stmt
            .query_map(params![app, environment], |r| {
                Ok(SecretInfo {
                    name: r.get(0)?,
                    version: r.get(1)?,
                    updated_at: r.get(2)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// The current version of a secret; `None` when it was never set or is removed.
    pub fn secret_version(&self, app: &str, environment: &str, name: &str) -> Result<Option<u64>> {
        let conn = self.lock();
        current_version(&conn, app, environment, name)
    }

    /// Decrypts one version of a secret.
    ///
    /// # Errors
    /// A version that does not exist or was a removal, or a ciphertext that does not
    /// authenticate under `key` (another key file, or a tampered row).
    pub fn secret_value(
        &self,
        key: &MasterKey,
        app: &str,
        environment: &str,
        name: &str,
        version: u64,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let row: Option<(Vec<u8>, Vec<u8>, bool)> = {
            let conn = self.lock();
            conn.query_row(
                "SELECT nonce, ciphertext, removed FROM secrets
                 WHERE app = ?1 AND environment = ?2 AND name = ?3 AND version = ?4",
                params![app, environment, name, version],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()?
        };
        let Some((nonce, ciphertext, removed)) = row.filter(|r| !r.2) else {
            return Err(StoreError::Secret(format!(
                "secret {name} of {app} in {environment} has no version {version}\n  hint: set it with `slipway secret set {name} --env {environment} --app {app}`"
            )));
        };
        debug_assert!(!removed);
        let aad = associated_data(app, environment, name, version);
        open(key, &aad, &nonce, &ciphertext).ok_or_else(|| {
            StoreError::Secret(format!(
                "secret {name} (version {version}) of {app} in {environment} cannot be decrypted with the master key {}\n  hint: the key file was replaced or the database was altered; restore the original key file, or set the secret again",
                key.path().display()
            ))
        })
    }
}

/// The latest version of a secret unless that version is a removal.
fn current_version(
    conn: &rusqlite::Connection,
    app: &str,
    environment: &str,
    name: &str,
) -> Result<Option<u64>> {
    let latest: Option<(u64, bool)> = conn
        .query_row(
            "SELECT version, removed FROM secrets
             WHERE app = ?1 AND environment = ?2 AND name = ?3
             ORDER BY version DESC LIMIT 1",
            params![app, environment, name],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    Ok(latest.and_then(|(version, removed)| (!removed).then_some(version)))
}

#[cfg(test)]
mod tests;
