//! Slipway's data plane: an HTTP reverse proxy on hyper 1.x.
//!
//! One listener serves HTTP/1.1 (keep-alive) and cleartext HTTP/2 with prior knowledge. Each
//! request is matched against an immutable [`RouteTable`] (exact host, else longest path
//! prefix) that the control plane swaps atomically with [`Router::publish`]. The target's
//! revision pools are chosen by smooth weighted round-robin, and inside a pool the ready
//! [`Backend`] with the fewest outstanding requests gets the request. Upstream connections are
//! HTTP/1.1, kept alive in a small idle pool per backend; bodies stream both ways, and
//! `Upgrade` requests (WebSocket) become byte tunnels. Failures the proxy answers itself carry
//! an `x-slipway-error` header naming their kind.

mod backend;
mod body;
mod error;
mod proxy;
mod table;

pub use backend::Backend;
pub use error::ERROR_HEADER;
pub use proxy::{Router, RouterConfig};
pub use table::{Pool, RouteTable, Target};
