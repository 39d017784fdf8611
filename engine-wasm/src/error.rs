//! Typed failures, thrown to JavaScript as `Error`s whose `name` is the [`Kind`].

use engine_core::backend::BackendError;
use engine_core::engine::EngineError;
use wasm_bindgen::JsValue;

/// What kind of failure an error is; JavaScript sees it as the error's `name`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// WebGPU was asked for but there is no adapter or device.
    NoAdapter,
    /// Device or WebAssembly memory is exhausted, or the model does not fit the device's limits.
    OutOfMemory,
    /// The GPU device was lost or failed.
    DeviceLost,
    /// The file's SHA-256 does not match the expected one.
    Integrity,
    /// The model or its format cannot run here.
    Unsupported,
    /// Bad request parameters, or a prompt that does not fit the context.
    InvalidRequest,
    /// A bug or an unexpected state.
    Internal,
}

impl Kind {
    /// The name JavaScript sees (`snake_case`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::NoAdapter => "no_adapter",
            Kind::OutOfMemory => "out_of_memory",
            Kind::DeviceLost => "device_lost",
            Kind::Integrity => "integrity",
            Kind::Unsupported => "unsupported",
            Kind::InvalidRequest => "invalid_request",
            Kind::Internal => "internal",
        }
    }
}

/// An engine failure with its kind.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct EngineWasmError {
    /// What kind of failure.
    pub kind: Kind,
    /// What happened, for people.
    pub message: String,
}

impl EngineWasmError {
    /// A failure of `kind`.
    pub fn new(kind: Kind, message: impl Into<String>) -> EngineWasmError {
        EngineWasmError {
            kind,
            message: message.into(),
        }
    }
}

impl From<BackendError> for EngineWasmError {
    fn from(e: BackendError) -> Self {
        let kind = match &e {
            BackendError::OutOfMemory(_) => Kind::OutOfMemory,
            BackendError::Unavailable(_) => Kind::NoAdapter,
            BackendError::UnsupportedType { .. } => Kind::Unsupported,
            BackendError::Device(m) if m.to_ascii_lowercase().contains("memory") => {
                Kind::OutOfMemory
            }
            BackendError::Device(_) => Kind::DeviceLost,
        };
        EngineWasmError::new(kind, e.to_string())
    }
}

impl From<EngineError> for EngineWasmError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Backend(b) => b.into(),
            EngineError::Model(_) | EngineError::Tokenizer(_) => {
                EngineWasmError::new(Kind::Unsupported, e.to_string())
            }
            EngineError::KvTooSmall { .. } => {
                EngineWasmError::new(Kind::OutOfMemory, e.to_string())
            }
            EngineError::Template(_)
            | EngineError::Sampler(_)
            | EngineError::Grammar(_)
            | EngineError::EmptyPrompt
            | EngineError::PromptTooLong { .. } => {
                EngineWasmError::new(Kind::InvalidRequest, e.to_string())
            }
        }
    }
}

impl From<EngineWasmError> for JsValue {
    fn from(e: EngineWasmError) -> JsValue {
        let err = js_sys::Error::new(&e.message);
        err.set_name(e.kind.name());
        err.into()
    }
}
