//! `tandem echo-upstream`: a minimal OpenAI-compatible server that answers every request at once
//! with the same short reply (streamed or not, with usage). It stands in for an infinitely fast
//! engine when measuring what the gateway itself adds (`cargo xtask bench gateway`).

use anyhow::{Context, Result};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

/// Arguments of `tandem echo-upstream`.
#[derive(clap::Args, Debug)]
pub struct EchoArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on (0: any; the chosen one is printed).
    #[arg(long, default_value_t = 0)]
    pub port: u16,
}

const MODELS: &str = r#"{"object":"list","data":[{"id":"echo","object":"model","created":0,"owned_by":"echo","max_model_len":4096}]}"#;
const WHOLE: &str = r#"{"id":"chatcmpl-echo","object":"chat.completion","created":0,"model":"echo","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":2,"total_tokens":7}}"#;
const STREAM: &str = concat!(
    "data: {\"id\":\"chatcmpl-echo\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"echo\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"chatcmpl-echo\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"echo\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hello!\"},\"finish_reason\":null}]}\n\n",
    "data: {\"id\":\"chatcmpl-echo\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"echo\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
    "data: {\"id\":\"chatcmpl-echo\",\"object\":\"chat.completion.chunk\",\"created\":0,\"model\":\"echo\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":2,\"total_tokens\":7}}\n\n",
    "data: [DONE]\n\n"
);

/// Whether the body asks for a stream (a byte search: this server must cost next to nothing).
fn wants_stream(body: &[u8]) -> bool {
    let has = |pattern: &[u8]| body.windows(pattern.len()).any(|w| w == pattern);
    has(b"\"stream\":true") || has(b"\"stream\": true")
}

async fn chat(body: Bytes) -> Response {
    if wants_stream(&body) {
        (
            [(header::CONTENT_TYPE, "text/event-stream")],
            Body::from(STREAM),
        )
            .into_response()
    } else {
        ([(header::CONTENT_TYPE, "application/json")], WHOLE).into_response()
    }
}

/// Runs the command.
pub async fn run(args: EchoArgs) -> Result<()> {
    let app = Router::new()
        .route(
            "/v1/models",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], MODELS) }),
        )
        .route("/v1/chat/completions", post(chat))
        .route("/health", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .context("binding")?;
    eprintln!(
        "echo-upstream: listening on http://{}",
        listener.local_addr()?
    );
    axum::serve(listener, app).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_flags_are_found() {
        assert!(wants_stream(br#"{"a":1,"stream":true}"#));
        assert!(wants_stream(br#"{"stream": true}"#));
        assert!(!wants_stream(br#"{"stream":false}"#));
    }
}
