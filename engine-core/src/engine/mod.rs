//! The engine: a model, its tokenizer and chat template, a paged KV cache, and an
//! iteration-level scheduler (continuous batching) that advances every active sequence by one
//! forward pass per [`Engine::step`].

mod fairness;
mod request;
mod sequence;
#[cfg(feature = "std-threads")]
mod service;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub use fairness::Flow;
pub use request::{Event, EventSink, FinishReason, PromptLogprob, Request, SeqId};
#[cfg(feature = "std-threads")]
pub use service::{EngineInfo, EngineService, EngineStats, Reply, ServiceOptions, SubmitError};

use self::fairness::FairQueue;
use self::sequence::Sequence;
use crate::backend::{Backend, BackendError, KvDtype, KvLayout, LogitsWanted, SeqChunk, StepInput};
use crate::chat::{ChatTemplate, ChatTemplateError};
use crate::constraint::{Constraint, ConstraintError, Grammar, GrammarCompiler};
use crate::gguf::GgufFile;
use crate::kv_cache::{BlockAllocator, BlockTable};
use crate::model::{LlamaModel, ModelConfig, ModelError, Scratch};
use crate::sampler::{SampledToken, Sampler, SamplerError, log_softmax_top};
use crate::tokenizer::{Tokenizer, TokenizerError};

/// Most prompt rows per step for a sequence that wants prompt log-probabilities (each such row
/// needs a whole vocabulary of logits).
const PROMPT_LOGPROB_ROWS: usize = 64;

/// Engine limits and cache geometry.
#[derive(Clone, Debug, PartialEq)]
pub struct EngineConfig {
    /// Most tokens per sequence (prompt + output); 0 = the model's context length, capped at 8192.
    pub context_size: usize,
    /// Most sequences computed together.
    pub max_seqs: usize,
    /// Most tokens per forward pass (decode tokens plus prefill chunks).
    pub max_batch_tokens: usize,
    /// Token slots per KV block.
    pub block_size: usize,
    /// Token slots in the whole KV cache; 0 = one full context.
    pub kv_tokens: usize,
    /// KV cache element type.
    pub kv_dtype: KvDtype,
}

impl EngineConfig {
    /// Fills in the defaults for a model (`0` fields) and returns the KV cache geometry it gives.
    pub fn resolve(&mut self, model: &ModelConfig) -> KvLayout {
        if self.context_size == 0 {
            self.context_size = model.context_length.min(8192);
        }
        self.block_size = self.block_size.max(1);
        self.max_seqs = self.max_seqs.max(1);
        self.max_batch_tokens = self.max_batch_tokens.max(1);
        if self.kv_tokens == 0 {
            self.kv_tokens = self.context_size;
        }
        KvLayout {
            n_layers: model.n_layers,
            n_kv_heads: model.n_kv_heads,
            head_dim: model.head_dim,
            block_size: self.block_size,
            n_blocks: self.kv_tokens.div_ceil(self.block_size),
            dtype: self.kv_dtype,
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            context_size: 0,
            max_seqs: 16,
            max_batch_tokens: 512,
            block_size: 16,
            kv_tokens: 0,
            kv_dtype: KvDtype::F16,
        }
    }
}

/// Why the engine could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The model could not be loaded or run.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The tokenizer could not be built.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// The chat template could not be compiled or rendered.
    #[error(transparent)]
    Template(#[from] ChatTemplateError),
    /// Invalid sampling parameters.
    #[error(transparent)]
    Sampler(#[from] SamplerError),
    /// The structured-output grammar cannot be used.
    #[error(transparent)]
    Grammar(#[from] ConstraintError),
    /// The prompt is empty.
    #[error("the prompt is empty")]
    EmptyPrompt,
    /// The prompt does not fit the context.
    #[error(
        "the prompt has {prompt} tokens, but the context holds {context} (including at least one generated token)"
    )]
    PromptTooLong {
        /// Prompt tokens.
        prompt: usize,
        /// Context size.
        context: usize,
    },
    /// The KV cache cannot hold even one sequence of this length.
    #[error("the KV cache holds {available} tokens, fewer than the {needed} this sequence needs")]
    KvTooSmall {
        /// Tokens needed.
        needed: usize,
        /// Tokens the cache holds.
        available: usize,
    },
}

/// What one step did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StepReport {
    /// Prompt tokens computed.
    pub prefill_tokens: usize,
    /// Sequences that generated a token.
    pub decoded: usize,
    /// Sequences that finished.
    pub finished: usize,
    /// Sequences preempted (to be recomputed later).
    pub preempted: usize,
    /// Prompt tokens of the sequences admitted, whose start was looked up in the prefix cache.
    pub prefix_queries: usize,
    /// Of those, the tokens found there (not computed again).
    pub prefix_hits: usize,
    /// The step was abandoned part way ([`Engine::interrupt_handle`]): nothing was computed,
    /// and its tokens are scheduled again.
    pub abandoned: bool,
}

