//! Per-revision request measurements for canary analysis, status and Prometheus export.
//!
//! A [`RevisionStats`] is created by the control plane once per revision and handed to the
//! router inside every [`crate::Pool`] of that revision, so it outlives route-table swaps. The
//! proxy records each request routed to the pool: its status class, whether it failed, and how
//! long it took until the response body ended. Recording is a handful of relaxed atomic
//! additions: no lock, no allocation.
//!
//! Three views are kept:
//! - exact totals since the stats were created ([`RevisionStats::totals`]), for Prometheus
//!   counters and histograms;
//! - a rolling window of the last 15 minutes in 90 slots of 10 seconds
//!   ([`RevisionStats::snapshot`]), for request rates, error rates and latency quantiles over
//!   windows from 10 seconds to 15 minutes;
//! - request counts of the last few seconds, one per second ([`RevisionStats::recent_rps`]),
//!   for a rate that shows what happens now: a 10-second slot is too coarse for that, as the
//!   current one may have just begun.
//!
//! The stats also carry the revision's wait queue (see `queue.rs`): requests held because every
//! ready backend is at its concurrency limit, or because the revision has no ready backend yet.
//! It lives here because `RevisionStats` is the one per-revision object the control plane keeps
//! across route-table swaps; [`RevisionStats::queued`] counts those requests, while
//! [`RevisionStats::in_flight`] counts only the ones a backend is serving.
//!
//! Latencies go into a log-linear histogram (HDR-like): 16 equal sub-buckets per power of two
//! of microseconds, so every bucket is at most 1/16 (6.25 %) as wide as its lower bound, and a
//! quantile reported at its bucket's midpoint is within about 3.1 % of the true value.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering, fence};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use http::StatusCode;

use crate::queue::RevisionQueue;

/// Seconds covered by one slot of the rolling window.
pub const SLOT_SECS: u64 = 10;

/// Slots in the rolling window: 90 slots of 10 seconds are 15 minutes.
pub const SLOTS: usize = 90;

/// The seconds [`RevisionStats::recent_rps`] covers: the current, partly elapsed second and
/// the 4 before it, so between 4 and 5 seconds of the most recent time.
pub const RECENT_SECS: u64 = 5;

/// One-second counters kept: more than [`RECENT_SECS`], so that the seconds of the window
/// never share a counter.
const SECONDS: usize = 8;

/// A one-second counter holds the second plus one in its high 32 bits (0: never used) and
/// the requests counted in it in the low 32 bits.
const COUNT_MASK: u64 = u32::MAX as u64;

/// log2 of the number of sub-buckets per power of two.
const SUB_BITS: u32 = 4;

/// Sub-buckets per power of two (16).
const SUB: usize = 1 << SUB_BITS;

/// Latencies from 2^26 µs (67.1 s) up share the overflow bucket.
const TOP_BITS: u32 = 26;

/// Buckets with a finite upper bound: 16 one-microsecond buckets for 0..16 µs, then 16 per
/// power of two from 2^4 to 2^26 µs, i.e. 16 + 22 × 16 = 368.
const FINITE_BUCKETS: usize = SUB + (TOP_BITS - SUB_BITS) as usize * SUB;

/// Number of latency buckets: the finite ones and one overflow bucket (369).
pub const LATENCY_BUCKETS: usize = FINITE_BUCKETS + 1;

/// Status classes counted: 1xx, 2xx, 3xx, 4xx and 5xx.
const CLASSES: usize = 5;

// === RevisionStats ===

