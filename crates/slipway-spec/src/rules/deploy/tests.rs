//! Unit tests of the helpers behind the deploy rules' messages.

use super::*;

#[test]
fn fractions_become_percents_exactly() {
    assert_eq!(as_percent("0.01").as_deref(), Some("1"));
    assert_eq!(as_percent("0.005").as_deref(), Some("0.5"));
    assert_eq!(as_percent("0.5").as_deref(), Some("50"));
    assert_eq!(as_percent("0.07").as_deref(), Some("7"));
    assert_eq!(as_percent("0.125").as_deref(), Some("12.5"));
    assert_eq!(as_percent("0.0").as_deref(), None);
    assert_eq!(as_percent("1").as_deref(), None);
    assert_eq!(as_percent("1.5").as_deref(), None);
    assert_eq!(as_percent("0.").as_deref(), None);
}

#[test]
fn choices_read_as_a_sentence() {
    assert_eq!(
        one_of(&STRATEGIES),
        "one of `blue-green`, `canary`, `rolling` or `recreate`"
    );
    assert_eq!(one_of(&ON_FAILURE), "`rollback` or `pause`");
    assert_eq!(one_of(&["x"]), "`x`");
}