/// A model ready to generate, with its scheduler.
pub struct Engine<B: Backend> {
    backend: B,
    model: LlamaModel<B>,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    kv: B::KvStore,
    alloc: BlockAllocator,
    scratch: Scratch<B>,
    config: EngineConfig,
    /// Sequences waiting for room, in order of their fair-queueing start tags.
    waiting: VecDeque<Sequence>,
    running: Vec<Sequence>,
    fair: FairQueue,
    next_id: SeqId,
    /// Whether finished sequences leave their KV behind for the next request ([`Engine::set_retain_prefix`]).
    retain_prefix: bool,
    /// The tokens (and their KV blocks) of the last finished sequence, while retained.
    retained: Option<Retained>,
    /// Compiles structured-output grammars (built at the first one, or ahead on another
    /// thread after [`Engine::prepare_grammars`]).
    grammars: GrammarSlot,
    /// Set from outside to abandon the step in progress ([`Engine::interrupt_handle`]).
    interrupt: Arc<AtomicBool>,
    /// The last step was abandoned (the next one always runs to its end).
    abandoned_last: bool,
    /// The backend's steps can be abandoned part way ([`crate::backend::Capabilities::eager`]).
    abandonable: bool,
}

/// The grammar compiler of an engine, as far as it is built.
enum GrammarSlot {
    /// Not yet asked for.
    Unbuilt,
    /// Being built on another thread.
    #[cfg(all(feature = "grammars", not(target_arch = "wasm32")))]
    Building(std::thread::JoinHandle<Result<GrammarCompiler, ConstraintError>>),
    /// Built.
    Ready(GrammarCompiler),
}

/// The cached tokens of a finished sequence that a next request may continue from.
struct Retained {
    tokens: Vec<u32>,
    table: BlockTable,
}

/// Lets a sequence about to be admitted continue the `retained` tokens it starts with (at least its
/// last prompt token is always computed, for the logits); frees the retained blocks when it does
/// not start with them.
fn adopt_retained(retained: &mut Option<Retained>, alloc: &mut BlockAllocator, seq: &mut Sequence) {
    let Some(mut r) = retained.take() else {
        return;
    };
    let common = r
        .tokens
        .iter()
        .zip(&seq.tokens)
        .take_while(|(a, b)| a == b)
        .count()
        .min(seq.tokens.len().saturating_sub(1));
    if common == 0 || seq.computed != 0 || !seq.table.is_empty() || seq.needs_every_row() {
        r.table.release(alloc);
        return;
    }
    r.table.truncate(alloc, common);
    seq.table = r.table;
    seq.computed = common;
}

impl<B: Backend> Engine<B> {
    /// Loads a model onto `backend` and allocates the KV cache.
    pub fn new(
        backend: B,
        file: &GgufFile,
        mut config: EngineConfig,
    ) -> Result<Engine<B>, EngineError> {
        let model = LlamaModel::load(&backend, file)?;
        let tokenizer = Tokenizer::from_metadata(file.metadata())?;
        let template = ChatTemplate::from_metadata(file.metadata())?;
        let layout = config.resolve(model.config());
        let n_blocks = layout.n_blocks;
        let kv = backend.alloc_kv(&layout)?;
        let abandonable = backend.capabilities().eager;
        Ok(Engine {
            alloc: BlockAllocator::new(n_blocks, config.block_size),
            backend,
            model,
            tokenizer,
            template,
            kv,
            scratch: Scratch::default(),
            config,
            waiting: VecDeque::new(),
            running: Vec::new(),
            fair: FairQueue::default(),
            next_id: 1,
            retain_prefix: false,
            retained: None,
            grammars: GrammarSlot::Unbuilt,
            interrupt: Arc::new(AtomicBool::new(false)),
            abandoned_last: false,
            abandonable,
        })
    }

    /// Keeps the KV cache of the last finished sequence, so that a next request whose prompt
    /// starts with the same tokens (the next turn of a chat) computes only what is new. Meant
    /// for single-user engines (a browser tab); the retained blocks are given back whenever a
    /// request does not continue them or the cache needs them.
    pub fn set_retain_prefix(&mut self, on: bool) {
        self.retain_prefix = on && !self.alloc.prefix_caching();
        if !on {
            self.drop_retained();
        }
    }

    /// Caches full KV blocks by their tokens (a hash chain over every token before them), so
    /// that a request starting with the same tokens as an earlier or running one (a shared
    /// system prompt, the earlier turns of a chat, a preempted sequence coming back) computes
    /// only the rest; blocks no sequence holds stay cached until the pool needs them, least
    /// recently used first. Results are the same with and without it. Meant for servers; it
    /// replaces [`Engine::set_retain_prefix`], which it turns off.
    pub fn set_prefix_caching(&mut self, on: bool) {
        if on {
            self.set_retain_prefix(false);
        }
        self.alloc.set_prefix_caching(on);
    }

