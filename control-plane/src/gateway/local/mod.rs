//! The local upstream: a model loaded from a GGUF file and run by an engine service on one of
//! this machine's compute backends. Chat templating and tokenizing happen here, behind the
//! [`Upstream`] interface, so the API handlers never see token ids.

pub mod embed;
pub mod events;
pub mod grammar;
pub mod prompt;
pub mod run;
pub mod tools;
pub mod variant;

use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use engine_core::chat::ChatTemplate;
use engine_core::engine::{EngineService, Flow, ServiceOptions};
use engine_core::model::{ModelConfig, Pooling};
use engine_core::tokenizer::Tokenizer;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use crate::backends::{self, BackendKind, EngineLimits};
use crate::gateway::FAIRNESS_WEIGHT_HEADER;
use crate::gateway::upstream::{
    EmbedRequest, Embeddings, FailureKind, Features, GenerateRequest, Generation, ModelInfo,
    SelfLoad, Upstream, UpstreamError,
};
use crate::load;
use crate::metrics::Metrics;
use crate::openai::{ApiRequest, Endpoint};
use events::EventMapper;
use run::EngineRun;

/// A loaded model: its engine thread, tokenizer and chat template.
pub struct ModelHandle {
    /// The id clients send as `model`.
    pub id: String,
    /// The engine thread.
    pub service: EngineService,
    /// The model's tokenizer.
    pub tokenizer: Tokenizer,
    /// The model's chat template.
    pub template: ChatTemplate,
    /// Context size per sequence, in tokens.
    pub context: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// Width of its hidden states (the size of its embeddings).
    pub embedding_dim: usize,
    /// How its embeddings pool the hidden states.
    pub pooling: Pooling,
    /// `system_fingerprint`: backend, device and engine limits, hashed.
    pub fingerprint: String,
}

/// How to load a local model.
#[derive(Clone, Debug)]
pub struct LocalSpec {
    /// The id clients send (`None`: the file name without `.gguf`).
    pub id: Option<String>,
    /// Path, URL or `hf:` source.
    pub source: String,
    /// Other names.
    pub aliases: Vec<String>,
    /// The compute backend.
    pub backend: BackendKind,
    /// CPU threads (0 = all cores).
    pub threads: usize,
    /// Engine limits.
    pub limits: EngineLimits,
    /// Most requests waiting beyond the running ones.
    pub max_waiting: usize,
    /// Automatic prefix caching.
    pub prefix_caching: bool,
}

/// A local model served through the gateway.
pub struct LocalUpstream {
    handle: Arc<ModelHandle>,
    info: ModelInfo,
    /// The model list once its browser variant is complete.
    listed: std::sync::OnceLock<Arc<Vec<ModelInfo>>>,
    variant: Arc<variant::LocalVariant>,
    metrics: Arc<Metrics>,
}

impl LocalUpstream {
    /// Fetches (if it is a URL or on the Hub), maps and loads the model, and starts its engine.
    pub async fn load(
        spec: &LocalSpec,
        metrics: Arc<Metrics>,
    ) -> Result<LocalUpstream, load::LoadError> {
        let (source, path) = load::fetch(&spec.source, false).await?;
        let id = spec.id.clone().unwrap_or_else(|| source.display_name());
        let blocking_spec = spec.clone();
        let (handle, variant) =
            tokio::task::spawn_blocking(move || start(&blocking_spec, id, path))
                .await
                .map_err(|e| load::LoadError::Other(format!("the loading task failed: {e}")))??;
        let variant = Arc::new(variant);
        variant::hash_in_background(Arc::clone(&variant));
        Ok(LocalUpstream::new(Arc::new(handle), variant, metrics)
            .with_aliases(spec.aliases.clone()))
    }

    fn new(
        handle: Arc<ModelHandle>,
        variant: Arc<variant::LocalVariant>,
        metrics: Arc<Metrics>,
    ) -> LocalUpstream {
        let info = ModelInfo {
            name: handle.id.clone(),
            upstream_name: handle.id.clone(),
            aliases: Vec::new(),
            context_length: Some(handle.context),
            features: Features {
                logprobs: true,
                prompt_logprobs: true,
                token_prompts: true,
                multiple_choices: true,
                passthrough: false,
                fill_in_middle: handle.tokenizer.fim_tokens().is_some(),
                embeddings: true,
                structured_outputs: true,
                tools: true,
            },
            max_choices: Some(prompt::MAX_N),
            browser_variants: Vec::new(),
            created: crate::util::unix_now(),
        };
        LocalUpstream {
            handle,
            info,
            listed: std::sync::OnceLock::new(),
            variant,
            metrics,
        }
    }

    /// Sets the other names of the model.
    pub fn with_aliases(mut self, aliases: Vec<String>) -> LocalUpstream {
        self.info.aliases = aliases;
        self
    }

    /// Adds browser variants from the configuration (after its own file).
    pub fn with_variants(mut self, variants: Vec<crate::openai::VariantCard>) -> LocalUpstream {
        self.info.browser_variants = variants;
        self
    }

    /// The loaded model.
    pub fn handle(&self) -> &Arc<ModelHandle> {
        &self.handle
    }

    /// The model's file, as browsers download it.
    pub fn variant(&self) -> &Arc<variant::LocalVariant> {
        &self.variant
    }
}

