//! What both generation endpoints share: turning OpenAI sampling fields into an engine request,
//! submitting sequences to a model's engine service, and receiving their events with timings.
//!
//! Events travel from the engine thread over a `tokio::sync::mpsc` channel; when the handler (or
//! the client's stream) goes away, the channel closes, the engine's sink reports nobody listens,
//! and the [`Generation`]'s drop also cancels its sequences explicitly, so their KV blocks are
//! free within one engine step.

use std::sync::Arc;
use std::time::{Duration, Instant};

use engine_core::engine::{Event, Request, SeqId};
use engine_core::sampler::{MAX_TOP_LOGPROBS, SamplingParams};
use tokio::sync::{mpsc, oneshot};

use super::errors::ApiError;
use crate::metrics::SequenceTimings;
use crate::openai_types::SamplingFields;
use crate::server::SharedState;
use crate::server::state::ModelHandle;

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A random response id with `prefix` (`chatcmpl-`, `cmpl-`).
pub fn response_id(prefix: &str) -> String {
    format!("{prefix}{:032x}", rand::random::<u128>())
}

/// Engine parameters read from the OpenAI fields shared by both endpoints.
pub struct Sampling {
    /// Sampling parameters.
    pub params: SamplingParams,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Keep going after end-of-generation.
    pub ignore_eos: bool,
    /// Stream the response.
    pub stream: bool,
    /// Send a usage chunk at the end of the stream.
    pub include_usage: bool,
}

/// Checks and converts the shared fields; `top_logprobs` is `Some` when token log-probabilities
/// are wanted.
pub fn sampling(
    f: &SamplingFields,
    top_logprobs: Option<usize>,
    vocab: usize,
) -> Result<Sampling, ApiError> {
    if let Some(n) = f.n
        && n != 1
    {
        return Err(ApiError::bad_param(
            "n",
            format!("Only n=1 is supported, got n={n}."),
        ));
    }
    let top_k = match f.top_k {
        None | Some(-1) | Some(0) => 0,
        Some(k) if k > 0 => k as usize,
        Some(k) => {
            return Err(ApiError::bad_param(
                "top_k",
                format!("top_k must be -1 (off) or a positive integer, got {k}."),
            ));
        }
    };
    let mut logit_bias = Vec::new();
    for (key, &bias) in f.logit_bias.iter().flatten() {
        let id: u32 = key.parse().map_err(|_| {
            ApiError::bad_param(
                "logit_bias",
                format!("logit_bias keys must be token ids, got {key:?}."),
            )
        })?;
        if !(-100.0..=100.0).contains(&bias) {
            return Err(ApiError::bad_param(
                "logit_bias",
                format!("logit_bias values must be in [-100, 100], got {bias} for token {id}."),
            ));
        }
        logit_bias.push((id, bias));
    }
    if let Some(t) = f.temperature
        && !(0.0..=2.0).contains(&t)
    {
        return Err(ApiError::bad_param(
            "temperature",
            format!("temperature must be in [0, 2], got {t}."),
        ));
    }
    let params = SamplingParams {
        temperature: f.temperature.unwrap_or(1.0),
        top_k,
        top_p: f.top_p.unwrap_or(1.0),
        min_p: f.min_p.unwrap_or(0.0),
        repetition_penalty: f.repetition_penalty.unwrap_or(1.0),
        frequency_penalty: f.frequency_penalty.unwrap_or(0.0),
        presence_penalty: f.presence_penalty.unwrap_or(0.0),
        logit_bias,
        seed: f.seed.map(|s| s as u64),
        logprobs: top_logprobs.is_some(),
        top_logprobs: top_logprobs.unwrap_or(0),
        ..SamplingParams::default()
    };
    params
        .validate(vocab)
        .map_err(|e| ApiError::bad_param(e.param(), e.to_string()))?;
    if let Some(user) = &f.user {
        tracing::debug!(user, "request from end user");
    }
    let stop = f.stop.clone().map(|s| s.into_vec()).unwrap_or_default();
    if stop.len() > 16 {
        return Err(ApiError::bad_param(
            "stop",
            format!("At most 16 stop strings are supported, got {}.", stop.len()),
        ));
    }
    Ok(Sampling {
        params,
        stop,
        ignore_eos: f.ignore_eos.unwrap_or(false),
        stream: f.stream.unwrap_or(false),
        include_usage: f
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
    })
}

/// Checks `top_logprobs` against the OpenAI limit.
pub fn check_top_logprobs(n: u32) -> Result<usize, ApiError> {
    if n as usize > MAX_TOP_LOGPROBS {
        return Err(ApiError::bad_param(
            "top_logprobs",
            format!("top_logprobs must be in [0, {MAX_TOP_LOGPROBS}], got {n}."),
        ));
    }
    Ok(n as usize)
}

