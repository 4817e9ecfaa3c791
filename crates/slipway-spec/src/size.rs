//! Byte sizes such as `10MiB`, `512KiB` or `1GB`, as written for `limits.body`.
//!
//! A unit is required, as for durations: a bare `10` could be bytes or megabytes. Binary
//! units (`KiB`, `MiB`, `GiB`, `TiB`, also written `Ki`, `Mi`, `Gi`, `Ti` as Kubernetes does)
//! are powers of 1024; decimal ones (`kB`, `MB`, `GB`, `TB`) powers of 1000; `B` is bytes.
//! Units are read without regard to case. The word `unlimited` means no limit.

/// The word that lifts a size limit.
pub(crate) const UNLIMITED: &str = "unlimited";

/// Why a size string was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SizeError {
    /// A number without a unit, e.g. `10`.
    MissingUnit(String),
    /// A unit that is not one of the known ones.
    UnknownUnit(String),
    /// Not `<digits><unit>`.
    Malformed,
    /// More than `u64::MAX` bytes.
    TooLarge,
}

/// The units, lower case, with their size in bytes.
const UNITS: [(&str, u64); 13] = [
    ("b", 1),
    ("kb", 1000),
    ("mb", 1000 * 1000),
    ("gb", 1000 * 1000 * 1000),
    ("tb", 1000 * 1000 * 1000 * 1000),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
    ("ki", 1 << 10),
    ("mi", 1 << 20),
    ("gi", 1 << 30),
    ("ti", 1 << 40),
];

/// Parses a size such as `10MiB` into bytes (`None` for `unlimited`). Whitespace around the
/// number and the unit is allowed.
///
/// Worked example: `"10MiB"` is 10 × 1,048,576 = 10,485,760 bytes.
pub(crate) fn parse(text: &str) -> Result<Option<u64>, SizeError> {
    let trimmed = text.trim();
    if trimmed.eq_ignore_ascii_case(UNLIMITED) {
        return Ok(None);
    }
    let digits = trimmed.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = trimmed.split_at(digits);
    let unit = unit.trim();
    if number.is_empty() {
        return Err(SizeError::Malformed);
    }
    if unit.is_empty() {
        return Err(SizeError::MissingUnit(number.to_owned()));
    }
    if !unit.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(SizeError::Malformed);
    }
    let lower = unit.to_ascii_lowercase();
    let Some(&(_, scale)) = UNITS.iter().find(|(name, _)| *name == lower) else {
        return Err(SizeError::UnknownUnit(unit.to_owned()));
    };
    let number: u64 = number.parse().map_err(|_| SizeError::TooLarge)?;
    number
        .checked_mul(scale)
        .map(Some)
        .ok_or(SizeError::TooLarge)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_and_decimal_units() {
        assert_eq!(parse("10MiB"), Ok(Some(10 << 20)));
        assert_eq!(parse("10Mi"), Ok(Some(10 << 20)));
        assert_eq!(parse(" 512 kib "), Ok(Some(512 << 10)));
        assert_eq!(parse("1GB"), Ok(Some(1_000_000_000)));
        assert_eq!(parse("1kB"), Ok(Some(1000)));
        assert_eq!(parse("0B"), Ok(Some(0)));
        assert_eq!(parse("2TiB"), Ok(Some(2 << 40)));
        assert_eq!(parse("unlimited"), Ok(None));
        assert_eq!(parse("Unlimited"), Ok(None));
    }

    #[test]
    fn bad_sizes_say_why() {
        assert_eq!(parse("10"), Err(SizeError::MissingUnit("10".into())));
        assert_eq!(parse("10 bits"), Err(SizeError::UnknownUnit("bits".into())));
        assert_eq!(parse("MiB"), Err(SizeError::Malformed));
        assert_eq!(parse("1.5MiB"), Err(SizeError::Malformed));
        assert_eq!(parse("-1MiB"), Err(SizeError::Malformed));
        assert_eq!(parse(""), Err(SizeError::Malformed));
        assert_eq!(parse("20000000TiB"), Err(SizeError::TooLarge));
        assert_eq!(parse("99999999999999999999999B"), Err(SizeError::TooLarge));
    }
}
