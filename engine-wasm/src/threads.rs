//! The threaded build's CPU workers: a rayon pool whose threads are Web Workers instantiating
//! this module on the same shared memory. JavaScript starts them ([`start_threads`]), each worker
//! runs its thread ([`run_thread`]), and engines loaded afterwards compute on them.

use std::sync::{Arc, Mutex};

use engine_core::backend::cpu::threads::Pool;
use wasm_bindgen::prelude::*;

use crate::error::{EngineWasmError, Kind};

/// The pool [`start_threads`] built, shared by every engine loaded after it.
static POOL: Mutex<Option<Arc<rayon::ThreadPool>>> = Mutex::new(None);

/// Starts `threads` CPU workers. For each, `spawn(module, memory, thread)` must start a Web
/// Worker that instantiates `module` on `memory` and calls [`run_thread`]`(thread)`; the pool
/// computes only once they run, so wait for them before loading a model. Fails with
/// `unsupported` when a pool is already running or `spawn` throws.
#[wasm_bindgen]
pub fn start_threads(threads: usize, spawn: &js_sys::Function) -> Result<(), JsValue> {
    let mut slot = POOL.lock().unwrap_or_else(|e| e.into_inner());
    if slot.is_some() {
        return Err(EngineWasmError::new(Kind::Unsupported, "the CPU threads already run").into());
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads.max(1))
        .spawn_handler(|thread| {
            let raw = Box::into_raw(Box::new(thread));
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
        .build()
        .map_err(|e| EngineWasmError::new(Kind::Unsupported, e.to_string()))?;
    *slot = Some(Arc::new(pool));
    Ok(())
}

/// Runs the CPU worker thread `thread` (a handle [`start_threads`] passed to `spawn`) until its
/// pool ends. Called once per handle, in the worker started for it.
#[wasm_bindgen]
pub fn run_thread(thread: u32) {
    // SAFETY: `thread` is the address `start_threads` leaked for exactly one worker.
    let thread = unsafe { Box::from_raw(thread as usize as *mut rayon::ThreadBuilder) };
    thread.run();
}

/// The CPU pool for a new engine: the workers' when they run, else the calling thread alone.
pub(crate) fn pool() -> Pool {
    match POOL.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
        Some(pool) => Pool::from_rayon(pool.clone()),
        None => Pool::new(1),
    }
}
