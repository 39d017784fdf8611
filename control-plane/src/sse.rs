//! Server-sent events: turns a [`Generation`]'s events into `data: {json}` lines ending with
//! `data: [DONE]`, as OpenAI streams do. The stream owns the generation, so a client that
//! disconnects drops it, which cancels its sequences.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use engine_core::engine::Event;
use futures_util::StreamExt;

use crate::api::generate::Generation;

/// Turns engine events into SSE payloads: called with each event, then once with `None` at the
/// end; pushes zero or more JSON strings.
pub trait ChunkWriter: Send + 'static {
    /// Handles one event (`None`: every sequence has ended).
    fn write(&mut self, event: Option<(usize, Event)>, out: &mut VecDeque<String>);
}

struct State<W> {
    generation: Generation,
    writer: W,
    pending: VecDeque<String>,
    done: bool,
}

/// Streams `generation` through `writer` as an SSE response; `first` is sent before any event.
pub fn stream<W: ChunkWriter>(generation: Generation, writer: W, first: Vec<String>) -> Response {
    let state = State {
        generation,
        writer,
        pending: first.into(),
        done: false,
    };
    let events = futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(data) = st.pending.pop_front() {
                return Some((data, st));
            }
            if st.done {
                return None;
            }
            let ev = st.generation.next().await;
            let end = ev.is_none();
            st.writer.write(ev, &mut st.pending);
            if end {
                st.pending.push_back("[DONE]".to_owned());
                st.done = true;
            }
        }
    })
    .map(|data| Ok::<_, Infallible>(SseEvent::default().data(data)));
    Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}
