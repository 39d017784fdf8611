//! `POST /v1/route`: should a browser run this request itself, or send it to the server? The
//! browser sends its capability report; the answer weighs its ability to run one of the model's
//! browser variants against the best server upstream's estimate, under the model's policy.

use axum::extract::State;
use axum::{Extension, Json};

use super::json::JsonBody;
use crate::api::openapi::errors::RouteErrors;
use crate::errors::ApiError;
use crate::gateway::browser_route::{self, BrowserVariant, RouteAnswer, RouteRequest};
use crate::gateway::router::{self, Needs};
use crate::state::SharedState;
use crate::tenants::Caller;

/// Decides where a request runs.
///
/// Decides where a request should run: in the browser that sends its capability report, or on
/// the server. The npm package asks this before each request under the `auto` policy.
#[utoipa::path(
    post,
    operation_id = "routeRequest",
    path = "/v1/route",
    tag = "Tandem",
    request_body = RouteRequest,
    responses(
        (status = 200, description = "Where to run the request, with the variant to run and the estimates compared", body = RouteAnswer),
        RouteErrors,
    ),
    security((), ("api_key" = []))
)]
pub async fn handle(
    State(state): State<SharedState>,
    caller: Option<Extension<Caller>>,
    JsonBody(req): JsonBody<RouteRequest>,
) -> Result<Json<RouteAnswer>, ApiError> {
    let gateway = &state.loaded()?.gateway;
    let name = match req.model.as_deref().filter(|m| !m.is_empty()) {
        Some(m) => m.to_owned(),
        None => gateway
            .default_model()
            .ok_or_else(|| ApiError::unavailable("No upstream serves any model yet."))?,
    };
    let candidates = gateway.candidates(&name);
    let plan = caller.map(|Extension(c)| c.plan);
    if candidates.is_empty() || plan.as_ref().is_some_and(|p| !p.allows_model(&name)) {
        return Err(ApiError::model_not_found(&name));
    }
    let prompt = usize::try_from(req.prompt_tokens).unwrap_or(usize::MAX);
    let needs = Needs {
        prompt_tokens: prompt,
        prompt_tokens_bound: prompt,
        max_tokens: Some(req.max_tokens),
        ..Needs::default()
    };
    // The server's estimate: the best candidate under the model's policy (healthy ones first).
    let policy = plan
        .as_ref()
        .and_then(|p| p.policy)
        .unwrap_or_else(|| gateway.policy(&name));
    let browser_allowed = plan
        .as_ref()
        .is_none_or(|p| p.browser_routing != Some(false));
    let mut rng = 0usize;
    let best = router::plan(candidates.clone(), &needs, policy, None, &mut |n| {
        rng += 1;
        rng % n
    })
    .ok()
    .and_then(|p| p.order.into_iter().next())
    .unwrap_or_else(|| candidates[0].clone());
    let e = router::estimate(&best, &needs, router::Prior::of(&candidates));
    let server = browser_route::Estimate {
        ttft_ms: e.ttft_s * 1e3,
        tok_s: e.tok_s,
        cost_usd: e.cost_usd,
    };
    let variants: Vec<BrowserVariant> = candidates
        .iter()
        .flat_map(|c| c.model().browser_variants.clone())
        .map(|v| BrowserVariant {
            max_tensor_bytes: v.max_tensor_bytes.unwrap_or(v.bytes),
            url: v.url,
            sha256: v.sha256,
            bytes: v.bytes,
            quantization: v.quantization,
            required_features: v.required_features,
            memory_bytes: v.memory_bytes,
        })
        .collect();
    let ttft_target_ms = plan
        .as_ref()
        .and_then(|p| p.ttft_target_ms)
        .map_or(browser_route::DEFAULT_TTFT_TARGET_MS, |t| t as f64);
    let mut answer = browser_route::decide_with_target(
        &req,
        if browser_allowed { &variants } else { &[] },
        server,
        policy,
        ttft_target_ms,
    );
    if !browser_allowed {
        answer.reasons.insert(0, "tier_disallows_browser".into());
    }
    state
        .metrics
        .route_decision(answer.route.as_str(), &answer.reasons);
    Ok(Json(answer))
}
