//! Unit tests of the per-revision stats: the histogram layout, quantiles, the rolling window
//! under an injected clock, and totals.

use super::*;

const MS: Duration = Duration::from_millis(1);

/// A snapshot's quantile as whole microseconds, for readable assertions.
fn micros(quantile: Option<Duration>) -> u128 {
    quantile.expect("a quantile").as_micros()
}

/// Asserts that `got` is within 3.2 % of `want`, the precision promised for quantiles.
fn assert_close(got: Option<Duration>, want: Duration) {
    let got = got.expect("a quantile").as_secs_f64();
    let want = want.as_secs_f64();
    assert!(
        (got - want).abs() <= want * 0.032,
        "{got}s is not within 3.2 % of {want}s"
    );
}

#[test]
fn buckets_are_contiguous_and_at_most_one_sixteenth_wide() {
    assert_eq!(bucket_lower_micros(0), 0);
    for index in 0..FINITE_BUCKETS {
        let lower = bucket_lower_micros(index);
        let upper = bucket_lower_micros(index + 1);
        assert!(upper > lower, "bucket {index} is empty");
        assert_eq!(bucket_index(lower), index, "lower bound of {index}");
        assert_eq!(bucket_index(upper - 1), index, "last value of {index}");
        if lower >= SUB as u64 {
            assert!((upper - lower) * 16 <= lower, "bucket {index} is too wide");
        }
    }
    assert_eq!(bucket_lower_micros(FINITE_BUCKETS), 1 << 26);
    assert_eq!(bucket_index((1 << 26) - 1), FINITE_BUCKETS - 1);
    assert_eq!(bucket_index(1 << 26), FINITE_BUCKETS);
    assert_eq!(bucket_index(u64::MAX), FINITE_BUCKETS);
}

#[test]
fn worked_example_of_ten_milliseconds() {
    assert_eq!(bucket_index(10_000), 163);
    assert_eq!(bucket_lower_micros(163), 9_728);
    assert_eq!(bucket_lower_micros(164), 10_240);
    assert_eq!(bucket_value(163), Duration::from_micros(9_984));
    assert_eq!(
        Totals::bucket_upper_bound(163),
        Some(Duration::from_micros(10_240))
    );
    assert_eq!(Totals::bucket_upper_bound(FINITE_BUCKETS), None);
    assert_eq!(Totals::bucket_upper_bound(LATENCY_BUCKETS + 5), None);
}

#[test]
fn status_classes_and_errors() {
    let stats = RevisionStats::new();
    for status in [100, 101, 200, 204, 301, 404, 499, 500, 503, 599] {
        stats.record_at(0, status, false, MS);
    }
    // Not valid HTTP: counted as 5xx errors.
    stats.record_at(0, 0, false, MS);
    stats.record_at(0, 600, false, MS);
    // A 200 whose body broke off is an error too.
    stats.record_at(0, 200, true, MS);
    let totals = stats.totals();
    assert_eq!(totals.requests_by_class, [2, 3, 1, 2, 5]);
    assert_eq!(totals.errors, 6);
    assert_eq!(totals.requests(), 13);
    assert_eq!(totals.latency_count(), 13);
    assert_eq!(totals.latency_sum, 13 * MS);
    let snapshot = stats.snapshot_at(Duration::from_secs(5), Duration::from_secs(60));
    assert_eq!(snapshot.by_class, [2, 3, 1, 2, 5]);
    assert_eq!(snapshot.errors, 6);
    assert_eq!(snapshot.error_rate(), Some(6.0 / 13.0));
}

