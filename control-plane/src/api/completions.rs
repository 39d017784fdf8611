//! `POST /v1/completions`: the legacy text completion API. Prompts are text, token ids, or
//! lists of either (one choice per prompt); `echo` with `logprobs` and `max_tokens: 0` returns
//! the prompt tokens' log-probabilities, as OpenAI's legacy API and vLLM do (this is how
//! lm-evaluation-harness scores loglikelihood).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use engine_core::engine::{Event, PromptLogprob, Request};
use engine_core::sampler::SampledToken;

use super::chat::token_text;
use super::errors::ApiError;
use super::generate::{self, Generation};
use super::json::JsonBody;
use crate::openai_types::{
    Completion, CompletionChoice, CompletionLogprobs, CompletionRequest, PromptInput, Usage,
};
use crate::server::SharedState;
use crate::server::state::ModelHandle;
use crate::sse::{self, ChunkWriter};

/// Most alternatives per token in the legacy API.
const MAX_LOGPROBS: u32 = 5;
/// Most prompts in one request.
const MAX_PROMPTS: usize = 64;

/// One prompt: its tokens and the text echoed for it.
struct Prompt {
    tokens: Vec<u32>,
    text: String,
}

fn prompts(model: &ModelHandle, input: PromptInput) -> Result<Vec<Prompt>, ApiError> {
    let tok = &model.tokenizer;
    let from_text = |text: String| Prompt {
        tokens: tok.encode(&text, tok.add_bos(), true),
        text,
    };
    let from_ids = |ids: Vec<u32>| -> Result<Prompt, ApiError> {
        generate::check_token_ids(&ids, model.vocab)?;
        Ok(Prompt {
            text: tok.decode(&ids, false),
            tokens: ids,
        })
    };
    let list = match input {
        PromptInput::Text(t) => vec![from_text(t)],
        PromptInput::Texts(ts) => ts.into_iter().map(from_text).collect(),
        PromptInput::Tokens(ids) => vec![from_ids(ids)?],
        PromptInput::TokenLists(lists) => {
            lists.into_iter().map(from_ids).collect::<Result<_, _>>()?
        }
    };
    if list.is_empty() {
        return Err(ApiError::bad_param("prompt", "prompt must not be empty."));
    }
    if list.len() > MAX_PROMPTS {
        return Err(ApiError::bad_param(
            "prompt",
            format!(
                "At most {MAX_PROMPTS} prompts per request, got {}.",
                list.len()
            ),
        ));
    }
    if let Some(i) = list.iter().position(|p| p.tokens.is_empty()) {
        return Err(ApiError::bad_param(
            "prompt",
            format!("prompt {i} is empty: it has no tokens."),
        ));
    }
    Ok(list)
}

