//! The threaded build's CPU workers: a [`SpinPool`] whose threads are Web Workers instantiating
//! this module on the same shared memory. JavaScript starts them ([`start_threads`]), each worker
//! runs its thread ([`run_thread`]), and engines loaded afterwards compute on them and on the
//! engine's own worker.

use std::sync::{Arc, Mutex};

use engine_core::backend::cpu::spin_pool::SpinPool;
use engine_core::backend::cpu::threads::Pool;
use wasm_bindgen::prelude::*;

use crate::error::{EngineWasmError, Kind};

/// The pool [`start_threads`] built, shared by every engine loaded after it.
static POOL: Mutex<Option<Arc<SpinPool>>> = Mutex::new(None);

/// What one worker runs: its loop in the pool, boxed twice so one address carries it to the
/// worker.
type Thread = Box<dyn FnOnce() + Send>;

/// Starts the CPU workers for `threads` threads in all (the engine's own worker is one of
/// them). For each, `spawn(module, memory, thread)` must start a Web Worker that instantiates
/// `module` on `memory` and calls [`run_thread`]`(thread)`; wait until they run before loading
/// a model. Fails with `unsupported` when the workers already run or `spawn` throws.
#[wasm_bindgen]
pub fn start_threads(threads: usize, spawn: &js_sys::Function) -> Result<(), JsValue> {
    let mut slot = POOL.lock().unwrap_or_else(|e| e.into_inner());
    if slot.is_some() {
        return Err(EngineWasmError::new(Kind::Unsupported, "the CPU threads already run").into());
    }
    let pool = SpinPool::new(threads.max(1) - 1, |work| {
        let raw = Box::into_raw(Box::new(work));
        let handed = spawn.call3(
            &JsValue::NULL,
            &wasm_bindgen::module(),
            &wasm_bindgen::memory(),
            &JsValue::from(raw as usize as u32),
        );
        handed.map(|_| ()).map_err(|e| {
            // SAFETY: `raw` came from `Box::into_raw` above and no worker received it.
            drop(unsafe { Box::from_raw(raw) });
            std::io::Error::other(format!("starting a CPU worker: {e:?}"))
        })
    })
    .map_err(|e| EngineWasmError::new(Kind::Unsupported, e.to_string()))?;
    *slot = Some(Arc::new(pool));
    Ok(())
}

/// Runs the CPU worker thread `thread` (a handle [`start_threads`] passed to `spawn`) until its
/// pool ends. Called once per handle, in the worker started for it.
#[wasm_bindgen]
pub fn run_thread(thread: u32) {
    // SAFETY: `thread` is the address `start_threads` leaked for exactly one worker.
    let thread = unsafe { Box::from_raw(thread as usize as *mut Thread) };
    thread();
}

/// The CPU pool for a new engine: the workers' and the caller's when they run, else the
/// calling thread alone.
pub(crate) fn pool() -> Pool {
    match POOL.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        Some(pool) => Pool::from_spin(Arc::clone(pool)),
        None => Pool::new(1),
    }
}
