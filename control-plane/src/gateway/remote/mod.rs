//! A remote OpenAI-compatible server as an upstream (vLLM, SGLang, llama.cpp's `llama-server`,
//! Ollama, another Tandem, an llm-d inference gateway). Requests are forwarded with every field
//! kept and the model renamed to the upstream's name; streamed ones always with usage, so the
//! gateway sees the first token and the exact token counts. Its models are discovered from its
//! `/v1/models` unless configured.

pub mod sse;

use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use reqwest::StatusCode;
use serde::Deserialize;

use crate::errors::ApiError;
use crate::gateway::upstream::{
    Delta, EmbedRequest, Embeddings, FailureKind, Features, GenerateRequest, Generation, Logprobs,
    ModelInfo, Output, OutputStream, Upstream, UpstreamError,
};
use crate::openai::{
    ApiRequest, ChatLogprobs, CompletionLogprobs, EmbeddingResponse, Endpoint, StreamChunk, Usage,
};
use sse::SseParser;

/// How to reach a remote upstream.
#[derive(Clone, Debug)]
pub struct RemoteConfig {
    /// Base URL, ending in `/v1`.
    pub base_url: String,
    /// Bearer token, if it needs one.
    pub api_key: Option<String>,
    /// Headers sent with every request.
    pub headers: Vec<(String, String)>,
    /// Its models; empty: discovered from `/v1/models`.
    pub models: Vec<ModelInfo>,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Timeout of a health probe.
    pub probe_timeout: Duration,
}

/// Normalizes a base URL: no trailing slash, `/v1` appended when missing.
pub fn base_url(url: &str) -> String {
    let url = url.trim_end_matches('/');
    if url.ends_with("/v1") {
        url.to_owned()
    } else {
        format!("{url}/v1")
    }
}

/// Why a remote upstream could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The URL is not valid.
    #[error("invalid URL {url:?}: {message}")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        message: String,
    },
    /// The HTTP client could not be built.
    #[error(transparent)]
    Client(#[from] reqwest::Error),
}

/// The endpoints of a remote server, parsed once.
struct Endpoints {
    chat: reqwest::Url,
    completions: reqwest::Url,
    embeddings: reqwest::Url,
    models: reqwest::Url,
}

/// A remote OpenAI-compatible server.
pub struct RemoteUpstream {
    config: RemoteConfig,
    client: reqwest::Client,
    endpoints: Endpoints,
    models: RwLock<Arc<Vec<ModelInfo>>>,
}

impl RemoteUpstream {
    /// A client for `config` (nothing is sent until the first probe or request).
    pub fn new(config: RemoteConfig) -> Result<RemoteUpstream, SetupError> {
        let url = |path: &str| {
            let full = format!("{}{path}", config.base_url);
            reqwest::Url::parse(&full).map_err(|e| SetupError::Url {
                url: full,
                message: e.to_string(),
            })
        };
        let endpoints = Endpoints {
            chat: url("/chat/completions")?,
            completions: url("/completions")?,
            embeddings: url("/embeddings")?,
            models: url("/models")?,
        };
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .build()?;
        Ok(RemoteUpstream {
            endpoints,
            models: RwLock::new(Arc::new(config.models.clone())),
            config,
            client,
        })
    }

    fn request(&self, method: reqwest::Method, url: &reqwest::Url) -> reqwest::RequestBuilder {
        let mut b = self.client.request(method, url.clone());
        if let Some(key) = &self.config.api_key {
            b = b.bearer_auth(key);
        }
        for (k, v) in &self.config.headers {
            b = b.header(k, v);
        }
        b
    }

