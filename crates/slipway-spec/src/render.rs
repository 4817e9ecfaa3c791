//! Renders diagnostics the way rustc and cargo do: message, location, source line, help.
//!
//! Output is plain text (no ANSI colour), so it can be printed, logged, returned by the
//! API and compared in tests. It ends with a one-line summary.

use annotate_snippets::{AnnotationKind, Level, Renderer, Snippet};

use crate::diagnostic::Diagnostic;

/// Renders every diagnostic as `error: message`, ` --> file:line:col`, the source snippet
/// with the offending part underlined, and `= help: hint`, followed by
/// `N problems found in file`.
pub fn render(diagnostics: &[Diagnostic], source: &str, file_name: &str) -> String {
    let renderer = Renderer::plain();
    let mut out = String::new();
    for diagnostic in diagnostics {
        let span = clamp_span(source, diagnostic.offset, diagnostic.len);
        let snippet = Snippet::source(source)
            .path(file_name)
            .annotation(AnnotationKind::Primary.span(span));
        let mut group = Level::ERROR
            .primary_title(diagnostic.message.as_str())
            .element(snippet);
        if let Some(hint) = &diagnostic.hint {
            group = group.element(Level::HELP.message(hint.as_str()));
        }
        // One report per diagnostic: in a shared report, later groups would be rendered
        // as sub-notes of the first instead of as errors of their own.
        out.push_str(&renderer.render(&[group]));
        out.push_str("\n\n");
    }
    let count = diagnostics.len();
    let noun = if count == 1 { "problem" } else { "problems" };
    out.push_str(&format!("{count} {noun} found in {file_name}"));
    out
}

/// Keeps a byte range inside `source` and on character boundaries; an empty range at a
/// character is widened to that character so the caret has something to point at.
fn clamp_span(source: &str, offset: usize, len: usize) -> std::ops::Range<usize> {
    let mut start = offset.min(source.len());
    while !source.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = start.saturating_add(len).min(source.len());
    while !source.is_char_boundary(end) {
        end += 1;
    }
    if end == start
        && let Some(c) = source[start..].chars().next().filter(|c| *c != '\n')
    {
        end = start + c.len_utf8();
    }
    start..end
}
