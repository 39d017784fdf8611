//! Sequences of one request running on a local engine: submitted to the model's engine service,
//! their events received with timings for the metrics.
//!
//! Events travel from the engine thread over a `tokio::sync::mpsc` channel; when the request's
//! stream goes away, the channel closes, the engine's sink reports nobody listens, and the
//! [`EngineRun`]'s drop also cancels its sequences explicitly, so their KV blocks are free
//! within one engine step.

use std::sync::Arc;
use std::time::{Duration, Instant};

use engine_core::engine::{Event, Request, SeqId};
use tokio::sync::{mpsc, oneshot};

use super::ModelHandle;
use crate::errors::ApiError;
use crate::metrics::{Metrics, SequenceTimings};

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
pub struct EngineRun {
    rx: mpsc::UnboundedReceiver<(usize, Event)>,
    tracks: Vec<Track>,
    start: Instant,
    model: Arc<ModelHandle>,
    metrics: Arc<Metrics>,
}

impl EngineRun {
    /// Submits `requests` (one per choice) and waits for the engine to accept them all.
    pub async fn start(
        metrics: &Arc<Metrics>,
        model: &Arc<ModelHandle>,
        requests: Vec<Request>,
        start: Instant,
    ) -> Result<EngineRun, ApiError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut gen_ = EngineRun {
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
            metrics: Arc::clone(metrics),
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
            Event::PromptLogprobs(_) | Event::Embedding(_) => {}
        }
        Some((i, ev))
    }

    fn record(&self, i: usize, reason: &'static str, generated: usize) {
        let t = &self.tracks[i];
        self.metrics.record_sequence(
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

impl Drop for EngineRun {
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
