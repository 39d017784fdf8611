//! A chat request from JavaScript, turned into the engine's [`Request`].

use engine_core::chat::{ChatRequest, ChatTemplate};
use engine_core::engine::Request;
use engine_core::sampler::SamplingParams;
use engine_core::tokenizer::Tokenizer;
use serde::Deserialize;

use crate::error::{EngineWasmError, Kind};

/// One message of the conversation.
#[derive(Debug, Deserialize)]
pub struct Message {
    role: String,
    content: String,
}

/// Stop strings: one or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// The request JavaScript sends (the OpenAI chat parameters the browser engine honours).
#[derive(Debug, Deserialize)]
pub struct ChatParams {
    messages: Vec<Message>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    top_k: Option<u32>,
    #[serde(default)]
    min_p: Option<f32>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    stop: Option<Stop>,
    #[serde(default)]
    frequency_penalty: Option<f32>,
    #[serde(default)]
    presence_penalty: Option<f32>,
    #[serde(default)]
    repetition_penalty: Option<f32>,
    #[serde(default)]
    ignore_eos: bool,
}

fn invalid(message: impl Into<String>) -> EngineWasmError {
    EngineWasmError::new(Kind::InvalidRequest, message)
}

/// Parses `json`, renders the conversation through the chat template and tokenizes it.
/// `context` is the engine's context size; `fallback_seed` seeds sampling without `seed`.
pub fn parse(
    json: &str,
    tokenizer: &Tokenizer,
    template: &ChatTemplate,
    context: usize,
    fallback_seed: u64,
) -> Result<Request, EngineWasmError> {
    let p: ChatParams =
        serde_json::from_str(json).map_err(|e| invalid(format!("invalid request: {e}")))?;
    if p.messages.is_empty() {
        return Err(invalid("messages must not be empty"));
    }
    let messages: Vec<serde_json::Value> = p
        .messages
        .iter()
        .map(|m| serde_json::json!({ "role": m.role, "content": m.content }))
        .collect();
    let piece = |id: Option<u32>| {
        id.and_then(|id| tokenizer.token_piece(id))
            .unwrap_or("")
            .to_owned()
    };
    let (bos, eos) = (piece(tokenizer.bos_id()), piece(tokenizer.eos_id()));
    let text = template
        .render(&ChatRequest {
            messages: &messages,
            add_generation_prompt: true,
            bos_token: &bos,
            eos_token: &eos,
            tools: None,
        })
        .map_err(|e| invalid(e.to_string()))?;
    let prompt = tokenizer.encode(&text, tokenizer.add_bos(), true);
    if prompt.len() >= context {
        return Err(invalid(format!(
            "the prompt has {} tokens, but the context holds {context} (including at least one generated token)",
            prompt.len()
        )));
    }
    let room = context - prompt.len();
    let max_tokens = match p.max_tokens {
        Some(0) => return Err(invalid("max_tokens must be at least 1")),
        Some(n) => (n as usize).min(room),
        None => room,
    };
    let d = SamplingParams::default();
    let params = SamplingParams {
        temperature: p.temperature.unwrap_or(d.temperature),
        top_k: p.top_k.map_or(d.top_k, |k| k as usize),
        top_p: p.top_p.unwrap_or(d.top_p),
        min_p: p.min_p.unwrap_or(d.min_p),
        repetition_penalty: p.repetition_penalty.unwrap_or(d.repetition_penalty),
        frequency_penalty: p.frequency_penalty.unwrap_or(d.frequency_penalty),
        presence_penalty: p.presence_penalty.unwrap_or(d.presence_penalty),
        seed: p.seed,
        ..d
    };
    let stop = match p.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    };
    Ok(Request {
        prompt,
        params,
        max_tokens,
        stop: stop.into_iter().filter(|s| !s.is_empty()).collect(),
        ignore_eos: p.ignore_eos,
        prompt_logprobs: None,
        fallback_seed,
        flow: None,
        embed: None,
        grammar: None,
    })
}
