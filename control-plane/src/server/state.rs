//! What every handler shares: the served models (each an engine service with its tokenizer and
//! chat template), the metrics registry and the server's lifecycle flags.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use engine_core::chat::{ChatRequest, ChatTemplate};
use engine_core::engine::EngineService;
use engine_core::tokenizer::Tokenizer;

use crate::api::errors::ApiError;
use crate::metrics::Metrics;

/// A model being served.
pub struct ModelHandle {
    /// The id clients send as `model`.
    pub id: String,
    /// Other names for it.
    pub aliases: Vec<String>,
    /// Unix seconds when it was loaded.
    pub created: u64,
    /// The engine thread.
    pub service: EngineService,
    /// The model's tokenizer (prompts are tokenized on the request's side).
    pub tokenizer: Tokenizer,
    /// The model's chat template.
    pub template: ChatTemplate,
    /// Context size per sequence, in tokens.
    pub context: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// `system_fingerprint`: backend, device and engine limits, hashed.
    pub fingerprint: String,
}

impl ModelHandle {
    /// Whether `name` selects this model.
    pub fn answers_to(&self, name: &str) -> bool {
        self.id == name || self.aliases.iter().any(|a| a == name)
    }

    /// Renders a conversation through the chat template (with the generation prompt) and
    /// tokenizes it.
    pub fn chat_prompt(&self, messages: &[serde_json::Value]) -> Result<Vec<u32>, ApiError> {
        let tok = &self.tokenizer;
        let piece = |id: Option<u32>| {
            id.and_then(|id| tok.token_piece(id))
                .unwrap_or("")
                .to_owned()
        };
        let (bos, eos) = (piece(tok.bos_id()), piece(tok.eos_id()));
        let text = self
            .template
            .render(&ChatRequest {
                messages,
                add_generation_prompt: true,
                bos_token: &bos,
                eos_token: &eos,
                tools: None,
            })
            .map_err(|e| ApiError::bad_param("messages", e.to_string()))?;
        Ok(tok.encode(&text, tok.add_bos(), true))
    }
}

/// The server's shared state.
pub struct AppState {
    /// The models, once loaded (the first is the default).
    pub models: OnceLock<Vec<Arc<ModelHandle>>>,
    /// Metrics registry.
    pub metrics: Metrics,
    /// Set when a shutdown signal arrived: `/ready` fails and new generations are refused.
    pub shutting_down: AtomicBool,
    /// Largest request body, in bytes.
    pub body_limit: usize,
}

impl AppState {
    /// Fresh state with no model loaded yet.
    pub fn new(body_limit: usize) -> AppState {
        AppState {
            models: OnceLock::new(),
            metrics: Metrics::new(),
            shutting_down: AtomicBool::new(false),
            body_limit,
        }
    }

    /// Whether models are loaded and the server is not shutting down.
    pub fn is_ready(&self) -> bool {
        self.models.get().is_some() && !self.shutting_down.load(Ordering::SeqCst)
    }

    /// The loaded models, or 503 while they load.
    pub fn models(&self) -> Result<&[Arc<ModelHandle>], ApiError> {
        self.models
            .get()
            .map(Vec::as_slice)
            .ok_or_else(|| ApiError::unavailable("The model is still loading; try again shortly."))
    }

    /// The model that `name` selects (the default when empty or missing), for a new generation.
    pub fn model_for_generation(&self, name: Option<&str>) -> Result<Arc<ModelHandle>, ApiError> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(ApiError::unavailable("The server is shutting down."));
        }
        self.model(name)
    }

    /// The model that `name` selects (the default when empty or missing).
    pub fn model(&self, name: Option<&str>) -> Result<Arc<ModelHandle>, ApiError> {
        let models = self.models()?;
        match name.filter(|n| !n.is_empty()) {
            None => Ok(Arc::clone(&models[0])),
            Some(n) => models
                .iter()
                .find(|m| m.answers_to(n))
                .cloned()
                .ok_or_else(|| ApiError::model_not_found(n)),
        }
    }
}
