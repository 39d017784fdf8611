//! `POST /v1/embeddings`: parse -> validate -> route through the gateway -> render, with the
//! same keys, limits, budgets and usage ledger as the generation endpoints (an embedding is
//! charged its input tokens).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use super::generation::{
    BYTES_PER_TOKEN, BYTES_PER_TOKEN_BOUND, UPSTREAM_HEADER, admit, as_tenant, estimate,
    forwarded_headers,
};
use super::json::JsonBody;
use crate::accounting::meter::{Meter, Source, metered};
use crate::accounting::{RequestTag, rate_limit_headers};
use crate::api::openapi::errors::GenerationErrors;
use crate::errors::ApiError;
use crate::gateway::dispatch::RequestContext;
use crate::gateway::embed::Embedded;
use crate::gateway::router::Needs;
use crate::gateway::upstream::{Features, Output};
use crate::openai::{
    EmbeddingData, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage, EmbeddingVector,
    EncodingFormat, PromptInput, Usage,
};
use crate::state::SharedState;

/// Most inputs per request (OpenAI's limit).
pub const MAX_INPUTS: usize = 2048;

/// Creates embeddings.
///
/// One unit-length vector per input (texts or token ids), pooled from the
/// model's final hidden states as its `pooling_type` says.
#[utoipa::path(
    post,
    operation_id = "createEmbedding",
    path = "/v1/embeddings",
    tag = "OpenAI",
    request_body = EmbeddingRequest,
    responses(
        (status = 200, description = "One vector per input, in input order", body = EmbeddingResponse),
        GenerationErrors,
    ),
    security((), ("api_key" = []))
)]
pub async fn handle(
    State(state): State<SharedState>,
    headers: HeaderMap,
    tag: Option<Extension<Arc<RequestTag>>>,
    JsonBody(req): JsonBody<EmbeddingRequest>,
) -> Result<Response, ApiError> {
    let tag = tag.as_deref().map(Arc::as_ref);
    let gateway = state.gateway_for_generation()?;
    let format = validate(&req)?;
    let mut ctx = RequestContext {
        policy: None,
        headers: forwarded_headers(&headers, req.user.as_deref()),
        prefix_key: None,
        needs: needs(&req.input),
    };
    let caller = tag.and_then(RequestTag::caller);
    if let Some(c) = &caller {
        as_tenant(&mut ctx, c);
    }
    let name = req
        .model
        .clone()
        .filter(|m| !m.is_empty())
        .or_else(|| gateway.default_model())
        .unwrap_or_default();
    let accounting = state.accounting.as_ref().zip(tag);
    let mut admission = None;
    if let Some((acc, tag)) = accounting {
        tag.set_model(&name);
        if let Some(c) = &caller {
            // Its input tokens (`needs.max_tokens` is 0: nothing is generated).
            let (tokens, usd) = estimate(gateway, &name, &ctx);
            match admit(acc, c, &name, tokens, usd).await {
                Ok(a) => admission = Some(a),
                Err(refused) => return Ok(refused),
            }
        }
        // Left in flight until the answer completes it (found interrupted after a crash).
        acc.ledger
            .record(tag.record(caller.as_ref(), "in_flight", 0));
    }
    let verdict = admission.as_ref().map(|a| a.verdict);
    let embedded = match gateway.embed(req, ctx).await {
        Ok(e) => e,
        Err(e) => {
            if let (Some((acc, _)), Some(a)) = (accounting, &admission) {
                acc.settle(a, 0, 0.0).await;
            }
            return Err(e);
        }
    };
    let Embedded {
        embeddings,
        upstream,
        model,
    } = embedded;
    let prompt_tokens = embeddings.prompt_tokens;
    if let Some((acc, tag)) = accounting {
        // The usage record is complete and durable before the answer is sent.
        let mut record = tag.record(caller.as_ref(), "in_flight", 0);
        record.model.clone_from(&model);
        let usage = Output::Usage(Usage {
            prompt_tokens,
            completion_tokens: 0,
            total_tokens: prompt_tokens,
        });
        let meter = Meter::new(
            Arc::clone(acc),
            admission,
            record,
            Source {
                upstream: Arc::clone(&upstream),
                cached: false,
            },
            tag.started,
            &usage,
        );
        tag.claimed.store(true, Ordering::SeqCst);
        let mut closed = metered(futures_util::stream::empty().boxed(), meter);
        while closed.next().await.is_some() {}
    }
    let body = EmbeddingResponse {
        object: "list".into(),
        data: embeddings
            .vectors
            .into_iter()
            .enumerate()
            .map(|(index, v)| EmbeddingData {
                object: "embedding".into(),
                index,
                embedding: EmbeddingVector::encode(v, format),
            })
            .collect(),
        model,
        usage: EmbeddingUsage {
            prompt_tokens,
            total_tokens: prompt_tokens,
        },
    };
    let mut resp = axum::Json(body).into_response();
    if let Ok(id) = HeaderValue::from_str(&upstream.id) {
        resp.headers_mut().insert(UPSTREAM_HEADER, id);
    }
    if let Some(v) = verdict {
        rate_limit_headers(resp.headers_mut(), &v);
    }
    Ok(resp)
}

