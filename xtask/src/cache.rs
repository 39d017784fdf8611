//! Tandem's cache directory.

use std::path::PathBuf;

/// `$TANDEM_CACHE`, else `~/.cache/tandem`.
pub fn dir() -> PathBuf {
    if let Some(d) = std::env::var_os("TANDEM_CACHE") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".cache").join("tandem")
}

/// The Python virtual environment with the tools tests use.
pub fn venv() -> PathBuf {
    dir().join("venv")
}

/// The venv's python.
pub fn python() -> PathBuf {
    venv().join("bin").join("python")
}
