//! Certificates obtained and renewed over ACME (RFC 8555) for the hosts the deployed apps
//! serve, when the server is given an ACME directory (`--acme-directory`).
//!
//! [`Acme::run`] looks at the router's route table every second. Each host it routes that
//! has no certificate from a file, is a public-looking name (not `localhost` or
//! `*.localhost`, not an IP address) and has no issued certificate yet, or one past
//! [`RENEW_AT`] of its lifetime, gets a new order. The challenge is answered by the router
//! itself, from maps this module publishes: HTTP-01 on the plain listener
//! ([`Router::publish_http_challenges`]) or TLS-ALPN-01 on the TLS listener
//! ([`TlsCerts::publish_challenges`], a self-signed certificate with the `acmeIdentifier`
//! extension). The router's threads only read those maps; every network call, file and store
//! write happens here, on the control plane.
//!
//! A failed attempt is retried after [`FIRST_RETRY`], doubling up to [`LAST_RETRY`]; while it
//! fails, a host keeps the certificate it had. Every outcome is an event of the host's app
//! (`certificate.issued`, `certificate.renewed`, `certificate.failed`), and the state of
//! each host is in `status`, `/metrics` and the dashboard ([`Acme::certificates`]).
//!
//! The account's credentials (its private key) and every certificate with its private key
//! are kept under `<data dir>/acme/`, sealed with the data directory's master key
//! (XChaCha20-Poly1305, as secrets are), and loaded again at start: a restart serves the
//! certificates it had without asking the CA.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use rustls::crypto::ring;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use slipway_core::events::EventKind;
use slipway_router::Router;
use slipway_router::tls::{TlsCerts, certified_key};
use slipway_state::{MasterKey, NewEvent, Store};
use tokio_util::sync::CancellationToken;

use crate::dto;

/// The share of a certificate's lifetime after which it is renewed (Let's Encrypt's own
/// advice: renew 90-day certificates after 60 days). Past it, `status` calls the
/// certificate `expiring` (red in the dashboard) until a renewal succeeds.
pub const RENEW_AT: f64 = 2.0 / 3.0;

/// The wait after a first failure; it doubles with each further failure.
pub const FIRST_RETRY: Duration = Duration::from_secs(5);

/// The longest wait between two attempts.
pub const LAST_RETRY: Duration = Duration::from_secs(3600);

/// How often the route table is looked at for hosts that need a certificate.
const LOOK_EVERY: Duration = Duration::from_secs(1);

/// How long one order may take (validation, then issuance) before it counts as failed.
const ORDER_TIMEOUT: Duration = Duration::from_secs(90);

/// How the CA validates that the server controls a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChallengeKind {
    /// `http-01`: the CA fetches `http://<host>/.well-known/acme-challenge/<token>` (port 80).
    Http01,
    /// `tls-alpn-01`: the CA connects to `<host>:443` offering ALPN `acme-tls/1`.
    TlsAlpn01,
}

impl std::str::FromStr for ChallengeKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "http-01" => Ok(ChallengeKind::Http01),
            "tls-alpn-01" => Ok(ChallengeKind::TlsAlpn01),
            other => Err(format!(
                "unknown ACME challenge `{other}`; use http-01 or tls-alpn-01"
            )),
        }
    }
}

impl ChallengeKind {
    fn as_str(self) -> &'static str {
        match self {
            ChallengeKind::Http01 => "http-01",
            ChallengeKind::TlsAlpn01 => "tls-alpn-01",
        }
    }
}

/// Where certificates come from and who asks for them.
#[derive(Debug, Clone)]
pub struct AcmeSettings {
    /// The CA's directory URL, e.g. Let's Encrypt's
    /// `https://acme-v02.api.letsencrypt.org/directory`.
    pub directory: String,
    /// A PEM file with a root certificate to trust for the CA's own HTTPS (a test CA such
    /// as pebble); the platform's roots otherwise.
    pub ca_file: Option<PathBuf>,
    /// The account's contact address, e.g. `ops@example.com` (the CA writes about expiring
    /// certificates and problems).
    pub email: Option<String>,
    /// The challenge used first; a failed attempt tries the other one next.
    pub challenge: ChallengeKind,
}

/// An issued certificate in use.
#[derive(Clone)]
struct Issued {
    key: Arc<CertifiedKey>,
    /// Validity, in seconds since the Unix epoch.
    not_before: i64,
    not_after: i64,
}

