//! A scripted OpenAI-compatible upstream on 127.0.0.1, and a gateway over such upstreams built
//! in-process (its HTTP app driven with `tower::ServiceExt::oneshot`).
#![allow(dead_code)]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use control_plane::gateway::breaker::BreakerConfig;
use control_plane::gateway::cost::CostModel;
use control_plane::gateway::remote::{RemoteConfig, RemoteUpstream};
use control_plane::gateway::{
    Gateway, Policy, RetryConfig, RoutingConfig, Timeouts, UpstreamHandle, UpstreamSettings,
};
use control_plane::metrics::MetricsNames;
use control_plane::state::{AppState, Loaded};
use serde_json::{Value, json};
use tower::ServiceExt;

/// What the fake does with the next request.
#[derive(Clone, Debug)]
pub enum Behavior {
    /// Streams these text pieces, then finishes with usage.
    Answer(Vec<&'static str>),
    /// Answers this status with an OpenAI error body.
    Status(u16),
    /// Accepts, then closes the stream before any token.
    CloseBeforeFirst,
    /// Streams these pieces, then breaks the connection.
    BreakAfter(Vec<&'static str>),
    /// Accepts and never sends anything.
    Hang,
    /// Streams tool-call pieces.
    ToolCalls,
}

/// A fake upstream's script and what it saw.
pub struct Fake {
    /// Behaviors for the next requests (then `default`).
    pub script: Mutex<VecDeque<Behavior>>,
    /// The behavior once the script is used up.
    pub default: Mutex<Behavior>,
    /// Generation requests received.
    pub hits: AtomicUsize,
    /// The last request body.
    pub last_body: Mutex<Value>,
    /// Headers of the last request.
    pub last_headers: Mutex<Vec<(String, String)>>,
    /// Its model names.
    pub models: Vec<String>,
}

/// A fake upstream running on 127.0.0.1.
pub struct FakeServer {
    pub fake: Arc<Fake>,
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FakeServer {
    /// Starts a fake serving `models`, answering `default` unless scripted.
    pub async fn start(models: &[&str], default: Behavior) -> FakeServer {
        let fake = Arc::new(Fake {
            script: Mutex::new(VecDeque::new()),
            default: Mutex::new(default),
            hits: AtomicUsize::new(0),
            last_body: Mutex::new(Value::Null),
            last_headers: Mutex::new(Vec::new()),
            models: models.iter().map(|s| s.to_string()).collect(),
        });
        let app = Router::new()
            .route("/v1/models", get(list))
            .route("/v1/chat/completions", post(generate))
            .route("/v1/completions", post(generate))
            .route("/v1/embeddings", post(generate))
            .with_state(Arc::clone(&fake));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeServer {
            fake,
            url: format!("http://{addr}"),
            task,
        }
    }

    /// Scripts the next behaviors.
    pub fn then(&self, b: Behavior) -> &Self {
        self.fake.script.lock().unwrap().push_back(b);
        self
    }

    /// Sets the behavior after the script.
    pub fn set_default(&self, b: Behavior) {
        *self.fake.default.lock().unwrap() = b;
    }

    /// Generation requests received.
    pub fn hits(&self) -> usize {
        self.fake.hits.load(Ordering::SeqCst)
    }
}

async fn list(State(f): State<Arc<Fake>>) -> Response {
    let data: Vec<Value> = f
        .models
        .iter()
        .map(|m| json!({"id": m, "object": "model", "created": 1, "owned_by": "fake", "max_model_len": 4096}))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

fn chunk(model: &str, delta: Value, finish: Option<&str>) -> String {
    let c = json!({"id": "x", "object": "chat.completion.chunk", "created": 1, "model": model,
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
    format!("data: {c}\n\n")
}

async fn generate(State(f): State<Arc<Fake>>, req: Request<Body>) -> Response {
    f.hits.fetch_add(1, Ordering::SeqCst);
    *f.last_headers.lock().unwrap() = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let bytes = axum::body::to_bytes(req.into_body(), 1 << 20)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    *f.last_body.lock().unwrap() = body.clone();
    let model = body["model"].as_str().unwrap_or("").to_owned();
    let behavior = f
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| f.default.lock().unwrap().clone());
    let sse = |parts: Vec<String>, end: Option<Result<(), ()>>| {
        let stream = futures_util::stream::iter(parts.into_iter().map(Ok::<_, std::io::Error>));
        let tail: futures_util::stream::BoxStream<'static, Result<String, std::io::Error>> =
            match end {
                Some(Ok(())) => Box::pin(futures_util::stream::empty()),
                Some(Err(())) => Box::pin(futures_util::stream::once(async {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    Err(std::io::Error::other("broken"))
                })),
                None => Box::pin(futures_util::stream::pending()),
            };
        use futures_util::StreamExt;
        Response::builder()
            .header("content-type", "text/event-stream")
            .body(Body::from_stream(stream.chain(tail)))
            .unwrap()
    };
    let streamed = body["stream"] == true;
    let whole = |message: Value, finish: &str, completion_tokens: usize| {
        axum::Json(json!({"id": "x", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}],
            "usage": {"prompt_tokens": 7, "completion_tokens": completion_tokens, "total_tokens": 7 + completion_tokens}}))
        .into_response()
    };
    match behavior {
        // An embeddings request (it has an input): input i embeds as (i + 1, 0.5), 5 tokens.
        Behavior::Answer(_) | Behavior::ToolCalls if body.get("input").is_some() => {
            let n = body["input"].as_array().map_or(1, |a| {
                if a.iter().all(Value::is_number) { 1 } else { a.len() }
            });
            let data: Vec<Value> = (0..n)
                .rev()
                .map(|i| json!({"object": "embedding", "index": i, "embedding": [i as f32 + 1.0, 0.5]}))
                .collect();
            axum::Json(json!({"object": "list", "data": data, "model": model,
                "usage": {"prompt_tokens": 5, "total_tokens": 5}}))
            .into_response()
        }
        // A legacy completion (it has a prompt): `text_completion`.
        Behavior::Answer(pieces) if !streamed && body.get("prompt").is_some() => axum::Json(json!({
            "id": "x", "object": "text_completion", "created": 1, "model": model,
            "choices": [{"index": 0, "text": pieces.concat(), "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 7, "completion_tokens": pieces.len(), "total_tokens": 7 + pieces.len()}}))
        .into_response(),
        Behavior::Answer(pieces) if !streamed => whole(
            json!({"role": "assistant", "content": pieces.concat()}),
            "stop",
            pieces.len(),
        ),
        Behavior::ToolCalls if !streamed => whole(
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]}),
            "tool_calls",
            5,
        ),
        Behavior::Answer(pieces) => {
            let mut parts = vec![chunk(&model, json!({"role": "assistant", "content": ""}), None)];
            for p in &pieces {
                parts.push(chunk(&model, json!({"content": p}), None));
            }
            parts.push(chunk(&model, json!({}), Some("stop")));
            parts.push(format!(
                "data: {}\n\n",
                json!({"id": "x", "object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": pieces.len(), "total_tokens": 7 + pieces.len()}})
            ));
            parts.push("data: [DONE]\n\n".into());
            sse(parts, Some(Ok(())))
        }
        Behavior::ToolCalls => {
            let parts = vec![
                chunk(&model, json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}), None),
                chunk(&model, json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}), None),
                chunk(&model, json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Oslo\"}"}}]}), None),
                chunk(&model, json!({}), Some("tool_calls")),
                "data: [DONE]\n\n".into(),
            ];
            sse(parts, Some(Ok(())))
        }
        Behavior::Status(code) => (
            StatusCode::from_u16(code).unwrap(),
            [("content-type", "application/json")],
            json!({"error": {"message": format!("fake says {code}"), "type": "fake_error", "param": "temperature", "code": "fake_code"}}).to_string(),
        )
            .into_response(),
        Behavior::CloseBeforeFirst => sse(Vec::new(), Some(Err(()))),
        Behavior::BreakAfter(pieces) => {
            let mut parts = vec![chunk(&model, json!({"role": "assistant", "content": ""}), None)];
            for p in pieces {
                parts.push(chunk(&model, json!({"content": p}), None));
            }
            sse(parts, Some(Err(())))
        }
        Behavior::Hang => sse(Vec::new(), None),
    }
}