    /// Blocks no sequence holds that still cache tokens for later requests.
    pub fn cached_blocks(&self) -> usize {
        self.alloc.cached_blocks()
    }

    /// Tokens of the last finished sequence whose KV is still cached (0 when none is retained).
    pub fn retained_tokens(&self) -> usize {
        self.retained.as_ref().map_or(0, |r| r.tokens.len())
    }

    fn drop_retained(&mut self) {
        if let Some(mut r) = self.retained.take() {
            r.table.release(&mut self.alloc);
        }
    }

    /// Hands a finished sequence's cached tokens to the next request (or frees them).
    fn retire(&mut self, mut seq: Sequence, reason: FinishReason) {
        seq.finish(reason);
        if self.retain_prefix
            && !self.alloc.prefix_caching()
            && reason != FinishReason::Cancelled
            && seq.computed > 0
        {
            self.drop_retained();
            let mut table = std::mem::take(&mut seq.table);
            table.truncate(&mut self.alloc, seq.computed);
            let mut tokens = std::mem::take(&mut seq.tokens);
            tokens.truncate(seq.computed);
            self.retained = Some(Retained { tokens, table });
        } else {
            seq.table.release(&mut self.alloc);
        }
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &Tokenizer {
        &self.tokenizer
    }

    /// The chat template.
    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    /// The model's hyper-parameters.
    pub fn model_config(&self) -> &ModelConfig {
        self.model.config()
    }

    /// The resolved engine configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Sequences being computed.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Sequences waiting for room.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Fraction of the KV cache in use.
    pub fn kv_usage(&self) -> f64 {
        self.alloc.usage()
    }

    /// KV blocks in the pool, and how many are free.
    pub fn kv_blocks(&self) -> (usize, usize) {
        (self.alloc.total_blocks(), self.alloc.free_blocks())
    }

    /// A flag that abandons the step in progress between two of the model's layers when set
    /// (from any thread), so that a request that should not wait for it (a flow's first, see
    /// [`Engine::step`]) starts at once. The step's tokens are scheduled again; a step right
    /// after an abandoned one always runs to its end, so the engine keeps making progress. Each
    /// step clears the flag as it starts. Only on a backend whose operations are
    /// [`crate::backend::Capabilities::eager`]; on others steps always run to their end.
    pub fn interrupt_handle(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.interrupt)
    }

    /// Whether any sequence is waiting or running.
    pub fn has_work(&self) -> bool {
        !self.waiting.is_empty() || !self.running.is_empty()
    }

    /// Queues a request; its events go to `sink`.
    pub fn add(&mut self, req: Request, sink: EventSink) -> Result<SeqId, EngineError> {
        if req.prompt.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        let vocab = self.model.config().vocab_size;
        if let Some(&bad) = req.prompt.iter().find(|&&t| t as usize >= vocab) {
            return Err(ModelError::Step(format!(
                "token id {bad} is outside the vocabulary of {vocab}"
            ))
            .into());
        }
        let context = self.config.context_size;
        if req.prompt.len() + usize::from(req.max_tokens > 0) > context {
            return Err(EngineError::PromptTooLong {
                prompt: req.prompt.len(),
                context,
            });
        }
        let available = self.alloc.total_blocks() * self.alloc.block_size();
        if req.prompt.len() + 1 > available {
            return Err(EngineError::KvTooSmall {
                needed: req.prompt.len() + 1,
                available,
            });
        }
        req.params.validate(vocab)?;
        let constraint = match &req.grammar {
            Some(g) if req.embed.is_none() => Some(self.compile_grammar(g)?),
            _ => None,
        };
        let mut sampler = Sampler::new(req.params.clone(), vocab, req.fallback_seed)?;
        sampler.accept_prompt(&req.prompt);
        let id = self.next_id;
        self.next_id += 1;
        let cost = (req.prompt.len() + req.max_tokens).min(context);
        let tag = self.fair.tag(req.flow.as_ref(), cost);
        let flow = req.flow.as_ref().map(|f| f.id.clone()).unwrap_or_default();
        let mut seq = Sequence::new(id, req, sampler, sink, self.model.config().d_model);
        seq.start_tag = tag;
        seq.flow = flow;
        seq.constraint = constraint;
        self.enqueue(seq);
        Ok(id)
    }

    /// Starts building the vocabulary's token trie for structured outputs on another thread,
    /// so that the first request with a grammar does not wait most of a second for it (servers
    /// call this at start; engines that never see a grammar need not).
    pub fn prepare_grammars(&mut self) {
        #[cfg(all(feature = "grammars", not(target_arch = "wasm32")))]
        if matches!(self.grammars, GrammarSlot::Unbuilt)
            && let Ok(vocabulary) = crate::constraint::Vocabulary::of(&self.tokenizer)
        {
            let build = std::thread::Builder::new()
                .name("grammar-trie".into())
                .spawn(move || GrammarCompiler::build(vocabulary));
            if let Ok(handle) = build {
                self.grammars = GrammarSlot::Building(handle);
            }
        }
    }

