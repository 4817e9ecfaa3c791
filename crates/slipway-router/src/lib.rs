//! Slipway's data plane: an HTTP reverse proxy on hyper 1.x.
//!
//! One listener serves HTTP/1.1 (keep-alive) and cleartext HTTP/2 with prior knowledge. Each
//! request is matched against an immutable [`RouteTable`] (exact host, else longest path
//! prefix) that the control plane swaps atomically with [`Router::publish`]. The target's
//! revision pools are chosen by smooth weighted round-robin, unless the request names a
//! revision ([`REVISION_HEADER`], when [`Target::header_override`] allows it) or carries the
//! sticky cookie of a [`Target::sticky`] target. Inside a pool the ready [`Backend`] with the
//! fewest outstanding requests gets the request, if it is below [`Target::max_concurrency`];
//! when none may take it (all at the limit, or none ready and an [`Activator`] installed), the
//! request waits in the revision's bounded FIFO queue. Upstream connections are
//! HTTP/1.1, kept alive in a small idle pool per backend; bodies stream both ways, and
//! `Upgrade` requests (WebSocket) become byte tunnels. Failures the proxy answers itself carry
//! an `x-slipway-error` header naming their kind. Clients are held to limits: the size and
//! header count of a request head (431), one `Host` per HTTP/1.1 request (400), a service's
//! [`Target::max_body`] (413), and how slowly a head or body may come (408, see
//! [`RouterConfig`]). Every request routed to a revision's pool is
//! measured in that revision's [`RevisionStats`] (status class, errors, latency until the
//! response body ended), unless [`RouterConfig::metrics`] is off.

mod admit;
mod backend;
mod body;
mod conn;
mod error;
mod h1;
mod h2;
mod proxy;
mod queue;
mod stats;
mod table;
mod timer;
pub mod tls;

pub use backend::Backend;
pub use error::ERROR_HEADER;
pub use proxy::{Activator, Router, RouterConfig};
pub use stats::{LATENCY_BUCKETS, RevisionStats, SLOT_SECS, SLOTS, StatsSnapshot, Totals};
pub use table::{Pool, REVISION_HEADER, RouteTable, Target, sticky_cookie_name};
