//! The route table: which service (target) answers a host and path, and how a request picks one
//! backend of that service — a revision pool (asked for with `Slipway-Revision`, pinned by the
//! sticky cookie, or else by smooth weighted round-robin), then the ready backend with the
//! fewest outstanding requests inside the chosen pool that is below the concurrency limit.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use http::header::COOKIE;
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::backend::{Backend, InFlight};
use crate::error::ProxyError;
use crate::stats::RevisionStats;

/// The header a client uses to ask for one revision (by number or tag) of a target that
/// allows it ([`Target::header_override`]). It is never forwarded to the backend.
pub const REVISION_HEADER: HeaderName = HeaderName::from_static("slipway-revision");

/// The backends of one revision of a service, the share of traffic the revision gets, and
/// where the proxy records the revision's requests.
#[derive(Debug, Clone)]
pub struct Pool {
    /// The revision these backends run.
    pub revision: u64,
    /// Relative weight; a pool with weight 0 gets no traffic from the weighted split but can
    /// still be asked for with the `Slipway-Revision` header.
    pub weight: u32,
    /// The instances of this revision.
    pub backends: Vec<Arc<Backend>>,
    /// The revision's request measurements and wait queue. Pass the same `Arc` for the
    /// revision in every table you publish, so the counts and the waiting requests survive
    /// route-table swaps.
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

/// A routable service: the app and service names (for error messages), its revision pools
/// and how requests may pick among them.
///
/// Build one with a struct literal ending in `..Target::default()` so that new options keep
/// their defaults (all off).
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// The app the service belongs to.
    pub app: String,
    /// The service name.
    pub service: String,
    /// Weighted revisions; usually one pool with weight 100.
    pub pools: Vec<Pool>,
    /// Named revisions (tag → revision number), for `Slipway-Revision: <tag>`.
    pub tags: BTreeMap<String, u64>,
    /// Whether `Slipway-Revision: <number or tag>` picks that revision's pool whatever its
    /// weight. A revision the target has no pool for gets a 404 naming it.
    pub header_override: bool,
    /// Whether a client stays on the revision the weighted split gave it: the response sets
    /// the cookie named by [`sticky_cookie_name`] when the target splits traffic, and a
    /// request carrying it goes back to that revision while its weight is above 0.
    pub sticky: bool,
    /// Most requests one backend serves at once (0: no limit). Requests over the limit wait
    /// in the revision's queue for a slot.
    pub max_concurrency: u32,
    /// The longest request body the service takes, in bytes (`None`: no limit). A longer one
    /// is answered 413: at once when its `Content-Length` says so, else when it grows past
    /// the limit while it streams.
    pub max_body: Option<u64>,
    /// Whether a plain-HTTP request is answered with a 308 to the same URL over HTTPS (when
    /// the router has a TLS listener, [`crate::RouterConfig::https_port`]). ACME HTTP-01
    /// challenge paths are never redirected.
    pub redirect_https: bool,
    /// The `Strict-Transport-Security` value added to the target's HTTPS responses, e.g.
    /// `max-age=31536000`.
    pub hsts: Option<HeaderValue>,
}

/// The name of the cookie that keeps a client on one revision of `service` (for a
/// [`Target::sticky`] target): `slipway-rev-<service>`, with characters not allowed in a
/// cookie name replaced by `_`. Its value is the revision number.
pub fn sticky_cookie_name(service: &str) -> String {
    let mut name = String::with_capacity(STICKY_PREFIX.len() + service.len());
    name.push_str(STICKY_PREFIX);
    name.extend(service.chars().map(|c| {
        if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
            c
        } else {
            '_'
        }
    }));
    name
}

const STICKY_PREFIX: &str = "slipway-rev-";

/// Per-target state shared by every route that points at the same `Arc<Target>`: the
/// balancing counters and what can be worked out once per table instead of per request.
struct Balancer {
    /// Smooth weighted round-robin "current weights", one per pool.
    current: Mutex<Vec<i64>>,
    /// Per-pool rotation counters used to break ties between equally loaded backends.
    rotation: Vec<AtomicUsize>,
    /// The sticky cookie, for sticky targets.
    sticky: Option<Sticky>,
}

/// The sticky cookie of a target.
struct Sticky {
    /// The cookie name.
    name: String,
    /// Pools with a positive weight.
    weighted: usize,
    /// The `Set-Cookie` value pinning each pool (`None` if it is no valid header value).
    set_cookie: Vec<Option<HeaderValue>>,
}

impl Balancer {
    fn new(target: &Target) -> Balancer {
        let pools = target.pools.len();
        let sticky = target.sticky.then(|| {
            let name = sticky_cookie_name(&target.service);
            Sticky {
                weighted: target.pools.iter().filter(|p| p.weight > 0).count(),
                set_cookie: target
                    .pools
                    .iter()
                    .map(|pool| {
                        let cookie =
                            format!("{name}={}; Path=/; HttpOnly; SameSite=Lax", pool.revision);
                        HeaderValue::from_str(&cookie).ok()
                    })
                    .collect(),
                name,
            }
        });
        Balancer {
            current: Mutex::new(vec![0; pools]),
            rotation: (0..pools).map(|_| AtomicUsize::new(0)).collect(),
            sticky,
        }
    }
}

