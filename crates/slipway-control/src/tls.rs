//! Certificates for the router's TLS listener, from files: `<host>.crt` (or `.pem`, the
//! certificate chain) and `<host>.key` (its private key) in the TLS directory (by default
//! `<data dir>/tls`; `*.example.com.crt` is a wildcard). The directory is read again every
//! [`RELOAD_EVERY`] and, when a file's size or modification time changed, every certificate
//! is loaded anew and published to the router at once: a renewed certificate copied over
//! the old one is served without a restart. A pair that cannot be used is skipped with a
//! warning that names the file and says why, and the host keeps the certificate it had.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use slipway_router::tls::{TlsCerts, certified_key};

/// A file certificate is `expiring` (red) once less than a third of its lifetime, or less
/// than this, whichever is shorter, is left: time to copy a renewed one over it.
pub const FILE_EXPIRING: Duration = Duration::from_secs(30 * 86_400);

/// What `status` calls a certificate from a file valid from `not_before` to `not_after`
/// (Unix seconds) at `now`: `valid`, `expiring` or `expired`.
pub fn file_condition(not_before: i64, not_after: i64, now: i64) -> &'static str {
    let warn = ((not_after - not_before) / 3).min(FILE_EXPIRING.as_secs() as i64);
    if now >= not_after {
        "expired"
    } else if not_after - now < warn {
        "expiring"
    } else {
        "valid"
    }
}

/// The state of the file certificate of each routed host (`hosts`: host and app) that has
/// one, for `status`, `/metrics` and the dashboard.
pub fn file_certificates(
    certs: &TlsCerts,
    hosts: &[(String, String)],
) -> Vec<crate::dto::CertificateStatus> {
    let now = jiff::Timestamp::now().as_second();
    let stamp = |secs: i64| {
        jiff::Timestamp::from_second(secs)
            .map(|t| t.to_string())
            .unwrap_or_default()
    };
    hosts
        .iter()
        .filter_map(|(host, app)| {
            let key = certs.file_cert(host)?;
            let (_, cert) = x509_parser::parse_x509_certificate(key.cert.first()?).ok()?;
            let validity = cert.validity();
            let (not_before, not_after) = (
                validity.not_before.timestamp(),
                validity.not_after.timestamp(),
            );
            Some(crate::dto::CertificateStatus {
                host: host.clone(),
                app: app.clone(),
                source: "file".into(),
                state: file_condition(not_before, not_after, now).into(),
                not_before: Some(stamp(not_before)),
                not_after: Some(stamp(not_after)),
                expires_in_secs: Some(not_after - now),
                ..crate::dto::CertificateStatus::default()
            })
        })
        .collect()
}

/// How often the TLS directory is looked at for changes.
pub const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// What the directory held at the last look: file name -> (size, modification time).
type Signature = Vec<(String, u64, Option<SystemTime>)>;

fn signature(dir: &Path) -> Signature {
    let mut files: Signature = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let meta = entry.metadata().ok()?;
            meta.is_file().then(|| {
                (
                    entry.file_name().to_string_lossy().into_owned(),
                    meta.len(),
                    meta.modified().ok(),
                )
            })
        })
        .collect();
    files.sort();
    files
}

/// Loads every certificate pair in `dir`. Returns the certificates by host and one message
/// per pair that could not be used.
pub fn load_dir(
    dir: &Path,
) -> (
    HashMap<String, Arc<rustls::sign::CertifiedKey>>,
    Vec<String>,
) {
    let mut certs = HashMap::new();
    let mut problems = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (certs, problems);
    };
    let mut names: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    names.sort();
    for cert_path in names {
        let Some(file) = cert_path.file_name().and_then(|f| f.to_str()) else {
            continue;
        };
        let Some(host) = file
            .strip_suffix(".crt")
            .or_else(|| file.strip_suffix(".pem"))
        else {
            continue;
        };
        let key_path = dir.join(format!("{host}.key"));
        let loaded = std::fs::read(&cert_path)
            .map_err(|e| format!("cannot read it: {e}"))
            .and_then(|cert| {
                let key = std::fs::read(&key_path)
                    .map_err(|e| format!("cannot read its key {}: {e}", key_path.display()))?;
                certified_key(&cert, &key)
            });
        match loaded {
            Ok(key) => {
                certs.insert(host.to_ascii_lowercase(), Arc::new(key));
            }
            Err(why) => problems.push(format!(
                "TLS certificate {} not used: {why}",
                cert_path.display()
            )),
        }
    }
    (certs, problems)
}

/// Loads `dir` into `certs` now, then again whenever its files change, until `cancel`.
/// A host whose new files cannot be used keeps its previous certificate.
pub async fn watch(
    certs: Arc<TlsCerts>,
    dir: PathBuf,
    cancel: tokio_util::sync::CancellationToken,
) {
    let mut last: Option<Signature> = None;
    let mut current: HashMap<String, Arc<rustls::sign::CertifiedKey>> = HashMap::new();
    loop {
        let now = tokio::task::spawn_blocking({
            let dir = dir.clone();
            move || signature(&dir)
        })
        .await
        .unwrap_or_default();
        if last.as_ref() != Some(&now) {
            let (loaded, problems) = tokio::task::spawn_blocking({
                let dir = dir.clone();
                move || load_dir(&dir)
            })
            .await
            .unwrap_or_default();
            for problem in &problems {
                tracing::warn!("{problem}");
                eprintln!("warning: {problem}");
            }
            // Hosts whose files broke keep what they had; removed files remove the host.
            let names: Vec<&str> = now.iter().map(|(name, _, _)| name.as_str()).collect();
            let mut next = loaded;
            for (host, key) in &current {
                let still_there = names.iter().any(|n| {
                    n.strip_suffix(".crt")
                        .or_else(|| n.strip_suffix(".pem"))
                        .is_some_and(|h| h.eq_ignore_ascii_case(host))
                });
                if still_there && !next.contains_key(host) {
                    next.insert(host.clone(), key.clone());
                }
            }
            certs.publish(next.clone());
            tracing::info!(hosts = ?certs.hosts(), "TLS certificates loaded");
            current = next;
            last = Some(now);
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(RELOAD_EVERY) => {}
        }
    }
}

