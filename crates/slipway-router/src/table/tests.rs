//! Unit tests of route matching, pool choice and backend choice.

use super::*;
use std::net::SocketAddr;

fn target(name: &str, weights: &[u32]) -> Arc<Target> {
    let pools = weights
        .iter()
        .enumerate()
        .map(|(i, &weight)| {
            Pool::new(
                i as u64 + 1,
                weight,
                vec![Backend::new(
                    SocketAddr::from(([127, 0, 0, 1], 1000 + i as u16)),
                    format!("{name}-{i}"),
                )],
            )
        })
        .collect();
    Arc::new(Target {
        app: "app".into(),
        service: name.into(),
        pools,
        ..Target::default()
    })
}

fn found(table: &RouteTable, host: &str, path: &str) -> Option<String> {
    table.lookup(host, path).map(|t| t.service.clone())
}

#[test]
fn host_routes_are_case_insensitive_and_ignore_ports() {
    let mut table = RouteTable::new();
    table.add_host("Shop.Example.com", target("web", &[100]));
    table.add_host("[::1]:8080", target("v6", &[100]));
    assert_eq!(found(&table, "shop.example.com", "/"), Some("web".into()));
    assert_eq!(
        found(&table, "SHOP.example.COM:8080", "/x"),
        Some("web".into())
    );
    assert_eq!(found(&table, "shop.example.com.", "/x"), Some("web".into()));
    assert_eq!(found(&table, "[::1]", "/"), Some("v6".into()));
    assert_eq!(found(&table, "other.example.com", "/"), None);
    assert_eq!(found(&table, "", "/"), None);
}

#[test]
fn longest_prefix_wins_on_segment_boundaries() {
    let mut table = RouteTable::new();
    table.add_prefix("h", "/", target("root", &[100]));
    table.add_prefix("h", "/api", target("api", &[100]));
    table.add_prefix("h", "/api/v2/", target("v2", &[100]));
    assert_eq!(found(&table, "h", "/api"), Some("api".into()));
    assert_eq!(found(&table, "h", "/api/x"), Some("api".into()));
    assert_eq!(found(&table, "h", "/api?q=1"), Some("api".into()));
    assert_eq!(found(&table, "h", "/apix"), Some("root".into()));
    assert_eq!(found(&table, "h", "/api/v2"), Some("v2".into()));
    assert_eq!(found(&table, "h", "/api/v2/users"), Some("v2".into()));
    assert_eq!(found(&table, "h", "/api/v20"), Some("api".into()));
    assert_eq!(found(&table, "h", "/"), Some("root".into()));
    assert_eq!(found(&table, "other", "/api"), None);
}

#[test]
fn host_route_takes_the_whole_host() {
    let mut table = RouteTable::new();
    table.add_prefix("h", "/api", target("api", &[100]));
    table.add_host("h", target("all", &[100]));
    assert_eq!(found(&table, "h", "/api"), Some("all".into()));
}

#[test]
fn prefix_without_root_leaves_other_paths_unrouted() {
    let mut table = RouteTable::new();
    table.add_prefix("h", "api", target("api", &[100]));
    assert_eq!(found(&table, "h", "/api/x"), Some("api".into()));
    assert_eq!(found(&table, "h", "/web"), None);
}

#[test]
fn smooth_weighted_round_robin_is_exact_per_window() {
    let mut table = RouteTable::new();
    table.add_host("h", target("web", &[90, 0, 10]));
    let route = table.route("h", "/").expect("route exists");
    let picks: Vec<usize> = (0..100)
        .map(|_| route.pick_pool().expect("a pool"))
        .collect();
    for window in picks.chunks(10) {
        assert_eq!(window.iter().filter(|&&p| p == 2).count(), 1, "{picks:?}");
        assert_eq!(window.iter().filter(|&&p| p == 0).count(), 9, "{picks:?}");
    }
    assert!(!picks.contains(&1), "a pool with weight 0 got traffic");
}

#[test]
fn no_positive_weight_means_no_pool() {
    let mut table = RouteTable::new();
    table.add_host("h", target("web", &[0, 0]));
    assert_eq!(table.route("h", "/").expect("route").pick_pool(), None);
    let mut table = RouteTable::new();
    table.add_host("h", target("web", &[]));
    assert_eq!(table.route("h", "/").expect("route").pick_pool(), None);
}

#[test]
fn least_outstanding_skips_busy_and_unready_backends_and_rotates_ties() {
    let backends: Vec<Arc<Backend>> = (0..3)
        .map(|i| Backend::new(SocketAddr::from(([127, 0, 0, 1], 2000 + i)), i.to_string()))
        .collect();
    for b in &backends {
        b.set_ready(true);
    }
    let t = Arc::new(Target {
        app: "a".into(),
        service: "s".into(),
        pools: vec![Pool::new(1, 100, backends.clone())],
        ..Target::default()
    });
    let mut table = RouteTable::new();
    table.add_host("h", t);
    let route = table.route("h", "/").expect("route");

    // Ties rotate over all three.
    let mut seen: Vec<usize> = (0..3)
        .map(|_| route.pick_backend(0, &[], usize::MAX).expect("one"))
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, vec![0, 1, 2]);

    // A busy backend is avoided, an unready one never chosen.
    let _busy = InFlight::new(backends[0].clone(), None);
    backends[1].set_ready(false);
    for _ in 0..6 {
        assert_eq!(route.pick_backend(0, &[], usize::MAX), Some(2));
    }
    assert_eq!(route.pick_backend(0, &[2], usize::MAX), Some(0));
    assert_eq!(route.pick_backend(0, &[0, 2], usize::MAX), None);
}

