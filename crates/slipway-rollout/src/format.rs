//! Number formatting for the messages a rollout shows to people: percents, milliseconds, spans.
//!
//! The messages quote limits and measurements side by side ("error rate 4.2 % (21/500) > limit
//! 1 % (baseline 0.1 %)"), so each helper prints the shortest exact-enough form and never
//! rounds a non-zero value down to a misleading "0".

use std::time::Duration;

/// A fraction as a percent number without the sign: 0.042 -> "4.2", 0.01 -> "1",
/// 1/3 -> "33.33".
///
/// Two decimals are enough for error rates, but a small non-zero fraction gets more digits
/// (up to six) rather than showing as "0": 1/100000 -> "0.001".
pub(crate) fn percent(fraction: f64) -> String {
    let value = fraction * 100.0;
    if !value.is_finite() {
        return format!("{value}");
    }
    let mut decimals = 2;
    loop {
        let text = trim_zeros(format!("{value:.decimals$}"));
        if text != "0" || value == 0.0 || decimals >= 6 {
            return text;
        }
        decimals += 1;
    }
}

/// A duration in milliseconds with up to three decimals: 412 ms -> "412", 300.4 ms -> "300.4",
/// 250 µs -> "0.25".
///
/// Whole microseconds are kept so that a p95 just over its limit never prints as equal to it.
pub(crate) fn millis(d: Duration) -> String {
    let micros = d.as_micros();
    let (whole, frac) = (micros / 1000, micros % 1000);
    if frac == 0 {
        whole.to_string()
    } else {
        trim_zeros(format!("{whole}.{frac:03}"))
    }
}

/// A span of time the way `slipway.yaml` writes it: 500 ms -> "500ms", 30 s -> "30s",
/// 90 s -> "1m30s", 1.5 s -> "1.5s", 3725 s -> "1h2m5s".
pub(crate) fn span(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (secs, rest_ms) = (ms / 1000, ms % 1000);
    let (hours, minutes, seconds) = (secs / 3600, secs / 60 % 60, secs % 60);
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    if rest_ms > 0 {
        out.push_str(&trim_zeros(format!("{seconds}.{rest_ms:03}")));
        out.push('s');
    } else if seconds > 0 {
        out.push_str(&format!("{seconds}s"));
    }
    out
}

/// Drops trailing zeros after a decimal point, and the point itself: "4.20" -> "4.2",
/// "1.00" -> "1". A number without a point is returned as it is ("100").
fn trim_zeros(text: String) -> String {
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}