/// Loads the file and starts the engine (blocking).
fn start(
    spec: &LocalSpec,
    id: String,
    path: PathBuf,
) -> Result<(ModelHandle, variant::LocalVariant), load::LoadError> {
    let file = load::open(&path)?;
    let meta = file.metadata();
    let unusable = |message: String| load::LoadError::Model {
        path: path.clone(),
        message,
    };
    let model_config = ModelConfig::from_metadata(meta).map_err(|e| unusable(e.to_string()))?;
    let engine_config = spec.limits.engine_config(&model_config);
    let tokenizer = Tokenizer::from_metadata(meta)
        .map_err(|e| unusable(format!("building the tokenizer: {e}")))?;
    let template = ChatTemplate::from_metadata(meta)
        .map_err(|e| unusable(format!("compiling the chat template: {e}")))?;
    let service = backends::start_engine(
        spec.backend,
        spec.threads,
        &file,
        engine_config,
        ServiceOptions {
            max_waiting: spec.max_waiting,
            prefix_caching: spec.prefix_caching,
        },
    )
    .map_err(|e| {
        load::LoadError::Other(format!(
            "starting {id} on the {} backend: {e}",
            spec.backend.name()
        ))
    })?;
    let info = service.info().clone();
    eprintln!(
        "tandem: model {id} on the {} backend ({})",
        info.backend.name, info.backend.device
    );
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (
        &info.backend.name,
        &info.backend.device,
        info.backend.threads,
        info.config.context_size,
        info.config.max_seqs,
        info.config.kv_tokens,
        env!("CARGO_PKG_VERSION"),
    )
        .hash(&mut h);
    let variant = variant::LocalVariant::describe(&id, &path, &file, &info.model, &info.config);
    Ok((
        ModelHandle {
            id,
            tokenizer,
            template,
            context: info.config.context_size,
            vocab: info.model.vocab_size,
            embedding_dim: info.model.d_model,
            pooling: info.model.pooling,
            fingerprint: format!("fp_{:012x}", h.finish() & 0xffff_ffff_ffff),
            service,
        },
        variant,
    ))
}

impl Upstream for LocalUpstream {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn models(&self) -> Arc<Vec<ModelInfo>> {
        if let Some(m) = self.listed.get() {
            return Arc::clone(m);
        }
        let mut info = self.info.clone();
        match self.variant.card() {
            Some(card) => {
                info.browser_variants.insert(0, card);
                Arc::clone(self.listed.get_or_init(|| Arc::new(vec![info])))
            }
            // Until the file's SHA-256 is known, browsers are offered only configured files.
            None => Arc::new(vec![info]),
        }
    }

    fn self_load(&self) -> Option<SelfLoad> {
        let s = self.handle.service.stats();
        Some(SelfLoad {
            running: s.running,
            waiting: s.waiting + s.queued,
            kv_usage: s.kv_usage,
        })
    }

    fn probe(&self) -> BoxFuture<'_, Result<(), UpstreamError>> {
        let alive = self.handle.service.is_alive();
        async move {
            if alive {
                Ok(())
            } else {
                Err(UpstreamError::failed(
                    FailureKind::Unavailable,
                    "the engine thread has stopped",
                ))
            }
        }
        .boxed()
    }

    fn generate(&self, req: GenerateRequest) -> BoxFuture<'_, Result<Generation, UpstreamError>> {
        let handle = Arc::clone(&self.handle);
        let metrics = Arc::clone(&self.metrics);
        async move {
            let start = Instant::now();
            let prep_handle = Arc::clone(&handle);
            let grammar_param = grammar::grammar_param(req.body.sampling());
            let flow = flow_of(&req.headers);
            let (format, prepared) = tokio::task::spawn_blocking(move || match &req.body {
                ApiRequest::Chat(r) => prompt::chat(&prep_handle, r).map(|p| (Endpoint::Chat, p)),
                ApiRequest::Completion(r) => {
                    prompt::completion(&prep_handle, r).map(|p| (Endpoint::Completion, p))
                }
            })
            .await
            .map_err(|e| {
                UpstreamError::failed(FailureKind::Status, format!("tokenizing failed: {e}"))
            })?
            .map_err(UpstreamError::Rejected)?;
            let choices = prepared.requests.len();
            let mut requests = prepared.requests;
            for r in &mut requests {
                r.flow.clone_from(&flow);
            }
            let run = EngineRun::start(&metrics, &handle, requests, start)
                .await
                .map_err(|mut e| {
                    // Name the field that carried the grammar the engine refused.
                    if e.code.as_deref() == Some(crate::errors::INVALID_GRAMMAR) {
                        e.param = Some(grammar_param.into());
                    }
                    UpstreamError::from(e)
                })?;
            let mapper = EventMapper::new(
                format,
                Arc::clone(&handle),
                prepared.top_logprobs,
                prepared.ignore_eos,
                choices,
                prepared.n,
                prepared.echo,
            )
            .with_tools(prepared.tools);
            Ok(Generation {
                stream: events::output_stream(run, mapper),
                fingerprint: Some(handle.fingerprint.clone()),
            })
        }
        .boxed()
    }

    fn embed(&self, req: EmbedRequest) -> BoxFuture<'_, Result<Embeddings, UpstreamError>> {
        let handle = Arc::clone(&self.handle);
        let metrics = Arc::clone(&self.metrics);
        let flow = flow_of(&req.headers);
        async move { embed::run(&handle, &metrics, &req.body, flow).await }.boxed()
    }
}

/// The fair-queueing flow of a request: its fairness id (llm-d's or the Gateway API Inference
/// Extension's header) with the weight of `x-tandem-fairness-weight` (default 1).
fn flow_of(headers: &[(String, String)]) -> Option<Flow> {
    let id = headers
        .iter()
        .find(|(k, _)| k.ends_with("-inference-fairness-id"))
        .map(|(_, v)| v.clone())?;
    let weight = headers
        .iter()
        .find(|(k, _)| k == FAIRNESS_WEIGHT_HEADER)
        .and_then(|(_, v)| v.parse::<u32>().ok())
        .unwrap_or(1)
        .clamp(1, 1000);
    Some(Flow { id, weight })
}
