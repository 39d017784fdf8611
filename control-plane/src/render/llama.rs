//! llama.cpp's native answer shape, for `/infill` (the editor plugins written for `llama-server`
//! read it): `content`, `stop`, token counts and timings, as one JSON object or streamed as
//! server-sent events, each a partial answer, the last with `stop: true` (no `[DONE]`, as
//! llama.cpp's native endpoints).

use std::time::Instant;

use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Value, json};

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
    fn last(&self, model: &str, content: &str) -> Value {
        let prompt_ms = ms(self.first - self.started);
        let predicted_ms = ms(self.first.elapsed());
        let (p, n) = (self.usage.prompt_tokens, self.usage.completion_tokens);
        let per = |ms: f64, n: usize| if n > 0 { ms / n as f64 } else { 0.0 };
        let rate = |ms: f64, n: usize| if ms > 0.0 { n as f64 * 1e3 / ms } else { 0.0 };
        json!({
            "index": 0,
            "id_slot": 0,
            "content": content,
            "stop": true,
            "model": model,
            "tokens_predicted": n,
            "tokens_evaluated": p,
            "tokens_cached": 0,
            "truncated": false,
            "has_new_line": self.content.contains('\n'),
            "stop_type": match self.finish.as_deref() {
                Some("length") => "limit",
                _ => "eos",
            },
            "stopping_word": "",
            "timings": {
                "prompt_n": p,
                "prompt_ms": prompt_ms,
                "prompt_per_token_ms": per(prompt_ms, p),
                "prompt_per_second": rate(prompt_ms, p),
                "predicted_n": n,
                "predicted_ms": predicted_ms,
                "predicted_per_token_ms": per(predicted_ms, n),
                "predicted_per_second": rate(predicted_ms, n),
            },
        })
    }
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
    let partial = |text: String| {
        json!({"index": 0, "id_slot": 0, "content": text, "stop": false}).to_string()
    };
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
                        let last = totals.last(&model, "").to_string();
                        return Some((last, (rest, totals, model, None, true)));
                    }
                }
            }
        },
    );
    sse::response(events)
}