    async fn discover(&self) -> Result<(), UpstreamError> {
        let resp = self
            .request(reqwest::Method::GET, &self.endpoints.models)
            .timeout(self.config.probe_timeout)
            .send()
            .await
            .map_err(send_error)?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(send_error)?;
        if !status.is_success() {
            return Err(status_error(status, None, &bytes));
        }
        if !self.config.models.is_empty() {
            return Ok(());
        }
        let list: WireModelList = serde_json::from_slice(&bytes).map_err(|e| {
            UpstreamError::failed(
                FailureKind::Protocol,
                format!("its /v1/models is not a model list: {e}"),
            )
        })?;
        let now = crate::util::unix_now();
        let origin = self
            .config
            .base_url
            .strip_suffix("/v1")
            .unwrap_or(&self.config.base_url)
            .to_owned();
        let models = list
            .data
            .into_iter()
            .map(|m| ModelInfo {
                context_length: m
                    .max_model_len
                    .or_else(|| m.meta.as_ref().and_then(|meta| meta.n_ctx_train)),
                name: m.id.clone(),
                upstream_name: m.id,
                aliases: Vec::new(),
                features: Features::ALL,
                max_choices: None,
                browser_variants: m
                    .browser_variants
                    .into_iter()
                    .map(|mut v| {
                        if v.url.starts_with('/') {
                            v.url = format!("{origin}{}", v.url);
                        }
                        v
                    })
                    .collect(),
                created: m.created.unwrap_or(now),
            })
            .collect();
        *self
            .models
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(models);
        Ok(())
    }
}

#[derive(Deserialize)]
struct WireModelList {
    #[serde(default)]
    data: Vec<WireModel>,
}

#[derive(Deserialize)]
struct WireModel {
    id: String,
    #[serde(default)]
    created: Option<u64>,
    #[serde(default)]
    max_model_len: Option<usize>,
    #[serde(default)]
    meta: Option<WireMeta>,
    /// A Tandem upstream's browser variants.
    #[serde(default)]
    browser_variants: Vec<crate::openai::VariantCard>,
}

#[derive(Deserialize)]
struct WireMeta {
    #[serde(default)]
    n_ctx_train: Option<usize>,
}

/// A transport error as an upstream failure.
fn send_error(e: reqwest::Error) -> UpstreamError {
    let kind = if e.is_timeout() {
        FailureKind::Timeout
    } else if e.is_connect() {
        FailureKind::Connect
    } else {
        FailureKind::Protocol
    };
    UpstreamError::failed(kind, format!("the upstream did not answer: {e}"))
}

/// A non-2xx answer as an upstream error: 429 is backpressure, 503 and other 5xx count against
/// the upstream, other 4xx are the request's fault and go back to the client as they came.
fn status_error(status: StatusCode, retry_after: Option<u64>, body: &[u8]) -> UpstreamError {
    let mut api = ApiError::from_upstream(status.as_u16(), body);
    if status == StatusCode::TOO_MANY_REQUESTS {
        api.retry_after = retry_after;
    }
    api.into()
}

impl Upstream for RemoteUpstream {
    fn kind(&self) -> &'static str {
        "openai"
    }

    fn models(&self) -> Arc<Vec<ModelInfo>> {
        Arc::clone(
            &self
                .models
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    fn probe(&self) -> BoxFuture<'_, Result<(), UpstreamError>> {
        self.discover().boxed()
    }

    fn generate(&self, req: GenerateRequest) -> BoxFuture<'_, Result<Generation, UpstreamError>> {
        async move {
            let mut body = req.body;
            body.set_model(&req.upstream_model);
            // A streamed request is streamed with usage, so the gateway sees its first token and
            // the exact counts; a whole one is forwarded whole (less work on both sides).
            if body.sampling().stream() {
                body.sampling_mut().force_stream_with_usage();
            }
            let format = body.endpoint();
            let url = match &body {
                ApiRequest::Chat(_) => &self.endpoints.chat,
                ApiRequest::Completion(_) => &self.endpoints.completions,
            };
            let mut b = self
                .request(reqwest::Method::POST, url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(reqwest::header::ACCEPT, "text/event-stream");
            for (k, v) in &req.headers {
                b = b.header(k, v);
            }
            let resp = b.body(body.to_json()).send().await.map_err(send_error)?;
            let status = resp.status();
            if !status.is_success() {
                let retry_after = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse().ok());
                let bytes = resp.bytes().await.unwrap_or_default();
                return Err(status_error(status, retry_after, &bytes));
            }
            let json = resp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with("application/json"));
            if json {
                // A server that answers whole although asked to stream.
                let bytes = resp.bytes().await.map_err(send_error)?;
                let outputs = whole_response(&bytes, format)?;
                return Ok(Generation {
                    stream: futures_util::stream::iter(outputs.into_iter().map(Ok)).boxed(),
                    fingerprint: None,
                });
            }
            Ok(Generation {
                stream: output_stream(resp, format),
                fingerprint: None,
            })
        }
        .boxed()
    }

    fn embed(&self, req: EmbedRequest) -> BoxFuture<'_, Result<Embeddings, UpstreamError>> {
        async move {
            let mut body = req.body;
            body.model = Some(req.upstream_model);
            // The gateway writes the client's format itself.
            body.encoding_format = Some("float".into());
            let json = serde_json::to_vec(&body).map_err(|e| {
                UpstreamError::failed(FailureKind::Protocol, format!("encoding the request: {e}"))
            })?;
            let mut b = self
                .request(reqwest::Method::POST, &self.endpoints.embeddings)
                .header(reqwest::header::CONTENT_TYPE, "application/json");
            for (k, v) in &req.headers {
                b = b.header(k, v);
            }
            let resp = b.body(json).send().await.map_err(send_error)?;
            let status = resp.status();
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok());
            let bytes = resp.bytes().await.map_err(send_error)?;
            if !status.is_success() {
                return Err(status_error(status, retry_after, &bytes));
            }
            embeddings_response(&bytes)
        }
        .boxed()
    }
}

