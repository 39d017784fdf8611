//! Responses, chunks and usage records: built by the renderer for clients, and parsed back from
//! the streams of remote upstreams ([`StreamChunk`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::request::Extra;

/// Token counts of a request.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
pub struct Usage {
    /// Prompt tokens.
    #[serde(default)]
    pub prompt_tokens: usize,
    /// Generated tokens.
    #[serde(default)]
    pub completion_tokens: usize,
    /// Their sum.
    #[serde(default)]
    pub total_tokens: usize,
}

impl Usage {
    /// Adds one choice's counts.
    pub fn add(&mut self, prompt: usize, completion: usize) {
        self.prompt_tokens += prompt;
        self.completion_tokens += completion;
        self.total_tokens = self.prompt_tokens + self.completion_tokens;
    }
}

/// One alternative in chat log-probabilities.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct TopLogprob {
    /// The token's text.
    pub token: String,
    /// Its log-probability.
    pub logprob: f32,
    /// Its UTF-8 bytes.
    #[serde(default)]
    pub bytes: Option<Vec<u8>>,
}

/// Log-probability of one generated token (chat format).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct TokenLogprob {
    /// The token's text.
    pub token: String,
    /// Its log-probability.
    pub logprob: f32,
    /// Its UTF-8 bytes.
    #[serde(default)]
    pub bytes: Option<Vec<u8>>,
    /// The most likely alternatives.
    #[serde(default)]
    pub top_logprobs: Vec<TopLogprob>,
}

/// `choices[].logprobs` of a chat completion or chunk.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct ChatLogprobs {
    /// One entry per generated token.
    #[serde(default)]
    pub content: Option<Vec<TokenLogprob>>,
    /// Always null.
    #[serde(default)]
    pub refusal: Option<serde_json::Value>,
}

/// `choices[].logprobs` of a completion (the legacy format).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct CompletionLogprobs {
    /// Token texts.
    #[serde(default)]
    pub tokens: Vec<String>,
    /// Their log-probabilities (null for the first prompt token).
    #[serde(default)]
    pub token_logprobs: Vec<Option<f32>>,
    /// The most likely alternatives per position, as text to log-probability (null for the
    /// first prompt token).
    #[serde(default)]
    pub top_logprobs: Vec<Option<BTreeMap<String, f32>>>,
    /// Character offset of each token in the choice's text.
    #[serde(default)]
    pub text_offset: Vec<usize>,
}

impl CompletionLogprobs {
    /// Appends another piece.
    pub fn extend(&mut self, other: CompletionLogprobs) {
        self.tokens.extend(other.tokens);
        self.token_logprobs.extend(other.token_logprobs);
        self.top_logprobs.extend(other.top_logprobs);
        self.text_offset.extend(other.text_offset);
    }
}

/// The assistant's message.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct AssistantMessage {
    /// Always `assistant`.
    pub role: &'static str,
    /// The reply.
    pub content: Option<String>,
    /// Always null.
    #[schema(value_type = Option<String>)]
    pub refusal: Option<()>,
    /// Other fields the upstream sent (`tool_calls`, `reasoning_content`, ...).
    #[schema(ignore)]
    #[serde(flatten)]
    pub extra: Extra,
}

/// One choice of a chat completion.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ChatChoice {
    /// Choice index.
    pub index: usize,
    /// The reply.
    pub message: AssistantMessage,
    /// Log-probabilities, when asked for.
    pub logprobs: Option<ChatLogprobs>,
    /// `stop`, `length`, `tool_calls`, ...
    pub finish_reason: String,
}

/// `chat.completion`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ChatCompletion {
    /// `chatcmpl-...`.
    pub id: String,
    /// Always `chat.completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// The model id as requested.
    pub model: String,
    /// The backend configuration fingerprint.
    pub system_fingerprint: Option<String>,
    /// The choices.
    pub choices: Vec<ChatChoice>,
    /// Token counts.
    pub usage: Usage,
}

/// The delta of a chat chunk.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct ChatDelta {
    /// `assistant` in the first chunk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// New text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Other fields (`tool_calls`, `reasoning_content`, ...).
    #[schema(ignore)]
    #[serde(flatten)]
    pub extra: Extra,
}

/// One choice of a chat chunk.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ChatChunkChoice {
    /// Choice index.
    pub index: usize,
    /// What is new.
    pub delta: ChatDelta,
    /// Log-probabilities of the tokens in this chunk, when asked for.
    pub logprobs: Option<ChatLogprobs>,
    /// Set in the choice's last chunk.
    pub finish_reason: Option<String>,
}

/// `chat.completion.chunk`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ChatCompletionChunk<'a> {
    /// Same for every chunk of a response.
    pub id: &'a str,
    /// Always `chat.completion.chunk`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// The model id as requested.
    pub model: &'a str,
    /// The backend configuration fingerprint.
    pub system_fingerprint: Option<&'a str>,
    /// Choices (empty in the usage chunk).
    pub choices: Vec<ChatChunkChoice>,
    /// Null, except in the last chunk with `stream_options.include_usage`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
}

