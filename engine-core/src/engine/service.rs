//! The engine as a service: one OS thread owns an [`Engine`], takes commands (add, cancel,
//! shutdown) over a channel, steps while there is work and sleeps on the channel when idle, and
//! publishes its gauges and counters for whoever watches (a server's `/metrics`).
//!
//! Callers never block on the engine: [`EngineService::submit`] only sends a command, the
//! engine's verdict on the request comes back through a [`Reply`] callback and the sequence's
//! events through its [`EventSink`]. Both callbacks return `false` when nobody listens any more,
//! which cancels the sequence. The service is generic over the backend, so any
//! [`Backend`] plugs in unchanged.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use super::{Engine, EngineConfig, EngineError, Event, EventSink, Request, SeqId, StepReport};
use crate::backend::{Backend, BackendInfo};
use crate::model::ModelConfig;

/// Receives the engine's verdict on a submitted request: its id, or why it was refused.
/// Returning `false` means the caller is gone, and the sequence is cancelled at once.
pub type Reply = Box<dyn FnOnce(Result<SeqId, EngineError>) -> bool + Send>;

/// Limits of the service itself (the engine's own are in [`EngineConfig`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceOptions {
    /// Most sequences of one flow (see [`super::Flow`]; requests without one share a flow) that
    /// may wait for a slot beyond the engine's `max_seqs` running ones; further submissions of
    /// that flow are refused with [`SubmitError::QueueFull`], so a flow that floods the queue
    /// never shuts others out.
    pub max_waiting: usize,
    /// Cache full KV blocks by their tokens for later requests ([`Engine::set_prefix_caching`]).
    pub prefix_caching: bool,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions {
            max_waiting: 64,
            prefix_caching: true,
        }
    }
}

/// What a caller may want to know about the engine, fixed at start.
#[derive(Clone, Debug)]
pub struct EngineInfo {
    /// The resolved engine configuration (context size, limits, cache geometry).
    pub config: EngineConfig,
    /// The model's hyper-parameters.
    pub model: ModelConfig,
    /// The backend's name and device.
    pub backend: BackendInfo,
}

/// A snapshot of the engine's gauges and counters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EngineStats {
    /// Sequences being computed.
    pub running: usize,
    /// Sequences admitted to the engine and waiting for room.
    pub waiting: usize,
    /// Requests submitted that the engine thread has not picked up yet.
    pub queued: usize,
    /// Fraction of the KV cache's blocks in use, 0 to 1.
    pub kv_usage: f64,
    /// KV blocks in the pool.
    pub kv_blocks_total: usize,
    /// KV blocks free.
    pub kv_blocks_free: usize,
    /// Steps (forward passes) run.
    pub steps: u64,
    /// Prompt tokens computed (recomputation after preemption included).
    pub prefill_tokens: u64,
    /// Tokens generated.
    pub generated_tokens: u64,
    /// Sequences preempted.
    pub preemptions: u64,
    /// Steps abandoned part way so that a flow's first request could start at once
    /// ([`Engine::interrupt_handle`]).
    pub abandoned_steps: u64,
    /// Prompt tokens looked up in the prefix cache (as vLLM's `prefix_cache_queries`).
    pub prefix_cache_queries: u64,
    /// Of those, the tokens found there (as vLLM's `prefix_cache_hits`).
    pub prefix_cache_hits: u64,
    /// Steps that failed (every sequence in flight then fails).
    pub step_failures: u64,
}

/// Why a request was not even queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// Too many sequences are already running or waiting.
    #[error("the server is busy: {pending} requests are running or queued (limit {limit})")]
    QueueFull {
        /// Sequences running, waiting or queued.
        pending: usize,
        /// The most allowed.
        limit: usize,
    },
    /// The engine thread has stopped.
    #[error("the engine has stopped")]
    Stopped,
}

enum Command {
    Add {
        req: Box<Request>,
        sink: EventSink,
        reply: Reply,
    },
    Cancel(SeqId),
    CancelAll,
    Shutdown,
}