/// Request measurements of one revision: exact totals since creation, a 15-minute rolling
/// window at 10-second resolution, and request counts of the last few seconds.
///
/// Create one per revision with [`RevisionStats::new`], keep the `Arc`, and put the same one
/// into the revision's [`crate::Pool`] in every route table you publish.
///
/// # Guarantees
///
/// - Recording never locks per request: counters are relaxed atomic additions, and one
///   compare-and-swap for the current second's request count. A mutex is taken only when a
///   slot of the ring starts a new 10-second period (at most once per slot per 10 seconds,
///   not per request).
/// - Totals are exact: every recorded request is counted once in its class and once in the
///   latency histogram, so `totals().requests() == totals().latency_count()` when no request is
///   being recorded at the same moment.
///
/// # Caveats
///
/// - Reads (`totals`, `snapshot`) are not one atomic picture: a request recorded while they run
///   may show up in one counter and not yet in another.
/// - Memory: each of the 91 histograms (90 slots and the totals) holds 369 counters, about
///   270 KB per revision.
pub struct RevisionStats {
    /// The moment the stats were created; time in the window is measured from here.
    created: Instant,
    /// Everything recorded since creation.
    totals: Counts,
    /// Sum of all recorded latencies in microseconds (for Prometheus `_sum`).
    latency_sum_micros: AtomicU64,
    /// Requests of this revision being served by a backend whose response has not ended yet.
    in_flight: AtomicU64,
    /// Requests of this revision waiting for a backend to take them.
    queue: Arc<RevisionQueue>,
    /// The rolling window: slot `p % 90` holds the counts of 10-second period `p`. Allocated
    /// by the first recording (about 270 KB): most revisions in a long history never serve a
    /// request, and once the allocator hands out reused memory for it, it costs that much
    /// resident memory, not just address space.
    ring: OnceLock<Box<[Slot]>>,
    /// Serialises resetting a slot for a new period; never taken to count a request.
    rotation: Mutex<()>,
    /// Requests per second of the last [`SECONDS`] seconds: counter `s % 8` counts second `s`
    /// (see [`COUNT_MASK`]). Second and count share one atomic, so a counter moves to a new
    /// second and counts its first request in one compare-and-swap, without a lock, and a
    /// reader never sees the count of one second under the tag of another.
    seconds: [AtomicU64; SECONDS],
}

impl RevisionStats {
    /// Empty stats; the rolling window's clock starts now.
    pub fn new() -> Arc<RevisionStats> {
        Arc::new(RevisionStats {
            created: Instant::now(),
            totals: Counts::new(),
            latency_sum_micros: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            queue: Arc::new(RevisionQueue::new()),
            ring: OnceLock::new(),
            rotation: Mutex::new(()),
            seconds: std::array::from_fn(|_| AtomicU64::new(0)),
        })
    }

    /// Records one finished request now. `status` is the HTTP status sent to the client;
    /// `failed` marks a response that broke off after its head (it counts as an error whatever
    /// its status). Any status of 500 and above, or outside 100..=599, counts as a 5xx error.
    pub fn record(&self, status: u16, failed: bool, latency: Duration) {
        self.record_at(self.created.elapsed().as_secs(), status, failed, latency);
    }

    /// Like [`RevisionStats::record`], at `now_secs` seconds after the stats were created
    /// (an injected clock, for tests and replays).
    ///
    /// A request older than what its ring slot already holds (more than 15 minutes behind the
    /// newest recording) still counts in the totals but no longer in the window.
    pub fn record_at(&self, now_secs: u64, status: u16, failed: bool, latency: Duration) {
        let class = status_class(status);
        let error = failed || class == CLASSES - 1;
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let bucket = bucket_index(micros);
        self.totals.add(class, error, bucket);
        self.latency_sum_micros.fetch_add(micros, Ordering::Relaxed);
        if let Some(slot) = self.slot_for(now_secs / SLOT_SECS) {
            slot.counts.add(class, error, bucket);
        }
        self.count_second(now_secs);
    }

    /// Counts one request in the one-second counter of `second`, unless the counter already
    /// holds a later second (the request is older than the recent window).
    fn count_second(&self, second: u64) {
        let Some(tag) = second.checked_add(1).filter(|tag| *tag <= COUNT_MASK) else {
            // More than 136 years after the stats were created.
            return;
        };
        let counter = &self.seconds[(second % SECONDS as u64) as usize];
        let mut held = counter.load(Ordering::Relaxed);
        loop {
            let next = match (held >> 32).cmp(&tag) {
                std::cmp::Ordering::Equal if held & COUNT_MASK == COUNT_MASK => return,
                std::cmp::Ordering::Equal => held + 1,
                std::cmp::Ordering::Less => (tag << 32) | 1,
                std::cmp::Ordering::Greater => return,
            };
            match counter.compare_exchange_weak(held, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return,
                Err(current) => held = current,
            }
        }
    }

    /// Requests per second over the last few seconds, now; see
    /// [`RevisionStats::recent_rps_at`].
    pub fn recent_rps(&self) -> f64 {
        self.recent_rps_at(self.created.elapsed())
    }

