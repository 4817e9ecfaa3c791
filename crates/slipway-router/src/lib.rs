//! Slipway's data plane: an HTTP reverse proxy on hyper 1.x.
//!
//! One listener serves HTTP/1.1 (keep-alive) and cleartext HTTP/2 with prior knowledge. Each
//! request is matched against an immutable [`RouteTable`] (exact host, else longest path
//! prefix) that the control plane swaps atomically with [`Router::publish`]. The target's
//! revision pools are chosen by smooth weighted round-robin, and inside a pool the ready
//! [`Backend`] with the fewest outstanding requests gets the request. Upstream connections are
//! HTTP/1.1, kept alive in a small idle pool per backend; bodies stream both ways, and
//! `Upgrade` requests (WebSocket) become byte tunnels. Failures the proxy answers itself carry
//! an `x-slipway-error` header naming their kind. Every request routed to a revision's pool is
//! measured in that revision's [`RevisionStats`] (status class, errors, latency until the
//! response body ended), unless [`RouterConfig::metrics`] is off.

mod backend;
mod body;
mod error;
mod proxy;
mod stats;
mod table;

pub use backend::Backend;
pub use error::ERROR_HEADER;
pub use proxy::{Router, RouterConfig};
pub use stats::{LATENCY_BUCKETS, RevisionStats, SLOT_SECS, SLOTS, StatsSnapshot, Totals};
pub use table::{Pool, RouteTable, Target};
