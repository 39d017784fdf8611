//! `POST /v1/completions`: the legacy text completion API. Prompts are text, token ids, or
//! lists of either (one choice per prompt); `echo` with `logprobs` and `max_tokens: 0` returns
//! the prompt tokens' log-probabilities, as OpenAI's legacy API and vLLM do.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;

use super::generation;
use super::json::JsonBody;
use crate::accounting::RequestTag;
use crate::errors::ApiError;
use crate::openai::{ApiRequest, CompletionRequest};
use crate::state::SharedState;

/// Handles the request.
pub async fn handle(
    State(state): State<SharedState>,
    headers: HeaderMap,
    tag: Option<Extension<Arc<RequestTag>>>,
    JsonBody(req): JsonBody<CompletionRequest>,
) -> Result<Response, ApiError> {
    generation::handle(
        &state,
        &headers,
        tag.as_deref().map(Arc::as_ref),
        ApiRequest::Completion(req),
    )
    .await
}