    /// A fresh constraint for `grammar` (the vocabulary's token trie is built the first time,
    /// unless [`Engine::prepare_grammars`] built it ahead).
    pub fn compile_grammar(&mut self, grammar: &Grammar) -> Result<Constraint, EngineError> {
        let compiler = match std::mem::replace(&mut self.grammars, GrammarSlot::Unbuilt) {
            GrammarSlot::Ready(c) => c,
            #[cfg(all(feature = "grammars", not(target_arch = "wasm32")))]
            GrammarSlot::Building(handle) => match handle.join() {
                Ok(built) => built?,
                Err(_) => GrammarCompiler::new(&self.tokenizer)?,
            },
            GrammarSlot::Unbuilt => GrammarCompiler::new(&self.tokenizer)?,
        };
        let constraint = compiler.compile(grammar);
        self.grammars = GrammarSlot::Ready(compiler);
        Ok(constraint?)
    }

    /// Puts a sequence in the waiting queue at its place by start tag (then age).
    fn enqueue(&mut self, seq: Sequence) {
        let key = (seq.start_tag, seq.id);
        let at = self.waiting.partition_point(|s| (s.start_tag, s.id) < key);
        self.waiting.insert(at, seq);
    }

    /// Cancels a sequence: it ends with [`FinishReason::Cancelled`] and its blocks are freed at
    /// once. Unknown ids are ignored.
    pub fn cancel(&mut self, id: SeqId) {
        if let Some(i) = self.waiting.iter().position(|s| s.id == id) {
            if let Some(mut seq) = self.waiting.remove(i) {
                seq.table.release(&mut self.alloc);
                seq.finish(FinishReason::Cancelled);
            }
        } else if let Some(i) = self.running.iter().position(|s| s.id == id) {
            let mut seq = self.running.remove(i);
            seq.table.release(&mut self.alloc);
            seq.finish(FinishReason::Cancelled);
        }
    }

    /// Frees the memory of a sequence that will be recomputed later.
    fn preempt(&mut self, mut seq: Sequence) {
        seq.table.release(&mut self.alloc);
        seq.computed = 0;
        seq.scheduled = 0;
        seq.restart_prompt_outputs();
        self.enqueue(seq);
    }

    /// Ends running sequence `i`, freeing its blocks (or retaining them, see [`Engine::set_retain_prefix`]).
    fn finish_running(&mut self, i: usize, reason: FinishReason) {
        let seq = self.running.remove(i);
        self.retire(seq, reason);
    }

    /// Most prompt rows this sequence may compute in one step.
    fn chunk_cap(seq: &Sequence) -> usize {
        if seq.prompt_logprobs.is_some() && seq.in_prefill() {
            PROMPT_LOGPROB_ROWS
        } else {
            usize::MAX
        }
    }

