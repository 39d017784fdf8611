//! `POST /infill`: llama.cpp's fill-in-the-middle endpoint, so that editor plugins written for
//! `llama-server` (llama.vim, llama.vscode) work unchanged. The request (`input_prefix`,
//! `input_suffix`, `input_extra`, `prompt`, `n_predict` and llama.cpp's sampling fields) becomes
//! a completion with a suffix, routed like any other; the answer is in llama.cpp's shape.

use std::sync::Arc;
use std::time::Instant;

use axum::Extension;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use engine_core::infill::ExtraFile;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

use super::generation;
use super::json::JsonBody;
use crate::accounting::RequestTag;
use crate::api::openapi::errors::GenerationErrors;
use crate::errors::ApiError;
use crate::openai::{ApiRequest, CompletionRequest, InfillParts};
use crate::render::RenderSpec;
use crate::render::llama::InfillResult;
use crate::state::SharedState;

/// Most files in `input_extra`.
pub const MAX_EXTRA_FILES: usize = 256;

/// The body of `POST /infill`. Fields llama.cpp has that Tandem does not use (`n_indent`,
/// `t_max_prompt_ms`, `cache_prompt`, `samplers`, ...) are accepted and ignored.
#[derive(Debug, Deserialize, ToSchema)]
pub struct InfillRequest {
    /// The model (default: the server's default model).
    #[serde(default)]
    pub model: Option<String>,
    /// Text before the cursor.
    #[serde(default)]
    pub input_prefix: String,
    /// Text after the cursor.
    #[serde(default)]
    pub input_suffix: String,
    /// Other files as context.
    #[serde(default)]
    pub input_extra: Vec<ExtraChunk>,
    /// Text typed at the cursor, appended to the prefix.
    #[serde(default)]
    pub prompt: String,
    /// Most tokens to generate; negative or absent: until the end.
    #[serde(default)]
    pub n_predict: Option<i64>,
    /// Stream the answer.
    #[serde(default)]
    pub stream: bool,
    /// llama.cpp's `repeat_penalty` (`repetition_penalty` here).
    #[serde(default)]
    pub repeat_penalty: Option<f32>,
    /// Everything else: sampling fields shared with the OpenAI API (`temperature`, `top_k`,
    /// `top_p`, `min_p`, `seed`, `stop`, ...) are used; the rest is ignored.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// One file of `input_extra`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct ExtraChunk {
    /// Its name.
    #[serde(default)]
    pub filename: String,
    /// Its text.
    #[serde(default)]
    pub text: String,
}

/// Sampling fields of llama.cpp's request that mean the same as in a completion request.
const SHARED_FIELDS: &[&str] = &[
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "seed",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "ignore_eos",
    "logit_bias",
];

impl InfillRequest {
    /// The completion request it amounts to.
    pub fn into_completion(self) -> Result<CompletionRequest, ApiError> {
        if self.input_extra.len() > MAX_EXTRA_FILES {
            return Err(ApiError::bad_param(
                "input_extra",
                format!(
                    "At most {MAX_EXTRA_FILES} files, got {}.",
                    self.input_extra.len()
                ),
            ));
        }
        let mut body = Map::new();
        for (k, v) in self.other {
            if SHARED_FIELDS.contains(&k.as_str()) && !v.is_null() {
                body.insert(k, v);
            }
        }
        if let Some(p) = self.repeat_penalty {
            body.insert("repetition_penalty".into(), json!(p));
        }
        if let Some(m) = &self.model {
            body.insert("model".into(), json!(m));
        }
        if let Some(n) = self.n_predict.filter(|n| *n >= 0) {
            body.insert("max_tokens".into(), json!(n));
        }
        body.insert("prompt".into(), json!(self.input_prefix + &self.prompt));
        body.insert("suffix".into(), json!(self.input_suffix));
        if self.stream {
            body.insert("stream".into(), json!(true));
            body.insert("stream_options".into(), json!({"include_usage": true}));
        }
        let mut req: CompletionRequest = serde_json::from_value(Value::Object(body))
            .map_err(|e| ApiError::bad_request(format!("Invalid infill request: {e}")))?;
        req.infill = Some(InfillParts {
            files: self
                .input_extra
                .into_iter()
                .map(|c| ExtraFile {
                    filename: c.filename,
                    text: c.text,
                })
                .collect(),
        });
        Ok(req)
    }
}