/// Checks what no upstream should have to: OpenAI's limits on the fields; returns the format.
fn validate(req: &EmbeddingRequest) -> Result<EncodingFormat, ApiError> {
    let format = EncodingFormat::parse(req.encoding_format.as_deref()).ok_or_else(|| {
        ApiError::bad_param(
            "encoding_format",
            format!(
                "encoding_format must be `float` or `base64`, got {:?}.",
                req.encoding_format.as_deref().unwrap_or_default()
            ),
        )
    })?;
    let n = req.input.count();
    if n == 0 {
        return Err(ApiError::bad_param("input", "input must not be empty."));
    }
    if n > MAX_INPUTS {
        return Err(ApiError::bad_param(
            "input",
            format!("At most {MAX_INPUTS} inputs per request, got {n}."),
        ));
    }
    let empty = match &req.input {
        PromptInput::Text(t) => t.is_empty().then_some(0),
        PromptInput::Tokens(ids) => ids.is_empty().then_some(0),
        PromptInput::Texts(ts) => ts.iter().position(String::is_empty),
        PromptInput::TokenLists(l) => l.iter().position(Vec::is_empty),
    };
    if let Some(i) = empty {
        return Err(ApiError::bad_param(
            "input",
            format!("input {i} is empty; every input needs at least one token."),
        ));
    }
    if req.dimensions == Some(0) {
        return Err(ApiError::bad_param(
            "dimensions",
            "dimensions must be at least 1.",
        ));
    }
    Ok(format)
}

/// What the request needs of an upstream: embeddings, and room for its longest input.
fn needs(input: &PromptInput) -> Needs {
    let (total, bound) = match input {
        PromptInput::Text(t) => (t.len() / BYTES_PER_TOKEN, t.len() / BYTES_PER_TOKEN_BOUND),
        PromptInput::Texts(ts) => (
            ts.iter().map(String::len).sum::<usize>() / BYTES_PER_TOKEN,
            ts.iter().map(String::len).max().unwrap_or(0) / BYTES_PER_TOKEN_BOUND,
        ),
        PromptInput::Tokens(ids) => (ids.len(), ids.len()),
        PromptInput::TokenLists(l) => (
            l.iter().map(Vec::len).sum(),
            l.iter().map(Vec::len).max().unwrap_or(0),
        ),
    };
    Needs {
        features: Features {
            embeddings: true,
            token_prompts: input.has_token_ids(),
            ..Features::default()
        },
        prompt_tokens: total.max(1),
        prompt_tokens_bound: bound,
        max_tokens: Some(0),
        choices: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(json: serde_json::Value) -> EmbeddingRequest {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn fields_are_checked() {
        assert!(validate(&req(serde_json::json!({"input": "x"}))).is_ok());
        assert!(validate(&req(serde_json::json!({"input": []}))).is_err());
        assert!(validate(&req(serde_json::json!({"input": ["a", ""]}))).is_err());
        assert!(validate(&req(serde_json::json!({"input": [[1], []]}))).is_err());
        assert!(
            validate(&req(
                serde_json::json!({"input": "x", "encoding_format": "int8"})
            ))
            .is_err()
        );
        assert!(validate(&req(serde_json::json!({"input": "x", "dimensions": 0}))).is_err());
        let many: Vec<String> = (0..MAX_INPUTS + 1).map(|i| i.to_string()).collect();
        assert!(validate(&req(serde_json::json!({ "input": many }))).is_err());
    }

    #[test]
    fn needs_count_every_input_and_bound_the_longest() {
        let n = needs(&req(serde_json::json!({"input": [[1, 2, 3], [4]]})).input);
        assert!(n.features.embeddings && n.features.token_prompts);
        assert_eq!((n.prompt_tokens, n.prompt_tokens_bound), (4, 3));
        let n = needs(&req(serde_json::json!({"input": ["abcdefgh", "abcdefghabcdefgh"]})).input);
        assert_eq!((n.prompt_tokens, n.prompt_tokens_bound), (6, 2));
    }
}
