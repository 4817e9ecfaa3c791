//! Recycled sleeps still end at their (new) deadlines, and hyper's timer keeps reusing them.

use std::future::Future;
use std::task::{Context, Poll, Waker};

use hyper::rt::Timer;

use super::*;

/// Polls a future once, with a waker that does nothing.
fn poll_once<F: Future + ?Sized>(future: Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

fn later(duration: Duration) -> tokio::time::Instant {
    tokio::time::Instant::now() + duration
}

#[tokio::test]
async fn a_dropped_sleep_is_kept_and_handed_out_again() {
    let timers = Arc::new(Timers::default());
    let mut first = timers.sleep_until(later(Duration::from_secs(60)));
    // Polled once, the sleep is registered with the runtime's timer wheel.
    assert!(poll_once(Pin::new(&mut first)).is_pending());
    drop(first);
    assert_eq!(timers.spare(), 1);
    let second = timers.sleep_until(later(Duration::from_secs(60)));
    assert_eq!(timers.spare(), 0, "the spare sleep was not reused");
    drop(second);
    assert_eq!(timers.spare(), 1);
}

#[tokio::test]
async fn a_reused_sleep_ends_at_its_new_deadline_not_the_old_one() {
    let timers = Arc::new(Timers::default());
    // Registered for 1 ms from now, then given back before it fired.
    let mut old = timers.sleep_until(later(Duration::from_millis(1)));
    assert!(poll_once(Pin::new(&mut old)).is_pending());
    drop(old);
    // The same sleep, moved to a minute from now.
    let mut reused = timers.sleep_until(later(Duration::from_secs(60)));
    assert_eq!(timers.spare(), 0);
    assert!(poll_once(Pin::new(&mut reused)).is_pending());
    // Well past the old deadline, the reused sleep has not fired.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(poll_once(Pin::new(&mut reused)).is_pending());
    // Moved to a deadline that has passed, it fires at once.
    reused.reset(tokio::time::Instant::now());
    tokio::time::timeout(Duration::from_secs(10), &mut reused)
        .await
        .expect("a sleep reset to now should fire");
}

#[tokio::test]
async fn a_reused_sleep_fires_at_an_earlier_deadline_too() {
    let timers = Arc::new(Timers::default());
    let mut old = timers.sleep_until(later(Duration::from_secs(60)));
    assert!(poll_once(Pin::new(&mut old)).is_pending());
    drop(old);
    let reused = timers.sleep_until(later(Duration::from_millis(1)));
    tokio::time::timeout(Duration::from_secs(10), reused)
        .await
        .expect("the reused sleep did not fire at its earlier deadline");
}

#[tokio::test]
async fn hyper_resets_its_sleep_in_place() {
    let timers = Arc::new(Timers::default());
    let timer = HyperTimer(timers.clone());
    let mut sleep = timer.sleep_until(Instant::now() + Duration::from_secs(60));
    assert!(poll_once(sleep.as_mut()).is_pending());
    timer.reset(&mut sleep, Instant::now() + Duration::from_secs(120));
    // Resetting did not replace (and so drop) the pooled sleep.
    assert_eq!(timers.spare(), 0);
    assert!(sleep.as_mut().downcast_mut_pin::<PooledSleep>().is_some());
    timer.reset(&mut sleep, Instant::now());
    tokio::time::timeout(Duration::from_secs(10), &mut sleep)
        .await
        .expect("a sleep reset to now should fire");
    drop(sleep);
    assert_eq!(timers.spare(), 1);
}

#[test]
fn the_pool_is_bounded() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _entered = runtime.enter();
    let timers = Arc::new(Timers::default());
    let sleeps: Vec<PooledSleep> = (0..MAX_SPARE + 10)
        .map(|_| timers.sleep_until(later(Duration::from_secs(60))))
        .collect();
    drop(sleeps);
    assert_eq!(timers.spare(), MAX_SPARE);
}
