//! Tests of the backend's paths and of `READY_DELAY_MS` parsing.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::StatusCode;

use super::{Reply, ready_delay, route};

const VERSION: Bytes = Bytes::from_static(b"7");
const INSTANCE: Bytes = Bytes::from_static(b"echo-r7-ab\n");

/// The status and body of an answer given at once; panics on a delayed one.
fn now(path: &str) -> (StatusCode, Bytes) {
    let Reply::Now(response) = route(path, &VERSION, &INSTANCE) else {
        panic!("{path} should be answered at once");
    };
    let status = response.status();
    let body = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(response.into_body().collect())
        .unwrap()
        .to_bytes();
    (status, body)
}

#[test]
fn other_paths_get_the_fixed_13_byte_body() {
    assert_eq!(
        now("/"),
        (StatusCode::OK, Bytes::from_static(b"hello, world\n"))
    );
    assert_eq!(now("/ready").1.len(), 13);
    assert_eq!(now("/versions").1.len(), 13);
}

#[test]
fn version_answers_the_revision() {
    assert_eq!(now("/version"), (StatusCode::OK, VERSION));
}

#[test]
fn sleep_answers_with_the_instance_name_after_the_wait() {
    match route("/sleep/20", &VERSION, &INSTANCE) {
        Reply::After(wait, body) => {
            assert_eq!(wait, Duration::from_millis(20));
            assert_eq!(body, INSTANCE);
        }
        other => panic!("expected a delayed answer, got {other:?}"),
    }
}

#[test]
fn sleep_is_capped_at_ten_minutes() {
    match route("/sleep/99999999999", &VERSION, &INSTANCE) {
        Reply::After(wait, _) => assert_eq!(wait, Duration::from_secs(600)),
        other => panic!("expected a delayed answer, got {other:?}"),
    }
}

#[test]
fn sleep_with_a_bad_number_is_a_400() {
    assert_eq!(now("/sleep/abc").0, StatusCode::BAD_REQUEST);
    assert_eq!(now("/sleep/").0, StatusCode::BAD_REQUEST);
    assert_eq!(now("/sleep/-5").0, StatusCode::BAD_REQUEST);
}

#[test]
fn ready_delay_reads_whole_milliseconds() {
    assert_eq!(ready_delay(None), Ok(Duration::ZERO));
    assert_eq!(ready_delay(Some("")), Ok(Duration::ZERO));
    assert_eq!(ready_delay(Some("50")), Ok(Duration::from_millis(50)));
    let err = ready_delay(Some("50ms")).unwrap_err();
    assert!(
        err.contains("READY_DELAY_MS") && err.contains("\"50ms\""),
        "{err}"
    );
}