    /// Requests per second over the last [`RECENT_SECS`] whole seconds, the current, partly
    /// elapsed one included, seen at `now` after the stats were created (an injected clock,
    /// for tests). The requests are divided by the time those seconds cover up to `now` (and
    /// by at least one second): at `now` = 12.5 s, the requests recorded from 8 s on, over
    /// 4.5 s. A revision that stopped getting requests shows 0 five seconds later.
    pub fn recent_rps_at(&self, now: Duration) -> f64 {
        let now_second = now.as_secs();
        let first = (now_second + 1).saturating_sub(RECENT_SECS);
        let requests: u64 = (first..=now_second)
            .map(|second| {
                let held = self.seconds[(second % SECONDS as u64) as usize].load(Ordering::Relaxed);
                if held >> 32 == second + 1 {
                    held & COUNT_MASK
                } else {
                    0
                }
            })
            .sum();
        let span = now.saturating_sub(Duration::from_secs(first));
        requests as f64 / span.max(Duration::from_secs(1)).as_secs_f64()
    }

    /// Requests of this revision that a backend is serving and whose response has not ended
    /// yet. Requests still waiting for a backend are not included; see
    /// [`RevisionStats::queued`].
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Requests of this revision waiting in its queue for a backend: every ready backend is
    /// at the target's concurrency limit, or the revision has no ready backend yet.
    pub fn queued(&self) -> u64 {
        self.queue.queued() as u64
    }

    /// The revision's wait queue.
    pub(crate) fn queue(&self) -> &Arc<RevisionQueue> {
        &self.queue
    }

    /// Exact counts since the stats were created.
    pub fn totals(&self) -> Totals {
        let mut requests_by_class = [0; CLASSES];
        let mut latency_buckets = vec![0; LATENCY_BUCKETS];
        let errors = self
            .totals
            .read_into(&mut requests_by_class, &mut latency_buckets);
        Totals {
            requests_by_class,
            errors,
            latency_buckets,
            latency_sum: Duration::from_micros(self.latency_sum_micros.load(Ordering::Relaxed)),
        }
    }

    /// Rates and quantiles over the last `window` (10 seconds to 15 minutes), now.
    pub fn snapshot(&self, window: Duration) -> StatsSnapshot {
        self.snapshot_at(self.created.elapsed(), window)
    }

    /// Rates and quantiles over `window`, seen at `now` after the stats were created (an
    /// injected clock, for tests).
    ///
    /// The window is made of whole 10-second slots: the current, partly elapsed one and the
    /// ones before it, `ceil(window / 10 s)` in all (at least 1, at most 90). So it covers
    /// between `window - 10 s` and `window` of the most recent time, never more. For example,
    /// at `now` = 125 s a 60 s window takes the 6 slots of periods 7..=12, i.e. the requests
    /// recorded from 70 s to 125 s: 55 seconds.
    ///
    /// `rps` divides the requests by that covered span (and by at least one second): 110
    /// requests over the 55 s above give 2.0 requests per second.
    pub fn snapshot_at(&self, now: Duration, window: Duration) -> StatsSnapshot {
        let now_period = now.as_secs() / SLOT_SECS;
        let slot_nanos = u128::from(SLOT_SECS) * 1_000_000_000;
        let slots = u64::try_from(window.as_nanos().div_ceil(slot_nanos))
            .unwrap_or(u64::MAX)
            .clamp(1, SLOTS as u64);
        let first = (now_period + 1).saturating_sub(slots);

        let mut by_class = [0; CLASSES];
        let mut errors = 0;
        let mut latency = vec![0; LATENCY_BUCKETS];
        let mut slot_classes = [0; CLASSES];
        let mut slot_latency = vec![0; LATENCY_BUCKETS];
        let ring = self.ring.get();
        for period in first..=now_period {
            let Some(ring) = ring else {
                // Nothing was ever recorded.
                break;
            };
            let slot = &ring[ring_index(period)];
            if slot.period.load(Ordering::Acquire) != period + 1 {
                // Nothing was recorded in this period (the slot is empty or holds another one).
                continue;
            }
            let slot_errors = slot.counts.read_into(&mut slot_classes, &mut slot_latency);
            fence(Ordering::Acquire);
            if slot.period.load(Ordering::Relaxed) != period + 1 {
                // The slot was reset for a newer period while we read it; what we read is torn.
                continue;
            }
            for (sum, n) in by_class.iter_mut().zip(slot_classes) {
                *sum += n;
            }
            for (sum, n) in latency.iter_mut().zip(&slot_latency) {
                *sum += n;
            }
            errors += slot_errors;
        }

        let span = now.saturating_sub(Duration::from_secs(first * SLOT_SECS));
        let requests = by_class.iter().sum();
        let measured: u64 = latency.iter().sum();
        StatsSnapshot {
            requests,
            by_class,
            errors,
            rps: requests as f64 / span.max(Duration::from_secs(1)).as_secs_f64(),
            p50: quantile(&latency, measured, 0.50),
            p95: quantile(&latency, measured, 0.95),
            p99: quantile(&latency, measured, 0.99),
            in_flight: self.in_flight(),
            queued: self.queued(),
            span,
        }
    }

