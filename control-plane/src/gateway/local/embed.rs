//! Embeddings on a local engine: each input is tokenized and embedded as its own sequence,
//! batched with whatever else the engine runs (a wave of sequences at a time, so a long list
//! never fills the engine's queue).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use engine_core::engine::{Event, Flow, Request};

use super::ModelHandle;
use super::run::EngineRun;
use crate::errors::ApiError;
use crate::gateway::upstream::{Embeddings, FailureKind, UpstreamError};
use crate::metrics::Metrics;
use crate::openai::{EmbeddingRequest, PromptInput};

/// Inputs submitted to the engine at once.
const WAVE: usize = 32;

/// Embeds every input of `req`.
pub async fn run(
    handle: &Arc<ModelHandle>,
    metrics: &Arc<Metrics>,
    req: &EmbeddingRequest,
    flow: Option<Flow>,
) -> Result<Embeddings, UpstreamError> {
    let start = Instant::now();
    let h = Arc::clone(handle);
    let body = req.clone();
    let prompts = tokio::task::spawn_blocking(move || inputs(&h, &body))
        .await
        .map_err(|e| UpstreamError::failed(FailureKind::Status, format!("tokenizing failed: {e}")))?
        .map_err(UpstreamError::Rejected)?;
    let prompt_tokens = prompts.iter().map(Vec::len).sum();
    let mut vectors = Vec::with_capacity(prompts.len());
    for wave in prompts.chunks(WAVE) {
        let requests = wave
            .iter()
            .map(|p| Request {
                flow: flow.clone(),
                ..Request::embedding(p.clone(), handle.pooling)
            })
            .collect();
        let mut run = EngineRun::start(metrics, handle, requests, start)
            .await
            .map_err(UpstreamError::from)?;
        let mut got: Vec<Option<Vec<f32>>> = vec![None; wave.len()];
        while let Some((i, ev)) = run.next().await {
            match ev {
                Event::Embedding(v) => got[i] = Some(v),
                Event::Failed(e) => return Err(UpstreamError::failed(FailureKind::Status, e)),
                _ => {}
            }
        }
        for v in got {
            vectors.push(v.ok_or_else(|| {
                UpstreamError::failed(
                    FailureKind::Unavailable,
                    "the engine ended an embedding without its vector",
                )
            })?);
        }
    }
    Ok(Embeddings {
        vectors,
        prompt_tokens,
    })
}

/// The inputs as token ids, checked against the model (the handler checked their number):
/// not empty, inside the vocabulary and the context; `dimensions`, if given, is the model's own
/// size (its vectors cannot be shortened).
fn inputs(model: &ModelHandle, req: &EmbeddingRequest) -> Result<Vec<Vec<u32>>, ApiError> {
    if let Some(d) = req.dimensions
        && d as usize != model.embedding_dim
    {
        return Err(ApiError::bad_param(
            "dimensions",
            format!(
                "The embeddings of `{}` have {} dimensions and cannot be shortened; leave `dimensions` out or set it to {}.",
                model.id, model.embedding_dim, model.embedding_dim
            ),
        ));
    }
    let tok = &model.tokenizer;
    let text = |t: &String| tok.encode(t, tok.add_bos(), true);
    let prompts: Vec<Vec<u32>> = match &req.input {
        PromptInput::Text(t) => vec![text(t)],
        PromptInput::Texts(ts) => ts.iter().map(text).collect(),
        PromptInput::Tokens(ids) => vec![ids.clone()],
        PromptInput::TokenLists(l) => l.clone(),
    };
    for (i, p) in prompts.iter().enumerate() {
        if p.is_empty() {
            return Err(ApiError::bad_param(
                "input",
                format!("input {i} is empty: it has no tokens."),
            ));
        }
        if let Some(&bad) = p.iter().find(|&&t| t as usize >= model.vocab) {
            return Err(ApiError::bad_param(
                "input",
                format!(
                    "input {i} has token id {bad}, outside the vocabulary of {}.",
                    model.vocab
                ),
            ));
        }
        if p.len() > model.context {
            return Err(ApiError {
                code: Some(Cow::Borrowed("context_length_exceeded")),
                ..ApiError::bad_param(
                    "input",
                    format!(
                        "This model's maximum context length is {} tokens, but input {i} has {} tokens. Please shorten the input.",
                        model.context,
                        p.len()
                    ),
                )
            });
        }
    }
    Ok(prompts)
}
