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
//! 2. `rules`: value formats (names, durations, sizes, ports, routes, percentages) and
//!    cross-field rules (`min <= max`, a route or fixed port used twice, canary steps,
//!    scaling windows), each run whenever the values it needs are individually well-formed.
//!    `environments` checks the `environments:` section itself.
//! 3. `structure`: the JSON is validated against the JSON Schema of the file model
//!    (`file`), which reports every unknown key, wrong type and missing key.
//! 4. Every declared environment that changes services gets a merged view of the file
//!    (`environments::apply`, positions pointing into its overlay), and passes 2 and 3 run
//!    again on it, so the whole file is checked whichever environment is asked for.
//! 5. `resolve`: only if nothing was found, the requested environment's view is
//!    deserialized into the file model and defaults are applied.
//!
//! Architecture invariant: this crate does no I/O besides [`load`] reading one file, and
//! knows nothing about processes, the network or the database.

mod diagnostic;
mod duration;
mod environments;
mod file;
mod model;
mod percent;
mod quantity;
mod render;
mod resolve;
mod rules;
mod size;
mod structure;
mod tree;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

pub use diagnostic::Diagnostic;
use diagnostic::Pos;
pub use model::{
    Analysis, BackupPolicy, Check, DatabaseSpec, DatabaseUse, DeploySettings, Engine, Health,
    HttpsSettings, Limits, OnFailure, Port, Probe, Resources, Scaling, ServiceSpec, Shutdown, Spec,
    Strategy, TrafficSettings, duration_ms,
};
pub use quantity::{show_cpu, show_memory};
pub use render::render;
use tree::Tree;

/// The environment that always exists, and the one [`parse`] and [`load`] resolve.
pub use slipway_core::app_key::DEVELOPMENT;

/// The file name Slipway looks for by default.
pub const DEFAULT_FILE_NAME: &str = "slipway.yaml";

/// Parses and validates spec text for the `development` environment; relative `workdir`s
/// are resolved against `base_dir`. The same as [`parse_env`] with [`DEVELOPMENT`].
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
    parse_env(source, base_dir, DEVELOPMENT)
}

