//! Admission: which revision pool and which backend slot a request gets.
//!
//! The common case takes a slot at once: choose the pool (see `Route::choose`), take the least
//! loaded ready backend below the concurrency limit, go. Otherwise the request waits in its
//! revision's queue (see `queue.rs`):
//!
//! - **Busy:** every ready backend is at [`crate::Target::max_concurrency`]. The request waits
//!   until a response of the revision ends and frees a slot.
//! - **Cold:** the revision has no ready backend (none at all, or all still starting). If the
//!   control plane installed an activation hook ([`Router::set_activator`]), the request waits
//!   until a backend of the revision becomes ready, and the hook is called once per wait
//!   episode so that an instance gets started. Without a hook nothing would start one, so the
//!   request gets a 503 at once, as it always did.
//!
//! A waiting request gives up with a 503 after [`crate::RouterConfig::queue_timeout`], and
//! cannot wait at all when [`crate::RouterConfig::queue_limit`] requests of the revision
//! already do. A new route table may move the request's route away from its revision while it
//! waits; it then chooses a pool again in the new table and waits there, keeping its deadline.

use std::borrow::Cow;
use std::sync::Arc;

use http::{HeaderMap, HeaderValue};
use tokio::time::Instant;

use crate::backend::InFlight;
use crate::error::ProxyError;
use crate::proxy::Router;
use crate::queue::QueueFull;
use crate::stats::Measure;
use crate::table::{Choice, Route, RouteTable};

/// What admission learns about a request that its response needs later.
#[derive(Default)]
pub(crate) struct Outcome {
    /// The request's measurement, once a pool was chosen (and metrics are on).
    pub(crate) measure: Option<Measure>,
    /// The sticky cookie to set on the response.
    pub(crate) set_cookie: Option<HeaderValue>,
}

/// A request that got a backend slot.
pub(crate) struct Admitted<'t> {
    /// The route it took: borrowed from the request's table, or owned when it waited and the
    /// route came from a newer table.
    pub(crate) route: Cow<'t, Route>,
    /// The pool it goes to.
    pub(crate) pool: usize,
    /// The backend within the pool.
    pub(crate) index: usize,
    /// Its slot on that backend.
    pub(crate) in_flight: InFlight,
}

