//! Engine events to upstream outputs: token text and log-probabilities in the endpoint's format
//! (chat entries, or the legacy completions arrays with character offsets), finish reasons, the
//! echoed prompt, and the usage at the end.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use engine_core::engine::{Event, FinishReason, PromptLogprob};
use engine_core::sampler::SampledToken;
use engine_core::tokenizer::Tokenizer;
use futures_util::StreamExt;

use super::ModelHandle;
use super::run::EngineRun;
use super::tools::{ToolSetup, ToolStream};
use crate::gateway::upstream::{Delta, FailureKind, Logprobs, Output, OutputStream, UpstreamError};
use crate::openai::{ChatLogprobs, CompletionLogprobs, Endpoint, TokenLogprob, TopLogprob, Usage};

/// The text and bytes of a token, for log-probabilities.
pub fn token_text(tok: &Tokenizer, id: u32) -> (String, Vec<u8>) {
    let bytes = tok
        .token_bytes(id)
        .map(|b| b.into_owned())
        .unwrap_or_default();
    (String::from_utf8_lossy(&bytes).into_owned(), bytes)
}

/// Turns one request's engine events into outputs.
pub struct EventMapper {
    format: Endpoint,
    model: Arc<ModelHandle>,
    top: Option<usize>,
    ignore_eos: bool,
    /// Characters sent per choice (for `text_offset`).
    chars: Vec<usize>,
    /// Each prompt's text, when echoed.
    echo: Option<Vec<String>>,
    /// Choices per prompt: choice `i` answers prompt `i / n`.
    n: usize,
    usage: Usage,
    /// The request's tools, and each choice's answer watched for calls.
    tools: Option<(ToolSetup, Vec<ToolStream>)>,
}

impl EventMapper {
    /// A mapper for `choices` sequences, `n` per prompt.
    pub fn new(
        format: Endpoint,
        model: Arc<ModelHandle>,
        top: Option<usize>,
        ignore_eos: bool,
        choices: usize,
        n: usize,
        echo: Option<Vec<String>>,
    ) -> EventMapper {
        EventMapper {
            format,
            model,
            top,
            ignore_eos,
            chars: vec![0; choices],
            echo,
            n: n.max(1),
            usage: Usage::default(),
            tools: None,
        }
    }

    /// Parses tool calls out of the answers (chat).
    pub fn with_tools(mut self, tools: Option<ToolSetup>) -> EventMapper {
        self.tools = tools.map(|t| {
            let streams = self.chars.iter().map(|_| ToolStream::default()).collect();
            (t, streams)
        });
        self
    }

    /// Text of choice `i` as it may be shown now (a possible tool call is held back).
    fn shown(&mut self, i: usize, text: String) -> String {
        match &mut self.tools {
            Some((setup, streams)) if !text.is_empty() => streams[i].push(setup, &text),
            _ => text,
        }
    }

    /// The echoed text of choice `i`'s prompt.
    fn echoed(&self, i: usize) -> Option<String> {
        self.echo.as_ref()?.get(i / self.n).cloned()
    }

    /// What comes before any event: the echoed prompts, when they come without
    /// log-probabilities (with them, they come with the engine's prompt log-probabilities).
    pub fn start(&mut self) -> Vec<Delta> {
        if self.top.is_some() {
            return Vec::new();
        }
        if self.echo.is_none() {
            return Vec::new();
        }
        (0..self.chars.len())
            .map(|index| {
                let text = self.echoed(index).unwrap_or_default();
                self.delta(index, text, None, None)
            })
            .collect()
    }

    fn delta(
        &mut self,
        index: usize,
        text: String,
        logprobs: Option<Logprobs>,
        finish: Option<&str>,
    ) -> Delta {
        if let Some(c) = self.chars.get_mut(index) {
            *c += text.chars().count();
        }
        Delta {
            index,
            text,
            logprobs,
            finish_reason: finish.map(str::to_owned),
            extra: Default::default(),
        }
    }

    fn is_eog(&self, id: u32) -> bool {
        self.model.tokenizer.is_end_of_generation(id) && !self.ignore_eos
    }

