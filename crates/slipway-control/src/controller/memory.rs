//! Giving the memory of a burst of control-plane work back to the system.
//!
//! A deploy of many services, or many instances scaling to zero at once, runs on many
//! threads at the same time (async workers and blocking-pool threads for snapshots, checkouts
//! and log pruning), and glibc's allocator gives each busy thread an arena of its own (up to
//! eight per core). What those threads free stays in their arenas: after a 200-service deploy
//! had gone idle, the server held 24 MiB of anonymous memory, and `malloc_trim(0)` brought it
//! to 14 MiB at once. So once the control plane has been quiet for `QUIET` after such work,
//! the server trims once; if the work never pauses that long (a deploy loop, instances
//! scaling up and down all the time), once per `LONGEST_WAIT`. The trim locks each arena in
//! turn, so the router, whose threads allocate from their own arenas, meets it at most that
//! often.
//!
//! The router's client connections are the other burst: each holds a few KiB while it is
//! open (its task, and its buffers while it is busy), and what thousands of them freed stays
//! in the router thread's arena. 2,000 keep-alive clients grew the server's anonymous memory
//! from 3.0 to 17.3 MiB, and it stayed there after they had gone. So the number of open
//! client connections is looked at every `LOOK_EVERY`, and a fall of `CONNECTIONS_FELL` below
//! its peak counts as work that freed memory: 8 s after those clients left, 4.4 MiB.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// How long the control plane must have been quiet after work that freed memory.
pub(super) const QUIET: Duration = Duration::from_secs(2);
/// How long work that never pauses for `QUIET` postpones a trim at most.
pub(super) const LONGEST_WAIT: Duration = Duration::from_secs(30);

/// How often the router's open client connections are counted.
pub(super) const LOOK_EVERY: Duration = Duration::from_secs(2);
/// How far the open client connections must fall below their peak (since they last fell
/// that far) to count as work that freed memory: a few MiB.
pub(super) const CONNECTIONS_FELL: usize = 256;

/// The most client connections open at once since they last fell by `CONNECTIONS_FELL`.
#[derive(Default)]
pub(super) struct ConnectionPeak {
    peak: usize,
}

impl ConnectionPeak {
    /// Takes the number open now; says whether it fell `CONNECTIONS_FELL` or more below the
    /// peak, which then starts again from it.
    pub(super) fn fell(&mut self, open: usize) -> bool {
        self.peak = self.peak.max(open);
        if self.peak - open >= CONNECTIONS_FELL {
            self.peak = open;
            return true;
        }
        false
    }
}

/// Collects "work that freed memory happened" and trims once things are quiet.
#[derive(Default)]
pub(super) struct MemoryReturn {
    churn: Notify,
    trims: AtomicU64,
}

impl MemoryReturn {
    /// Says that work that allocated and freed memory (a deploy's switch, an instance
    /// stopped) has just happened. API calls are not such work: the memory a trim gives back
    /// has to be faulted in again by the next call that needs it (a `/metrics` scrape of
    /// 1,000 revisions took 21-31 ms right after a trim, 16 ms otherwise), and a scraper or
    /// a dashboard calls again and again.
    pub(super) fn churned(&self) {
        self.churn.notify_one();
    }

    /// How many trims have run.
    #[cfg(test)]
    pub(super) fn trims(&self) -> u64 {
        self.trims.load(Ordering::Relaxed)
    }

