//! Rendering an upstream's outputs for the client: one place builds the chunks of both
//! endpoints, the usage chunk, the SSE framing (with an OpenAI-shaped error event and `[DONE]`
//! when the upstream fails mid-stream), and the whole responses of non-streamed requests.

pub mod llama;
pub mod merge;
pub mod sse;

use std::collections::BTreeMap;

use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;

use crate::errors::ApiError;
use crate::gateway::dispatch::Dispatched;
use crate::gateway::upstream::{Delta, Logprobs, Output};
use crate::openai::{
    ApiRequest, AssistantMessage, ChatChoice, ChatChunkChoice, ChatCompletion, ChatCompletionChunk,
    ChatDelta, ChatLogprobs, Completion, CompletionChoice, CompletionLogprobs, Endpoint, Extra,
    Usage,
};
use crate::util::{response_id, unix_now};

/// What rendering needs to know about the request.
#[derive(Clone, Debug)]
pub struct RenderSpec {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// Stream the answer.
    pub stream: bool,
    /// End the stream with a usage chunk.
    pub include_usage: bool,
    /// Log-probabilities were asked for.
    pub logprobs: bool,
    /// In llama.cpp's native shape (`/infill`), for a request that arrived at this instant.
    pub llama_since: Option<std::time::Instant>,
}

impl RenderSpec {
    /// Reads the spec from a request.
    pub fn of(req: &ApiRequest) -> RenderSpec {
        let s = req.sampling();
        let (endpoint, logprobs) = match req {
            ApiRequest::Chat(r) => (Endpoint::Chat, r.logprobs.unwrap_or(false)),
            ApiRequest::Completion(r) => (Endpoint::Completion, r.logprobs.is_some()),
        };
        RenderSpec {
            endpoint,
            stream: s.stream(),
            include_usage: s.include_usage(),
            logprobs,
            llama_since: None,
        }
    }
}

/// The fields every chunk or response of one answer shares.
struct Head {
    id: String,
    created: u64,
    model: String,
    fingerprint: String,
}

impl Head {
    fn new(endpoint: Endpoint, model: String, fingerprint: String) -> Head {
        Head {
            id: response_id(match endpoint {
                Endpoint::Chat => "chatcmpl-",
                Endpoint::Completion => "cmpl-",
            }),
            created: unix_now(),
            model,
            fingerprint,
        }
    }

    fn chat_chunk(&self, choices: Vec<ChatChunkChoice>, usage: Option<Option<Usage>>) -> String {
        serde_json::to_string(&ChatCompletionChunk {
            id: &self.id,
            object: "chat.completion.chunk",
            created: self.created,
            model: &self.model,
            system_fingerprint: Some(&self.fingerprint),
            choices,
            usage,
        })
        .unwrap_or_default()
    }

    fn completion(&self, choices: Vec<CompletionChoice>, usage: Option<Option<Usage>>) -> String {
        serde_json::to_string(&Completion {
            id: &self.id,
            object: "text_completion",
            created: self.created,
            model: &self.model,
            system_fingerprint: Some(&self.fingerprint),
            choices,
            usage,
        })
        .unwrap_or_default()
    }
}

/// Answers the client: a stream of chunks, or (after the upstream finished) one response.
pub async fn respond(spec: RenderSpec, d: Dispatched) -> Response {
    if let Some(started) = spec.llama_since {
        return llama::respond(spec.stream, started, d).await;
    }
    let head = Head::new(spec.endpoint, d.model.clone(), d.fingerprint.clone());
    if spec.stream {
        stream(spec, head, d)
    } else {
        match collect(spec, head, d).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        }
    }
}

/// Renders one output as the stream's payloads.
fn stream_payloads(
    spec: &RenderSpec,
    head: &Head,
    out: Output,
    usage: &mut Usage,
    pending: &mut Vec<String>,
) {
    let null_usage = spec.include_usage.then_some(None);
    match out {
        Output::Usage(u) => *usage = u,
        Output::Delta(d) => pending.push(match spec.endpoint {
            Endpoint::Chat => {
                let content = (!d.text.is_empty() || d.logprobs.is_some()).then_some(d.text);
                let logprobs = match d.logprobs {
                    Some(Logprobs::Chat(l)) => Some(l),
                    _ => None,
                };
                head.chat_chunk(
                    vec![ChatChunkChoice {
                        index: d.index,
                        delta: ChatDelta {
                            role: None,
                            content,
                            extra: d.extra,
                        },
                        logprobs,
                        finish_reason: d.finish_reason,
                    }],
                    null_usage,
                )
            }
            Endpoint::Completion => head.completion(
                vec![CompletionChoice {
                    index: d.index,
                    text: d.text,
                    logprobs: match d.logprobs {
                        Some(Logprobs::Completion(l)) => Some(l),
                        _ => None,
                    },
                    finish_reason: d.finish_reason,
                }],
                null_usage,
            ),
        }),
    }
}

