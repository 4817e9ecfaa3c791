//! Rules for a service's `deploy:` section: the strategy, canary steps and analysis limits.
//!
//! The canary keys are checked whatever the strategy is: they are documented as ignored
//! by the other strategies, but a broken value is still a mistake worth reporting before
//! someone switches to `canary`.

use serde_json::{Map, Value};

use super::Rules;
use crate::diagnostic::Diagnostic;
use crate::percent::{self, PercentError};
use crate::structure::{closest, value_kind};
use crate::tree::display_path;

/// The values `deploy.strategy` accepts.
const STRATEGIES: [&str; 4] = ["blue-green", "canary", "rolling", "recreate"];

/// The values `deploy.on_failure` accepts.
const ON_FAILURE: [&str; 2] = ["rollback", "pause"];

impl Rules<'_> {
    pub(super) fn deploy(&mut self, pointer: &str, deploy: &Map<String, Value>) {
        if let Some(keep) = deploy.get("keep_previous") {
            self.duration(&format!("{pointer}/keep_previous"), keep, true);
        }
        if let Some(strategy) = deploy.get("strategy") {
            self.choice(
                &format!("{pointer}/strategy"),
                strategy,
                "strategy",
                &STRATEGIES,
            );
        }
        if let Some(on_failure) = deploy.get("on_failure") {
            self.choice(
                &format!("{pointer}/on_failure"),
                on_failure,
                "`on_failure` action",
                &ON_FAILURE,
            );
        }
        if let Some(Value::Array(steps)) = deploy.get("steps") {
            self.steps(&format!("{pointer}/steps"), steps);
        }
        if let Some(interval) = deploy.get("interval") {
            self.duration(&format!("{pointer}/interval"), interval, false);
        }
        if let Some(Value::Object(analysis)) = deploy.get("analysis") {
            if let Some(rate) = analysis.get("max_error_rate") {
                self.error_rate(&format!("{pointer}/analysis/max_error_rate"), rate);
            }
            if let Some(p95) = analysis.get("max_p95") {
                self.duration(&format!("{pointer}/analysis/max_p95"), p95, false);
            }
        }
    }

    /// Checks that `value` is one of `allowed`, suggesting the closest on a typo.
    fn choice(&mut self, pointer: &str, value: &Value, what: &str, allowed: &[&str]) {
        self.owned.insert(pointer.to_owned());
        let pos = self.tree.value_pos(pointer);
        let list = one_of(allowed);
        match value {
            Value::String(text) if allowed.contains(&text.as_str()) => {}
            Value::String(text) => {
                let known: Vec<String> = allowed.iter().map(|a| (*a).to_owned()).collect();
                let hint = match closest(text, &known) {
                    Some(suggestion) => format!("did you mean `{suggestion}`?"),
                    None => format!("use {list}"),
                };
                self.out
                    .push(Diagnostic::at(pos, format!("unknown {what} `{text}`")).hint(hint));
            }
            other => self.out.push(
                Diagnostic::at(
                    pos,
                    format!(
                        "`{}` must be {list}, not {}",
                        display_path(pointer),
                        value_kind(other)
                    ),
                )
                .hint("write one of them without quotes or brackets"),
            ),
        }
    }

    /// Checks canary steps: percents from 1 to 100, strictly increasing, ending at 100.
    /// An empty list is reported by the structural pass.
    fn steps(&mut self, pointer: &str, steps: &[Value]) {
        let mut percents = Vec::with_capacity(steps.len());
        for (i, step) in steps.iter().enumerate() {
            let item = format!("{pointer}/{i}");
            self.owned.insert(item.clone());
            match step.as_u64() {
                Some(percent @ 1..=100) => percents.push(percent),
                _ => {
                    let written = self
                        .tree
                        .scalar_text
                        .get(&item)
                        .cloned()
                        .or_else(|| step.as_str().map(str::to_owned))
                        .unwrap_or_else(|| step.to_string());
                    let hint = match written.trim().strip_suffix('%') {
                        Some(number) => format!("write the number without `%`: `{}`", number.trim()),
                        None => "each step is the percent of traffic on the new revision, a whole number such as `25`".to_owned(),
                    };
                    self.out.push(
                        Diagnostic::at(
                            self.tree.value_pos(&item),
                            format!("canary step `{written}` is not a percent from 1 to 100"),
                        )
                        .hint(hint),
                    );
                }
            }
        }
        if percents.len() != steps.len() {
            return;
        }
        let mut increasing = true;
        for (i, pair) in percents.windows(2).enumerate() {
            if pair[1] <= pair[0] {
                increasing = false;
                self.out.push(
                    Diagnostic::at(
                        self.tree.value_pos(&format!("{pointer}/{}", i + 1)),
                        format!(
                            "canary steps must increase, but {} comes after {}",
                            pair[1], pair[0]
                        ),
                    )
                    .hint("list each percent once, from smallest to largest, e.g. `[10, 50, 100]`"),
                );
            }
        }
        if let Some(&last) = percents.last()
            && last != 100
        {
            let hint = if increasing {
                let fixed: Vec<String> = percents
                    .iter()
                    .map(u64::to_string)
                    .chain(["100".to_owned()])
                    .collect();
                format!("add 100 at the end: `steps: [{}]`", fixed.join(", "))
            } else {
                "end the list with 100".to_owned()
            };
            self.out.push(
                Diagnostic::at(
                    self.tree
                        .value_pos(&format!("{pointer}/{}", percents.len() - 1)),
                    format!("the last canary step must be 100, not {last}"),
                )
                .hint(format!(
                    "a canary ends with all traffic on the new revision; {hint}"
                )),
            );
        }
    }

    /// Checks `analysis.max_error_rate`: a percentage such as `1%`, from 0% to 100%.
    fn error_rate(&mut self, pointer: &str, value: &Value) {
        self.owned.insert(pointer.to_owned());
        let pos = self.tree.value_pos(pointer);
        let written = match value {
            Value::String(text) => text.clone(),
            Value::Number(_) => self
                .tree
                .scalar_text
                .get(pointer)
                .cloned()
                .unwrap_or_else(|| value.to_string()),
            other => {
                self.out.push(
                    Diagnostic::at(
                        pos,
                        format!(
                            "`{}` must be a percentage such as `1%`, not {}",
                            display_path(pointer),
                            value_kind(other)
                        ),
                    )
                    .hint("write a number from 0 to 100 followed by `%`, e.g. `1%` or `0.5%`"),
                );
                return;
            }
        };
        let problem = match percent::parse(&written) {
            Ok(_) => return,
            Err(PercentError::MissingSign) => {
                let number = written.trim();
                let hint = match as_percent(number) {
                    Some(shifted) => format!(
                        "write `{number}%` for {number} percent, or `{shifted}%` if {number} is a fraction"
                    ),
                    None => format!("write `{number}%`"),
                };
                Diagnostic::at(
                    pos,
                    format!("bad error rate `{number}`: add a `%` sign, e.g. `1%`"),
                )
                .hint(hint)
            }
            Err(PercentError::OverHundred) => Diagnostic::at(
                pos,
                format!("bad error rate `{written}`: it cannot be more than 100%"),
            )
            .hint("a failure rate is from 0% to 100%, e.g. `1%`"),
            Err(PercentError::Malformed) => {
                Diagnostic::at(pos, format!("bad error rate `{written}`"))
                    .hint("write a number from 0 to 100 followed by `%`, e.g. `1%` or `0.5%`")
            }
        };
        self.out.push(problem);
    }
}

