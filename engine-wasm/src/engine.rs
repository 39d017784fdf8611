//! The engine JavaScript drives: load, start a request, step, cancel.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::{Arc, Mutex};

#[cfg(feature = "webgpu")]
use engine_core::backend::BackendError;
use engine_core::backend::cpu::CpuBackend;
#[cfg(feature = "webgpu")]
use engine_core::backend::webgpu::{WebGpuBackend, WebGpuOptions};
use engine_core::backend::{Backend, KvLayout};
use engine_core::engine::{Engine, EngineConfig, Event, FinishReason, SeqId};
use engine_core::gguf::{GgufFile, ModelBytes};
use engine_core::model::ModelConfig;
use serde::Deserialize;
use serde_json::{Value, json};
use wasm_bindgen::prelude::*;

use crate::buffer::ModelBuffer;
use crate::error::{EngineWasmError, Kind};
use crate::request;

/// KV blocks hold this many tokens.
const BLOCK_SIZE: usize = 16;
/// Default context when the caller gives none (capped by the model's).
const DEFAULT_CONTEXT: usize = 4096;
/// Tokens per forward pass (prompt chunks).
const MAX_BATCH_TOKENS: usize = 256;

/// Options of [`WasmEngine::load`], as JSON.
#[derive(Debug, Default, Deserialize)]
struct LoadOptions {
    /// `webgpu` or `cpu`.
    backend: String,
    /// Context size in tokens (0 = the default).
    #[serde(default)]
    context_size: usize,
    /// Bytes the model, its cache and scratch may take on the GPU (0 = no budget).
    #[serde(default)]
    #[cfg_attr(not(feature = "webgpu"), allow(dead_code))]
    memory_budget: f64,
}

/// An engine on one of the two browser backends.
enum AnyEngine {
    Cpu(Box<Engine<CpuBackend>>),
    #[cfg(feature = "webgpu")]
    Gpu(Box<Engine<WebGpuBackend>>),
}

macro_rules! each {
    ($e:expr, $name:ident => $body:expr) => {
        match $e {
            AnyEngine::Cpu($name) => $body,
            #[cfg(feature = "webgpu")]
            AnyEngine::Gpu($name) => $body,
        }
    };
}

struct Inner {
    engine: AnyEngine,
    events: Arc<Mutex<Vec<Event>>>,
    current: Option<SeqId>,
    info: Value,
}

/// A model loaded on WebGPU or the WASM-SIMD CPU backend, generating one request at a time and
/// keeping the conversation's KV cache between turns. Drive it with [`WasmEngine::start`] and
/// then [`WasmEngine::step`] until a step reports `done`.
#[wasm_bindgen]
pub struct WasmEngine {
    inner: Rc<RefCell<Inner>>,
    cancel: Rc<Cell<bool>>,
}

/// The engine's limits for `file`, and the KV cache geometry they give.
fn engine_config(
    file: &GgufFile,
    context_size: usize,
) -> Result<(EngineConfig, KvLayout), EngineWasmError> {
    let model = ModelConfig::from_metadata(file.metadata())
        .map_err(|e| EngineWasmError::new(Kind::Unsupported, e.to_string()))?;
    let context = match context_size {
        0 => DEFAULT_CONTEXT.min(model.context_length),
        n => n.min(model.context_length),
    }
    .max(1);
    let mut config = EngineConfig {
        context_size: context,
        max_seqs: 1,
        max_batch_tokens: MAX_BATCH_TOKENS,
        block_size: BLOCK_SIZE,
        kv_tokens: context,
        ..EngineConfig::default()
    };
    let layout = config.resolve(&model);
    Ok((config, layout))
}