impl Issued {
    fn renew_after(&self) -> i64 {
        self.not_before + ((self.not_after - self.not_before) as f64 * RENEW_AT) as i64
    }
}

/// What is known of one host.
#[derive(Default)]
struct HostState {
    /// The app key whose route the host belongs to (events go to that app).
    app: String,
    issued: Option<Issued>,
    /// Failures since the last success.
    failures: u32,
    /// Failures since the server started.
    failures_total: u64,
    /// Certificates obtained since the server started.
    issued_total: u64,
    last_error: Option<String>,
    /// When the next attempt may start (after a failure).
    next_attempt: Option<SystemTime>,
}

/// What the account file holds: the directory it belongs to and its credentials.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// What a certificate file holds.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredCert {
    chain_pem: String,
    key_pem: String,
}

/// The ACME client of the server: see the module documentation.
pub struct Acme {
    settings: AcmeSettings,
    dir: PathBuf,
    router: Arc<Router>,
    certs: Arc<TlsCerts>,
    store: Arc<Store>,
    key: Arc<MasterKey>,
    hosts: Mutex<BTreeMap<String, HostState>>,
    http_challenges: Mutex<HashMap<String, String>>,
    alpn_challenges: Mutex<HashMap<String, Arc<CertifiedKey>>>,
    account: tokio::sync::Mutex<Option<Account>>,
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Whether a public CA can issue for `host`: a DNS name with a dot, not `localhost` or below
/// it, not an IP address, not a wildcard.
pub fn eligible(host: &str) -> bool {
    host.contains('.')
        && !host.contains('*')
        && host != "localhost"
        && !host.ends_with(".localhost")
        && host.parse::<std::net::IpAddr>().is_err()
}

/// The delay before attempt `failures + 1` after `failures` failures in a row.
pub fn backoff(failures: u32) -> Duration {
    let doubled = FIRST_RETRY.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    doubled.min(LAST_RETRY)
}

/// Checks that `path` holds a PEM certificate to trust for the ACME server (`--acme-ca`).
///
/// # Errors
/// A file that cannot be read or holds no certificate, said in one message with a hint.
pub fn check_ca_file(path: &Path) -> anyhow::Result<()> {
    use rustls::pki_types::pem::PemObject;
    let hint = "--acme-ca takes the PEM root certificate of the ACME server's own HTTPS listener";
    let pem = std::fs::read(path).map_err(|e| {
        anyhow!(
            "cannot read the ACME CA file {}: {e}\n  hint: {hint}",
            path.display()
        )
    })?;
    match CertificateDer::pem_slice_iter(&pem).next() {
        Some(Ok(_)) => Ok(()),
        _ => bail!(
            "the ACME CA file {} holds no PEM certificate\n  hint: {hint}",
            path.display()
        ),
    }
}

/// Reads the validity of the first certificate of a PEM chain, in Unix seconds.
fn validity(chain_pem: &str) -> anyhow::Result<(i64, i64)> {
    use rustls::pki_types::pem::PemObject;
    let first = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .next()
        .ok_or_else(|| anyhow!("the chain holds no certificate"))?
        .context("the chain is not valid PEM")?;
    let (_, cert) = x509_parser::parse_x509_certificate(&first)
        .map_err(|e| anyhow!("the certificate cannot be parsed: {e}"))?;
    let validity = cert.validity();
    Ok((
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
    ))
}

fn load_issued(chain_pem: &str, key_pem: &str) -> anyhow::Result<Issued> {
    let key = certified_key(chain_pem.as_bytes(), key_pem.as_bytes()).map_err(|e| anyhow!(e))?;
    let (not_before, not_after) = validity(chain_pem)?;
    Ok(Issued {
        key: Arc::new(key),
        not_before,
        not_after,
    })
}

/// The TLS-ALPN-01 certificate for `host` (RFC 8737): self-signed, for that name only,
/// carrying the SHA-256 digest of the key authorization in a critical `acmeIdentifier`
/// extension.
fn alpn_challenge_cert(host: &str, digest: &[u8]) -> anyhow::Result<CertifiedKey> {
    let mut params = rcgen::CertificateParams::new(vec![host.to_owned()])?;
    params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
    let key_pair = rcgen::KeyPair::generate()?;
    let cert = params.self_signed(&key_pair)?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pair.serialize_der()));
    let signer = ring::sign::any_supported_type(&key)
        .map_err(|e| anyhow!("the challenge key cannot be used: {e}"))?;
    // `CertifiedKey::from_der` would refuse the critical extension it does not know.
    Ok(CertifiedKey::new(vec![cert.der().clone()], signer))
}

