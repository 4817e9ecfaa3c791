//! One problem found in a `slipway.yaml`, with the place it points at.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A problem in a spec file: where it is, what is wrong, and how to fix it.
///
/// `line` and `column` are 1-based; `column` counts characters, as editors do.
/// `offset` and `len` are in bytes of the source text and give the range to underline.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Diagnostic {
    /// The 1-based line of the offending key or value.
    pub line: usize,
    /// The 1-based column (in characters) of the offending key or value.
    pub column: usize,
    /// How many bytes to underline, starting at `offset` (may be 0 for "here").
    pub len: usize,
    /// The byte offset of the offending key or value in the source text.
    pub offset: usize,
    /// What is wrong, in one sentence without a trailing period.
    pub message: String,
    /// What to do about it, if there is something specific to say.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// Creates a diagnostic at `pos` without a hint.
    pub(crate) fn at(pos: Pos, message: impl Into<String>) -> Self {
        Diagnostic {
            line: pos.line,
            column: pos.column,
            len: pos.len,
            offset: pos.offset,
            message: message.into(),
            hint: None,
        }
    }

    /// Adds a hint.
    pub(crate) fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.line, self.column, self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, " (help: {hint})")?;
        }
        Ok(())
    }
}

/// A place in the source text: 1-based line and character column, byte offset and byte length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Pos {
    pub line: usize,
    pub column: usize,
    pub offset: usize,
    pub len: usize,
}

impl Pos {
    /// The very start of the file, for problems with no better place.
    pub const START: Pos = Pos {
        line: 1,
        column: 1,
        offset: 0,
        len: 0,
    };
}

/// Converts between 1-based (line, character column) positions and byte offsets.
pub(crate) struct LineIndex<'a> {
    source: &'a str,
    /// The byte offset at which each line starts.
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub fn new(source: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(source.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { source, starts }
    }

    /// Returns the 1-based line and character column of a byte offset (clamped to the
    /// text). Lines end at `\n` only, as in the rendered snippet, so a diagnostic's
    /// position always agrees with its offset (a lone `\r` or a byte order mark does not
    /// shift it).
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.source.len());
        let line = self.starts.partition_point(|&start| start <= offset).max(1);
        let start = self.starts[line - 1];
        let column = self
            .source
            .get(start..offset)
            .map_or(offset - start, |text| text.chars().count())
            + 1;
        (line, column)
    }

    /// Returns the byte offset of a 1-based line and character column, clamped to the text.
    pub fn offset(&self, line: usize, column: usize) -> usize {
        let Some(&start) = self.starts.get(line.saturating_sub(1)) else {
            return self.source.len();
        };
        let rest = &self.source[start..];
        let line_text = rest.split('\n').next().unwrap_or("");
        let within = line_text
            .char_indices()
            .nth(column.saturating_sub(1))
            .map_or(line_text.len(), |(i, _)| i);
        start + within
    }
}
