//! Opening a model: resolve its source, memory-map the file, and build an engine on a backend.

use std::path::PathBuf;

use anyhow::{Context, Result};
use engine_core::backend::cpu::{CpuBackend, CpuOptions};
use engine_core::engine::{Engine, EngineConfig};
use engine_core::gguf::{GgufFile, ModelBytes};

use crate::source::ModelSource;

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

/// Where the model's bytes come from and how to run it.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    /// `PATH`, `http(s)://...` or `hf:OWNER/REPO/FILE`.
    pub model: String,
    /// CPU worker threads (0 = all cores).
    pub threads: usize,
    /// Engine limits.
    pub engine: EngineConfig,
    /// Show progress bars on standard error.
    pub progress: bool,
}

/// A loaded model and what is known about it.
pub struct Loaded {
    /// The engine.
    pub engine: Engine<CpuBackend>,
    /// The model's short name.
    pub name: String,
    /// The file's size in bytes.
    pub file_size: u64,
    /// The parsed file (shares the mapped bytes with the engine).
    pub file: GgufFile,
}

/// Resolves the model's source to a local file, downloading it if needed.
pub async fn fetch(opts: &LoadOptions) -> Result<(ModelSource, PathBuf)> {
    let source = ModelSource::parse(&opts.model)?;
    let path = source
        .fetch(&cache_dir().join("models"), opts.progress)
        .await?;
    Ok((source, path))
}

/// Maps a GGUF file into memory and parses it.
pub fn open(path: &std::path::Path) -> Result<GgufFile> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: the file is mapped read-only; Tandem never writes to model files while they are in
    // use, and a file truncated underneath would be a misuse the OS reports with SIGBUS.
    let map = unsafe { memmap2::Mmap::map(&file) }
        .with_context(|| format!("mapping {}", path.display()))?;
    GgufFile::new(ModelBytes::from_mmap(map)).with_context(|| format!("reading {}", path.display()))
}

/// Fetches, opens and loads a model on the CPU backend.
pub async fn load(opts: &LoadOptions) -> Result<Loaded> {
    let (source, path) = fetch(opts).await?;
    let bar = crate::progress::spinner(opts.progress, "loading model");
    let file = open(&path)?;
    let backend = CpuBackend::new(CpuOptions {
        threads: opts.threads,
        isa: None,
    })?;
    let engine = Engine::new(backend, &file, opts.engine.clone())
        .with_context(|| format!("loading {}", path.display()))?;
    bar.finish_and_clear();
    Ok(Loaded {
        engine,
        name: source.display_name(),
        file_size: file.bytes().len() as u64,
        file,
    })
}