struct Shared {
    stats: Mutex<EngineStats>,
    /// Submitted, not yet taken by the engine thread.
    queued: AtomicUsize,
    /// Submitted and not ended yet (queued, waiting or running).
    outstanding: AtomicUsize,
    /// The same, per flow.
    per_flow: Mutex<HashMap<String, usize>>,
    /// Abandons the engine's step in progress ([`Engine::interrupt_handle`]).
    interrupt: Arc<AtomicBool>,
}

/// Counts one outstanding sequence until it ends (its final event, or its sink being dropped
/// without one: refused, or dropped because nobody listened).
struct Outstanding {
    shared: Arc<Shared>,
    flow: String,
    counted: bool,
}

impl Outstanding {
    fn release(&mut self) {
        if std::mem::take(&mut self.counted) {
            self.shared.outstanding.fetch_sub(1, Ordering::SeqCst);
            let mut per_flow = self
                .shared
                .per_flow
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(n) = per_flow.get_mut(&self.flow) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    per_flow.remove(&self.flow);
                }
            }
        }
    }
}

impl Drop for Outstanding {
    fn drop(&mut self) {
        self.release();
    }
}

/// An engine running on its own thread. Dropping the service cancels what is in flight and
/// joins the thread.
pub struct EngineService {
    tx: Sender<Command>,
    shared: Arc<Shared>,
    info: EngineInfo,
    limit: usize,
    thread: Option<JoinHandle<()>>,
}

impl EngineService {
    /// Starts the engine thread.
    pub fn start<B: Backend>(mut engine: Engine<B>, options: ServiceOptions) -> EngineService {
        engine.set_prefix_caching(options.prefix_caching);
        let info = EngineInfo {
            config: engine.config().clone(),
            model: engine.model_config().clone(),
            backend: engine.backend().info(),
        };
        let (total, free) = engine.kv_blocks();
        let shared = Arc::new(Shared {
            stats: Mutex::new(EngineStats {
                kv_blocks_total: total,
                kv_blocks_free: free,
                kv_usage: engine.kv_usage(),
                ..EngineStats::default()
            }),
            queued: AtomicUsize::new(0),
            outstanding: AtomicUsize::new(0),
            per_flow: Mutex::new(HashMap::new()),
            interrupt: engine.interrupt_handle(),
        });
        let (tx, rx) = mpsc::channel();
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("tandem-engine".into())
            .spawn(move || run(engine, rx, &thread_shared))
            .expect("spawning the engine thread");
        EngineService {
            tx,
            shared,
            limit: info.config.max_seqs + options.max_waiting,
            info,
            thread: Some(thread),
        }
    }

    /// What the engine runs.
    pub fn info(&self) -> &EngineInfo {
        &self.info
    }

    /// Queues a request. The engine checks it and answers through `reply` (a sequence id, or
    /// why it was refused: an empty or too long prompt, bad sampling parameters); the sequence's
    /// events then go to `sink`. Fails at once when the queue is full or the engine stopped.
    pub fn submit(&self, req: Request, sink: EventSink, reply: Reply) -> Result<(), SubmitError> {
        let flow = req.flow.as_ref().map(|f| f.id.clone()).unwrap_or_default();
        {
            let mut per_flow = self
                .shared
                .per_flow
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let pending = per_flow.entry(flow.clone()).or_insert(0);
            if *pending >= self.limit {
                return Err(SubmitError::QueueFull {
                    pending: *pending,
                    limit: self.limit,
                });
            }
            *pending += 1;
            // The flow's first request while others have work: the engine's step in progress
            // is abandoned so that it starts at once (the engine gives it a step of its own).
            if *pending == 1 && per_flow.len() > 1 {
                self.shared.interrupt.store(true, Ordering::Relaxed);
            }
        }
        self.shared.outstanding.fetch_add(1, Ordering::SeqCst);
        let mut guard = Outstanding {
            shared: Arc::clone(&self.shared),
            flow,
            counted: true,
        };
        let mut inner = sink;
        let sink: EventSink = Box::new(move |ev| {
            if matches!(ev, Event::Finished { .. } | Event::Failed(_)) {
                guard.release();
            }
            inner(ev)
        });
        self.shared.queued.fetch_add(1, Ordering::SeqCst);
        let cmd = Command::Add {
            req: Box::new(req),
            sink,
            reply,
        };
        self.tx.send(cmd).map_err(|_| {
            self.shared.queued.fetch_sub(1, Ordering::SeqCst);
            SubmitError::Stopped
        })
    }

