//! The HTTP API: OpenAI-compatible endpoints, health and metrics.

pub mod chat;
pub mod completions;
pub mod errors;
pub mod generate;
pub mod health;
pub mod json;
pub mod models;
