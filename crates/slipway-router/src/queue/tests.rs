//! Unit tests of the revision queue: its bound, the FIFO hand-down of wake-ups and the
//! activation episodes. Wake-ups are observed by polling once with a no-op waker, so nothing
//! here sleeps or depends on timing.

use std::pin::pin;
use std::task::{Context, Waker};

use super::*;

/// Whether `ticket` was woken since it last waited (consuming the wake-up).
fn woken(ticket: &Ticket) -> bool {
    let mut wait = pin!(ticket.woken());
    wait.as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
        .is_ready()
}

#[test]
fn the_queue_is_bounded_and_counts_its_waiters() {
    let queue = Arc::new(RevisionQueue::new());
    let first = queue.join(2).expect("room for the first");
    let second = queue.join(2).expect("room for the second");
    assert_eq!(queue.queued(), 2);
    assert_eq!(queue.join(2).err(), Some(QueueFull));
    drop(first);
    assert_eq!(queue.queued(), 1);
    let third = queue.join(2).expect("room again after one left");
    assert_eq!(queue.queued(), 2);
    drop((second, third));
    assert_eq!(queue.queued(), 0);
    assert_eq!(
        queue.join(0).err(),
        Some(QueueFull),
        "limit 0 holds nothing"
    );
}

#[test]
fn only_the_oldest_waiter_is_woken_and_leaving_hands_the_wake_up_down() {
    let queue = Arc::new(RevisionQueue::new());
    let tickets: Vec<Ticket> = (0..3).map(|_| queue.join(10).expect("room")).collect();
    assert!(tickets.iter().all(|t| !woken(t)), "nobody woken yet");

    queue.wake_head();
    assert!(woken(&tickets[0]));
    assert!(!woken(&tickets[1]));
    assert!(!woken(&tickets[2]));

    // The head leaves (it took the room it was woken for): the next one is woken.
    let mut tickets = tickets.into_iter();
    drop(tickets.next());
    let (second, third) = (tickets.next().expect("2nd"), tickets.next().expect("3rd"));
    assert!(woken(&second));
    assert!(!woken(&third));

    // A waiter behind the head leaving wakes nobody.
    drop(third);
    assert!(!woken(&second));
}

#[test]
fn a_wake_up_before_the_waiter_sleeps_is_kept_but_not_counted_twice() {
    let queue = Arc::new(RevisionQueue::new());
    let ticket = queue.join(1).expect("room");
    queue.wake_head();
    queue.wake_head();
    assert!(woken(&ticket), "the wake-up waited for the waiter");
    assert!(!woken(&ticket), "two wake-ups before sleeping make one");
}

#[test]
fn waking_an_empty_queue_leaves_nothing_behind() {
    let queue = Arc::new(RevisionQueue::new());
    queue.wake_head();
    let ticket = queue.join(1).expect("room");
    assert!(!woken(&ticket));
}

#[test]
fn activation_is_claimed_once_per_wait_episode() {
    let queue = Arc::new(RevisionQueue::new());
    let first = queue.join(10).expect("room");
    let second = queue.join(10).expect("room");
    assert!(queue.begin_activation());
    assert!(!queue.begin_activation(), "one activation per episode");

    // The episode ends when the queue empties...
    drop((first, second));
    let third = queue.join(10).expect("room");
    assert!(queue.begin_activation(), "a new episode activates again");

    // ...or when a waiter got a backend.
    queue.end_activation();
    assert!(queue.begin_activation());
    drop(third);
}
