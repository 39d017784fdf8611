//! The one place that knows the compute backends: builds an engine for a model on the chosen
//! backend and starts it as an [`EngineService`]. Adding a backend is one more match arm.

use engine_core::backend::cpu::{CpuBackend, CpuOptions};
#[cfg(feature = "webgpu")]
use engine_core::backend::webgpu::{WebGpuBackend, WebGpuOptions};
use engine_core::engine::{Engine, EngineConfig, EngineError, EngineService, ServiceOptions};
use engine_core::gguf::GgufFile;
#[cfg(feature = "webgpu")]
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
}

impl BackendKind {
    /// The backend's name.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Webgpu => "webgpu",
        }
    }
}

/// Why an engine could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The backend is not part of this build.
    #[cfg_attr(feature = "webgpu", allow(dead_code))]
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

/// Loads `file` on backend `kind` and starts its engine thread.
pub fn start_engine(
    kind: BackendKind,
    threads: usize,
    file: &GgufFile,
    config: EngineConfig,
    options: ServiceOptions,
) -> Result<EngineService, StartError> {
    match kind {
        BackendKind::Cpu => {
            let backend = CpuBackend::new(CpuOptions { threads, isa: None })?;
            let engine = Engine::new(backend, file, config)?;
            Ok(EngineService::start(engine, options))
        }
        #[cfg(feature = "webgpu")]
        BackendKind::Webgpu => {
            let backend = webgpu_backend(file, &config)?;
            let engine = Engine::new(backend, file, config)?;
            Ok(EngineService::start(engine, options))
        }
        #[cfg(not(feature = "webgpu"))]
        BackendKind::Webgpu => {
            let _ = (threads, file, config, options);
            Err(StartError::Unavailable("webgpu"))
        }
    }
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
