//! Runs the Python scripts beside this file with the interpreter of Tandem's cache venv, which has
//! the `gguf` package that ships with llama.cpp, to cross-check the engine against it.
#![allow(dead_code)]

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::Command;

/// Tandem's cache directory (`$TANDEM_CACHE`, else `~/.cache/tandem`).
fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TANDEM_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").expect("HOME is not set");
    PathBuf::from(home).join(".cache").join("tandem")
}

/// The Python interpreter to use: `$TANDEM_PYTHON`, else the venv in Tandem's cache. Panics with
/// instructions when it is missing.
pub fn python() -> PathBuf {
    let path = std::env::var_os("TANDEM_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("venv").join("bin").join("python"));
    assert!(
        path.exists(),
        "Python with the gguf package not found at {} (set TANDEM_PYTHON to override): \
         run `cargo xtask setup` first",
        path.display()
    );
    path
}

/// Path of a script in `tests/py/`.
pub fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("py")
        .join(name)
}

/// Runs a script from `tests/py/` with `args` and returns its standard output. Panics with the
/// script's standard error if it fails.
pub fn run(name: &str, args: &[&OsStr]) -> String {
    let out = Command::new(python())
        .arg(script(name))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", python().display()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{name} failed ({}):\n{stderr}",
        out.status
    );
    String::from_utf8(out.stdout).expect("script output is not UTF-8")
}

/// An empty scratch directory for one test, under Cargo's temporary directory for tests.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch directory");
    dir
}
