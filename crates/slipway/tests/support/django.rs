//! The Django fixture: a small but real third-party app (Django and gunicorn from PyPI) in
//! `tests/apps/django_site`, and the virtualenv it runs in.
//!
//! The hand-written apps of this harness only use Python's standard library; this one checks
//! that Slipway runs an app as people actually ship it: a framework installed with pip, a
//! release command (`manage.py migrate`) that must finish before `/ready` answers 200, a secret
//! (`DJANGO_SECRET_KEY`) without which the app will not start, and an SQLite file under `data/`
//! (a persistent volume) that must outlive deploys. See the top of `mysite/settings.py` for the
//! routes.
//!
//! With `V = venv()` and the working directory at a copy made by [`copy_to`]:
//!
//! - migrate: `V/bin/python manage.py migrate` (needs `DJANGO_SECRET_KEY`);
//! - serve: `V/bin/gunicorn mysite.wsgi --bind 127.0.0.1:PORT --no-control-socket`. Without
//!   `--no-control-socket`, gunicorn (25.1 and later) opens a control socket at
//!   `$XDG_RUNTIME_DIR/gunicorn.ctl` or `~/.gunicorn/gunicorn.ctl`, one path that every gunicorn
//!   on the machine (two at a time in a blue-green switch, more with parallel tests) takes over
//!   from the others and removes when it stops;
//! - without `DJANGO_SECRET_KEY` both exit at once: manage.py with 1, gunicorn with 3
//!   ("Worker failed to boot"), the last line naming the variable.

use std::fs;
use std::path::{Path, PathBuf};

/// The fixture's source folder. Tests should not run the app here (Python would write
/// `__pycache__` and `data/` into the source tree): copy it with [`copy_to`] first.
pub fn fixture() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/apps/django_site"
    ))
}

/// A virtualenv with the fixture's pinned `requirements.txt` installed; returns its folder
/// (`bin/python`, `bin/gunicorn` inside). [`super::venv::venv`] says where it lives and how it is
/// made once for all tests.
pub fn venv() -> PathBuf {
    super::venv::venv("django", &fixture().join("requirements.txt"))
}

/// Copies the fixture into `dest` (made if missing), leaving out what running it leaves behind:
/// `__pycache__` folders and the top-level `data/` (the database, a volume when deployed).
pub fn copy_to(dest: &Path) {
    copy_dir(&fixture(), dest, true);
}

fn copy_dir(from: &Path, to: &Path, top: bool) {
    fs::create_dir_all(to).unwrap_or_else(|e| panic!("cannot create {}: {e}", to.display()));
    let entries =
        fs::read_dir(from).unwrap_or_else(|e| panic!("cannot list {}: {e}", from.display()));
    for entry in entries {
        let entry = entry.unwrap_or_else(|e| panic!("cannot list {}: {e}", from.display()));
        let name = entry.file_name();
        let source = entry.path();
        let target = to.join(&name);
        let kind = entry
            .file_type()
            .unwrap_or_else(|e| panic!("cannot stat {}: {e}", source.display()));
        if kind.is_dir() {
            if name == "__pycache__" || (top && name == "data") {
                continue;
            }
            copy_dir(&source, &target, false);
        } else {
            fs::copy(&source, &target).unwrap_or_else(|e| {
                panic!(
                    "cannot copy {} to {}: {e}",
                    source.display(),
                    target.display()
                )
            });
        }
    }
}
