//! Request bodies as clients send them. Every type deserializes what clients send and
//! serializes it back: fields Tandem does not interpret (`tools`, `response_format`, vendor
//! extensions) land in an `extra` map and are written out again unchanged when the request is
//! forwarded to a remote upstream.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Fields a type does not name, kept in order to be forwarded.
pub type Extra = serde_json::Map<String, serde_json::Value>;

/// `stop`: one string or a list of them.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(untagged)]
pub enum StopSpec {
    /// A single stop string.
    One(String),
    /// Several stop strings.
    Many(Vec<String>),
}

impl StopSpec {
    /// The stop strings as a list.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            StopSpec::One(s) => vec![s.clone()],
            StopSpec::Many(v) => v.clone(),
        }
    }
}

/// `stream_options`.
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
pub struct StreamOptions {
    /// Send a last chunk with the usage of the whole request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_usage: Option<bool>,
    /// Other options, forwarded.
    #[schema(ignore)]
    #[serde(flatten)]
    pub extra: Extra,
}

/// Sampling fields shared by both endpoints (flattened into each request).
#[derive(Clone, Debug, Default, Deserialize, Serialize, ToSchema)]
pub struct SamplingFields {
    /// Softmax temperature (0 to 2 in OpenAI; 0 = greedy). Default 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Nucleus sampling threshold. Default 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f32>,
    /// Keep the k most likely tokens (vLLM extension; 0 or -1 = off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<i64>,
    /// Min-p filter (vLLM extension).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_p: Option<f32>,
    /// Seed of the random draws.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    /// Stop strings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop: Option<StopSpec>,
    /// Presence penalty, -2 to 2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f32>,
    /// Frequency penalty, -2 to 2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f32>,
    /// Repetition penalty (vLLM extension; 1 = off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repetition_penalty: Option<f32>,
    /// Token id (as a string) to bias added to its logit, -100 to 100.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logit_bias: Option<BTreeMap<String, f32>>,
    /// Number of choices.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    /// Stream the answer as server-sent events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Streaming options.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// An end-user id (used as the fairness id towards inference gateways).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Keep generating after the end-of-turn token (vLLM extension, for benchmarks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ignore_eos: Option<bool>,
    /// Structured output: `{type: "text" | "json_object" | "json_schema", json_schema: {name,
    /// schema, strict}}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_format: Option<serde_json::Value>,
    /// vLLM's structured outputs: a JSON schema (an object, or a string holding one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guided_json: Option<serde_json::Value>,
    /// vLLM's: a regular expression the whole output matches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guided_regex: Option<String>,
    /// vLLM's: the output is one of these strings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guided_choice: Option<Vec<String>>,
    /// vLLM's: a grammar in Lark's EBNF the output is a sentence of.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guided_grammar: Option<String>,
}

impl SamplingFields {
    /// Whether the client asked for a stream.
    pub fn stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// Whether a streamed answer ends with a usage chunk.
    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }

    /// Whether it asks for structured output (any of `response_format` other than text and the
    /// `guided_*` fields).
    pub fn structured(&self) -> bool {
        self.response_format
            .as_ref()
            .is_some_and(|f| f.get("type").and_then(|t| t.as_str()) != Some("text"))
            || self.guided_json.is_some()
            || self.guided_regex.is_some()
            || self.guided_choice.is_some()
            || self.guided_grammar.is_some()
    }

    /// Asks for a stream with a usage chunk (what the gateway sends to remote upstreams, so it
    /// sees each token as it comes and the exact token counts at the end).
    pub fn force_stream_with_usage(&mut self) {
        self.stream = Some(true);
        self.stream_options
            .get_or_insert_with(StreamOptions::default)
            .include_usage = Some(true);
    }
}

/// Message content: a string, or a list of parts.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
#[serde(untagged)]
pub enum MessageContent {
    /// Plain text.
    Text(String),
    /// Content parts.
    Parts(Vec<ContentPart>),
}

impl MessageContent {
    /// The text of the content (text parts joined by newlines), for routing keys and sizes.
    pub fn text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            MessageContent::Text(t) => t.as_str().into(),
            MessageContent::Parts(parts) => parts
                .iter()
                .filter_map(|p| p.text.as_deref())
                .collect::<Vec<_>>()
                .join("\n")
                .into(),
        }
    }
}

/// One content part (`{"type": "text", "text": "..."}`, or another type, forwarded as it is).
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct ContentPart {
    /// The part's type.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a text part.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The rest of the part (`image_url`, ...).
    #[schema(ignore)]
    #[serde(flatten)]
    pub extra: Extra,
}

/// One message of a conversation.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct ChatMessage {
    /// `system`, `developer`, `user`, `assistant` or `tool`.
    pub role: String,
    /// The content (may be null for an assistant message).
    #[serde(default)]
    pub content: Option<MessageContent>,
    /// The author's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Other fields (`tool_calls`, `tool_call_id`, ...), forwarded.
    #[schema(ignore)]
    #[serde(flatten)]
    pub extra: Extra,
}