impl Acme {
    /// The client for `settings`, keeping its files in `<data_dir>/acme`.
    pub fn new(
        settings: AcmeSettings,
        data_dir: &Path,
        router: Arc<Router>,
        certs: Arc<TlsCerts>,
        store: Arc<Store>,
        key: Arc<MasterKey>,
    ) -> Arc<Acme> {
        Arc::new(Acme {
            settings,
            dir: data_dir.join("acme"),
            router,
            certs,
            store,
            key,
            hosts: Mutex::new(BTreeMap::new()),
            http_challenges: Mutex::new(HashMap::new()),
            alpn_challenges: Mutex::new(HashMap::new()),
            account: tokio::sync::Mutex::new(None),
        })
    }

    fn cert_path(&self, host: &str) -> PathBuf {
        self.dir.join("certs").join(format!("{host}.sealed"))
    }

    /// Loads the certificates stored by an earlier run and publishes them. A file that
    /// cannot be opened (another master key, damaged) is skipped with a warning.
    pub fn load_stored(&self) {
        let Ok(entries) = std::fs::read_dir(self.dir.join("certs")) else {
            return;
        };
        let mut loaded = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(host) = name.strip_suffix(".sealed") else {
                continue;
            };
            let issued = std::fs::read(entry.path())
                .map_err(|e| anyhow!("cannot read it: {e}"))
                .and_then(|sealed| {
                    let plain = self
                        .key
                        .open(&format!("acme-cert:{host}"), &sealed)
                        .ok_or_else(|| anyhow!("it does not open with the master key"))?;
                    let stored: StoredCert = serde_json::from_slice(&plain)?;
                    load_issued(&stored.chain_pem, &stored.key_pem)
                });
            match issued {
                Ok(issued) => {
                    self.hosts
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(host.to_owned())
                        .or_default()
                        .issued = Some(issued);
                    loaded += 1;
                }
                Err(err) => {
                    let message = format!(
                        "stored ACME certificate {} not used: {err:#}",
                        entry.path().display()
                    );
                    tracing::warn!("{message}");
                    eprintln!("warning: {message}");
                }
            }
        }
        tracing::info!(loaded, "stored ACME certificates loaded");
        self.publish_issued();
    }

    fn publish_issued(&self) {
        let by_host = self
            .hosts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter_map(|(host, state)| Some((host.clone(), state.issued.as_ref()?.key.clone())))
            .collect();
        self.certs.publish_issued(by_host);
    }

    /// Obtains and renews certificates until `cancel`.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        loop {
            let table = self.router.table();
            let now = SystemTime::now();
            let due: Vec<(String, String)> = {
                let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
                table
                    .hosts()
                    .into_iter()
                    .filter(|(host, _)| eligible(host) && !self.certs.has_file_cert(host))
                    .filter(|(host, app)| {
                        let state = hosts.entry(host.clone()).or_default();
                        state.app.clone_from(app);
                        let wanted = state
                            .issued
                            .as_ref()
                            .is_none_or(|issued| unix_now() >= issued.renew_after());
                        wanted && state.next_attempt.is_none_or(|at| now >= at)
                    })
                    .collect()
            };
            for (host, app) in due {
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = self.obtain(&host, &app) => {}
                }
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(LOOK_EVERY) => {}
            }
        }
    }

    /// One attempt at a certificate for `host`, with its outcome recorded.
    async fn obtain(&self, host: &str, app: &str) {
        let (renewal, failures) = {
            let hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
            let state = hosts.get(host);
            (
                state.is_some_and(|s| s.issued.is_some()),
                state.map_or(0, |s| s.failures),
            )
        };
        // After a failure the other challenge is tried: a firewall in front of one port
        // does not stop issuance over the other.
        let challenge = match (self.settings.challenge, failures % 2) {
            (kind, 0) => kind,
            (ChallengeKind::Http01, _) => ChallengeKind::TlsAlpn01,
            (ChallengeKind::TlsAlpn01, _) => ChallengeKind::Http01,
        };
        tracing::info!(%host, challenge = challenge.as_str(), renewal, "requesting a certificate over ACME");
        let result = tokio::time::timeout(ORDER_TIMEOUT, self.order(host, challenge))
            .await
            .unwrap_or_else(|_| {
                Err(anyhow!(
                    "the order took longer than {}s",
                    ORDER_TIMEOUT.as_secs()
                ))
            });
        self.clear_challenges(host);
        let result = result.and_then(|stored| {
            let issued = load_issued(&stored.chain_pem, &stored.key_pem)?;
            self.save(host, &stored)?;
            Ok(issued)
        });
        let (kind, message) = match result {
            Ok(issued) => {
                let expires = jiff::Timestamp::from_second(issued.not_after)
                    .map(|t| t.to_string())
                    .unwrap_or_default();
                {
                    let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
                    let state = hosts.entry(host.to_owned()).or_default();
                    state.issued = Some(issued);
                    state.failures = 0;
                    state.issued_total += 1;
                    state.last_error = None;
                    state.next_attempt = None;
                }
                self.publish_issued();
                tracing::info!(%host, %expires, "certificate obtained over ACME");
                if renewal {
                    (
                        EventKind::CertificateRenewed,
                        format!(
                            "certificate for {host} renewed over ACME ({}), valid until {expires}",
                            challenge.as_str()
                        ),
                    )
                } else {
                    (
                        EventKind::CertificateIssued,
                        format!(
                            "certificate for {host} issued over ACME ({}), valid until {expires}",
                            challenge.as_str()
                        ),
                    )
                }
            }
            Err(err) => {
                let wait = backoff(failures + 1);
                let error = format!("{err:#}");
                if error.contains("accountDoesNotExist") {
                    // The CA forgot the account (a reset test CA, a deactivated account): the
                    // next attempt registers a new one.
                    *self.account.lock().await = None;
                    let _ = std::fs::remove_file(self.dir.join("account.sealed"));
                    tracing::warn!(
                        "the ACME server does not know the stored account; a new one will be created"
                    );
                }
                {
                    let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
                    let state = hosts.entry(host.to_owned()).or_default();
                    state.failures += 1;
                    state.failures_total += 1;
                    state.last_error = Some(error.clone());
                    state.next_attempt = Some(SystemTime::now() + wait);
                }
                tracing::warn!(%host, error = %error, "obtaining a certificate over ACME failed");
                (
                    EventKind::CertificateFailed,
                    format!(
                        "{} for {host} failed ({}): {error}; next attempt in {}s",
                        if renewal {
                            "certificate renewal"
                        } else {
                            "certificate issuance"
                        },
                        challenge.as_str(),
                        wait.as_secs()
                    ),
                )
            }
        };
        let event = NewEvent {
            app,
            service: None,
            revision: None,
            kind,
            message,
        };
        if let Err(err) = self.store.add_event(&event) {
            tracing::warn!(%err, "could not record a certificate event");
        }
    }

    /// The account, created (and stored sealed) on first use.
    async fn account(&self) -> anyhow::Result<Account> {
        let mut cached = self.account.lock().await;
        if let Some(account) = cached.as_ref() {
            return Ok(account.clone());
        }
        let path = self.dir.join("account.sealed");
        let builder = || match &self.settings.ca_file {
            Some(ca) => Account::builder_with_root(ca).with_context(|| {
                format!(
                    "cannot use {} as the ACME server's CA (--acme-ca)",
                    ca.display()
                )
            }),
            None => Account::builder().context("cannot set up the HTTPS client for ACME"),
        };
        let stored: Option<StoredAccount> = match std::fs::read(&path) {
            Ok(sealed) => {
                let plain = self.key.open("acme-account", &sealed).ok_or_else(|| {
                    anyhow!(
                        "the ACME account file {} does not open with the master key",
                        path.display()
                    )
                })?;
                Some(serde_json::from_slice(&plain)?)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => bail!("cannot read {}: {e}", path.display()),
        };
        let account = match stored {
            Some(stored) if stored.directory == self.settings.directory => builder()?
                .from_credentials(stored.credentials)
                .await
                .context("cannot restore the ACME account")?,
            _ => {
                let contact = self
                    .settings
                    .email
                    .as_ref()
                    .map(|email| format!("mailto:{email}"));
                let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
                let (account, credentials) = builder()?
                    .create(
                        &NewAccount {
                            contact: &contact,
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        self.settings.directory.clone(),
                        None,
                    )
                    .await
                    .with_context(|| {
                        format!(
                            "cannot create an account at the ACME directory {}",
                            self.settings.directory
                        )
                    })?;
                let stored = StoredAccount {
                    directory: self.settings.directory.clone(),
                    credentials,
                };
                let sealed = self
                    .key
                    .seal("acme-account", &serde_json::to_vec(&stored)?)?;
                write_private(&path, &sealed)?;
                tracing::info!(id = account.id(), "ACME account created");
                account
            }
        };
        *cached = Some(account.clone());
        Ok(account)
    }

    /// Orders a certificate for `host`, answering its challenge the `challenge` way.
    async fn order(&self, host: &str, challenge: ChallengeKind) -> anyhow::Result<StoredCert> {
        let account = self.account().await?;
        let identifiers = [Identifier::Dns(host.to_owned())];
        let mut order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .context("the CA refused the order")?;
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization?;
            match authorization.status {
                // The CA remembers an earlier validation of this account for the name.
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                other => bail!("the CA's authorization for {host} is {other:?}"),
            }
            let kind = match challenge {
                ChallengeKind::Http01 => ChallengeType::Http01,
                ChallengeKind::TlsAlpn01 => ChallengeType::TlsAlpn01,
            };
            let mut handle = authorization.challenge(kind).ok_or_else(|| {
                anyhow!(
                    "the CA offers no {} challenge for {host}",
                    challenge.as_str()
                )
            })?;
            let key_authorization = handle.key_authorization();
            match challenge {
                ChallengeKind::Http01 => {
                    let mut map = self
                        .http_challenges
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    map.insert(handle.token.clone(), key_authorization.as_str().to_owned());
                    self.router.publish_http_challenges(map.clone());
                }
                ChallengeKind::TlsAlpn01 => {
                    let cert = alpn_challenge_cert(host, key_authorization.digest().as_ref())?;
                    let mut map = self
                        .alpn_challenges
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    map.insert(host.to_owned(), Arc::new(cert));
                    self.certs.publish_challenges(map.clone());
                }
            }
            handle
                .set_ready()
                .await
                .context("the CA refused the challenge")?;
        }
        let retries = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .timeout(Duration::from_secs(60));
        let status = match order.poll_ready(&retries).await {
            Ok(status) => status,
            Err(instant_acme::Error::Api(problem)) => bail!("the CA says: {problem}"),
            Err(err) => return Err(err).context("waiting for the validation"),
        };
        if status != OrderStatus::Ready {
            // Say why: the failed challenge carries the CA's reason.
            let mut reasons = Vec::new();
            let mut authorizations = order.authorizations();
            while let Some(Ok(mut authorization)) = authorizations.next().await {
                if let Ok(state) = authorization.refresh().await {
                    reasons.extend(
                        state
                            .challenges
                            .iter()
                            .filter_map(|c| c.error.as_ref().map(|e| e.to_string())),
                    );
                }
            }
            bail!(
                "the CA did not validate {host} (order {status:?}){}{}",
                if reasons.is_empty() { "" } else { ": " },
                reasons.join("; ")
            );
        }
        let key_pem = order.finalize().await.context("finalizing the order")?;
        let chain_pem = order
            .poll_certificate(&retries)
            .await
            .context("fetching the certificate")?;
        Ok(StoredCert { chain_pem, key_pem })
    }

    fn clear_challenges(&self, host: &str) {
        let mut alpn = self
            .alpn_challenges
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if alpn.remove(host).is_some() {
            self.certs.publish_challenges(alpn.clone());
        }
        // Orders run one at a time: once one ends, no HTTP-01 token is needed any more.
        let mut http = self
            .http_challenges
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if !http.is_empty() {
            http.clear();
            self.router.publish_http_challenges(HashMap::new());
        }
    }

    fn save(&self, host: &str, stored: &StoredCert) -> anyhow::Result<()> {
        let sealed = self
            .key
            .seal(&format!("acme-cert:{host}"), &serde_json::to_vec(stored)?)?;
        write_private(&self.cert_path(host), &sealed)
    }

    /// Every host with an ACME state, for `status`, `/metrics` and the dashboard.
    pub fn certificates(&self) -> Vec<dto::CertificateStatus> {
        let now = unix_now();
        let hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        hosts
            .iter()
            .filter(|(_, state)| !state.app.is_empty() || state.issued.is_some())
            // A certificate file took over the host: the issued one is no longer served.
            .filter(|(host, _)| !self.certs.has_file_cert(host))
            .map(|(host, state)| {
                let stamp = |secs: i64| {
                    jiff::Timestamp::from_second(secs)
                        .map(|t| t.to_string())
                        .unwrap_or_default()
                };
                let condition = condition(
                    state.issued.as_ref().map(|i| (i.not_before, i.not_after)),
                    state.last_error.is_some(),
                    now,
                );
                dto::CertificateStatus {
                    host: host.clone(),
                    app: state.app.clone(),
                    source: "acme".into(),
                    state: condition.into(),
                    not_before: state.issued.as_ref().map(|i| stamp(i.not_before)),
                    not_after: state.issued.as_ref().map(|i| stamp(i.not_after)),
                    expires_in_secs: state.issued.as_ref().map(|i| i.not_after - now),
                    renew_after: state.issued.as_ref().map(|i| stamp(i.renew_after())),
                    failures: state.failures,
                    failures_total: state.failures_total,
                    issued_total: state.issued_total,
                    last_error: state.last_error.clone(),
                    next_attempt_in_secs: state.next_attempt.map(|at| {
                        at.duration_since(SystemTime::now())
                            .map_or(0, |d| d.as_secs())
                    }),
                }
            })
            .collect()
    }
}

