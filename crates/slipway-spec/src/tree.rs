//! The first pass: YAML text to a JSON tree plus a map from JSON pointers to source positions.
//!
//! The file is deserialized once into a generic spanned tree ([`Raw`]) through serde-saphyr,
//! so scalars keep their YAML 1.2 types and every key and value keeps its line and column.
//! The tree is then converted to a [`serde_json::Value`] (what the schema validator checks),
//! recording where each JSON pointer came from, so any later error about `/services/api/port`
//! can point at the exact place in the file. Duplicate keys are reported here.

use std::collections::HashMap;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use serde_saphyr::{DuplicateKeyPolicy, Location, MessageFormatter, Spanned};

use crate::diagnostic::{Diagnostic, LineIndex, Pos};

/// A YAML node of any shape, with spans on every key and value.
enum Raw {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Raw>>),
    Map(Vec<(Spanned<String>, Spanned<Raw>)>),
}

impl<'de> Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Raw, D::Error> {
        deserializer.deserialize_any(RawVisitor)
    }
}

/// Builds a [`Raw`] from whatever the YAML deserializer finds.
struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Raw, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Raw, E> {
        Ok(Raw::UInt(v))
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<Raw, E> {
        // Integers beyond 64 bits cannot be valid anywhere in a spec; keep them as text
        // so the schema pass reports a wrong type instead of the parser failing.
        Ok(Raw::Str(v.to_string()))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_string()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Raw, E> {
        Ok(Raw::Str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Raw::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<Spanned<String>>()? {
            entries.push((key, map.next_value()?));
        }
        Ok(Raw::Map(entries))
    }
}

/// The parsed file as JSON, with the source position of every key and value.
pub(crate) struct Tree {
    /// The document as a JSON value.
    pub json: Value,
    /// JSON pointer -> position of the value at that pointer.
    pub values: HashMap<String, Pos>,
    /// JSON pointer -> position of the mapping key that introduces the value at that pointer.
    pub keys: HashMap<String, Pos>,
    /// JSON pointer -> the source text of a plain non-string scalar (`yes`, `1.50`, `0x1F`),
    /// so values such as environment variables can be taken exactly as written.
    pub scalar_text: HashMap<String, String>,
}

impl Tree {
    /// The position of the value at `pointer`, or the start of the file if unknown.
    pub fn value_pos(&self, pointer: &str) -> Pos {
        self.values.get(pointer).copied().unwrap_or(Pos::START)
    }

    /// The position of the key naming `pointer`, falling back to the value's position.
    pub fn key_pos(&self, pointer: &str) -> Pos {
        self.keys
            .get(pointer)
            .copied()
            .unwrap_or_else(|| self.value_pos(pointer))
    }
}

/// Parses YAML text into a [`Tree`].
///
/// A YAML syntax error stops here and is returned as the single diagnostic. Otherwise the
/// tree is returned together with problems found while building it (duplicate keys).
pub(crate) fn parse(source: &str) -> Result<(Tree, Vec<Diagnostic>), Diagnostic> {
    let index = LineIndex::new(source);
    let options = serde_saphyr::options! {
        // Duplicates reach the visitor, so all of them can be reported, not just the first.
        duplicate_keys: DuplicateKeyPolicy::PassThrough,
        // YAML 1.2 core types: `y`, `on` and `no` are strings (no Norway problem), and so
        // are `0755` and `1_000`, so that e.g. `run: [chmod, 0755, f]` keeps its text.
        strict_booleans: true,
        leading_zero_numbers_as_strings: true,
        underscored_numbers_as_strings: true,
    };
    let raw: Spanned<Raw> = serde_saphyr::from_str_with_options(source, options)
        .map_err(|error| syntax_diagnostic(&error, &index))?;
    let mut builder = Builder {
        source,
        index: &index,
        tree: Tree {
            json: Value::Null,
            values: HashMap::new(),
            keys: HashMap::new(),
            scalar_text: HashMap::new(),
        },
        problems: Vec::new(),
    };
    let json = builder.convert(&raw, String::new());
    builder.tree.json = json;
    Ok((builder.tree, builder.problems))
}

/// Turns a serde-saphyr error into one diagnostic at the place it reports.
fn syntax_diagnostic(error: &serde_saphyr::Error, index: &LineIndex<'_>) -> Diagnostic {
    let inner = error.without_snippet();
    let message = serde_saphyr::UserMessageFormatter.format_message(inner);
    let pos = match error.location() {
        Some(location) if location.line() > 0 => location_pos(&location, index),
        _ => Pos::START,
    };
    Diagnostic::at(pos, format!("invalid YAML: {message}"))
        .hint("fix the YAML syntax here; the rest of the file is checked once it parses")
}

/// Converts a serde-saphyr location into a [`Pos`], computing byte positions if it has none.
fn location_pos(location: &Location, index: &LineIndex<'_>) -> Pos {
    let span = location.span();
    // With a byte offset, line and column are derived from it, so they count lines the
    // way the rendered snippet does (serde-saphyr also breaks lines at a lone CR and
    // skips byte order marks).
    let (line, column, offset) = match span.byte_offset().and_then(|o| usize::try_from(o).ok()) {
        Some(offset) => {
            let (line, column) = index.position(offset);
            (line, column, offset)
        }
        None => {
            let line = usize::try_from(location.line()).unwrap_or(usize::MAX);
            let column = usize::try_from(location.column()).unwrap_or(usize::MAX);
            let offset = index.offset(line, column);
            let (line, column) = index.position(offset);
            (line, column, offset)
        }
    };
    let len = span
        .byte_len()
        .and_then(|l| usize::try_from(l).ok())
        .unwrap_or(0);
    Pos {
        line,
        column,
        offset,
        len,
    }
}

/// Walks a [`Raw`] tree, producing JSON and recording positions.
struct Builder<'a> {
    source: &'a str,
    index: &'a LineIndex<'a>,
    tree: Tree,
    problems: Vec<Diagnostic>,
}

impl Builder<'_> {
    fn convert(&mut self, node: &Spanned<Raw>, pointer: String) -> Value {
        let pos = location_pos(&node.referenced, self.index);
        self.tree.values.insert(pointer.clone(), pos);
        match &node.value {
            Raw::Null => Value::Null,
            Raw::Bool(b) => {
                self.remember_text(node, &pointer);
                Value::Bool(*b)
            }
            Raw::Int(i) => {
                self.remember_text(node, &pointer);
                Value::from(*i)
            }
            Raw::UInt(u) => {
                self.remember_text(node, &pointer);
                Value::from(*u)
            }
            Raw::Float(f) => {
                self.remember_text(node, &pointer);
                Number::from_f64(*f).map_or_else(|| Value::String(f.to_string()), Value::Number)
            }
            Raw::Str(s) => Value::String(s.clone()),
            Raw::Seq(items) => Value::Array(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| self.convert(item, format!("{pointer}/{i}")))
                    .collect(),
            ),
            Raw::Map(entries) => {
                let mut object = Map::new();
                for (key, value) in entries {
                    let child = format!("{pointer}/{}", escape_pointer(&key.value));
                    let key_pos = location_pos(&key.referenced, self.index);
                    if let Some(first) = self.tree.keys.get(&child) {
                        self.problems.push(
                            Diagnostic::at(key_pos, format!("duplicate key `{}`", key.value)).hint(
                                format!(
                                    "`{}` is already set on line {}; remove one of them",
                                    key.value, first.line
                                ),
                            ),
                        );
                        continue;
                    }
                    self.tree.keys.insert(child.clone(), key_pos);
                    let converted = self.convert(value, child);
                    object.insert(key.value.clone(), converted);
                }
                Value::Object(object)
            }
        }
    }

    /// Records the source text of a plain scalar, where it was defined (not where an alias used it).
    fn remember_text(&mut self, node: &Spanned<Raw>, pointer: &str) {
        let pos = location_pos(&node.defined, self.index);
        if let Some(text) = self
            .source
            .get(pos.offset..pos.offset.saturating_add(pos.len))
            && !text.is_empty()
        {
            self.tree
                .scalar_text
                .insert(pointer.to_owned(), text.to_owned());
        }
    }
}

/// Escapes one JSON pointer segment (RFC 6901).
pub(crate) fn escape_pointer(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// Turns a JSON pointer into the dotted path users see, e.g. `services.api.port`.
pub(crate) fn display_path(pointer: &str) -> String {
    pointer
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect::<Vec<_>>()
        .join(".")
}