#[wasm_bindgen]
impl WasmEngine {
    /// Builds the engine from a complete model file. `options` is JSON:
    /// `{"backend": "webgpu" | "cpu", "context_size": 4096, "memory_budget": 0}`.
    /// Fails with `no_adapter`, `out_of_memory`, `unsupported` or `invalid_request`.
    pub async fn load(buffer: ModelBuffer, options: String) -> Result<WasmEngine, JsValue> {
        let options: LoadOptions = serde_json::from_str(&options).map_err(|e| {
            EngineWasmError::new(Kind::InvalidRequest, format!("invalid load options: {e}"))
        })?;
        let bytes = ModelBytes::from_vec(buffer.into_bytes());
        let file = GgufFile::new(bytes).map_err(|e| {
            EngineWasmError::new(Kind::Unsupported, format!("not a usable GGUF file: {e}"))
        })?;
        // The KV layout checks a model against a GPU's limits.
        #[cfg_attr(not(feature = "webgpu"), allow(unused_variables))]
        let (config, layout) = engine_config(&file, options.context_size)?;
        let name = file
            .metadata()
            .get_str("general.name")
            .unwrap_or("")
            .to_owned();
        let engine = match options.backend.as_str() {
            "cpu" => {
                #[cfg(feature = "threads")]
                let backend = CpuBackend::with_pool(None, crate::threads::pool());
                #[cfg(not(feature = "threads"))]
                let backend = CpuBackend::new(engine_core::backend::cpu::CpuOptions {
                    threads: 1,
                    isa: None,
                });
                let backend = backend.map_err(EngineWasmError::from)?;
                AnyEngine::Cpu(Box::new(
                    Engine::new(backend, &file, config.clone()).map_err(EngineWasmError::from)?,
                ))
            }
            #[cfg(feature = "webgpu")]
            "webgpu" => {
                let budget = (options.memory_budget.is_finite() && options.memory_budget > 0.0)
                    .then_some(options.memory_budget as u64);
                let backend = WebGpuBackend::new(WebGpuOptions {
                    memory_budget: budget,
                    ..WebGpuOptions::default()
                })
                .await
                .map_err(EngineWasmError::from)?;
                // A model that does not fit the adapter's limits is a memory failure here.
                backend
                    .check_model(&file, &layout, config.max_batch_tokens)
                    .map_err(|e| match e {
                        BackendError::Unavailable(m) => EngineWasmError::new(Kind::OutOfMemory, m),
                        other => other.into(),
                    })?;
                AnyEngine::Gpu(Box::new(
                    Engine::new(backend, &file, config.clone()).map_err(EngineWasmError::from)?,
                ))
            }
            #[cfg(not(feature = "webgpu"))]
            "webgpu" => {
                return Err(EngineWasmError::new(
                    Kind::Unsupported,
                    "this build of the engine runs the CPU path only (load the default build for WebGPU)",
                )
                .into());
            }
            other => {
                return Err(EngineWasmError::new(
                    Kind::InvalidRequest,
                    format!("unknown backend {other:?} (expected webgpu or cpu)"),
                )
                .into());
            }
        };
        let info = each!(&engine, e => {
            let b = e.backend().info();
            json!({
                "backend": b.name,
                "device": b.device,
                "threads": b.threads,
                "model": name,
                "context_size": e.config().context_size,
                "vocab_size": e.model_config().vocab_size,
                "layers": e.model_config().n_layers,
            })
        });
        let mut engine = engine;
        each!(&mut engine, e => e.set_retain_prefix(true));
        Ok(WasmEngine {
            inner: Rc::new(RefCell::new(Inner {
                engine,
                events: Arc::new(Mutex::new(Vec::new())),
                current: None,
                info,
            })),
            cancel: Rc::new(Cell::new(false)),
        })
    }

    /// What the engine runs on, as JSON: backend, device, threads, model name, context size.
    pub fn info(&self) -> Result<String, JsValue> {
        let inner = self.inner.try_borrow().map_err(|_| busy())?;
        Ok(inner.info.to_string())
    }

    /// Starts a chat request (JSON: `messages`, `max_tokens`, `temperature`, `top_p`, `top_k`,
    /// `min_p`, `seed`, `stop`, penalties); returns the prompt's token count. `seed` seeds
    /// sampling when the request has none. Fails with `invalid_request`.
    pub fn start(&self, request_json: &str, seed: f64) -> Result<u32, JsValue> {
        let mut inner = self.inner.try_borrow_mut().map_err(|_| busy())?;
        if inner.current.is_some() {
            return Err(EngineWasmError::new(
                Kind::InvalidRequest,
                "a request is already running (the browser engine runs one at a time)",
            )
            .into());
        }
        self.cancel.set(false);
        let events = inner.events.clone();
        let inner = &mut *inner;
        let id = each!(&mut inner.engine, e => {
            let req = request::parse(
                request_json,
                e.tokenizer(),
                e.template(),
                e.config().context_size,
                seed as u64,
            )?;
            let prompt = req.prompt.len();
            let sink = Box::new(move |ev: Event| {
                events.lock().unwrap_or_else(|p| p.into_inner()).push(ev);
                true
            });
            (e.add(req, sink).map_err(EngineWasmError::from)?, prompt)
        });
        inner.current = Some(id.0);
        Ok(id.1 as u32)
    }

