//! Serde helpers that store a `Duration` as whole milliseconds, the unit of persisted rollouts.
//!
//! Milliseconds keep the stored JSON readable (`"interval_ms": 30000`) and match the other
//! Slipway crates. Sub-millisecond parts are dropped when writing, and a duration too large
//! for a `u64` of milliseconds (over 584 million years) is written as `u64::MAX`.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Writes a duration as whole milliseconds.
pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(to_millis(*d))
}

/// Reads a duration from whole milliseconds.
pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_millis)
}

fn to_millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The same for an optional duration, `null` when absent.
pub(crate) mod option {
    use super::*;

    /// Writes an optional duration as whole milliseconds or `null`.
    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&to_millis(*d)),
            None => s.serialize_none(),
        }
    }

    /// Reads an optional duration from whole milliseconds or `null`.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<u64>::deserialize(d).map(|ms| ms.map(Duration::from_millis))
    }
}