    /// Applies one event of choice `i`.
    pub fn map(&mut self, i: usize, ev: Event, out: &mut VecDeque<Output>) -> Result<(), String> {
        match ev {
            Event::Token { token, text } => {
                let text = self.shown(i, text);
                let lp = self.token_logprobs(i, &token);
                if !text.is_empty() || lp.is_some() {
                    let d = self.delta(i, text, lp, None);
                    out.push_back(Output::Delta(d));
                }
            }
            Event::PromptLogprobs(p) => {
                if self.format == Endpoint::Completion {
                    let lp = self.prompt_logprobs(i, &p);
                    let text = self.echoed(i).unwrap_or_default();
                    let d = self.delta(i, text, Some(Logprobs::Completion(lp)), None);
                    out.push_back(Output::Delta(d));
                }
            }
            // Generation requests never ask for an embedding.
            Event::Embedding(_) => {}
            Event::Finished {
                reason,
                text,
                prompt_tokens,
                completion_tokens,
            } => {
                // A prompt is counted once, however many choices answer it.
                let prompt = if i.is_multiple_of(self.n) {
                    prompt_tokens
                } else {
                    0
                };
                self.usage.add(prompt, completion_tokens);
                let reason = match reason {
                    FinishReason::Cancelled => "abort",
                    r => r.as_str(),
                };
                match self.format {
                    Endpoint::Chat => {
                        let mut text = self.shown(i, text);
                        let calls = match &mut self.tools {
                            Some((setup, streams)) => {
                                let (rest, calls) = std::mem::take(&mut streams[i]).finish(setup);
                                text.push_str(&rest);
                                calls
                            }
                            None => Vec::new(),
                        };
                        if !text.is_empty() {
                            let d = self.delta(i, text, None, None);
                            out.push_back(Output::Delta(d));
                        }
                        let mut d = if calls.is_empty() {
                            self.delta(i, String::new(), None, Some(reason))
                        } else {
                            self.delta(i, String::new(), None, Some("tool_calls"))
                        };
                        if !calls.is_empty() {
                            let calls = calls.iter().enumerate().map(|(k, c)| c.to_json(k));
                            d.extra.insert(
                                "tool_calls".into(),
                                serde_json::Value::Array(calls.collect()),
                            );
                        }
                        out.push_back(Output::Delta(d));
                    }
                    Endpoint::Completion => {
                        let d = self.delta(i, text, None, Some(reason));
                        out.push_back(Output::Delta(d));
                    }
                }
            }
            Event::Failed(message) => return Err(message),
        }
        Ok(())
    }

    /// The usage of everything mapped so far.
    pub fn usage(&self) -> Usage {
        self.usage
    }

    fn token_logprobs(&self, i: usize, token: &SampledToken) -> Option<Logprobs> {
        self.top?;
        if self.is_eog(token.id) {
            return None;
        }
        let tok = &self.model.tokenizer;
        Some(match self.format {
            Endpoint::Chat => {
                let (text, bytes) = token_text(tok, token.id);
                Logprobs::Chat(ChatLogprobs {
                    content: Some(vec![TokenLogprob {
                        token: text,
                        logprob: token.logprob,
                        bytes: Some(bytes),
                        top_logprobs: token
                            .top_logprobs
                            .iter()
                            .map(|&(id, logprob)| {
                                let (token, bytes) = token_text(tok, id);
                                TopLogprob {
                                    token,
                                    logprob,
                                    bytes: Some(bytes),
                                }
                            })
                            .collect(),
                    }]),
                    refusal: None,
                })
            }
            Endpoint::Completion => {
                let mut lp = CompletionLogprobs::default();
                let mut offset = self.chars.get(i).copied().unwrap_or(0);
                self.push_logprob(
                    &mut lp,
                    &mut offset,
                    token.id,
                    Some(token.logprob),
                    &token.top_logprobs,
                );
                Logprobs::Completion(lp)
            }
        })
    }

    fn prompt_logprobs(&self, i: usize, prompt: &[PromptLogprob]) -> CompletionLogprobs {
        let mut lp = CompletionLogprobs::default();
        let mut offset = self.chars.get(i).copied().unwrap_or(0);
        for p in prompt {
            self.push_logprob(&mut lp, &mut offset, p.id, p.logprob, &p.top);
        }
        lp
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
}

/// The outputs of a run: its events mapped, then the usage; an engine failure ends the stream
/// with an error.
pub fn output_stream(run: EngineRun, mut mapper: EventMapper) -> OutputStream {
    let pending: VecDeque<Output> = mapper.start().into_iter().map(Output::Delta).collect();
    let state = (run, mapper, pending, false);
    futures_util::stream::unfold(
        state,
        |(mut run, mut mapper, mut pending, mut done)| async move {
            loop {
                if let Some(o) = pending.pop_front() {
                    return Some((Ok(o), (run, mapper, pending, done)));
                }
                if done {
                    return None;
                }
                match run.next().await {
                    Some((i, ev)) => {
                        if let Err(message) = mapper.map(i, ev, &mut pending) {
                            done = true;
                            let e = UpstreamError::failed(FailureKind::Status, message);
                            return Some((Err(e), (run, mapper, pending, done)));
                        }
                    }
                    None => {
                        done = true;
                        pending.push_back(Output::Usage(mapper.usage()));
                    }
                }
            }
        },
    )
    .boxed()
}
