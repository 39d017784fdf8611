//! The OpenAI wire format: request bodies as clients send them and the responses, chunks and
//! usage records the API returns. Unknown request fields are ignored (as vLLM does), so clients
//! that send extras keep working.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `stop`: one string or a list of them.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum StopSpec {
    /// A single stop string.
    One(String),
    /// Several stop strings.
    Many(Vec<String>),
}

impl StopSpec {
    /// The stop strings as a list.
    pub fn into_vec(self) -> Vec<String> {
        match self {
            StopSpec::One(s) => vec![s],
            StopSpec::Many(v) => v,
        }
    }
}

/// `stream_options`.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with the usage of the whole request.
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// Sampling fields shared by both endpoints (flattened into each request).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct SamplingFields {
    /// Softmax temperature (0 to 2 in OpenAI; 0 = greedy). Default 1.
    pub temperature: Option<f32>,
    /// Nucleus sampling threshold. Default 1.
    pub top_p: Option<f32>,
    /// Keep the k most likely tokens (vLLM extension; 0 or -1 = off).
    pub top_k: Option<i64>,
    /// Min-p filter (vLLM extension).
    pub min_p: Option<f32>,
    /// Seed of the random draws.
    pub seed: Option<i64>,
    /// Stop strings.
    pub stop: Option<StopSpec>,
    /// Presence penalty, -2 to 2.
    pub presence_penalty: Option<f32>,
    /// Frequency penalty, -2 to 2.
    pub frequency_penalty: Option<f32>,
    /// Repetition penalty (vLLM extension; 1 = off).
    pub repetition_penalty: Option<f32>,
    /// Token id (as a string) to bias added to its logit, -100 to 100.
    pub logit_bias: Option<BTreeMap<String, f32>>,
    /// Number of choices; only 1 is supported.
    pub n: Option<u32>,
    /// Stream the answer as server-sent events.
    pub stream: Option<bool>,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// An end-user id (accepted and ignored).
    pub user: Option<String>,
    /// Keep generating after the end-of-turn token (vLLM extension, for benchmarks).
    pub ignore_eos: Option<bool>,
}

/// Message content: a string, or a list of parts of which only text parts are supported.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    /// Plain text.
    Text(String),
    /// Content parts.
    Parts(Vec<ContentPart>),
}

/// One content part (`{"type": "text", "text": "..."}`).
#[derive(Clone, Debug, Deserialize)]
pub struct ContentPart {
    /// The part's type; only `text` is supported.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a text part.
    pub text: Option<String>,
}

/// One message of a conversation.
#[derive(Clone, Debug, Deserialize)]
pub struct ChatMessage {
    /// `system`, `developer`, `user` or `assistant`.
    pub role: String,
    /// The content (may be null for an assistant message).
    pub content: Option<MessageContent>,
    /// The author's name (accepted, not rendered).
    pub name: Option<String>,
}

/// `POST /v1/chat/completions`.
#[derive(Clone, Debug, Deserialize)]
pub struct ChatCompletionRequest {
    /// Model id or alias; empty or missing means the default model.
    #[serde(default)]
    pub model: Option<String>,
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Most tokens to generate (deprecated name).
    pub max_tokens: Option<u64>,
    /// Most tokens to generate.
    pub max_completion_tokens: Option<u64>,
    /// Return log-probabilities of the generated tokens.
    pub logprobs: Option<bool>,
    /// Alternatives per position, 0 to 20 (needs `logprobs`).
    pub top_logprobs: Option<u32>,
    /// Sampling parameters.
    #[serde(flatten)]
    pub sampling: SamplingFields,
}

/// `prompt`: text, texts, token ids, or lists of token ids.
#[derive(Clone, Debug)]
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
#[derive(Clone, Debug, Deserialize)]
pub struct CompletionRequest {
    /// Model id or alias; empty or missing means the default model.
    #[serde(default)]
    pub model: Option<String>,
    /// The prompt(s).
    pub prompt: PromptInput,
    /// Most tokens to generate (default 16, as OpenAI); 0 with `echo` scores the prompt only.
    pub max_tokens: Option<u64>,
    /// Return the prompt before the completion (with its log-probabilities when `logprobs` is
    /// set).
    pub echo: Option<bool>,
    /// Log-probabilities with this many alternatives per token, 0 to 5.
    pub logprobs: Option<u32>,
    /// `best_of`; only 1 is supported.
    pub best_of: Option<u32>,
    /// Text after the completion; not supported.
    pub suffix: Option<String>,
    /// Sampling parameters.
    #[serde(flatten)]
    pub sampling: SamplingFields,
}

/// Token counts of a request.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens.
    pub completion_tokens: usize,
    /// Their sum.
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
#[derive(Clone, Debug, Serialize)]
pub struct TopLogprob {
    /// The token's text.
    pub token: String,
    /// Its log-probability.
    pub logprob: f32,
    /// Its UTF-8 bytes.
    pub bytes: Vec<u8>,
}

/// Log-probability of one generated token (chat format).
#[derive(Clone, Debug, Serialize)]
pub struct TokenLogprob {
    /// The token's text.
    pub token: String,
    /// Its log-probability.
    pub logprob: f32,
    /// Its UTF-8 bytes.
    pub bytes: Vec<u8>,
    /// The most likely alternatives.
    pub top_logprobs: Vec<TopLogprob>,
}