    /// Asks the running request to stop; it ends (reason `cancelled`) at the next step.
    pub fn cancel(&self) {
        self.cancel.set(true);
    }

    /// Runs one forward pass. Resolves to JSON `{"events": [...], "prefill_tokens": n,
    /// "done": bool}`; events are `{"type": "token", "id", "text"}`,
    /// `{"type": "finished", "reason", "text", "prompt_tokens", "completion_tokens"}` or
    /// `{"type": "failed", "message"}`. Rejects with `device_lost` or `out_of_memory` when the
    /// device fails (the engine is then unusable).
    // The engine stays borrowed for the whole step, on purpose: JavaScript is single-threaded
    // here, and a call made while a step is pending gets a clear `busy` error from `try_borrow`.
    #[allow(clippy::await_holding_refcell_ref)]
    pub fn step(&self) -> js_sys::Promise {
        let inner = self.inner.clone();
        let cancel = self.cancel.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let mut guard = inner.try_borrow_mut().map_err(|_| busy())?;
            let inner = &mut *guard;
            let Some(id) = inner.current else {
                return Ok(JsValue::from_str(
                    r#"{"events":[],"prefill_tokens":0,"done":true}"#,
                ));
            };
            if cancel.replace(false) {
                each!(&mut inner.engine, e => e.cancel(id));
            }
            let result = each!(&mut inner.engine, e => {
                if e.has_work() { Some(e.step().await) } else { None }
            });
            let prefill = match result {
                Some(Ok(report)) => report.prefill_tokens,
                Some(Err(err)) => {
                    inner.current = None;
                    each!(&mut inner.engine, e => e.fail_all(&err.to_string()));
                    inner
                        .events
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clear();
                    return Err(EngineWasmError::from(err).into());
                }
                None => 0,
            };
            let events: Vec<Event> =
                std::mem::take(&mut *inner.events.lock().unwrap_or_else(|p| p.into_inner()));
            let mut done = !each!(&inner.engine, e => e.has_work());
            let out: Vec<Value> = events
                .into_iter()
                .map(|ev| match ev {
                    Event::Token { token, text } => {
                        json!({"type": "token", "id": token.id, "text": text})
                    }
                    Event::Finished {
                        reason,
                        text,
                        prompt_tokens,
                        completion_tokens,
                    } => {
                        done = true;
                        json!({
                            "type": "finished",
                            "reason": match reason {
                                FinishReason::Stop => "stop",
                                FinishReason::Length => "length",
                                FinishReason::Cancelled => "cancelled",
                            },
                            "text": text,
                            "prompt_tokens": prompt_tokens,
                            "completion_tokens": completion_tokens,
                        })
                    }
                    Event::Failed(message) => {
                        done = true;
                        json!({"type": "failed", "message": message})
                    }
                    Event::PromptLogprobs(_) | Event::Embedding(_) => Value::Null,
                })
                .filter(|v| !v.is_null())
                .collect();
            if done {
                inner.current = None;
            }
            Ok(JsValue::from_str(
                &json!({
                    "events": out,
                    "prefill_tokens": prefill,
                    "done": done,
                })
                .to_string(),
            ))
        })
    }
}

fn busy() -> JsValue {
    EngineWasmError::new(
        Kind::Internal,
        "the engine is busy with a step (await each step before the next call)",
    )
    .into()
}

// Both backends must be usable behind the same engine type.
const _: fn() = || {
    fn is_backend<B: Backend>() {}
    is_backend::<CpuBackend>();
    #[cfg(feature = "webgpu")]
    is_backend::<WebGpuBackend>();
};
