//! Opening a model: resolve its source to a local file (downloading it if needed) and map it.

use std::path::{Path, PathBuf};

use engine_core::gguf::{GgufFile, ModelBytes};

use crate::source::ModelSource;

/// Why a model could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The source could not be resolved or fetched.
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    /// The file could not be read.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a usable model.
    #[error("reading {path}: {message}")]
    Model {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// Tandem's cache directory (`$TANDEM_CACHE`, else `~/.cache/tandem`).
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("TANDEM_CACHE") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    home.join(".cache").join("tandem")
}

/// Resolves a model source (`PATH`, `http(s)://...` or `hf:OWNER/REPO/FILE`) to a local file,
/// downloading it into the cache if needed.
pub async fn fetch(spec: &str, progress: bool) -> Result<(ModelSource, PathBuf), LoadError> {
    let source = ModelSource::parse(spec)?;
    let path = source.fetch(&cache_dir().join("models"), progress).await?;
    Ok((source, path))
}

/// Maps a GGUF file into memory and parses it.
pub fn open(path: &Path) -> Result<GgufFile, LoadError> {
    let file = std::fs::File::open(path).map_err(|source| LoadError::Io {
        what: "opening",
        path: path.to_owned(),
        source,
    })?;
    // SAFETY: the file is mapped read-only; Tandem never writes to model files while they are in
    // use, and a file truncated underneath would be a misuse the OS reports with SIGBUS.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|source| LoadError::Io {
        what: "mapping",
        path: path.to_owned(),
        source,
    })?;
    GgufFile::new(ModelBytes::from_mmap(map)).map_err(|e| LoadError::Model {
        path: path.to_owned(),
        message: e.to_string(),
    })
}