/// `choices[].logprobs` of a chat completion.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ChatLogprobs {
    /// One entry per generated token.
    pub content: Vec<TokenLogprob>,
    /// Always null.
    pub refusal: Option<()>,
}

/// The assistant's message.
#[derive(Clone, Debug, Serialize)]
pub struct AssistantMessage {
    /// Always `assistant`.
    pub role: &'static str,
    /// The reply.
    pub content: String,
    /// Always null.
    pub refusal: Option<()>,
}

/// One choice of a chat completion.
#[derive(Clone, Debug, Serialize)]
pub struct ChatChoice {
    /// Choice index.
    pub index: usize,
    /// The reply.
    pub message: AssistantMessage,
    /// Log-probabilities, when asked for.
    pub logprobs: Option<ChatLogprobs>,
    /// `stop` or `length`.
    pub finish_reason: &'static str,
}

/// `chat.completion`.
#[derive(Clone, Debug, Serialize)]
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
    pub system_fingerprint: String,
    /// The choices.
    pub choices: Vec<ChatChoice>,
    /// Token counts.
    pub usage: Usage,
}

/// The delta of a chat chunk.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ChatDelta {
    /// `assistant` in the first chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    /// New text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// One choice of a chat chunk.
#[derive(Clone, Debug, Serialize)]
pub struct ChatChunkChoice {
    /// Choice index.
    pub index: usize,
    /// What is new.
    pub delta: ChatDelta,
    /// Log-probabilities of the tokens in this chunk, when asked for.
    pub logprobs: Option<ChatLogprobs>,
    /// Set in the choice's last chunk.
    pub finish_reason: Option<&'static str>,
}

/// `chat.completion.chunk`.
#[derive(Clone, Debug, Serialize)]
pub struct ChatCompletionChunk {
    /// Same for every chunk of a response.
    pub id: String,
    /// Always `chat.completion.chunk`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// The model id as requested.
    pub model: String,
    /// The backend configuration fingerprint.
    pub system_fingerprint: String,
    /// Choices (empty in the usage chunk).
    pub choices: Vec<ChatChunkChoice>,
    /// Null, except in the last chunk with `stream_options.include_usage`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
}

/// `choices[].logprobs` of a completion (the legacy format).
#[derive(Clone, Debug, Default, Serialize)]
pub struct CompletionLogprobs {
    /// Token texts.
    pub tokens: Vec<String>,
    /// Their log-probabilities (null for the first prompt token).
    pub token_logprobs: Vec<Option<f32>>,
    /// The most likely alternatives per position, as text to log-probability (null for the
    /// first prompt token).
    pub top_logprobs: Vec<Option<BTreeMap<String, f32>>>,
    /// Character offset of each token in the choice's text.
    pub text_offset: Vec<usize>,
}

/// One choice of a completion (or of a completion chunk).
#[derive(Clone, Debug, Serialize)]
pub struct CompletionChoice {
    /// Choice index (the prompt's index).
    pub index: usize,
    /// The text.
    pub text: String,
    /// Log-probabilities, when asked for.
    pub logprobs: Option<CompletionLogprobs>,
    /// `stop` or `length` (null in a chunk before the last).
    pub finish_reason: Option<&'static str>,
}

/// `text_completion`.
#[derive(Clone, Debug, Serialize)]
pub struct Completion {
    /// `cmpl-...`.
    pub id: String,
    /// Always `text_completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// The model id as requested.
    pub model: String,
    /// The backend configuration fingerprint.
    pub system_fingerprint: String,
    /// The choices.
    pub choices: Vec<CompletionChoice>,
    /// Token counts (null in streamed chunks, except the usage chunk).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<Usage>>,
}

/// One entry of `GET /v1/models`.
#[derive(Clone, Debug, Serialize)]
pub struct ModelCard {
    /// The id (or alias) to put in requests.
    pub id: String,
    /// Always `model`.
    pub object: &'static str,
    /// Unix seconds when it was loaded.
    pub created: u64,
    /// Always `tandem`.
    pub owned_by: &'static str,
    /// Context size in tokens (vLLM's extension).
    pub max_model_len: usize,
    /// The model this alias points to (null for the id itself).
    pub root: String,
}

/// `GET /v1/models`.
#[derive(Clone, Debug, Serialize)]
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
    fn requests_accept_openai_shapes_and_ignore_extras() {
        let r: ChatCompletionRequest = serde_json::from_str(
            r#"{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"hi"}]}],
                "stop":"x","stream":true,"stream_options":{"include_usage":true},
                "logit_bias":{"42":-100},"some_future_field":{"a":1}}"#,
        )
        .unwrap();
        assert!(matches!(r.sampling.stop, Some(StopSpec::One(_))));
        assert_eq!(r.sampling.logit_bias.unwrap()["42"], -100.0);
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
    fn chunks_serialize_usage_as_openai_does() {
        let chunk = ChatCompletionChunk {
            id: "chatcmpl-1".into(),
            object: "chat.completion.chunk",
            created: 1,
            model: "m".into(),
            system_fingerprint: "fp".into(),
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
}
