//! A model file arriving in pieces.

use sha2::{Digest, Sha256};
use wasm_bindgen::prelude::*;

use crate::error::{EngineWasmError, Kind};

/// Collects a GGUF file chunk by chunk in WebAssembly memory (so no single JavaScript
/// `ArrayBuffer` ever holds the whole file) and hashes it on the way.
#[wasm_bindgen]
pub struct ModelBuffer {
    bytes: Vec<u8>,
    hasher: Sha256,
}

#[wasm_bindgen]
impl ModelBuffer {
    /// An empty buffer with room reserved for `expected_bytes` (0 when unknown). Fails with
    /// `out_of_memory` when WebAssembly memory cannot hold that much.
    #[wasm_bindgen(constructor)]
    pub fn new(expected_bytes: f64) -> Result<ModelBuffer, JsValue> {
        let mut bytes = Vec::new();
        if expected_bytes.is_finite() && expected_bytes > 0.0 {
            let want = expected_bytes as usize;
            bytes.try_reserve_exact(want).map_err(|_| {
                EngineWasmError::new(
                    Kind::OutOfMemory,
                    format!("WebAssembly memory cannot hold a {want}-byte model"),
                )
            })?;
        }
        Ok(ModelBuffer {
            bytes,
            hasher: Sha256::new(),
        })
    }

    /// Appends a piece of the file.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), JsValue> {
        self.bytes.try_reserve(chunk.len()).map_err(|_| {
            EngineWasmError::new(
                Kind::OutOfMemory,
                format!(
                    "WebAssembly memory is full after {} bytes of the model",
                    self.bytes.len()
                ),
            )
        })?;
        self.bytes.extend_from_slice(chunk);
        self.hasher.update(chunk);
        Ok(())
    }

    /// Bytes received so far.
    #[wasm_bindgen(getter)]
    pub fn length(&self) -> f64 {
        self.bytes.len() as f64
    }

    /// The SHA-256 of everything pushed so far, lowercase hex.
    pub fn sha256(&self) -> String {
        let digest = self.hasher.clone().finalize();
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl ModelBuffer {
    /// The collected bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}
