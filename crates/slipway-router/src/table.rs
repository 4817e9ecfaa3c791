//! The route table: which service (target) answers a host and path, and how a request picks one
//! backend of that service — a smooth weighted round-robin over revision pools, then the ready
//! backend with the fewest outstanding requests inside the chosen pool.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::backend::Backend;
use crate::stats::RevisionStats;

/// The backends of one revision of a service, the share of traffic the revision gets, and
/// where the proxy records the revision's requests.
#[derive(Debug, Clone)]
pub struct Pool {
    /// The revision these backends run.
    pub revision: u64,
    /// Relative weight; a pool with weight 0 never gets traffic.
    pub weight: u32,
    /// The instances of this revision.
    pub backends: Vec<Arc<Backend>>,
    /// The revision's request measurements. Pass the same `Arc` for the revision in every
    /// table you publish, so the counts survive route-table swaps.
    pub stats: Arc<RevisionStats>,
}

impl Pool {
    /// A pool with fresh, empty stats. To keep counting across route tables, use
    /// [`Pool::with_stats`] with the revision's long-lived stats instead.
    pub fn new(revision: u64, weight: u32, backends: Vec<Arc<Backend>>) -> Pool {
        Pool::with_stats(revision, weight, backends, RevisionStats::new())
    }

    /// A pool recording into `stats`, which the caller keeps for the revision and passes in
    /// every table it publishes.
    pub fn with_stats(
        revision: u64,
        weight: u32,
        backends: Vec<Arc<Backend>>,
        stats: Arc<RevisionStats>,
    ) -> Pool {
        Pool {
            revision,
            weight,
            backends,
            stats,
        }
    }
}

/// A routable service: the app and service names (for error messages) and its revision pools.
#[derive(Debug, Clone)]
pub struct Target {
    /// The app the service belongs to.
    pub app: String,
    /// The service name.
    pub service: String,
    /// Weighted revisions; usually one pool with weight 100.
    pub pools: Vec<Pool>,
}

/// Per-target balancing state shared by every route that points at the same `Arc<Target>`.
struct Balancer {
    /// Smooth weighted round-robin "current weights", one per pool.
    current: Mutex<Vec<i64>>,
    /// Per-pool rotation counters used to break ties between equally loaded backends.
    rotation: Vec<AtomicUsize>,
}

impl Balancer {
    fn new(pools: usize) -> Balancer {
        Balancer {
            current: Mutex::new(vec![0; pools]),
            rotation: (0..pools).map(|_| AtomicUsize::new(0)).collect(),
        }
    }
}

/// A target together with its balancing state.
#[derive(Clone)]
pub(crate) struct Route {
    pub(crate) target: Arc<Target>,
    balancer: Arc<Balancer>,
}

impl Route {
    /// Picks the pool for the next request, or `None` if no pool has a positive weight.
    ///
    /// Smooth weighted round-robin (as in nginx): every pick adds each pool's weight to its
    /// current value, takes the largest and subtracts the total from it. Over any aligned window
    /// of `sum(weights)` picks each pool is chosen exactly `weight` times, evenly spread.
    pub(crate) fn pick_pool(&self) -> Option<usize> {
        let pools = &self.target.pools;
        let mut weighted = pools.iter().enumerate().filter(|(_, p)| p.weight > 0);
        let first = weighted.next()?.0;
        if weighted.next().is_none() {
            return Some(first);
        }
        let total: i64 = pools.iter().map(|p| i64::from(p.weight)).sum();
        let mut current = self
            .balancer
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut best: Option<usize> = None;
        for (i, pool) in pools.iter().enumerate() {
            if pool.weight == 0 {
                continue;
            }
            current[i] += i64::from(pool.weight);
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        let best = best?;
        current[best] -= total;
        Some(best)
    }

    /// Picks the ready backend of `pool` with the fewest outstanding requests, skipping the
    /// indices in `exclude`. Ties are broken by rotating the starting point.
    pub(crate) fn pick_backend(&self, pool: usize, exclude: &[usize]) -> Option<usize> {
        let backends = &self.target.pools.get(pool)?.backends;
        let n = backends.len();
        let start = match n {
            0 => return None,
            1 => 0,
            _ => self.balancer.rotation[pool].fetch_add(1, Ordering::Relaxed) % n,
        };
        let mut best: Option<(usize, usize)> = None;
        for k in 0..n {
            let i = (start + k) % n;
            let backend = &backends[i];
            if !backend.is_ready() || exclude.contains(&i) {
                continue;
            }
            let load = backend.in_flight();
            if best.is_none_or(|(_, l)| load < l) {
                best = Some((i, load));
                if load == 0 {
                    break;
                }
            }
        }
        best.map(|(i, _)| i)
    }
}

/// An immutable mapping from host (and path prefix) to target, built once and then published
/// to a [`crate::Router`].
#[derive(Default)]
pub struct RouteTable {
    hosts: HashMap<String, Route>,
    /// Prefix routes per host, longest prefix first.
    prefixes: HashMap<String, Vec<(String, Route)>>,
    /// Balancers by target identity, so routes sharing an `Arc<Target>` share its state.
    balancers: HashMap<usize, Arc<Balancer>>,
}

impl RouteTable {
    /// An empty table: every request gets a 404.
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes every path of `host` to `target`. The host is matched case-insensitively and any
    /// port is ignored. Adding the same host again replaces the earlier route.
    pub fn add_host(&mut self, host: &str, target: Arc<Target>) {
        let route = self.route_for(target);
        self.hosts.insert(normalize_host(host).into_owned(), route);
    }