/// Lists choices for a message: "`a`, `b` or `c`" (preceded by "one of" for more than two).
fn one_of(allowed: &[&str]) -> String {
    let quoted: Vec<String> = allowed.iter().map(|a| format!("`{a}`")).collect();
    match quoted.split_last() {
        Some((last, rest)) if rest.len() > 1 => format!("one of {} or {last}", rest.join(", ")),
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => quoted.join(""),
    }
}

/// Rewrites a fraction below 1 written as `0.<digits>` as a percent, by moving the decimal
/// point two places right: `0.01` is `1`, `0.005` is `0.5`, `0.5` is `50`. Exact on the
/// text, so no floating point rounding shows up in the hint.
fn as_percent(fraction: &str) -> Option<String> {
    let digits = fraction.strip_prefix("0.")?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let padded = format!("{digits:0<2}");
    let (whole, rest) = padded.split_at(2);
    let whole = whole.trim_start_matches('0');
    let rest = rest.trim_end_matches('0');
    let whole = if whole.is_empty() { "0" } else { whole };
    if whole == "0" && rest.is_empty() {
        return None;
    }
    Some(if rest.is_empty() {
        whole.to_owned()
    } else {
        format!("{whole}.{rest}")
    })
}

#[cfg(test)]
mod tests;
