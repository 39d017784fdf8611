//! `POST /v1/usage/browser`: the npm package reports tokens a user's browser generated. The
//! ledger books them at no cost, with what the server would have charged as savings.
//! `GET /v1/usage`: a tenant's own usage report (as the admin's, never another tenant's).

use axum::Extension;
use axum::Json;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::json::JsonBody;
use crate::api::admin::reports::{UsageQuery, UsageReport};
use crate::api::openapi::errors::UsageErrors;
use crate::errors::ApiError;
use crate::gateway::router::{Prior, price};
use crate::state::SharedState;
use crate::store::ledger::UsageRecord;
use crate::store::now_ms;
use crate::tenants::Caller;

/// Most tokens one report may carry.
pub const MAX_REPORTED_TOKENS: u64 = 1 << 24;

/// A browser's report.
#[derive(Debug, Deserialize, ToSchema)]
pub struct BrowserUsage {
    /// The model's public name.
    pub model: String,
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Generated tokens.
    pub completion_tokens: u64,
    /// Prompt tokens reused from the browser's cache.
    #[serde(default)]
    pub cached_tokens: u64,
    /// `browser`.
    #[serde(default)]
    pub route: Option<String>,
    /// `webgpu` or `cpu`.
    #[serde(default)]
    pub path: Option<String>,
    /// How long it took in the browser, milliseconds.
    #[serde(default)]
    pub duration_ms: Option<u64>,
    /// Time to the first token in the browser, milliseconds.
    #[serde(default)]
    pub ttft_ms: Option<u64>,
}

/// What `POST /v1/usage/browser` answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct BrowserUsageRecorded {
    /// Always `usage.record`.
    pub object: &'static str,
    /// The ledger record's id.
    pub id: String,
    /// What the cheapest server upstream would have charged, USD.
    pub savings_usd: f64,
}

/// Reports the caller's usage.
///
/// The caller's own usage (its tenant's), grouped, as JSON or CSV: the admin report limited to
/// one tenant (whatever `tenant` the query names).
#[utoipa::path(
    get,
    operation_id = "getOwnUsage",
    path = "/v1/usage",
    tag = "Tandem",
    params(UsageQuery),
    responses(
        (status = 200, description = "The report", content(
            (UsageReport = "application/json"),
            (String = "text/csv"),
        )),
        UsageErrors,
    ),
    security(("api_key" = []))
)]
pub async fn report(
    State(state): State<SharedState>,
    caller: Option<Extension<Caller>>,
    Query(mut q): Query<UsageQuery>,
) -> Result<Response, ApiError> {
    let Some(Extension(caller)) = caller else {
        return Err(ApiError::not_found(
            "This server has no tenants: usage is reported per tenant, to its API keys.",
        ));
    };
    q.tenant = Some(caller.tenant);
    crate::api::admin::reports::report(&state, q).await
}

/// Reports usage served in a browser.
///
/// Reports tokens a user's browser generated: booked in the ledger at no cost, with what the
/// server would have charged as savings.
#[utoipa::path(
    post,
    operation_id = "reportBrowserUsage",
    path = "/v1/usage/browser",
    tag = "Tandem",
    request_body = BrowserUsage,
    responses(
        (status = 200, description = "The record written", body = BrowserUsageRecorded),
        UsageErrors,
    ),
    security((), ("api_key" = []))
)]
pub async fn browser(
    State(state): State<SharedState>,
    caller: Option<Extension<Caller>>,
    JsonBody(report): JsonBody<BrowserUsage>,
) -> Result<Json<BrowserUsageRecorded>, ApiError> {
    let Some(acc) = &state.accounting else {
        return Err(ApiError::not_found("This server keeps no usage ledger."));
    };
    if report.route.as_deref().is_some_and(|r| r != "browser") {
        return Err(ApiError::bad_param(
            "route",
            "Only browser usage is reported here.",
        ));
    }
    if report.prompt_tokens > MAX_REPORTED_TOKENS
        || report.completion_tokens > MAX_REPORTED_TOKENS
        || report.cached_tokens > report.prompt_tokens
    {
        return Err(ApiError::bad_request(format!(
            "Token counts must be at most {MAX_REPORTED_TOKENS}, cached tokens at most the prompt's."
        )));
    }
    let gateway = &state.loaded()?.gateway;
    if !gateway.serves(&report.model) {
        return Err(ApiError::model_not_found(&report.model));
    }
    if let Some(Extension(c)) = &caller
        && !c.plan.allows_model(&report.model)
    {
        return Err(ApiError::model_not_found(&report.model));
    }
    // What the cheapest server upstream would have charged.
    let candidates = gateway.candidates(&report.model);
    let prior = Prior::of(&candidates);
    let (p, c) = (
        report.prompt_tokens as usize,
        report.completion_tokens as usize,
    );
    let savings = candidates
        .iter()
        .map(|cand| price(&cand.upstream, p, c, prior))
        .fold(f64::INFINITY, f64::min);
    let savings = if savings.is_finite() { savings } else { 0.0 };
    let now = now_ms();
    let duration = report
        .duration_ms
        .map(|d| i64::try_from(d).unwrap_or(i64::MAX));
    let record = UsageRecord {
        request_id: crate::util::request_id("req_"),
        tenant_id: caller.as_ref().map(|c| c.tenant.clone()),
        key_id: caller.as_ref().map(|c| c.key_id.clone()),
        endpoint: "browser".into(),
        model: report.model.clone(),
        upstream: report.path.clone().map(|p| format!("browser-{p}")),
        route: "browser".into(),
        prompt_tokens: report.prompt_tokens as i64,
        completion_tokens: report.completion_tokens as i64,
        cached_tokens: report.cached_tokens as i64,
        cost_usd: 0.0,
        savings_usd: savings,
        ttft_ms: report.ttft_ms.map(|t| i64::try_from(t).unwrap_or(i64::MAX)),
        latency_ms: duration,
        status: "completed".into(),
        http_status: 200,
        started_at: now - duration.unwrap_or(0),
        finished_at: Some(now),
        ..UsageRecord::default()
    };
    let id = record.request_id.clone();
    acc.ledger.record_durably(record).await;
    Ok(Json(BrowserUsageRecorded {
        object: "usage.record",
        id,
        savings_usd: savings,
    }))
}
