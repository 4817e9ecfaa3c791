//! The key an app is known by in one environment: what the store, the API paths, the log
//! and release folders, the metrics and the events name it by.
//!
//! An app in `development` is keyed by its name alone (`clinic`); in any other environment
//! by `<app>@<environment>` (`clinic@staging`). Both parts are names (see
//! [`crate::names`]), which cannot hold an `@`, so a key splits back unambiguously. An
//! [`AppKey`] is made once, where a name enters (the spec, an API path, a CLI flag), and
//! everything past that point takes it as it is.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use crate::names::check_name;

/// The environment an app runs in unless another is named, and the one that always exists.
pub const DEVELOPMENT: &str = "development";

/// An app in one environment: both valid names, and the key they make.
///
/// Compared, ordered and hashed as its string form, so a map keyed by `AppKey` iterates in
/// the order of the keys' text, as one keyed by the strings did.
#[derive(Clone)]
pub struct AppKey {
    /// The string form (`clinic` or `clinic@staging`).
    key: String,
    /// Where the app's name ends in `key` (at `@`, or at the end in `development`).
    app_len: usize,
}

impl AppKey {
    /// The key of `app` in `environment`.
    ///
    /// # Errors
    /// The one-line message of [`check_name`] for the first of the two that is not a valid
    /// name.
    pub fn new(app: &str, environment: &str) -> Result<AppKey, String> {
        check_name("app", app)?;
        check_name("environment", environment)?;
        let key = if environment == DEVELOPMENT {
            app.to_owned()
        } else {
            format!("{app}@{environment}")
        };
        Ok(AppKey {
            key,
            app_len: app.len(),
        })
    }

    /// Reads a key in its string form (`clinic`, `clinic@staging`), as the store holds it
    /// and API paths carry it.
    ///
    /// # Errors
    /// A part that is not a valid name (the message of [`check_name`]), or `<app>@development`:
    /// an app in `development` is keyed by its name alone, and only one text may name a key.
    pub fn parse(key: &str) -> Result<AppKey, String> {
        let Some((app, environment)) = key.split_once('@') else {
            return AppKey::new(key, DEVELOPMENT);
        };
        let parsed = AppKey::new(app, environment)?;
        if parsed.is_development() {
            return Err(format!(
                "`{key}` is not an app key: an app in `{DEVELOPMENT}` is keyed by its name alone, `{app}`"
            ));
        }
        Ok(parsed)
    }

    /// The app's name.
    pub fn app(&self) -> &str {
        &self.key[..self.app_len]
    }

    /// The environment's name.
    pub fn environment(&self) -> &str {
        self.key.get(self.app_len + 1..).unwrap_or(DEVELOPMENT)
    }

    /// Whether the environment is `development`.
    pub fn is_development(&self) -> bool {
        self.app_len == self.key.len()
    }

    /// The string form, as [`fmt::Display`] writes it.
    pub fn as_str(&self) -> &str {
        &self.key
    }
}

impl fmt::Display for AppKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)
    }
}

impl fmt::Debug for AppKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.key, f)
    }
}

impl FromStr for AppKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AppKey::parse(s)
    }
}

impl AsRef<str> for AppKey {
    fn as_ref(&self) -> &str {
        &self.key
    }
}

impl Borrow<str> for AppKey {
    fn borrow(&self) -> &str {
        &self.key
    }
}

// The string form decides equality, order and hash (`app_len` follows from it), as
// `Borrow<str>` requires.

impl PartialEq for AppKey {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}

impl Eq for AppKey {}

impl PartialOrd for AppKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for AppKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key.cmp(&other.key)
    }
}

impl Hash for AppKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key.hash(state);
    }
}

impl PartialEq<str> for AppKey {
    fn eq(&self, other: &str) -> bool {
        self.key == other
    }
}

impl PartialEq<&str> for AppKey {
    fn eq(&self, other: &&str) -> bool {
        self.key == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn development_is_keyed_by_the_name_alone() {
        let key = AppKey::new("clinic", DEVELOPMENT).unwrap();
        assert_eq!(key.to_string(), "clinic");
        assert_eq!(key.as_str(), "clinic");
        assert_eq!((key.app(), key.environment()), ("clinic", DEVELOPMENT));
        assert!(key.is_development());
    }

    #[test]
    fn other_environments_follow_an_at() {
        let key = AppKey::new("clinic", "staging").unwrap();
        assert_eq!(key.to_string(), "clinic@staging");
        assert_eq!((key.app(), key.environment()), ("clinic", "staging"));
        assert!(!key.is_development());
    }

    #[test]
    fn the_string_form_reads_back_as_the_same_key() {
        for (app, environment) in [
            ("clinic", DEVELOPMENT),
            ("clinic", "staging"),
            ("a", "b"),
            ("web-2", "prod-eu-1"),
        ] {
            let key = AppKey::new(app, environment).unwrap();
            let back = AppKey::parse(key.as_str()).unwrap();
            assert_eq!(back, key);
            assert_eq!((back.app(), back.environment()), (app, environment));
            assert_eq!(back.as_str().parse::<AppKey>().unwrap(), key);
        }
    }

    #[test]
    fn invalid_names_are_refused_with_the_name_rule() {
        assert_eq!(
            AppKey::new("My_App", "staging").unwrap_err(),
            check_name("app", "My_App").unwrap_err()
        );
        assert_eq!(
            AppKey::new("clinic", "Staging").unwrap_err(),
            check_name("environment", "Staging").unwrap_err()
        );
        // The app is checked first.
        assert!(
            AppKey::new("", "")
                .unwrap_err()
                .contains("not a valid app name")
        );
        for bad in [
            "",
            "Clinic",
            "-x",
            "@staging",
            "clinic@",
            "a@b@c",
            "clinic@Prod",
        ] {
            assert!(AppKey::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            AppKey::parse("a@b@c").unwrap_err(),
            check_name("environment", "b@c").unwrap_err()
        );
    }

    #[test]
    fn development_has_one_spelling() {
        assert_eq!(
            AppKey::parse("clinic@development").unwrap_err(),
            "`clinic@development` is not an app key: an app in `development` is keyed by its name alone, `clinic`"
        );
    }

    #[test]
    fn keys_compare_and_sort_as_their_text() {
        let mut keys: Vec<AppKey> = ["b", "a@x", "a", "a-b"]
            .into_iter()
            .map(|k| AppKey::parse(k).unwrap())
            .collect();
        keys.sort();
        let text: Vec<&str> = keys.iter().map(AppKey::as_str).collect();
        assert_eq!(text, ["a", "a-b", "a@x", "b"]);
        assert_eq!(keys[2], "a@x");
        let set: std::collections::HashSet<AppKey> = keys.into_iter().collect();
        assert!(set.contains("a@x"));
        assert_eq!(format!("{:?}", AppKey::parse("a@x").unwrap()), "\"a@x\"");
    }
}
