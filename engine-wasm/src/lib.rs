//! Tandem's engine in the browser: [`ModelBuffer`] takes a GGUF file in pieces (checking its
//! SHA-256 as they arrive), and [`WasmEngine`] runs it on WebGPU or on the WASM-SIMD CPU backend,
//! one forward pass per [`WasmEngine::step`], so that the Web Worker driving it stays responsive
//! between steps (an abort takes effect within one step).
//!
//! Errors reach JavaScript as `Error`s whose `name` says what went wrong (see [`error::Kind`]).
//! Natively the crate is empty: build it with `cargo xtask build-wasm`.
#![cfg(target_arch = "wasm32")]

mod buffer;
mod engine;
mod error;
mod request;
#[cfg(feature = "threads")]
mod threads;

pub use buffer::ModelBuffer;
pub use engine::WasmEngine;
pub use error::{EngineWasmError, Kind};
#[cfg(feature = "threads")]
pub use threads::{run_thread, start_threads};