/// The pool a request goes to, and the cookie to set on its response.
#[derive(Debug)]
pub(crate) struct Choice {
    pub(crate) pool: usize,
    pub(crate) set_cookie: Option<HeaderValue>,
}

/// A target together with its balancing state.
#[derive(Clone)]
pub(crate) struct Route {
    pub(crate) target: Arc<Target>,
    balancer: Arc<Balancer>,
}

impl Route {
    /// Chooses the pool for a request with `headers`, in this order:
    /// 1. `Slipway-Revision` (if the target allows it) names the revision, by number or tag,
    ///    whatever its weight; an unknown one is an error;
    /// 2. the sticky cookie (if the target is sticky) names a revision whose weight is above 0;
    /// 3. the weighted split. The response then pins the client with the sticky cookie when
    ///    the target is sticky and splits traffic, or when the request's cookie was stale.
    pub(crate) fn choose(&self, headers: &HeaderMap) -> Result<Choice, ProxyError> {
        let pools = &self.target.pools;
        if self.target.header_override
            && let Some(asked) = headers.get(REVISION_HEADER)
        {
            return match self.asked_pool(asked) {
                Some(pool) => Ok(Choice {
                    pool,
                    set_cookie: None,
                }),
                None => Err(ProxyError::UnknownRevision {
                    target: self.target.clone(),
                    revision: String::from_utf8_lossy(asked.as_bytes()).into_owned(),
                }),
            };
        }
        let mut stale = false;
        if let Some(sticky) = &self.balancer.sticky
            && let Some(value) = find_cookie(headers, &sticky.name)
        {
            let pinned = value.parse::<u64>().ok().and_then(|revision| {
                pools
                    .iter()
                    .position(|p| p.revision == revision && p.weight > 0)
            });
            match pinned {
                Some(pool) => {
                    return Ok(Choice {
                        pool,
                        set_cookie: None,
                    });
                }
                None => stale = true,
            }
        }
        let pool = self
            .pick_pool()
            .ok_or_else(|| ProxyError::NoReadyInstance {
                target: self.target.clone(),
            })?;
        let set_cookie = match &self.balancer.sticky {
            Some(sticky) if sticky.weighted > 1 || stale => sticky.set_cookie[pool].clone(),
            _ => None,
        };
        Ok(Choice { pool, set_cookie })
    }

    /// The pool of the revision a `Slipway-Revision` value names: a number, else a tag.
    fn asked_pool(&self, asked: &HeaderValue) -> Option<usize> {
        let asked = asked.to_str().ok()?.trim();
        let revision = match asked.parse::<u64>() {
            Ok(revision) => revision,
            Err(_) => *self.target.tags.get(asked)?,
        };
        self.target
            .pools
            .iter()
            .position(|p| p.revision == revision)
    }

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

    /// Takes a slot on a ready backend of `pool` that is below the target's concurrency
    /// limit, skipping the indices in `exclude`: the least loaded one, ties broken by
    /// rotation. Returns the backend's index and the slot, or `None` if no backend may take
    /// the request now.
    pub(crate) fn acquire(&self, pool: usize, exclude: &[usize]) -> Option<(usize, InFlight)> {
        let revision = self.target.pools.get(pool)?;
        let backends = &revision.backends;
        let queue = revision.stats.queue();
        let limit = self.target.max_concurrency as usize;
        if limit == 0 {
            let index = self.pick_backend(pool, exclude, usize::MAX)?;
            let in_flight = InFlight::new(backends[index].clone(), Some(queue.clone()));
            return Some((index, in_flight));
        }
        // Another request may take the last slot of the chosen backend between the look and
        // the take; the take fails then and the next look skips that backend. The attempts
        // are bounded so that a backend whose requests keep ending and starting cannot keep
        // this loop going.
        for _ in 0..=backends.len() {
            let index = self.pick_backend(pool, exclude, limit)?;
            if let Some(in_flight) = InFlight::try_new(&backends[index], limit, queue) {
                return Some((index, in_flight));
            }
        }
        None
    }

    /// Whether `pool` has a backend that is ready (busy or not).
    pub(crate) fn has_ready(&self, pool: usize) -> bool {
        self.target
            .pools
            .get(pool)
            .is_some_and(|p| p.backends.iter().any(|b| b.is_ready()))
    }

    /// The ready backend of `pool` with the fewest outstanding requests, if below `limit`,
    /// skipping the indices in `exclude`. Ties are broken by rotating the starting point.
    fn pick_backend(&self, pool: usize, exclude: &[usize], limit: usize) -> Option<usize> {
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
            if load >= limit {
                continue;
            }
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

/// The value of cookie `name` in the request's `Cookie` headers (the first if repeated).
fn find_cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| line.split(';'))
        .find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            (key.trim() == name).then(|| value.trim().trim_matches('"'))
        })
}

