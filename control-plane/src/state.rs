//! What every handler shares: the gateway (once the local models are loaded), the local models
//! themselves (for their files and engine gauges), the metrics registry and the server's
//! lifecycle flags.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use crate::accounting::Accounting;
use crate::errors::ApiError;
use crate::gateway::Gateway;
use crate::gateway::local::ModelHandle;
use crate::gateway::local::variant::LocalVariant;
use crate::metrics::{Metrics, MetricsNames};
use crate::response_cache::ResponseCache;

/// A local model, as the server sees it beside the gateway.
#[derive(Clone)]
pub struct LocalModel {
    /// The loaded model.
    pub handle: Arc<ModelHandle>,
    /// Its file, as browsers download it.
    pub variant: Arc<LocalVariant>,
}

/// Everything that exists once start-up has finished.
pub struct Loaded {
    /// The request path over every upstream.
    pub gateway: Arc<Gateway>,
    /// The local models.
    pub locals: Vec<LocalModel>,
}

/// The state handlers share.
pub type SharedState = Arc<AppState>;

/// The server's shared state.
pub struct AppState {
    /// Set once the local models are loaded.
    pub loaded: OnceLock<Loaded>,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// Set when a shutdown signal arrived: `/ready` fails and new generations are refused.
    pub shutting_down: AtomicBool,
    /// Largest request body, in bytes.
    pub body_limit: usize,
    /// Which names `/metrics` uses for the engine gauges.
    pub metrics_names: MetricsNames,
    /// Tenants, limits and the usage ledger (none: an open server that keeps no ledger).
    pub accounting: Option<Arc<Accounting>>,
    /// The response cache (none: off).
    pub response_cache: Option<Arc<ResponseCache>>,
}

impl AppState {
    /// Fresh state with nothing loaded yet.
    pub fn new(body_limit: usize, metrics_names: MetricsNames) -> AppState {
        AppState {
            loaded: OnceLock::new(),
            metrics: Arc::new(Metrics::new()),
            shutting_down: AtomicBool::new(false),
            body_limit,
            metrics_names,
            accounting: None,
            response_cache: None,
        }
    }

    /// With a response cache.
    pub fn with_response_cache(mut self, cache: Arc<ResponseCache>) -> AppState {
        self.response_cache = Some(cache);
        self
    }

    /// With tenants, limits and the ledger.
    pub fn with_accounting(mut self, accounting: Arc<Accounting>) -> AppState {
        self.accounting = Some(accounting);
        self
    }

    /// Whether start-up finished and the server is not shutting down.
    pub fn is_ready(&self) -> bool {
        self.loaded.get().is_some() && !self.shutting_down.load(Ordering::SeqCst)
    }

    /// What start-up loaded, or 503 while it loads.
    pub fn loaded(&self) -> Result<&Loaded, ApiError> {
        self.loaded
            .get()
            .ok_or_else(|| ApiError::unavailable("The model is still loading; try again shortly."))
    }

    /// The gateway for a new generation: 503 while loading or shutting down.
    pub fn gateway_for_generation(&self) -> Result<&Arc<Gateway>, ApiError> {
        if self.shutting_down.load(Ordering::SeqCst) {
            return Err(ApiError::unavailable("The server is shutting down."));
        }
        Ok(&self.loaded()?.gateway)
    }
}
