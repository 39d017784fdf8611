//! `POST /v1/chat/completions`: a conversation rendered through the model's chat template,
//! answered whole or streamed as `chat.completion.chunk` events.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use engine_core::engine::{Event, Request};
use engine_core::sampler::SampledToken;
use engine_core::tokenizer::Tokenizer;

use super::errors::ApiError;
use super::generate::{self, Generation};
use super::json::JsonBody;
use crate::openai_types::{
    AssistantMessage, ChatChoice, ChatChunkChoice, ChatCompletion, ChatCompletionChunk,
    ChatCompletionRequest, ChatDelta, ChatLogprobs, ChatMessage, MessageContent, TokenLogprob,
    TopLogprob, Usage,
};
use crate::server::SharedState;
use crate::sse::{self, ChunkWriter};

/// Converts the request's messages into what chat templates expect, checking roles and content.
pub fn template_messages(messages: &[ChatMessage]) -> Result<Vec<serde_json::Value>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::bad_param(
            "messages",
            "messages must contain at least one message.",
        ));
    }
    let mut out = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let role = match m.role.as_str() {
            "system" | "developer" => "system",
            "user" => "user",
            "assistant" => "assistant",
            other => {
                return Err(ApiError::bad_param(
                    &format!("messages[{i}].role"),
                    format!(
                        "Unsupported role {other:?} in messages[{i}]: expected system, developer, user or assistant."
                    ),
                ));
            }
        };
        let content = match &m.content {
            Some(MessageContent::Text(t)) => t.clone(),
            Some(MessageContent::Parts(parts)) => {
                let mut text = Vec::new();
                for (j, p) in parts.iter().enumerate() {
                    match (p.kind.as_str(), &p.text) {
                        ("text", Some(t)) => text.push(t.as_str()),
                        (kind, _) => {
                            return Err(ApiError::bad_param(
                                &format!("messages[{i}].content[{j}]"),
                                format!(
                                    "Only text content parts are supported, got a {kind:?} part in messages[{i}]."
                                ),
                            ));
                        }
                    }
                }
                text.join("\n")
            }
            None if role == "assistant" => String::new(),
            None => {
                return Err(ApiError::bad_param(
                    &format!("messages[{i}].content"),
                    format!("messages[{i}] has no content."),
                ));
            }
        };
        let mut msg = serde_json::json!({"role": role, "content": content});
        if let Some(name) = &m.name {
            msg["name"] = serde_json::Value::from(name.as_str());
        }
        out.push(msg);
    }
    Ok(out)
}

/// The text and bytes of a token, for log-probabilities.
pub fn token_text(tok: &Tokenizer, id: u32) -> (String, Vec<u8>) {
    let bytes = tok
        .token_bytes(id)
        .map(|b| b.into_owned())
        .unwrap_or_default();
    (String::from_utf8_lossy(&bytes).into_owned(), bytes)
}

fn chat_logprob(tok: &Tokenizer, t: &SampledToken) -> TokenLogprob {
    let (token, bytes) = token_text(tok, t.id);
    TokenLogprob {
        token,
        logprob: t.logprob,
        bytes,
        top_logprobs: t
            .top_logprobs
            .iter()
            .map(|&(id, logprob)| {
                let (token, bytes) = token_text(tok, id);
                TopLogprob {
                    token,
                    logprob,
                    bytes,
                }
            })
            .collect(),
    }
}

/// Handles the request.
pub async fn handle(
    State(state): State<SharedState>,
    JsonBody(req): JsonBody<ChatCompletionRequest>,
) -> Result<Response, ApiError> {
    let start = Instant::now();
    let model = state.model_for_generation(req.model.as_deref())?;
    let messages = template_messages(&req.messages)?;
    let top = match (req.logprobs, req.top_logprobs) {
        (Some(true), n) => Some(generate::check_top_logprobs(n.unwrap_or(0))?),
        (_, Some(n)) if n > 0 => {
            return Err(ApiError::bad_param(
                "top_logprobs",
                "top_logprobs requires logprobs: true.",
            ));
        }
        _ => None,
    };
    let s = generate::sampling(&req.sampling, top, model.vocab)?;
    let prompt = {
        let model = Arc::clone(&model);
        tokio::task::spawn_blocking(move || model.chat_prompt(&messages))
            .await
            .map_err(|e| ApiError::internal(format!("tokenizing failed: {e}")))??
    };
    let requested = req.max_completion_tokens.or(req.max_tokens);
    if requested == Some(0) {
        return Err(ApiError::bad_param(
            "max_tokens",
            "max_tokens must be at least 1.",
        ));
    }
    let max_tokens = generate::max_tokens(
        requested,
        usize::MAX,
        prompt.len(),
        model.context,
        "messages",
    )?;
    let request = Request {
        prompt,
        params: s.params,
        max_tokens,
        stop: s.stop,
        ignore_eos: s.ignore_eos,
        prompt_logprobs: None,
        fallback_seed: rand::random(),
    };
    let generation = Generation::start(&state, &model, vec![request], start).await?;
    let meta = Meta {
        id: generate::response_id("chatcmpl-"),
        created: generate::unix_now(),
        model: req
            .model
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| model.id.clone()),
        fingerprint: model.fingerprint.clone(),
    };
    let writer = ChatStream {
        meta,
        model: Arc::clone(&model),
        logprobs: top.is_some(),
        ignore_eos: s.ignore_eos,
        include_usage: s.include_usage,
        usage: Usage::default(),
    };
    if s.stream {
        let first = writer.chunk(
            ChatDelta {
                role: Some("assistant"),
                content: Some(String::new()),
            },
            None,
            None,
        );
        Ok(sse::stream(generation, writer, vec![first]))
    } else {
        collect(generation, writer).await
    }
}