/// The hasher of the route table's host maps: rustc's FxHash, which takes 8 bytes per step
/// (add, multiply) where the standard SipHash takes several rounds, so looking up
/// `echo.bench.localhost` (20 bytes) costs 3 steps. Its keys are the hosts of the published
/// table, never a client's: a client only looks keys up, so crafted collisions cannot slow the
/// table down, and a DoS-resistant hash buys nothing here.
#[derive(Default, Clone, Copy)]
struct HostHasher(u64);

impl HostHasher {
    /// FxHash's multiplier: an odd constant with well-spread bits.
    const SEED: u64 = 0xf135_7aea_2e62_a9c5;

    fn add(&mut self, word: u64) {
        self.0 = self.0.wrapping_add(word).wrapping_mul(Self::SEED);
    }
}

impl Hasher for HostHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            // Zero padding would make `ab` and `ab\0` one word; the length in the top byte
            // (free, as at most 7 bytes are left) tells them apart.
            self.add(u64::from_le_bytes(word) | (rest.len() as u64) << 56);
        }
    }

    fn write_u8(&mut self, byte: u8) {
        self.add(u64::from(byte));
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    fn finish(&self) -> u64 {
        // The multiplication leaves the best-mixed bits at the top, while the table takes its
        // bucket from the bottom ones: rotating brings them down (as rustc-hash 2 does).
        self.0.rotate_left(26)
    }
}

/// The maps of a route table, keyed by host or by target identity.
type HostMap<V> = HashMap<String, V, BuildHasherDefault<HostHasher>>;

/// An immutable mapping from host (and path prefix) to target, built once and then published
/// to a [`crate::Router`].
#[derive(Default)]
pub struct RouteTable {
    hosts: HostMap<Route>,
    /// Prefix routes per host, longest prefix first.
    prefixes: HostMap<Vec<(String, Route)>>,
    /// Balancers by target identity, so routes sharing an `Arc<Target>` share its state.
    balancers: HashMap<usize, Arc<Balancer>>,
    /// Whether any target redirects plain HTTP to HTTPS (most tables have none, and then
    /// plain requests skip the check).
    redirects: bool,
}

impl RouteTable {
    /// An empty table: every request gets a 404.
    pub fn new() -> Self {
        Self::default()
    }

    /// Routes every path of `host` to `target`. The host is matched case-insensitively and any
    /// port is ignored. Adding the same host again replaces the earlier route.
    pub fn add_host(&mut self, host: &str, target: Arc<Target>) {
        self.redirects |= target.redirect_https;
        let route = self.route_for(target);
        self.hosts.insert(normalize_host(host).into_owned(), route);
    }

    /// Routes the paths of `host` under `prefix` to `target`; the longest matching prefix
    /// wins. `/api` matches `/api`, `/api/x` and `/api?q` but not `/apix`; `/` matches all.
    /// Adding the same host and prefix again replaces the earlier route.
    pub fn add_prefix(&mut self, host: &str, prefix: &str, target: Arc<Target>) {
        self.redirects |= target.redirect_https;
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

    /// Whether some target redirects plain HTTP to HTTPS.
    pub(crate) fn redirects(&self) -> bool {
        self.redirects
    }

    /// Every host name the table routes with the app of its (first) target, sorted by host
    /// (for certificates).
    pub fn hosts(&self) -> Vec<(String, String)> {
        let mut hosts: Vec<(String, String)> = self
            .hosts
            .iter()
            .map(|(host, route)| (host.clone(), route.target.app.clone()))
            .chain(self.prefixes.iter().filter_map(|(host, routes)| {
                let (_, route) = routes.first()?;
                Some((host.clone(), route.target.app.clone()))
            }))
            .collect();
        hosts.sort();
        hosts.dedup_by(|a, b| a.0 == b.0);
        hosts
    }

    /// Whether the table has no routes at all.
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.prefixes.is_empty()
    }

    /// Every pool of every route (a pool shared by several routes more than once).
    pub(crate) fn pools(&self) -> impl Iterator<Item = &Pool> {
        self.hosts
            .values()
            .chain(self.prefixes.values().flatten().map(|(_, route)| route))
            .flat_map(|route| &route.target.pools)
    }

    fn route_for(&mut self, target: Arc<Target>) -> Route {
        let balancer = self
            .balancers
            .entry(Arc::as_ptr(&target) as usize)
            .or_insert_with(|| {
                // First sight of this target: its backends learn which queues to wake when
                // they become ready.
                for pool in &target.pools {
                    for backend in &pool.backends {
                        backend.watch(pool.stats.queue());
                    }
                }
                Arc::new(Balancer::new(&target))
            })
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
mod tests;
