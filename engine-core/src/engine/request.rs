//! What a caller asks the engine for, and what it hears back.

use crate::constraint::Grammar;
use crate::model::Pooling;
use crate::sampler::{SampledToken, SamplingParams};

/// Identifies a sequence in the engine.
pub type SeqId = u64;

/// A generation request over already-tokenized input.
#[derive(Clone, Debug)]
pub struct Request {
    /// Prompt token ids.
    pub prompt: Vec<u32>,
    /// Sampling parameters.
    pub params: SamplingParams,
    /// Most tokens to generate (0 = none: only prompt log-probabilities, if asked).
    pub max_tokens: usize,
    /// Stop strings (not included in the output).
    pub stop: Vec<String>,
    /// Keep generating after an end-of-generation token (benchmarks).
    pub ignore_eos: bool,
    /// Log-probabilities of the prompt tokens, with this many alternatives each (`echo`).
    pub prompt_logprobs: Option<usize>,
    /// Seed used when `params.seed` is unset (the caller draws it).
    pub fallback_seed: u64,
    /// The flow (tenant) it belongs to, for fair queueing; none: the shared default flow.
    pub flow: Option<super::Flow>,
    /// Embed the prompt instead of continuing it: its final hidden states pooled this way come
    /// back as [`Event::Embedding`] (and `max_tokens` is taken as 0).
    pub embed: Option<Pooling>,
    /// Structured output: what the generated text must match (its tokens are masked to keep it
    /// a prefix of an accepted text, and it ends when the grammar is complete).
    pub grammar: Option<Grammar>,
}

impl Request {
    /// A greedy request for `max_tokens` tokens.
    pub fn greedy(prompt: Vec<u32>, max_tokens: usize) -> Request {
        Request {
            prompt,
            params: SamplingParams {
                temperature: 0.0,
                ..SamplingParams::default()
            },
            max_tokens,
            stop: Vec::new(),
            ignore_eos: false,
            prompt_logprobs: None,
            fallback_seed: 0,
            flow: None,
            embed: None,
            grammar: None,
        }
    }

    /// A request for the embedding of `prompt`, pooled as `pooling` says.
    pub fn embedding(prompt: Vec<u32>, pooling: Pooling) -> Request {
        Request {
            embed: Some(pooling),
            ..Request::greedy(prompt, 0)
        }
    }
}

/// Why a sequence ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-generation token or a stop string.
    Stop,
    /// `max_tokens` or the context size was reached.
    Length,
    /// The caller cancelled it (or stopped listening).
    Cancelled,
}

impl FinishReason {
    /// The OpenAI name (`stop`, `length`); cancelled sequences report `stop`.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop | FinishReason::Cancelled => "stop",
            FinishReason::Length => "length",
        }
    }
}

/// The log-probability of one prompt token.
#[derive(Clone, Debug, PartialEq)]
pub struct PromptLogprob {
    /// The token.
    pub id: u32,
    /// Its log-probability given the tokens before it (`None` for the first token).
    pub logprob: Option<f32>,
    /// The most likely tokens at its position, with log-probabilities.
    pub top: Vec<(u32, f32)>,
}

/// Something that happened to a sequence.
#[derive(Clone, Debug)]
pub enum Event {
    /// Prompt log-probabilities (sent once, before any token, when asked for).
    PromptLogprobs(Vec<PromptLogprob>),
    /// The prompt's embedding, of unit length (sent once, before [`Event::Finished`], when
    /// asked for).
    Embedding(Vec<f32>),
    /// A generated token, with the text that became final with it (possibly empty while a
    /// multi-byte character or a possible stop string is pending).
    Token {
        /// The sampled token.
        token: SampledToken,
        /// Newly final text.
        text: String,
    },
    /// The sequence ended; `text` is the last of its output.
    Finished {
        /// Why.
        reason: FinishReason,
        /// Remaining text released at the end.
        text: String,
        /// Prompt tokens.
        prompt_tokens: usize,
        /// Generated tokens.
        completion_tokens: usize,
    },
    /// The sequence failed (the engine stays usable).
    Failed(String),
}

/// Receives a sequence's events; returning `false` means nobody listens any more, and the engine
/// cancels the sequence.
pub type EventSink = Box<dyn FnMut(Event) -> bool + Send>;
