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

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// Written into a venv as the very last step: a venv folder without it was left half made (a
/// run that failed or was killed) and is never used, but built anew.
const COMPLETE: &str = ".slipway-complete";

/// The fixture's source folder. Tests should not run the app here (Python would write
/// `__pycache__` and `data/` into the source tree): copy it with [`copy_to`] first.
pub fn fixture() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/apps/django_site"
    ))
}

/// A virtualenv with the fixture's pinned `requirements.txt` installed; returns its folder
/// (`bin/python`, `bin/gunicorn` inside).
///
/// The test suite installs what it needs by itself, so that `cargo test` passes on a fresh
/// machine (a developer's or CI's) that has only `python3` and access to PyPI. The venv lives
/// under the target directory, at `test-venvs/django-<hash of requirements.txt>`: `cargo clean`
/// removes it, it is kept between runs (the first creation takes about 10 to 15 s, later calls
/// only check a file), and a change to the pins gets a new venv rather than a stale one.
///
/// Several test binaries run at once and each may call this from several threads, so creation
/// happens under an exclusive lock on `django-<hash>.lock`; whoever gets the lock second finds
/// the venv complete and uses it.
///
/// The venv is built in place rather than in a temporary folder that is then renamed: pip
/// writes the venv's absolute path into the `#!` line of every script it installs, so a renamed
/// venv's `bin/gunicorn` fails with "required file not found". A marker file written last
/// (`.slipway-complete`) keeps a half-made venv from being used instead.
///
/// Panics, with the output of the step that failed, when the venv cannot be made.
pub fn venv() -> PathBuf {
    let requirements = fixture().join("requirements.txt");
    let pins = fs::read(&requirements)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", requirements.display()));
    let hash = hex::encode(Sha256::digest(&pins));
    let name = format!("django-{}", &hash[..12]);
    let root = target_dir().join("test-venvs");
    let dir = root.join(&name);
    if dir.join(COMPLETE).exists() {
        return dir;
    }

    fs::create_dir_all(&root).unwrap_or_else(|e| panic!("cannot create {}: {e}", root.display()));
    let lock_path = root.join(format!("{name}.lock"));
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", lock_path.display()));
    lock.lock()
        .unwrap_or_else(|e| panic!("cannot lock {}: {e}", lock_path.display()));
    // Another process or thread may have made it while this one waited for the lock.
    if !dir.join(COMPLETE).exists() {
        build(&dir, &requirements);
    }
    // Dropping `lock` closes the file, which releases the lock.
    dir
}

/// Copies the fixture into `dest` (made if missing), leaving out what running it leaves behind:
/// `__pycache__` folders and the top-level `data/` (the database, a volume when deployed).
pub fn copy_to(dest: &Path) {
    copy_dir(&fixture(), dest, true);
}

/// The target directory: the parent of `CARGO_TARGET_TMPDIR` (`<target>/tmp`), which Cargo
/// sets for integration tests, so the venv follows `CARGO_TARGET_DIR` and `cargo clean`.
fn target_dir() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let Some(target) = tmp.parent() else {
        panic!(
            "CARGO_TARGET_TMPDIR ({}) has no parent folder",
            tmp.display()
        );
    };
    target.to_path_buf()
}

/// Makes the venv at `dir`, under the caller's lock: `python3 -m venv`, then pip, then the
/// marker.
fn build(dir: &Path, requirements: &Path) {
    if dir.exists() {
        // Left half made by an earlier run: nobody uses it (no marker), so it can go.
        fs::remove_dir_all(dir)
            .unwrap_or_else(|e| panic!("cannot remove the half-made venv {}: {e}", dir.display()));
    }
    eprintln!(
        "creating the Django test venv at {} (once per requirements.txt)",
        dir.display()
    );
    run(Command::new("python3").arg("-m").arg("venv").arg(dir));
    run(Command::new(dir.join("bin/pip"))
        .args(["install", "-q", "--disable-pip-version-check", "-r"])
        .arg(requirements));
    let marker = dir.join(COMPLETE);
    File::create(&marker).unwrap_or_else(|e| panic!("cannot create {}: {e}", marker.display()));
}

/// Runs a setup step and panics with its output if it fails.
fn run(command: &mut Command) {
    let output = match command.output() {
        Ok(output) => output,
        Err(e) => panic!(
            "cannot run {command:?}: {e} (the Django tests need python3 with the venv module)"
        ),
    };
    assert!(
        output.status.success(),
        "making the Django test venv failed: {command:?} exited with {}\n\
         --- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
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
