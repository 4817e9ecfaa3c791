//! Ports for instances of `port: auto` services.
//!
//! A port is handed to the app in `PORT` and bound by the app a little later, so it must stay
//! free in between. Asking the kernel for a free port (`bind` to port 0) does not ensure that:
//! the kernel hands out the same ephemeral range for every outgoing connection (the router's
//! upstream connections, health probes, the app's own clients), and one of those can take the
//! port before the app binds it. With a thousand services starting at once this made an
//! instance fail on `address in use` now and then.
//!
//! So ports come from a range below the kernel's ephemeral range (20000–32767 by default,
//! like Nomad's dynamic ports), which the kernel never picks on its own. Each pick walks the
//! range from a random place: other Slipway servers on the machine (each with its own view)
//! then rarely meet the same port at the same moment. Ports of running instances, the last
//! ports handed out (whose instances may not be recorded yet) and any port something already
//! listens on are skipped.

use std::collections::VecDeque;
use std::ops::RangeInclusive;
use std::sync::Mutex;

/// The default range of automatic ports.
const DEFAULT: RangeInclusive<u16> = 20_000..=32_767;

/// How many of the last ports handed out are not handed out again (at most half the range).
const RECENT: usize = 1024;

pub(crate) struct Ports {
    range: RangeInclusive<u16>,
    state: Mutex<State>,
}

struct State {
    /// splitmix64 state.
    random: u64,
    recent: VecDeque<u16>,
}

impl Ports {
    /// The default range, cut to end below the kernel's ephemeral range (read from `/proc`)
    /// where they overlap.
    pub(crate) fn new() -> Ports {
        let range = match ephemeral_start() {
            Some(start) if start <= *DEFAULT.end() && start > *DEFAULT.start() + 1000 => {
                *DEFAULT.start()..=start - 1
            }
            Some(start) if start <= *DEFAULT.end() => {
                tracing::warn!(
                    "the kernel's ephemeral port range starts at {start}, inside the range of \
                     automatic ports {}-{}; an instance may now and then find its port taken",
                    DEFAULT.start(),
                    DEFAULT.end()
                );
                DEFAULT
            }
            _ => DEFAULT,
        };
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Ports::with_range(range, nanos ^ (u64::from(std::process::id()) << 32))
    }

    pub(crate) fn with_range(range: RangeInclusive<u16>, seed: u64) -> Ports {
        Ports {
            range,
            state: Mutex::new(State {
                random: seed,
                recent: VecDeque::new(),
            }),
        }
    }

    /// A port of the range that `in_use` does not claim and that nothing listens on.
    pub(crate) fn pick(&self, in_use: impl Fn(u16) -> bool) -> Result<u16, String> {
        let (first, len) = (
            *self.range.start(),
            u32::from(self.range.end() - self.range.start()) + 1,
        );
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let offset = (splitmix64(&mut state.random) % u64::from(len)) as u32;
        let walk = (0..len).map(|i| first + ((offset + i) % len) as u16);
        // Recently handed-out ports only when nothing else is left.
        let port = walk
            .clone()
            .find(|p| !state.recent.contains(p) && !in_use(*p) && is_free(*p))
            .or_else(|| walk.clone().find(|p| !in_use(*p) && is_free(*p)))
            .ok_or_else(|| {
                format!(
                    "every port from {} to {} is in use",
                    self.range.start(),
                    self.range.end()
                )
            })?;
        if state.recent.len() >= RECENT.min(len as usize / 2) {
            state.recent.pop_front();
        }
        state.recent.push_back(port);
        Ok(port)
    }
}

fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The first port of the kernel's ephemeral range (`ip_local_port_range`), if readable.
fn ephemeral_start() -> Option<u16> {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
}

/// Whether a listener could bind `port` on the loopback addresses an app may use.
fn is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
        && std::net::TcpListener::bind(("0.0.0.0", port)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_skip_taken_bound_and_recent_ones() {
        // Five ports in a row: the middle one held by a listener (found busy by the bind
        // test), the second one claimed by a running instance, the others free.
        let (start, _held) = (40_000..41_000)
            .step_by(5)
            .find_map(|start: u16| {
                let held = std::net::TcpListener::bind(("0.0.0.0", start + 2)).ok()?;
                [start, start + 3, start + 4]
                    .iter()
                    .all(|p| is_free(*p))
                    .then_some((start, held))
            })
            .expect("five ports to use");
        let busy = start + 2;
        let taken = |p: u16| p == start + 1;
        for seed in 0..20 {
            let ports = Ports::with_range(start..=start + 4, seed);
            let mut picked: Vec<u16> = (0..2).map(|_| ports.pick(taken).unwrap()).collect();
            // The two picks differ (the first is recent); once all free ports were handed
            // out recently, one of them comes again rather than an error.
            assert_ne!(picked[0], picked[1], "seed {seed}");
            picked.extend((0..3).map(|_| ports.pick(taken).unwrap()));
            assert!(
                picked
                    .iter()
                    .all(|p| [start, start + 3, start + 4].contains(p)),
                "seed {seed}: {picked:?}"
            );
        }
        let full = Ports::with_range(busy..=busy, 7);
        let err = full.pick(|_| false).unwrap_err();
        assert_eq!(err, format!("every port from {busy} to {busy} is in use"));
    }

    #[test]
    fn the_default_range_ends_below_the_kernels_ephemeral_ports() {
        let ports = Ports::new();
        if let Some(start) = ephemeral_start()
            && start > 21_000
        {
            assert!(*ports.range.end() < start, "{:?} vs {start}", ports.range);
        }
        let port = ports.pick(|_| false).expect("a free port");
        assert!(ports.range.contains(&port));
    }
}
