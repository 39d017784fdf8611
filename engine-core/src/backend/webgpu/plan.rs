//! Checking, before anything is uploaded, that a model fits the adapter.

use super::{GpuKvStore, WebGpuBackend, weights};
use crate::backend::{BackendError, KvLayout};
use crate::gguf::GgufFile;
use crate::model::ModelConfig;

/// Device memory a model needs, from [`WebGpuBackend::check_model`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Quantized weights, as stored on the device.
    pub weights: u64,
    /// The KV cache.
    pub kv_cache: u64,
    /// Activations and scratch for the largest step.
    pub scratch: u64,
    /// Buffers the largest matrix is split into.
    pub max_parts: usize,
}

impl MemoryPlan {
    /// Everything.
    pub fn total(&self) -> u64 {
        self.weights + self.kv_cache + self.scratch
    }
}

impl WebGpuBackend {
    /// Checks, before anything is uploaded, that a model with a KV cache of `kv` and steps of up
    /// to `max_batch_tokens` rows fits the adapter: supported weight types, every tensor within
    /// the binding limits (split as needed), one KV layer within a binding, and the total within
    /// [`WebGpuOptions::memory_budget`](super::WebGpuOptions::memory_budget) when one is set.
    pub fn check_model(
        &self,
        file: &GgufFile,
        kv: &KvLayout,
        max_batch_tokens: usize,
    ) -> Result<MemoryPlan, BackendError> {
        let limit = self.report.binding_limit;
        let mut plan = MemoryPlan::default();
        for t in &file.gguf().tensors {
            match t.dims[..] {
                [cols, rows] if rows > 1 => {
                    let (_, per_part, bytes) =
                        weights::plan(&t.name, t.ggml_type, rows as usize, cols as usize, limit)?;
                    plan.weights += bytes;
                    plan.max_parts = plan.max_parts.max((rows as usize).div_ceil(per_part));
                }
                _ => plan.weights += t.n_elements() * 4,
            }
        }
        let f16 = self.kv_f16(kv);
        GpuKvStore::check(kv, f16, limit)?;
        plan.kv_cache = 2 * kv.n_layers as u64 * GpuKvStore::layer_bytes(kv, f16);
        if let Ok(c) = ModelConfig::from_metadata(file.metadata()) {
            let rows = max_batch_tokens.max(1) as u64;
            let per_row = 3 * c.d_model + 2 * c.q_dim() + 2 * c.kv_dim() + 2 * c.ffn_dim;
            plan.scratch = rows * per_row as u64 * 4 + 4 * c.vocab_size as u64 * 4;
            for (what, bytes) in [
                ("activations", rows * c.ffn_dim as u64 * 4),
                ("logits", rows.min(64) * c.vocab_size as u64 * 4),
            ] {
                if bytes > limit {
                    return Err(BackendError::OutOfMemory(format!(
                        "{what} of a {rows}-token step take {bytes} bytes, more than the largest binding ({limit} bytes): use smaller steps"
                    )));
                }
            }
        }
        if let Some(budget) = self.budget
            && plan.total() > budget
        {
            return Err(BackendError::OutOfMemory(format!(
                "the model needs about {} MiB on {} (weights {} MiB, KV cache {} MiB, scratch {} MiB), more than the budget of {} MiB",
                plan.total() >> 20,
                self.report.name,
                plan.weights >> 20,
                plan.kv_cache >> 20,
                plan.scratch >> 20,
                budget >> 20
            )));
        }
        Ok(plan)
    }
}
