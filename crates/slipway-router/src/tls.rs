//! HTTPS: the certificates the TLS listener presents, chosen by SNI, and the rustls server
//! configuration around them.
//!
//! [`TlsCerts`] maps host names to certified keys behind an `ArcSwap`, so the control plane
//! can replace the whole map (a certificate file changed on disk, a host added) while
//! handshakes go on; rustls's built-in SNI resolver cannot change after it is built. A name
//! without a certificate of its own may use a wildcard one (`*.example.com` covers
//! `a.example.com`, not `a.b.example.com`); a client without SNI, or with a name that has no
//! certificate, gets the one published as [`DEFAULT_HOST`] if any. The server speaks TLS 1.3 and 1.2 with rustls's
//! default (modern, forward-secret, AEAD-only) cipher suites, and offers HTTP/2 and HTTP/1.1
//! over ALPN.
//!
//! Certificates come in two layers: those from files ([`TlsCerts::publish`]) and those
//! issued over ACME ([`TlsCerts::publish_issued`]); a host's own file certificate wins over
//! an issued one, and an issued one over a wildcard file. For the ACME TLS-ALPN-01 challenge
//! (RFC 8737) the control plane publishes one self-signed challenge certificate per host
//! ([`TlsCerts::publish_challenges`]); a client that offers only the `acme-tls/1` protocol
//! gets that certificate, and its connection is closed after the handshake.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::ring;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// The certificates of the TLS listener, by host name (lowercase).
#[derive(Debug, Default)]
pub struct TlsCerts {
    by_host: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
    /// Certificates issued over ACME, by host.
    issued: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
    /// TLS-ALPN-01 challenge certificates, by host.
    challenges: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
}

/// The ALPN protocol of the ACME TLS-ALPN-01 challenge (RFC 8737).
pub const ACME_TLS_ALPN: &[u8] = b"acme-tls/1";

fn lowercase_keys(
    map: HashMap<String, Arc<CertifiedKey>>,
) -> Arc<HashMap<String, Arc<CertifiedKey>>> {
    Arc::new(
        map.into_iter()
            .map(|(host, key)| (host.to_ascii_lowercase(), key))
            .collect(),
    )
}

impl TlsCerts {
    /// An empty set: every handshake fails until [`TlsCerts::publish`] adds certificates.
    pub fn new() -> Arc<TlsCerts> {
        Arc::new(TlsCerts::default())
    }

    /// Replaces all certificates from files at once; handshakes in progress keep what they
    /// chose.
    pub fn publish(&self, by_host: HashMap<String, Arc<CertifiedKey>>) {
        self.by_host.store(lowercase_keys(by_host));
    }

    /// Replaces all certificates issued over ACME at once.
    pub fn publish_issued(&self, by_host: HashMap<String, Arc<CertifiedKey>>) {
        self.issued.store(lowercase_keys(by_host));
    }

    /// Replaces all TLS-ALPN-01 challenge certificates at once.
    pub fn publish_challenges(&self, by_host: HashMap<String, Arc<CertifiedKey>>) {
        self.challenges.store(lowercase_keys(by_host));
    }

    /// The host names that have a certificate from a file, sorted.
    pub fn hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = self.by_host.load().keys().cloned().collect();
        hosts.sort();
        hosts
    }

    /// Whether a file certificate covers `name` (its own or a wildcard one).
    pub fn has_file_cert(&self, name: &str) -> bool {
        self.file_cert(name).is_some()
    }

    /// The file certificate that covers `name`: its own, else a wildcard one.
    pub fn file_cert(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let name = name.to_ascii_lowercase();
        let by_host = self.by_host.load();
        if let Some(key) = by_host.get(&name) {
            return Some(key.clone());
        }
        let (_, parent) = name.split_once('.')?;
        by_host.get(&format!("*.{parent}")).cloned()
    }

    /// The certificate for `name`: its own file one, else an issued one, else a wildcard
    /// file one for its parent domain.
    pub fn lookup(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let name = name.to_ascii_lowercase();
        let by_host = self.by_host.load();
        if let Some(key) = by_host.get(&name) {
            return Some(key.clone());
        }
        if let Some(key) = self.issued.load().get(&name) {
            return Some(key.clone());
        }
        let (_, parent) = name.split_once('.')?;
        by_host.get(&format!("*.{parent}")).cloned()
    }
}

impl ResolvesServerCert for TlsCerts {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // An ACME validator offers `acme-tls/1` alone and must get the challenge
        // certificate for the name it asks for, or nothing.
        if hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_ALPN))
        {
            let name = hello.server_name()?.to_ascii_lowercase();
            return self.challenges.load().get(&name).cloned();
        }
        // A client that sends no SNI (an IP address in the URL) or a name without a
        // certificate gets the `default` one, if there is one (nginx's default server);
        // without it the handshake fails.
        hello
            .server_name()
            .and_then(|name| self.lookup(name))
            .or_else(|| self.by_host.load().get(DEFAULT_HOST).cloned())
    }
}

/// The host name of the certificate served to clients without SNI or with an unknown name.
pub const DEFAULT_HOST: &str = "default";

/// Reads a PEM certificate chain and its PEM private key (PKCS#8, PKCS#1 or SEC1) into a
/// certified key, checking that the key belongs to the certificate. The error says what is
/// wrong in words for the user.
pub fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("the certificate file is not valid PEM: {e}"))?;
    if chain.is_empty() {
        return Err("the certificate file holds no CERTIFICATE block".into());
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|e| format!("the key file holds no usable private key: {e}"))?;
    let signer = ring::sign::any_supported_type(&key)
        .map_err(|e| format!("the private key cannot be used: {e}"))?;
    let certified = CertifiedKey::new(chain, signer);
    certified
        .keys_match()
        .map_err(|e| format!("the private key does not belong to the certificate: {e}"))?;
    Ok(certified)
}

/// The rustls configuration of the TLS listener: TLS 1.3 and 1.2, certificates from
/// `certs` by SNI, ALPN `h2` then `http/1.1` (and `acme-tls/1`, which only an ACME validator
/// offers).
pub fn server_config(certs: Arc<TlsCerts>) -> Arc<rustls::ServerConfig> {
    // ring rather than rustls's default aws-lc-rs: lighter to build, the same TLS 1.2/1.3
    // suites; what it lacks (and why the function is marked deprecated) is the post-quantum
    // key exchange X25519MLKEM768, which clients fall back from to X25519.
    #[allow(deprecated)]
    let provider = Arc::new(ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.3 and 1.2")
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), ACME_TLS_ALPN.to_vec()];
    Arc::new(config)
}
