//! The OpenAI wire format, in both directions: the API parses requests from clients and the
//! remote upstream serializes them again (with every field Tandem does not interpret kept as it
//! came); responses and chunks are built here and parsed back from remote upstreams.

pub mod embeddings;
pub mod request;
pub mod response;

pub use embeddings::*;
pub use request::*;
pub use response::*;
