//! What every Slipway crate shares and none owns: the rule for names ([`names`]), the key of
//! an app in one environment ([`app_key`]), the words of a deploy ([`deploy`]), the kinds of
//! events ([`events`]), and the rule that keeps the data plane fast ([`plane`]): the router's threads serve
//! requests and nothing else. The server runs the router on a tokio runtime of its own whose
//! threads call [`plane::enter_data_plane`] when they start; the store, the process spawner
//! and log-file I/O call [`plane::assert_control_plane`] before they block, so a debug build
//! (every test) panics the moment one of them runs on a router thread.

pub mod app_key;
pub mod deploy;
pub mod events;
pub mod names;
pub mod plane;
