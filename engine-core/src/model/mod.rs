//! The Llama-family model: hyper-parameters, weights on a backend, and the forward pass.

mod config;
mod llama;
mod pooling;
mod rope;

pub use config::{Architecture, ModelConfig};
pub use llama::{LlamaModel, Scratch};
pub use pooling::{PoolAccumulator, Pooling, normalized};
pub use rope::{RopeConfig, RopeLayout, rotate};

use crate::backend::BackendError;
use crate::gguf::GgufError;

/// Why a model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The architecture is not one this engine runs.
    #[error("model architecture {0:?} is not supported (llama, qwen2 and phi3 are)")]
    UnsupportedArchitecture(String),
    /// Metadata is missing or inconsistent.
    #[error("invalid model metadata: {0}")]
    Metadata(String),
    /// A tensor is missing or has the wrong shape or type.
    #[error("invalid tensor {name:?}: {reason}")]
    Tensor {
        /// Tensor name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// The file could not be read.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// A step was malformed (more rows than planned, tokens outside the vocabulary...).
    #[error("invalid step: {0}")]
    Step(String),
}