/// A remote server's embeddings answer: its vectors in input order.
fn embeddings_response(bytes: &[u8]) -> Result<Embeddings, UpstreamError> {
    let bad = |why: String| {
        UpstreamError::failed(
            FailureKind::Protocol,
            format!("the upstream's embeddings answer is not valid: {why}"),
        )
    };
    let r: EmbeddingResponse = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    let n = r.data.len();
    let mut vectors: Vec<Option<Vec<f32>>> = vec![None; n];
    for d in r.data {
        let slot = vectors
            .get_mut(d.index)
            .ok_or_else(|| bad(format!("index {} of {n} vectors", d.index)))?;
        *slot = Some(
            d.embedding
                .decode()
                .ok_or_else(|| bad("a base64 vector that is not whole floats".into()))?,
        );
    }
    let vectors = vectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| v.ok_or_else(|| bad(format!("no vector for input {i}"))))
        .collect::<Result<_, _>>()?;
    Ok(Embeddings {
        vectors,
        prompt_tokens: r.usage.prompt_tokens,
    })
}

/// Most choices an upstream's answer may have (a larger index is a protocol error, not an
/// allocation).
const MAX_CHOICES: usize = 1024;

/// What the parser has seen of a stream.
#[derive(Default)]
struct Progress {
    /// `[DONE]` arrived.
    done: bool,
    /// The usage chunk, if one came.
    usage: Option<Usage>,
    /// Content deltas seen (the token count when the upstream sends no usage).
    content_deltas: usize,
    /// Choices that started, and whether each finished.
    finished: Vec<bool>,
}

impl Progress {
    fn all_finished(&self) -> bool {
        !self.finished.is_empty() && self.finished.iter().all(|&f| f)
    }
}

