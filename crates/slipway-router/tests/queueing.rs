//! End-to-end tests of the per-revision queue over real sockets: an exact per-backend
//! concurrency limit under load, the queue's timeout and bound, and scale from zero (requests
//! held for a revision without a ready instance, the activation hook, and their release when
//! a backend becomes ready or a table brings one).

#[allow(dead_code)]
mod support;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::StatusCode;
use slipway_router::{Activator, Backend, Pool, RevisionStats, RouteTable, RouterConfig, Target};
use support::*;

/// A table routing `app.test` to service `web` of app `shop`: one pool of revision 1 with
/// `stats` and `backends`, at most `max_concurrency` requests per backend.
fn table(
    stats: &Arc<RevisionStats>,
    backends: Vec<Arc<Backend>>,
    max_concurrency: u32,
) -> RouteTable {
    let mut table = RouteTable::new();
    table.add_host(
        "app.test",
        Arc::new(Target {
            app: "shop".into(),
            service: "web".into(),
            pools: vec![Pool::with_stats(1, 100, backends, stats.clone())],
            max_concurrency,
            ..Target::default()
        }),
    );
    table
}

/// The calls an activation hook received: app, service and revision.
type Calls = Arc<Mutex<Vec<(String, String, u64)>>>;

/// An activation hook that records its calls.
fn recording_activator() -> (Activator, Calls) {
    let calls: Calls = Arc::default();
    let record = calls.clone();
    let activator: Activator = Arc::new(move |app: &str, service: &str, revision: u64| {
        record
            .lock()
            .expect("calls")
            .push((app.to_owned(), service.to_owned(), revision));
    });
    (activator, calls)
}