    /// Chooses this step's tokens.
    ///
    /// 1. Every decoding sequence (one pending token) gets its token first, oldest first, so a
    ///    long prompt never stalls the streams already running; when the cache has no block for
    ///    one, the most recently admitted sequence is preempted (freed, to be recomputed later).
    /// 2. Running sequences still in prefill get chunks from what is left of the token budget,
    ///    as far as free blocks allow.
    /// 3. Waiting sequences are admitted in fair-queueing order (arrival order within a flow;
    ///    a flow below its share of the slots first) while the budget, the sequence limit and
    ///    memory allow. Before all this (0), a flow kept below its share by another's running
    ///    sequences takes one of their slots; then, when a waiting sequence's flow runs nothing
    ///    while other flows run, such sequences are admitted and the step holds only them (the
    ///    others' decodes wait one step), so that a flow's first token never waits for a step of
    ///    everyone else's work.
    ///
    /// A sequence that cannot fit even alone in the cache ends with [`FinishReason::Length`].
    fn schedule(&mut self, report: &mut StepReport) {
        let full_budget = self.config.max_batch_tokens;
        let mut budget = full_budget;
        let bs = self.config.block_size;

        // 0. A flow below its share of the slots takes one from the flow furthest above it.
        self.yield_to_fair_share(report);

        // A flow's first sequence while other flows run has the step to itself: its first token
        // then takes what it would on an idle engine, not a step of everyone's decodes.
        if !self.running.is_empty() && self.admit(&mut budget, report, true) > 0 {
            return;
        }

        // 1. Decodes.
        let mut i = 0;
        while i < self.running.len() {
            if self.running[i].pending() != 1 || budget == 0 {
                i += 1;
                continue;
            }
            loop {
                if self.alloc.free_blocks() == 0 {
                    self.drop_retained();
                }
                let seq = &mut self.running[i];
                if seq.table.reserve(&mut self.alloc, 1).is_ok() {
                    seq.scheduled = 1;
                    budget -= 1;
                    i += 1;
                    break;
                }
                if self.running.len() == 1 {
                    // Alone and still out of blocks: the cache cannot hold this sequence.
                    self.finish_running(i, FinishReason::Length);
                    report.finished += 1;
                    break;
                }
                let victim = self.running.pop().expect("running is not empty");
                report.preempted += 1;
                let was_current = self.running.len() == i;
                self.preempt(victim);
                if was_current {
                    break;
                }
            }
        }

        // 2. Prefill chunks of admitted sequences.
        for seq in &mut self.running {
            if budget == 0 {
                break;
            }
            if seq.scheduled > 0 || seq.pending() == 0 {
                continue;
            }
            let room = (seq.table.blocks().len() + self.alloc.free_blocks()) * bs - seq.table.len();
            let take = seq
                .pending()
                .min(budget)
                .min(Self::chunk_cap(seq))
                .min(room);
            if take == 0 {
                continue;
            }
            seq.table
                .reserve(&mut self.alloc, take)
                .expect("free blocks were counted");
            seq.scheduled = take;
            budget -= take;
        }

        // 3. Admissions.
        self.admit(&mut budget, report, false);

        // 4. Nothing could be scheduled although sequences run: they all wait for blocks held by
        // each other. Free the newest so that the others can go on next step.
        if budget == full_budget && !self.running.is_empty() && self.retained.is_some() {
            // Blocks kept for a next turn are what the running sequences lack: free them first.
            self.drop_retained();
        } else if budget == full_budget && self.running.len() > 1 {
            let victim = self.running.pop().expect("running is not empty");
            report.preempted += 1;
            self.preempt(victim);
        } else if budget == full_budget && self.running.len() == 1 {
            self.finish_running(0, FinishReason::Length);
            report.finished += 1;
        }
    }

    /// Admits waiting sequences in fair-queueing order while the budget, the sequence limit and
    /// memory allow (with `newcomers_only`, only those whose flow runs nothing); returns how
    /// many.
    fn admit(
        &mut self,
        budget: &mut usize,
        report: &mut StepReport,
        newcomers_only: bool,
    ) -> usize {
        let mut admitted = 0;
        while *budget > 0 && self.running.len() < self.config.max_seqs {
            let Some(k) = self.next_admission(newcomers_only) else {
                break;
            };
            adopt_retained(&mut self.retained, &mut self.alloc, &mut self.waiting[k]);
            let seq = &mut self.waiting[k];
            // The start of its tokens may be cached (at least the last one is computed, for the
            // logits; prompt log-probabilities and embeddings need every row).
            let looked_up = self.alloc.prefix_caching()
                && seq.table.blocks().is_empty()
                && seq.computed == 0
                && !seq.needs_every_row();
            if looked_up {
                let n = seq.tokens.len();
                seq.computed = seq.table.adopt_cached(&mut self.alloc, &seq.tokens, n - 1);
            }
            let seq = &self.waiting[k];
            let need = self.alloc.blocks_for(seq.tokens.len() + 1);
            if need > self.alloc.total_blocks() {
                // A preempted sequence that grew beyond the whole cache.
                let mut seq = self.waiting.remove(k).expect("checked above");
                seq.table.release(&mut self.alloc);
                seq.finish(FinishReason::Length);
                report.finished += 1;
                continue;
            }
            if need.saturating_sub(seq.table.blocks().len()) > self.alloc.free_blocks() {
                if looked_up {
                    // Not admitted yet: it holds nothing while it waits.
                    let seq = &mut self.waiting[k];
                    seq.table.release(&mut self.alloc);
                    seq.computed = 0;
                }
                break;
            }
            let mut seq = self.waiting.remove(k).expect("checked above");
            if looked_up {
                report.prefix_queries += seq.tokens.len();
                report.prefix_hits += seq.computed;
            }
            self.fair.admitted(seq.start_tag);
            let take = seq.pending().min(*budget).min(Self::chunk_cap(&seq));
            seq.table
                .reserve(&mut self.alloc, take)
                .expect("free blocks were checked");
            seq.scheduled = take;
            *budget -= take;
            self.running.push(seq);
            admitted += 1;
        }
        admitted
    }

    /// Each flow's running sequences, and the share of the slots each flow of those running or
    /// waiting is due.
    fn fair_shares(&self) -> (HashMap<&str, usize>, usize) {
        let mut running: HashMap<&str, usize> = HashMap::new();
        for s in &self.running {
            *running.entry(s.flow.as_str()).or_default() += 1;
        }
        let mut flows: Vec<&str> = running.keys().copied().collect();
        for s in &self.waiting {
            if !flows.contains(&s.flow.as_str()) {
                flows.push(s.flow.as_str());
            }
        }
        let share = (self.config.max_seqs / flows.len().max(1)).max(1);
        (running, share)
    }