/// Handles the request.
pub async fn handle(
    State(state): State<SharedState>,
    JsonBody(req): JsonBody<CompletionRequest>,
) -> Result<Response, ApiError> {
    let start = Instant::now();
    let model = state.model_for_generation(req.model.as_deref())?;
    if let Some(b) = req.best_of
        && b != 1
    {
        return Err(ApiError::bad_param(
            "best_of",
            format!("Only best_of=1 is supported, got {b}."),
        ));
    }
    if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::bad_param("suffix", "suffix is not supported."));
    }
    let top = match req.logprobs {
        Some(n) if n > MAX_LOGPROBS => {
            return Err(ApiError::bad_param(
                "logprobs",
                format!("logprobs must be in [0, {MAX_LOGPROBS}], got {n}."),
            ));
        }
        Some(n) => Some(n as usize),
        None => None,
    };
    let echo = req.echo.unwrap_or(false);
    let s = generate::sampling(&req.sampling, top, model.vocab)?;
    let prompts = {
        let model = Arc::clone(&model);
        let input = req.prompt;
        tokio::task::spawn_blocking(move || prompts(&model, input))
            .await
            .map_err(|e| ApiError::internal(format!("tokenizing failed: {e}")))??
    };
    let mut requests = Vec::with_capacity(prompts.len());
    for p in &prompts {
        let max_tokens =
            generate::max_tokens(req.max_tokens, 16, p.tokens.len(), model.context, "prompt")?;
        requests.push(Request {
            prompt: p.tokens.clone(),
            params: s.params.clone(),
            max_tokens,
            stop: s.stop.clone(),
            ignore_eos: s.ignore_eos,
            prompt_logprobs: if echo { top } else { None },
            fallback_seed: rand::random(),
        });
    }
    let generation = Generation::start(&state, &model, requests, start).await?;
    let mut w = CompletionStream {
        id: generate::response_id("cmpl-"),
        created: generate::unix_now(),
        model_name: req
            .model
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| model.id.clone()),
        model: Arc::clone(&model),
        top,
        ignore_eos: s.ignore_eos,
        include_usage: s.include_usage,
        usage: Usage::default(),
        choices: prompts.iter().map(|_| ChoiceState::default()).collect(),
        prompt_texts: prompts.iter().map(|p| p.text.clone()).collect(),
    };
    // Without prompt log-probabilities the echoed prompt comes first; with them, it comes with
    // the engine's prompt log-probabilities event.
    let mut first = Vec::new();
    if echo && top.is_none() {
        for (i, p) in prompts.iter().enumerate() {
            w.push_text(i, &p.text);
            first.push(w.chunk(i, p.text.clone(), None, None));
        }
    }
    if s.stream {
        Ok(sse::stream(generation, w, first))
    } else {
        collect(generation, w).await
    }
}

/// One choice being built.
#[derive(Default)]
struct ChoiceState {
    text: String,
    /// Characters in `text` (for `text_offset`).
    chars: usize,
    logprobs: CompletionLogprobs,
    finish: Option<&'static str>,
}

struct CompletionStream {
    id: String,
    created: u64,
    model_name: String,
    model: Arc<ModelHandle>,
    top: Option<usize>,
    ignore_eos: bool,
    include_usage: bool,
    usage: Usage,
    choices: Vec<ChoiceState>,
    /// Each prompt's text, for `echo`.
    prompt_texts: Vec<String>,
}

impl CompletionStream {
    /// Appends text to choice `i`.
    fn push_text(&mut self, i: usize, text: &str) {
        let c = &mut self.choices[i];
        c.chars += text.chars().count();
        c.text.push_str(text);
    }

    /// Appends one token's log-probability to `lp`; `offset` is the character offset of its
    /// text, advanced past it.
    fn push_logprob(
        &self,
        lp: &mut CompletionLogprobs,
        offset: &mut usize,
        id: u32,
        logprob: Option<f32>,
        top: &[(u32, f32)],
    ) {
        let tok = &self.model.tokenizer;
        let (text, _) = token_text(tok, id);
        lp.text_offset.push(*offset);
        *offset += text.chars().count();
        lp.tokens.push(text.clone());
        lp.token_logprobs.push(logprob);
        lp.top_logprobs.push(logprob.map(|l| {
            let mut map: BTreeMap<String, f32> = top
                .iter()
                .map(|&(id, l)| (token_text(tok, id).0, l))
                .collect();
            // As vLLM: the chosen token is always among the alternatives.
            map.entry(text).or_insert(l);
            map
        }));
    }

    /// The entry of a generated token (none for an end-of-generation token).
    fn token_logprobs(&self, i: usize, token: &SampledToken) -> Option<CompletionLogprobs> {
        self.top?;
        if self.model.tokenizer.is_end_of_generation(token.id) && !self.ignore_eos {
            return None;
        }
        let mut lp = CompletionLogprobs::default();
        let mut offset = self.choices[i].chars;
        self.push_logprob(
            &mut lp,
            &mut offset,
            token.id,
            Some(token.logprob),
            &token.top_logprobs,
        );
        Some(lp)
    }

    fn prompt_logprobs(&self, i: usize, prompt: &[PromptLogprob]) -> CompletionLogprobs {
        let mut lp = CompletionLogprobs::default();
        let mut offset = self.choices[i].chars;
        for p in prompt {
            self.push_logprob(&mut lp, &mut offset, p.id, p.logprob, &p.top);
        }
        lp
    }

