//! Helpers shared by the validation tests: parse expecting problems, and read them back.

#![allow(
    dead_code,
    reason = "each test file uses a different subset of the helpers"
)]

use std::path::Path;

use slipway_spec::{Diagnostic, Spec, parse_env, render};

/// Parses `source` for `environment`, expecting it to be valid.
pub fn valid_env(source: &str, environment: &str) -> Spec {
    match parse_env(source, Path::new("/srv/shop"), environment) {
        Ok(spec) => spec,
        Err(diagnostics) => panic!("{}", render(&diagnostics, source, "test.yaml")),
    }
}

/// Parses `source` for `development`, expecting it to be valid.
pub fn valid(source: &str) -> Spec {
    valid_env(source, "development")
}

/// Parses `source` for `environment`, expecting it to be invalid, and returns its diagnostics.
pub fn problems_env(source: &str, environment: &str) -> Vec<Diagnostic> {
    match parse_env(source, Path::new("/srv/shop"), environment) {
        Ok(spec) => panic!("expected problems, got a valid spec: {spec:?}"),
        Err(diagnostics) => diagnostics,
    }
}

/// Parses `source` for `development`, expecting it to be invalid.
pub fn problems(source: &str) -> Vec<Diagnostic> {
    problems_env(source, "development")
}

/// The (line, column, message) of every diagnostic.
pub fn positions(source: &str) -> Vec<(usize, usize, String)> {
    problems(source)
        .into_iter()
        .map(|d| (d.line, d.column, d.message))
        .collect()
}

/// Asserts that `source` has exactly one problem, at `line:column`, and returns it.
pub fn single(source: &str, line: usize, column: usize) -> Diagnostic {
    let diagnostics = problems(source);
    assert_eq!(
        diagnostics.len(),
        1,
        "expected one problem, got {diagnostics:#?}"
    );
    let diagnostic = diagnostics.into_iter().next().expect("one diagnostic");
    assert_eq!(
        (diagnostic.line, diagnostic.column),
        (line, column),
        "wrong position for {diagnostic:?}"
    );
    diagnostic
}

/// The hint of a diagnostic, or "" without one.
pub fn hint(diagnostic: &Diagnostic) -> &str {
    diagnostic.hint.as_deref().unwrap_or("")
}

/// A one-service spec (`web`, `run: [x]`) with `extra` lines appended under the service,
/// each already indented by four spaces. The first extra line is line 5.
pub fn service(extra: &str) -> String {
    format!("app: a\nservices:\n  web:\n    run: [x]\n{extra}")
}
