//! `GET /admin/v1/upstreams`: each upstream's live health, breaker, load and measurements.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::List;
use crate::api::openapi::errors::AdminUpstreamErrors;
use crate::errors::ApiError;
use crate::state::SharedState;

/// One upstream as the admin API shows it.
#[derive(Serialize, ToSchema)]
pub struct UpstreamView {
    /// Its id.
    pub id: String,
    /// `local`, `openai`, ...
    pub kind: &'static str,
    /// The models it serves.
    pub models: Vec<String>,
    /// Whether the gateway routes to it now (its breaker is not open).
    pub healthy: bool,
    /// `closed`, `half_open` or `open`.
    pub breaker: &'static str,
    /// Requests the gateway has running there.
    pub in_flight: usize,
    /// The most it may run at once, when configured.
    pub max_concurrency: Option<usize>,
    /// The load it reports itself, when it does.
    pub self_load: Option<LoadView>,
    /// Measured time to the first token, seconds.
    pub measured_ttft_s: Option<f64>,
    /// Measured decode speed per request, tokens per second.
    pub measured_tok_s: Option<f64>,
    /// Its cost model.
    pub cost: CostView,
}

/// Work an upstream reports itself.
#[derive(Serialize, ToSchema)]
pub struct LoadView {
    /// Requests running.
    pub running: usize,
    /// Requests waiting.
    pub waiting: usize,
}

/// An upstream's prices, USD.
#[derive(Serialize, ToSchema)]
pub struct CostView {
    /// Per million prompt tokens.
    pub input_per_1m: f64,
    /// Per million generated tokens.
    pub output_per_1m: f64,
    /// Per hour of the machine.
    pub per_hour: f64,
}

/// Lists the upstreams.
///
/// Each with its live health, breaker state, load, measured speeds and cost model.
#[utoipa::path(
    get,
    operation_id = "listUpstreams",
    path = "/admin/v1/upstreams",
    tag = "Admin",
    responses(
        (status = 200, description = "The upstreams", body = List<UpstreamView>),
        AdminUpstreamErrors,
    ),
    security(("admin_key" = []))
)]
pub async fn list(State(state): State<SharedState>) -> Result<Json<List<UpstreamView>>, ApiError> {
    let gateway = &state.loaded()?.gateway;
    let data = gateway
        .upstreams()
        .iter()
        .map(|u| {
            let (measured_ttft_s, measured_tok_s) = u.stats.measured();
            let c = &u.settings.cost;
            UpstreamView {
                id: u.id.clone(),
                kind: u.upstream.kind(),
                models: u.upstream.models().iter().map(|m| m.name.clone()).collect(),
                healthy: u.breaker.is_routable(),
                breaker: u.breaker.state().name(),
                in_flight: u.stats.in_flight(),
                max_concurrency: u.settings.max_concurrency,
                self_load: u.upstream.self_load().map(|l| LoadView {
                    running: l.running,
                    waiting: l.waiting,
                }),
                measured_ttft_s,
                measured_tok_s,
                cost: CostView {
                    input_per_1m: c.input_per_1m,
                    output_per_1m: c.output_per_1m,
                    per_hour: c.per_hour,
                },
            }
        })
        .collect();
    Ok(Json(List {
        object: "list",
        data,
    }))
}