/// Resolves `max_tokens` against the context: an explicit value must fit beside the prompt;
/// without one, `default` (capped by what is left of the context).
pub fn max_tokens(
    requested: Option<u64>,
    default: usize,
    prompt_len: usize,
    context: usize,
    param: &str,
) -> Result<usize, ApiError> {
    let too_long = |total: usize, completion: usize| ApiError {
        code: Some("context_length_exceeded"),
        ..ApiError::bad_param(
            param,
            format!(
                "This model's maximum context length is {context} tokens. However, you requested {total} tokens ({prompt_len} in the prompt, {completion} for the completion). Please reduce the length of the prompt or the completion."
            ),
        )
    };
    match requested {
        Some(m) => {
            let m = usize::try_from(m).unwrap_or(usize::MAX);
            let total = prompt_len.saturating_add(m);
            if total > context || (m == 0 && prompt_len > context) {
                return Err(too_long(total, m));
            }
            Ok(m)
        }
        None => {
            if prompt_len >= context {
                return Err(ApiError {
                    code: Some("context_length_exceeded"),
                    ..ApiError::bad_param(
                        param,
                        format!(
                            "This model's maximum context length is {context} tokens, but the prompt has {prompt_len} tokens (and the completion needs at least 1). Please reduce the length of the prompt."
                        ),
                    )
                });
            }
            Ok(default.min(context - prompt_len))
        }
    }
}

/// Checks prompt token ids against the vocabulary.
pub fn check_token_ids(ids: &[u32], vocab: usize) -> Result<(), ApiError> {
    if let Some(&bad) = ids.iter().find(|&&t| t as usize >= vocab) {
        return Err(ApiError::bad_param(
            "prompt",
            format!("Token id {bad} is out of range: the vocabulary has {vocab} tokens."),
        ));
    }
    Ok(())
}

/// Per-sequence timing while it runs.
#[derive(Clone, Debug, Default)]
struct Track {
    first: Option<Instant>,
    last: Option<Instant>,
    itl: Vec<Duration>,
    id: Option<SeqId>,
    prompt_tokens: usize,
    done: bool,
}

/// Sequences submitted for one API request; dropping it cancels those still running.
pub struct Generation {
    rx: mpsc::UnboundedReceiver<(usize, Event)>,
    tracks: Vec<Track>,
    start: Instant,
    model: Arc<ModelHandle>,
    state: SharedState,
}

impl Generation {
    /// Submits `requests` (one per choice) and waits for the engine to accept them all.
    pub async fn start(
        state: &SharedState,
        model: &Arc<ModelHandle>,
        requests: Vec<Request>,
        start: Instant,
    ) -> Result<Generation, ApiError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut gen_ = Generation {
            rx,
            tracks: requests
                .iter()
                .map(|r| Track {
                    prompt_tokens: r.prompt.len(),
                    ..Track::default()
                })
                .collect(),
            start,
            model: Arc::clone(model),
            state: Arc::clone(state),
        };
        let mut replies = Vec::new();
        for (i, req) in requests.into_iter().enumerate() {
            let tx = tx.clone();
            let (otx, orx) = oneshot::channel();
            model.service.submit(
                req,
                Box::new(move |ev| tx.send((i, ev)).is_ok()),
                Box::new(move |r| otx.send(r).is_ok()),
            )?;
            replies.push(orx);
        }
        drop(tx);
        for (i, orx) in replies.into_iter().enumerate() {
            match orx.await {
                Ok(Ok(id)) => gen_.tracks[i].id = Some(id),
                Ok(Err(e)) => {
                    gen_.tracks[i].done = true;
                    return Err(e.into());
                }
                Err(_) => return Err(ApiError::unavailable("The engine has stopped.")),
            }
        }
        Ok(gen_)
    }

    /// The next event of any sequence; `None` once every sequence has ended.
    pub async fn next(&mut self) -> Option<(usize, Event)> {
        let (i, ev) = self.rx.recv().await?;
        let now = Instant::now();
        let t = &mut self.tracks[i];
        match &ev {
            Event::Token { .. } => {
                if let Some(last) = t.last {
                    t.itl.push(now - last);
                }
                t.first.get_or_insert(now);
                t.last = Some(now);
            }
            Event::Finished {
                reason,
                completion_tokens,
                ..
            } => {
                t.done = true;
                let reason = match reason {
                    engine_core::engine::FinishReason::Cancelled => "abort",
                    r => r.as_str(),
                };
                self.record(i, reason, *completion_tokens);
            }
            Event::Failed(_) => {
                t.done = true;
                let n = t.itl.len() + usize::from(t.first.is_some());
                self.record(i, "error", n);
            }
            Event::PromptLogprobs(_) => {}
        }
        Some((i, ev))
    }

    fn record(&self, i: usize, reason: &'static str, generated: usize) {
        let t = &self.tracks[i];
        self.state.metrics.record_sequence(
            &self.model.id,
            &SequenceTimings {
                ttft: t.first.map(|f| f - self.start),
                itl: t.itl.clone(),
                e2e: self.start.elapsed(),
                prompt_tokens: t.prompt_tokens,
                generation_tokens: generated,
                reason,
            },
        );
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        for i in 0..self.tracks.len() {
            let t = &self.tracks[i];
            if t.done {
                continue;
            }
            if let Some(id) = t.id {
                self.model.service.cancel(id);
                let n = t.itl.len() + usize::from(t.first.is_some());
                self.record(i, "abort", n);
            }
        }
    }
}
