//! Server-sent events framing: `data: {json}` events ending with `data: [DONE]`, as OpenAI
//! streams do, with keep-alive comments while nothing happens. The body owns the upstream's
//! stream, so a client that disconnects drops it, which cancels the work.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};

/// The last event of every stream.
pub const DONE: &str = "[DONE]";

/// An SSE response whose events carry `payloads` (each a JSON text, or [`DONE`]).
pub fn response(payloads: impl Stream<Item = String> + Send + 'static) -> Response {
    let events = payloads.map(|data| Ok::<_, Infallible>(SseEvent::default().data(data)));
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