    /// The waiting sequence to admit next: the first in fair-queueing order whose flow runs
    /// fewer sequences than its share, else the first (with `newcomers_only`: the first whose
    /// flow runs nothing, else none).
    fn next_admission(&self, newcomers_only: bool) -> Option<usize> {
        if self.waiting.is_empty() {
            return None;
        }
        let (running, share) = self.fair_shares();
        let runs = |s: &Sequence| running.get(s.flow.as_str()).copied().unwrap_or(0);
        let ready = |s: &Sequence| !self.waits_for_twin(s);
        if newcomers_only {
            return self.waiting.iter().position(|s| runs(s) == 0 && ready(s));
        }
        self.waiting
            .iter()
            .position(|s| runs(s) < share && ready(s))
            .or_else(|| self.waiting.iter().position(ready))
    }

    /// Whether `s` should wait for a running sequence with the same prompt to finish computing
    /// it, and then take its blocks from the prefix cache instead of computing them a second
    /// time (the choices of a request with `n > 1`, or the same request sent twice).
    fn waits_for_twin(&self, s: &Sequence) -> bool {
        let prompt = &s.tokens[..s.prompt_len];
        self.alloc.prefix_caching()
            && s.table.blocks().is_empty()
            && !s.needs_every_row()
            && s.prompt_len > self.config.block_size
            && self.running.iter().any(|r| {
                r.in_prefill()
                    && r.prompt_len == s.prompt_len
                    && r.tokens[..r.prompt_len] == *prompt
            })
    }

    /// When every slot is taken and a waiting flow runs fewer sequences than its share, the
    /// most recently admitted sequence of the flow furthest above its share is preempted (freed,
    /// recomputed later), so that one tenant's backlog never keeps another out for the length
    /// of its answers. With one flow nothing changes.
    fn yield_to_fair_share(&mut self, report: &mut StepReport) {
        if self.running.len() < self.config.max_seqs || self.waiting.is_empty() {
            return;
        }
        let victim = {
            let (running, share) = self.fair_shares();
            let starved = self
                .waiting
                .iter()
                .find(|s| running.get(s.flow.as_str()).copied().unwrap_or(0) < share);
            let over = running
                .iter()
                .filter(|(_, n)| **n > share)
                .max_by_key(|(f, n)| (**n, std::cmp::Reverse(**f)))
                .map(|(f, _)| (*f).to_owned());
            match (starved, over) {
                (Some(starved), Some(flow)) => {
                    self.running
                        .iter()
                        .rposition(|s| s.flow == flow)
                        .filter(|&i| {
                            // Only when the freed blocks let the starved sequence in.
                            let need = self
                                .alloc
                                .blocks_for(starved.tokens.len() + 1)
                                .saturating_sub(starved.table.blocks().len());
                            need <= self.alloc.free_blocks() + self.running[i].table.blocks().len()
                        })
                }
                _ => None,
            }
        };
        if let Some(i) = victim {
            let seq = self.running.remove(i);
            report.preempted += 1;
            self.preempt(seq);
        }
    }

    /// Ends every sequence with [`Event::Failed`] and frees the whole cache (after a backend
    /// failure, when the state of the step is unknown).
    pub fn fail_all(&mut self, message: &str) {
        self.drop_retained();
        // What the failed step wrote is unknown: forget the cached blocks too.
        self.alloc.forget_cached();
        for mut seq in self.running.drain(..).chain(self.waiting.drain(..)) {
            seq.table.release(&mut self.alloc);
            seq.send(Event::Failed(message.to_owned()));
        }
    }

    /// Cancels every sequence (see [`Engine::cancel`]).
    pub fn cancel_all(&mut self) {
        for mut seq in self.running.drain(..).chain(self.waiting.drain(..)) {
            seq.table.release(&mut self.alloc);
            seq.finish(FinishReason::Cancelled);
        }
    }

    /// Drops sequences whose listener is gone, freeing their blocks.
    fn drop_deaf(&mut self) {
        let alloc = &mut self.alloc;
        self.running.retain_mut(|s| {
            if s.deaf {
                s.table.release(alloc);
            }
            !s.deaf
        });
        self.waiting.retain_mut(|s| {
            if s.deaf {
                s.table.release(alloc);
            }
            !s.deaf
        });
    }