/// Converts one SSE payload; `Err` for an error event or bad JSON.
fn convert(
    data: &[u8],
    format: Endpoint,
    progress: &mut Progress,
    out: &mut std::collections::VecDeque<Output>,
) -> Result<(), UpstreamError> {
    if data == b"[DONE]" {
        progress.done = true;
        return Ok(());
    }
    let chunk: StreamChunk = serde_json::from_slice(data).map_err(|e| {
        UpstreamError::failed(
            FailureKind::Protocol,
            format!("the upstream sent a chunk that is not a chunk: {e}"),
        )
    })?;
    if let Some(err) = chunk.error {
        let message = err
            .get("message")
            .and_then(|m| m.as_str())
            .unwrap_or("the upstream failed mid-stream")
            .to_owned();
        return Err(UpstreamError::failed(FailureKind::Status, message));
    }
    if let Some(u) = chunk.usage {
        progress.usage = Some(u);
    }
    for c in chunk.choices {
        if c.index >= MAX_CHOICES {
            return Err(UpstreamError::failed(
                FailureKind::Protocol,
                format!("the upstream sent choice index {}", c.index),
            ));
        }
        if progress.finished.len() <= c.index {
            progress.finished.resize(c.index + 1, false);
        }
        let (text, mut extra) = match (format, c.delta) {
            (Endpoint::Chat, Some(d)) => (d.content.unwrap_or_default(), d.extra),
            _ => (c.text.unwrap_or_default(), Default::default()),
        };
        extra.remove("role");
        let logprobs = match c.logprobs {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(match format {
                Endpoint::Chat => {
                    Logprobs::Chat(serde_json::from_value::<ChatLogprobs>(v).map_err(|e| {
                        UpstreamError::failed(
                            FailureKind::Protocol,
                            format!("the upstream sent log-probabilities of the wrong shape: {e}"),
                        )
                    })?)
                }
                Endpoint::Completion => Logprobs::Completion(
                    serde_json::from_value::<CompletionLogprobs>(v).map_err(|e| {
                        UpstreamError::failed(
                            FailureKind::Protocol,
                            format!("the upstream sent log-probabilities of the wrong shape: {e}"),
                        )
                    })?,
                ),
            }),
        };
        if c.finish_reason.is_some() {
            progress.finished[c.index] = true;
        }
        let d = Delta {
            index: c.index,
            text,
            logprobs,
            finish_reason: c.finish_reason,
            extra,
        };
        if !d.text.is_empty() {
            progress.content_deltas += 1;
        }
        if !d.is_empty() {
            out.push_back(Output::Delta(d));
        }
    }
    Ok(())
}

/// The outputs of a whole (not streamed) response: each choice as one delta, then the usage.
fn whole_response(bytes: &[u8], format: Endpoint) -> Result<Vec<Output>, UpstreamError> {
    let bad = |e: String| {
        UpstreamError::failed(
            FailureKind::Protocol,
            format!("the upstream's answer is not a completion: {e}"),
        )
    };
    let mut value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    // A whole chat message becomes a delta: tool calls get the index a delta would carry.
    if let Some(choices) = value.get_mut("choices").and_then(|c| c.as_array_mut()) {
        for c in choices {
            if let Some(mut message) = c.get_mut("message").map(serde_json::Value::take) {
                if let Some(calls) = message.get_mut("tool_calls").and_then(|t| t.as_array_mut()) {
                    for (i, call) in calls.iter_mut().enumerate() {
                        if let Some(o) = call.as_object_mut() {
                            o.entry("index").or_insert(i.into());
                        }
                    }
                }
                c["delta"] = message;
            }
        }
    }
    let mut progress = Progress::default();
    let mut out = std::collections::VecDeque::new();
    let data = serde_json::to_vec(&value).map_err(|e| bad(e.to_string()))?;
    convert(&data, format, &mut progress, &mut out)?;
    if !progress.all_finished() {
        return Err(bad("it has no finished choice".into()));
    }
    out.push_back(Output::Usage(progress.usage.unwrap_or_default()));
    Ok(out.into())
}