fn usage_payload(spec: &RenderSpec, head: &Head, usage: Usage) -> String {
    match spec.endpoint {
        Endpoint::Chat => head.chat_chunk(Vec::new(), Some(Some(usage))),
        Endpoint::Completion => head.completion(Vec::new(), Some(Some(usage))),
    }
}

fn stream(spec: RenderSpec, head: Head, d: Dispatched) -> Response {
    let mut first = Vec::new();
    if spec.endpoint == Endpoint::Chat {
        first.push(head.chat_chunk(
            vec![ChatChunkChoice {
                index: 0,
                delta: ChatDelta {
                    role: Some("assistant".into()),
                    content: Some(String::new()),
                    extra: Extra::new(),
                },
                logprobs: None,
                finish_reason: None,
            }],
            spec.include_usage.then_some(None),
        ));
    }
    let mut usage = Usage::default();
    stream_payloads(&spec, &head, d.first, &mut usage, &mut first);
    struct St {
        spec: RenderSpec,
        head: Head,
        rest: crate::gateway::upstream::OutputStream,
        pending: std::collections::VecDeque<String>,
        usage: Usage,
        done: bool,
    }
    let st = St {
        spec,
        head,
        rest: d.rest,
        pending: first.into(),
        usage,
        done: false,
    };
    let payloads = futures_util::stream::unfold(st, |mut st| async move {
        loop {
            if let Some(p) = st.pending.pop_front() {
                return Some((p, st));
            }
            if st.done {
                return None;
            }
            match st.rest.next().await {
                Some(Ok(out)) => {
                    let mut v = Vec::new();
                    stream_payloads(&st.spec, &st.head, out, &mut st.usage, &mut v);
                    st.pending.extend(v);
                }
                Some(Err(e)) => {
                    st.done = true;
                    st.pending.push_back(e.to_api_error().body_json());
                    st.pending.push_back(sse::DONE.to_owned());
                }
                None => {
                    st.done = true;
                    if st.spec.include_usage {
                        st.pending
                            .push_back(usage_payload(&st.spec, &st.head, st.usage));
                    }
                    st.pending.push_back(sse::DONE.to_owned());
                }
            }
        }
    });
    sse::response(payloads)
}

/// One choice being assembled.
#[derive(Default)]
struct Choice {
    text: String,
    chat_logprobs: Vec<crate::openai::TokenLogprob>,
    completion_logprobs: CompletionLogprobs,
    finish: Option<String>,
    extra: Extra,
}

impl Choice {
    fn add(&mut self, d: Delta) {
        self.text.push_str(&d.text);
        match d.logprobs {
            Some(Logprobs::Chat(l)) => self.chat_logprobs.extend(l.content.unwrap_or_default()),
            Some(Logprobs::Completion(l)) => self.completion_logprobs.extend(l),
            None => {}
        }
        if d.finish_reason.is_some() {
            self.finish = d.finish_reason;
        }
        merge::merge_extra(&mut self.extra, d.extra);
    }
}

async fn collect(spec: RenderSpec, head: Head, d: Dispatched) -> Result<Response, ApiError> {
    let mut choices: BTreeMap<usize, Choice> = BTreeMap::new();
    let mut usage = Usage::default();
    let mut apply = |out: Output| match out {
        Output::Delta(d) => choices.entry(d.index).or_default().add(d),
        Output::Usage(u) => usage = u,
    };
    apply(d.first);
    let mut rest = d.rest;
    while let Some(out) = rest.next().await {
        apply(out.map_err(|e| e.to_api_error())?);
    }
    let body = match spec.endpoint {
        Endpoint::Chat => {
            let choices = choices
                .into_iter()
                .map(|(index, mut c)| {
                    merge::finish_message_extra(&mut c.extra);
                    let has_calls = c.extra.contains_key("tool_calls");
                    ChatChoice {
                        index,
                        message: AssistantMessage {
                            role: "assistant",
                            content: (!c.text.is_empty() || !has_calls).then_some(c.text),
                            refusal: None,
                            extra: c.extra,
                        },
                        logprobs: spec.logprobs.then_some(ChatLogprobs {
                            content: Some(c.chat_logprobs),
                            refusal: None,
                        }),
                        finish_reason: c.finish.unwrap_or_else(|| "stop".into()),
                    }
                })
                .collect();
            serde_json::to_vec(&ChatCompletion {
                id: head.id,
                object: "chat.completion",
                created: head.created,
                model: head.model,
                system_fingerprint: Some(head.fingerprint),
                choices,
                usage,
            })
        }
        Endpoint::Completion => {
            let choices = choices
                .into_iter()
                .map(|(index, c)| CompletionChoice {
                    index,
                    text: c.text,
                    logprobs: spec.logprobs.then_some(c.completion_logprobs),
                    finish_reason: Some(c.finish.unwrap_or_else(|| "stop".into())),
                })
                .collect();
            Ok(head.completion(choices, Some(Some(usage))).into_bytes())
        }
    }
    .map_err(|e| ApiError::internal(format!("rendering the response: {e}")))?;
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response())
}