/// The admin listener over HTTPS (`--admin-tls-cert`, `--admin-tls-key`): an
/// [`axum::serve::Listener`] that hands out connections whose TLS handshake finished. The
/// handshakes run in tasks of their own (a slow client holds up no other), within
/// [`ADMIN_HANDSHAKE_TIMEOUT`]. TLS 1.3 and 1.2 as on the router, ALPN `http/1.1` only
/// (the admin API speaks HTTP/1.1). The two files are read again when they change, as the
/// router's certificates are; a pair that cannot be used keeps the previous one.
pub struct AdminTlsListener {
    accepted: tokio::sync::mpsc::Receiver<(
        tokio_rustls::server::TlsStream<tokio::net::TcpStream>,
        std::net::SocketAddr,
    )>,
    local: std::net::SocketAddr,
}

/// How long a client of the HTTPS admin listener may take to finish its handshake.
pub const ADMIN_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the admin certificate pair; the error names the files and says why.
fn load_pair(cert: &Path, key: &Path) -> Result<Arc<rustls::sign::CertifiedKey>, String> {
    let cert_pem =
        std::fs::read(cert).map_err(|e| format!("cannot read {}: {e}", cert.display()))?;
    let key_pem = std::fs::read(key).map_err(|e| format!("cannot read {}: {e}", key.display()))?;
    certified_key(&cert_pem, &key_pem)
        .map(Arc::new)
        .map_err(|e| format!("{} and {}: {e}", cert.display(), key.display()))
}

/// Reads the admin listener's certificate pair, or says in one message why it cannot be
/// used (the server checks it before it starts anything).
///
/// # Errors
/// A file that cannot be read, or no usable certificate and matching key.
pub fn check_admin_pair(
    cert: &Path,
    key: &Path,
) -> anyhow::Result<Arc<rustls::sign::CertifiedKey>> {
    load_pair(cert, key).map_err(|why| {
        anyhow::anyhow!(
            "cannot serve the admin listener over HTTPS: {why}\n  hint: --admin-tls-cert takes the PEM certificate chain and --admin-tls-key its PEM private key"
        )
    })
}

impl AdminTlsListener {
    /// Serves HTTPS on `listener` with the certificate chain in `cert` and its key in `key`,
    /// until `cancel`.
    ///
    /// # Errors
    /// The files cannot be read or do not hold a usable certificate and key.
    pub fn new(
        listener: tokio::net::TcpListener,
        cert: PathBuf,
        key: PathBuf,
        cancel: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<AdminTlsListener> {
        let certs = TlsCerts::new();
        let pair = check_admin_pair(&cert, &key)?;
        certs.publish(HashMap::from([(
            slipway_router::tls::DEFAULT_HOST.to_owned(),
            pair,
        )]));
        let mut config = (*slipway_router::tls::server_config(certs.clone())).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let local = listener.local_addr()?;
        let (tx, accepted) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = tokio::select! {
                    () = tx.closed() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(err) => {
                            tracing::warn!(error = %err, "accepting an admin connection failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(ADMIN_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await
                    {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, peer)).await;
                        }
                        Ok(Err(err)) => {
                            tracing::debug!(%peer, error = %err, "admin TLS handshake failed");
                        }
                        Err(_) => {}
                    }
                });
            }
        });
        tokio::spawn(async move {
            let stamp = |path: &Path| {
                std::fs::metadata(path)
                    .ok()
                    .map(|m| (m.len(), m.modified().ok()))
            };
            let mut last = (stamp(&cert), stamp(&key));
            loop {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(RELOAD_EVERY) => {}
                }
                let now = (stamp(&cert), stamp(&key));
                if now == last {
                    continue;
                }
                match load_pair(&cert, &key) {
                    Ok(pair) => {
                        certs.publish(HashMap::from([(
                            slipway_router::tls::DEFAULT_HOST.to_owned(),
                            pair,
                        )]));
                        tracing::info!("admin TLS certificate reloaded");
                        last = now;
                    }
                    // Retried at the next change; a half-copied pair is left alone until then.
                    Err(why) => {
                        tracing::warn!("admin TLS certificate not reloaded: {why}");
                        eprintln!("warning: admin TLS certificate not reloaded: {why}");
                        last = now;
                    }
                }
            }
        });
        Ok(AdminTlsListener { accepted, local })
    }
}

impl axum::serve::Listener for AdminTlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(accepted) => accepted,
            // The accept task ended (shutdown): nothing more comes.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_certificate_is_expiring_in_its_last_third_or_last_30_days() {
        let day = 86_400;
        // 90 days: the last 30 (a third) are red.
        assert_eq!(file_condition(0, 90 * day, 59 * day), "valid");
        assert_eq!(file_condition(0, 90 * day, 61 * day), "expiring");
        assert_eq!(file_condition(0, 90 * day, 90 * day), "expired");
        // A year: the last 30 days.
        assert_eq!(file_condition(0, 365 * day, 300 * day), "valid");
        assert_eq!(file_condition(0, 365 * day, 340 * day), "expiring");
        // One day: the last 8 hours.
        assert_eq!(file_condition(0, day, day / 2), "valid");
        assert_eq!(file_condition(0, day, day - 3600), "expiring");
    }
}
