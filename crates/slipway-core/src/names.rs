//! Names of apps, environments and services: one rule, checked in one place.
//!
//! A name is a DNS label of at most [`MAX_NAME`] characters — lowercase letters, digits and
//! `-`, not at either end — because it becomes part of host names
//! (`<service>.<environment>.<app>.localhost`, whose labels may have 63 characters, so the
//! spec keeps room for a tag prefix), of file paths under the data directory and of API
//! paths. The spec reports a bad name with its position; the API and the CLI refuse one
//! before it can reach a path.

/// The longest name allowed.
pub const MAX_NAME: usize = 40;

/// The rule as a JSON Schema / regex pattern (for the spec's schema and editors).
pub const NAME_PATTERN: &str = "^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$";

/// The rule in words, for messages.
pub const NAME_RULE: &str =
    "use lowercase letters, digits and `-` (not at either end), at most 40 characters";

/// Whether `name` follows the rule.
pub fn is_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let edge_ok = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    (1..=MAX_NAME).contains(&bytes.len())
        && bytes.first().is_some_and(edge_ok)
        && bytes.last().is_some_and(edge_ok)
        && bytes.iter().all(|b| edge_ok(b) || *b == b'-')
}

/// The rule, with a corrected suggestion when one can be made (`My_App` → `my-app`).
pub fn name_hint(name: &str) -> String {
    let suggestion: String = name
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect::<String>()
        .trim_matches('-')
        .chars()
        .take(MAX_NAME)
        .collect();
    if is_name(&suggestion) && suggestion != name {
        format!("{NAME_RULE}, e.g. `{suggestion}`")
    } else {
        NAME_RULE.to_owned()
    }
}

/// `Err` with a one-line message when `name` (an app, environment or service: `kind`)
/// breaks the rule.
pub fn check_name(kind: &str, name: &str) -> Result<(), String> {
    if is_name(name) {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid {kind} name: {}",
            name_hint(name)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule() {
        for ok in ["clinic", "a", "web-2", "9", &"a".repeat(40)] {
            assert!(is_name(ok), "{ok}");
        }
        for bad in ["", "-web", "web-", "Web", "my_app", "a.b", &"a".repeat(41)] {
            assert!(!is_name(bad), "{bad}");
        }
    }

    #[test]
    fn messages_say_the_rule_and_suggest_a_fix() {
        assert_eq!(
            check_name("app", "My_App").unwrap_err(),
            "`My_App` is not a valid app name: use lowercase letters, digits and `-` (not at either end), at most 40 characters, e.g. `my-app`"
        );
        assert!(check_name("service", "web").is_ok());
    }

    #[test]
    fn the_pattern_says_the_same_as_the_function() {
        // A small check of the regex by hand: lengths 1, 40 and 41, and the edges.
        let inner = NAME_PATTERN
            .strip_prefix("^[a-z0-9]([a-z0-9-]{0,")
            .and_then(|r| r.strip_suffix("}[a-z0-9])?$"))
            .unwrap();
        assert_eq!(inner.parse::<usize>().unwrap() + 2, MAX_NAME);
    }
}
