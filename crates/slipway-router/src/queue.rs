//! The per-revision wait queue: where a request waits when its revision has no backend that
//! may take it right now, either because every ready backend is at the target's concurrency
//! limit or because the revision has no ready backend at all (scale from zero).
//!
//! The queue lives inside the revision's [`crate::RevisionStats`], the one per-revision object
//! the control plane keeps and passes in every route table, so waiting requests survive
//! route-table swaps. It is a FIFO list of waiters, each with its own [`Notify`]:
//!
//! - Anything that may have made room — a request ending on a backend of the revision, a
//!   backend becoming ready, a new table being published — calls [`RevisionQueue::wake_head`],
//!   which wakes only the oldest waiter.
//! - A woken waiter tries to get a backend. When it succeeds it leaves the queue, and leaving
//!   wakes the next waiter, which tries in turn: room is handed down the queue in order until a
//!   waiter finds none and goes back to sleep, keeping its place.
//! - A waiter that gives up (timeout, client gone) also leaves, and wakes the next one in case
//!   it was woken for room it never used.
//!
//! A wake-up is never lost: a `Notify` keeps one permit for a waiter that is not sleeping yet,
//! and every producer of room updates its own state before it reads the queue length while a
//! waiter is counted in the queue before it looks for room (both sequentially consistent), so
//! at least one of the two sees the other.
//!
//! When nothing waits, the request path touches none of this except one atomic load of the
//! queue length when a request ends.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

/// The waiting requests of one revision.
pub(crate) struct RevisionQueue {
    /// Waiters, oldest first.
    waiters: Mutex<VecDeque<Waiter>>,
    /// The length of `waiters`, readable without the lock.
    queued: AtomicUsize,
    /// Ids for waiters, so one can find itself again after others left.
    next_id: AtomicU64,
    /// Whether the activation hook was called for the current wait episode.
    activating: AtomicBool,
}

/// One waiting request: its id and how to wake it.
struct Waiter {
    id: u64,
    wake: Arc<Notify>,
}

/// The queue was at its limit.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct QueueFull;

impl RevisionQueue {
    pub(crate) fn new() -> RevisionQueue {
        RevisionQueue {
            waiters: Mutex::new(VecDeque::new()),
            queued: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            activating: AtomicBool::new(false),
        }
    }

    /// Requests waiting right now.
    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    /// Enters the queue at its end, unless `limit` requests already wait. The ticket leaves
    /// the queue when dropped.
    pub(crate) fn join(self: &Arc<Self>, limit: usize) -> Result<Ticket, QueueFull> {
        let mut waiters = self.lock();
        if waiters.len() >= limit {
            return Err(QueueFull);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let wake = Arc::new(Notify::new());
        waiters.push_back(Waiter {
            id,
            wake: wake.clone(),
        });
        self.queued.store(waiters.len(), Ordering::SeqCst);
        Ok(Ticket {
            queue: self.clone(),
            id,
            wake,
        })
    }

    /// Removes waiter `id`. If it was the oldest, the next one is woken: the leaver either
    /// took the room it was woken for (and there may be more) or gave it up. When the queue
    /// becomes empty, the wait episode ends.
    fn leave(&self, id: u64) {
        let mut waiters = self.lock();
        let Some(position) = waiters.iter().position(|w| w.id == id) else {
            return;
        };
        waiters.remove(position);
        self.queued.store(waiters.len(), Ordering::SeqCst);
        if waiters.is_empty() {
            self.activating.store(false, Ordering::SeqCst);
        } else if position == 0
            && let Some(next) = waiters.front()
        {
            next.wake.notify_one();
        }
    }

    /// Wakes the oldest waiter, if any, to look for room again.
    pub(crate) fn wake_head(&self) {
        if self.queued() == 0 {
            return;
        }
        if let Some(head) = self.lock().front() {
            head.wake.notify_one();
        }
    }

    /// Claims the activation of this wait episode: true for the first caller after the
    /// episode began, false for everyone else until it ends.
    pub(crate) fn begin_activation(&self) -> bool {
        !self.activating.swap(true, Ordering::SeqCst)
    }

    /// Ends the wait episode because a waiter got a backend: the revision is warm again, and
    /// should it go cold later, the hook is called anew.
    pub(crate) fn end_activation(&self) {
        if self.activating.load(Ordering::Relaxed) {
            self.activating.store(false, Ordering::SeqCst);
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Waiter>> {
        // Every change keeps the list and `queued` consistent before it could panic, so a
        // poisoned lock is simply reused.
        self.waiters.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A place in a revision's queue, given up when dropped.
pub(crate) struct Ticket {
    queue: Arc<RevisionQueue>,
    id: u64,
    wake: Arc<Notify>,
}

impl Ticket {
    /// Completes when this waiter is woken (at once if it was woken since it last waited).
    pub(crate) async fn woken(&self) {
        self.wake.notified().await;
    }

    /// The queue this ticket waits in.
    pub(crate) fn queue(&self) -> &Arc<RevisionQueue> {
        &self.queue
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.queue.leave(self.id);
    }
}

#[cfg(test)]
mod tests;