/// A route over one target with pools of `(revision, weight)`, each with one ready backend.
fn route_of(configure: impl FnOnce(&mut Target), pools: &[(u64, u32)]) -> (RouteTable, String) {
    let mut target = Target {
        app: "shop".into(),
        service: "web".into(),
        pools: pools
            .iter()
            .map(|&(revision, weight)| {
                let backend = Backend::new(
                    SocketAddr::from(([127, 0, 0, 1], 3000 + revision as u16)),
                    format!("r{revision}"),
                );
                backend.set_ready(true);
                Pool::new(revision, weight, vec![backend])
            })
            .collect(),
        ..Target::default()
    };
    configure(&mut target);
    let mut table = RouteTable::new();
    table.add_host("h", Arc::new(target));
    (table, "h".into())
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in pairs {
        map.append(
            HeaderName::from_bytes(name.as_bytes()).expect("name"),
            HeaderValue::from_str(value).expect("value"),
        );
    }
    map
}

/// The revision chosen for a request with `pairs` as headers, and the cookie set.
fn chosen(route: &Route, pairs: &[(&str, &str)]) -> Result<(u64, Option<String>), String> {
    match route.choose(&headers(pairs)) {
        Ok(choice) => Ok((
            route.target.pools[choice.pool].revision,
            choice
                .set_cookie
                .map(|c| c.to_str().expect("ascii").to_owned()),
        )),
        Err(err) => Err(err.to_string()),
    }
}

#[test]
fn revision_header_picks_by_number_or_tag_whatever_the_weight() {
    let (table, host) = route_of(
        |t| {
            t.header_override = true;
            t.tags.insert("green".into(), 8);
            t.tags.insert("blue".into(), 7);
            t.tags.insert("gone".into(), 3);
        },
        &[(7, 100), (8, 0)],
    );
    let route = table.route(&host, "/").expect("route");
    assert_eq!(chosen(route, &[]), Ok((7, None)));
    assert_eq!(chosen(route, &[("slipway-revision", "8")]), Ok((8, None)));
    assert_eq!(chosen(route, &[("slipway-revision", " 8 ")]), Ok((8, None)));
    assert_eq!(
        chosen(route, &[("slipway-revision", "green")]),
        Ok((8, None))
    );
    assert_eq!(
        chosen(route, &[("slipway-revision", "blue")]),
        Ok((7, None))
    );
    for unknown in ["9", "red", "gone", "", "Green"] {
        let err = chosen(route, &[("slipway-revision", unknown)]).expect_err(unknown);
        assert!(
            err.starts_with(&format!(
                "no revision {unknown} of service web of app shop; "
            )),
            "{err}"
        );
    }
}

#[test]
fn revision_header_is_ignored_unless_the_target_allows_it() {
    let (table, host) = route_of(|_| {}, &[(7, 100), (8, 0)]);
    let route = table.route(&host, "/").expect("route");
    assert_eq!(chosen(route, &[("slipway-revision", "8")]), Ok((7, None)));
    assert_eq!(
        chosen(route, &[("slipway-revision", "nonsense")]),
        Ok((7, None))
    );
}

#[test]
fn sticky_targets_pin_split_choices_and_honour_cookies_of_weighted_revisions() {
    let (table, host) = route_of(|t| t.sticky = true, &[(1, 50), (2, 50), (3, 0)]);
    let route = table.route(&host, "/").expect("route");
    // A split choice sets the cookie of the revision it chose.
    let (revision, cookie) = chosen(route, &[]).expect("a choice");
    assert_eq!(
        cookie.as_deref(),
        Some(format!("slipway-rev-web={revision}; Path=/; HttpOnly; SameSite=Lax").as_str())
    );
    // The cookie wins over the split every time, and is not set again.
    for _ in 0..10 {
        assert_eq!(
            chosen(route, &[("cookie", "a=1; slipway-rev-web=2; b=3")]),
            Ok((2, None))
        );
    }
    // Split cookie headers (HTTP/2) are searched too.
    assert_eq!(
        chosen(route, &[("cookie", "a=1"), ("cookie", "slipway-rev-web=1")]),
        Ok((1, None))
    );
    // Cookies of a weight-0 or unknown revision, or garbage, are overwritten by the split.
    for stale in [
        "slipway-rev-web=3",
        "slipway-rev-web=9",
        "slipway-rev-web=x",
    ] {
        let (revision, cookie) = chosen(route, &[("cookie", stale)]).expect("a choice");
        assert!(revision == 1 || revision == 2, "{stale} -> {revision}");
        assert!(
            cookie.is_some_and(|c| c.starts_with(&format!("slipway-rev-web={revision};"))),
            "{stale}"
        );
    }
    // Another service's cookie means nothing here.
    let (_, cookie) = chosen(route, &[("cookie", "slipway-rev-api=1")]).expect("a choice");
    assert!(cookie.is_some());
}