impl Router {
    /// Routes a request for `host` and `path` whose body is said to be `body_len` bytes long
    /// (0 if it does not say) and gets it a backend slot, waiting in the revision's queue
    /// when it must.
    pub(crate) async fn admit<'t>(
        &self,
        table: &'t RouteTable,
        host: &str,
        path: &str,
        headers: &HeaderMap,
        body_len: u64,
        outcome: &mut Outcome,
    ) -> Result<Admitted<'t>, ProxyError> {
        let route = table
            .route(host, path)
            .ok_or_else(|| no_route(host, path))?;
        if let Some(limit) = route.target.max_body
            && body_len > limit
        {
            return Err(ProxyError::BodyTooLarge {
                target: route.target.clone(),
                limit,
            });
        }
        let choice = route.choose(headers)?;
        self.note(route, &choice, outcome);
        let pool = choice.pool;
        // A request may only take a slot directly if none is waiting for one in a limited
        // pool: it would overtake them. Unlimited pools queue only while cold, and then any
        // ready backend has room for everyone.
        let overtakes =
            route.target.max_concurrency > 0 && route.target.pools[pool].stats.queue().queued() > 0;
        if !overtakes && let Some((index, in_flight)) = route.acquire(pool, &[]) {
            if let Some(measure) = &mut outcome.measure {
                measure.serving();
            }
            return Ok(Admitted {
                route: Cow::Borrowed(route),
                pool,
                index,
                in_flight,
            });
        }
        // Waiting is the rare path and its future is large; boxed, it does not make every
        // request's future (which hyper moves into place per request) that much bigger.
        let (route, pool, index, in_flight) =
            Box::pin(self.wait(route.clone(), pool, host, path, headers, outcome)).await?;
        Ok(Admitted {
            route: Cow::Owned(route),
            pool,
            index,
            in_flight,
        })
    }

    /// Holds the request in its revision's queue until it gets a slot, following the route
    /// into newer tables.
    async fn wait(
        &self,
        mut route: Route,
        mut pool: usize,
        host: &str,
        path: &str,
        headers: &HeaderMap,
        outcome: &mut Outcome,
    ) -> Result<(Route, usize, usize, InFlight), ProxyError> {
        let deadline = Instant::now() + self.config.queue_timeout;
        'queue: loop {
            let stats = route.target.pools[pool].stats.clone();
            let revision = route.target.pools[pool].revision;
            if !route.has_ready(pool) && self.activator().is_none() {
                return Err(ProxyError::NoReadyInstance {
                    target: route.target.clone(),
                });
            }
            let ticket = stats
                .queue()
                .join(self.config.queue_limit)
                .map_err(|QueueFull| ProxyError::QueueFull {
                    target: route.target.clone(),
                    revision,
                    limit: self.config.queue_limit,
                })?;
            loop {
                // The newest table may have given the revision backends, or moved it away.
                let table = self.table.load_full();
                let current = table
                    .route(host, path)
                    .ok_or_else(|| no_route(host, path))?;
                match current
                    .target
                    .pools
                    .iter()
                    .position(|p| Arc::ptr_eq(&p.stats, &stats))
                {
                    Some(index) => {
                        route = current.clone();
                        pool = index;
                    }
                    None => {
                        // The route no longer has this revision: choose again in the new table
                        // and wait there (the ticket of this queue is dropped, waking the next).
                        let choice = current.choose(headers)?;
                        route = current.clone();
                        pool = choice.pool;
                        outcome.set_cookie = choice.set_cookie;
                        outcome.measure = outcome
                            .measure
                            .take()
                            .map(|measure| measure.retarget(&route.target.pools[pool].stats));
                        if let Some((index, in_flight)) = route.acquire(pool, &[]) {
                            return Ok(admitted(route, pool, index, in_flight, outcome));
                        }
                        continue 'queue;
                    }
                }
                if let Some((index, in_flight)) = route.acquire(pool, &[]) {
                    ticket.queue().end_activation();
                    // Dropping the ticket wakes the next waiter: there may be more room.
                    drop(ticket);
                    return Ok(admitted(route, pool, index, in_flight, outcome));
                }
                if !route.has_ready(pool)
                    && let Some(activate) = self.activator()
                    && ticket.queue().begin_activation()
                {
                    tracing::debug!(
                        app = %route.target.app,
                        service = %route.target.service,
                        revision,
                        "holding requests for a revision without a ready instance; activating it"
                    );
                    activate(&route.target.app, &route.target.service, revision);
                }
                if tokio::time::timeout_at(deadline, ticket.woken())
                    .await
                    .is_err()
                {
                    return Err(ProxyError::QueueTimeout {
                        target: route.target.clone(),
                        revision,
                        after: self.config.queue_timeout,
                        cold: !route.has_ready(pool),
                    });
                }
            }
        }
    }

    /// Records the chosen pool in the request's outcome: its measurement and sticky cookie.
    fn note(&self, route: &Route, choice: &Choice, outcome: &mut Outcome) {
        if self.config.metrics {
            outcome.measure = Some(Measure::start(&route.target.pools[choice.pool].stats));
        }
        outcome.set_cookie.clone_from(&choice.set_cookie);
    }
}

/// The result of a wait that got a slot; the request now counts as in flight.
fn admitted(
    route: Route,
    pool: usize,
    index: usize,
    in_flight: InFlight,
    outcome: &mut Outcome,
) -> (Route, usize, usize, InFlight) {
    if let Some(measure) = &mut outcome.measure {
        measure.serving();
    }
    (route, pool, index, in_flight)
}

fn no_route(host: &str, path: &str) -> ProxyError {
    ProxyError::NoRoute {
        host: host.to_owned(),
        path: path.to_owned(),
    }
}