    /// Runs one forward pass over every scheduled sequence and delivers its results.
    pub async fn step(&mut self) -> Result<StepReport, EngineError> {
        let mut report = StepReport::default();
        self.interrupt.store(false, Ordering::Relaxed);
        self.drop_deaf();
        self.schedule(&mut report);
        let bs = self.config.block_size;
        let mut chunks = Vec::new();
        let mut owners = Vec::new();
        for (i, seq) in self.running.iter().enumerate() {
            if seq.scheduled == 0 {
                continue;
            }
            let end = seq.computed + seq.scheduled;
            let reaches_end = end == seq.tokens.len();
            let wants_prompt = seq.prompt_logprobs.is_some() && seq.computed < seq.prompt_len;
            let logits = match (wants_prompt, reaches_end) {
                _ if seq.pool.is_some() => LogitsWanted::None,
                (true, _) => LogitsWanted::All,
                (false, true) => LogitsWanted::Last,
                (false, false) => LogitsWanted::None,
            };
            let hidden = seq.pool.as_ref().map_or(0..0, |p| {
                p.pooling()
                    .rows(seq.computed, seq.scheduled, seq.prompt_len)
            });
            owners.push((i, logits, hidden.len()));
            chunks.push(SeqChunk {
                start_pos: seq.computed,
                tokens: &seq.tokens[seq.computed..end],
                block_table: seq.table.blocks(),
                logits,
                hidden,
            });
        }
        if chunks.is_empty() {
            return Ok(report);
        }
        let input = StepInput::build(&chunks, bs, &self.model.config().rope);
        drop(chunks);
        let n_logits = input.n_logits;
        let n_outputs = input.output_rows.len();
        // The constrained sequences that sample this step compute their masks meanwhile.
        let constrained: Vec<&mut Constraint> = self
            .running
            .iter_mut()
            .filter(|s| s.scheduled > 0 && s.computed + s.scheduled == s.tokens.len())
            .filter(|s| s.max_tokens > 0 && s.pool.is_none())
            .filter_map(|s| s.constraint.as_mut())
            .collect();
        let (backend, model, kv, scratch) =
            (&self.backend, &self.model, &mut self.kv, &mut self.scratch);
        let stop = (self.abandonable && !self.abandoned_last).then_some(&*self.interrupt);
        let finished = alongside(constrained, || {
            backend.scope(|| model.forward_unless(backend, &input, kv, scratch, stop))
        })?;
        self.abandoned_last = !finished;
        if !finished {
            // Nothing was computed: the sequences keep their reserved blocks and are scheduled
            // afresh next step.
            for seq in &mut self.running {
                seq.scheduled = 0;
            }
            report.abandoned = true;
            return Ok(report);
        }
        let vocab = self.model.config().vocab_size;
        // When every logit row is the next-token distribution of a sequence whose sampler can run
        // on the device, only the chosen ids come back; otherwise the logits do.
        let device_ids = if n_logits > 0 && self.device_sampling_eligible(&owners) {
            let specs: Vec<_> = owners
                .iter()
                .filter(|&&(_, wanted, _)| wanted == LogitsWanted::Last)
                .filter_map(|&(i, _, _)| self.running[i].sampler.device_sampling())
                .collect();
            let buf = self.scratch.logits().expect("forward allocates logits");
            match self.backend.sample(buf, vocab, &specs) {
                Some(ids) => Some(ids.await?),
                None => None,
            }
        } else {
            None
        };
        let logits = match (&device_ids, n_logits) {
            (None, n) if n > 0 => {
                let buf = self.scratch.logits().expect("forward allocates logits");
                self.backend.read(buf, n * vocab).await?
            }
            _ => Vec::new(),
        };
        // Hidden states (embeddings) follow the logit rows among the output rows.
        let d = self.model.config().d_model;
        let hidden = if n_outputs > n_logits {
            let buf = self
                .scratch
                .hidden()
                .expect("forward allocates hidden states");
            self.backend.read(buf, n_outputs * d).await?
        } else {
            Vec::new()
        };

        let mut row = 0;
        let mut hidden_row = n_logits;
        for (i, wanted, n_hidden) in owners {
            let seq = &mut self.running[i];
            let start = seq.computed;
            let take = seq.scheduled;
            seq.computed += take;
            seq.table.advance(take, bs);
            seq.scheduled = 0;
            if self.alloc.prefix_caching() {
                seq.table.index_full_blocks(&mut self.alloc, &seq.tokens);
            }
            if seq.computed <= seq.prompt_len {
                report.prefill_tokens += take;
            }
            let rows = match wanted {
                LogitsWanted::None => 0,
                LogitsWanted::Last => 1,
                LogitsWanted::All => take,
            };
            let seq_logits = if device_ids.is_some() {
                &[][..]
            } else {
                &logits[row * vocab..(row + rows) * vocab]
            };
            // Only sequences with a logit row have a token picked on the device.
            let device_id = device_ids.as_ref().filter(|_| rows > 0).map(|ids| ids[row]);
            row += rows;
            if let Some(pool) = &mut seq.pool {
                pool.add(&hidden[hidden_row * d..(hidden_row + n_hidden) * d]);
                hidden_row += n_hidden;
                if seq.computed >= seq.prompt_len {
                    let v = pool.finish();
                    seq.pool = None;
                    seq.send(Event::Embedding(v));
                }
            }
            if wanted == LogitsWanted::All {
                // Row r (position start + r) predicts token start + r + 1.
                for r in 0..rows {
                    let next = start + r + 1;
                    if next < seq.prompt_len {
                        let l = &seq_logits[r * vocab..(r + 1) * vocab];
                        let id = seq.tokens[next];
                        seq.collected.push(PromptLogprob {
                            id,
                            logprob: Some(token_logprob(l, id)),
                            top: log_softmax_top(l, seq.prompt_logprobs.unwrap_or(0)),
                        });
                    }
                }
                if seq.computed >= seq.prompt_len && seq.prompt_logprobs.take().is_some() {
                    let collected = std::mem::take(&mut seq.collected);
                    seq.send(Event::PromptLogprobs(collected));
                }
            }
            if seq.computed == seq.tokens.len() && rows > 0 {
                if seq.max_tokens == 0 {
                    continue;
                }
                let token = match device_id {
                    Some(id) => SampledToken {
                        id,
                        logprob: 0.0,
                        top_logprobs: Vec::new(),
                    },
                    None => {
                        let mut last = seq_logits[(rows - 1) * vocab..rows * vocab].to_vec();
                        if let Some(c) = &mut seq.constraint
                            && let Err(e) = c.mask(&mut last)
                        {
                            seq.send(Event::Failed(e.to_string()));
                            seq.deaf = true;
                            continue;
                        }
                        seq.sampler.sample(&mut last)
                    }
                };
                seq.sampler.accept(token.id);
                if let Some(c) = &mut seq.constraint
                    && let Err(e) = c.accept(token.id)
                {
                    seq.send(Event::Failed(e.to_string()));
                    seq.deaf = true;
                    continue;
                }
                seq.tokens.push(token.id);
                report.decoded += 1;
                let eog = self.tokenizer.is_end_of_generation(token.id) && !seq.ignore_eos;
                let text = if eog || seq.stop_hit {
                    String::new()
                } else {
                    let piece = seq.decoder.push(&self.tokenizer, token.id);
                    let step = seq.stop.push(&piece);
                    seq.stop_hit = step.stopped;
                    step.emit
                };
                seq.send(Event::Token { token, text });
            }
        }

        // Finish what is done.
        let context = self.config.context_size;
        let mut k = 0;
        while k < self.running.len() {
            let seq = &self.running[k];
            let last = seq.tokens.last().copied();
            let done = if seq.in_prefill() || seq.pending() > 1 {
                // Still computing its prompt (or recomputing after a preemption).
                None
            } else if seq.max_tokens == 0 {
                Some(FinishReason::Length)
            } else if seq.stop_hit
                || (seq.generated() > 0
                    && last.is_some_and(|t| self.tokenizer.is_end_of_generation(t))
                    && !seq.ignore_eos)
            {
                Some(FinishReason::Stop)
            } else if seq.generated() >= seq.max_tokens || seq.tokens.len() >= context {
                Some(FinishReason::Length)
            } else {
                None
            };
            match done {
                Some(reason) => {
                    self.finish_running(k, reason);
                    report.finished += 1;
                }
                _ => k += 1,
            }
        }
        Ok(report)
    }
}

