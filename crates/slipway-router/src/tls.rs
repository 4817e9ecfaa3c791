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
}

impl TlsCerts {
    /// An empty set: every handshake fails until [`TlsCerts::publish`] adds certificates.
    pub fn new() -> Arc<TlsCerts> {
        Arc::new(TlsCerts::default())
    }

    /// Replaces all certificates at once; handshakes in progress keep what they chose.
    pub fn publish(&self, by_host: HashMap<String, Arc<CertifiedKey>>) {
        let by_host = by_host
            .into_iter()
            .map(|(host, key)| (host.to_ascii_lowercase(), key))
            .collect();
        self.by_host.store(Arc::new(by_host));
    }

    /// The host names that have a certificate, sorted.
    pub fn hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = self.by_host.load().keys().cloned().collect();
        hosts.sort();
        hosts
    }

    /// The certificate for `name`: its own, else a wildcard one for its parent domain.
    pub fn lookup(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let name = name.to_ascii_lowercase();
        let by_host = self.by_host.load();
        if let Some(key) = by_host.get(&name) {
            return Some(key.clone());
        }
        let (_, parent) = name.split_once('.')?;
        by_host.get(&format!("*.{parent}")).cloned()
    }
}

impl ResolvesServerCert for TlsCerts {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
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
/// `certs` by SNI, ALPN `h2` then `http/1.1`.
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
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}
