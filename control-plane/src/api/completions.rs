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
use crate::api::openapi::errors::GenerationErrors;
use crate::errors::ApiError;
use crate::openai::{ApiRequest, Completion, CompletionRequest};
use crate::state::SharedState;

/// Creates a text completion.
///
/// Creates a text completion (OpenAI's legacy API): one choice per prompt (text, token ids or
/// lists of either), `suffix` for fill-in-the-middle, `echo` and `logprobs` for scoring.
#[utoipa::path(
    post,
    operation_id = "createCompletion",
    path = "/v1/completions",
    tag = "OpenAI",
    request_body = CompletionRequest,
    responses(
        (status = 200, description = "The completion; with `stream: true`, `text_completion` chunks as server-sent events ending with `data: [DONE]`", content(
            (Completion = "application/json"),
            (Completion = "text/event-stream"),
        )),
        GenerationErrors,
    ),
    security((), ("api_key" = []))
)]
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