/// `POST /v1/chat/completions`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct ChatCompletionRequest {
    /// Model id or alias; empty or missing means the default model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Most tokens to generate (deprecated name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// Most tokens to generate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u64>,
    /// Return log-probabilities of the generated tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<bool>,
    /// Alternatives per position, 0 to 20 (needs `logprobs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<u32>,
    /// Open the assistant's turn after the messages (vLLM's extension; default true unless
    /// `continue_final_message`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub add_generation_prompt: Option<bool>,
    /// Continue the final (assistant) message instead of starting a new turn (vLLM's
    /// extension): the answer goes on from its text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub continue_final_message: Option<bool>,
    /// Functions the model may call (`[{type: "function", function: {name, description,
    /// parameters}}]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<serde_json::Value>>,
    /// `none`, `auto`, `required`, or `{type: "function", function: {name}}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<serde_json::Value>,
    /// Whether one answer may call several functions (default true).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    /// Sampling parameters.
    #[serde(flatten)]
    pub sampling: SamplingFields,
    /// Fields Tandem does not interpret (`tools`, `response_format`, ...), forwarded.
    #[schema(ignore)]
    #[serde(flatten)]
    pub extra: Extra,
}

/// `prompt`: text, texts, token ids, or lists of token ids.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum PromptInput {
    /// One text prompt.
    Text(String),
    /// One prompt as token ids.
    Tokens(Vec<u32>),
    /// Several text prompts.
    Texts(Vec<String>),
    /// Several prompts as token ids.
    TokenLists(Vec<Vec<u32>>),
}

impl PromptInput {
    /// How many prompts (choices) it holds.
    pub fn count(&self) -> usize {
        match self {
            PromptInput::Text(_) | PromptInput::Tokens(_) => 1,
            PromptInput::Texts(t) => t.len(),
            PromptInput::TokenLists(l) => l.len(),
        }
    }

    /// Whether any prompt is given as token ids.
    pub fn has_token_ids(&self) -> bool {
        matches!(self, PromptInput::Tokens(_) | PromptInput::TokenLists(_))
    }
}

impl<'de> Deserialize<'de> for PromptInput {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let v = serde_json::Value::deserialize(d)?;
        let shape = || {
            D::Error::custom(
                "invalid prompt: expected a string, an array of strings, an array of token ids, or an array of arrays of token ids",
            )
        };
        let ids = |v: &serde_json::Value| -> Option<Vec<u32>> {
            v.as_array()?
                .iter()
                .map(|x| x.as_u64().and_then(|n| u32::try_from(n).ok()))
                .collect()
        };
        match &v {
            serde_json::Value::String(s) => Ok(PromptInput::Text(s.clone())),
            serde_json::Value::Array(items) => {
                if items.is_empty() {
                    Ok(PromptInput::Tokens(Vec::new()))
                } else if items.iter().all(|x| x.is_string()) {
                    Ok(PromptInput::Texts(
                        items
                            .iter()
                            .filter_map(|x| x.as_str().map(str::to_owned))
                            .collect(),
                    ))
                } else if items.iter().all(|x| x.is_number()) {
                    ids(&v).map(PromptInput::Tokens).ok_or_else(shape)
                } else if items.iter().all(|x| x.is_array()) {
                    items
                        .iter()
                        .map(ids)
                        .collect::<Option<Vec<_>>>()
                        .map(PromptInput::TokenLists)
                        .ok_or_else(shape)
                } else {
                    Err(shape())
                }
            }
            _ => Err(shape()),
        }
    }
}

/// `POST /v1/completions`.
#[derive(Clone, Debug, Deserialize, Serialize, ToSchema)]
pub struct CompletionRequest {
    /// Model id or alias; empty or missing means the default model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The prompt(s).
    pub prompt: PromptInput,
    /// Most tokens to generate (default 16, as OpenAI); 0 with `echo` scores the prompt only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    /// Return the prompt before the completion (with its log-probabilities when `logprobs` is
    /// set).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub echo: Option<bool>,
    /// Log-probabilities with this many alternatives per token, 0 to 5.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<u32>,
    /// `best_of`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub best_of: Option<u32>,
    /// Text after the completion (fill-in-the-middle).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suffix: Option<String>,
    /// Set by llama.cpp's `/infill` only (never read from or sent in a `/v1/completions`
    /// body): the request is a fill-in-the-middle one even with an empty suffix, other files
    /// of the repository go before it, and it generates until the end by default.
    #[serde(skip)]
    pub infill: Option<InfillParts>,
    /// Sampling parameters.
    #[serde(flatten)]
    pub sampling: SamplingFields,
    /// Fields Tandem does not interpret, forwarded.
    #[schema(ignore)]
    #[serde(flatten)]
    pub extra: Extra,
}