    /// The slot of the ring for `period`, reset first if it still holds an older period, or
    /// `None` if it already holds a newer one.
    fn slot_for(&self, period: u64) -> Option<&Slot> {
        // Tags are period + 1 so that 0 can mean "never used".
        let tag = period + 1;
        let ring = self
            .ring
            .get_or_init(|| (0..SLOTS).map(|_| Slot::new()).collect());
        let slot = &ring[ring_index(period)];
        let held = slot.period.load(Ordering::Acquire);
        if held == tag {
            return Some(slot);
        }
        if held > tag {
            // A request from more than 15 minutes before the newest one: too old for the window.
            return None;
        }
        // A new period starts in this slot: clear it under the lock (once per slot and period),
        // and publish the new tag only afterwards so no addition lands before the reset.
        let _rotating = self.rotation.lock().unwrap_or_else(PoisonError::into_inner);
        let held = slot.period.load(Ordering::Acquire);
        if held < tag {
            slot.counts.reset();
            slot.period.store(tag, Ordering::Release);
        } else if held > tag {
            return None;
        }
        Some(slot)
    }
}

impl fmt::Debug for RevisionStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let totals = self.totals();
        f.debug_struct("RevisionStats")
            .field("requests", &totals.requests())
            .field("errors", &totals.errors)
            .field("in_flight", &self.in_flight())
            .field("queued", &self.queued())
            .finish_non_exhaustive()
    }
}

// === StatsSnapshot ===

/// Requests, errors, rate and latency quantiles of one revision over a recent window.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsSnapshot {
    /// Requests that ended in the window.
    pub requests: u64,
    /// Those requests by status class: `[1xx, 2xx, 3xx, 4xx, 5xx]`.
    pub by_class: [u64; 5],
    /// Requests answered with a 5xx status (by the backend, or by the router for unreachable,
    /// timed-out or unavailable backends), plus responses that broke off mid-body.
    pub errors: u64,
    /// Requests per second over `span`.
    pub rps: f64,
    /// Median latency (time until the response body ended), within about 3 %; `None` without
    /// requests.
    pub p50: Option<Duration>,
    /// 95th percentile latency, within about 3 %.
    pub p95: Option<Duration>,
    /// 99th percentile latency, within about 3 %.
    pub p99: Option<Duration>,
    /// Requests of this revision being served by a backend at the moment of the snapshot.
    pub in_flight: u64,
    /// Requests of this revision waiting for a backend at the moment of the snapshot.
    pub queued: u64,
    /// The time the counts cover: from the start of the oldest slot in the window (or the
    /// creation of the stats) to now.
    pub span: Duration,
}

impl StatsSnapshot {
    /// The share of requests that were errors (0.0 to 1.0), or `None` without requests.
    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors as f64 / self.requests as f64)
    }
}

// === Totals ===

/// Exact counts of one revision since its stats were created, shaped for a Prometheus
/// counter per status class, an error counter and a latency histogram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Totals {
    /// Requests by status class: `[1xx, 2xx, 3xx, 4xx, 5xx]`.
    pub requests_by_class: [u64; 5],
    /// Requests answered with a 5xx status, plus responses that broke off mid-body.
    pub errors: u64,
    /// Requests per latency bucket (not cumulative); bucket `i` ends at
    /// [`Totals::bucket_upper_bound`]`(i)`. There are [`LATENCY_BUCKETS`] of them.
    pub latency_buckets: Vec<u64>,
    /// The sum of all recorded latencies (microsecond resolution).
    pub latency_sum: Duration,
}

impl Totals {
    /// All requests counted.
    pub fn requests(&self) -> u64 {
        self.requests_by_class.iter().sum()
    }

    /// Requests in the latency histogram (equal to [`Totals::requests`] when read at rest).
    pub fn latency_count(&self) -> u64 {
        self.latency_buckets.iter().sum()
    }

