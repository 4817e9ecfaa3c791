//! Unit tests of percentage parsing.

use super::*;

#[test]
fn accepts_percentages_from_0_to_100() {
    assert_eq!(parse("1%"), Ok(0.01));
    assert_eq!(parse("0.5%"), Ok(0.005));
    assert_eq!(parse(" 2.5 % "), Ok(0.025));
    assert_eq!(parse("0%"), Ok(0.0));
    assert_eq!(parse("100%"), Ok(1.0));
    assert_eq!(parse("100.0%"), Ok(1.0));
}

#[test]
fn rejects_everything_else() {
    assert_eq!(parse("1"), Err(PercentError::MissingSign));
    assert_eq!(parse("0.01"), Err(PercentError::MissingSign));
    assert_eq!(parse("100.5%"), Err(PercentError::OverHundred));
    assert_eq!(parse("1000%"), Err(PercentError::OverHundred));
    assert_eq!(
        parse(&format!("{}%", "9".repeat(400))),
        Err(PercentError::OverHundred)
    );
    assert_eq!(parse("-1%"), Err(PercentError::Malformed));
    assert_eq!(parse("%"), Err(PercentError::Malformed));
    assert_eq!(parse("1.%"), Err(PercentError::Malformed));
    assert_eq!(parse(".5%"), Err(PercentError::Malformed));
    assert_eq!(parse("1e2%"), Err(PercentError::Malformed));
    assert_eq!(parse("one%"), Err(PercentError::Malformed));
    assert_eq!(parse("1%%"), Err(PercentError::Malformed));
    assert_eq!(parse(""), Err(PercentError::Malformed));
}
