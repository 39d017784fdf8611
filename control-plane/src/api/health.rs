//! Liveness, readiness and metrics: `GET /health`, `GET /ready`, `GET /metrics`.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::metrics::{EngineGauges, UpstreamGauges};
use crate::state::SharedState;

/// Liveness.
///
/// The process is up and answering.
#[utoipa::path(
    get,
    operation_id = "health",
    path = "/health",
    tag = "Operations",
    responses((status = 200, description = "Up", body = Health))
)]
pub async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// What `GET /health` answers.
#[derive(Serialize, ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: &'static str,
}

/// What `GET /ready` answers.
#[derive(Serialize, ToSchema)]
pub struct Readiness {
    /// `ready`, `loading` or `shutting_down`.
    pub status: &'static str,
    /// The models served (when ready).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
}

/// Readiness.
///
/// 200 once start-up finished (and until shutdown starts), 503 otherwise.
#[utoipa::path(
    get,
    operation_id = "ready",
    path = "/ready",
    tag = "Operations",
    responses(
        (status = 200, description = "Ready, with the models served", body = Readiness),
        (status = 503, description = "`loading` or `shutting_down`", body = Readiness),
    )
)]
pub async fn ready(State(state): State<SharedState>) -> Response {
    if state.is_ready() {
        let models: Vec<String> = state
            .loaded()
            .map(|l| {
                l.gateway
                    .models()
                    .into_iter()
                    .map(|(m, _)| m.name)
                    .collect()
            })
            .unwrap_or_default();
        (
            StatusCode::OK,
            Json(Readiness {
                status: "ready",
                models: Some(models),
            }),
        )
            .into_response()
    } else {
        let status = if state.loaded.get().is_some() {
            "shutting_down"
        } else {
            "loading"
        };
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Readiness {
                status,
                models: None,
            }),
        )
            .into_response()
    }
}

/// Prometheus metrics.
///
/// Requests, tokens, latencies, engines' batches and KV cache, upstreams'
/// health and load, prefix cache queries and hits.
#[utoipa::path(
    get,
    operation_id = "metrics",
    path = "/metrics",
    tag = "Operations",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4", content_type = "text/plain", body = String))
)]
pub async fn metrics(State(state): State<SharedState>) -> Response {
    let (engines, upstreams) = match state.loaded.get() {
        Some(l) => (
            l.locals
                .iter()
                .map(|m| EngineGauges {
                    model: m.handle.id.clone(),
                    stats: m.handle.service.stats(),
                    block_size: m.handle.service.info().config.block_size,
                })
                .collect(),
            l.gateway
                .upstreams()
                .iter()
                .map(|u| UpstreamGauges {
                    id: u.id.clone(),
                    in_flight: u.stats.in_flight(),
                    breaker: u.breaker.state().gauge(),
                    ttft_ewma: u.stats.ttft_s(),
                    tok_s_ewma: u.stats.tok_s(),
                })
                .collect(),
        ),
        None => (Vec::new(), Vec::new()),
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        {
            let mut text = state
                .metrics
                .render(&engines, &upstreams, state.metrics_names);
            if let Some(c) = &state.response_cache {
                text.push_str(&response_cache_metrics(c));
            }
            text
        },
    )
        .into_response()
}

/// The response cache's counters in Prometheus text format.
fn response_cache_metrics(c: &crate::response_cache::ResponseCache) -> String {
    use std::sync::atomic::Ordering;
    let (entries, bytes) = c.size();
    format!(
        "# HELP tandem_response_cache_hits_total Deterministic requests answered from the response cache.\n\
         # TYPE tandem_response_cache_hits_total counter\n\
         tandem_response_cache_hits_total {}\n\
         # HELP tandem_response_cache_misses_total Deterministic requests not found in the response cache.\n\
         # TYPE tandem_response_cache_misses_total counter\n\
         tandem_response_cache_misses_total {}\n\
         # HELP tandem_response_cache_entries Answers in the response cache.\n\
         # TYPE tandem_response_cache_entries gauge\n\
         tandem_response_cache_entries {entries}\n\
         # HELP tandem_response_cache_bytes Bytes held by the response cache.\n\
         # TYPE tandem_response_cache_bytes gauge\n\
         tandem_response_cache_bytes {bytes}\n",
        c.counters.hits.load(Ordering::Relaxed),
        c.counters.misses.load(Ordering::Relaxed),
    )
}
