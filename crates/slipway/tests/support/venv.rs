//! Python virtualenvs that the tests make for themselves from a pinned `requirements.txt`.
//!
//! The test suite installs what it needs by itself, so that `cargo test` passes on a fresh
//! machine (a developer's or CI's) that has only `python3` and access to PyPI. A venv lives
//! under the target directory, at `test-venvs/<name>-<hash of requirements.txt>`: `cargo clean`
//! removes it, it is kept between runs (the first creation takes 10 to 30 s, later calls only
//! check a file), and a change to the pins gets a new venv rather than a stale one.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

/// Written into a venv as the very last step: a venv folder without it was left half made (a
/// run that failed or was killed) and is never used, but built anew.
const COMPLETE: &str = ".slipway-complete";

/// A virtualenv named `name` with the pinned `requirements` installed; returns its folder
/// (`bin/python` and the packages' scripts inside).
///
/// Several test binaries run at once and each may call this from several threads, so creation
/// happens under an exclusive lock on `<name>-<hash>.lock`; whoever gets the lock second finds
/// the venv complete and uses it.
///
/// The venv is built in place rather than in a temporary folder that is then renamed: pip
/// writes the venv's absolute path into the `#!` line of every script it installs, so a renamed
/// venv's scripts fail with "required file not found". A marker file written last
/// (`.slipway-complete`) keeps a half-made venv from being used instead.
///
/// Panics, with the output of the step that failed, when the venv cannot be made.
pub fn venv(name: &str, requirements: &Path) -> PathBuf {
    let pins = fs::read(requirements)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", requirements.display()));
    let hash = hex::encode(Sha256::digest(&pins));
    let name = format!("{name}-{}", &hash[..12]);
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
        build(&dir, requirements);
    }
    // Dropping `lock` closes the file, which releases the lock.
    dir
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
        "creating the test venv at {} (once per {})",
        dir.display(),
        requirements.display()
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
        Err(e) => {
            panic!("cannot run {command:?}: {e} (these tests need python3 with the venv module)")
        }
    };
    assert!(
        output.status.success(),
        "making a test venv failed: {command:?} exited with {}\n\
         --- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}
