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
use crate::errors::ApiError;
use crate::openai::{ApiRequest, ChatCompletionRequest};
use crate::state::SharedState;

/// Handles the request.
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