/// The outputs of a streamed response.
fn output_stream(resp: reqwest::Response, format: Endpoint) -> OutputStream {
    struct St {
        body: futures_util::stream::BoxStream<'static, reqwest::Result<bytes::Bytes>>,
        parser: SseParser,
        progress: Progress,
        pending: std::collections::VecDeque<Output>,
        ended: bool,
    }
    let st = St {
        body: resp.bytes_stream().boxed(),
        parser: SseParser::default(),
        progress: Progress::default(),
        pending: Default::default(),
        ended: false,
    };
    futures_util::stream::unfold(st, move |mut st| async move {
        let mut events = Vec::new();
        loop {
            if let Some(o) = st.pending.pop_front() {
                return Some((Ok(o), st));
            }
            if st.ended {
                return None;
            }
            events.clear();
            match st.body.next().await {
                Some(Ok(bytes)) => st.parser.feed(&bytes, &mut events),
                Some(Err(e)) => {
                    st.ended = true;
                    let e = UpstreamError::failed(
                        if e.is_timeout() {
                            FailureKind::Timeout
                        } else {
                            FailureKind::Protocol
                        },
                        format!("the upstream's stream broke off: {e}"),
                    );
                    return Some((Err(e), st));
                }
                None => {
                    st.parser.finish(&mut events);
                    st.ended = true;
                }
            }
            for data in &events {
                if st.progress.done {
                    break;
                }
                if let Err(e) = convert(data, format, &mut st.progress, &mut st.pending) {
                    st.ended = true;
                    st.pending.clear();
                    return Some((Err(e), st));
                }
            }
            if st.progress.done || st.ended {
                if !st.progress.done && !st.progress.all_finished() {
                    st.ended = true;
                    let e = UpstreamError::failed(
                        FailureKind::Protocol,
                        "the upstream closed the stream before it finished",
                    );
                    return Some((Err(e), st));
                }
                st.ended = true;
                let usage = st.progress.usage.unwrap_or(Usage {
                    prompt_tokens: 0,
                    completion_tokens: st.progress.content_deltas,
                    total_tokens: st.progress.content_deltas,
                });
                st.pending.push_back(Output::Usage(usage));
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_answers_become_deltas() {
        let out = whole_response(
            br#"{"choices":[{"index":0,"message":{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#,
            Endpoint::Chat,
        )
        .unwrap();
        let Output::Delta(d) = &out[0] else { panic!() };
        assert_eq!(d.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(d.extra["tool_calls"][0]["index"], 0);
        assert_eq!(
            out[1],
            Output::Usage(Usage {
                prompt_tokens: 3,
                completion_tokens: 4,
                total_tokens: 7
            })
        );
        let out = whole_response(
            br#"{"choices":[{"index":0,"text":"hi","finish_reason":"stop"}]}"#,
            Endpoint::Completion,
        )
        .unwrap();
        assert!(matches!(&out[0], Output::Delta(d) if d.text == "hi"));
        assert!(whole_response(br#"{"choices":[]}"#, Endpoint::Chat).is_err());
    }

    #[test]
    fn base_urls_end_in_v1() {
        assert_eq!(base_url("http://h:1"), "http://h:1/v1");
        assert_eq!(base_url("http://h:1/"), "http://h:1/v1");
        assert_eq!(base_url("http://h:1/v1/"), "http://h:1/v1");
    }

    #[test]
    fn chunks_become_deltas_and_usage() {
        let mut p = Progress::default();
        let mut out = Default::default();
        convert(
            br#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
            Endpoint::Chat,
            &mut p,
            &mut out,
        )
        .unwrap();
        assert!(out.is_empty(), "a role-only chunk carries nothing");
        convert(
            br#"{"choices":[{"index":0,"delta":{"content":"Hi","tool_calls":[{"index":0,"function":{"arguments":"{"}}]},"finish_reason":null}]}"#,
            Endpoint::Chat,
            &mut p,
            &mut out,
        )
        .unwrap();
        let Some(Output::Delta(d)) = out.pop_front() else {
            panic!()
        };
        assert_eq!(d.text, "Hi");
        assert!(d.extra.contains_key("tool_calls"));
        convert(
            br#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"usage":{"prompt_tokens":4,"completion_tokens":1,"total_tokens":5}}"#,
            Endpoint::Chat,
            &mut p,
            &mut out,
        )
        .unwrap();
        assert!(p.all_finished());
        assert_eq!(p.usage.unwrap().prompt_tokens, 4);
        let e = convert(
            br#"{"error":{"message":"boom"}}"#,
            Endpoint::Chat,
            &mut p,
            &mut out,
        )
        .unwrap_err();
        assert!(e.to_string().contains("boom"));
        assert!(convert(b"not json", Endpoint::Completion, &mut p, &mut out).is_err());
        assert!(
            convert(
                br#"{"choices":[{"index":1000000000000,"text":"x"}]}"#,
                Endpoint::Completion,
                &mut p,
                &mut out
            )
            .is_err()
        );
    }
}
