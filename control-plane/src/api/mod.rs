//! The HTTP API: OpenAI-compatible endpoints, `/v1/route`, the browser model files, health and
//! metrics.

pub mod admin;
pub mod auth;
pub mod chat;
pub mod completions;
pub mod embeddings;
pub mod files;
pub mod generation;
pub mod health;
pub mod infill;
pub mod json;
pub mod models;
pub mod openapi;
pub mod route;
pub mod usage;
