//! Tests of the bucketed sample window and the scale-down delay window.

use std::time::Duration;

use super::{DelayWindow, SampleWindow};

fn secs(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}

fn millis(millis: u64) -> Duration {
    Duration::from_millis(millis)
}

#[test]
fn averages_the_samples_in_each_window() {
    let mut window = SampleWindow::new(secs(60), secs(6));
    for (second, concurrency) in [(1, 10.0), (2, 10.0), (3, 10.0), (4, 100.0), (5, 100.0)] {
        window.record(secs(second), concurrency);
    }
    window.record(secs(6), 100.0);
    // The worked example of the type's doc: 330 / 6.
    assert_eq!(window.average(secs(6), secs(6)), Some(55.0));
    // A 2 s window ending at 6 s sees the samples at 5 s and 6 s.
    assert_eq!(window.average(secs(6), secs(2)), Some(100.0));
    // Later, the 6 s window only sees the samples from 5 s on.
    assert_eq!(window.average(secs(10), secs(6)), Some(100.0));
}

#[test]
fn a_window_without_samples_has_no_average() {
    let mut window = SampleWindow::new(secs(60), secs(6));
    assert_eq!(window.average(secs(5), secs(6)), None);
    window.record(secs(5), 40.0);
    assert_eq!(window.average(secs(11), secs(6)), None);
    assert_eq!(window.average(secs(11), secs(60)), Some(40.0));
}

#[test]
fn gaps_do_not_count_as_zero() {
    let mut window = SampleWindow::new(secs(60), secs(6));
    window.record(secs(1), 30.0);
    window.record(secs(5), 60.0);
    assert_eq!(window.average(secs(6), secs(6)), Some(45.0));
}

#[test]
fn samples_in_one_bucket_are_averaged_with_the_rest() {
    let mut window = SampleWindow::new(secs(60), secs(6));
    window.record(millis(1_100), 10.0);
    window.record(millis(1_900), 20.0);
    window.record(millis(2_500), 60.0);
    assert_eq!(window.len(), 2);
    assert_eq!(window.average(secs(3), secs(6)), Some(30.0));
}

#[test]
fn out_of_order_samples_land_in_their_bucket() {
    let mut window = SampleWindow::new(secs(60), secs(6));
    window.record(secs(10), 10.0);
    window.record(secs(8), 40.0);
    window.record(secs(9), 70.0);
    assert_eq!(window.len(), 3);
    // The 2 s window ending at 10 s sees 9 s and 10 s only.
    assert_eq!(window.average(secs(10), secs(2)), Some(40.0));
}

#[test]
fn samples_older_than_the_stable_window_are_dropped() {
    let mut window = SampleWindow::new(secs(60), secs(6));
    window.record(secs(100), 10.0);
    window.record(secs(40), 1000.0);
    assert_eq!(window.len(), 1);
    assert_eq!(window.average(secs(100), secs(60)), Some(10.0));
    window.record(secs(161), 20.0);
    assert_eq!(
        window.len(),
        1,
        "the sample at 100 s is 61 s older than the newest"
    );
    window.record(secs(200), 30.0);
    window.prune(secs(300));
    assert_eq!(window.len(), 0);
}

#[test]
fn memory_stays_bounded_however_many_samples_arrive() {
    let mut window = SampleWindow::new(secs(60), secs(6));
    assert_eq!(window.bound(), 60);
    // Ten samples a second for ten minutes.
    for tenth in 0..6_000 {
        window.record(millis(tenth * 100), 5.0);
        assert!(window.len() <= window.bound());
    }
    assert_eq!(window.len(), 60);
    assert_eq!(window.average(millis(599_900), secs(60)), Some(5.0));
}

#[test]
fn long_windows_get_coarser_buckets_not_more_of_them() {
    let window = SampleWindow::new(secs(24 * 3600), secs(6));
    assert!(window.bound() <= 4097, "bound {}", window.bound());
    let window = SampleWindow::new(Duration::MAX, Duration::MAX);
    assert!(window.bound() <= 4097, "bound {}", window.bound());
}

#[test]
fn short_panic_windows_get_finer_buckets() {
    let mut window = SampleWindow::new(secs(5), millis(500));
    window.record(millis(100), 100.0);
    window.record(millis(1_000), 0.0);
    // With 1 s buckets both samples would share one bucket and average 50.
    assert_eq!(window.average(millis(1_000), millis(500)), Some(0.0));
}

#[test]
fn bad_concurrency_counts_as_zero() {
    let mut window = SampleWindow::new(secs(60), secs(6));
    window.record(secs(1), f64::NAN);
    window.record(secs(2), -5.0);
    window.record(secs(3), f64::INFINITY);
    window.record(secs(4), 30.0);
    assert_eq!(window.average(secs(4), secs(6)), Some(7.5));
}

#[test]
fn the_delay_window_returns_the_largest_recent_value() {
    let mut delay = DelayWindow::new(secs(30));
    assert_eq!(delay.record(secs(0), 10), 10);
    assert_eq!(delay.record(secs(1), 8), 10);
    assert_eq!(delay.record(secs(2), 9), 10);
    // The 8 can never be the maximum again once the 9 came after it.
    assert_eq!(delay.len(), 2);
    assert_eq!(delay.record(secs(29), 3), 10);
    // The 10 is exactly 30 s old at 30 s and no longer counts.
    assert_eq!(delay.record(secs(30), 3), 9);
    assert_eq!(delay.record(secs(32), 3), 3);
    // Going up is never delayed.
    assert_eq!(delay.record(secs(33), 12), 12);
    assert_eq!(delay.len(), 1);
}

#[test]
fn no_delay_passes_values_through() {
    let mut delay = DelayWindow::new(Duration::ZERO);
    assert_eq!(delay.record(secs(0), 10), 10);
    assert_eq!(delay.record(secs(0), 1), 1);
    assert_eq!(delay.len(), 0);
}

#[test]
fn clearing_the_delay_window_forgets_old_values() {
    let mut delay = DelayWindow::new(secs(30));
    delay.record(secs(0), 10);
    delay.clear();
    assert_eq!(delay.record(secs(1), 2), 2);
}
