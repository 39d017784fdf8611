//! The gateway: one request path over every upstream. A request names a model; the gateway
//! finds the upstreams that serve it, orders them ([`router`]), and tries them in turn until one
//! produces its first output (retrying with backoff on connect errors, timeouts, 429 and 5xx,
//! never after the client has seen a token). The chosen upstream's stream is then tracked for
//! timeouts, measurements, the circuit breaker and metrics.

pub mod breaker;
pub mod browser_route;
pub mod cost;
pub mod dispatch;
pub mod embed;
pub mod local;
pub mod probe;
pub mod remote;
pub mod router;
pub mod stats;
pub mod upstream;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use breaker::{Breaker, BreakerConfig};
pub use browser_route::Policy;
use cost::CostModel;
use stats::UpstreamStats;
use upstream::{ModelInfo, Upstream};

use crate::errors::ApiError;
use crate::metrics::Metrics;

/// The request header giving the weight of the request's fairness id in fair queueing (a
/// tenant's priority).
pub const FAIRNESS_WEIGHT_HEADER: &str = "x-tandem-fairness-weight";

/// Time limits of requests to one upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// Connecting (remote upstreams).
    pub connect: Duration,
    /// From sending the request to the first output.
    pub first_token: Duration,
    /// Between two outputs.
    pub idle: Duration,
    /// The whole request.
    pub total: Duration,
}

impl Timeouts {
    /// Defaults for a remote server.
    pub const REMOTE: Timeouts = Timeouts {
        connect: Duration::from_secs(5),
        first_token: Duration::from_secs(60),
        idle: Duration::from_secs(60),
        total: Duration::from_secs(1800),
    };
    /// Defaults for a local engine (its queue can be long under load).
    pub const LOCAL: Timeouts = Timeouts {
        connect: Duration::from_secs(5),
        first_token: Duration::from_secs(600),
        idle: Duration::from_secs(120),
        total: Duration::from_secs(3600),
    };
}

/// How the gateway treats one upstream.
#[derive(Clone, Debug)]
pub struct UpstreamSettings {
    /// Most requests in flight there (none: no limit).
    pub max_concurrency: Option<usize>,
    /// Time limits.
    pub timeouts: Timeouts,
    /// What requests cost there.
    pub cost: CostModel,
    /// Its circuit breaker.
    pub breaker: BreakerConfig,
    /// How often it is probed.
    pub probe_interval: Duration,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        UpstreamSettings {
            max_concurrency: None,
            timeouts: Timeouts::REMOTE,
            cost: CostModel::default(),
            breaker: BreakerConfig::default(),
            probe_interval: Duration::from_secs(5),
        }
    }
}

/// An upstream with what the gateway keeps about it.
pub struct UpstreamHandle {
    /// Its id (in logs, metrics and `/v1/models`).
    pub id: String,
    /// The upstream.
    pub upstream: Box<dyn Upstream>,
    /// How it is treated.
    pub settings: UpstreamSettings,
    /// Its circuit breaker.
    pub breaker: Breaker,
    /// Live measurements.
    pub stats: UpstreamStats,
}

impl UpstreamHandle {
    /// Wraps an upstream.
    pub fn new(
        id: String,
        upstream: Box<dyn Upstream>,
        settings: UpstreamSettings,
    ) -> UpstreamHandle {
        UpstreamHandle {
            id,
            breaker: Breaker::new(settings.breaker),
            upstream,
            settings,
            stats: UpstreamStats::default(),
        }
    }
}

/// Retries of one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryConfig {
    /// Passes over the candidates (1 = no retry after every candidate failed once).
    pub attempts: u32,
    /// Wait before the second pass, doubled for each further one.
    pub backoff: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            attempts: 3,
            backoff: Duration::from_millis(50),
        }
    }
}

/// Routing settings.
#[derive(Clone, Debug, Default)]
pub struct RoutingConfig {
    /// The default policy.
    pub policy: Policy,
    /// Policies of particular models (by public name).
    pub model_policies: HashMap<String, Policy>,
    /// Retries.
    pub retry: RetryConfig,
}

/// Every upstream and how to route among them.
pub struct Gateway {
    upstreams: Vec<Arc<UpstreamHandle>>,
    routing: RoutingConfig,
    metrics: Arc<Metrics>,
}

impl Gateway {
    /// A gateway over `upstreams` (in configuration order: the first model of the first
    /// upstream is the default model).
    pub fn new(
        upstreams: Vec<Arc<UpstreamHandle>>,
        routing: RoutingConfig,
        metrics: Arc<Metrics>,
    ) -> Gateway {
        Gateway {
            upstreams,
            routing,
            metrics,
        }
    }

    /// The upstreams.
    pub fn upstreams(&self) -> &[Arc<UpstreamHandle>] {
        &self.upstreams
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The routing settings.
    pub fn routing(&self) -> &RoutingConfig {
        &self.routing
    }

    /// The policy of a model.
    pub fn policy(&self, model: &str) -> Policy {
        self.routing
            .model_policies
            .get(model)
            .copied()
            .unwrap_or(self.routing.policy)
    }

    /// The name of the default model (the first model of the first upstream that has one).
    pub fn default_model(&self) -> Option<String> {
        self.upstreams
            .iter()
            .find_map(|u| u.upstream.models().first().map(|m| m.name.clone()))
    }

    /// The public name a request's `model` selects (the default model when it names none), if
    /// an upstream serves it.
    pub fn resolve_model(&self, requested: Option<&str>) -> Result<String, ApiError> {
        let name = match requested.filter(|m| !m.is_empty()) {
            Some(m) => m.to_owned(),
            None => self
                .default_model()
                .ok_or_else(|| ApiError::unavailable("No upstream serves any model yet."))?,
        };
        if !self.serves(&name) {
            return Err(ApiError::model_not_found(&name));
        }
        Ok(name)
    }

    /// Whether any upstream serves `name` (a model id or alias).
    pub fn serves(&self, name: &str) -> bool {
        self.upstreams
            .iter()
            .any(|u| u.upstream.models().iter().any(|m| m.answers_to(name)))
    }

    /// The upstreams serving `name` (a model id or alias), each with its entry for it.
    pub fn candidates(&self, name: &str) -> Vec<router::Candidate> {
        let mut out = Vec::new();
        for u in &self.upstreams {
            let models = u.upstream.models();
            if let Some(index) = models.iter().position(|m| m.answers_to(name)) {
                out.push(router::Candidate {
                    upstream: Arc::clone(u),
                    models,
                    index,
                });
            }
        }
        out
    }

    /// Every model with the upstreams that serve it, in order of first appearance; a model
    /// several upstreams serve appears once (with the first upstream's entry).
    pub fn models(&self) -> Vec<(ModelInfo, Vec<String>)> {
        let mut out: Vec<(ModelInfo, Vec<String>)> = Vec::new();
        for u in &self.upstreams {
            for m in u.upstream.models().iter().cloned() {
                match out.iter_mut().find(|(known, _)| known.name == m.name) {
                    Some((known, ids)) => {
                        ids.push(u.id.clone());
                        for a in m.aliases {
                            if !known.aliases.contains(&a) {
                                known.aliases.push(a);
                            }
                        }
                        if known.browser_variants.is_empty() {
                            known.browser_variants = m.browser_variants;
                        }
                    }
                    None => out.push((m, vec![u.id.clone()])),
                }
            }
        }
        out
    }
}