    /// The exclusive upper bound of latency bucket `index`; `None` for the last (overflow)
    /// bucket, which holds everything from 67.1 s up, and for indices past the end.
    ///
    /// Bucket 163, for example, holds latencies from 9 728 µs up to (not including) 10 240 µs.
    pub fn bucket_upper_bound(index: usize) -> Option<Duration> {
        (index < FINITE_BUCKETS).then(|| Duration::from_micros(bucket_lower_micros(index + 1)))
    }

    /// Cumulative counts for Prometheus `le` bounds (given in ascending order): for each bound,
    /// the requests whose latency is at most that bound. A bucket counts towards a bound only
    /// if all of it lies at or below the bound, so the count is exact when the bound is one of
    /// the histogram's bucket limits and otherwise low by at most the one bucket straddling it
    /// (at most 6.25 % of the bound wide). The `+Inf` bucket is [`Totals::latency_count`].
    pub fn cumulative_le(&self, bounds: &[Duration]) -> Vec<u64> {
        // One pass over the buckets for all bounds: a scrape of 10,000 revisions asks this
        // for every one of them.
        let mut out = Vec::with_capacity(bounds.len());
        let (mut next, mut sum) = (0, 0);
        for bound in bounds {
            let le = u64::try_from(bound.as_micros()).unwrap_or(u64::MAX);
            // Bucket i holds whole microseconds lower..upper, so its largest value is
            // upper - 1; it lies at or below `le` when upper <= le + 1.
            while next < FINITE_BUCKETS && bucket_lower_micros(next + 1) <= le.saturating_add(1) {
                sum += self.latency_buckets[next];
                next += 1;
            }
            out.push(sum);
        }
        out
    }
}

// === Measure ===

/// One request being measured against its revision, from the moment it was routed to a pool
/// (so its latency includes any time spent waiting in the revision's queue). Once a backend
/// takes it ([`Measure::serving`]) it counts as in flight until dropped; [`Measure::finish`]
/// records it.
///
/// This and [`RevisionStats::record`] are the only places the recording path reads the clock:
/// once when the request starts and once when it ends (`Instant::now`, a vDSO call of a few
/// tens of nanoseconds on Linux). The 10-second slot is derived from the second reading.
pub(crate) struct Measure {
    stats: Arc<RevisionStats>,
    started: Instant,
    /// Whether the request is counted in the revision's `in_flight`.
    serving: bool,
}

impl Measure {
    /// Starts measuring a request routed to the revision of `stats`.
    pub(crate) fn start(stats: &Arc<RevisionStats>) -> Measure {
        Measure {
            stats: stats.clone(),
            started: Instant::now(),
            serving: false,
        }
    }