/// Settings for a test upstream: short timeouts and breaker.
pub fn test_settings(cost: CostModel) -> UpstreamSettings {
    UpstreamSettings {
        max_concurrency: None,
        timeouts: Timeouts {
            connect: Duration::from_secs(2),
            first_token: Duration::from_millis(800),
            idle: Duration::from_millis(800),
            total: Duration::from_secs(10),
        },
        cost,
        breaker: BreakerConfig {
            failures_to_open: 3,
            cooldown: Duration::from_millis(300),
            successes_to_close: 1,
        },
        probe_interval: Duration::from_secs(3600),
    }
}

/// A remote upstream handle for a fake.
pub async fn handle(
    id: &str,
    fake: &FakeServer,
    settings: UpstreamSettings,
) -> Arc<UpstreamHandle> {
    let up = RemoteUpstream::new(RemoteConfig {
        base_url: control_plane::gateway::remote::base_url(&fake.url),
        api_key: Some("secret".into()),
        headers: vec![],
        models: vec![],
        connect_timeout: settings.timeouts.connect,
        probe_timeout: Duration::from_secs(2),
    })
    .unwrap();
    let h = Arc::new(UpstreamHandle::new(id.into(), Box::new(up), settings));
    assert!(
        control_plane::gateway::probe::probe_once(&h).await,
        "discovery of {id}"
    );
    h
}

/// The gateway's HTTP app over `handles`.
pub fn app(handles: Vec<Arc<UpstreamHandle>>, policy: Policy) -> (Router, Arc<AppState>) {
    let state = Arc::new(AppState::new(1 << 20, MetricsNames::Tandem));
    let gateway = Gateway::new(
        handles,
        RoutingConfig {
            policy,
            model_policies: Default::default(),
            retry: RetryConfig {
                attempts: 2,
                backoff: Duration::from_millis(10),
            },
        },
        Arc::clone(&state.metrics),
    );
    let _ = state.loaded.set(Loaded {
        gateway: Arc::new(gateway),
        locals: Vec::new(),
    });
    (
        control_plane::server::router(Arc::clone(&state), &[], None),
        state,
    )
}

/// Sends a request to the app; returns status and body text.
pub async fn call(app: &Router, method: &str, path: &str, body: Option<Value>) -> (u16, String) {
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .header("x-llm-d-inference-objective", "interactive")
        .body(body.map_or_else(Body::empty, |b| Body::from(b.to_string())))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24)
        .await
        .unwrap();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}
