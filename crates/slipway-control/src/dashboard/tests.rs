//! Tests of the admin token, the gate in front of the admin listener, and the embedded
//! dashboard files. The browser test in `crates/slipway/tests/dashboard.rs` covers the page.

use std::os::unix::fs::PermissionsExt;

use axum::body::{Body, to_bytes};

use super::*;

fn token() -> AdminToken {
    let mut bytes = [7u8; TOKEN_BYTES];
    bytes[0] = 0xab;
    bytes[1] = 0x01;
    AdminToken::from_bytes(bytes)
}

fn headers(authorization: &[u8]) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_bytes(authorization).unwrap(),
    );
    h
}

/// A private directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("slipway-dashboard-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn a_token_is_its_bytes_in_lowercase_hex() {
    let t = token();
    assert_eq!(t.as_str().len(), 64);
    assert!(t.as_str().starts_with("ab0107"), "{}", t.as_str());
    assert_eq!(format!("{t:?}"), "AdminToken(<redacted>)");
}

#[test]
fn generated_tokens_differ() {
    let a = AdminToken::generate().unwrap();
    let b = AdminToken::generate().unwrap();
    assert_ne!(a, b);
    assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
}

#[test]
fn only_the_whole_token_matches() {
    let t = token();
    let s = t.as_str().to_owned();
    assert!(t.matches(&s));
    assert!(!t.matches(&s[..63]), "a prefix");
    assert!(!t.matches(&format!("{s}0")), "a longer string");
    assert!(
        !t.matches(&format!("{}8", &s[..63])),
        "the last character wrong"
    );
    assert!(!t.matches(""));
    assert!(!t.matches(&s.to_uppercase()), "hex is compared as text");
}

#[test]
fn the_authorization_header_decides_access() {
    let t = token();
    let tok = t.as_str();
    assert_eq!(access(&HeaderMap::new(), &t), Access::Anonymous);
    let cases: [(String, Access); 6] = [
        (format!("Bearer {tok}"), Access::Admin),
        (format!("bearer {tok}"), Access::Admin),
        (format!("Bearer  {tok} "), Access::Admin),
        (format!("Basic {tok}"), Access::WrongToken),
        ("Bearer 00".to_owned(), Access::WrongToken),
        (tok.to_owned(), Access::WrongToken),
    ];
    for (value, expected) in cases {
        assert_eq!(access(&headers(value.as_bytes()), &t), expected, "{value}");
    }
    // A header that is not text is not the token either.
    assert_eq!(access(&headers(b"Bearer \xff\xfe"), &t), Access::WrongToken);
}

#[test]
fn the_dashboard_url_carries_the_token_in_the_fragment() {
    let t = token();
    let url = dashboard_url("127.0.0.1:8081".parse().unwrap(), &t);
    assert_eq!(url, format!("http://127.0.0.1:8081/#token={}", t.as_str()));
    // A browser cannot open a wildcard address, so the URL uses loopback instead.
    let url = dashboard_url("0.0.0.0:9000".parse().unwrap(), &t);
    assert!(url.starts_with("http://127.0.0.1:9000/#token="), "{url}");
    let url = dashboard_url("[::]:9000".parse().unwrap(), &t);
    assert!(url.starts_with("http://[::1]:9000/#token="), "{url}");
}

#[test]
fn the_token_file_is_private_and_replaces_an_older_one() {
    let dir = TempDir::new("token-file");
    let path = token_path(&dir.0);
    std::fs::write(&path, "old token").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let t = token();
    t.write_to(&path).unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!("{}\n", t.as_str())
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "mode {mode:o}");
    let names: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["admin.token"], "no temporary file is left behind");
}

/// A gate over two stand-in routers that say which of them answered.
fn gate() -> Gate {
    let full = Router::new().route(
        "/v1/thing",
        get(|| async { "full read" }).post(|| async { "full change" }),
    );
    let public = Router::new().route("/v1/thing", get(|| async { "public read" }));
    Gate::new(token(), PathBuf::from("/data/admin.token"), full, public)
}

