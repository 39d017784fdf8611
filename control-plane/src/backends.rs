//! The one place that knows the compute backends: builds an engine for a model on the chosen
//! backend and starts it as an [`EngineService`]. Adding a backend is one more match arm.

use engine_core::backend::Backend;
use engine_core::backend::cpu::{CpuBackend, CpuOptions};
#[cfg(feature = "webgpu")]
use engine_core::backend::webgpu::{WebGpuBackend, WebGpuOptions};
use engine_core::engine::{Engine, EngineConfig, EngineError, EngineService, ServiceOptions};
use engine_core::gguf::GgufFile;
use engine_core::model::ModelConfig;
use serde::Deserialize;

/// A compute backend the server can run models on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The CPU backend (SIMD kernels, multithreaded).
    Cpu,
    /// WebGPU through wgpu: Vulkan, Metal or DX12 (needs the `webgpu` build feature, on by
    /// default).
    Webgpu,
    /// CUDA on an NVIDIA GPU (the `cuda` build feature, on by default; the driver is loaded at
    /// run time).
    Cuda,
}

impl BackendKind {
    /// The backend's name.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Webgpu => "webgpu",
            BackendKind::Cuda => "cuda",
        }
    }
}

/// Why an engine could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The backend is not part of this build.
    #[cfg_attr(all(feature = "webgpu", feature = "cuda"), allow(dead_code))]
    #[error(
        "the {0} backend is not part of this build (rebuild with the `{0}` feature, or use --backend cpu)"
    )]
    Unavailable(&'static str),
    /// The backend could not be created.
    #[error(transparent)]
    Backend(#[from] engine_core::backend::BackendError),
    /// The model could not be loaded.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

/// KV blocks hold this many tokens.
pub const BLOCK_SIZE: usize = 16;

/// The engine limits a server or command asks for; `0` means "the default".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineLimits {
    /// Tokens per sequence (0: the model's, at most 8192).
    pub ctx_size: usize,
    /// Sequences decoded together.
    pub max_seqs: usize,
    /// Tokens per forward pass.
    pub max_batch_tokens: usize,
    /// KV blocks of [`BLOCK_SIZE`] tokens (0: four full contexts).
    pub kv_blocks: usize,
}

impl EngineLimits {
    /// The one place context and KV-cache defaults come from.
    pub fn engine_config(&self, model: &ModelConfig) -> EngineConfig {
        let mut config = EngineConfig {
            context_size: self.ctx_size,
            max_seqs: self.max_seqs,
            max_batch_tokens: self.max_batch_tokens,
            block_size: BLOCK_SIZE,
            ..EngineConfig::default()
        };
        // The engine's own defaults for the context (and the rest); then the KV cache: four
        // full contexts unless a block count is given.
        config.resolve(model);
        config.kv_tokens = if self.kv_blocks == 0 {
            4 * config.context_size
        } else {
            self.kv_blocks * BLOCK_SIZE
        };
        config
    }
}

/// Something to do with an engine whatever its backend (engines are generic over it).
pub trait WithEngine {
    /// What it gives.
    type Output;
    /// Does it.
    fn run<B: Backend + 'static>(self, engine: Engine<B>) -> Self::Output;
}

/// Builds an engine for `file` on backend `kind` and hands it to `f`.
pub fn with_engine<F: WithEngine>(
    kind: BackendKind,
    threads: usize,
    file: &GgufFile,
    config: EngineConfig,
    f: F,
) -> Result<F::Output, StartError> {
    match kind {
        BackendKind::Cpu => {
            let backend = CpuBackend::new(CpuOptions { threads, isa: None })?;
            Ok(f.run(Engine::new(backend, file, config)?))
        }
        #[cfg(feature = "webgpu")]
        BackendKind::Webgpu => {
            let backend = webgpu_backend(file, &config)?;
            Ok(f.run(Engine::new(backend, file, config)?))
        }
        #[cfg(not(feature = "webgpu"))]
        BackendKind::Webgpu => {
            let _ = (threads, file, config, f);
            Err(StartError::Unavailable("webgpu"))
        }
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => {
            let backend = engine_cuda::CudaBackend::new(0)
                .map_err(engine_core::backend::BackendError::from)?;
            Ok(f.run(Engine::new(backend, file, config)?))
        }
        #[cfg(not(feature = "cuda"))]
        BackendKind::Cuda => {
            let _ = (threads, file, config, f);
            Err(StartError::Unavailable("cuda"))
        }
    }
}

/// Starts an engine as a service thread.
struct StartService(ServiceOptions);

impl WithEngine for StartService {
    type Output = EngineService;
    fn run<B: Backend + 'static>(self, mut engine: Engine<B>) -> EngineService {
        // The first structured-output request should not wait for the token trie.
        engine.prepare_grammars();
        EngineService::start(engine, self.0)
    }
}

/// Loads `file` on backend `kind` and starts its engine thread.
pub fn start_engine(
    kind: BackendKind,
    threads: usize,
    file: &GgufFile,
    config: EngineConfig,
    options: ServiceOptions,
) -> Result<EngineService, StartError> {
    with_engine(kind, threads, file, config, StartService(options))
}

/// Opens the WebGPU adapter, reports it, and checks that the model fits it before any upload.
#[cfg(feature = "webgpu")]
pub fn webgpu_backend(file: &GgufFile, config: &EngineConfig) -> Result<WebGpuBackend, StartError> {
    let backend = WebGpuBackend::new_blocking(WebGpuOptions::default())?;
    tracing::info!("WebGPU adapter: {}", backend.report());
    let model = ModelConfig::from_metadata(file.metadata()).map_err(EngineError::from)?;
    let layout = config.clone().resolve(&model);
    backend.check_model(file, &layout, config.max_batch_tokens.max(1))?;
    Ok(backend)
}