#[test]
fn quantiles_of_known_latencies_are_within_bucket_precision() {
    let stats = RevisionStats::new();
    // 90 requests of 10 ms and 10 of 50 ms: p50 is 10 ms, p95 and p99 are 50 ms.
    for _ in 0..90 {
        stats.record_at(3, 200, false, 10 * MS);
    }
    for _ in 0..10 {
        stats.record_at(4, 200, false, 50 * MS);
    }
    let snapshot = stats.snapshot_at(Duration::from_secs(5), Duration::from_secs(10));
    assert_eq!(snapshot.requests, 100);
    assert_close(snapshot.p50, 10 * MS);
    assert_close(snapshot.p95, 50 * MS);
    assert_close(snapshot.p99, 50 * MS);
    assert_eq!(micros(snapshot.p50), 9_984);
    // 50 000 µs: e = 15, v >> 11 = 24, bucket 49 152..51 200 µs, midpoint 50 176 µs.
    assert_eq!(micros(snapshot.p99), 50_176);

    // Rank ceil(0.9 × 100) = 90 is still a 10 ms request; rank 91 is the first 50 ms one.
    let buckets = stats.totals().latency_buckets;
    assert_close(quantile(&buckets, 100, 0.90), 10 * MS);
    assert_close(quantile(&buckets, 100, 0.91), 50 * MS);
    assert_eq!(quantile(&buckets, 0, 0.5), None);
}

#[test]
fn quantiles_stay_within_three_percent_across_the_range() {
    let mut value = 1u64;
    while value < 60_000_000 {
        let stats = RevisionStats::new();
        stats.record_at(0, 200, false, Duration::from_micros(value));
        let p50 = stats
            .snapshot_at(Duration::ZERO, Duration::from_secs(10))
            .p50;
        let got = p50.expect("a quantile").as_secs_f64() * 1e6;
        // Values are truncated to whole microseconds; allow that half microsecond as well.
        let error = (got - value as f64).abs();
        assert!(
            error <= value as f64 * 0.032 + 0.5,
            "{value} µs reported as {got} µs"
        );
        value = value * 13 / 10 + 1;
    }
    // Beyond the histogram's range: reported as "at least 67.1 s".
    let stats = RevisionStats::new();
    stats.record_at(0, 200, false, Duration::from_secs(3600));
    let p99 = stats
        .snapshot_at(Duration::ZERO, Duration::from_secs(10))
        .p99;
    assert_eq!(p99, Some(Duration::from_micros(1 << 26)));
}

#[test]
fn a_window_sees_only_its_own_slots() {
    let stats = RevisionStats::new();
    // One request per second for the first 125 seconds: 12 full periods and half of a 13th.
    for second in 0..125 {
        stats.record_at(second, 200, false, MS);
    }
    let now = Duration::from_secs(125);

    // A 60 s window at 125 s takes periods 7..=12, i.e. seconds 70..125: 55 requests.
    let minute = stats.snapshot_at(now, Duration::from_secs(60));
    assert_eq!(minute.requests, 55);
    assert_eq!(minute.span, Duration::from_secs(55));
    assert_eq!(minute.rps, 1.0);

    // 10 s (or less) is the current slot only: seconds 120..125.
    let current = stats.snapshot_at(now, Duration::from_secs(10));
    assert_eq!(current.requests, 5);
    assert_eq!(stats.snapshot_at(now, Duration::ZERO).requests, 5);

    // 65 s rounds up to 7 slots: seconds 60..125.
    assert_eq!(stats.snapshot_at(now, Duration::from_secs(65)).requests, 65);

    // 15 minutes reach back to the creation; the span is clamped to the lifetime.
    let all = stats.snapshot_at(now, Duration::from_secs(900));
    assert_eq!(all.requests, 125);
    assert_eq!(all.span, Duration::from_secs(125));
    assert_eq!(all.rps, 1.0);
    assert_eq!(stats.snapshot_at(now, Duration::from_secs(86_400)), all);
}

#[test]
fn old_slots_expire_after_fifteen_minutes_but_totals_keep_them() {
    let stats = RevisionStats::new();
    stats.record_at(5, 500, false, MS); // period 0, slot 0
    stats.record_at(15, 200, false, MS); // period 1, slot 1
    let fifteen = Duration::from_secs(900);

    // At 899 s both are still inside the 90 slots (periods 0..=89).
    let before = stats.snapshot_at(Duration::from_secs(899), fifteen);
    assert_eq!(before.requests, 2);
    assert_eq!(before.errors, 1);

    // At 900 s period 90 begins; period 0 falls out even though slot 0 was never reused.
    let after = stats.snapshot_at(Duration::from_secs(900), fifteen);
    assert_eq!(after.requests, 1);
    assert_eq!(after.errors, 0);
    assert_eq!(after.by_class, [0, 1, 0, 0, 0]);

    // Recording in period 90 reuses slot 0 and clears the old period's counts.
    stats.record_at(905, 404, false, MS);
    let reused = stats.snapshot_at(Duration::from_secs(905), fifteen);
    assert_eq!(reused.by_class, [0, 1, 0, 1, 0]);

    // Long after, the window is empty and has no quantiles; the totals still count all three.
    let later = stats.snapshot_at(Duration::from_secs(5_000), fifteen);
    assert_eq!(later.requests, 0);
    assert_eq!(later.rps, 0.0);
    assert_eq!(later.p50, None);
    assert_eq!(later.error_rate(), None);
    let totals = stats.totals();
    assert_eq!(totals.requests_by_class, [0, 1, 0, 1, 1]);
    assert_eq!(totals.errors, 1);
}