async fn send(gate: &Gate, method: Method, authorization: Option<String>) -> (u16, String) {
    let mut req = Request::builder().method(method).uri("/v1/thing");
    if let Some(a) = authorization {
        req = req.header(header::AUTHORIZATION, a);
    }
    let response = gate.dispatch(req.body(Body::empty()).unwrap()).await;
    let status = response.status().as_u16();
    if status == 401 {
        assert_eq!(
            response.headers()[header::WWW_AUTHENTICATE],
            "Bearer realm=\"slipway admin\""
        );
    }
    let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn anonymous_requests_read_through_the_public_router() {
    let g = gate();
    assert_eq!(
        send(&g, Method::GET, None).await,
        (200, "public read".to_owned())
    );
    assert_eq!(send(&g, Method::HEAD, None).await.0, 200);
}

#[tokio::test]
async fn anonymous_changes_get_401_saying_where_the_token_is() {
    let g = gate();
    for method in [Method::POST, Method::PUT, Method::DELETE, Method::OPTIONS] {
        let (status, body) = send(&g, method.clone(), None).await;
        assert_eq!(status, 401, "{method}");
        let error: dto::ApiError = serde_json::from_str(&body).unwrap();
        assert!(
            error
                .error
                .starts_with(&format!("{method} /v1/thing changes state"))
                && error.error.contains("Authorization: Bearer <token>")
                && error.error.contains("/data/admin.token"),
            "{}",
            error.error
        );
    }
}

#[tokio::test]
async fn the_token_opens_the_full_api() {
    let g = gate();
    let bearer = Some(format!("Bearer {}", token().as_str()));
    assert_eq!(
        send(&g, Method::POST, bearer.clone()).await,
        (200, "full change".to_owned())
    );
    assert_eq!(
        send(&g, Method::GET, bearer).await,
        (200, "full read".to_owned())
    );
}

#[tokio::test]
async fn a_wrong_token_gets_401_even_for_reads() {
    // A stale token (from before a restart) is refused outright, so the page can say so
    // instead of silently losing its rights.
    let g = gate();
    for method in [Method::GET, Method::POST] {
        let (status, body) = send(&g, method, Some("Bearer 1234".to_owned())).await;
        assert_eq!(status, 401);
        assert!(
            body.contains("not this server's admin token") && body.contains("/data/admin.token"),
            "{body}"
        );
    }
}

async fn get_asset(path: &str) -> (u16, HeaderMap, String) {
    let req = Request::builder().uri(path).body(Body::empty()).unwrap();
    let response = any_service(assets()).call(req, ()).await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = to_bytes(response.into_body(), 1 << 20).await.unwrap();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn the_page_and_its_files_are_served_with_a_strict_policy() {
    let (status, headers, body) = get_asset("/").await;
    assert_eq!(status, 200);
    assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
    let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert_eq!(headers[header::REFERRER_POLICY], "no-referrer");
    // The page loads exactly the two files served beside it, and nothing from elsewhere.
    assert!(body.contains(r#"src="/dashboard/app.js""#), "{body}");
    assert!(body.contains(r#"href="/dashboard/style.css""#), "{body}");
    assert!(!body.contains("http://") && !body.contains("https://"));
    let (status, headers, body) = get_asset("/dashboard/app.js").await;
    assert_eq!(status, 200);
    assert_eq!(
        headers[header::CONTENT_TYPE],
        "text/javascript; charset=utf-8"
    );
    assert!(body.contains("EventSource"), "the script follows events");
    let (status, headers, _) = get_asset("/dashboard/style.css").await;
    assert_eq!(
        (status, headers[header::CONTENT_TYPE].to_str().unwrap()),
        (200, "text/css; charset=utf-8")
    );
    assert_eq!(get_asset("/dashboard/missing.js").await.0, 404);
}

#[test]
fn the_dashboard_stays_small() {
    // Three hand-written files, no framework: a budget keeps it that way.
    let lines = [INDEX_HTML, APP_JS, STYLE_CSS]
        .iter()
        .map(|f| f.lines().count())
        .sum::<usize>();
    assert!(lines < 600, "the dashboard has {lines} lines");
}
