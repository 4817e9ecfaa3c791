//! Slows down token guessing on the admin listener: after `max_failures` failed attempts
//! from one IP address within `window`, that address gets 429 until the window has passed.
//! Memory is bounded: at most `capacity` addresses are remembered; when full, expired
//! entries go first, then the oldest one. Time is an argument.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed attempts per address.
#[derive(Debug)]
pub struct Limiter {
    max_failures: u32,
    window: Duration,
    capacity: usize,
    entries: Mutex<HashMap<IpAddr, Entry>>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The first failure of the current window.
    since: Instant,
    failures: u32,
}

impl Limiter {
    pub fn new(max_failures: u32, window: Duration, capacity: usize) -> Limiter {
        Limiter {
            max_failures,
            window,
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// How long `ip` must wait before it may try again, if it is blocked now.
    pub fn blocked(&self, ip: IpAddr, now: Instant) -> Option<Duration> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let entry = entries.get(&ip)?;
        let ends = entry.since + self.window;
        (entry.failures >= self.max_failures && now < ends).then(|| ends - now)
    }

    /// Counts a failed attempt of `ip`.
    pub fn fail(&self, ip: IpAddr, now: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if !entries.contains_key(&ip) && entries.len() >= self.capacity {
            let window = self.window;
            entries.retain(|_, e| now.saturating_duration_since(e.since) < window);
            if entries.len() >= self.capacity
                && let Some(oldest) = entries
                    .iter()
                    .min_by_key(|(_, e)| e.since)
                    .map(|(ip, _)| *ip)
            {
                entries.remove(&oldest);
            }
        }
        let entry = entries.entry(ip).or_insert(Entry {
            since: now,
            failures: 0,
        });
        if now.saturating_duration_since(entry.since) >= self.window {
            *entry = Entry {
                since: now,
                failures: 0,
            };
        }
        entry.failures += 1;
    }

    /// How many addresses are remembered.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn an_address_is_blocked_after_its_failures_until_the_window_passes() {
        let l = Limiter::new(3, Duration::from_secs(60), 100);
        let t0 = Instant::now();
        l.fail(ip(1), t0);
        l.fail(ip(1), t0 + Duration::from_secs(1));
        assert_eq!(l.blocked(ip(1), t0 + Duration::from_secs(2)), None);
        l.fail(ip(1), t0 + Duration::from_secs(2));
        assert_eq!(
            l.blocked(ip(1), t0 + Duration::from_secs(10)),
            Some(Duration::from_secs(50))
        );
        assert_eq!(
            l.blocked(ip(2), t0 + Duration::from_secs(10)),
            None,
            "others are not"
        );
        assert_eq!(l.blocked(ip(1), t0 + Duration::from_secs(60)), None);
        // A failure after the window starts a new count.
        l.fail(ip(1), t0 + Duration::from_secs(61));
        assert_eq!(l.blocked(ip(1), t0 + Duration::from_secs(62)), None);
    }

    #[test]
    fn memory_stays_bounded_and_the_oldest_address_goes_first() {
        let l = Limiter::new(1, Duration::from_secs(60), 3);
        let t0 = Instant::now();
        for n in 1..=10u8 {
            l.fail(ip(n), t0 + Duration::from_secs(u64::from(n)));
            assert!(l.len() <= 3);
        }
        assert!(l.blocked(ip(10), t0 + Duration::from_secs(11)).is_some());
        assert!(l.blocked(ip(8), t0 + Duration::from_secs(11)).is_some());
        assert_eq!(l.blocked(ip(1), t0 + Duration::from_secs(11)), None);
    }
}