#[test]
fn a_recording_older_than_its_slot_counts_only_in_the_totals() {
    let stats = RevisionStats::new();
    stats.record_at(905, 200, false, MS); // period 90 takes slot 0
    stats.record_at(5, 200, false, MS); // period 0 would need slot 0 too
    assert_eq!(
        stats
            .snapshot_at(Duration::from_secs(905), Duration::from_secs(900))
            .requests,
        1
    );
    assert_eq!(
        stats
            .snapshot_at(Duration::from_secs(5), Duration::from_secs(10))
            .requests,
        0
    );
    assert_eq!(stats.totals().requests(), 2);
}

#[test]
fn rps_is_taken_over_at_least_one_second() {
    let stats = RevisionStats::new();
    for _ in 0..10 {
        stats.record_at(20, 200, false, MS);
    }
    // At exactly 20 s the current slot began 0 s ago; divide by one second instead.
    let snapshot = stats.snapshot_at(Duration::from_secs(20), Duration::from_secs(10));
    assert_eq!(snapshot.span, Duration::ZERO);
    assert_eq!(snapshot.rps, 10.0);
    // Half a second later the span is 0.5 s, still divided by one second.
    let snapshot = stats.snapshot_at(Duration::from_millis(20_500), Duration::from_secs(10));
    assert_eq!(snapshot.rps, 10.0);
    // Four seconds in, 10 requests over 4 s.
    let snapshot = stats.snapshot_at(Duration::from_secs(24), Duration::from_secs(10));
    assert_eq!(snapshot.rps, 2.5);
}

#[test]
fn the_recent_rate_covers_the_current_second_and_the_four_before_it() {
    let stats = RevisionStats::new();
    // 100 requests a second from 0 s to 59 s, then none (the service went down).
    for second in 0..60 {
        for _ in 0..100 {
            stats.record_at(second, 200, false, MS);
        }
    }
    // At 59.5 s: seconds 55..=59, 500 requests over 4.5 s.
    let at = Duration::from_millis(59_500);
    assert_eq!(stats.recent_rps_at(at), 500.0 / 4.5);
    // One second later 400 of them over 4.5 s; the minute's snapshot (10 s to 60.5 s) still
    // shows about 100 a second.
    let at = Duration::from_millis(60_500);
    assert_eq!(stats.recent_rps_at(at), 400.0 / 4.5);
    assert_eq!(
        stats.snapshot_at(at, Duration::from_secs(60)).rps,
        5_000.0 / 50.5
    );
    // Once second 59 leaves the window (at 64 s) the rate is 0, and it stays 0 while the
    // counters age.
    assert_eq!(
        stats.recent_rps_at(Duration::from_millis(63_500)),
        100.0 / 4.5
    );
    assert_eq!(stats.recent_rps_at(Duration::from_secs(64)), 0.0);
    assert_eq!(stats.recent_rps_at(Duration::from_secs(1_000)), 0.0);
}