/// Sends `n` concurrent GETs of `path`, each on its own connection.
fn spawn_gets(
    proxy: std::net::SocketAddr,
    n: usize,
    path: &'static str,
) -> Vec<tokio::task::JoinHandle<Reply>> {
    (0..n)
        .map(|_| tokio::spawn(async move { get(proxy, "app.test", path).await }))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrency_one_is_exact_under_concurrent_load() {
    bounded(async {
        let servers = [TestBackend::start("a").await, TestBackend::start("b").await];
        let stats = RevisionStats::new();
        let backends: Vec<_> = servers.iter().map(TestBackend::backend).collect();
        let proxy = Proxy::with_table(table(&stats, backends.clone(), 1)).await;

        // 20 clients, 5 requests each, against 2 backends that take one request at a time.
        let clients: Vec<_> = (0..20)
            .map(|_| {
                let addr = proxy.addr;
                tokio::spawn(async move {
                    let mut client = Client::connect(addr).await;
                    for _ in 0..5 {
                        let reply = client.get("app.test", "/busy/5").await;
                        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
                    }
                })
            })
            .collect();
        for client in clients {
            client.await.expect("client task");
        }

        for server in &servers {
            assert_eq!(
                server.busy.max.load(Ordering::SeqCst),
                1,
                "backend {} saw more than one request at once (or none)",
                server.name
            );
        }
        let done: usize = servers
            .iter()
            .map(|s| s.busy.done.load(Ordering::SeqCst))
            .sum();
        assert_eq!(done, 100);
        // A request leaves the queue's count when its task is done with it, which may be a
        // moment after its client has the answer: wait for that too (a leak never gets there).
        wait_until("every request ended and left the queue", || {
            backends.iter().all(|b| b.in_flight() == 0) && stats.queued() == 0
        })
        .await;
        assert_eq!(stats.in_flight(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_waiting_too_long_for_a_slot_gets_503_with_retry_after() {
    bounded(async {
        let server = TestBackend::start("a").await;
        let backend = server.backend();
        let stats = RevisionStats::new();
        let proxy = Proxy::with_config(
            RouterConfig {
                queue_timeout: Duration::from_millis(300),
                ..RouterConfig::default()
            },
            table(&stats, vec![backend.clone()], 1),
        )
        .await;

        let held = spawn_gets(proxy.addr, 1, "/hold").pop().expect("one");
        wait_until("the held request has the only slot", || {
            backend.in_flight() == 1
        })
        .await;
        let reply = get(proxy.addr, "app.test", "/").await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
        assert_eq!(reply.header("x-slipway-error"), Some("queue-timeout"));
        assert_eq!(reply.header("retry-after"), Some("1"));
        assert_eq!(
            reply.body,
            "service web of app shop: revision 1 held the request for 300ms and every \
             instance stayed at its concurrency limit; try again shortly"
        );
        assert_eq!(
            server.connections.load(Ordering::SeqCst),
            1,
            "it never reached the backend"
        );
        assert_eq!(stats.queued(), 0);

        server.release(1);
        assert_eq!(held.await.expect("held task").status, StatusCode::OK);
        let reply = get(proxy.addr, "app.test", "/").await;
        assert_eq!(reply.status, StatusCode::OK, "the slot is free again");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_503_at_once_and_the_queued_requests_still_succeed() {
    bounded(async {
        let server = TestBackend::start("a").await;
        let backend = server.backend();
        let stats = RevisionStats::new();
        let proxy = Proxy::with_config(
            RouterConfig {
                queue_limit: 2,
                ..RouterConfig::default()
            },
            table(&stats, vec![backend.clone()], 1),
        )
        .await;

        let held = spawn_gets(proxy.addr, 1, "/hold").pop().expect("one");
        wait_until("the held request has the only slot", || {
            backend.in_flight() == 1
        })
        .await;
        let queued = spawn_gets(proxy.addr, 2, "/");
        wait_until("two requests wait", || stats.queued() == 2).await;
        // Waiting requests are queued, not in flight.
        assert_eq!(stats.in_flight(), 1);
        assert_eq!(stats.snapshot(Duration::from_secs(60)).queued, 2);

        let reply = get(proxy.addr, "app.test", "/").await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
        assert_eq!(reply.header("x-slipway-error"), Some("queue-full"));
        assert_eq!(reply.header("retry-after"), Some("1"));
        assert_eq!(
            reply.body,
            "service web of app shop: revision 1 already holds 2 requests waiting for an \
             instance; try again shortly"
        );

        server.release(1);
        assert_eq!(held.await.expect("held task").status, StatusCode::OK);
        for reply in queued {
            assert_eq!(reply.await.expect("queued task").status, StatusCode::OK);
        }
        assert_eq!(stats.queued(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_from_zero_holds_requests_until_a_table_brings_a_ready_backend() {
    bounded(async {
        let stats = RevisionStats::new();
        let proxy = Proxy::with_table(table(&stats, Vec::new(), 0)).await;
        let (activator, calls) = recording_activator();
        proxy.router.set_activator(activator);

        let waiting = spawn_gets(proxy.addr, 50, "/");
        wait_until("all 50 requests are held", || stats.queued() == 50).await;
        assert_eq!(
            *calls.lock().expect("calls"),
            vec![("shop".to_owned(), "web".to_owned(), 1)],
            "one activation for the whole wait"
        );
        assert_eq!(stats.in_flight(), 0);

        // The control plane starts an instance and publishes it, ready.
        let server = TestBackend::start("a").await;
        proxy
            .router
            .publish(table(&stats, vec![server.backend()], 0));
        for reply in waiting {
            let reply = reply.await.expect("request task");
            assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
            assert_eq!(reply.backend(), "a");
        }
        assert_eq!(stats.queued(), 0);
        assert_eq!(calls.lock().expect("calls").len(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_ready_on_a_starting_backend_releases_held_requests() {
    bounded(async {
        let server = TestBackend::start("a").await;
        let starting = Backend::new(server.addr, "a");
        let stats = RevisionStats::new();
        let proxy = Proxy::with_table(table(&stats, vec![starting.clone()], 0)).await;
        let (activator, calls) = recording_activator();
        proxy.router.set_activator(activator);

        let waiting = spawn_gets(proxy.addr, 10, "/");
        wait_until("all 10 requests are held", || stats.queued() == 10).await;
        assert_eq!(calls.lock().expect("calls").len(), 1);
        assert_eq!(server.connections.load(Ordering::SeqCst), 0);

        starting.set_ready(true);
        for reply in waiting {
            assert_eq!(reply.await.expect("request task").status, StatusCode::OK);
        }
        assert_eq!(stats.queued(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cold_revision_that_never_becomes_ready_times_out_and_activates_again_later() {
    bounded(async {
        let stats = RevisionStats::new();
        let proxy = Proxy::with_config(
            RouterConfig {
                queue_timeout: Duration::from_millis(200),
                ..RouterConfig::default()
            },
            table(&stats, Vec::new(), 0),
        )
        .await;
        let (activator, calls) = recording_activator();
        proxy.router.set_activator(activator);

        let reply = get(proxy.addr, "app.test", "/").await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.header("x-slipway-error"), Some("queue-timeout"));
        assert_eq!(
            reply.body,
            "service web of app shop: revision 1 held the request for 200ms and no instance \
             became ready; try again shortly"
        );
        // The episode ended with the queue empty: the next request asks again.
        let reply = get(proxy.addr, "app.test", "/").await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(calls.lock().expect("calls").len(), 2);
        // The router's own answers count as errors of the revision.
        assert_eq!(stats.totals().requests_by_class, [0, 0, 0, 0, 2]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_requests_follow_their_route_to_another_revision() {
    bounded(async {
        let cold = RevisionStats::new();
        let proxy = Proxy::with_table(table(&cold, Vec::new(), 0)).await;
        let (activator, _calls) = recording_activator();
        proxy.router.set_activator(activator);
        let waiting = spawn_gets(proxy.addr, 5, "/");
        wait_until("all 5 requests are held", || cold.queued() == 5).await;

        // Traffic moves to revision 2, which has a ready instance.
        let server = TestBackend::start("r2").await;
        let warm = RevisionStats::new();
        let mut moved = RouteTable::new();
        moved.add_host(
            "app.test",
            Arc::new(Target {
                app: "shop".into(),
                service: "web".into(),
                pools: vec![Pool::with_stats(
                    2,
                    100,
                    vec![server.backend()],
                    warm.clone(),
                )],
                ..Target::default()
            }),
        );
        proxy.router.publish(moved);
        for reply in waiting {
            let reply = reply.await.expect("request task");
            assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
            assert_eq!(reply.backend(), "r2");
        }
        assert_eq!(cold.queued(), 0);
        // They count for the revision that served them.
        wait_until("the requests are recorded", || {
            warm.totals().requests() == 5
        })
        .await;
        assert_eq!(cold.totals().requests(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_activator_a_cold_revision_answers_503_at_once() {
    bounded(async {
        let stats = RevisionStats::new();
        let proxy = Proxy::with_table(table(&stats, Vec::new(), 0)).await;
        let reply = get(proxy.addr, "app.test", "/").await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.header("x-slipway-error"), Some("no-ready-instance"));
        assert_eq!(stats.queued(), 0);
    })
    .await;
}
