//! Tandem's portable inference engine: bytes in, tokens out.
//!
//! Reads GGUF models, tokenizes and renders chat templates, runs the Llama-family graph on a
//! [`backend::Backend`] (the CPU backend is built in), samples, and manages a paged KV cache for
//! continuous batching. Nothing here does network I/O or depends on an async runtime, so the
//! same crate compiles for servers and for `wasm32-unknown-unknown`.

pub mod backend;
pub mod chat;
pub mod constraint;
pub mod engine;
pub mod gguf;
pub mod infill;
pub mod kv_cache;
pub mod math;
pub mod model;
pub mod quant;
pub mod sampler;
pub mod tokenizer;
