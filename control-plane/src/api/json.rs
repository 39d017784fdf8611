//! The JSON body extractor: bodies over the limit are 413, bodies that are not JSON or do not
//! match the schema are 400, always in OpenAI's error shape (axum's own rejections are plain
//! text).

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use crate::errors::ApiError;
use crate::state::SharedState;

/// A request body parsed as JSON into `T`.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<SharedState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &SharedState) -> Result<Self, ApiError> {
        let bytes = read_limited(req.into_body(), state.body_limit).await?;
        parse(&bytes).map(JsonBody)
    }
}

/// Most bytes read and thrown away after the limit, so that the client finishes sending and
/// reads the 413 instead of seeing its connection reset.
const DISCARD_LIMIT: usize = 64 * 1024 * 1024;

/// Reads a body of at most `limit` bytes.
async fn read_limited(body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut stream = body.into_data_stream();
    let mut buf = Vec::new();
    let mut over = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|e| ApiError::bad_request(format!("Could not read the request body: {e}")))?;
        if over > 0 || buf.len() + chunk.len() > limit {
            over += chunk.len();
            if over > DISCARD_LIMIT {
                break;
            }
            continue;
        }
        buf.extend_from_slice(&chunk);
    }
    if over > 0 {
        return Err(ApiError::too_large(limit));
    }
    Ok(buf)
}

/// Parses a body, with messages that say what is wrong and where.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // The common case in one pass; the slower path below only words the error.
    if let Ok(v) = serde_json::from_slice::<T>(bytes) {
        return Ok(v);
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "The request body is empty; expected a JSON object.",
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(format!("The request body is not valid JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "The request body must be a JSON object.",
        ));
    }
    serde_json::from_value(value)
        .map_err(|e| ApiError::bad_request(format!("Invalid request: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::ChatCompletionRequest;

    #[test]
    fn messages_name_the_problem() {
        let e = parse::<ChatCompletionRequest>(b"{\"messages\": [")
            .err()
            .unwrap();
        assert!(e.message.contains("not valid JSON"), "{}", e.message);
        let e = parse::<ChatCompletionRequest>(b"[1]").err().unwrap();
        assert!(e.message.contains("JSON object"));
        let e = parse::<ChatCompletionRequest>(b"{\"messages\": 3}")
            .err()
            .unwrap();
        assert!(e.message.contains("invalid type"), "{}", e.message);
        let e = parse::<ChatCompletionRequest>(b"{}").err().unwrap();
        assert!(e.message.contains("messages"), "{}", e.message);
    }
}
