//! End-to-end tests of the router over real sockets against real hyper backends.

#[allow(dead_code)]
mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{StatusCode, Version};
use http_body_util::BodyExt;
use slipway_router::{RouteTable, RouterConfig};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_exact_host_then_longest_prefix() {
    bounded(async {
        let a = TestBackend::start("a").await;
        let b = TestBackend::start("b").await;
        let c = TestBackend::start("c").await;
        let mut table = RouteTable::new();
        let site = target("site", vec![(100, vec![a.backend()])]);
        table.add_host("a.test", site.clone());
        table.add_prefix("shop.test", "/", site);
        table.add_prefix(
            "shop.test",
            "/api",
            target("api", vec![(100, vec![b.backend()])]),
        );
        table.add_prefix(
            "shop.test",
            "/api/v2",
            target("v2", vec![(100, vec![c.backend()])]),
        );
        let proxy = Proxy::with_table(table).await;

        let cases = [
            ("a.test", "/anything", "a"),
            ("A.Test:8080", "/api", "a"),
            ("shop.test", "/", "a"),
            ("shop.test", "/apix", "a"),
            ("shop.test:8080", "/api", "b"),
            ("SHOP.test", "/api/x?q=1", "b"),
            ("shop.test", "/api?q=1", "b"),
            ("shop.test", "/api/v2", "c"),
            ("shop.test", "/api/v2/users", "c"),
            ("shop.test", "/api/v20", "b"),
        ];
        let mut client = Client::connect(proxy.addr).await;
        for (host, path, expected) in cases {
            let reply = client.get(host, path).await;
            assert_eq!(reply.status, StatusCode::OK, "{host}{path}: {reply:?}");
            assert_eq!(reply.backend(), expected, "{host}{path}");
            // The path and query reach the backend untouched.
            assert!(reply.body.contains(&format!("uri={path}\n")), "{reply:?}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_host_gets_404_naming_host_and_path() {
    bounded(async {
        let backend = TestBackend::start("a").await;
        let proxy = Proxy::with_table(host_table("known.test", vec![backend.backend()])).await;

        let reply = get(proxy.addr, "Unknown.test:8080", "/some/path?secret=1").await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        assert_eq!(reply.body, "no route for host unknown.test path /some/path");
        assert_eq!(reply.header("x-slipway-error"), Some("no-route"));
        assert_eq!(
            reply.header("content-type"),
            Some("text/plain; charset=utf-8")
        );
        assert!(reply.header("x-request-id").is_some());
        assert_eq!(backend.connections.load(Ordering::SeqCst), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ready_backend_gets_503_with_retry_after() {
    bounded(async {
        let server = TestBackend::start("a").await;
        let backend = slipway_router::Backend::new(server.addr, "a");
        assert!(!backend.is_ready(), "backends start not ready");
        let proxy = Proxy::with_table(host_table("app.test", vec![backend.clone()])).await;

        let reply = get(proxy.addr, "app.test", "/").await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(reply.body, "service web of app shop has no ready instance");
        assert_eq!(reply.header("retry-after"), Some("1"));
        assert_eq!(reply.header("x-slipway-error"), Some("no-ready-instance"));
        assert_eq!(server.connections.load(Ordering::SeqCst), 0);

        backend.set_ready(true);
        let reply = get(proxy.addr, "app.test", "/").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(backend.in_flight(), 0);
    })
    .await;
}

/// An address on which nothing listens.
async fn dead_addr() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("addr")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_backend_gets_502() {
    bounded(async {
        let dead = dead_addr().await;
        let backend = ready_backend(dead, "dead");
        let proxy = Proxy::with_table(host_table("app.test", vec![backend.clone()])).await;

        let reply = get(proxy.addr, "app.test", "/").await;
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
        let expected = format!("service web of app shop: upstream {dead} unreachable: ");
        assert!(reply.body.starts_with(&expected), "{}", reply.body);
        assert_eq!(
            reply.header("x-slipway-error"),
            Some("upstream-unreachable")
        );
        assert_eq!(backend.in_flight(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connection_fails_over_to_the_next_backend() {
    bounded(async {
        let live = TestBackend::start("live").await;
        let dead = ready_backend(dead_addr().await, "dead");
        let proxy =
            Proxy::with_table(host_table("app.test", vec![dead.clone(), live.backend()])).await;

        let mut client = Client::connect(proxy.addr).await;
        for i in 0..10 {
            let reply = client.get("app.test", "/").await;
            assert_eq!(reply.status, StatusCode::OK, "request {i}: {reply:?}");
            assert_eq!(reply.backend(), "live");
        }
        assert_eq!(dead.in_flight(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_backend_gets_504() {
    bounded(async {
        let server = TestBackend::start("slow").await;
        let backend = server.backend();
        let proxy = Proxy::with_config(
            RouterConfig {
                upstream_timeout: Duration::from_millis(300),
                ..RouterConfig::default()
            },
            host_table("app.test", vec![backend.clone()]),
        )
        .await;

        let reply = get(proxy.addr, "app.test", "/slow").await;
        assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(
            reply.body,
            format!(
                "service web of app shop: upstream {} sent no response within 300ms",
                server.addr
            )
        );
        assert_eq!(reply.header("x-slipway-error"), Some("upstream-timeout"));
        assert_eq!(backend.in_flight(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_request_id_and_hop_by_hop_stripping() {
    bounded(async {
        let server = TestBackend::start("a").await;
        let proxy = Proxy::with_table(host_table("app.test", vec![server.backend()])).await;
        let mut client = Client::connect(proxy.addr).await;

        let req = request("GET", "App.test:8080", "/echo?x=1")
            .header("x-forwarded-for", "203.0.113.7")
            .header("x-forwarded-host", "spoofed.example")
            .header("connection", "keep-alive, x-secret")
            .header("x-secret", "1")
            .header("keep-alive", "timeout=5")
            .header("proxy-connection", "keep-alive")
            .header("te", "trailers");
        let reply = read(client.send(with_body(req, "")).await).await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        assert_eq!(
            reply.seen("x-forwarded-for"),
            vec!["203.0.113.7, 127.0.0.1"]
        );
        assert_eq!(reply.seen("x-forwarded-proto"), vec!["http"]);
        assert_eq!(reply.seen("x-forwarded-host"), vec!["App.test:8080"]);
        assert_eq!(reply.seen("host"), vec!["App.test:8080"]);
        for hop in ["x-secret", "keep-alive", "proxy-connection", "te"] {
            assert!(
                reply.seen(hop).is_empty(),
                "{hop} leaked upstream: {}",
                reply.body
            );
        }
        let generated = reply
            .header("x-request-id")
            .expect("request id echoed")
            .to_owned();
        assert_eq!(generated.len(), 36, "{generated}");
        assert_eq!(reply.seen("x-request-id"), vec![generated.clone()]);

        // A second request gets a different id; a client-chosen id is kept.
        let other = client.get("app.test", "/").await;
        assert_ne!(other.header("x-request-id"), Some(generated.as_str()));
        let req = request("GET", "app.test", "/").header("x-request-id", "client-chosen-42");
        let reply = read(client.send(with_body(req, "")).await).await;
        assert_eq!(reply.seen("x-request-id"), vec!["client-chosen-42"]);
        assert_eq!(reply.header("x-request-id"), Some("client-chosen-42"));

        // Hop-by-hop headers of the response stay between backend and proxy.
        let reply = client.get("app.test", "/hop").await;
        assert_eq!(reply.header("x-public"), Some("1"));
        assert_eq!(reply.header("x-internal"), None, "{:?}", reply.headers);
        assert_eq!(reply.header("keep-alive"), None, "{:?}", reply.headers);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_kept_alive_and_reused() {
    bounded(async {
        let server = TestBackend::start("a").await;
        let backend = server.backend();
        let proxy = Proxy::with_table(host_table("app.test", vec![backend.clone()])).await;

        // Sequential requests, each from a new client connection, share one upstream connection.
        for _ in 0..50 {
            let reply = get(proxy.addr, "app.test", "/").await;
            assert_eq!(reply.status, StatusCode::OK);
        }
        assert_eq!(server.connections.load(Ordering::SeqCst), 1);
        assert_eq!(backend.idle_connections(), 1);

        // Four concurrent clients never need more than four upstream connections.
        let mut clients = Vec::new();
        for _ in 0..4 {
            let addr = proxy.addr;
            clients.push(tokio::spawn(async move {
                let mut client = Client::connect(addr).await;
                for _ in 0..25 {
                    assert_eq!(client.get("app.test", "/").await.status, StatusCode::OK);
                }
            }));
        }
        for client in clients {
            client.await.expect("client task");
        }
        let used = server.connections.load(Ordering::SeqCst);
        assert!(
            used <= 4,
            "{used} upstream connections for 4 concurrent clients"
        );

        // A retired backend drops its idle connections.
        backend.close_idle();
        assert_eq!(backend.idle_connections(), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_is_proxied_to_http1() {
    bounded(async {
        let server = TestBackend::start("a").await;
        let proxy = Proxy::with_table(host_table("app.test", vec![server.backend()])).await;
        let mut sender = h2_client(proxy.addr).await;

        let mut streams = Vec::new();
        for i in 0..10 {
            sender.ready().await.expect("h2 ready");
            let req = http::Request::get(format!("http://app.test:8080/h2/{i}"))
                .header("cookie", "a=1")
                .header("cookie", "b=2")
                .body(empty())
                .expect("request");
            streams.push(sender.send_request(req));
        }
        for (i, stream) in streams.into_iter().enumerate() {
            let response = stream.await.expect("h2 response");
            assert_eq!(response.version(), Version::HTTP_2);
            let reply = read(response).await;
            assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
            assert!(reply.body.contains("version=HTTP/1.1\n"), "{}", reply.body);
            assert!(
                reply.body.contains(&format!("uri=/h2/{i}\n")),
                "{}",
                reply.body
            );
            assert_eq!(reply.seen("host"), vec!["app.test:8080"]);
            assert_eq!(reply.seen("cookie"), vec!["a=1; b=2"]);
            assert!(reply.header("x-request-id").is_some());
        }
    })
    .await;
}

/// The streams of one h2 connection are served inside that connection's task (see `h2.rs`):
/// a stream whose body is still running holds up neither the other streams nor an upload, and
/// its upstream connection goes back to the pool when it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_streams_of_one_connection_run_side_by_side() {
    bounded(async {
        let server = TestBackend::start("a").await;
        let backend = server.backend();
        let proxy = Proxy::with_table(host_table("app.test", vec![backend.clone()])).await;
        let mut sender = h2_client(proxy.addr).await;

        sender.ready().await.expect("h2 ready");
        let held = sender.send_request(with_body(request("GET", "app.test", "/stream"), ""));
        let mut held = held.await.expect("held response").into_body();
        let first = held.frame().await.expect("a frame").expect("no error");
        assert_eq!(
            first.into_data().expect("data"),
            Bytes::from_static(b"first\n")
        );

        // Meanwhile, on the same connection: plain requests and a streamed upload.
        for i in 0..5 {
            sender.ready().await.expect("h2 ready");
            let req = with_body(request("GET", "app.test", &format!("/n/{i}")), "");
            let reply = read(sender.send_request(req).await.expect("response")).await;
            assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
            assert!(
                reply.body.contains(&format!("uri=/n/{i}\n")),
                "{}",
                reply.body
            );
        }
        sender.ready().await.expect("h2 ready");
        let (req, upload) = with_stream(request("POST", "app.test", "/duplex"));
        let response = sender.send_request(req);
        upload
            .send(Bytes::from_static(b"up-1"))
            .await
            .expect("send");
        let mut echo = response.await.expect("duplex response").into_body();
        let echoed = echo.frame().await.expect("frame").expect("ok");
        assert_eq!(
            echoed.into_data().expect("data"),
            Bytes::from_static(b"up-1")
        );
        upload
            .send(Bytes::from_static(b"up-2"))
            .await
            .expect("send");
        let echoed = echo.frame().await.expect("frame").expect("ok");
        assert_eq!(
            echoed.into_data().expect("data"),
            Bytes::from_static(b"up-2")
        );
        drop(upload);
        assert!(echo.collect().await.expect("end").to_bytes().is_empty());
        assert_eq!(
            backend.in_flight(),
            1,
            "only the held stream is still running"
        );

        server.release(1);
        let rest = held.collect().await.expect("rest").to_bytes();
        assert_eq!(rest, Bytes::from_static(b"second\n"));
        wait_until("no stream in flight", || backend.in_flight() == 0).await;
        assert_eq!(
            backend.idle_connections(),
            2,
            "both upstream connections (the held stream's and the others') are pooled"
        );
    })
    .await;
}

/// Pooled upstream connections are not watched by a task of their own; a close the backend
/// sent while one idled is still seen before it is reused, so even a POST (never replayed)
/// goes out on a fresh connection instead of failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_the_backend_closed_is_not_reused() {
    bounded(async {
        let (addr, connections) = one_answer_per_connection_backend(true).await;
        let backend = ready_backend(addr, "closer");
        // HTTP/1.1 through hyper (the fast path keeps sockets of its own) and h2c.
        let proxy = Proxy::with_config(
            RouterConfig {
                h1_fast_path: false,
                ..RouterConfig::default()
            },
            host_table("app.test", vec![backend.clone()]),
        )
        .await;
        for proto in ["h1", "h2"] {
            for i in 1..=3 {
                // Time for the backend's FIN to reach the router's reactor.
                tokio::time::sleep(Duration::from_millis(50)).await;
                let req = with_body(request("POST", "app.test", "/"), format!("{proto}-{i}"));
                let response = if proto == "h1" {
                    Client::connect(proxy.addr).await.send(req).await
                } else {
                    let mut sender = h2_client(proxy.addr).await;
                    sender.ready().await.expect("h2 ready");
                    sender.send_request(req).await.expect("h2 response")
                };
                let reply = read(response).await;
                assert_eq!(reply.status, StatusCode::OK, "{proto} POST {i}: {reply:?}");
                assert!(
                    reply.body.ends_with(&format!(" got {proto}-{i}")),
                    "{}",
                    reply.body
                );
            }
        }
        assert_eq!(connections.load(Ordering::SeqCst), 6);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_is_tunneled_and_counted_until_closed() {
    bounded(async {
        let server = TestBackend::start("ws").await;
        let backend = server.backend();
        let proxy = Proxy::with_table(host_table("app.test", vec![backend.clone()])).await;

        let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
        stream
            .write_all(b"GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
            .await
            .expect("write upgrade request");
        let head = read_head(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        assert!(head.to_ascii_lowercase().contains("upgrade: echo"), "{head}");
        assert_eq!(backend.in_flight(), 1, "the open tunnel counts as in flight");

        for message in [&b"ping-through-proxy"[..], b"second message"] {
            stream.write_all(message).await.expect("write");
            let mut echoed = vec![0u8; message.len()];
            stream.read_exact(&mut echoed).await.expect("read echo");
            assert_eq!(echoed, message);
        }
        assert_eq!(backend.in_flight(), 1);
        drop(stream);
        wait_until("the tunnel is closed", || backend.in_flight() == 0).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_response_flows_before_the_backend_finishes_and_counts_until_the_end() {
    bounded(async {
        let server = TestBackend::start("a").await;
        let backend = server.backend();
        let proxy = Proxy::with_table(host_table("app.test", vec![backend.clone()])).await;
        let mut client = Client::connect(proxy.addr).await;

        let response = client
            .send(with_body(request("GET", "app.test", "/stream"), ""))
            .await;
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body();
        // The backend only sends the rest once released, so this proves nothing is buffered.
        let first = body.frame().await.expect("a frame").expect("no error");
        assert_eq!(
            first.into_data().expect("data"),
            Bytes::from_static(b"first\n")
        );
        assert_eq!(
            backend.in_flight(),
            1,
            "headers arrived but the body is still running"
        );

        server.release(1);
        let rest = body.collect().await.expect("rest of body").to_bytes();
        assert_eq!(rest, Bytes::from_static(b"second\n"));
        wait_until("the finished body is no longer in flight", || {
            backend.in_flight() == 0
        })
        .await;
        assert_eq!(
            backend.idle_connections(),
            1,
            "connection returned to the pool"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_and_response_bodies_stream_both_ways() {
    bounded(async {
        let server = TestBackend::start("a").await;
        let proxy = Proxy::with_table(host_table("app.test", vec![server.backend()])).await;
        let mut client = Client::connect(proxy.addr).await;

        // Full duplex: each uploaded chunk comes back before the upload is finished.
        let (req, upload) = with_stream(request("POST", "app.test", "/duplex"));
        upload
            .send(Bytes::from_static(b"chunk-1"))
            .await
            .expect("send");
        let response = client.send(req).await;
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body();
        let echoed = body
            .frame()
            .await
            .expect("frame")
            .expect("ok")
            .into_data()
            .expect("data");
        assert_eq!(echoed, Bytes::from_static(b"chunk-1"));
        upload
            .send(Bytes::from_static(b"chunk-2"))
            .await
            .expect("send");
        let echoed = body
            .frame()
            .await
            .expect("frame")
            .expect("ok")
            .into_data()
            .expect("data");
        assert_eq!(echoed, Bytes::from_static(b"chunk-2"));
        drop(upload);
        assert!(body.collect().await.expect("end").to_bytes().is_empty());

        // A large body survives the round trip intact.
        let big: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
        let req = with_body(request("POST", "app.test", "/duplex"), big.clone());
        let reply = client.send(req).await;
        let got = reply
            .into_body()
            .collect()
            .await
            .expect("big body")
            .to_bytes();
        assert!(
            got == big,
            "8 MiB body changed in transit ({} bytes back)",
            got.len()
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_pools_split_exactly() {
    bounded(async {
        let stable = TestBackend::start("stable").await;
        let canary = TestBackend::start("canary").await;
        let off = TestBackend::start("off").await;
        let mut table = RouteTable::new();
        table.add_host(
            "app.test",
            target(
                "web",
                vec![
                    (90, vec![stable.backend()]),
                    (10, vec![canary.backend()]),
                    (0, vec![off.backend()]),
                ],
            ),
        );
        let proxy = Proxy::with_table(table).await;
        let mut client = Client::connect(proxy.addr).await;

        let mut answered = Vec::new();
        for _ in 0..100 {
            let reply = client.get("app.test", "/").await;
            assert_eq!(reply.status, StatusCode::OK);
            answered.push(reply.backend().to_owned());
        }
        for window in answered.chunks(10) {
            assert_eq!(
                window.iter().filter(|b| *b == "canary").count(),
                1,
                "{answered:?}"
            );
            assert_eq!(
                window.iter().filter(|b| *b == "stable").count(),
                9,
                "{answered:?}"
            );
        }
        assert_eq!(
            off.connections.load(Ordering::SeqCst),
            0,
            "weight 0 got traffic"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_outstanding_backend_gets_new_requests() {
    bounded(async {
        let one = TestBackend::start("one").await;
        let two = TestBackend::start("two").await;
        let (b1, b2) = (one.backend(), two.backend());
        let proxy = Proxy::with_table(host_table("app.test", vec![b1.clone(), b2.clone()])).await;

        let addr = proxy.addr;
        let held = tokio::spawn(async move { get(addr, "app.test", "/hold").await });
        wait_until("the held request is in flight", || {
            b1.in_flight() + b2.in_flight() == 1
        })
        .await;
        let (busy, idle) = if b1.in_flight() == 1 {
            (&one, "two")
        } else {
            (&two, "one")
        };

        let mut client = Client::connect(proxy.addr).await;
        for _ in 0..6 {
            let reply = client.get("app.test", "/").await;
            assert_eq!(reply.backend(), idle, "a request went to the busy backend");
        }
        busy.release(1);
        let reply = held.await.expect("held task");
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, format!("held by {}", busy.name));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_swaps_routes_while_a_running_request_completes_on_the_old_backend() {
    bounded(async {
        let old = TestBackend::start("old").await;
        let new = TestBackend::start("new").await;
        let old_backend = old.backend();
        let proxy = Proxy::with_table(host_table("app.test", vec![old_backend.clone()])).await;

        let addr = proxy.addr;
        let held = tokio::spawn(async move { get(addr, "app.test", "/hold").await });
        wait_until("the slow request reached the old backend", || {
            old_backend.in_flight() == 1
        })
        .await;

        proxy
            .router
            .publish(host_table("app.test", vec![new.backend()]));
        old_backend.set_ready(false);
        let reply = get(proxy.addr, "app.test", "/").await;
        assert_eq!(reply.backend(), "new");
        assert!(proxy.router.table().lookup("app.test", "/").is_some());

        old.release(1);
        let reply = held.await.expect("held task");
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, "held by old");
        wait_until("the old backend is drained", || {
            old_backend.in_flight() == 0
        })
        .await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_restarted_on_the_same_port_causes_no_client_error() {
    bounded(async {
        let first = TestBackend::start("v1").await;
        let addr = first.addr;
        let backend = first.backend();
        let proxy = Proxy::with_table(host_table("app.test", vec![backend.clone()])).await;
        let mut client = Client::connect(proxy.addr).await;

        assert_eq!(client.get("app.test", "/").await.backend(), "v1");
        assert_eq!(
            backend.idle_connections(),
            1,
            "a pooled connection to the old process"
        );
        first.kill().await;
        let second = TestBackend::start_on(addr, "v2").await;

        for _ in 0..5 {
            let reply = client.get("app.test", "/").await;
            assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
            assert_eq!(reply.backend(), "v2");
        }
        assert_eq!(second.connections.load(Ordering::SeqCst), 1);
    })
    .await;
}

/// A raw HTTP/1.1 backend that answers the first request on each connection with `answer`,
/// writing its head and then (`body_after` later) its body, reads and drops whatever the
/// router sends after that, and never answers again on that connection. Returns its address.
async fn answer_once_backend(
    head: &'static str,
    body: &'static str,
    body_after: Duration,
    close: bool,
) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = read_head(&mut stream).await;
                let _ = stream.write_all(head.as_bytes()).await;
                tokio::time::sleep(body_after).await;
                let _ = stream.write_all(body.as_bytes()).await;
                if close {
                    return;
                }
                let mut sink = [0u8; 4096];
                while let Ok(n) = stream.read(&mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// An answer with `Connection: close` whose body comes after its head reaches the client
/// whole on hyper's path (h2c here): the connection is driven by the body until its end, and
/// only then dropped instead of pooled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_close_answer_is_delivered_whole_and_not_pooled() {
    bounded(async {
        let addr = answer_once_backend(
            "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 10\r\n\r\n",
            "0123456789",
            Duration::from_millis(50),
            true,
        )
        .await;
        let backend = ready_backend(addr, "closer");
        let proxy = Proxy::with_table(host_table("app.test", vec![backend.clone()])).await;
        let mut sender = h2_client(proxy.addr).await;
        for _ in 0..2 {
            sender.ready().await.expect("h2 ready");
            let req = with_body(request("GET", "app.test", "/"), "");
            let reply = read(sender.send_request(req).await.expect("response")).await;
            assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
            assert_eq!(reply.body, "0123456789");
        }
        assert_eq!(backend.idle_connections(), 0);
    })
    .await;
}

/// A backend that answers before it has read the whole upload leaves its connection busy
/// sending the rest: that connection is not pooled, so the next request does not wait behind
/// the first client's upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_still_sending_an_upload_is_not_reused() {
    bounded(async {
        let addr = answer_once_backend(
            "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n",
            "early",
            Duration::ZERO,
            false,
        )
        .await;
        let backend = ready_backend(addr, "early");
        let proxy = Proxy::with_table(host_table("app.test", vec![backend.clone()])).await;
        let mut sender = h2_client(proxy.addr).await;
        sender.ready().await.expect("h2 ready");
        let (req, upload) = with_stream(request("POST", "app.test", "/upload"));
        let response = sender.send_request(req);
        upload
            .send(Bytes::from_static(b"part 1"))
            .await
            .expect("send");
        let reply = read(response.await.expect("early response")).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, "early")
        );
        // The upload is still open; another request must get its own connection.
        sender.ready().await.expect("h2 ready");
        let req = with_body(request("GET", "app.test", "/"), "");
        let reply = read(sender.send_request(req).await.expect("response")).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (StatusCode::OK, "early")
        );
        drop(upload);
    })
    .await;
}

/// A raw HTTP/1.1 backend that answers the first request on each connection (`answer on
/// connection N`, then ` got BODY` if the request had one) and then closes the connection:
/// after reading the second request, like a keep-alive timeout firing just as a request
/// arrives, or, with `at_once`, right after answering without saying so (no `Connection:
/// close`), like a keep-alive timeout of zero. Returns its address and a connection counter.
async fn one_answer_per_connection_backend(
    at_once: bool,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            tokio::spawn(async move {
                let head = read_head(&mut stream).await.to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().expect("content-length"));
                let mut request_body = vec![0u8; length];
                stream
                    .read_exact(&mut request_body)
                    .await
                    .expect("request body");
                let mut body = format!("answer on connection {n}");
                if length > 0 {
                    body += &format!(" got {}", String::from_utf8_lossy(&request_body));
                }
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                if !at_once {
                    let mut buf = [0u8; 1];
                    let _ = stream.read(&mut buf).await;
                    // Closing with unread request bytes resets the connection.
                }
            });
        }
    });
    (addr, connections)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_request_on_a_connection_closed_under_it_is_replayed() {
    bounded(async {
        let (addr, connections) = one_answer_per_connection_backend(false).await;
        let backend = ready_backend(addr, "flaky");
        let proxy = Proxy::with_table(host_table("app.test", vec![backend.clone()])).await;
        let mut client = Client::connect(proxy.addr).await;

        let reply = client.get("app.test", "/").await;
        assert_eq!(reply.body, "answer on connection 1");
        assert_eq!(backend.idle_connections(), 1);
        // Let the pooled connection idle long enough to count as a keep-alive race candidate.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let reply = client.get("app.test", "/").await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        assert_eq!(reply.body, "answer on connection 2");
        assert_eq!(connections.load(Ordering::SeqCst), 2);

        // A POST is not idempotent: it is never sent twice, the client sees the failure.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let req = with_body(request("POST", "app.test", "/"), "order=1");
        let reply = read(client.send(req).await).await;
        assert_eq!(reply.status, StatusCode::BAD_GATEWAY, "{reply:?}");
        assert_eq!(reply.header("x-slipway-error"), Some("upstream-failed"));
        assert!(
            reply.body.starts_with(&format!(
                "service web of app shop: upstream {addr} failed: "
            )),
            "{}",
            reply.body
        );
        assert_eq!(connections.load(Ordering::SeqCst), 2);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_request_gets_400() {
    bounded(async {
        let server = TestBackend::start("a").await;
        let proxy = Proxy::with_table(host_table("app.test", vec![server.backend()])).await;
        let mut stream = TcpStream::connect(proxy.addr).await.expect("connect");
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost app.test\r\n\r\n")
            .await
            .expect("write");
        let head = read_head(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 400"), "{head}");
        assert_eq!(server.connections.load(Ordering::SeqCst), 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting_and_lets_running_requests_finish() {
    bounded(async {
        let server = TestBackend::start("a").await;
        let backend = server.backend();
        let mut proxy = Proxy::with_table(host_table("app.test", vec![backend.clone()])).await;

        let addr = proxy.addr;
        let held = tokio::spawn(async move { get(addr, "app.test", "/hold").await });
        wait_until("the request is in flight", || backend.in_flight() == 1).await;
        let served = proxy.stop();

        // The listener closes while the running request is still waiting.
        for _ in 0..1000 {
            if TcpStream::connect(addr).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            TcpStream::connect(addr).await.is_err(),
            "still accepting after shutdown"
        );
        assert!(!served.is_finished());

        server.release(1);
        let reply = held.await.expect("held task");
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, "held by a");
        served.await.expect("serve task").expect("serve result");
    })
    .await;
}

/// Sends one request as raw text over a fresh connection and reads the answer to its end.
async fn raw_exchange(addr: std::net::SocketAddr, version: &str, host: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} {version}\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_challenges_and_https_redirects_are_answered_by_the_router_on_both_paths() {
    bounded(async {
        let backend = TestBackend::start("a").await;
        let mut table = RouteTable::new();
        table.add_host(
            "secure.test",
            target_with("web", vec![(100, vec![backend.backend()])], |t| {
                t.redirect_https = true;
            }),
        );
        table.add_host(
            "plain.test",
            target("plain", vec![(100, vec![backend.backend()])]),
        );
        let config = RouterConfig {
            https_port: Some(8443),
            ..RouterConfig::default()
        };
        let proxy = Proxy::with_config(config, table).await;
        proxy.router.publish_http_challenges(
            [("tok".to_owned(), "tok.thumb".to_owned())]
                .into_iter()
                .collect(),
        );
        // HTTP/1.1 takes the fast path, HTTP/1.0 hyper's.
        for version in ["HTTP/1.1", "HTTP/1.0"] {
            for host in ["secure.test", "plain.test", "unknown.test"] {
                let answer =
                    raw_exchange(proxy.addr, version, host, "/.well-known/acme-challenge/tok")
                        .await;
                assert!(answer.contains(" 200 OK\r\n"), "{version} {host}: {answer}");
                assert!(answer.ends_with("\r\n\r\ntok.thumb"), "{answer}");
                assert!(!answer.contains("x-slipway-error"), "{answer}");
            }
            let answer = raw_exchange(proxy.addr, version, "secure.test", "/a/b?c=1").await;
            assert!(
                answer.contains(" 308 Permanent Redirect\r\n")
                    && answer.contains("location: https://secure.test:8443/a/b?c=1\r\n"),
                "{version}: {answer}"
            );
            // A challenge path with no pending challenge goes to the app, not to HTTPS.
            let answer = raw_exchange(
                proxy.addr,
                version,
                "secure.test",
                "/.well-known/acme-challenge/other",
            )
            .await;
            assert!(answer.contains(" 200 OK\r\n"), "{version}: {answer}");
            assert!(answer.contains("backend=a"), "{version}: {answer}");
            let answer = raw_exchange(proxy.addr, version, "plain.test", "/").await;
            assert!(
                answer.contains(" 200 OK\r\n") && answer.contains("backend=a"),
                "{version}: {answer}"
            );
        }
        // Withdrawn challenges are no longer answered.
        proxy
            .router
            .publish_http_challenges(std::collections::HashMap::new());
        let answer = raw_exchange(
            proxy.addr,
            "HTTP/1.1",
            "unknown.test",
            "/.well-known/acme-challenge/tok",
        )
        .await;
        assert!(answer.contains(" 404 Not Found\r\n"), "{answer}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_connections_are_counted_while_open() {
    bounded(async {
        let backend = TestBackend::start("a").await;
        let proxy = Proxy::with_table(host_table("a.test", vec![backend.backend()])).await;
        assert_eq!(proxy.router.client_connections(), 0);
        // An idle one, one the fast path served, one hyper serves (HTTP/1.0).
        let idle = TcpStream::connect(proxy.addr).await.expect("connect");
        let mut fast = TcpStream::connect(proxy.addr).await.expect("connect");
        let mut old = TcpStream::connect(proxy.addr).await.expect("connect");
        for (stream, version) in [(&mut fast, "1.1"), (&mut old, "1.0")] {
            let request =
                format!("GET / HTTP/{version}\r\nHost: a.test\r\nConnection: keep-alive\r\n\r\n");
            stream.write_all(request.as_bytes()).await.expect("write");
            let mut got = [0u8; 512];
            let n = stream.read(&mut got).await.expect("read");
            assert!(got[..n].starts_with(b"HTTP/1."), "{:?}", &got[..n]);
        }
        let router = proxy.router.clone();
        wait_until("three open connections", || {
            router.client_connections() == 3
        })
        .await;
        drop((idle, fast, old));
        wait_until("no open connection", || router.client_connections() == 0).await;
    })
    .await;
}