#[test]
fn the_recent_rate_starts_over_at_least_one_second_and_ignores_stale_recordings() {
    let stats = RevisionStats::new();
    assert_eq!(stats.recent_rps_at(Duration::ZERO), 0.0);
    for _ in 0..3 {
        stats.record_at(0, 503, false, MS);
    }
    assert_eq!(stats.recent_rps_at(Duration::from_millis(200)), 3.0);
    assert_eq!(stats.recent_rps_at(Duration::from_secs(2)), 1.5);
    // A counter reused for second 8 drops what second 0 left in it; a recording for a second
    // older than the one its counter holds counts in the totals only.
    stats.record_at(8, 200, false, MS);
    stats.record_at(0, 200, false, MS);
    assert_eq!(stats.recent_rps_at(Duration::from_secs(8)), 1.0 / 4.0);
    assert_eq!(stats.totals().requests(), 5);
}

#[test]
fn cumulative_counts_for_prometheus_bounds() {
    let stats = RevisionStats::new();
    for latency in [100, 900, 4_000, 9_999, 250_000] {
        stats.record_at(0, 200, false, Duration::from_micros(latency));
    }
    let totals = stats.totals();
    // 10 239 µs is the last value of bucket 163, so "le 10 239 µs" is exact and includes the
    // 9 999 µs request; 1 ms is not a bucket limit, and the 900 µs request (bucket 896..928) is
    // below it anyway.
    let bounds = [
        Duration::from_millis(1),
        Duration::from_micros(10_239),
        Duration::from_secs(1),
    ];
    assert_eq!(totals.cumulative_le(&bounds), vec![2, 4, 5]);
    // A bound inside a bucket leaves that bucket out: 9 999 µs lies in 9 728..10 240.
    assert_eq!(
        totals.cumulative_le(&[Duration::from_micros(10_000)]),
        vec![3]
    );
    assert_eq!(totals.latency_count(), 5);
}

#[test]
fn measure_counts_in_flight_until_dropped_and_records_on_finish() {
    let stats = RevisionStats::new();
    let mut first = Measure::start(&stats);
    let mut second = Measure::start(&stats);
    // Routed but not yet taken by a backend (waiting in the queue): not in flight.
    assert_eq!(stats.in_flight(), 0);
    first.serving();
    second.serving();
    second.serving();
    assert_eq!(stats.in_flight(), 2);
    first.finish(StatusCode::CREATED, false);
    assert_eq!(stats.in_flight(), 1);
    // Dropped without finishing (the client went away before any answer): not counted.
    drop(second);
    assert_eq!(stats.in_flight(), 0);
    let totals = stats.totals();
    assert_eq!(totals.requests_by_class, [0, 1, 0, 0, 0]);
    assert_eq!(stats.snapshot(Duration::from_secs(60)).requests, 1);
}

#[test]
fn a_retargeted_measure_counts_for_the_new_revision_only() {
    let (old, new) = (RevisionStats::new(), RevisionStats::new());
    let mut measure = Measure::start(&old).retarget(&new);
    measure.serving();
    assert_eq!((old.in_flight(), new.in_flight()), (0, 1));
    measure.finish(StatusCode::OK, false);
    assert_eq!(old.totals().requests(), 0);
    assert_eq!(new.totals().requests_by_class, [0, 1, 0, 0, 0]);
    assert_eq!(new.in_flight(), 0);
}

#[test]
fn concurrent_recording_loses_nothing() {
    let stats = RevisionStats::new();
    std::thread::scope(|scope| {
        for thread in 0..4u64 {
            let stats = &stats;
            scope.spawn(move || {
                for i in 0..10_000u64 {
                    // All threads move through the same periods, rotating slots together.
                    let status = if i % 10 == thread { 500 } else { 200 };
                    stats.record_at(i / 100, status, false, Duration::from_micros(i));
                }
            });
        }
    });
    let totals = stats.totals();
    assert_eq!(totals.requests(), 40_000);
    assert_eq!(totals.errors, 4_000);
    assert_eq!(totals.latency_count(), 40_000);
    // The last 10 s (periods 9, seconds 90..99) hold 4 threads × 1 000 recordings.
    let last = stats.snapshot_at(Duration::from_secs(99), Duration::from_secs(10));
    assert_eq!(last.requests, 4_000);
    assert_eq!(last.errors, 400);
    // The one-second counters of seconds 96..=99 hold 4 × 100 each (no later second came to
    // take them over): 1 600 requests over the 4 s from 96 s to 100 s.
    assert_eq!(stats.recent_rps_at(Duration::from_secs(100)), 400.0);
}
