//! End-to-end tests of the per-revision request measurements: real traffic through the proxy
//! to real backends, read back from each revision's `RevisionStats`.

#[allow(dead_code)]
mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use slipway_router::{Pool, RevisionStats, RouteTable, RouterConfig, Target};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const FIFTEEN_MINUTES: Duration = Duration::from_secs(900);

/// The stats of the first pool of the service routed at `host` and `/`.
fn stats_of(proxy: &Proxy, host: &str) -> Arc<RevisionStats> {
    let table = proxy.router.table();
    let target = table.lookup(host, "/").expect("a route");
    target.pools[0].stats.clone()
}

/// Waits until `stats` counted `n` requests; the proxy records a proxied request when its
/// body ends, which may be just after the client read the last byte.
async fn wait_for_requests(stats: &RevisionStats, n: u64) {
    wait_until(&format!("{n} requests are recorded"), || {
        stats.totals().requests() >= n
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_counts_by_class_and_errors_in_totals_and_snapshot() {
    bounded(async {
        let server = TestBackend::start("a").await;
        let proxy = Proxy::with_table(host_table("app.test", vec![server.backend()])).await;
        let stats = stats_of(&proxy, "app.test");
        let mut client = Client::connect(proxy.addr).await;

        for _ in 0..30 {
            assert_eq!(client.get("app.test", "/").await.status, StatusCode::OK);
        }
        for _ in 0..5 {
            let reply = client.get("app.test", "/status/500").await;
            assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR);
        }
        // A request without a route belongs to no revision.
        let reply = client.get("elsewhere.test", "/").await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        // The instance crashes: the router answers 502 itself.
        server.kill().await;
        for _ in 0..3 {
            let reply = get(proxy.addr, "app.test", "/").await;
            assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{reply:?}");
        }

        wait_for_requests(&stats, 38).await;
        let totals = stats.totals();
        assert_eq!(totals.requests_by_class, [0, 30, 0, 0, 8]);
        assert_eq!(totals.errors, 8);
        assert_eq!(totals.latency_count(), 38);
        assert!(totals.latency_sum > Duration::ZERO);

        let snapshot = stats.snapshot(FIFTEEN_MINUTES);
        assert_eq!(snapshot.requests, 38);
        assert_eq!(snapshot.by_class, [0, 30, 0, 0, 8]);
        assert_eq!(snapshot.errors, 8);
        assert_eq!(snapshot.error_rate(), Some(8.0 / 38.0));
        assert_eq!(snapshot.in_flight, 0);
        assert!(snapshot.rps > 0.0, "{snapshot:?}");
        assert!(snapshot.p50.is_some() && snapshot.p99 >= snapshot.p50);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_and_timed_out_revisions_count_router_errors() {
    bounded(async {
        let server = TestBackend::start("slow").await;
        let unready = slipway_router::Backend::new(server.addr, "unready");
        let mut table = RouteTable::new();
        table.add_host("down.test", target("down", vec![(100, vec![unready])]));
        table.add_host(
            "slow.test",
            target("slow", vec![(100, vec![server.backend()])]),
        );
        // No pool with a positive weight: not a request of any revision.
        table.add_host("off.test", target("off", vec![(0, vec![server.backend()])]));
        let proxy = Proxy::with_config(
            RouterConfig {
                upstream_timeout: Duration::from_millis(300),
                ..RouterConfig::default()
            },
            table,
        )
        .await;
        let (down, slow, off) = (
            stats_of(&proxy, "down.test"),
            stats_of(&proxy, "slow.test"),
            stats_of(&proxy, "off.test"),
        );

        let reply = get(proxy.addr, "down.test", "/").await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        let reply = get(proxy.addr, "slow.test", "/slow").await;
        assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
        let reply = get(proxy.addr, "off.test", "/").await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);

        // Answers the router makes itself are recorded before they are sent.
        assert_eq!(down.totals().requests_by_class, [0, 0, 0, 0, 1]);
        assert_eq!(down.totals().errors, 1);
        let slow_totals = slow.totals();
        assert_eq!(slow_totals.requests_by_class, [0, 0, 0, 0, 1]);
        assert_eq!(slow_totals.errors, 1);
        // The 504 came after the 300 ms upstream timeout.
        assert!(slow_totals.latency_sum >= Duration::from_millis(300));
        assert_eq!(off.totals().requests(), 0);
        assert_eq!(slow.in_flight(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quantiles_of_known_backend_delays() {
    bounded(async {
        let server = TestBackend::start("a").await;
        let proxy = Proxy::with_table(host_table("app.test", vec![server.backend()])).await;
        let stats = stats_of(&proxy, "app.test");
        let mut client = Client::connect(proxy.addr).await;

        // 40 requests of at least 10 ms and 10 of at least 50 ms: p50 is a 10 ms request
        // (rank 25 of 50), p95 (rank 48) and p99 (rank 50) are 50 ms ones.
        for _ in 0..40 {
            assert_eq!(
                client.get("app.test", "/sleep/10").await.status,
                StatusCode::OK
            );
        }
        for _ in 0..10 {
            assert_eq!(
                client.get("app.test", "/sleep/50").await.status,
                StatusCode::OK
            );
        }
        wait_for_requests(&stats, 50).await;

        let snapshot = stats.snapshot(Duration::from_secs(60));
        assert_eq!(snapshot.requests, 50);
        // A quantile is reported at its bucket's midpoint, at most 3.125 % below any value in
        // the bucket; the sleeps make each latency at least its delay.
        let p50 = snapshot.p50.expect("p50");
        assert!(p50 >= Duration::from_micros(9_680), "p50 {p50:?}");
        assert!(p50 < Duration::from_micros(48_400), "p50 {p50:?}");
        for quantile in [snapshot.p95, snapshot.p99] {
            let quantile = quantile.expect("a quantile");
            assert!(quantile >= Duration::from_micros(48_400), "{quantile:?}");
        }
        assert!(stats.totals().latency_sum >= Duration::from_millis(40 * 10 + 10 * 50));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_counts_in_flight_until_its_body_ends() {
    bounded(async {
        let server = TestBackend::start("a").await;
        let proxy = Proxy::with_table(host_table("app.test", vec![server.backend()])).await;
        let stats = stats_of(&proxy, "app.test");
        let mut client = Client::connect(proxy.addr).await;

        let response = client
            .send(with_body(request("GET", "app.test", "/stream"), ""))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body();
        let first = body.frame().await.expect("a frame").expect("no error");
        assert_eq!(
            first.into_data().expect("data"),
            Bytes::from_static(b"first\n")
        );
        // The head and a first chunk arrived, but the request is not over.
        assert_eq!(stats.in_flight(), 1);
        assert_eq!(stats.snapshot(Duration::from_secs(60)).in_flight, 1);
        assert_eq!(stats.totals().requests(), 0);

        server.release(1);
        body.collect().await.expect("rest of body");
        wait_for_requests(&stats, 1).await;
        assert_eq!(stats.totals().requests_by_class, [0, 1, 0, 0, 0]);
        assert_eq!(stats.totals().errors, 0);
        assert_eq!(stats.in_flight(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_breaks_off_is_an_error() {
    bounded(async {
        let server = TestBackend::start("a").await;
        let proxy = Proxy::with_table(host_table("app.test", vec![server.backend()])).await;
        let stats = stats_of(&proxy, "app.test");
        let mut client = Client::connect(proxy.addr).await;

        let response = client
            .send(with_body(request("GET", "app.test", "/stream"), ""))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body();
        body.frame().await.expect("a frame").expect("no error");
        // The instance dies in the middle of the body.
        server.kill().await;
        assert!(body.collect().await.is_err(), "the body should break off");

        wait_for_requests(&stats, 1).await;
        let totals = stats.totals();
        assert_eq!(totals.requests_by_class, [0, 1, 0, 0, 0]);
        assert_eq!(totals.errors, 1);
        assert_eq!(stats.in_flight(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_counts_as_1xx_once_switched() {
    bounded(async {
        let server = TestBackend::start("ws").await;
        let backend = server.backend();
        let proxy = Proxy::with_table(host_table("app.test", vec![backend.clone()])).await;
        let stats = stats_of(&proxy, "app.test");

        let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
        stream
            .write_all(b"GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
            .await
            .expect("write upgrade request");
        let head = read_head(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");

        // The request ends with the switch; the tunnel stays counted only on the backend.
        assert_eq!(stats.totals().requests_by_class, [1, 0, 0, 0, 0]);
        assert_eq!(stats.in_flight(), 0);
        assert_eq!(backend.in_flight(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_revision_counts_its_own_requests_across_table_swaps() {
    bounded(async {
        let stable = TestBackend::start("stable").await;
        let canary = TestBackend::start("canary").await;
        // The control plane keeps one stats per revision and passes it in every table.
        let (stable_stats, canary_stats) = (RevisionStats::new(), RevisionStats::new());
        let table = |canary_weight: u32| {
            let mut table = RouteTable::new();
            let pools = vec![
                Pool::with_stats(
                    1,
                    100 - canary_weight,
                    vec![stable.backend()],
                    stable_stats.clone(),
                ),
                Pool::with_stats(
                    2,
                    canary_weight,
                    vec![canary.backend()],
                    canary_stats.clone(),
                ),
            ];
            table.add_host(
                "app.test",
                Arc::new(Target {
                    app: "shop".into(),
                    service: "web".into(),
                    pools,
                    ..Target::default()
                }),
            );
            table
        };
        let proxy = Proxy::with_table(table(10)).await;
        let mut client = Client::connect(proxy.addr).await;
        for _ in 0..100 {
            assert_eq!(client.get("app.test", "/").await.status, StatusCode::OK);
        }
        wait_for_requests(&canary_stats, 10).await;
        wait_for_requests(&stable_stats, 90).await;

        proxy.router.publish(table(50));
        for _ in 0..20 {
            assert_eq!(client.get("app.test", "/").await.status, StatusCode::OK);
        }
        wait_for_requests(&canary_stats, 20).await;
        wait_for_requests(&stable_stats, 100).await;
        assert_eq!(canary_stats.totals().requests_by_class, [0, 20, 0, 0, 0]);
        assert_eq!(stable_stats.totals().requests_by_class, [0, 100, 0, 0, 0]);
        assert_eq!(canary_stats.snapshot(FIFTEEN_MINUTES).requests, 20);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_off_records_nothing() {
    bounded(async {
        let server = TestBackend::start("a").await;
        let backend = server.backend();
        let proxy = Proxy::with_config(
            RouterConfig {
                metrics: false,
                ..RouterConfig::default()
            },
            host_table("app.test", vec![backend.clone()]),
        )
        .await;
        let stats = stats_of(&proxy, "app.test");

        let addr = proxy.addr;
        let held = tokio::spawn(async move { get(addr, "app.test", "/hold").await });
        wait_until("the held request is in flight", || backend.in_flight() == 1).await;
        assert_eq!(stats.in_flight(), 0, "metrics off still counted in flight");

        let mut client = Client::connect(proxy.addr).await;
        for path in ["/", "/", "/status/500", "/status/404"] {
            client.get("app.test", path).await;
        }
        server.release(1);
        assert_eq!(held.await.expect("held task").status, StatusCode::OK);
        server.kill().await;
        let reply = get(proxy.addr, "app.test", "/").await;
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY);

        let totals = stats.totals();
        assert_eq!(totals.requests(), 0, "{totals:?}");
        assert_eq!(totals.errors, 0);
        assert_eq!(totals.latency_count(), 0);
        assert_eq!(stats.snapshot(FIFTEEN_MINUTES).requests, 0);
    })
    .await;
}
