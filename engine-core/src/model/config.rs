//! Model hyper-parameters read from GGUF metadata.

use super::ModelError;
use super::pooling::Pooling;
use super::rope::{RopeConfig, RopeLayout};
use crate::gguf::Metadata;

/// The model architectures this engine runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Architecture {
    /// `llama`: SmolLM, Llama 2/3, Mistral and other GGUFs converted as llama.
    Llama,
    /// `qwen2`: llama with biases on the q, k and v projections and NeoX RoPE.
    Qwen2,
    /// `phi3`: fused qkv and gate/up projections, NeoX RoPE.
    Phi3,
}

impl Architecture {
    /// Parses `general.architecture`.
    pub fn from_name(name: &str) -> Option<Architecture> {
        match name {
            "llama" | "mistral" => Some(Architecture::Llama),
            "qwen2" => Some(Architecture::Qwen2),
            "phi3" => Some(Architecture::Phi3),
            _ => None,
        }
    }

    /// The GGUF name.
    pub fn name(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Qwen2 => "qwen2",
            Architecture::Phi3 => "phi3",
        }
    }
}

/// Hyper-parameters of a Llama-family transformer.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// Architecture.
    pub arch: Architecture,
    /// Number of transformer blocks.
    pub n_layers: usize,
    /// Embedding (hidden) size.
    pub d_model: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (GQA when fewer than `n_heads`).
    pub n_kv_heads: usize,
    /// Size of each attention head.
    pub head_dim: usize,
    /// Feed-forward hidden size.
    pub ffn_dim: usize,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Context length the model was trained for.
    pub context_length: usize,
    /// RMSNorm epsilon.
    pub norm_eps: f32,
    /// Rotary embedding configuration (without per-model frequency factors, which are tensors).
    pub rope: RopeConfig,
    /// How its embeddings pool the final hidden states (`pooling_type`; mean when absent).
    pub pooling: Pooling,
}

impl ModelConfig {
    /// Reads the hyper-parameters of a supported architecture from GGUF metadata.
    pub fn from_metadata(meta: &Metadata) -> Result<ModelConfig, ModelError> {
        let arch_name = meta
            .get_str("general.architecture")
            .ok_or_else(|| ModelError::Metadata("general.architecture is missing".into()))?;
        let arch = Architecture::from_name(arch_name)
            .ok_or_else(|| ModelError::UnsupportedArchitecture(arch_name.to_owned()))?;
        let key = |k: &str| format!("{arch_name}.{k}");
        let req = |k: &str| -> Result<usize, ModelError> {
            let full = key(k);
            meta.get_u64(&full)
                .filter(|&v| v > 0 && v < (1 << 24))
                .map(|v| v as usize)
                .ok_or_else(|| ModelError::Metadata(format!("{full} is missing or out of range")))
        };
        let opt_usize = |k: &str| {
            meta.get_u64(&key(k))
                .filter(|&v| v > 0 && v < (1 << 24))
                .map(|v| v as usize)
        };
        let opt_f32 = |k: &str| {
            meta.get_f64(&key(k))
                .map(|v| v as f32)
                .filter(|v| v.is_finite())
        };

        let n_layers = req("block_count")?;
        let d_model = req("embedding_length")?;
        let ffn_dim = req("feed_forward_length")?;
        let n_heads = req("attention.head_count")?;
        let n_kv_heads = opt_usize("attention.head_count_kv").unwrap_or(n_heads);
        let head_dim = opt_usize("attention.key_length").unwrap_or(d_model / n_heads);
        if n_heads % n_kv_heads != 0 {
            return Err(ModelError::Metadata(format!(
                "{n_heads} attention heads are not a multiple of {n_kv_heads} key/value heads"
            )));
        }
        if opt_usize("attention.value_length").is_some_and(|v| v != head_dim) {
            return Err(ModelError::Metadata(
                "key and value head sizes differ".into(),
            ));
        }
        let vocab_size = opt_usize("vocab_size")
            .or_else(|| meta.get_array("tokenizer.ggml.tokens").map(|t| t.len()))
            .filter(|&v| v > 0)
            .ok_or_else(|| ModelError::Metadata("vocabulary size is unknown".into()))?;
        let context_length = opt_usize("context_length").unwrap_or(2048);
        let norm_eps = opt_f32("attention.layer_norm_rms_epsilon").unwrap_or(1e-5);

        let n_rot = opt_usize("rope.dimension_count").unwrap_or(head_dim);
        if n_rot > head_dim || n_rot % 2 != 0 {
            return Err(ModelError::Metadata(format!(
                "rope.dimension_count {n_rot} does not fit head size {head_dim}"
            )));
        }
        let layout = match arch {
            Architecture::Llama => RopeLayout::Normal,
            Architecture::Qwen2 | Architecture::Phi3 => RopeLayout::Neox,
        };
        let freq_base = opt_f32("rope.freq_base")
            .filter(|&b| b > 1.0)
            .unwrap_or(10000.0);
        let mut rope = RopeConfig::plain(layout, n_rot, freq_base);
        let scaling = meta.get_str(&key("rope.scaling.type")).unwrap_or("linear");
        let factor = opt_f32("rope.scaling.factor")
            .or_else(|| opt_f32("rope.scale_linear"))
            .filter(|&f| f > 0.0)
            .unwrap_or(1.0);
        let attn_factor = opt_f32("rope.scaling.attn_factor")
            .filter(|&f| f > 0.0)
            .unwrap_or(1.0);
        match scaling {
            "none" => {}
            "linear" => rope.freq_scale = 1.0 / factor,
            "yarn" => {
                let orig =
                    opt_usize("rope.scaling.original_context_length").unwrap_or(context_length);
                let ext = opt_f32("rope.scaling.yarn_ext_factor")
                    .filter(|&e| e >= 0.0)
                    .unwrap_or(1.0);
                rope = rope.with_yarn(factor, orig as u32, ext, attn_factor);
            }
            other => {
                return Err(ModelError::Metadata(format!(
                    "rope scaling type {other:?} is not supported"
                )));
            }
        }
        if scaling != "yarn" {
            rope.attn_factor = attn_factor;
        }

        let pooling = meta
            .get_u64(&key("pooling_type"))
            .and_then(Pooling::from_gguf)
            .unwrap_or_default();

        Ok(ModelConfig {
            arch,
            n_layers,
            d_model,
            n_heads,
            n_kv_heads,
            head_dim,
            ffn_dim,
            vocab_size,
            context_length,
            norm_eps,
            rope,
            pooling,
        })
    }

    /// Width of the query projection.
    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Width of each of the key and value projections.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
}