/// Fills in the middle (llama.cpp).
///
/// Fills in the middle (llama.cpp's `POST /infill`, as editor plugins written for llama-server
/// send it): the text between `input_prefix` and `input_suffix`, with other files as context.
#[utoipa::path(
    post,
    operation_id = "infill",
    path = "/infill",
    tag = "llama.cpp",
    request_body = InfillRequest,
    responses(
        (status = 200, description = "The infill; with `stream: true`, partial results as server-sent events (`stop: false`) and the final one", content(
            (InfillResult = "application/json"),
            (InfillResult = "text/event-stream"),
        )),
        GenerationErrors,
    ),
    security((), ("api_key" = []))
)]
pub async fn handle(
    State(state): State<SharedState>,
    headers: HeaderMap,
    tag: Option<Extension<Arc<RequestTag>>>,
    JsonBody(req): JsonBody<InfillRequest>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let req = ApiRequest::Completion(req.into_completion()?);
    let spec = RenderSpec {
        llama_since: Some(started),
        ..RenderSpec::of(&req)
    };
    generation::handle_rendered(&state, &headers, tag.as_deref().map(Arc::as_ref), req, spec).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> InfillRequest {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_llama_vim_request_becomes_a_completion_with_a_suffix() {
        let req = parse(json!({
            "input_prefix": "def add(a, b):\n    ",
            "input_suffix": "\n\nprint(add(1, 2))\n",
            "input_extra": [{"filename": "util.py", "text": "import math\n"}],
            "prompt": "return",
            "n_predict": 64,
            "top_k": 40,
            "top_p": 0.99,
            "stream": true,
            "samplers": ["top_k", "top_p", "infill"],
            "cache_prompt": true,
            "t_max_prompt_ms": 500,
            "n_indent": 4,
            "repeat_penalty": 1.1,
        }))
        .into_completion()
        .unwrap();
        assert_eq!(
            serde_json::to_value(&req.prompt).unwrap(),
            json!("def add(a, b):\n    return")
        );
        assert_eq!(req.suffix.as_deref(), Some("\n\nprint(add(1, 2))\n"));
        assert_eq!(req.max_tokens, Some(64));
        assert_eq!(req.sampling.top_k, Some(40));
        assert_eq!(req.sampling.repetition_penalty, Some(1.1));
        assert!(req.sampling.stream());
        assert!(req.extra.is_empty(), "{:?}", req.extra);
        let files = &req.infill.as_ref().unwrap().files;
        assert_eq!(files[0].filename, "util.py");
        // Nothing of /infill's own is sent to a remote upstream.
        let sent = serde_json::to_value(&req).unwrap();
        assert!(sent.get("infill").is_none() && sent.get("input_extra").is_none());
    }

    #[test]
    fn negative_n_predict_means_until_the_end_and_bad_fields_are_refused() {
        let req = parse(json!({"input_prefix": "x", "n_predict": -1}))
            .into_completion()
            .unwrap();
        assert_eq!(req.max_tokens, None);
        assert!(req.infill.is_some());
        let bad = parse(json!({"input_prefix": "x", "temperature": "hot"})).into_completion();
        assert!(bad.is_err());
        let many: Vec<Value> = (0..=MAX_EXTRA_FILES)
            .map(|_| json!({"text": "a"}))
            .collect();
        assert!(
            parse(json!({"input_extra": many}))
                .into_completion()
                .is_err()
        );
    }
}
