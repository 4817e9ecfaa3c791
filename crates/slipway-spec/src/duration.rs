//! Duration strings such as `500ms`, `1s`, `2m`, `1h30m` and `1.5s`.
//!
//! Every duration in `slipway.yaml` needs a unit; a bare `5` is rejected with a hint rather
//! than guessed. Durations are kept at millisecond precision, which is also how they are
//! stored (see `model::duration_ms`).

use std::time::Duration;

/// Why a duration string was rejected; `Display` gives the hint to show the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DurationError {
    /// A number without a unit, e.g. `5`.
    MissingUnit(String),
    /// Something that is not `<number><unit>...`.
    Malformed,
    /// A unit that is not one of ms, s, m, h, d.
    UnknownUnit(String),
    /// Units out of order or repeated, e.g. `30m1h`.
    UnitOrder,
    /// A value with a fraction of a millisecond, e.g. `1.5ms`.
    SubMillisecond,
    /// A value too large to represent.
    TooLarge,
}

/// The units a duration may use, largest first, with their length in milliseconds.
const UNITS: [(&str, u128); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

/// Parses a duration such as `1h30m` or `1.5s`. Whitespace between parts is allowed.
pub(crate) fn parse(text: &str) -> Result<Duration, DurationError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(DurationError::Malformed);
    }
    if trimmed.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(DurationError::MissingUnit(trimmed.to_owned()));
    }
    let mut rest = trimmed;
    let mut total_ms: u128 = 0;
    // The index in UNITS of the last unit seen; each next unit must be smaller.
    let mut last_unit: Option<usize> = None;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..number_len];
        rest = rest[number_len..].trim_start();
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = rest[unit_len..].trim_start();
        if number.is_empty() {
            return Err(DurationError::Malformed);
        }
        if unit.is_empty() {
            return Err(DurationError::MissingUnit(number.to_owned()));
        }
        let Some(unit_index) = UNITS.iter().position(|(name, _)| *name == unit) else {
            return Err(DurationError::UnknownUnit(unit.to_owned()));
        };
        if last_unit.is_some_and(|last| unit_index <= last) {
            return Err(DurationError::UnitOrder);
        }
        last_unit = Some(unit_index);
        total_ms = total_ms
            .checked_add(part_ms(number, UNITS[unit_index].1)?)
            .ok_or(DurationError::TooLarge)?;
    }
    let millis = u64::try_from(total_ms).map_err(|_| DurationError::TooLarge)?;
    Ok(Duration::from_millis(millis))
}

/// Converts `<number>` of a unit worth `unit_ms` milliseconds into whole milliseconds.
fn part_ms(number: &str, unit_ms: u128) -> Result<u128, DurationError> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || (number.contains('.') && fraction.is_empty()) || fraction.contains('.') {
        return Err(DurationError::Malformed);
    }
    // Digits only from here on, so parsing fails only on overflow.
    let whole: u128 = whole.parse().map_err(|_| DurationError::TooLarge)?;
    let mut total = whole.checked_mul(unit_ms).ok_or(DurationError::TooLarge)?;
    if !fraction.is_empty() {
        if fraction.len() > 18 {
            return Err(DurationError::SubMillisecond);
        }
        let numerator: u128 = fraction.parse().map_err(|_| DurationError::TooLarge)?;
        let denominator = 10u128.pow(u32::try_from(fraction.len()).unwrap_or(18));
        let scaled = numerator * unit_ms;
        if !scaled.is_multiple_of(denominator) {
            return Err(DurationError::SubMillisecond);
        }
        total = total
            .checked_add(scaled / denominator)
            .ok_or(DurationError::TooLarge)?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> Result<u64, DurationError> {
        parse(text).map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    #[test]
    fn accepts_the_documented_forms() {
        assert_eq!(ms("500ms"), Ok(500));
        assert_eq!(ms("1s"), Ok(1_000));
        assert_eq!(ms("2m"), Ok(120_000));
        assert_eq!(ms("1h30m"), Ok(5_400_000));
        assert_eq!(ms("1.5s"), Ok(1_500));
        assert_eq!(ms("1h 30m 5s"), Ok(5_405_000));
        assert_eq!(ms("1d"), Ok(86_400_000));
        assert_eq!(ms("0s"), Ok(0));
        assert_eq!(ms("0.25s"), Ok(250));
    }

    #[test]
    fn rejects_what_it_cannot_read_exactly() {
        assert_eq!(ms("5"), Err(DurationError::MissingUnit("5".into())));
        assert_eq!(ms("1h5"), Err(DurationError::MissingUnit("5".into())));
        assert_eq!(ms("5 sec"), Err(DurationError::UnknownUnit("sec".into())));
        assert_eq!(ms("30m1h"), Err(DurationError::UnitOrder));
        assert_eq!(ms("1s1s"), Err(DurationError::UnitOrder));
        assert_eq!(ms("1.5ms"), Err(DurationError::SubMillisecond));
        assert_eq!(ms("s"), Err(DurationError::Malformed));
        assert_eq!(ms(""), Err(DurationError::Malformed));
        assert_eq!(ms("1.s"), Err(DurationError::Malformed));
        assert_eq!(ms("-1s"), Err(DurationError::Malformed));
        assert_eq!(ms("99999999999999999999999d"), Err(DurationError::TooLarge));
    }
}
