//! One sequence's state inside the engine.

use super::request::{Event, EventSink, FinishReason, PromptLogprob, Request, SeqId};
use crate::constraint::Constraint;
use crate::kv_cache::BlockTable;
use crate::model::PoolAccumulator;
use crate::sampler::{Sampler, StopMatcher};
use crate::tokenizer::StreamDecoder;

/// A sequence being generated.
pub(crate) struct Sequence {
    pub id: SeqId,
    /// Prompt and generated tokens.
    pub tokens: Vec<u32>,
    pub prompt_len: usize,
    /// Tokens whose keys and values are in the cache.
    pub computed: usize,
    pub table: BlockTable,
    pub sampler: Sampler,
    pub stop: StopMatcher,
    pub decoder: StreamDecoder,
    pub max_tokens: usize,
    pub ignore_eos: bool,
    /// Alternatives per prompt token, while prompt log-probabilities are being collected.
    pub prompt_logprobs: Option<usize>,
    pub collected: Vec<PromptLogprob>,
    sink: EventSink,
    /// Set once the listener is gone.
    pub deaf: bool,
    /// Tokens scheduled in the current step.
    pub scheduled: usize,
    /// A stop string matched: nothing more is shown.
    pub stop_hit: bool,
    /// Its fair-queueing start tag (the waiting queue's order).
    pub start_tag: f64,
    /// Its flow's id ("" without one).
    pub flow: String,
    /// The embedding being pooled, while the prompt is computed (embedding requests).
    pub pool: Option<PoolAccumulator>,
    /// The structured-output grammar its tokens must follow.
    pub constraint: Option<Constraint>,
}

impl Sequence {
    /// A sequence for `req`; `dim` is the width of the model's hidden states.
    pub fn new(id: SeqId, req: Request, sampler: Sampler, sink: EventSink, dim: usize) -> Sequence {
        let prompt_len = req.prompt.len();
        let collected = match req.prompt_logprobs {
            Some(_) => vec![PromptLogprob {
                id: req.prompt[0],
                logprob: None,
                top: Vec::new(),
            }],
            None => Vec::new(),
        };
        Sequence {
            id,
            tokens: req.prompt,
            prompt_len,
            computed: 0,
            table: BlockTable::new(),
            sampler,
            stop: StopMatcher::new(req.stop),
            decoder: StreamDecoder::new(),
            max_tokens: if req.embed.is_some() {
                0
            } else {
                req.max_tokens
            },
            ignore_eos: req.ignore_eos,
            prompt_logprobs: req.prompt_logprobs,
            collected,
            sink,
            deaf: false,
            scheduled: 0,
            stop_hit: false,
            start_tag: 0.0,
            flow: String::new(),
            pool: req.embed.map(|p| PoolAccumulator::new(p, dim)),
            constraint: None,
        }
    }

    /// Generated tokens so far.
    pub fn generated(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }

    /// Tokens not yet in the cache.
    pub fn pending(&self) -> usize {
        self.tokens.len() - self.computed
    }

    /// Whether the prompt itself is still being computed.
    pub fn in_prefill(&self) -> bool {
        self.computed < self.prompt_len
    }

    /// Whether every prompt row must be computed here (prompt log-probabilities, embeddings),
    /// so that nothing may be taken from a cache.
    pub fn needs_every_row(&self) -> bool {
        self.prompt_logprobs.is_some() || self.pool.is_some()
    }

    /// Forgets prompt log-probabilities and pooled states gathered before a preemption (they
    /// are computed again).
    pub fn restart_prompt_outputs(&mut self) {
        if self.prompt_logprobs.is_some() {
            self.collected.truncate(1);
        }
        if let Some(p) = &mut self.pool {
            p.reset();
        }
    }

    /// Sends an event; a listener that is gone marks the sequence deaf.
    pub fn send(&mut self, event: Event) {
        if !self.deaf && !(self.sink)(event) {
            self.deaf = true;
        }
    }

    /// Sends the final event.
    pub fn finish(&mut self, reason: FinishReason) {
        let text = if self.stop_hit {
            String::new()
        } else {
            let step = self.stop.push(&self.decoder.finish());
            let mut text = step.emit;
            if step.stopped {
                self.stop_hit = true;
            } else {
                text.push_str(&self.stop.finish());
            }
            text
        };
        let event = Event::Finished {
            reason,
            text,
            prompt_tokens: self.prompt_len,
            completion_tokens: self.generated(),
        };
        self.send(event);
    }
}