    /// Waits for work, then for `QUIET` without more (`LONGEST_WAIT` at most), then trims;
    /// for ever.
    pub(super) async fn run(self: Arc<Self>) {
        use tokio::time::{Instant, timeout_at};
        loop {
            self.churn.notified().await;
            // More work within `QUIET` postpones the trim, up to `LONGEST_WAIT`.
            let latest = Instant::now() + LONGEST_WAIT;
            loop {
                let until = (Instant::now() + QUIET).min(latest);
                let more = timeout_at(until, self.churn.notified()).await.is_ok();
                if !more || Instant::now() >= latest {
                    break;
                }
            }
            // A trim walks every arena: tens of microseconds idle, milliseconds with
            // hundreds of MiB to give back. Not on an async worker.
            let _ = tokio::task::spawn_blocking(trim).await;
            self.trims.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts `open()` (the router's open client connections) every `LOOK_EVERY` and says
    /// that work freed memory when they fell far below their peak; for ever.
    pub(super) async fn watch_connections(self: Arc<Self>, open: impl Fn() -> usize) {
        let mut looks = tokio::time::interval(LOOK_EVERY);
        looks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut peak = ConnectionPeak::default();
        loop {
            looks.tick().await;
            if peak.fell(open()) {
                self.churned();
            }
        }
    }
}

/// Returns the free memory of every arena to the system.
fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let started = std::time::Instant::now();
        // SAFETY: malloc_trim takes each arena's lock itself; it only releases free pages.
        let released = unsafe { libc::malloc_trim(0) };
        tracing::debug!(
            released = released != 0,
            took_us = started.elapsed().as_micros() as u64,
            "returned free memory to the system"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn trims_once_after_a_quiet_period_not_during_work() {
        let memory = Arc::new(MemoryReturn::default());
        tokio::spawn(memory.clone().run());
        tokio::time::sleep(QUIET * 3).await;
        assert_eq!(memory.trims(), 0, "no work, no trim");

        // Work every half period for five periods: no trim while it goes on.
        for _ in 0..10 {
            memory.churned();
            tokio::time::sleep(QUIET / 2).await;
        }
        assert_eq!(memory.trims(), 0, "trimmed while work went on");
        tokio::time::sleep(QUIET * 2).await;
        assert_eq!(memory.trims(), 1, "one trim once quiet");

        tokio::time::sleep(QUIET * 5).await;
        assert_eq!(memory.trims(), 1, "quiet after the trim: no other");
        memory.churned();
        memory.churned();
        tokio::time::sleep(QUIET * 2).await;
        assert_eq!(memory.trims(), 2, "one trim per burst");
    }

    #[test]
    fn connections_count_as_freed_memory_when_they_fall_far_below_their_peak() {
        let mut peak = ConnectionPeak::default();
        // Rising, and small ups and downs: nothing.
        for open in [0, 10, 300, 250, 400, 200, 2000] {
            assert!(!peak.fell(open), "{open}");
        }
        // 2,000 down to 1,744 is a fall of 256: once, then from there.
        assert!(peak.fell(1744));
        assert!(!peak.fell(1500));
        assert!(peak.fell(1488));
        assert!(!peak.fell(1488));
        // Back up and down again.
        assert!(!peak.fell(3000));
        assert!(peak.fell(0));
        assert!(!peak.fell(0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_fall_of_open_connections_gets_one_trim_once_quiet() {
        let memory = Arc::new(MemoryReturn::default());
        tokio::spawn(memory.clone().run());
        let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = open.clone();
        tokio::spawn(
            memory
                .clone()
                .watch_connections(move || count.load(Ordering::Relaxed)),
        );
        open.store(2000, Ordering::Relaxed);
        tokio::time::sleep(LOOK_EVERY * 5).await;
        assert_eq!(memory.trims(), 0, "connections open: no trim");
        open.store(1900, Ordering::Relaxed);
        tokio::time::sleep(LOOK_EVERY * 5).await;
        assert_eq!(memory.trims(), 0, "a small fall: no trim");
        open.store(10, Ordering::Relaxed);
        tokio::time::sleep(LOOK_EVERY + QUIET * 2).await;
        assert_eq!(memory.trims(), 1, "one trim after the clients left");
        tokio::time::sleep(LOOK_EVERY * 10).await;
        assert_eq!(memory.trims(), 1, "and no other");
    }

    #[tokio::test(start_paused = true)]
    async fn work_that_never_pauses_gets_a_trim_per_longest_wait() {
        let memory = Arc::new(MemoryReturn::default());
        tokio::spawn(memory.clone().run());
        let started = tokio::time::Instant::now();
        // Work every half second, for a little over three longest waits.
        while started.elapsed() < LONGEST_WAIT * 3 + QUIET {
            memory.churned();
            tokio::time::sleep(QUIET / 4).await;
        }
        assert_eq!(memory.trims(), 3);
    }
}