impl<B: Backend> Engine<B> {
    /// Whether this step's tokens can be picked on the device: the backend samples, and every
    /// logit row is the last row of a sequence that samples a token with a sampler that needs no
    /// host-side processing (no logit bias, penalties or log-probabilities).
    fn device_sampling_eligible(&self, owners: &[(usize, LogitsWanted, usize)]) -> bool {
        self.backend.capabilities().device_sampling
            && owners.iter().all(|&(i, wanted, _)| {
                let seq = &self.running[i];
                match wanted {
                    LogitsWanted::None => true,
                    LogitsWanted::All => false,
                    LogitsWanted::Last => {
                        seq.computed + seq.scheduled == seq.tokens.len()
                            && seq.max_tokens > 0
                            && seq.constraint.is_none()
                            && seq.sampler.can_sample_on_device()
                    }
                }
            })
    }
}

/// Runs `work` while `constraints` compute their next masks on another thread (in turn where
/// there are no threads).
fn alongside<R>(mut constraints: Vec<&mut Constraint>, work: impl FnOnce() -> R) -> R {
    if constraints.is_empty() {
        return work();
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        std::thread::scope(|s| {
            s.spawn(move || constraints.iter_mut().for_each(|c| c.prepare()));
            work()
        })
    }
    #[cfg(target_arch = "wasm32")]
    {
        constraints.iter_mut().for_each(|c| c.prepare());
        work()
    }
}

/// `log softmax(logits)[id]`.
fn token_logprob(logits: &[f32], id: u32) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&x| f64::from(x - max).exp()).sum();
    (f64::from(logits[id as usize] - max) - sum.ln()) as f32
}
