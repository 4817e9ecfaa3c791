//! The `slipway.yaml` model: parsing, validation with line:column diagnostics, and its JSON Schema.
//!
//! [`parse`] (and [`load`] for a file on disk) turns YAML text into a resolved [`Spec`] with
//! every default applied, or returns *all* the problems in the file at once, each a
//! [`Diagnostic`] pointing at the offending key or value. [`render`] prints them the way
//! rustc does. [`json_schema`] publishes the file format for editors.
//!
//! How it works, in passes over one parse of the file:
//! 1. `tree`: YAML -> a spanned generic tree -> JSON, remembering the position of every
//!    key and value by JSON pointer (YAML syntax errors stop here, as one diagnostic).
//! 2. `rules`: value formats (names, durations, ports, routes) and cross-field rules
//!    (`min <= max`, a route or fixed port used twice), each run whenever the values it
//!    needs are individually well-formed.
//! 3. `structure`: the JSON is validated against the JSON Schema of the file model
//!    (`file`), which reports every unknown key, wrong type and missing key.
//! 4. `resolve`: only if nothing was found, the file model is deserialized and defaults
//!    are applied.
//!
//! Architecture invariant: this crate does no I/O besides [`load`] reading one file, and
//! knows nothing about processes, the network or the database.

mod diagnostic;
mod duration;
mod file;
mod model;
mod render;
mod resolve;
mod rules;
mod structure;
mod tree;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

pub use diagnostic::Diagnostic;
use diagnostic::Pos;
pub use model::{
    Check, DeploySettings, Health, Port, Probe, Scaling, ServiceSpec, Shutdown, Spec, duration_ms,
};
pub use render::render;

/// The file name Slipway looks for by default.
pub const DEFAULT_FILE_NAME: &str = "slipway.yaml";

/// Parses and validates spec text; relative `workdir`s are resolved against `base_dir`.
///
/// Returns the resolved spec, or every problem found, sorted by position.
///
/// ```
/// use std::path::Path;
///
/// let spec = slipway_spec::parse(
///     "app: shop\nservices:\n  web: { run: [./server], routes: [/] }\n",
///     Path::new("/srv/shop"),
/// )
/// .expect("valid");
/// assert_eq!(spec.services["web"].scaling.max, 1);
///
/// let problems = slipway_spec::parse("app: shop\nservices:\n  web: { run: ./server }\n", Path::new("."))
///     .expect_err("`run` must be a list");
/// assert_eq!((problems[0].line, problems[0].column), (3, 15));
/// ```
pub fn parse(source: &str, base_dir: &Path) -> Result<Spec, Vec<Diagnostic>> {
    let (tree, mut diagnostics) = match tree::parse(source) {
        Ok(parsed) => parsed,
        Err(syntax) => return Err(vec![syntax]),
    };
    if tree.json.is_null() {
        return Err(vec![Diagnostic::at(Pos::START, "the spec file is empty").hint(
            "start with `app: <name>` and a `services:` mapping, e.g. `services: { web: { run: [\"./server\"] } }`",
        )]);
    }
    let mut owned = HashSet::new();
    rules::check(&tree, &mut diagnostics, &mut owned);
    structure::check(&tree, &owned, &mut diagnostics);
    if !diagnostics.is_empty() {
        diagnostics
            .sort_by(|a, b| (a.offset, a.len, &a.message).cmp(&(b.offset, b.len, &b.message)));
        diagnostics.dedup();
        return Err(diagnostics);
    }
    match serde_json::from_value::<file::SpecFile>(tree.json.clone()) {
        Ok(file) => resolve::resolve(file, &tree, base_dir).map_err(|d| vec![d]),
        // Validation accepted something the file model rejects: a bug in this crate.
        Err(error) => Err(vec![
            Diagnostic::at(
                Pos::START,
                format!("the spec passed validation but could not be read: {error}"),
            )
            .hint("please report this as a Slipway bug"),
        ]),
    }
}

/// Reads and parses the spec file at `path`; relative `workdir`s are resolved against
/// the file's directory.
pub fn load(path: &Path) -> Result<Spec, LoadError> {
    let source_text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let base_dir = path.parent().unwrap_or_else(|| Path::new("."));
    parse(&source_text, base_dir).map_err(|diagnostics| LoadError::Invalid {
        path: path.to_path_buf(),
        source_text,
        diagnostics,
    })
}

/// Why [`load`] failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file that was read.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file was read but is not a valid spec; `Display` renders every diagnostic.
    #[error("{}", render(diagnostics, source_text, &path.display().to_string()))]
    Invalid {
        /// The file that was read.
        path: PathBuf,
        /// Its contents, for rendering snippets.
        source_text: String,
        /// Every problem found, sorted by position.
        diagnostics: Vec<Diagnostic>,
    },
}

/// The JSON Schema (draft 7) of `slipway.yaml`, with descriptions, for editors such as
/// yaml-language-server (`# yaml-language-server: $schema=<file>`).
pub fn json_schema() -> serde_json::Value {
    file::schema()
}
