//! HTTPS on the router: certificates from files chosen by SNI for two hosts, verified by
//! curl against the test's own CA; HTTP/2 over ALPN; only TLS 1.2 and 1.3; a certificate
//! replaced on disk served without a restart.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`ca.crt`, `ca.key`) in `dir`.
fn make_ca(dir: &Path) {
    openssl(
        dir,
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
            "/CN=slipway test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// `<out>.crt` and `<out>.key` for `host`, signed by the CA in `dir`, with `org` in the subject.
fn make_cert(dir: &Path, host: &str, org: &str, out: &Path) {
    let ext = dir.join(format!("{host}.ext"));
    std::fs::write(
        &ext,
        format!(
            "subjectAltName=DNS:{host}\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\n"
        ),
    )
    .unwrap();
    let key = dir.join(format!("{host}.new.key"));
    let csr = dir.join(format!("{host}.csr"));
    let crt = dir.join(format!("{host}.new.crt"));
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &path_str(&key),
            "-out",
            &path_str(&csr),
            "-subj",
            &format!("/CN={host}/O={org}"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &path_str(&csr),
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &path_str(&crt),
            "-days",
            "1",
            "-extfile",
            &path_str(&ext),
        ],
    );
    // Key first, then the certificate, each by rename: a reload never sees half a file.
    let (out_key, out_crt) = (
        out.join(format!("{host}.key")),
        out.join(format!("{host}.crt")),
    );
    std::fs::rename(&key, &out_key).unwrap();
    std::fs::rename(&crt, &out_crt).unwrap();
}

fn curl(ca: &Path, port: u16, host: &str, extra: &[&str]) -> (bool, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert", &path_str(ca)])
        .args(["--resolve", &format!("{host}:{port}:127.0.0.1")])
        .args(["-w", "\n%{http_code} %{http_version}"])
        .args(extra)
        .arg(format!("https://{host}:{port}/"))
        .output()
        .expect("curl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// The subject of the certificate served for `host`.
fn served_subject(port: u16, host: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect 127.0.0.1:{port} -servername {host} </dev/null 2>/dev/null \
             | openssl x509 -noout -subject"
        ))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn two_hosts_get_their_certificates_by_sni_and_a_replaced_one_is_served_without_restart() {
    let tls_port = free_port();
    let s = Slipway::start_with(&["--tls-listen", &format!("127.0.0.1:{tls_port}")]);
    let certs = s.data.join("tls");
    let work = s.dir.path().join("pki");
    std::fs::create_dir_all(&work).unwrap();
    make_ca(&work);
    let ca = work.join("ca.crt");
    for app in ["alpha", "beta"] {
        make_cert(&work, &format!("web.{app}.localhost"), "first", &certs);
        let spec = format!(
            "app: {app}\nservices:\n  web:\n    run: [\"python3\", \"app.py\"]\n    env: {{ VERSION: \"{app}\" }}\n"
        );
        let dir = s.write_app(app, &spec);
        s.ok(&["up", &path_str(&dir), "--detach"]);
    }

    // Each host is served with its own certificate (curl checks the name against the CA's
    // signature), over HTTP/2 when the client offers it and HTTP/1.1 when it asks for it.
    let deadline = Instant::now() + Duration::from_secs(10);
    for app in ["alpha", "beta"] {
        let host = format!("web.{app}.localhost");
        let (ok, text) = loop {
            let (ok, text) = curl(&ca, tls_port, &host, &["--http2"]);
            if ok || Instant::now() > deadline {
                break (ok, text);
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        assert!(ok, "{host}: {text}");
        assert!(text.starts_with(app), "{host} answered: {text}");
        assert!(text.ends_with("200 2"), "{host} over HTTP/2: {text}");
        let (ok, text) = curl(&ca, tls_port, &host, &["--http1.1"]);
        assert!(
            ok && text.ends_with("200 1.1"),
            "{host} over HTTP/1.1: {text}"
        );
    }
    // `status` shows each host's certificate file and when it expires.
    let status = s.status("alpha");
    let cert = &status["certificates"][0];
    assert_eq!(cert["host"], "web.alpha.localhost", "{status}");
    assert_eq!(cert["source"], "file", "{status}");
    assert_eq!(cert["state"], "valid", "{status}");
    assert!(cert["expires_in_secs"].as_i64().unwrap() > 3600, "{status}");
    let table = s.ok(&["status", "--app", "alpha"]);
    assert!(
        table.contains("web.alpha.localhost") && table.contains("file"),
        "{table}"
    );
    // A host without a certificate gets none (the handshake fails), and old TLS is refused.
    let (ok, text) = curl(&ca, tls_port, "web.gamma.localhost", &[]);
    assert!(!ok, "a host without a certificate was served: {text}");
    // A wildcard certificate covers one label below its domain.
    make_cert(&work, "*.gamma.localhost", "wild", &certs);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (ok, text) = curl(&ca, tls_port, "web.gamma.localhost", &[]);
        if ok {
            // No app serves that host: the router's own 404, over TLS.
            assert!(text.ends_with("404 2"), "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the wildcard was not used: {text}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // rustls implements no protocol below TLS 1.2; this only shows that a client asking for
    // 1.1 gets nowhere (sslyze would be the thorough check).
    let (ok, text) = curl(
        &ca,
        tls_port,
        "web.alpha.localhost",
        &["--tlsv1.1", "--tls-max", "1.1"],
    );
    assert!(!ok, "TLS 1.1 was accepted: {text}");
    let (ok, text) = curl(
        &ca,
        tls_port,
        "web.alpha.localhost",
        &["--tlsv1.2", "--tls-max", "1.2"],
    );
    assert!(ok, "TLS 1.2 was refused: {text}");

    // A renewed certificate copied over the old one is served within seconds.
    assert!(served_subject(tls_port, "web.alpha.localhost").contains("O = first"));
    make_cert(&work, "web.alpha.localhost", "second", &certs);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let subject = served_subject(tls_port, "web.alpha.localhost");
        if subject.contains("O = second") {
            break;
        }
        assert!(Instant::now() < deadline, "still served: {subject}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let (ok, text) = curl(&ca, tls_port, "web.alpha.localhost", &[]);
    assert!(ok && text.starts_with("alpha"), "{text}");
    // The other host kept its certificate.
    assert!(served_subject(tls_port, "web.beta.localhost").contains("O = first"));
}

#[test]
fn the_tls_listener_complies_with_mozillas_intermediate_configuration() {
    let sslyze = support::venv::venv(
        "sslyze",
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls/requirements.txt"),
    )
    .join("bin/sslyze");
    let tls_port = free_port();
    let s = Slipway::start_with(&["--tls-listen", &format!("127.0.0.1:{tls_port}")]);
    let certs: PathBuf = s.data.join("tls");
    let work = s.dir.path().join("pki");
    std::fs::create_dir_all(&work).unwrap();
    make_ca(&work);
    make_cert(&work, "web.alpha.localhost", "first", &certs);
    // sslyze also connects without SNI: those clients get the default certificate.
    std::fs::copy(
        certs.join("web.alpha.localhost.crt"),
        certs.join("default.crt"),
    )
    .unwrap();
    std::fs::copy(
        certs.join("web.alpha.localhost.key"),
        certs.join("default.key"),
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !served_subject(tls_port, "web.alpha.localhost").contains("web.alpha.localhost") {
        assert!(Instant::now() < deadline, "the certificate was not loaded");
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = Command::new(&sslyze)
        .args(["--mozilla_config=intermediate", "--certinfo_ca_file"])
        .arg(work.join("ca.crt"))
        .arg(format!("web.alpha.localhost:{tls_port}{{127.0.0.1}}"))
        .output()
        .expect("sslyze runs");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && report.contains("OK - Compliant"),
        "sslyze:\n{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for old in ["SSL 2.0", "SSL 3.0", "TLS 1.0", "TLS 1.1"] {
        let section = report
            .split(&format!("* {old} Cipher Suites:"))
            .nth(1)
            .unwrap_or_else(|| panic!("no {old} section:\n{report}"));
        assert!(
            section
                .lines()
                .nth(1)
                .is_some_and(|l| l.contains("rejected all cipher suites")),
            "{old} is accepted:\n{report}"
        );
    }
}

/// `curl -sS -D - ... url`: the response head and body as text.
fn curl_head(args: &[&str], url: &str) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10", "-D", "-"])
        .args(args)
        .arg(url)
        .output()
        .expect("curl runs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn an_app_can_redirect_plain_http_to_https_and_send_hsts() {
    let tls_port = free_port();
    let s = Slipway::start_with(&["--tls-listen", &format!("127.0.0.1:{tls_port}")]);
    let certs = s.data.join("tls");
    let work = s.dir.path().join("pki");
    std::fs::create_dir_all(&work).unwrap();
    make_ca(&work);
    let ca = work.join("ca.crt");
    for (app, https) in [
        ("alpha", "https: { redirect: true, hsts: 1d }\n"),
        ("beta", ""),
    ] {
        make_cert(&work, &format!("web.{app}.localhost"), "first", &certs);
        let spec = format!(
            "app: {app}\nservices:\n  web:\n    run: [\"python3\", \"app.py\"]\n    env: {{ VERSION: \"{app}\" }}\n{https}"
        );
        let dir = s.write_app(app, &spec);
        s.ok(&["up", &path_str(&dir), "--detach"]);
    }
    s.wait_body("web.beta.localhost", "/", "beta", Duration::from_secs(10));
    // The TLS directory is read every second: wait until both certificates are served.
    let deadline = Instant::now() + Duration::from_secs(10);
    for host in ["web.alpha.localhost", "web.beta.localhost"] {
        while !served_subject(tls_port, host).contains(host) {
            assert!(
                Instant::now() < deadline,
                "{host}'s certificate was not loaded"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let port = s.router.port();
    let resolve = |host: &str| {
        [
            format!("{host}:{port}:127.0.0.1"),
            format!("{host}:{tls_port}:127.0.0.1"),
        ]
    };
    let [plain, secure] = resolve("web.alpha.localhost");
    let plain_url = format!("http://web.alpha.localhost:{port}/some/path?q=1");
    let location = format!("location: https://web.alpha.localhost:{tls_port}/some/path?q=1");
    // The fast path (HTTP/1.1) and hyper's path (HTTP/1.0) both answer 308 to the same URL.
    for version in ["--http1.1", "--http1.0"] {
        let head = curl_head(&["--resolve", &plain, version], &plain_url);
        assert!(
            head.lines().next().is_some_and(|l| l.contains(" 308 "))
                && head.to_lowercase().contains(&location),
            "{version}: {head}"
        );
    }
    // Following it reaches the app over HTTPS, with HSTS on the answer.
    let head = curl_head(
        &[
            "--resolve",
            &plain,
            "--resolve",
            &secure,
            "--cacert",
            &path_str(&ca),
            "-L",
        ],
        &plain_url,
    );
    let lower = head.to_lowercase();
    assert!(
        lower.contains("strict-transport-security: max-age=86400") && head.contains("alpha"),
        "{head}"
    );
    // ACME HTTP-01 paths are never redirected (here no challenge is pending: the app answers).
    let head = curl_head(
        &["--resolve", &plain],
        &format!("http://web.alpha.localhost:{port}/.well-known/acme-challenge/abc"),
    );
    assert!(
        head.starts_with("HTTP/1.1 200") && head.contains("alpha"),
        "{head}"
    );
    // An app without the options is served over plain HTTP and gets no HSTS over HTTPS.
    let [plain, secure] = resolve("web.beta.localhost");
    let head = curl_head(
        &["--resolve", &plain],
        &format!("http://web.beta.localhost:{port}/"),
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let head = curl_head(
        &["--resolve", &secure, "--cacert", &path_str(&ca)],
        &format!("https://web.beta.localhost:{tls_port}/"),
    );
    assert!(
        head.contains("200") && !head.to_lowercase().contains("strict-transport-security"),
        "{head}"
    );
}

#[test]
fn the_admin_listener_serves_https_and_takes_a_replaced_certificate_without_restart() {
    let pki = tempfile::tempdir().unwrap();
    let work = pki.path();
    make_ca(work);
    let ca = work.join("ca.crt");
    let files = work.join("admin");
    std::fs::create_dir_all(&files).unwrap();
    make_cert(work, "admin.localhost", "first", &files);
    let (cert, key) = (
        files.join("admin.localhost.crt"),
        files.join("admin.localhost.key"),
    );
    let s = Slipway::start_with(&[
        "--admin-tls-cert",
        &path_str(&cert),
        "--admin-tls-key",
        &path_str(&key),
    ]);
    let port = s.admin.port();
    let resolve = format!("admin.localhost:{port}:127.0.0.1");
    let url = format!("https://admin.localhost:{port}/metrics");
    let token = s.ok(&["token", "create", "scrape", "--role", "metrics"]);
    let bearer = format!("Authorization: Bearer {}", token.trim());
    let head = curl_head(
        &[
            "--resolve",
            &resolve,
            "--cacert",
            &path_str(&ca),
            "-H",
            &bearer,
        ],
        &url,
    );
    assert!(
        head.starts_with("HTTP/1.1 200") && head.contains("slipway_process_resident_memory_bytes"),
        "{head}"
    );
    // Plain HTTP gets no answer from a TLS listener.
    let plain = curl_head(&[], &format!("http://127.0.0.1:{port}/metrics"));
    assert!(!plain.contains("200"), "{plain}");
    // A renewed certificate copied over the old one is served within seconds.
    assert!(served_subject(port, "admin.localhost").contains("O = first"));
    make_cert(work, "admin.localhost", "second", &files);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let subject = served_subject(port, "admin.localhost");
        if subject.contains("O = second") {
            break;
        }
        assert!(Instant::now() < deadline, "still served: {subject}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let head = curl_head(
        &[
            "--resolve",
            &resolve,
            "--cacert",
            &path_str(&ca),
            "-H",
            &bearer,
        ],
        &url,
    );
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[test]
fn an_unusable_admin_certificate_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("admin.crt");
    let key = dir.path().join("admin.key");
    std::fs::write(&cert, "not a certificate").unwrap();
    std::fs::write(&key, "not a key").unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_slipway"))
        .args(["server", "--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--admin", &format!("127.0.0.1:{}", free_port())])
        .arg("--admin-tls-cert")
        .arg(&cert)
        .arg("--admin-tls-key")
        .arg(&key)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env_remove("SLIPWAY_MASTER_KEY_FILE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("cannot serve the admin listener over HTTPS")
            && stderr.contains("admin.crt")
            && stderr.contains("hint:"),
        "{stderr}"
    );
    // ACME without an HTTPS listener is refused the same way.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_slipway"))
        .args(["server", "--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--admin", &format!("127.0.0.1:{}", free_port())])
        .args(["--acme-directory", "https://127.0.0.1:9/dir"])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env_remove("SLIPWAY_MASTER_KEY_FILE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("--acme-directory needs --tls-listen"),
        "{stderr}"
    );
    // So is a CA file for the ACME server that holds no certificate.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_slipway"))
        .args(["server", "--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--admin", &format!("127.0.0.1:{}", free_port())])
        .args(["--tls-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--acme-directory", "https://127.0.0.1:9/dir", "--acme-ca"])
        .arg(&cert)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env_remove("SLIPWAY_MASTER_KEY_FILE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && stderr.contains("holds no PEM certificate")
            && stderr.contains("hint: --acme-ca"),
        "{stderr}"
    );
}
