//! What the gateway routes to: an [`Upstream`] is anything that serves OpenAI requests (a local
//! engine, a remote vLLM, llama.cpp or Tandem server). It lists its models, answers health
//! probes, reports its load, and turns a request into a stream of [`Output`]s; dropping the
//! stream cancels the work.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use futures_util::future::BoxFuture;

use crate::errors::ApiError;
use crate::openai::{
    ApiRequest, ChatLogprobs, CompletionLogprobs, EmbeddingRequest, Extra, Usage, VariantCard,
};

/// What a model on an upstream can do beyond plain generation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// Log-probabilities of generated tokens.
    pub logprobs: bool,
    /// Log-probabilities of the prompt (`echo` with `logprobs`).
    pub prompt_logprobs: bool,
    /// Prompts given as token ids.
    pub token_prompts: bool,
    /// More than one choice per request (`n > 1`, `best_of`).
    pub multiple_choices: bool,
    /// `tools`, `response_format` and other fields Tandem passes through uninterpreted.
    pub passthrough: bool,
    /// Fill-in-the-middle (`suffix`, `/infill`): the vocabulary has the markers.
    pub fill_in_middle: bool,
    /// `/v1/embeddings`.
    pub embeddings: bool,
    /// Structured outputs (`response_format`, `guided_*`).
    pub structured_outputs: bool,
    /// Tool calling (`tools`).
    pub tools: bool,
}

impl Features {
    /// Everything (a remote server decides for itself what it supports).
    pub const ALL: Features = Features {
        logprobs: true,
        prompt_logprobs: true,
        token_prompts: true,
        multiple_choices: true,
        passthrough: true,
        fill_in_middle: true,
        embeddings: true,
        structured_outputs: true,
        tools: true,
    };

    /// Whether `self` offers everything `needed` asks for.
    pub fn covers(&self, needed: &Features) -> bool {
        (!needed.logprobs || self.logprobs)
            && (!needed.prompt_logprobs || self.prompt_logprobs)
            && (!needed.token_prompts || self.token_prompts)
            && (!needed.multiple_choices || self.multiple_choices)
            && (!needed.passthrough || self.passthrough)
            && (!needed.fill_in_middle || self.fill_in_middle)
            && (!needed.embeddings || self.embeddings)
            && (!needed.structured_outputs || self.structured_outputs)
            && (!needed.tools || self.tools)
    }
}

/// A model an upstream serves.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInfo {
    /// The public name clients send.
    pub name: String,
    /// What the upstream itself calls it (sent in forwarded requests).
    pub upstream_name: String,
    /// Other public names.
    pub aliases: Vec<String>,
    /// Context size in tokens, when known.
    pub context_length: Option<usize>,
    /// What it supports.
    pub features: Features,
    /// Most choices (`n`) per prompt, when the upstream limits them.
    pub max_choices: Option<u32>,
    /// Files a browser can run it from.
    pub browser_variants: Vec<VariantCard>,
    /// Unix seconds when it became available.
    pub created: u64,
}

impl ModelInfo {
    /// Whether `name` selects this model.
    pub fn answers_to(&self, name: &str) -> bool {
        self.name == name || self.aliases.iter().any(|a| a == name)
    }
}

/// Work the upstream reports itself (beyond what the gateway has in flight there).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SelfLoad {
    /// Requests running.
    pub running: usize,
    /// Requests waiting.
    pub waiting: usize,
    /// KV-cache usage, 0 to 1.
    pub kv_usage: f64,
}

/// A request as the gateway hands it to an upstream.
#[derive(Clone, Debug)]
pub struct GenerateRequest {
    /// The request (its `model` is the public name).
    pub body: ApiRequest,
    /// What the upstream calls the model.
    pub upstream_model: String,
    /// Headers to forward (fairness id, objective).
    pub headers: Vec<(String, String)>,
}

/// An embeddings request as the gateway hands it to an upstream.
#[derive(Clone, Debug)]
pub struct EmbedRequest {
    /// The request (its `model` is the public name).
    pub body: EmbeddingRequest,
    /// What the upstream calls the model.
    pub upstream_model: String,
    /// Headers to forward (fairness id, objective).
    pub headers: Vec<(String, String)>,
}

/// The vectors of an embeddings request, one per input in input order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Embeddings {
    /// The vectors.
    pub vectors: Vec<Vec<f32>>,
    /// Input tokens.
    pub prompt_tokens: usize,
}

/// One piece of a choice's answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Delta {
    /// Choice index.
    pub index: usize,
    /// New text.
    pub text: String,
    /// Log-probabilities of the tokens in `text`, in the endpoint's format.
    pub logprobs: Option<Logprobs>,
    /// Set when the choice ends (`stop`, `length`, `tool_calls`, ...).
    pub finish_reason: Option<String>,
    /// Other delta fields (`tool_calls`, ...), passed through.
    pub extra: Extra,
}

impl Delta {
    /// Whether it carries anything for the client.
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
            && self.logprobs.is_none()
            && self.finish_reason.is_none()
            && self.extra.is_empty()
    }
}

/// Log-probabilities in one endpoint's format.
#[derive(Clone, Debug, PartialEq)]
pub enum Logprobs {
    /// Chat: one entry per token.
    Chat(ChatLogprobs),
    /// Completions: the legacy parallel arrays.
    Completion(CompletionLogprobs),
}

/// What an upstream's stream yields.
// Nearly every output is a delta: boxing it would add an allocation per token to save the size
// of the one usage output at the end.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    /// A piece of a choice.
    Delta(Delta),
    /// The token counts of the whole request (at the end).
    Usage(Usage),
}