/// Parses and validates spec text, and resolves it for `environment`: the base spec with
/// that environment's overlay merged in (mappings merge, lists and single values replace).
///
/// The whole file is validated whatever the environment, so a mistake in any overlay is
/// reported here too; a problem found only in an environment's merged view ends with
/// `(in environment `<name>`)`. An `environment` the file does not declare is one more
/// diagnostic, at the `environments` key (or 1:1 without one), listing the declared ones.
///
/// ```
/// use std::path::Path;
///
/// let source = "\
/// app: shop
/// services:
///   web: { run: [./server], scaling: { max: 2 } }
/// environments:
///   production:
///     host: shop.example.com
///     services: { web: { scaling: { min: 2, max: 8 } } }
/// ";
/// let spec = slipway_spec::parse_env(source, Path::new("/srv/shop"), "production").expect("valid");
/// assert_eq!((spec.services["web"].scaling.min, spec.services["web"].scaling.max), (2, 8));
/// assert_eq!(spec.host, "shop.example.com");
/// assert_eq!(spec.environments, ["development", "production"]);
///
/// let development = slipway_spec::parse(source, Path::new("/srv/shop")).expect("valid");
/// assert_eq!(development.services["web"].scaling.max, 2);
/// assert_eq!(development.host, "shop.localhost");
/// ```
pub fn parse_env(
    source: &str,
    base_dir: &Path,
    environment: &str,
) -> Result<Spec, Vec<Diagnostic>> {
    let (tree, mut diagnostics) = match tree::parse(source) {
        Ok(parsed) => parsed,
        Err(syntax) => return Err(vec![syntax]),
    };
    if tree.json.is_null() {
        return Err(vec![Diagnostic::at(Pos::START, "the spec file is empty").hint(
            "start with `app: <name>` and a `services:` mapping, e.g. `services: { web: { run: [\"./server\"] } }`",
        )]);
    }
    validate(&tree, &mut diagnostics);
    let declared = environments::declared(&tree);
    let base_problems: HashSet<Diagnostic> = diagnostics.iter().cloned().collect();
    let mut view = None;
    for name in &declared {
        if !environments::has_overlay(&tree, name) {
            continue;
        }
        let merged = environments::apply(&tree, name);
        let mut found = Vec::new();
        validate(&merged, &mut found);
        for mut problem in found {
            // The base's own problems show up in every view; report them once, as they are.
            if !base_problems.contains(&problem) {
                problem.message = format!("{} (in environment `{name}`)", problem.message);
                diagnostics.push(problem);
            }
        }
        if name == environment {
            view = Some(merged);
        }
    }
    if !declared.iter().any(|name| name == environment) {
        diagnostics.push(environments::unknown(&tree, environment, &declared));
    }
    if !diagnostics.is_empty() {
        diagnostics.sort_by(|a, b| {
            (a.offset, a.len, &a.message, &a.hint).cmp(&(b.offset, b.len, &b.message, &b.hint))
        });
        diagnostics.dedup();
        return Err(diagnostics);
    }
    let view = view.unwrap_or_else(|| environments::apply(&tree, environment));
    match serde_json::from_value::<file::SpecFile>(view.json.clone()) {
        Ok(file) => {
            let host = environments::host(&tree, &file.app, environment);
            let target = resolve::Environment {
                name: environment.to_owned(),
                host,
                declared,
            };
            resolve::resolve(file, &view, base_dir, target).map_err(|d| vec![d])
        }
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

/// Runs the rules and the structural check over one view of the file.
fn validate(tree: &Tree, diagnostics: &mut Vec<Diagnostic>) {
    let mut owned = HashSet::new();
    rules::check(tree, diagnostics, &mut owned);
    environments::check(tree, diagnostics);
    structure::check(tree, &owned, diagnostics);
}

/// The `app:` of the spec file at `path`, read without checking the rest of the file: for
/// the commands that only need to know which app to act on (`status`, `logs`, `rollback`),
/// which must work while the file is being edited. `None` when the file cannot be read, is
/// not YAML, or has no valid `app:`; [`load`] then says why.
pub fn app_name(path: &Path) -> Option<String> {
    let source = std::fs::read_to_string(path).ok()?;
    let (tree, problems) = tree::parse(&source).ok()?;
    if !problems.is_empty() {
        return None;
    }
    let app = tree.json.get("app")?.as_str()?;
    slipway_core::names::check_name("app", app).ok()?;
    Some(app.to_owned())
}

/// Reads and parses the spec file at `path` for the `development` environment; relative
/// `workdir`s are resolved against the file's directory. The same as [`load_env`] with
/// [`DEVELOPMENT`].
pub fn load(path: &Path) -> Result<Spec, LoadError> {
    load_env(path, DEVELOPMENT)
}

/// Reads and parses the spec file at `path` and resolves it for `environment` (see
/// [`parse_env`]); relative `workdir`s are resolved against the file's directory.
pub fn load_env(path: &Path, environment: &str) -> Result<Spec, LoadError> {
    let source_text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let base_dir = path.parent().unwrap_or_else(|| Path::new("."));
    parse_env(&source_text, base_dir, environment).map_err(|diagnostics| LoadError::Invalid {
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

/// Parses a byte size written as in `slipway.yaml` (`64KiB`, `10MB`; `unlimited` is `None`),
/// for command-line flags; the error says what is wrong.
pub fn parse_size(text: &str) -> Result<Option<u64>, String> {
    size::parse(text).map_err(|err| {
        let text = text.trim();
        match err {
            size::SizeError::MissingUnit(number) => {
                format!("bad size `{text}`: add a unit, e.g. `{number}KiB`")
            }
            size::SizeError::UnknownUnit(unit) => format!(
                "bad size `{text}`: unknown unit `{unit}` (units are B, kB, MB, GB, TB, KiB, MiB, GiB, TiB)"
            ),
            size::SizeError::TooLarge => format!("bad size `{text}`: too large"),
            size::SizeError::Malformed => {
                format!("bad size `{text}`: write a whole number and a unit, e.g. `64KiB`")
            }
        }
    })
}

/// Parses a duration written as in `slipway.yaml` (`500ms`, `30s`, `1m30s`), for
/// command-line flags; the error says what is wrong.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    duration::parse(text).map_err(|_| {
        format!(
            "bad duration `{}`: write a number and a unit (ms, s, m, h, d), e.g. `30s`",
            text.trim()
        )
    })
}

/// The JSON Schema (draft 7) of `slipway.yaml`, with descriptions, for editors such as
/// yaml-language-server (`# yaml-language-server: $schema=<file>`).
pub fn json_schema() -> serde_json::Value {
    file::schema()
}
