//! Certificates over ACME from a real CA: Debian's `pebble` (Let's Encrypt's test server),
//! with `pebble-challtestsrv` as its DNS server so that every name resolves to 127.0.0.1 and
//! its validator connects to the router's plain listener (HTTP-01) or TLS listener
//! (TLS-ALPN-01). Pebble's certificates are made short-lived, so a renewal happens within
//! the test, while requests keep coming.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::*;

fn run(dir: &Path, program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A running pebble with its DNS server; both are killed when dropped.
struct Pebble {
    children: Vec<Child>,
    _work: tempfile::TempDir,
    /// The CA of pebble's own HTTPS listener (for `--acme-ca`).
    listener_ca: PathBuf,
    directory: String,
    management: u16,
    dir: PathBuf,
}

impl Drop for Pebble {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Pebble {
    /// Makes pebble's own listener certificate and picks its ports; [`Pebble::start`] starts
    /// it once the router's ports are known.
    fn prepare() -> Pebble {
        let work = tempfile::tempdir().unwrap();
        let dir = &work.path().to_owned();
        run(
            dir,
            "openssl",
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=pebble listener CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        std::fs::write(
            dir.join("localhost.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(
            dir,
            "openssl",
            &[
                "req",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-keyout",
                "localhost.key",
                "-out",
                "localhost.csr",
                "-subj",
                "/CN=localhost",
            ],
        );
        run(
            dir,
            "openssl",
            &[
                "x509",
                "-req",
                "-in",
                "localhost.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "localhost.crt",
                "-days",
                "1",
                "-extfile",
                "localhost.ext",
            ],
        );
        let port = free_port();
        Pebble {
            children: Vec::new(),
            _work: work,
            listener_ca: dir.join("ca.crt"),
            directory: format!("https://127.0.0.1:{port}/dir"),
            management: free_port(),
            dir: dir.to_owned(),
        }
    }

    /// Starts pebble validating on `http_port` and `tls_port`, issuing certificates valid
    /// for `validity`; returns once its directory answers.
    fn start(&mut self, http_port: u16, tls_port: u16, validity: Duration) {
        let dns = free_port();
        let listen = self
            .directory
            .trim_start_matches("https://")
            .trim_end_matches("/dir")
            .to_owned();
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": listen,
                "managementListenAddress": format!("127.0.0.1:{}", self.management),
                "certificate": path_str(&self.dir.join("localhost.crt")),
                "privateKey": path_str(&self.dir.join("localhost.key")),
                "httpPort": http_port,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false,
                "certificateValidityPeriod": validity.as_secs(),
                // The CA refuses these names: how the tests see a failure.
                "domainBlocklist": ["blocked.test"],
            }
        });
        let config_path = self.dir.join("pebble.json");
        std::fs::write(&config_path, config.to_string()).unwrap();
        let log = |name: &str| std::fs::File::create(self.dir.join(name)).unwrap();
        let challtestsrv = Command::new("pebble-challtestsrv")
            .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
            .args(["-dns01", &format!("127.0.0.1:{dns}")])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-management", &format!("127.0.0.1:{}", free_port())])
            .stdout(log("challtestsrv.log"))
            .stderr(log("challtestsrv.err"))
            .spawn()
            .expect("pebble-challtestsrv runs (apt-get install pebble)");
        self.children.push(challtestsrv);
        let pebble = Command::new("pebble")
            .arg("-config")
            .arg(&config_path)
            .args(["-dnsserver", &format!("127.0.0.1:{dns}"), "-strict"])
            // Validate at once instead of after a random sleep of up to 15 s.
            .env("PEBBLE_VA_NOSLEEP", "1")
            .stdout(log("pebble.log"))
            .stderr(log("pebble.err"))
            .spawn()
            .expect("pebble runs (apt-get install pebble)");
        self.children.push(pebble);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = Command::new("curl")
                .args(["-sS", "--max-time", "2", "--cacert"])
                .arg(&self.listener_ca)
                .arg(&self.directory)
                .output()
                .unwrap();
            if out.status.success() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "pebble did not start: {}{}",
                std::fs::read_to_string(self.dir.join("pebble.log")).unwrap_or_default(),
                std::fs::read_to_string(self.dir.join("pebble.err")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stops pebble and its DNS server and starts them again: a CA that forgot every
    /// account and order (pebble keeps them in memory), with a new root.
    fn restart(&mut self, http_port: u16, tls_port: u16, validity: Duration) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
        self.start(http_port, tls_port, validity);
    }

    /// The root that pebble's issued certificates chain to (new at each pebble start).
    fn issuing_root(&self) -> PathBuf {
        let path = self.dir.join("issuing-root.pem");
        let out = Command::new("curl")
            .args(["-sS", "--fail", "--max-time", "5", "--cacert"])
            .arg(&self.listener_ca)
            .arg(format!("https://127.0.0.1:{}/roots/0", self.management))
            .arg("-o")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        path
    }
}

/// `curl --cacert root --resolve host:port:127.0.0.1 https://host:port/`: whether it
/// succeeded, and the body or the error.
fn curl_https(root: &Path, tls_port: u16, host: &str) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(root)
        .args(["--resolve", &format!("{host}:{tls_port}:127.0.0.1")])
        .arg(format!("https://{host}:{tls_port}/"))
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The serial number of the certificate served for `host`.
fn served_serial(tls_port: u16, host: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{tls_port} -servername {host} </dev/null \
             2>/dev/null | openssl x509 -noout -serial"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn events(s: &Slipway) -> String {
    s.ok(&["events", "--app", "shop"])
}

/// An app whose host the CA refuses: its failure is an event, in `status` (JSON and table)
/// and in `/metrics`, retried with a growing wait.
fn refused_host_is_reported(s: &Slipway) {
    let dir = s.write_app(
        "bad",
        "app: bad\nenvironments:\n  development:\n    host: blocked.test\nservices:\n  web:\n    run: [\"python3\", \"app.py\"]\n",
    );
    s.ok(&["up", &path_str(&dir), "--detach"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    let events = loop {
        let events = s.ok(&["events", "--app", "bad"]);
        if events.matches("certificate.failed").count() >= 2 {
            break events;
        }
        assert!(
            Instant::now() < deadline,
            "no second failure: {events}\n{}",
            s.server_log()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        events.contains("certificate issuance for web.blocked.test failed")
            && events.contains("next attempt in 5s")
            && events.contains("next attempt in 10s"),
        "{events}"
    );
    let status = s.status("bad");
    let cert = &status["certificates"][0];
    assert_eq!(cert["host"], "web.blocked.test", "{status}");
    assert_eq!(cert["state"], "failed", "{status}");
    assert!(
        cert["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("blocked.test")),
        "{status}"
    );
    let table = s.ok(&["status", "--app", "bad"]);
    assert!(
        table.contains("FAILED") && table.contains("ACME FAILED"),
        "{table}"
    );
    let (_, metrics) = s.metrics().unwrap();
    assert!(
        metrics.contains("slipway_certificate_failing{app=\"bad\",host=\"web.blocked.test\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("slipway_certificate_failing{app=\"shop\",host=\"web.shop.test\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "slipway_certificate_expiry_timestamp_seconds{app=\"shop\",host=\"web.shop.test\"}"
        ),
        "{metrics}"
    );
}

/// Starts a server with ACME against a fresh pebble, deploys an app on `shop.test` and
/// waits for `web.shop.test` to be served with a certificate that pebble's root verifies.
/// `extra` is added to the app's spec.
fn issued(challenge: &str, validity: Duration, extra: &str) -> (Slipway, Pebble, u16, PathBuf) {
    let mut pebble = Pebble::prepare();
    let tls_port = free_port();
    let s = Slipway::start_with(&[
        "--tls-listen",
        &format!("127.0.0.1:{tls_port}"),
        "--acme-directory",
        &pebble.directory,
        "--acme-ca",
        &path_str(&pebble.listener_ca),
        "--acme-email",
        "ops@shop.test",
        "--acme-challenge",
        challenge,
    ]);
    pebble.start(s.router.port(), tls_port, validity);
    let root = pebble.issuing_root();
    let dir = s.write_app(
        "shop",
        &format!("app: shop\nenvironments:\n  development:\n    host: shop.test\nservices:\n  web:\n    run: [\"python3\", \"app.py\"]\n    env: {{ VERSION: \"shop\" }}\n{extra}"),
    );
    s.ok(&["up", &path_str(&dir), "--detach"]);
    let started = Instant::now();
    let (ok, text) = loop {
        let (ok, text) = curl_https(&root, tls_port, "web.shop.test");
        if ok || started.elapsed() > Duration::from_secs(30) {
            break (ok, text);
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        ok && text.starts_with("shop"),
        "no certificate for web.shop.test after {:?}: {text}\nevents:\n{}\nserver log:\n{}",
        started.elapsed(),
        events(&s),
        s.server_log()
    );
    eprintln!(
        "web.shop.test served over HTTPS with an ACME certificate {:?} after the deploy",
        started.elapsed()
    );
    (s, pebble, tls_port, root)
}

#[test]
fn a_new_hosts_certificate_comes_over_http_01_and_is_renewed_under_load() {
    // Renewal starts two thirds into the lifetime: 30 s after issuance, 15 s before expiry
    // (room for a slow machine).
    // The app redirects plain HTTP to HTTPS: the CA's HTTP-01 requests still get their answer.
    let (s, _pebble, tls_port, root) = issued(
        "http-01",
        Duration::from_secs(45),
        "https: { redirect: true }\n",
    );
    let plain = s.get("web.shop.test", "/").unwrap();
    assert_eq!(plain.0, 308, "{plain:?}");
    let events_now = events(&s);
    assert!(
        events_now.contains("web.shop.test issued over ACME (http-01)"),
        "{events_now}"
    );
    let status = s.status("shop");
    let cert = &status["certificates"][0];
    assert_eq!(cert["host"], "web.shop.test", "{status}");
    assert_eq!(cert["state"], "valid", "{status}");
    let first = served_serial(tls_port, "web.shop.test");
    assert!(first.starts_with("serial="), "{first}");
    refused_host_is_reported(&s);

    // Load with a new TLS handshake per request until the renewed certificate is served.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let load: Vec<_> = (0..2)
        .map(|_| {
            let (stop, done, root) = (stop.clone(), done.clone(), root.clone());
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let (ok, text) = curl_https(&root, tls_port, "web.shop.test");
                    if !(ok && text.starts_with("shop")) {
                        failures.push(text);
                    }
                    done.fetch_add(1, Ordering::Relaxed);
                }
                failures
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let renewed = loop {
        let serial = served_serial(tls_port, "web.shop.test");
        if serial.starts_with("serial=") && serial != first {
            break serial;
        }
        assert!(
            Instant::now() < deadline,
            "not renewed: {serial}\nevents:\n{}\nserver log:\n{}",
            events(&s),
            s.server_log()
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    // Keep the load going a moment on the new certificate, then stop it.
    std::thread::sleep(Duration::from_secs(1));
    stop.store(true, Ordering::Relaxed);
    let failures: Vec<String> = load.into_iter().flat_map(|t| t.join().unwrap()).collect();
    let requests = done.load(Ordering::Relaxed);
    eprintln!("renewed ({first} -> {renewed}) while {requests} HTTPS requests ran");
    assert!(requests > 20, "only {requests} requests ran");
    assert!(
        failures.is_empty(),
        "{} of {requests} requests failed during the renewal: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(events(&s).contains("certificate.renewed"));
}

#[test]
fn tls_alpn_01_issues_too_and_a_restart_serves_the_stored_certificate() {
    let (mut s, mut pebble, tls_port, _root) = issued("tls-alpn-01", Duration::from_secs(3600), "");
    let events_now = events(&s);
    assert!(
        events_now.contains("web.shop.test issued over ACME (tls-alpn-01)"),
        "{events_now}"
    );
    // The account and the certificate are stored sealed: no PEM under the data dir.
    let sealed = s.data.join("acme/certs/web.shop.test.sealed");
    let bytes = std::fs::read(&sealed).unwrap();
    assert!(!String::from_utf8_lossy(&bytes).contains("BEGIN"));
    let account = std::fs::read(s.data.join("acme/account.sealed")).unwrap();
    assert!(!String::from_utf8_lossy(&account).contains("PRIVATE"));
    let serial = served_serial(tls_port, "web.shop.test");
    assert!(serial.starts_with("serial="), "{serial}");

    // After a restart the stored certificate is served again, not a new one.
    s.kill9();
    s.start_server();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let again = served_serial(tls_port, "web.shop.test");
        if again == serial {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{again} instead of {serial} after a restart"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(events(&s).matches("certificate.issued").count(), 1);

    // A CA that no longer knows the stored account: the attempt fails, the account is
    // registered anew, and the next attempt gets the certificate.
    pebble.restart(s.router.port(), tls_port, Duration::from_secs(3600));
    let root = pebble.issuing_root();
    let dir = s.write_app(
        "two",
        "app: two\nenvironments:\n  development:\n    host: two.test\nservices:\n  web:\n    run: [\"python3\", \"app.py\"]\n    env: { VERSION: \"two\" }\n",
    );
    s.ok(&["up", &path_str(&dir), "--detach"]);
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let (ok, text) = curl_https(&root, tls_port, "web.two.test");
        if ok && text.starts_with("two") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{text}\n{}",
            s.ok(&["events", "--app", "two"])
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let two = s.ok(&["events", "--app", "two"]);
    assert!(
        two.contains("accountDoesNotExist") && two.contains("certificate.issued"),
        "{two}"
    );
}
