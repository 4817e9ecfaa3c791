//! API tokens at rest: who may use the admin listener, with which role, in which
//! environments, until when. A token's value is never stored, only the SHA-256 of it
//! (computed by the caller); a token is found by its id, the public part of its value.
//! Revoking keeps the row (so a revoked token is told apart from an unknown one) and frees
//! its name for a new token.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use slipway_core::events::EventKind;

use crate::{NewEvent, Result, Store, StoreError, insert_event, now};

/// A token as stored: everything but its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenRow {
    /// The public part of the value, by which the token is looked up.
    pub id: String,
    pub name: String,
    /// `viewer`, `deployer`, `admin` or `metrics` (checked by the control plane).
    pub role: String,
    /// The environments the token is limited to; empty: all of them.
    pub environments: Vec<String>,
    /// SHA-256 of the whole token value.
    #[serde(skip)]
    pub hash: Vec<u8>,
    pub created_at: String,
    /// RFC 3339; `None`: never expires.
    pub expires_at: Option<String>,
    pub last_used_at: Option<String>,
    pub revoked_at: Option<String>,
}

/// A token to store.
#[derive(Debug, Clone)]
pub struct NewToken<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub role: &'a str,
    pub environments: &'a [String],
    pub hash: &'a [u8],
    pub expires_at: Option<&'a str>,
}

const COLUMNS: &str =
    "id, name, role, environments, hash, created_at, expires_at, last_used_at, revoked_at";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<TokenRow> {
    let environments: String = r.get(3)?;
    Ok(TokenRow {
        id: r.get(0)?,
        name: r.get(1)?,
        role: r.get(2)?,
        environments: environments
            .split(',')
            .filter(|e| !e.is_empty())
            .map(str::to_owned)
            .collect(),
        hash: r.get(4)?,
        created_at: r.get(5)?,
        expires_at: r.get(6)?,
        last_used_at: r.get(7)?,
        revoked_at: r.get(8)?,
    })
}

// === impl Store ===

impl Store {
    /// Stores a new token and the `token.created` event in one transaction.
    ///
    /// # Errors
    /// [`StoreError::Invalid`] when a token that is not revoked has this name.
    pub fn create_token(&self, token: &NewToken<'_>) -> Result<TokenRow> {
        self.write(|tx| {
            let taken: bool = tx
                .prepare_cached("SELECT 1 FROM tokens WHERE name = ?1 AND revoked_at IS NULL")?
                .exists([token.name])?;
            if taken {
                return Err(StoreError::Invalid(format!(
                    "a token named {} exists\n  hint: choose another name, or revoke it first with `slipway token revoke {}`",
                    token.name, token.name
                )));
            }
            let created_at = now();
            tx.execute(
                "INSERT INTO tokens(id, name, role, environments, hash, created_at, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    token.id,
                    token.name,
                    token.role,
                    token.environments.join(","),
                    token.hash,
                    created_at,
                    token.expires_at
                ],
            )?;
            let scope = if token.environments.is_empty() {
                "all environments".to_owned()
            } else {
                format!("environments {}", token.environments.join(", "))
            };
            let expiry = token
                .expires_at
                .map_or("never expires".to_owned(), |at| format!("expires {at}"));
            insert_event(
                tx,
                &NewEvent {
                    app: "",
                    service: None,
                    revision: None,
                    kind: EventKind::TokenCreated,
                    message: format!(
                        "token {} created: role {}, {scope}, {expiry}",
                        token.name, token.role
                    ),
                },
            )?;
            Ok(TokenRow {
                id: token.id.to_owned(),
                name: token.name.to_owned(),
                role: token.role.to_owned(),
                environments: token.environments.to_vec(),
                hash: token.hash.to_vec(),
                created_at,
                expires_at: token.expires_at.map(str::to_owned),
                last_used_at: None,
                revoked_at: None,
            })
        })
    }

    /// The token with this id, revoked or not.
    pub fn token(&self, id: &str) -> Result<Option<TokenRow>> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare_cached(&format!("SELECT {COLUMNS} FROM tokens WHERE id = ?1"))?;
        Ok(stmt.query_row([id], row).optional()?)
    }

    /// The tokens that are not revoked, by name.
    pub fn tokens(&self) -> Result<Vec<TokenRow>> {
        let conn = self.lock();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM tokens WHERE revoked_at IS NULL ORDER BY name"
        ))?;
        let rows = stmt
            .query_map([], row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Revokes the token with this name, with the `token.revoked` event. Returns false when
    /// no token that is not revoked has this name.
    pub fn revoke_token(&self, name: &str) -> Result<bool> {
        self.write(|tx| {
            let changed = tx.execute(
                "UPDATE tokens SET revoked_at = ?1 WHERE name = ?2 AND revoked_at IS NULL",
                params![now(), name],
            )?;
            if changed == 0 {
                return Ok(false);
            }
            insert_event(
                tx,
                &NewEvent {
                    app: "",
                    service: None,
                    revision: None,
                    kind: EventKind::TokenRevoked,
                    message: format!("token {name} revoked"),
                },
            )?;
            Ok(true)
        })
    }

    /// Records that the token was used at `at` (RFC 3339).
    pub fn touch_token(&self, id: &str, at: &str) -> Result<()> {
        self.write(|tx| {
            tx.execute(
                "UPDATE tokens SET last_used_at = ?1 WHERE id = ?2",
                params![at, id],
            )?;
            Ok(())
        })
    }
}