/// What llama.cpp's `/infill` adds to a completion request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InfillParts {
    /// Other files given as context (`input_extra`), most relevant last.
    pub files: Vec<engine_core::infill::ExtraFile>,
}

/// The two generation endpoints, whose requests, chunks and log-probabilities differ in shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/chat/completions`: `chat.completion` and `chat.completion.chunk`.
    Chat,
    /// `/v1/completions`: `text_completion`.
    Completion,
}

/// A generation request of either endpoint.
#[derive(Clone, Debug)]
pub enum ApiRequest {
    /// `POST /v1/chat/completions`.
    Chat(ChatCompletionRequest),
    /// `POST /v1/completions`.
    Completion(CompletionRequest),
}

impl ApiRequest {
    /// Which endpoint it is for.
    pub fn endpoint(&self) -> Endpoint {
        match self {
            ApiRequest::Chat(_) => Endpoint::Chat,
            ApiRequest::Completion(_) => Endpoint::Completion,
        }
    }

    /// The requested model name (`None` when empty or missing).
    pub fn model(&self) -> Option<&str> {
        match self {
            ApiRequest::Chat(r) => r.model.as_deref(),
            ApiRequest::Completion(r) => r.model.as_deref(),
        }
        .filter(|m| !m.is_empty())
    }

    /// Sets the model name (what the upstream calls the model).
    pub fn set_model(&mut self, name: &str) {
        let m = match self {
            ApiRequest::Chat(r) => &mut r.model,
            ApiRequest::Completion(r) => &mut r.model,
        };
        *m = Some(name.to_owned());
    }

    /// The sampling fields.
    pub fn sampling(&self) -> &SamplingFields {
        match self {
            ApiRequest::Chat(r) => &r.sampling,
            ApiRequest::Completion(r) => &r.sampling,
        }
    }

    /// The sampling fields, to change.
    pub fn sampling_mut(&mut self) -> &mut SamplingFields {
        match self {
            ApiRequest::Chat(r) => &mut r.sampling,
            ApiRequest::Completion(r) => &mut r.sampling,
        }
    }

    /// The most tokens the client allows the completion (`None`: the upstream's default).
    pub fn max_tokens(&self) -> Option<u64> {
        match self {
            ApiRequest::Chat(r) => r.max_completion_tokens.or(r.max_tokens),
            ApiRequest::Completion(r) => r.max_tokens,
        }
    }

    /// The body as JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        match self {
            ApiRequest::Chat(r) => serde_json::to_vec(r),
            ApiRequest::Completion(r) => serde_json::to_vec(r),
        }
        .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_accept_openai_shapes_and_keep_extras() {
        let r: ChatCompletionRequest = serde_json::from_str(
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],
                "stop":"x","stream":true,"stream_options":{"include_usage":true},
                "logit_bias":{"42":-100},"some_future_field":{"a":1}}"#,
        )
        .unwrap();
        assert!(matches!(r.sampling.stop, Some(StopSpec::One(_))));
        assert_eq!(r.sampling.logit_bias.as_ref().unwrap()["42"], -100.0);
        assert_eq!(r.extra["some_future_field"]["a"], 1);
        let c: CompletionRequest =
            serde_json::from_str(r#"{"prompt":[1,2,3],"max_tokens":0,"echo":true,"logprobs":1}"#)
                .unwrap();
        assert!(matches!(c.prompt, PromptInput::Tokens(ref t) if t == &[1, 2, 3]));
        let c: CompletionRequest = serde_json::from_str(r#"{"prompt":["a","b"]}"#).unwrap();
        assert!(matches!(c.prompt, PromptInput::Texts(ref t) if t.len() == 2));
        let c: CompletionRequest = serde_json::from_str(r#"{"prompt":[[1],[2,3]]}"#).unwrap();
        assert!(matches!(c.prompt, PromptInput::TokenLists(ref t) if t.len() == 2));
    }

    #[test]
    fn forwarded_requests_keep_every_field() {
        let body = serde_json::json!({
            "model": "m",
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:x"}}]},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "42"}
            ],
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
            "response_format": {"type": "json_object"},
            "temperature": 0.5,
            "stream_options": {"include_usage": false, "continuous_usage_stats": true},
            "vendor_extension": [1, 2]
        });
        let mut r: ChatCompletionRequest = serde_json::from_value(body.clone()).unwrap();
        let back = serde_json::to_value(&r).unwrap();
        assert_eq!(back, body);
        r.sampling.force_stream_with_usage();
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["stream"], true);
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["stream_options"]["continuous_usage_stats"], true);
        assert_eq!(v["tools"], body["tools"]);
    }
}
