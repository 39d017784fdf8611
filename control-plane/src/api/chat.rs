//! `POST /v1/chat/completions`: a conversation, answered whole or streamed as
//! `chat.completion.chunk` events by whichever upstream the gateway picks.

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
use crate::openai::{ApiRequest, ChatCompletion, ChatCompletionChunk, ChatCompletionRequest};
use crate::state::SharedState;

/// Creates a chat completion.
///
/// The model's answer to a conversation, whole or streamed as
/// `chat.completion.chunk` server-sent events (`stream: true`). Tools, structured outputs,
/// log-probabilities and `n` choices as in OpenAI's API; vLLM's sampling and `guided_*` fields.
#[utoipa::path(
    post,
    operation_id = "createChatCompletion",
    path = "/v1/chat/completions",
    tag = "OpenAI",
    request_body = ChatCompletionRequest,
    responses(
        (status = 200, description = "The completion; with `stream: true`, its chunks as server-sent events ending with `data: [DONE]`", content(
            (ChatCompletion = "application/json"),
            (ChatCompletionChunk = "text/event-stream"),
        )),
        GenerationErrors,
    ),
    security((), ("api_key" = []))
)]
pub async fn handle(
    State(state): State<SharedState>,
    headers: HeaderMap,
    tag: Option<Extension<Arc<RequestTag>>>,
    JsonBody(req): JsonBody<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    generation::handle(
        &state,
        &headers,
        tag.as_deref().map(Arc::as_ref),
        ApiRequest::Chat(req),
    )
    .await
}