    fn chunk(
        &self,
        index: usize,
        text: String,
        logprobs: Option<CompletionLogprobs>,
        finish: Option<&'static str>,
    ) -> String {
        serde_json::to_string(&Completion {
            id: self.id.clone(),
            object: "text_completion",
            created: self.created,
            model: self.model_name.clone(),
            system_fingerprint: self.model.fingerprint.clone(),
            choices: vec![CompletionChoice {
                index,
                text,
                logprobs,
                finish_reason: finish,
            }],
            usage: self.include_usage.then_some(None),
        })
        .unwrap_or_default()
    }

    /// Applies an event to the choice's state; returns the text and log-probabilities it added
    /// and the finish reason, if it ended.
    fn apply(
        &mut self,
        i: usize,
        ev: Event,
    ) -> Result<(String, Option<CompletionLogprobs>, Option<&'static str>), String> {
        let (text, lp, finish) = match ev {
            Event::PromptLogprobs(p) => {
                let lp = self.prompt_logprobs(i, &p);
                (self.prompt_texts[i].clone(), Some(lp), None)
            }
            Event::Token { token, text } => {
                let lp = self.token_logprobs(i, &token);
                (text, lp, None)
            }
            Event::Finished {
                reason,
                text,
                prompt_tokens,
                completion_tokens,
            } => {
                self.usage.add(prompt_tokens, completion_tokens);
                (text, None, Some(reason.as_str()))
            }
            Event::Failed(message) => return Err(message),
        };
        self.push_text(i, &text);
        let c = &mut self.choices[i];
        if let Some(lp) = &lp {
            c.logprobs.tokens.extend(lp.tokens.iter().cloned());
            c.logprobs.token_logprobs.extend(&lp.token_logprobs);
            c.logprobs
                .top_logprobs
                .extend(lp.top_logprobs.iter().cloned());
            c.logprobs.text_offset.extend(&lp.text_offset);
        }
        if finish.is_some() {
            c.finish = finish;
        }
        Ok((text, lp, finish))
    }
}

impl ChunkWriter for CompletionStream {
    fn write(&mut self, event: Option<(usize, Event)>, out: &mut VecDeque<String>) {
        match event {
            Some((i, ev)) => match self.apply(i, ev) {
                Ok((text, lp, finish)) => {
                    if !text.is_empty() || lp.is_some() || finish.is_some() {
                        out.push_back(self.chunk(i, text, lp, finish));
                    }
                }
                Err(message) => out.push_back(ApiError::internal(message).body_json()),
            },
            None => {
                if self.include_usage {
                    let body = Completion {
                        id: self.id.clone(),
                        object: "text_completion",
                        created: self.created,
                        model: self.model_name.clone(),
                        system_fingerprint: self.model.fingerprint.clone(),
                        choices: Vec::new(),
                        usage: Some(Some(self.usage)),
                    };
                    out.push_back(serde_json::to_string(&body).unwrap_or_default());
                }
            }
        }
    }
}

/// Waits for every choice to finish.
async fn collect(
    mut generation: Generation,
    mut w: CompletionStream,
) -> Result<Response, ApiError> {
    while let Some((i, ev)) = generation.next().await {
        w.apply(i, ev).map_err(ApiError::internal)?;
    }
    let choices = std::mem::take(&mut w.choices)
        .into_iter()
        .enumerate()
        .map(|(index, c)| CompletionChoice {
            index,
            text: c.text,
            logprobs: w.top.map(|_| c.logprobs),
            finish_reason: Some(c.finish.unwrap_or("stop")),
        })
        .collect();
    Ok(Json(Completion {
        id: w.id,
        object: "text_completion",
        created: w.created,
        model: w.model_name,
        system_fingerprint: w.model.fingerprint.clone(),
        choices,
        usage: Some(Some(w.usage)),
    })
    .into_response())
}