    /// Routes the paths of `host` under `prefix` to `target`; the longest matching prefix
    /// wins. `/api` matches `/api`, `/api/x` and `/api?q` but not `/apix`; `/` matches all.
    /// Adding the same host and prefix again replaces the earlier route.
    pub fn add_prefix(&mut self, host: &str, prefix: &str, target: Arc<Target>) {
        let route = self.route_for(target);
        let prefix = normalize_prefix(prefix);
        let routes = self
            .prefixes
            .entry(normalize_host(host).into_owned())
            .or_default();
        routes.retain(|(p, _)| *p != prefix);
        routes.push((prefix, route));
        routes.sort_by(|(a, _), (b, _)| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    }

    /// The target for a request to `host` (a Host header value, port allowed) and `path`.
    /// A host route takes the whole host; otherwise the longest matching prefix route applies.
    pub fn lookup(&self, host: &str, path: &str) -> Option<&Arc<Target>> {
        self.route(&normalize_host(host), path)
            .map(|route| &route.target)
    }

    /// Like `lookup`, for a host that is already normalized.
    pub(crate) fn route(&self, host: &str, path: &str) -> Option<&Route> {
        if let Some(route) = self.hosts.get(host) {
            return Some(route);
        }
        self.prefixes
            .get(host)?
            .iter()
            .find(|(prefix, _)| prefix_matches(prefix, path))
            .map(|(_, route)| route)
    }

    /// Whether the table has no routes at all.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.prefixes.is_empty()
    }

    fn route_for(&mut self, target: Arc<Target>) -> Route {
        let pools = target.pools.len();
        let balancer = self
            .balancers
            .entry(Arc::as_ptr(&target) as usize)
            .or_insert_with(|| Arc::new(Balancer::new(pools)))
            .clone();
        Route { target, balancer }
    }
}

impl fmt::Debug for RouteTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (host, route) in &self.hosts {
            map.entry(
                host,
                &format_args!("{}/{}", route.target.app, route.target.service),
            );
        }
        for (host, routes) in &self.prefixes {
            for (prefix, route) in routes {
                map.entry(
                    &format_args!("{host}{prefix}"),
                    &format_args!("{}/{}", route.target.app, route.target.service),
                );
            }
        }
        map.finish()
    }
}

/// Lowercases a host and strips its port (`Example.COM:8080` → `example.com`,
/// `[::1]:80` → `[::1]`) and a trailing dot. Allocates only when the host has capitals.
pub(crate) fn normalize_host(host: &str) -> Cow<'_, str> {
    let host = host.trim();
    let host = if host.starts_with('[') {
        match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        }
    } else {
        match host.rfind(':') {
            Some(colon) => &host[..colon],
            None => host,
        }
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// Makes a prefix start with `/` and drops a trailing `/` (except for `/` itself), so `api`,
/// `/api` and `/api/` are the same route.
fn normalize_prefix(prefix: &str) -> String {
    let trimmed = prefix.trim().trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_owned()
    } else if trimmed.starts_with('/') {
        trimmed.to_owned()
    } else {
        format!("/{trimmed}")
    }
}

/// Whether `path` is `prefix` or lies below it (segment-wise; a query may follow).
fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" {
        return path.starts_with('/');
    }
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
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
        });
        let mut table = RouteTable::new();
        table.add_host("h", t);
        let route = table.route("h", "/").expect("route");

        // Ties rotate over all three.
        let mut seen: Vec<usize> = (0..3)
            .map(|_| route.pick_backend(0, &[]).expect("one"))
            .collect();
        seen.sort_unstable();
        assert_eq!(seen, vec![0, 1, 2]);

        // A busy backend is avoided, an unready one never chosen.
        let _busy = crate::backend::InFlight::new(backends[0].clone());
        backends[1].set_ready(false);
        for _ in 0..6 {
            assert_eq!(route.pick_backend(0, &[]), Some(2));
        }
        assert_eq!(route.pick_backend(0, &[2]), Some(0));
        assert_eq!(route.pick_backend(0, &[0, 2]), None);
    }
}