/// One choice of a completion (or of a completion chunk).
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct CompletionChoice {
    /// Choice index (the prompt's index).
    pub index: usize,
    /// The text.
    pub text: String,
    /// Log-probabilities, when asked for.
    pub logprobs: Option<CompletionLogprobs>,
    /// `stop` or `length` (null in a chunk before the last).
    pub finish_reason: Option<String>,
}

/// `text_completion`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct Completion<'a> {
    /// `cmpl-...`.
    pub id: &'a str,
    /// Always `text_completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// The model id as requested.
    pub model: &'a str,
    /// The backend configuration fingerprint.
    pub system_fingerprint: Option<&'a str>,
    /// The choices.
    pub choices: Vec<CompletionChoice>,
    /// Token counts (null in streamed chunks, except the usage chunk).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
}

/// One chunk of a remote upstream's stream, of either endpoint (chat chunks carry `delta`,
/// completion chunks `text`).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct StreamChunk {
    /// The choices in this chunk.
    #[serde(default)]
    pub choices: Vec<StreamChoice>,
    /// Token counts (the usage chunk).
    #[serde(default)]
    pub usage: Option<Usage>,
    /// The upstream's fingerprint.
    #[serde(default)]
    pub system_fingerprint: Option<String>,
    /// An error event (`{"error": {...}}`) instead of a chunk.
    #[serde(default)]
    pub error: Option<serde_json::Value>,
}

/// One choice of a [`StreamChunk`].
#[derive(Clone, Debug, Default, Deserialize)]
pub struct StreamChoice {
    /// Choice index.
    #[serde(default)]
    pub index: usize,
    /// A chat delta.
    #[serde(default)]
    pub delta: Option<ChatDelta>,
    /// Completion text.
    #[serde(default)]
    pub text: Option<String>,
    /// Log-probabilities in the endpoint's format.
    #[serde(default)]
    pub logprobs: Option<serde_json::Value>,
    /// Set in the choice's last chunk.
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// A browser variant of a model as `/v1/models` lists it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
pub struct VariantCard {
    /// Where the browser downloads the GGUF file (relative URLs are relative to the server).
    pub url: String,
    /// SHA-256 of the file (hex), once known.
    pub sha256: String,
    /// File size in bytes.
    pub bytes: u64,
    /// The weights' quantization (`Q4_1`, ...).
    pub quantization: String,
    /// Memory the engine needs for it (weights, KV cache, scratch), in bytes.
    pub memory_bytes: u64,
    /// WebGPU features it needs.
    pub required_features: Vec<String>,
    /// Its largest tensor in bytes (a WebGPU buffer must hold it), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tensor_bytes: Option<u64>,
}

/// One entry of `GET /v1/models`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ModelCard {
    /// The id (or alias) to put in requests.
    pub id: String,
    /// Always `model`.
    pub object: &'static str,
    /// Unix seconds when it was loaded.
    pub created: u64,
    /// Who serves it (`tandem`, or the upstream's id).
    pub owned_by: String,
    /// Context size in tokens (vLLM's extension).
    pub max_model_len: Option<usize>,
    /// The model this alias points to.
    pub root: String,
    /// The upstreams that serve it (Tandem's extension).
    pub upstreams: Vec<String>,
    /// Files a browser can run it from (Tandem's extension).
    pub browser_variants: Vec<VariantCard>,
}

/// `GET /v1/models`.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ModelList {
    /// Always `list`.
    pub object: &'static str,
    /// The models and their aliases.
    pub data: Vec<ModelCard>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_serialize_usage_as_openai_does() {
        let chunk = ChatCompletionChunk {
            id: "chatcmpl-1",
            object: "chat.completion.chunk",
            created: 1,
            model: "m",
            system_fingerprint: Some("fp"),
            choices: vec![],
            usage: Some(None),
        };
        let v = serde_json::to_value(&chunk).unwrap();
        assert!(v["usage"].is_null() && v.as_object().unwrap().contains_key("usage"));
        let chunk = ChatCompletionChunk {
            usage: None,
            ..chunk
        };
        let v = serde_json::to_value(&chunk).unwrap();
        assert!(!v.as_object().unwrap().contains_key("usage"));
    }

    #[test]
    fn remote_chunks_of_both_endpoints_parse() {
        let c: StreamChunk = serde_json::from_str(
            r#"{"id":"x","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hi","tool_calls":[{"index":0}]},"logprobs":null,"finish_reason":null}]}"#,
        )
        .unwrap();
        let d = c.choices[0].delta.as_ref().unwrap();
        assert_eq!(d.content.as_deref(), Some("Hi"));
        assert!(d.extra.contains_key("tool_calls"));
        let c: StreamChunk = serde_json::from_str(
            r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5,"prompt_tokens_details":null}}"#,
        )
        .unwrap();
        assert_eq!(c.usage.unwrap().total_tokens, 5);
        let c: StreamChunk = serde_json::from_str(
            r#"{"choices":[{"index":1,"text":" there","finish_reason":"length"}]}"#,
        )
        .unwrap();
        assert_eq!(c.choices[0].index, 1);
        assert_eq!(c.choices[0].text.as_deref(), Some(" there"));
    }
}
