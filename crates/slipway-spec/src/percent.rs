//! Percentage strings such as `1%` and `0.5%`, as written for `deploy.analysis.max_error_rate`.
//!
//! The `%` sign is required: a bare `1` could mean 1 % or 100 % (a fraction of 1), and
//! guessing wrong would either never or always roll a canary back. The value is returned as
//! a fraction, so `0.5%` becomes 0.005.

/// Why a percentage string was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PercentError {
    /// A number without the `%` sign, e.g. `1`.
    MissingSign,
    /// Not `<digits>[.<digits>]%`.
    Malformed,
    /// More than 100 %.
    OverHundred,
}

/// Parses `N%` or `N.N%` (0 to 100, surrounding whitespace allowed) into a fraction.
///
/// Worked example: `"2.5%"` is 2.5 / 100 = 0.025.
pub(crate) fn parse(text: &str) -> Result<f64, PercentError> {
    let trimmed = text.trim();
    let is_number = |s: &str| {
        let (whole, fraction) = s.split_once('.').unwrap_or((s, "0"));
        !whole.is_empty()
            && !fraction.is_empty()
            && whole.bytes().all(|b| b.is_ascii_digit())
            && fraction.bytes().all(|b| b.is_ascii_digit())
    };
    let Some(number) = trimmed.strip_suffix('%').map(str::trim_end) else {
        return Err(if is_number(trimmed) {
            PercentError::MissingSign
        } else {
            PercentError::Malformed
        });
    };
    if !is_number(number) {
        return Err(PercentError::Malformed);
    }
    // Digits with at most one dot always parse; a huge digit string becomes infinity,
    // which the range check below rejects.
    let percent: f64 = number.parse().map_err(|_| PercentError::Malformed)?;
    if percent > 100.0 {
        return Err(PercentError::OverHundred);
    }
    Ok(percent / 100.0)
}

#[cfg(test)]
mod tests;