/// What `status` calls a host's certificate, from its validity (Unix seconds), whether
/// attempts fail, and the time: `expired`, `expiring` (past the renewal point: a renewal
/// should have replaced it), `valid`; without one, `failed` or `pending`.
pub fn condition(validity: Option<(i64, i64)>, failing: bool, now: i64) -> &'static str {
    match validity {
        Some((_, not_after)) if now >= not_after => "expired",
        Some((not_before, not_after))
            if now >= not_before + ((not_after - not_before) as f64 * RENEW_AT) as i64 =>
        {
            "expiring"
        }
        Some(_) => "valid",
        None if failing => "failed",
        None => "pending",
    }
}

/// Writes `bytes` to `path` (mode 0600, its folder 0700) through a temporary file and a
/// rename, so a crash never leaves half a file.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = path.parent().expect("a file under the data dir");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_names_a_public_ca_can_issue_for_are_eligible() {
        assert!(eligible("shop.example.com"));
        assert!(!eligible("web.shop.localhost"));
        assert!(!eligible("localhost"));
        assert!(!eligible("intranet"));
        assert!(!eligible("127.0.0.1"));
        assert!(!eligible("*.example.com"));
    }

    #[test]
    fn a_certificate_past_two_thirds_of_its_lifetime_is_expiring() {
        // 90 days from 0: renewal after day 60.
        let day = 86_400;
        let validity = Some((0, 90 * day));
        assert_eq!(condition(validity, false, 59 * day), "valid");
        assert_eq!(condition(validity, false, 60 * day), "expiring");
        assert_eq!(condition(validity, true, 89 * day), "expiring");
        assert_eq!(condition(validity, true, 90 * day), "expired");
        assert_eq!(condition(None, true, 0), "failed");
        assert_eq!(condition(None, false, 0), "pending");
    }

    #[test]
    fn retries_back_off_exponentially_up_to_an_hour() {
        assert_eq!(backoff(1), FIRST_RETRY);
        assert_eq!(backoff(2), FIRST_RETRY * 2);
        assert_eq!(backoff(3), FIRST_RETRY * 4);
        assert_eq!(backoff(40), LAST_RETRY);
    }

    #[test]
    fn a_tls_alpn_challenge_certificate_names_the_host_and_carries_the_digest() {
        let digest = [0xab; 32];
        let cert = alpn_challenge_cert("shop.example.com", &digest).unwrap();
        let (_, parsed) = x509_parser::parse_x509_certificate(&cert.cert[0]).unwrap();
        let ext = parsed
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("the acmeIdentifier extension");
        assert!(ext.critical);
        // An OCTET STRING of the 32-byte digest.
        assert_eq!(&ext.value[2..], &digest);
        let san = parsed.subject_alternative_name().unwrap().unwrap();
        assert_eq!(
            format!("{:?}", san.value.general_names),
            "[DNSName(\"shop.example.com\")]"
        );
    }
}