    /// Counts the request as in flight: a backend took it.
    pub(crate) fn serving(&mut self) {
        if !self.serving {
            self.serving = true;
            self.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Moves a request that no backend took yet to another revision (its route changed while
    /// it waited), keeping its start time.
    pub(crate) fn retarget(mut self, stats: &Arc<RevisionStats>) -> Measure {
        self.leave_flight();
        Measure {
            stats: stats.clone(),
            started: self.started,
            serving: false,
        }
    }

    /// Stops counting the request as in flight (once).
    fn leave_flight(&mut self) {
        if self.serving {
            self.serving = false;
            self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Records the request as ended now with `status`; `failed` if its body broke off. It
    /// leaves `in_flight` before it is counted, so a reader that sees it counted does not
    /// also see it in flight.
    pub(crate) fn finish(mut self, status: StatusCode, failed: bool) {
        self.leave_flight();
        let ended = Instant::now();
        let now_secs = ended
            .saturating_duration_since(self.stats.created)
            .as_secs();
        let latency = ended.saturating_duration_since(self.started);
        self.stats
            .record_at(now_secs, status.as_u16(), failed, latency);
    }
}

impl Drop for Measure {
    fn drop(&mut self) {
        self.leave_flight();
    }
}

// === Counts and slots ===

/// Request counters: by status class, errors, and the latency histogram.
struct Counts {
    by_class: [AtomicU64; CLASSES],
    errors: AtomicU64,
    latency: [AtomicU64; LATENCY_BUCKETS],
}

impl Counts {
    fn new() -> Counts {
        Counts {
            by_class: std::array::from_fn(|_| AtomicU64::new(0)),
            errors: AtomicU64::new(0),
            latency: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    fn add(&self, class: usize, error: bool, bucket: usize) {
        self.by_class[class].fetch_add(1, Ordering::Relaxed);
        self.latency[bucket].fetch_add(1, Ordering::Relaxed);
        if error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn reset(&self) {
        for counter in self.by_class.iter().chain(&self.latency) {
            counter.store(0, Ordering::Relaxed);
        }
        self.errors.store(0, Ordering::Relaxed);
    }

    /// Copies the class and latency counts out and returns the error count.
    fn read_into(&self, by_class: &mut [u64; CLASSES], latency: &mut [u64]) -> u64 {
        for (out, counter) in by_class.iter_mut().zip(&self.by_class) {
            *out = counter.load(Ordering::Relaxed);
        }
        for (out, counter) in latency.iter_mut().zip(&self.latency) {
            *out = counter.load(Ordering::Relaxed);
        }
        self.errors.load(Ordering::Relaxed)
    }
}

/// One 10-second period of the rolling window.
struct Slot {
    /// The period held, plus one; 0 while the slot was never used.
    period: AtomicU64,
    counts: Counts,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            period: AtomicU64::new(0),
            counts: Counts::new(),
        }
    }
}

fn ring_index(period: u64) -> usize {
    // The remainder is below 90, so it always fits.
    (period % SLOTS as u64) as usize
}

/// The index of a status class: 0 for 1xx up to 4 for 5xx. Statuses outside 100..=599 are
/// not valid HTTP and count as 5xx.
fn status_class(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100 - 1),
        _ => CLASSES - 1,
    }
}

// === Histogram layout ===

/// The latency bucket of a duration in whole microseconds.
///
/// Below 16 µs each microsecond has its own bucket. Above, a value with its highest bit at
/// position `e` (2^e <= v < 2^(e+1)) falls into one of 16 sub-buckets of width 2^(e-4):
/// index = (e - 4) × 16 + (v >> (e - 4)). For 10 ms = 10 000 µs: e = 13 (8 192 <= 10 000 <
/// 16 384), v >> 9 = 19, index = 9 × 16 + 19 = 163, the bucket 19 × 512 = 9 728 µs up to
/// 20 × 512 = 10 240 µs, 5.3 % of its lower bound wide.
fn bucket_index(micros: u64) -> usize {
    if micros < SUB as u64 {
        // Below 16, so it fits.
        return micros as usize;
    }
    if micros >= 1 << TOP_BITS {
        return FINITE_BUCKETS;
    }
    let exponent = u64::BITS - 1 - micros.leading_zeros();
    let shift = exponent - SUB_BITS;
    // `micros >> shift` is in 16..32 and `shift` below 22, so the index stays below 368.
    shift as usize * SUB + (micros >> shift) as usize
}

/// The smallest microsecond value of bucket `index` (the inverse of `bucket_index`); for
/// `FINITE_BUCKETS` it is 2^26, where the overflow bucket starts.
fn bucket_lower_micros(index: usize) -> u64 {
    if index < SUB {
        return index as u64;
    }
    let shift = index / SUB - 1;
    let mantissa = (index % SUB + SUB) as u64;
    mantissa << shift
}

/// The duration reported for bucket `index`: its midpoint, or for the overflow bucket its
/// lower bound (67.1 s, "at least").
///
/// Recorded values are truncated to whole microseconds, so bucket 163 holds true latencies
/// from 9 728 µs up to 10 240 µs and reports 9 984 µs, at most 256 µs (2.6 %) away.
fn bucket_value(index: usize) -> Duration {
    let lower = bucket_lower_micros(index);
    if index >= FINITE_BUCKETS {
        return Duration::from_micros(lower);
    }
    let upper = bucket_lower_micros(index + 1);
    Duration::from_nanos((lower + upper) * 500)
}

/// The `q`-quantile (0 < q <= 1) of a histogram holding `count` values: the value of rank
/// ceil(q × count), counting from 1. For 100 values, p95 is the 95th smallest; for 5 values,
/// p50 is the 3rd (ceil(2.5)).
fn quantile(buckets: &[u64], count: u64, q: f64) -> Option<Duration> {
    if count == 0 {
        return None;
    }
    // The product is at most `count`, so the conversion back cannot overflow.
    let rank = ((q * count as f64).ceil() as u64).clamp(1, count);
    let mut seen = 0;
    for (index, &n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(bucket_value(index));
        }
    }
    None
}

#[cfg(test)]
mod tests;
