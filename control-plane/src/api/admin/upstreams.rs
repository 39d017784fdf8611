//! `GET /admin/v1/upstreams`: each upstream's live health, breaker, load and measurements.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::errors::ApiError;
use crate::state::SharedState;

/// Handles the request.
pub async fn list(State(state): State<SharedState>) -> Result<Json<Value>, ApiError> {
    let gateway = &state.loaded()?.gateway;
    let data: Vec<Value> = gateway
        .upstreams()
        .iter()
        .map(|u| {
            let (ttft_s, tok_s) = u.stats.measured();
            let breaker = u.breaker.state();
            let c = &u.settings.cost;
            json!({
                "id": u.id,
                "kind": u.upstream.kind(),
                "models": u.upstream.models().iter().map(|m| m.name.clone()).collect::<Vec<_>>(),
                "healthy": u.breaker.is_routable(),
                "breaker": breaker.name(),
                "in_flight": u.stats.in_flight(),
                "max_concurrency": u.settings.max_concurrency,
                "self_load": u.upstream.self_load().map(|l| json!({"running": l.running, "waiting": l.waiting})),
                "measured_ttft_s": ttft_s,
                "measured_tok_s": tok_s,
                "cost": {"input_per_1m": c.input_per_1m, "output_per_1m": c.output_per_1m, "per_hour": c.per_hour},
            })
        })
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}
