//! Helpers shared by the engine's integration tests: where the default model and the reference
//! outputs live.
#![allow(dead_code)]

pub mod fused;
pub mod judge;
pub mod tiny_vocab;

use std::path::PathBuf;

/// File name of the default model.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Tandem's cache directory (`$TANDEM_CACHE`, else `~/.cache/tandem`).
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TANDEM_CACHE") {
        return PathBuf::from(dir);
    }
    let home = std::env::var_os("HOME").expect("HOME is not set");
    PathBuf::from(home).join(".cache").join("tandem")
}

/// Path of the default model (`$TANDEM_MODEL` overrides). Panics with instructions when missing.
pub fn default_model_path() -> PathBuf {
    let path = std::env::var_os("TANDEM_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("models").join(DEFAULT_MODEL_FILE));
    assert!(
        path.exists(),
        "default model not found at {}: run `cargo xtask setup` first",
        path.display()
    );
    path
}

/// The default model's bytes.
pub fn default_model_bytes() -> Vec<u8> {
    std::fs::read(default_model_path()).expect("read default model")
}

/// The directory of llama.cpp reference outputs (`$TANDEM_REFERENCE`, else the repository's
/// `tests/reference`).
pub fn reference_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TANDEM_REFERENCE") {
        return PathBuf::from(dir);
    }
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/reference");
    assert!(
        dir.join("generate.json").exists(),
        "reference outputs not found at {}",
        dir.display()
    );
    dir
}

/// A reference JSON file, parsed.
pub fn reference_json(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(reference_dir().join(name)).expect("read reference file");
    serde_json::from_str(&text).expect("parse reference file")
}
