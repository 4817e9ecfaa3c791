//! Property tests of the spec parser against hostile input: random YAML-ish token soup,
//! arbitrary characters, and random mutations of a complete valid spec.
//!
//! For every input: `parse` (for the default, a declared and an undeclared environment)
//! never panics; every diagnostic points inside the text (its line exists, its column is at
//! most one past the end of that line, its byte range lies within the text on character
//! boundaries, and its offset is the byte offset of its line and column); and `render` never
//! panics and ends with its summary line. A valid result has a digest for every service.
//!
//! The runs are deterministic: 256 cases per property from a fixed seed. `PROPTEST_CASES` and
//! `PROPTEST_RNG_SEED` override both (e.g. `PROPTEST_CASES=100000` for a long soak).

use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngSeed};
use slipway_spec::{Diagnostic, parse_env, render};

/// A complete spec that uses every setting; the mutations start from it.
const VALID: &str = include_str!("fixtures/slipway.yaml");

/// 256 cases from a fixed seed, unless the environment asks for others.
fn config() -> ProptestConfig {
    let from_env = ProptestConfig::default();
    ProptestConfig {
        cases: if std::env::var_os("PROPTEST_CASES").is_some() {
            from_env.cases
        } else {
            256
        },
        rng_seed: if std::env::var_os("PROPTEST_RNG_SEED").is_some() {
            from_env.rng_seed
        } else {
            RngSeed::Fixed(0x5_11b_4a7)
        },
        // A failure prints its minimal input; nothing is written next to the sources.
        failure_persistence: None,
        ..from_env
    }
}

/// Pieces of `slipway.yaml` and of YAML syntax, valid and not, that token soup is made of.
const TOKENS: &[&str] = &[
    "app",
    "services",
    "web",
    "api",
    "run",
    "workdir",
    "env",
    "secrets",
    "port",
    "health",
    "ready",
    "live",
    "http",
    "tcp",
    "interval",
    "timeout",
    "failures",
    "startup_timeout",
    "scaling",
    "min",
    "max",
    "concurrency",
    "max_concurrency",
    "idle",
    "routes",
    "shutdown",
    "grace",
    "deploy",
    "strategy",
    "canary",
    "steps",
    "analysis",
    "max_error_rate",
    "max_p95",
    "min_requests",
    "on_failure",
    "keep_previous",
    "traffic",
    "sticky",
    "environments",
    "production",
    "host",
    ":",
    ": ",
    "- ",
    "-",
    "{",
    "}",
    "[",
    "]",
    ",",
    "\"",
    "'",
    "#",
    "&a",
    "*a",
    "<<",
    "!!str",
    "!!binary",
    "!tag",
    "|",
    ">",
    "?",
    "%YAML 1.2",
    "---",
    "...",
    "~",
    "null",
    "true",
    "no",
    "0",
    "-1",
    "1e400",
    "0x1f",
    "65536",
    "99999999999999999999",
    "1s",
    "5m",
    "300ms",
    "-3s",
    "5%",
    "150%",
    "auto",
    "/",
    "/api",
    "$PORT",
    "${X}",
    "é",
    "日本",
    "🚀",
    "\u{200b}",
    "\u{feff}",
    "\t",
    " ",
    "  ",
    "    ",
    "\n",
    "\r\n",
    "\r",
    "\\",
    "\0",
];

/// Token soup: up to 80 tokens joined without separators.
fn yamlish() -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(TOKENS), 0..80).prop_map(|t| t.concat())
}

/// Any characters at all, control characters and unpaired-looking code points included.
fn arbitrary_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(any::<char>(), 0..200).prop_map(|c| c.into_iter().collect())
}

/// One edit of a text; positions are taken modulo the text's length.
#[derive(Debug, Clone)]
enum Mutation {
    /// Removes up to `len` bytes at `at`.
    Delete { at: usize, len: usize },
    /// Inserts a token at `at`.
    Insert { at: usize, token: &'static str },
    /// Repeats the line `line`.
    DuplicateLine { line: usize },
    /// Swaps two lines.
    SwapLines { a: usize, b: usize },
    /// Adds or removes leading spaces on a line.
    Indent { line: usize, by: i8 },
    /// Cuts the text at `at`.
    Truncate { at: usize },
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), 1..40usize).prop_map(|(at, len)| Mutation::Delete { at, len }),
        (any::<usize>(), proptest::sample::select(TOKENS))
            .prop_map(|(at, token)| Mutation::Insert { at, token }),
        any::<usize>().prop_map(|line| Mutation::DuplicateLine { line }),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Mutation::SwapLines { a, b }),
        (any::<usize>(), -4..=4i8).prop_map(|(line, by)| Mutation::Indent { line, by }),
        any::<usize>().prop_map(|at| Mutation::Truncate { at }),
    ]
}