#[test]
fn sticky_cookie_is_set_only_while_traffic_is_split_or_to_replace_a_stale_one() {
    let (table, host) = route_of(|t| t.sticky = true, &[(1, 100), (2, 0)]);
    let route = table.route(&host, "/").expect("route");
    assert_eq!(chosen(route, &[]), Ok((1, None)));
    assert_eq!(
        chosen(route, &[("cookie", "slipway-rev-web=1")]),
        Ok((1, None))
    );
    assert_eq!(
        chosen(route, &[("cookie", "slipway-rev-web=2")]),
        Ok((
            1,
            Some("slipway-rev-web=1; Path=/; HttpOnly; SameSite=Lax".into())
        ))
    );
    // A target that is not sticky neither reads nor sets the cookie.
    let (table, host) = route_of(|_| {}, &[(1, 50), (2, 50)]);
    let route = table.route(&host, "/").expect("route");
    let picks: Vec<_> = (0..4)
        .map(|_| chosen(route, &[("cookie", "slipway-rev-web=2")]).expect("choice"))
        .collect();
    assert_eq!(picks, vec![(1, None), (2, None), (1, None), (2, None)]);
}

#[test]
fn sticky_cookie_names_are_valid_cookie_names() {
    assert_eq!(sticky_cookie_name("api"), "slipway-rev-api");
    assert_eq!(sticky_cookie_name("my_svc.v2"), "slipway-rev-my_svc.v2");
    assert_eq!(sticky_cookie_name("a b;c=d/é"), "slipway-rev-a_b_c_d__");
}

#[test]
fn concurrency_limit_skips_full_backends_and_never_overshoots() {
    let backends: Vec<Arc<Backend>> = (0..2)
        .map(|i| Backend::new(SocketAddr::from(([127, 0, 0, 1], 4000 + i)), i.to_string()))
        .collect();
    for b in &backends {
        b.set_ready(true);
    }
    let target = Arc::new(Target {
        app: "a".into(),
        service: "s".into(),
        pools: vec![Pool::new(1, 100, backends.clone())],
        max_concurrency: 2,
        ..Target::default()
    });
    let mut table = RouteTable::new();
    table.add_host("h", target);
    let route = table.route("h", "/").expect("route");

    let slots: Vec<_> = (0..4)
        .map(|_| route.acquire(0, &[]).expect("a slot"))
        .collect();
    assert_eq!(backends[0].in_flight(), 2);
    assert_eq!(backends[1].in_flight(), 2);
    assert!(route.acquire(0, &[]).is_none(), "both backends are full");
    drop(slots);
    assert!(backends.iter().all(|b| b.in_flight() == 0));

    // Four threads race for slots; no backend ever holds more than two.
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..5_000 {
                    if let Some((index, slot)) = route.acquire(0, &[]) {
                        let load = backends[index].in_flight();
                        assert!(load <= 2, "backend {index} holds {load}");
                        drop(slot);
                    }
                }
            });
        }
    });
    assert!(backends.iter().all(|b| b.in_flight() == 0));
}

#[test]
fn readiness_is_seen_per_pool() {
    let (table, host) = route_of(|_| {}, &[(1, 100)]);
    let route = table.route(&host, "/").expect("route");
    assert!(route.has_ready(0));
    route.target.pools[0].backends[0].set_ready(false);
    assert!(!route.has_ready(0));
    assert!(route.acquire(0, &[]).is_none());
    assert!(!route.has_ready(5), "no such pool");
}

#[test]
fn the_host_hash_tells_apart_keys_that_differ_only_in_trailing_zero_bytes() {
    use std::hash::BuildHasher;
    let hasher = BuildHasherDefault::<HostHasher>::default();
    let hashes: Vec<u64> = ["ab", "ab\0", "ab\0\0", "abcdefgh", "abcdefgh\0", "ba"]
        .iter()
        .map(|key| hasher.hash_one(key))
        .collect();
    for (i, a) in hashes.iter().enumerate() {
        for b in &hashes[i + 1..] {
            assert_ne!(a, b, "{hashes:x?}");
        }
    }
}

#[test]
fn many_hosts_are_all_found() {
    let mut table = RouteTable::new();
    for i in 0..300 {
        table.add_host(
            &format!("svc{i}.app.localhost"),
            target(&format!("t{i}"), &[100]),
        );
    }
    for i in 0..300 {
        let host = format!("SVC{i}.app.localhost:8080");
        assert_eq!(found(&table, &host, "/"), Some(format!("t{i}")), "{host}");
    }
    assert_eq!(found(&table, "svc300.app.localhost", "/"), None);
}