struct Meta {
    id: String,
    created: u64,
    model: String,
    fingerprint: String,
}

struct ChatStream {
    meta: Meta,
    model: Arc<crate::server::state::ModelHandle>,
    logprobs: bool,
    ignore_eos: bool,
    include_usage: bool,
    usage: Usage,
}

impl ChatStream {
    /// The log-probability entry of a generated token (none for an end-of-turn token).
    fn logprob(&self, token: &SampledToken) -> Option<TokenLogprob> {
        let eog = self.model.tokenizer.is_end_of_generation(token.id) && !self.ignore_eos;
        (self.logprobs && !eog).then(|| chat_logprob(&self.model.tokenizer, token))
    }

    fn chunk(
        &self,
        delta: ChatDelta,
        logprobs: Option<ChatLogprobs>,
        finish: Option<&'static str>,
    ) -> String {
        self.chunk_json(vec![ChatChunkChoice {
            index: 0,
            delta,
            logprobs,
            finish_reason: finish,
        }])
    }

    fn chunk_json(&self, choices: Vec<ChatChunkChoice>) -> String {
        let c = ChatCompletionChunk {
            id: self.meta.id.clone(),
            object: "chat.completion.chunk",
            created: self.meta.created,
            model: self.meta.model.clone(),
            system_fingerprint: self.meta.fingerprint.clone(),
            choices,
            usage: self.include_usage.then_some(None),
        };
        serde_json::to_string(&c).unwrap_or_default()
    }
}

impl ChunkWriter for ChatStream {
    fn write(&mut self, event: Option<(usize, Event)>, out: &mut VecDeque<String>) {
        match event {
            Some((_, Event::Token { token, text })) => {
                let lp = self.logprob(&token);
                if !text.is_empty() || lp.is_some() {
                    let logprobs = lp.map(|l| ChatLogprobs {
                        content: vec![l],
                        refusal: None,
                    });
                    out.push_back(self.chunk(
                        ChatDelta {
                            role: None,
                            content: Some(text),
                        },
                        logprobs,
                        None,
                    ));
                }
            }
            Some((
                _,
                Event::Finished {
                    reason,
                    text,
                    prompt_tokens,
                    completion_tokens,
                },
            )) => {
                self.usage.add(prompt_tokens, completion_tokens);
                if !text.is_empty() {
                    out.push_back(self.chunk(
                        ChatDelta {
                            role: None,
                            content: Some(text),
                        },
                        None,
                        None,
                    ));
                }
                out.push_back(self.chunk(ChatDelta::default(), None, Some(reason.as_str())));
            }
            Some((_, Event::Failed(message))) => {
                out.push_back(ApiError::internal(message).body_json());
            }
            Some((_, Event::PromptLogprobs(_))) => {}
            None => {
                if self.include_usage {
                    let c = ChatCompletionChunk {
                        id: self.meta.id.clone(),
                        object: "chat.completion.chunk",
                        created: self.meta.created,
                        model: self.meta.model.clone(),
                        system_fingerprint: self.meta.fingerprint.clone(),
                        choices: Vec::new(),
                        usage: Some(Some(self.usage)),
                    };
                    out.push_back(serde_json::to_string(&c).unwrap_or_default());
                }
            }
        }
    }
}

/// Waits for the whole answer.
async fn collect(mut generation: Generation, w: ChatStream) -> Result<Response, ApiError> {
    let mut content = String::new();
    let mut logprobs = Vec::new();
    let mut finish = "stop";
    let mut usage = Usage::default();
    while let Some((_, ev)) = generation.next().await {
        match ev {
            Event::Token { token, text } => {
                content.push_str(&text);
                logprobs.extend(w.logprob(&token));
            }
            Event::Finished {
                reason,
                text,
                prompt_tokens,
                completion_tokens,
            } => {
                content.push_str(&text);
                finish = reason.as_str();
                usage.add(prompt_tokens, completion_tokens);
            }
            Event::Failed(message) => return Err(ApiError::internal(message)),
            Event::PromptLogprobs(_) => {}
        }
    }
    let body = ChatCompletion {
        id: w.meta.id,
        object: "chat.completion",
        created: w.meta.created,
        model: w.meta.model,
        system_fingerprint: w.meta.fingerprint,
        choices: vec![ChatChoice {
            index: 0,
            message: AssistantMessage {
                role: "assistant",
                content,
                refusal: None,
            },
            logprobs: w.logprobs.then_some(ChatLogprobs {
                content: logprobs,
                refusal: None,
            }),
            finish_reason: finish,
        }],
        usage,
    };
    Ok(Json(body).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msgs(json: &str) -> Vec<ChatMessage> {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn roles_and_content_are_checked() {
        let ok = template_messages(&msgs(
            r#"[{"role":"developer","content":"be brief"},{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]},{"role":"assistant","content":null}]"#,
        ))
        .unwrap();
        assert_eq!(ok[0]["role"], "system");
        assert_eq!(ok[1]["content"], "a\nb");
        assert_eq!(ok[2]["content"], "");
        let e = template_messages(&msgs(r#"[{"role":"wizard","content":"x"}]"#)).unwrap_err();
        assert!(e.message.contains("wizard"));
        let e = template_messages(&[]).unwrap_err();
        assert_eq!(e.param.as_deref(), Some("messages"));
        let e = template_messages(&msgs(
            r#"[{"role":"user","content":[{"type":"image_url","image_url":{"url":"x"}}]}]"#,
        ))
        .unwrap_err();
        assert!(e.message.contains("image_url"));
        assert!(template_messages(&msgs(r#"[{"role":"user","content":null}]"#)).is_err());
    }
}
