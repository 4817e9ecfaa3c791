//! The two bounded-memory time windows the decider keeps: the concurrency samples
//! ([`SampleWindow`], averaged over the stable and panic windows) and the recent decisions
//! ([`DelayWindow`], whose maximum delays scale-downs).
//!
//! Neither reads a clock: every method takes the caller's time, a [`Duration`] since an
//! arbitrary epoch.

use std::collections::VecDeque;
use std::time::Duration;

#[cfg(test)]
mod tests;

/// The most buckets one stable window is split into. With the usual 1 s buckets this
/// allows windows up to 68 minutes; longer windows get coarser buckets instead of more
/// memory (a 2 h window gets 7200 s / 4096 = 1.76 s buckets).
const MAX_BUCKETS: u32 = 4096;

/// The finest bucket, so that a zero-length window cannot divide by zero.
const MIN_GRANULARITY: Duration = Duration::from_millis(1);

/// Concurrency samples grouped into fixed time buckets, holding only the buckets the stable
/// window can still see.
///
/// A bucket keeps the sum and the count of its samples, and a window average is the sum
/// of the samples over their count. Samples are expected about once per bucket (the
/// control plane samples every second), so this is the plain mean of the samples in the
/// window: with 1 s buckets and a 6 s window, samples 10, 10, 10, 100, 100, 100 average
/// 330 / 6 = 55. A gap in the samples is not counted as zero; a window without any sample
/// has no average.
#[derive(Debug, Clone)]
pub(crate) struct SampleWindow {
    /// The bucket width in nanoseconds: 1 s, finer if the panic window is shorter than 1 s,
    /// coarser if the stable window needs more than [`MAX_BUCKETS`] buckets.
    granularity: u128,
    /// How many buckets the stable window spans; older buckets are dropped.
    stable_buckets: u128,
    /// Non-empty buckets in increasing index order.
    buckets: VecDeque<Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// The sample time divided by the granularity.
    index: u128,
    /// The sum of the samples' concurrency.
    sum: f64,
    /// How many samples fell into this bucket.
    count: u64,
}

// === impl SampleWindow ===

impl SampleWindow {
    /// An empty window sized for `stable_window`, with buckets fine enough for
    /// `panic_window`.
    pub(crate) fn new(stable_window: Duration, panic_window: Duration) -> SampleWindow {
        let granularity = Duration::from_secs(1)
            .min(panic_window)
            .max(stable_window / MAX_BUCKETS)
            .max(MIN_GRANULARITY)
            .as_nanos();
        let mut window = SampleWindow {
            granularity,
            stable_buckets: 1,
            buckets: VecDeque::new(),
        };
        window.stable_buckets = window.buckets_in(stable_window);
        window
    }

    /// Adds one sample. Negative or non-finite concurrency counts as 0. A sample older than
    /// the stable window (relative to the newest sample) is dropped.
    pub(crate) fn record(&mut self, at: Duration, concurrency: f64) {
        let concurrency = if concurrency.is_finite() && concurrency > 0.0 {
            concurrency
        } else {
            0.0
        };
        let index = self.index(at);
        let newest = self.buckets.back().map_or(index, |bucket| bucket.index);
        if newest.saturating_sub(index) >= self.stable_buckets {
            return;
        }
        match self
            .buckets
            .binary_search_by_key(&index, |bucket| bucket.index)
        {
            Ok(position) => {
                let bucket = &mut self.buckets[position];
                bucket.sum += concurrency;
                bucket.count += 1;
            }
            Err(position) => self.buckets.insert(
                position,
                Bucket {
                    index,
                    sum: concurrency,
                    count: 1,
                },
            ),
        }
        self.prune_before(newest.max(index));
    }

    /// Drops the buckets the stable window ending at `now` no longer covers.
    pub(crate) fn prune(&mut self, now: Duration) {
        self.prune_before(self.index(now));
    }

    /// The mean of the samples in the `window` ending at `now`, or `None` without samples.
    /// Samples stamped after `now` count as current.
    pub(crate) fn average(&self, now: Duration, window: Duration) -> Option<f64> {
        let now = self.index(now);
        let span = self.buckets_in(window);
        let (sum, count) = self
            .buckets
            .iter()
            .rev()
            .take_while(|bucket| now.saturating_sub(bucket.index) < span)
            .fold((0.0, 0u64), |(sum, count), bucket| {
                (sum + bucket.sum, count + bucket.count)
            });
        (count > 0).then(|| sum / count as f64)
    }

    /// The mean of the newest bucket's samples if that bucket lies within the `window`
    /// ending at `now`: the newest evidence of the load.
    pub(crate) fn newest(&self, now: Duration, window: Duration) -> Option<f64> {
        let now = self.index(now);
        let bucket = self.buckets.back()?;
        (now.saturating_sub(bucket.index) < self.buckets_in(window))
            .then(|| bucket.sum / bucket.count as f64)
    }

    /// How many buckets are held now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.buckets.len()
    }

    /// The most buckets this window can ever hold.
    #[cfg(test)]
    pub(crate) fn bound(&self) -> usize {
        usize::try_from(self.stable_buckets).unwrap_or(usize::MAX)
    }

    fn prune_before(&mut self, newest: u128) {
        while let Some(front) = self.buckets.front() {
            if newest.saturating_sub(front.index) < self.stable_buckets {
                break;
            }
            self.buckets.pop_front();
        }
    }

    fn index(&self, at: Duration) -> u128 {
        at.as_nanos() / self.granularity
    }

    /// How many buckets a window spans, at least one: a 6 s window over 1 s buckets spans
    /// 6, a 2.5 s window spans ceil(2.5) = 3.
    fn buckets_in(&self, window: Duration) -> u128 {
        window.as_nanos().div_ceil(self.granularity).max(1)
    }
}

/// The decisions of the last `delay`, kept as a monotonic queue so that their maximum is
/// at the front.
///
/// Each new value removes the older values it is at least as large as, because those can
/// never be the maximum again; what remains strictly decreases from front to back. So
/// after decisions 10, 8, 9 the queue holds 10 and 9, and once the 10 is older than the
/// delay, 9 is the answer. Its length is bounded by the number of distinct values (at most
/// `max + 1`, as decisions are capped before they get here) and by the decisions made
/// within one delay.
#[derive(Debug, Clone)]
pub(crate) struct DelayWindow {
    delay: Duration,
    entries: VecDeque<(Duration, u32)>,
}

// === impl DelayWindow ===

impl DelayWindow {
    pub(crate) fn new(delay: Duration) -> DelayWindow {
        DelayWindow {
            delay,
            entries: VecDeque::new(),
        }
    }

    /// Records the decision wanted at `now` and returns the largest one wanted during the
    /// last `delay` (decisions exactly `delay` old no longer count). With no delay, the
    /// value itself.
    pub(crate) fn record(&mut self, now: Duration, value: u32) -> u32 {
        if self.delay.is_zero() {
            return value;
        }
        while let Some(&(at, _)) = self.entries.front() {
            if now.saturating_sub(at) < self.delay {
                break;
            }
            self.entries.pop_front();
        }
        while let Some(&(_, last)) = self.entries.back() {
            if last > value {
                break;
            }
            self.entries.pop_back();
        }
        self.entries.push_back((now, value));
        self.entries.front().map_or(value, |&(_, max)| max)
    }

    /// Forgets every recorded decision (after scaling to zero).
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }

    /// How many decisions are held now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}