/// A stream of outputs; dropping it cancels the work.
pub type OutputStream = Pin<Box<dyn Stream<Item = Result<Output, UpstreamError>> + Send>>;

/// A started generation.
pub struct Generation {
    /// The outputs.
    pub stream: OutputStream,
    /// The upstream's configuration fingerprint, if it gives one.
    pub fingerprint: Option<String>,
}

/// How an upstream failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// Could not connect.
    Connect,
    /// A timeout (connect, first token, idle, total).
    Timeout,
    /// A 5xx answer (or 503 from an inference gateway).
    Status,
    /// An answer that is not what the protocol says (bad JSON, cut-off stream).
    Protocol,
    /// The upstream is not ready (loading, shutting down, engine stopped).
    Unavailable,
}

impl FailureKind {
    /// A short label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            FailureKind::Connect => "connect_error",
            FailureKind::Timeout => "timeout",
            FailureKind::Status => "server_error",
            FailureKind::Protocol => "protocol_error",
            FailureKind::Unavailable => "unavailable",
        }
    }
}

/// Why an upstream did not (or no longer) serve a request.
#[derive(Clone, Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The request is at fault (a 4xx other than 429): answered to the client as it is, never
    /// retried and never counted against the upstream.
    #[error("{0}")]
    Rejected(ApiError),
    /// The upstream is saturated (429, or its queue is full): try another candidate.
    #[error("busy: {message}")]
    Busy {
        /// What it said.
        message: String,
        /// Seconds it asked to wait, if it said.
        retry_after: Option<u64>,
    },
    /// The request waited in a local engine's queue past its timeout (the engine is not at
    /// fault: it is busy).
    #[error("queue timeout: {message}")]
    QueueTimeout {
        /// What happened.
        message: String,
        /// Seconds after which a retry may find room.
        retry_after: u64,
    },
    /// The upstream is at fault: connect errors, timeouts, 5xx, broken streams.
    #[error("{kind:?}: {message}")]
    Failed {
        /// What kind of failure.
        kind: FailureKind,
        /// What happened.
        message: String,
    },
}

impl UpstreamError {
    /// A failure of `kind`.
    pub fn failed(kind: FailureKind, message: impl Into<String>) -> UpstreamError {
        UpstreamError::Failed {
            kind,
            message: message.into(),
        }
    }

    /// Whether the upstream (not the request) is at fault, for its circuit breaker.
    pub fn counts_against_upstream(&self) -> bool {
        matches!(self, UpstreamError::Failed { .. })
    }

    /// A label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            UpstreamError::Rejected(_) => "client_error",
            UpstreamError::Busy { .. } => "busy",
            UpstreamError::QueueTimeout { .. } => "queue_timeout",
            UpstreamError::Failed { kind, .. } => kind.label(),
        }
    }

    /// The error as the client sees it.
    pub fn to_api_error(&self) -> ApiError {
        match self {
            UpstreamError::Rejected(e) => e.clone(),
            UpstreamError::Busy {
                message,
                retry_after,
            } => ApiError {
                retry_after: Some(retry_after.unwrap_or(1)),
                ..ApiError::busy(message.clone())
            },
            UpstreamError::QueueTimeout {
                message,
                retry_after,
            } => ApiError {
                code: Some(std::borrow::Cow::Borrowed("queue_timeout")),
                retry_after: Some(*retry_after),
                ..ApiError::unavailable(message.clone())
            },
            UpstreamError::Failed { kind, message } => match kind {
                FailureKind::Timeout => ApiError::timeout(message.clone()),
                FailureKind::Unavailable => ApiError::unavailable(message.clone()),
                _ => ApiError::bad_gateway(message.clone()),
            },
        }
    }
}

impl From<ApiError> for UpstreamError {
    fn from(e: ApiError) -> UpstreamError {
        match e.status.as_u16() {
            429 => UpstreamError::Busy {
                message: e.message,
                retry_after: e.retry_after,
            },
            503 => UpstreamError::failed(FailureKind::Unavailable, e.message),
            s if s >= 500 => UpstreamError::failed(FailureKind::Status, e.message),
            _ => UpstreamError::Rejected(e),
        }
    }
}

/// Anything that serves OpenAI requests.
pub trait Upstream: Send + Sync + 'static {
    /// A short name for logs and metrics (`local`, `openai`).
    fn kind(&self) -> &'static str;

    /// The models it serves now (a remote upstream's list is refreshed by its probes).
    fn models(&self) -> Arc<Vec<ModelInfo>>;

    /// What it reports of its own load, if it does.
    fn self_load(&self) -> Option<SelfLoad> {
        None
    }

    /// Whether it answers now (an active probe; a remote upstream also refreshes its models).
    fn probe(&self) -> BoxFuture<'_, Result<(), UpstreamError>>;

    /// Starts generating: resolves once the upstream accepted the request (its response
    /// headers, or the engine's admission); the outputs follow on the stream.
    fn generate(&self, req: GenerateRequest) -> BoxFuture<'_, Result<Generation, UpstreamError>>;

    /// Embeds the request's inputs; an upstream without embeddings refuses.
    fn embed(&self, req: EmbedRequest) -> BoxFuture<'_, Result<Embeddings, UpstreamError>> {
        let message = format!(
            "The model `{}` does not serve embeddings.",
            req.upstream_model
        );
        Box::pin(async move {
            Err(UpstreamError::Rejected(ApiError::bad_param(
                "model", message,
            )))
        })
    }
}
