//! Resource quantities in Kubernetes notation: cpu as cores (`0.5`, `2`) or millicores
//! (`250m`), memory as bytes with a binary (`Ki`, `Mi`, `Gi`, `Ti`) or decimal (`k`, `M`,
//! `G`, `T`) suffix, or none (`134217728`).
//!
//! Both are kept as integers: cpu in millicores, memory in bytes. A value that would need a
//! finer unit (`0.0005` cores, `1.5` bytes) is rejected rather than rounded, as Kubernetes
//! does for cpu.

/// Why a quantity was rejected; `Display` gives the hint to show the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum QuantityError {
    /// Not a number with an optional suffix.
    Malformed,
    /// A suffix that is not one of the allowed ones.
    UnknownSuffix(String),
    /// Finer than the smallest unit (a millicore, a byte).
    TooFine,
    /// Zero: a limit of nothing would stop the instance from ever running.
    Zero,
    /// Too large to represent.
    TooLarge,
}

/// Splits `text` into its number and its suffix: `512Mi` -> ("512", "Mi").
fn split(text: &str) -> Result<(&str, &str), QuantityError> {
    let text = text.trim();
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(end);
    if number.is_empty() || number == "." || number.matches('.').count() > 1 {
        return Err(QuantityError::Malformed);
    }
    Ok((number, suffix))
}

/// `number * scale` exactly, where `number` is decimal text; `None` if the product has a
/// fraction or overflows.
fn scaled(number: &str, scale: u128) -> Result<u128, QuantityError> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = format!("{whole}{fraction}");
    let mantissa: u128 = digits.parse().map_err(|_| QuantityError::TooLarge)?;
    let divisor = 10u128
        .checked_pow(fraction.len() as u32)
        .ok_or(QuantityError::TooFine)?;
    let product = mantissa.checked_mul(scale).ok_or(QuantityError::TooLarge)?;
    if product % divisor != 0 {
        return Err(QuantityError::TooFine);
    }
    Ok(product / divisor)
}

/// Parses a cpu quantity into millicores: `250m` -> 250, `0.5` -> 500, `2` -> 2000.
pub(crate) fn parse_cpu(text: &str) -> Result<u32, QuantityError> {
    let (number, suffix) = split(text)?;
    let scale = match suffix {
        "" => 1000,
        "m" => 1,
        other => return Err(QuantityError::UnknownSuffix(other.to_owned())),
    };
    let millis = scaled(number, scale)?;
    if millis == 0 {
        return Err(QuantityError::Zero);
    }
    u32::try_from(millis).map_err(|_| QuantityError::TooLarge)
}

/// Parses a memory quantity into bytes: `512Mi` -> 536870912, `1G` -> 1000000000.
pub(crate) fn parse_memory(text: &str) -> Result<u64, QuantityError> {
    let (number, suffix) = split(text)?;
    let scale: u128 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        other => return Err(QuantityError::UnknownSuffix(other.to_owned())),
    };
    let bytes = scaled(number, scale)?;
    if bytes == 0 {
        return Err(QuantityError::Zero);
    }
    u64::try_from(bytes).map_err(|_| QuantityError::TooLarge)
}

/// Shows millicores the way the spec writes them: 500 -> `500m`, 2000 -> `2`.
pub fn show_cpu(millis: u32) -> String {
    if millis.is_multiple_of(1000) {
        format!("{}", millis / 1000)
    } else {
        format!("{millis}m")
    }
}

/// Shows bytes in the largest binary unit that divides them: 67108864 -> `64Mi`.
pub fn show_memory(bytes: u64) -> String {
    for (suffix, shift) in [("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{suffix}", bytes >> shift);
        }
    }
    bytes.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_in_cores_or_millicores() {
        assert_eq!(parse_cpu("250m"), Ok(250));
        assert_eq!(parse_cpu("0.5"), Ok(500));
        assert_eq!(parse_cpu("2"), Ok(2000));
        assert_eq!(parse_cpu("1.25"), Ok(1250));
        assert_eq!(parse_cpu(" 100m "), Ok(100));
        assert_eq!(parse_cpu("0.0005"), Err(QuantityError::TooFine));
        assert_eq!(parse_cpu("1.5m"), Err(QuantityError::TooFine));
        assert_eq!(parse_cpu("0"), Err(QuantityError::Zero));
        assert_eq!(parse_cpu("0m"), Err(QuantityError::Zero));
        assert_eq!(
            parse_cpu("2cores"),
            Err(QuantityError::UnknownSuffix("cores".into()))
        );
        assert_eq!(parse_cpu("m"), Err(QuantityError::Malformed));
        assert_eq!(parse_cpu("1.2.3"), Err(QuantityError::Malformed));
        assert_eq!(parse_cpu("99999999"), Err(QuantityError::TooLarge));
    }

    #[test]
    fn memory_with_binary_decimal_or_no_suffix() {
        assert_eq!(parse_memory("512Mi"), Ok(512 << 20));
        assert_eq!(parse_memory("1Gi"), Ok(1 << 30));
        assert_eq!(parse_memory("1.5Gi"), Ok(3 << 29));
        assert_eq!(parse_memory("128M"), Ok(128_000_000));
        assert_eq!(parse_memory("64Ki"), Ok(65_536));
        assert_eq!(parse_memory("134217728"), Ok(134_217_728));
        assert_eq!(
            parse_memory("512MB"),
            Err(QuantityError::UnknownSuffix("MB".into()))
        );
        assert_eq!(
            parse_memory("1mi"),
            Err(QuantityError::UnknownSuffix("mi".into()))
        );
        assert_eq!(parse_memory("0.5"), Err(QuantityError::TooFine));
        assert_eq!(parse_memory("0Mi"), Err(QuantityError::Zero));
        assert_eq!(parse_memory("Mi"), Err(QuantityError::Malformed));
    }

    #[test]
    fn quantities_are_shown_as_the_spec_writes_them() {
        assert_eq!(show_cpu(500), "500m");
        assert_eq!(show_cpu(2000), "2");
        assert_eq!(show_memory(64 << 20), "64Mi");
        assert_eq!(show_memory(3 << 29), "1536Mi");
        assert_eq!(show_memory(1 << 30), "1Gi");
        assert_eq!(show_memory(1000), "1000");
    }
}
