//! A local model's GGUF file as a browser variant: `tandem serve` offers the files of its own
//! models to browsers (under `/models/{id}/{file}`) and lists them in `/v1/models`, so the
//! hybrid works with no configuration. The SHA-256 that browsers check is computed once, in the
//! background, after the model loads.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use engine_core::engine::EngineConfig;
use engine_core::gguf::GgufFile;
use engine_core::model::ModelConfig;
use sha2::{Digest, Sha256};

use crate::openai::VariantCard;

/// Scratch memory an engine needs beside weights and KV cache: activations of one batch and the
/// logits, rounded up generously (bytes).
const SCRATCH_BASE: u64 = 32 << 20;

/// A local model's file as browsers download it.
#[derive(Debug)]
pub struct LocalVariant {
    /// The model's id.
    pub model_id: String,
    /// The file on disk.
    pub path: PathBuf,
    /// Its name in the URL.
    pub file_name: String,
    /// Its size.
    pub bytes: u64,
    /// The quantization of most of its weights.
    pub quantization: String,
    /// Weights + KV cache (f16, one context) + scratch, bytes.
    pub memory_bytes: u64,
    /// The largest tensor, bytes.
    pub max_tensor_bytes: u64,
    sha256: OnceLock<String>,
}

impl LocalVariant {
    /// Describes the file of a loaded model.
    pub fn describe(
        model_id: &str,
        path: &Path,
        file: &GgufFile,
        model: &ModelConfig,
        config: &EngineConfig,
    ) -> LocalVariant {
        let gguf = file.gguf();
        let mut by_type: std::collections::BTreeMap<String, u64> = Default::default();
        let mut max_tensor = 0;
        for t in &gguf.tensors {
            max_tensor = max_tensor.max(t.n_bytes);
            if t.dims.len() >= 2 {
                *by_type.entry(t.ggml_type.name()).or_default() += t.n_bytes;
            }
        }
        let quantization = by_type
            .into_iter()
            .max_by_key(|(_, b)| *b)
            .map(|(name, _)| name.to_uppercase())
            .unwrap_or_else(|| "unknown".into());
        let bytes = file.bytes().len() as u64;
        let kv = 2 * 2 * model.n_layers as u64 * model.kv_dim() as u64 * config.context_size as u64;
        let logits = 4 * model.vocab_size as u64 * config.max_batch_tokens.min(64) as u64;
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| format!("{model_id}.gguf"));
        LocalVariant {
            model_id: model_id.to_owned(),
            path: path.to_owned(),
            file_name: sanitize(&file_name),
            bytes,
            quantization,
            memory_bytes: bytes + kv + logits + SCRATCH_BASE,
            max_tensor_bytes: max_tensor,
            sha256: OnceLock::new(),
        }
    }

    /// The URL path browsers fetch it from.
    pub fn url_path(&self) -> String {
        format!("/models/{}/{}", urlencode(&self.model_id), self.file_name)
    }

    /// Its SHA-256 (hex), once computed.
    pub fn sha256(&self) -> Option<&str> {
        self.sha256.get().map(String::as_str)
    }

    /// The card `/v1/models` lists, once the SHA-256 is known.
    pub fn card(&self) -> Option<VariantCard> {
        Some(VariantCard {
            url: self.url_path(),
            sha256: self.sha256()?.to_owned(),
            bytes: self.bytes,
            quantization: self.quantization.clone(),
            memory_bytes: self.memory_bytes,
            required_features: Vec::new(),
            max_tensor_bytes: Some(self.max_tensor_bytes),
        })
    }

    /// Computes the SHA-256 now (blocking).
    pub fn hash_now(&self) -> std::io::Result<()> {
        if self.sha256.get().is_some() {
            return Ok(());
        }
        let mut f = std::fs::File::open(&self.path)?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        let _ = self.sha256.set(hex);
        Ok(())
    }
}

/// Hashes the file on a blocking thread.
pub fn hash_in_background(variant: Arc<LocalVariant>) {
    tokio::task::spawn_blocking(move || {
        if let Err(e) = variant.hash_now() {
            tracing::warn!("hashing {}: {e}", variant.path.display());
        }
    });
}

/// A file name safe in a URL path segment.
fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Percent-encodes a path segment.
fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"._-~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_safe_in_urls() {
        assert_eq!(sanitize("a b/c.gguf"), "a_b_c.gguf");
        assert_eq!(urlencode("smol/x y"), "smol%2Fx%20y");
    }
}
