//! The one place that knows the compute backends: builds an engine for a model on the chosen
//! backend and starts it as an [`EngineService`]. Adding a backend is one more match arm.

use engine_core::backend::cpu::{CpuBackend, CpuOptions};
use engine_core::engine::{Engine, EngineConfig, EngineError, EngineService, ServiceOptions};
use engine_core::gguf::GgufFile;
use serde::Deserialize;

/// A compute backend the server can run models on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The CPU backend (SIMD kernels, multithreaded).
    Cpu,
    /// WebGPU (not available in this build yet).
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
    #[error("the {0} backend is not available in this build yet (use --backend cpu)")]
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
        BackendKind::Webgpu => Err(StartError::Unavailable("webgpu")),
    }
}