    /// Cancels a sequence (it ends with a `Cancelled` finish and its blocks are freed before the
    /// next step). Unknown or finished ids are ignored.
    pub fn cancel(&self, id: SeqId) {
        let _ = self.tx.send(Command::Cancel(id));
    }

    /// Cancels every sequence in flight (they end with a `Cancelled` finish); the service keeps
    /// running.
    pub fn cancel_all(&self) {
        let _ = self.tx.send(Command::CancelAll);
    }

    /// The latest gauges and counters.
    pub fn stats(&self) -> EngineStats {
        let mut stats = self
            .shared
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        stats.queued = self.shared.queued.load(Ordering::SeqCst);
        stats
    }

    /// Whether the engine thread is still running.
    pub fn is_alive(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Cancels everything in flight and waits for the engine thread to end.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.tx.send(Command::Shutdown);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for EngineService {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The engine thread: take commands, step while there is work, publish stats.
fn run<B: Backend>(mut engine: Engine<B>, rx: Receiver<Command>, shared: &Shared) {
    loop {
        if !engine.has_work() {
            publish(&engine, shared, &StepReport::default(), false);
            // Idle: sleep until a command comes.
            match rx.recv() {
                Ok(cmd) => {
                    if !handle(&mut engine, cmd, shared) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        let mut stop = false;
        loop {
            match rx.try_recv() {
                Ok(cmd) => {
                    if !handle(&mut engine, cmd, shared) {
                        stop = true;
                        break;
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => {
                    stop = true;
                    break;
                }
            }
        }
        if stop {
            break;
        }
        if engine.has_work() {
            match pollster::block_on(engine.step()) {
                Ok(report) => publish(&engine, shared, &report, false),
                Err(e) => {
                    tracing::error!("engine step failed: {e}");
                    engine.fail_all(&format!("the engine failed: {e}"));
                    publish(&engine, shared, &StepReport::default(), true);
                }
            }
        }
    }
    engine.cancel_all();
    publish(&engine, shared, &StepReport::default(), false);
}

/// Applies one command; `false` means shut down.
fn handle<B: Backend>(engine: &mut Engine<B>, cmd: Command, shared: &Shared) -> bool {
    match cmd {
        Command::Add { req, sink, reply } => {
            let result = engine.add(*req, sink);
            let id = result.as_ref().ok().copied();
            shared.queued.fetch_sub(1, Ordering::SeqCst);
            if !reply(result)
                && let Some(id) = id
            {
                engine.cancel(id);
            }
            true
        }
        Command::Cancel(id) => {
            engine.cancel(id);
            true
        }
        Command::CancelAll => {
            engine.cancel_all();
            true
        }
        Command::Shutdown => false,
    }
}

fn publish<B: Backend>(engine: &Engine<B>, shared: &Shared, report: &StepReport, failed: bool) {
    let (total, free) = engine.kv_blocks();
    let mut s = shared.stats.lock().unwrap_or_else(PoisonError::into_inner);
    s.running = engine.running();
    s.waiting = engine.waiting();
    s.kv_usage = engine.kv_usage();
    s.kv_blocks_total = total;
    s.kv_blocks_free = free;
    if report.prefill_tokens > 0 || report.decoded > 0 {
        s.steps += 1;
    }
    s.prefill_tokens += report.prefill_tokens as u64;
    s.generated_tokens += report.decoded as u64;
    s.preemptions += report.preempted as u64;
    s.abandoned_steps += u64::from(report.abandoned);
    s.prefix_cache_queries += report.prefix_queries as u64;
    s.prefix_cache_hits += report.prefix_hits as u64;
    if failed {
        s.step_failures += 1;
    }
}
