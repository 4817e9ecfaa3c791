//! End-to-end tests of progressive delivery over real sockets: asking for a revision with the
//! `Slipway-Revision` header (by number or tag, including revisions without traffic), and
//! sticky sessions that keep a client on the revision the weighted split gave it.

#[allow(dead_code)]
mod support;

use std::sync::atomic::Ordering;

use http::StatusCode;
use slipway_router::RouteTable;
use support::*;

/// A sticky cookie's value as the proxy sets it.
fn sticky(revision: u64) -> String {
    format!("slipway-rev-web={revision}; Path=/; HttpOnly; SameSite=Lax")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revision_header_picks_by_number_or_tag_and_is_not_forwarded() {
    bounded(async {
        let blue = TestBackend::start("blue").await;
        let green = TestBackend::start("green").await;
        let mut table = RouteTable::new();
        let web = target_with(
            "web",
            vec![(100, vec![blue.backend()]), (0, vec![green.backend()])],
            |t| {
                t.header_override = true;
                t.tags.insert("green".into(), 2);
                t.tags.insert("blue".into(), 1);
            },
        );
        table.add_host("app.test", web);
        let proxy = Proxy::with_table(table).await;

        for (asked, expected) in [
            ("2", "green"),
            ("green", "green"),
            ("1", "blue"),
            ("blue", "blue"),
        ] {
            let reply = get_with(proxy.addr, "app.test", "/", &[("slipway-revision", asked)]).await;
            assert_eq!(reply.status, StatusCode::OK, "{asked}: {reply:?}");
            assert_eq!(reply.backend(), expected, "Slipway-Revision: {asked}");
            assert!(
                reply.seen("slipway-revision").is_empty(),
                "the header reached the backend: {}",
                reply.body
            );
            assert!(reply.header("set-cookie").is_none());
        }

        for unknown in ["9", "red"] {
            let reply = get_with(
                proxy.addr,
                "app.test",
                "/",
                &[("slipway-revision", unknown)],
            )
            .await;
            assert_eq!(reply.status, StatusCode::NOT_FOUND, "{reply:?}");
            assert_eq!(reply.header("x-slipway-error"), Some("unknown-revision"));
            assert!(
                reply.body.starts_with(&format!(
                    "no revision {unknown} of service web of app shop; "
                )),
                "{}",
                reply.body
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_zero_pool_is_reachable_only_by_header() {
    bounded(async {
        let live = TestBackend::start("live").await;
        let dark = TestBackend::start("dark").await;
        let mut table = RouteTable::new();
        let pools = || vec![(100, vec![live.backend()]), (0, vec![dark.backend()])];
        table.add_host(
            "app.test",
            target_with("web", pools(), |t| t.header_override = true),
        );
        // The same pools on a target that does not allow the header.
        table.add_host("closed.test", target("web", pools()));
        let proxy = Proxy::with_table(table).await;

        let mut client = Client::connect(proxy.addr).await;
        for _ in 0..50 {
            assert_eq!(client.get("app.test", "/").await.backend(), "live");
        }
        assert_eq!(
            dark.connections.load(Ordering::SeqCst),
            0,
            "the split reached weight 0"
        );

        let reply = get_with(proxy.addr, "app.test", "/", &[("slipway-revision", "2")]).await;
        assert_eq!(reply.backend(), "dark");

        // Without `header_override` the header is ignored, and still not forwarded.
        let reply = get_with(proxy.addr, "closed.test", "/", &[("slipway-revision", "2")]).await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.backend(), "live");
        assert!(reply.seen("slipway-revision").is_empty(), "{}", reply.body);
        let reply = get_with(
            proxy.addr,
            "closed.test",
            "/",
            &[("slipway-revision", "nope")],
        )
        .await;
        assert_eq!(reply.backend(), "live");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_cookie_keeps_a_client_on_its_revision_during_a_split() {
    bounded(async {
        let one = TestBackend::start("one").await;
        let two = TestBackend::start("two").await;
        let mut table = RouteTable::new();
        table.add_host(
            "app.test",
            target_with(
                "web",
                vec![(50, vec![one.backend()]), (50, vec![two.backend()])],
                |t| t.sticky = true,
            ),
        );
        let proxy = Proxy::with_table(table).await;
        let mut client = Client::connect(proxy.addr).await;

        // Without the cookie the split alternates, and each answer pins its revision.
        let mut seen = Vec::new();
        for _ in 0..4 {
            let reply = client.get("app.test", "/").await;
            let revision = if reply.backend() == "one" { 1 } else { 2 };
            assert_eq!(reply.header("set-cookie"), Some(sticky(revision).as_str()));
            seen.push(revision);
        }
        assert_eq!(seen, vec![1, 2, 1, 2]);

        // The first answer of a new client sets the cookie; with it, the client stays.
        let first = get(proxy.addr, "app.test", "/").await;
        let cookie = first
            .header("set-cookie")
            .expect("a sticky cookie")
            .to_owned();
        let pinned = cookie.split(';').next().expect("name=value").to_owned();
        let revision: u64 = pinned
            .strip_prefix("slipway-rev-web=")
            .and_then(|v| v.parse().ok())
            .expect("the cookie names a revision");
        let expected = if revision == 1 { "one" } else { "two" };
        assert_eq!(first.backend(), expected);
        let request_cookie = format!("theme=dark; {pinned}; lang=en");
        for i in 0..50 {
            let reply = get_with(
                proxy.addr,
                "app.test",
                "/",
                &[("cookie", request_cookie.as_str())],
            )
            .await;
            assert_eq!(
                reply.backend(),
                expected,
                "request {i} left revision {revision}"
            );
            assert!(reply.header("set-cookie").is_none(), "{:?}", reply.headers);
            // The application sees every cookie, ours included, untouched.
            assert_eq!(reply.seen("cookie"), vec![request_cookie.clone()]);
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_for_a_revision_whose_weight_became_zero_is_ignored() {
    bounded(async {
        let one = TestBackend::start("one").await;
        let two = TestBackend::start("two").await;
        let table = |weights: (u32, u32)| {
            let mut table = RouteTable::new();
            table.add_host(
                "app.test",
                target_with(
                    "web",
                    vec![
                        (weights.0, vec![one.backend()]),
                        (weights.1, vec![two.backend()]),
                    ],
                    |t| t.sticky = true,
                ),
            );
            table
        };
        let proxy = Proxy::with_table(table((50, 50))).await;
        let cookie = [("cookie", "slipway-rev-web=1")];
        for _ in 0..5 {
            assert_eq!(
                get_with(proxy.addr, "app.test", "/", &cookie)
                    .await
                    .backend(),
                "one"
            );
        }

        // Revision 1 loses its traffic: the cookie no longer counts and is replaced.
        proxy.router.publish(table((0, 100)));
        for _ in 0..5 {
            let reply = get_with(proxy.addr, "app.test", "/", &cookie).await;
            assert_eq!(reply.status, StatusCode::OK);
            assert_eq!(reply.backend(), "two");
            assert_eq!(reply.header("set-cookie"), Some(sticky(2).as_str()));
        }
        // With a single weighted revision and no stale cookie, nothing is set.
        let reply = get(proxy.addr, "app.test", "/").await;
        assert_eq!(reply.backend(), "two");
        assert!(reply.header("set-cookie").is_none());
    })
    .await;
}
