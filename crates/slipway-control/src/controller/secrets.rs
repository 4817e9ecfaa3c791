//! Secrets in the controller: setting and listing them, pinning their versions in a
//! revision, and decrypting them into an instance's environment.
//!
//! A revision's stored config is its [`ServiceSpec`] plus the version of every secret it
//! uses ([`StoredConfig`]). The versions are part of the digest, so setting a secret
//! makes the next `deploy` create a revision, and a rollback to an older revision starts
//! it with the older values. Values are only ever decrypted here, right before a process
//! starts; they never reach events, logs, status or API answers.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use slipway_core::app_key::AppKey;
use slipway_spec::ServiceSpec;
use slipway_state::{MasterKey, Zeroizing};

use super::{ControlError, Controller, Failure, Result};
use crate::dto;

/// What a revision stores as its config: the resolved service and the secret versions
/// it was created with.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct StoredConfig {
    #[serde(flatten)]
    pub spec: ServiceSpec,
    /// Secret name -> version. Absent in configs stored before secrets existed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secret_versions: BTreeMap<String, u64>,
    /// The digest of the stored build artifact the revision runs, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_digest: Option<String>,
    /// The digest of the snapshot of the service's folder the revision runs (see
    /// `code.rs`). Absent in revisions made before revisions held their code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The id of the image a container service's revision runs (`sha256:…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
}

impl StoredConfig {
    /// The digest that decides whether a deploy creates a revision. Without secrets it is
    /// the spec's own digest, so revisions made before secrets existed keep theirs.
    pub fn digest(&self) -> String {
        if self.secret_versions.is_empty()
            && self.artifact_digest.is_none()
            && self.code.is_none()
            && self.image_id.is_none()
        {
            return self.spec.digest();
        }
        let json = serde_json::to_vec(self).unwrap_or_default();
        let mut hasher = Sha256::new();
        hasher.update(&json);
        hex::encode(hasher.finalize())
    }
}

/// The hint that tells how to set a missing secret.
fn set_hint(name: &str, app: &str, environment: &str) -> String {
    format!("slipway secret set {name} --app {app} --env {environment}")
}

/// Secret names are environment variable names: a letter or `_`, then letters, digits
/// and `_` (the spec enforces the same for `secrets:`).
fn check_secret_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 256;
    if ok {
        Ok(())
    } else {
        Err(ControlError::Invalid(format!(
            "`{name}` is not a valid secret name: use letters, digits and `_`, not starting with a digit (it becomes an environment variable)"
        )))
    }
}

// === impl Controller (secrets) ===

impl Controller {
    /// Where the master key lives: `SLIPWAY_MASTER_KEY_FILE`, or `<data dir>/master.key`.
    fn master_key_path(&self) -> PathBuf {
        std::env::var_os("SLIPWAY_MASTER_KEY_FILE")
            .map(PathBuf::from)
            .unwrap_or_else(|| self.config.data_dir.join("master.key"))
    }

    /// The master key, created on first use when `create` is set.
    pub(crate) fn master_key(&self, create: bool) -> Result<Arc<MasterKey>> {
        let mut cached = self.master_key.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(key) = cached.as_ref() {
            return Ok(key.clone());
        }
        let path = self.master_key_path();
        let key = if create {
            MasterKey::load_or_create(&path)?
        } else {
            MasterKey::load(&path)?.ok_or_else(|| {
                ControlError::Invalid(format!(
                    "the master key {} is missing, so no secret can be read\n  hint: restore it (or point SLIPWAY_MASTER_KEY_FILE at it), or set the secrets again",
                    path.display()
                ))
            })?
        };
        let key = Arc::new(key);
        *cached = Some(key.clone());
        Ok(key)
    }

    /// Stores a new version of a secret of the app stored under `key`; returns the version.
    pub fn set_secret(&self, key: &AppKey, name: &str, value: &[u8]) -> Result<u64> {
        check_secret_name(name)?;
        if std::str::from_utf8(value).is_err() || value.contains(&0) {
            return Err(ControlError::Invalid(format!(
                "the value of secret {name} must be UTF-8 text without NUL bytes (it becomes an environment variable)"
            )));
        }
        let master = self.master_key(true)?;
        Ok(self.store.set_secret(
            &master,
            key.app(),
            key.environment(),
            name,
            value,
            key.as_str(),
        )?)
    }

    /// Removes a secret; revisions that use an older version keep it.
    pub fn remove_secret(&self, key: &AppKey, name: &str) -> Result<()> {
        check_secret_name(name)?;
        let (app, environment) = (key.app(), key.environment());
        if self
            .store
            .remove_secret(app, environment, name, key.as_str())?
        {
            Ok(())
        } else {
            Err(ControlError::NotFound(format!(
                "app {app} has no secret {name} in environment {environment}; `slipway secret list --app {app} --env {environment}` shows the ones it has"
            )))
        }
    }

    /// The secrets set for the app stored under `key`: names and versions, never values.
    pub fn secrets(&self, key: &AppKey) -> Result<Vec<dto::SecretInfo>> {
        Ok(self
            .store
            .secrets(key.app(), key.environment())?
            .into_iter()
            .map(|s| dto::SecretInfo {
                name: s.name,
                version: s.version,
                updated_at: s.updated_at,
            })
            .collect())
    }

    /// The current version of each secret `spec` needs, or the first that is missing
    /// with the command that sets it.
    pub(super) fn secret_versions(
        &self,
        key: &AppKey,
        service: &str,
        spec: &ServiceSpec,
    ) -> Result<BTreeMap<String, u64>, String> {
        let (app, environment) = (key.app(), key.environment());
        let mut versions = BTreeMap::new();
        for name in &spec.secrets {
            match self.store.secret_version(app, environment, name) {
                Ok(Some(version)) => {
                    versions.insert(name.clone(), version);
                }
                Ok(None) => {
                    return Err(format!(
                        "service {service} needs secret {name}, which is not set for app {app} in environment {environment}; nothing was started\n  hint: {}",
                        set_hint(name, app, environment)
                    ));
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(versions)
    }

    /// The stored config of a revision, with its secret versions.
    pub(super) fn stored_config(
        &self,
        key: &AppKey,
        service: &str,
        revision: u64,
    ) -> Result<StoredConfig, Failure> {
        let row = self
            .store
            .revision(key.as_str(), service, revision)
            .map_err(Failure::from)?
            .ok_or_else(|| {
                Failure::msg(format!("revision {revision} of {service} does not exist"))
            })?;
        serde_json::from_str(&row.config).map_err(|e| {
            Failure::msg(format!(
                "the stored config of revision {revision} of {service} cannot be read by this slipway ({e})"
            ))
        })
    }

    /// The decrypted secrets of a revision, as environment variables.
    pub(super) fn secret_env(
        &self,
        key: &AppKey,
        versions: &BTreeMap<String, u64>,
    ) -> Result<Vec<(String, Zeroizing<String>)>, Failure> {
        if versions.is_empty() {
            return Ok(Vec::new());
        }
        let master = self.master_key(false).map_err(Failure::from)?;
        let (app, environment) = (key.app(), key.environment());
        let mut env = Vec::with_capacity(versions.len());
        for (name, version) in versions {
            let value = self
                .store
                .secret_value(&master, app, environment, name, *version)
                .map_err(Failure::from)?;
            let text = String::from_utf8(value.to_vec()).map_err(|_| {
                Failure::msg(format!("secret {name} (version {version}) is not UTF-8"))
            })?;
            env.push((name.clone(), Zeroizing::new(text)));
        }
        Ok(env)
    }
}