/// The largest character boundary of `text` at or before `at % (len + 1)`.
fn boundary(text: &str, at: usize) -> usize {
    let mut at = at % (text.len() + 1);
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn apply(text: &str, mutation: &Mutation) -> String {
    let mut lines: Vec<String> = text.split('\n').map(str::to_owned).collect();
    match *mutation {
        Mutation::Delete { at, len } => {
            let start = boundary(text, at);
            let end = boundary(text, (start + len).min(text.len()));
            format!("{}{}", &text[..start], &text[end..])
        }
        Mutation::Insert { at, token } => {
            let at = boundary(text, at);
            format!("{}{token}{}", &text[..at], &text[at..])
        }
        Mutation::DuplicateLine { line } => {
            let line = line % lines.len();
            lines.insert(line, lines[line].clone());
            lines.join("\n")
        }
        Mutation::SwapLines { a, b } => {
            let n = lines.len();
            lines.swap(a % n, b % n);
            lines.join("\n")
        }
        Mutation::Indent { line, by } => {
            let n = lines.len();
            let text = &mut lines[line % n];
            if by >= 0 {
                text.insert_str(0, &" ".repeat(by as usize));
            } else {
                let spaces = text.len() - text.trim_start_matches(' ').len();
                text.drain(..spaces.min(by.unsigned_abs() as usize));
            }
            lines.join("\n")
        }
        Mutation::Truncate { at } => text[..boundary(text, at)].to_owned(),
    }
}

/// The valid spec after one to four random edits.
fn mutated_spec() -> impl Strategy<Value = String> {
    proptest::collection::vec(mutation(), 1..5).prop_map(|edits| {
        edits
            .iter()
            .fold(VALID.to_owned(), |text, edit| apply(&text, edit))
    })
}

/// Checks one diagnostic's place against the text it was found in.
fn check_position(source: &str, d: &Diagnostic) -> Result<(), TestCaseError> {
    let lines: Vec<&str> = source.split('\n').collect();
    prop_assert!(
        (1..=lines.len()).contains(&d.line),
        "line {} outside 1..={}: {d:?}",
        d.line,
        lines.len()
    );
    let width = lines[d.line - 1].chars().count();
    prop_assert!(
        (1..=width + 1).contains(&d.column),
        "column {} outside 1..={} of line {}: {d:?}",
        d.column,
        width + 1,
        d.line
    );
    prop_assert!(
        d.offset <= source.len() && d.offset + d.len <= source.len(),
        "byte range {}..{} outside the text of {} bytes: {d:?}",
        d.offset,
        d.offset + d.len,
        source.len()
    );
    prop_assert!(
        source.is_char_boundary(d.offset) && source.is_char_boundary(d.offset + d.len),
        "byte range {}..{} splits a character: {d:?}",
        d.offset,
        d.offset + d.len
    );
    // Line 3, column 2 of "a\nb\ncd" is byte 2 + 2 + 1 = 5: the starts of the lines before
    // it (each line plus its newline) and the bytes of the characters before it.
    let line_start: usize = lines[..d.line - 1].iter().map(|l| l.len() + 1).sum();
    let in_line: usize = lines[d.line - 1]
        .chars()
        .take(d.column - 1)
        .map(char::len_utf8)
        .sum();
    prop_assert_eq!(
        d.offset,
        line_start + in_line,
        "offset does not match line {} column {}: {:?}",
        d.line,
        d.column,
        d
    );
    Ok(())
}

/// The text as generated: lone carriage returns and byte order marks included, since a
/// diagnostic's line and column are derived from its byte offset.
fn normalized(text: &str) -> String {
    text.to_owned()
}

/// Parses `source` (`normalized`) for the default, a declared and an undeclared
/// environment, and checks every diagnostic and its rendering.
fn check(source: &str) -> Result<(), TestCaseError> {
    let source = &normalized(source);
    for environment in ["development", "production", "nowhere"] {
        match parse_env(source, Path::new("/srv/shop"), environment) {
            Ok(spec) => {
                for service in spec.services.values() {
                    prop_assert_eq!(service.digest().len(), 64);
                }
            }
            Err(diagnostics) => {
                prop_assert!(!diagnostics.is_empty(), "an error without a diagnostic");
                for d in &diagnostics {
                    check_position(source, d)?;
                    prop_assert!(!d.message.is_empty(), "an empty message: {d:?}");
                }
                let rendered = render(&diagnostics, source, "fuzz.yaml");
                let noun = if diagnostics.len() == 1 {
                    "problem"
                } else {
                    "problems"
                };
                let summary = format!("{} {noun} found in fuzz.yaml", diagnostics.len());
                prop_assert!(rendered.ends_with(&summary), "{rendered}");
            }
        }
    }
    Ok(())
}

#[test]
fn the_valid_spec_parses_and_the_checks_can_fail() {
    check(VALID).expect("the fixture is valid");
    // The position check rejects a diagnostic that points past the text.
    let outside = Diagnostic {
        line: 2,
        column: 1,
        len: 0,
        offset: 99,
        message: "x".into(),
        hint: None,
    };
    assert!(check_position("a\n", &outside).is_err());
    let inside = Diagnostic {
        offset: 2,
        ..outside
    };
    assert!(check_position("a\n", &inside).is_ok());
    // A mutation really changes the text.
    let edited = apply(VALID, &Mutation::Truncate { at: 10 });
    assert_eq!(edited, &VALID[..10]);
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn yamlish_token_soup_never_panics_and_points_inside_the_text(source in yamlish()) {
        check(&source)?;
    }

    #[test]
    fn arbitrary_characters_never_panic_and_point_inside_the_text(source in arbitrary_text()) {
        check(&source)?;
    }

    #[test]
    fn mutations_of_a_valid_spec_never_panic_and_point_inside_the_text(source in mutated_spec()) {
        check(&source)?;
    }
}
