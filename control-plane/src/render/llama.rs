//! llama.cpp's native answer shape, for `/infill` (the editor plugins written for `llama-server`
//! read it): `content`, `stop`, token counts and timings, as one JSON object or streamed as
//! server-sent events, each a partial answer, the last with `stop: true` (no `[DONE]`, as
//! llama.cpp's native endpoints).

use std::time::Instant;

use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Serialize;
use utoipa::ToSchema;

use super::sse;
use crate::gateway::dispatch::Dispatched;
use crate::gateway::upstream::Output;
use crate::openai::Usage;

/// What the final object reports.
struct Totals {
    content: String,
    usage: Usage,
    finish: Option<String>,
    /// When the answer started (the request arrived), when its first output came, now.
    started: Instant,
    first: Instant,
}

impl Totals {
    fn apply(&mut self, out: Output) -> String {
        match out {
            Output::Delta(d) => {
                if d.finish_reason.is_some() {
                    self.finish = d.finish_reason;
                }
                self.content.push_str(&d.text);
                d.text
            }
            Output::Usage(u) => {
                self.usage = u;
                String::new()
            }
        }
    }

    /// The last object: the whole content (or, streamed, none), counts and timings.
    fn last<'a>(&self, model: &'a str, content: &'a str) -> InfillResult<'a> {
        let prompt_ms = ms(self.first - self.started);
        let predicted_ms = ms(self.first.elapsed());
        let (p, n) = (self.usage.prompt_tokens, self.usage.completion_tokens);
        let per = |ms: f64, n: usize| if n > 0 { ms / n as f64 } else { 0.0 };
        let rate = |ms: f64, n: usize| if ms > 0.0 { n as f64 * 1e3 / ms } else { 0.0 };
        InfillResult {
            stop: true,
            model: Some(model),
            tokens_predicted: Some(n),
            tokens_evaluated: Some(p),
            tokens_cached: Some(0),
            truncated: Some(false),
            has_new_line: Some(self.content.contains('\n')),
            stop_type: Some(match self.finish.as_deref() {
                Some("length") => "limit",
                _ => "eos",
            }),
            stopping_word: Some(""),
            timings: Some(Timings {
                prompt_n: p,
                prompt_ms,
                prompt_per_token_ms: per(prompt_ms, p),
                prompt_per_second: rate(prompt_ms, p),
                predicted_n: n,
                predicted_ms,
                predicted_per_token_ms: per(predicted_ms, n),
                predicted_per_second: rate(predicted_ms, n),
            }),
            ..InfillResult::partial(content)
        }
    }
}

/// One answer object of `/infill`, in llama.cpp's shape: a streamed partial one has `content`
/// and `stop: false`; the last (the whole answer when not streamed) has `stop: true`, the token
/// counts and the timings.
#[derive(Debug, Serialize, ToSchema)]
pub struct InfillResult<'a> {
    /// Always 0.
    pub index: usize,
    /// Always 0.
    pub id_slot: usize,
    /// Text (new text when streamed; none in the last streamed object).
    pub content: &'a str,
    /// Whether this is the last object.
    pub stop: bool,
    /// The model.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<&'a str>,
    /// Tokens generated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_predicted: Option<usize>,
    /// Prompt tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_evaluated: Option<usize>,
    /// Prompt tokens reused from a cache (not reported: 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens_cached: Option<usize>,
    /// Whether the prompt was cut (never).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<bool>,
    /// Whether the answer has a line break.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub has_new_line: Option<bool>,
    /// `eos` or `limit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_type: Option<&'static str>,
    /// The stop string that ended it (empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stopping_word: Option<&'static str>,
    /// Times and speeds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timings: Option<Timings>,
}

impl<'a> InfillResult<'a> {
    /// A partial answer with `content`.
    fn partial(content: &'a str) -> InfillResult<'a> {
        InfillResult {
            index: 0,
            id_slot: 0,
            content,
            stop: false,
            model: None,
            tokens_predicted: None,
            tokens_evaluated: None,
            tokens_cached: None,
            truncated: None,
            has_new_line: None,
            stop_type: None,
            stopping_word: None,
            timings: None,
        }
    }
}

/// The timings of an `/infill` answer (milliseconds, tokens per second).
#[derive(Debug, Serialize, ToSchema)]
pub struct Timings {
    /// Prompt tokens.
    pub prompt_n: usize,
    /// Time to the first token.
    pub prompt_ms: f64,
    /// Per prompt token.
    pub prompt_per_token_ms: f64,
    /// Prompt tokens per second.
    pub prompt_per_second: f64,
    /// Generated tokens.
    pub predicted_n: usize,
    /// Time from the first token to the end.
    pub predicted_ms: f64,
    /// Per generated token.
    pub predicted_per_token_ms: f64,
    /// Generated tokens per second.
    pub predicted_per_second: f64,
}

fn json_line(v: &InfillResult<'_>) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Answers in llama.cpp's shape; `started` is when the request arrived.
pub async fn respond(stream: bool, started: Instant, d: Dispatched) -> Response {
    let mut totals = Totals {
        content: String::new(),
        usage: Usage::default(),
        finish: None,
        started,
        first: Instant::now(),
    };
    let first = totals.apply(d.first);
    let model = d.model;
    let mut rest = d.rest;
    if !stream {
        while let Some(out) = rest.next().await {
            match out {
                Ok(out) => {
                    totals.apply(out);
                }
                Err(e) => return e.to_api_error().into_response(),
            }
        }
        let content = totals.content.clone();
        return axum::Json(totals.last(&model, &content)).into_response();
    }
    let partial = |text: String| json_line(&InfillResult::partial(&text));
    let opening = (!first.is_empty()).then(|| partial(first));
    let events = futures_util::stream::unfold(
        (rest, totals, model, opening, false),
        move |(mut rest, mut totals, model, mut pending, done)| async move {
            if let Some(p) = pending.take() {
                return Some((p, (rest, totals, model, None, done)));
            }
            if done {
                return None;
            }
            loop {
                match rest.next().await {
                    Some(Ok(out)) => {
                        let text = totals.apply(out);
                        if !text.is_empty() {
                            return Some((partial(text), (rest, totals, model, None, false)));
                        }
                    }
                    Some(Err(e)) => {
                        let body = e.to_api_error().body_json();
                        return Some((body, (rest, totals, model, None, true)));
                    }
                    None => {
                        let last = json_line(&totals.last(&model, ""));
                        return Some((last, (rest, totals, model, None, true)));
                    }
                }
            }
        },
    );
    sse::response(events)
}
