//! Liveness, readiness and metrics: `GET /health`, `GET /ready`, `GET /metrics`.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::server::SharedState;

/// The process is up and answering.
pub async fn health() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// 200 once every model is loaded (and until shutdown starts), 503 otherwise.
pub async fn ready(State(state): State<SharedState>) -> Response {
    if state.is_ready() {
        let ids: Vec<&str> = state
            .models()
            .map(|ms| ms.iter().map(|m| m.id.as_str()).collect())
            .unwrap_or_default();
        (
            StatusCode::OK,
            Json(json!({"status": "ready", "models": ids})),
        )
            .into_response()
    } else {
        let status = if state.models.get().is_some() {
            "shutting_down"
        } else {
            "loading"
        };
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": status})),
        )
            .into_response()
    }
}

/// Prometheus text exposition.
pub async fn metrics(State(state): State<SharedState>) -> Response {
    let engines: Vec<_> = state
        .models
        .get()
        .map(|ms| {
            ms.iter()
                .map(|m| (m.id.clone(), m.service.stats()))
                .collect()
        })
        .unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(&engines),
    )
        .into_response()
}
