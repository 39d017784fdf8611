//! `GET /admin/v1/usage` (grouped sums as JSON or CSV) and `GET /admin/v1/invoices/{tenant}/{YYYY-MM}`
//! (JSON, or a printable HTML page with `?format=html`).

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{accounting, store_error};
use crate::api::openapi::errors::AdminQueryErrors;
use crate::errors::ApiError;
use crate::state::SharedState;
use crate::store::ledger::{GroupBy, UsageFilter, UsageGroup, days_from_civil, month_range};

/// The query of `GET /admin/v1/usage`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UsageQuery {
    /// Only this tenant.
    pub tenant: Option<String>,
    /// First day (`YYYY-MM-DD`, UTC) or Unix milliseconds.
    pub from: Option<String>,
    /// Last day, included (`YYYY-MM-DD`), or Unix milliseconds (excluded).
    pub to: Option<String>,
    /// `day` (default), `model`, `upstream`, `route` or `tenant`.
    pub group_by: Option<GroupBy>,
    /// `json` (default) or `csv`.
    pub format: Option<String>,
}

/// A `YYYY-MM-DD` day's start in Unix milliseconds.
fn parse_day(s: &str) -> Option<i64> {
    let mut it = s.splitn(3, '-');
    let y: i64 = it.next()?.parse().ok()?;
    let m: u32 = it.next()?.parse().ok()?;
    let d: u32 = it.next()?.parse().ok()?;
    ((1..=12).contains(&m) && (1..=31).contains(&d)).then(|| days_from_civil(y, m, d) * 86_400_000)
}

/// A bound: a day, or Unix milliseconds; `end` moves a day to the next day's start.
fn bound(param: &str, s: &str, end: bool) -> Result<i64, ApiError> {
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    parse_day(s)
        .map(|d| if end { d + 86_400_000 } else { d })
        .ok_or_else(|| {
            ApiError::bad_param(
                param,
                format!("{param} must be YYYY-MM-DD or Unix milliseconds, got {s:?}."),
            )
        })
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// A usage report as JSON.
#[derive(Debug, Serialize, ToSchema)]
pub struct UsageReport {
    /// Always `usage.report`.
    pub object: &'static str,
    /// The tenant it is limited to (none: every tenant).
    pub tenant: Option<String>,
    /// From (Unix milliseconds, inclusive), if bounded.
    pub from_ms: Option<i64>,
    /// To (Unix milliseconds, exclusive), if bounded.
    pub to_ms: Option<i64>,
    /// How the rows are grouped.
    pub group_by: GroupBy,
    /// One row per group.
    pub data: Vec<UsageGroup>,
}

/// Groups as CSV with a header line.
pub fn to_csv(groups: &[UsageGroup]) -> String {
    let mut out = String::from(
        "group,requests,errors,prompt_tokens,completion_tokens,cached_tokens,cost_usd,savings_usd\n",
    );
    for g in groups {
        out.push_str(&format!(
            "{},{},{},{},{},{},{:.6},{:.6}\n",
            csv_field(&g.group),
            g.requests,
            g.errors,
            g.prompt_tokens,
            g.completion_tokens,
            g.cached_tokens,
            g.cost_usd,
            g.savings_usd
        ));
    }
    out
}

/// Reports usage.
///
/// Usage summed by day, model, upstream, route or tenant, as JSON or CSV.
#[utoipa::path(
    get,
    operation_id = "getUsage",
    path = "/admin/v1/usage",
    tag = "Admin",
    params(UsageQuery),
    responses(
        (status = 200, description = "The report", content(
            (UsageReport = "application/json"),
            (String = "text/csv"),
        )),
        AdminQueryErrors,
    ),
    security(("admin_key" = []))
)]
pub async fn usage(
    State(state): State<SharedState>,
    Query(q): Query<UsageQuery>,
) -> Result<Response, ApiError> {
    report(&state, q).await
}

/// The usage report `q` asks for (every tenant's, or `q.tenant`'s), as JSON or CSV.
pub async fn report(state: &SharedState, q: UsageQuery) -> Result<Response, ApiError> {
    let acc = accounting(state)?;
    let filter = UsageFilter {
        tenant: q.tenant.clone(),
        from_ms: q
            .from
            .as_deref()
            .map(|s| bound("from", s, false))
            .transpose()?,
        to_ms: q.to.as_deref().map(|s| bound("to", s, true)).transpose()?,
        route: None,
    };
    let by = q.group_by.unwrap_or(GroupBy::Day);
    // Reports include every request this replica has queued for the ledger.
    acc.ledger.flush().await;
    let groups = acc
        .store
        .usage_groups(&filter, by)
        .await
        .map_err(store_error)?;
    match q.format.as_deref().unwrap_or("json") {
        "json" => Ok(axum::Json(UsageReport {
            object: "usage.report",
            tenant: q.tenant,
            from_ms: filter.from_ms,
            to_ms: filter.to_ms,
            group_by: by,
            data: groups,
        })
        .into_response()),
        "csv" => Ok((
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            to_csv(&groups),
        )
            .into_response()),
        other => Err(ApiError::bad_param(
            "format",
            format!("format is json or csv, got {other:?}."),
        )),
    }
}

/// One line of an invoice.
#[derive(Debug, Serialize, ToSchema)]
pub struct InvoiceLine {
    /// The model.
    pub model: String,
    /// Requests served by the server.
    pub requests: i64,
    /// Prompt tokens.
    pub prompt_tokens: i64,
    /// Generated tokens.
    pub completion_tokens: i64,
    /// Cost, USD.
    pub cost_usd: f64,
}

/// A tenant's invoice for a month.
#[derive(Debug, Serialize, ToSchema)]
pub struct Invoice {
    /// `invoice`.
    pub object: &'static str,
    /// The tenant.
    pub tenant: String,
    /// Its name.
    pub name: String,
    /// Its tier.
    pub tier: String,
    /// `YYYY-MM`.
    pub period: String,
    /// Unix milliseconds, inclusive.
    pub from_ms: i64,
    /// Unix milliseconds, exclusive.
    pub to_ms: i64,
    /// Server usage by model.
    pub lines: Vec<InvoiceLine>,
    /// What the server usage cost, USD.
    pub total_usd: f64,
    /// Requests served in users' browsers.
    pub browser_requests: i64,
    /// Tokens served in users' browsers.
    pub browser_tokens: i64,
    /// What those would have cost on the server, USD.
    pub savings_usd: f64,
}

/// The query of the invoice endpoint.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InvoiceQuery {
    /// `json` (default) or `html`.
    pub format: Option<String>,
}

/// A tenant's monthly invoice.
///
/// A tenant's invoice for a month: server usage by model, and what its users' browsers served
/// for free.
#[utoipa::path(
    get,
    operation_id = "getInvoice",
    path = "/admin/v1/invoices/{tenant}/{period}",
    tag = "Admin",
    params(
        ("tenant" = String, Path, description = "The tenant's id"),
        ("period" = String, Path, description = "The month, `YYYY-MM` (UTC)"),
        InvoiceQuery,
    ),
    responses(
        (status = 200, description = "The invoice", content(
            (Invoice = "application/json"),
            (String = "text/html"),
        )),
        AdminQueryErrors,
    ),
    security(("admin_key" = []))
)]
pub async fn invoice(
    State(state): State<SharedState>,
    Path((tenant, period)): Path<(String, String)>,
    Query(q): Query<InvoiceQuery>,
) -> Result<Response, ApiError> {
    let acc = accounting(&state)?;
    let (y, m) = period
        .split_once('-')
        .and_then(|(y, m)| Some((y.parse::<i64>().ok()?, m.parse::<u32>().ok()?)))
        .filter(|(_, m)| (1..=12).contains(m))
        .ok_or_else(|| {
            ApiError::bad_param("period", format!("The period is YYYY-MM, got {period:?}."))
        })?;
    acc.ledger.flush().await;
    // Deleted tenants still get invoices: look in the ledger even when the tenant is gone.
    let t = acc.store.tenant(&tenant).await.map_err(store_error)?;
    let (from_ms, to_ms) = month_range(y, m);
    let filter = UsageFilter {
        tenant: Some(tenant.clone()),
        from_ms: Some(from_ms),
        to_ms: Some(to_ms),
        route: None,
    };
    let routes = acc
        .store
        .usage_groups(&filter, GroupBy::Route)
        .await
        .map_err(store_error)?;
    if t.is_none() && routes.is_empty() {
        return Err(ApiError::not_found(format!("No tenant {tenant:?}.")));
    }
    let server_only = UsageFilter {
        route: Some("server".into()),
        ..filter.clone()
    };
    let by_model = acc
        .store
        .usage_groups(&server_only, GroupBy::Model)
        .await
        .map_err(store_error)?;
    let browser = routes.iter().find(|g| g.group == "browser");
    let inv = Invoice {
        object: "invoice",
        name: t
            .as_ref()
            .map_or_else(|| tenant.clone(), |t| t.name.clone()),
        tier: t.as_ref().map(|t| t.tier.clone()).unwrap_or_default(),
        tenant,
        period: format!("{y:04}-{m:02}"),
        from_ms,
        to_ms,
        total_usd: by_model.iter().map(|g| g.cost_usd).sum(),
        lines: by_model
            .into_iter()
            .map(|g| InvoiceLine {
                model: g.group,
                requests: g.requests,
                prompt_tokens: g.prompt_tokens,
                completion_tokens: g.completion_tokens,
                cost_usd: g.cost_usd,
            })
            .collect(),
        browser_requests: browser.map_or(0, |g| g.requests),
        browser_tokens: browser.map_or(0, |g| g.prompt_tokens + g.completion_tokens),
        savings_usd: browser.map_or(0.0, |g| g.savings_usd),
    };
    match q.format.as_deref().unwrap_or("json") {
        "json" => Ok(axum::Json(inv).into_response()),
        "html" => Ok((
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            invoice_html(&inv),
        )
            .into_response()),
        other => Err(ApiError::bad_param(
            "format",
            format!("format is json or html, got {other:?}."),
        )),
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A printable invoice page.
pub fn invoice_html(inv: &Invoice) -> String {
    let rows: String = inv
        .lines
        .iter()
        .map(|l| {
            format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>${:.4}</td></tr>",
                escape(&l.model),
                l.requests,
                l.prompt_tokens,
                l.completion_tokens,
                l.cost_usd
            )
        })
        .collect();
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Invoice {period} · {name}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; max-width: 48rem; margin: 2rem auto; color: #111; }}
table {{ width: 100%; border-collapse: collapse; margin: 1rem 0; }}
th, td {{ text-align: right; padding: .4rem .6rem; border-bottom: 1px solid #ddd; }}
th:first-child, td:first-child {{ text-align: left; }}
tfoot td {{ font-weight: 600; border-top: 2px solid #111; }}
.savings {{ background: #eef8ee; padding: .8rem 1rem; border-radius: 6px; }}
@media print {{ body {{ margin: 0; }} }}
</style></head><body>
<h1>Invoice {period}</h1>
<p><strong>{name}</strong> ({tenant}) · tier {tier}</p>
<table><thead><tr><th>Model</th><th>Requests</th><th>Prompt tokens</th><th>Completion tokens</th><th>Cost</th></tr></thead>
<tbody>{rows}</tbody>
<tfoot><tr><td>Total</td><td></td><td></td><td></td><td>${total:.4}</td></tr></tfoot></table>
<p class="savings">Served in your users' browsers: {breq} requests, {btok} tokens, worth ${savings:.4} at server prices, not charged.</p>
</body></html>
"#,
        period = escape(&inv.period),
        name = escape(&inv.name),
        tenant = escape(&inv.tenant),
        tier = escape(&inv.tier),
        total = inv.total_usd,
        breq = inv.browser_requests,
        btok = inv.browser_tokens,
        savings = inv.savings_usd,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_csv() {
        assert_eq!(parse_day("1970-01-02"), Some(86_400_000));
        assert_eq!(parse_day("2026-13-01"), None);
        assert_eq!(bound("to", "1970-01-01", true).unwrap(), 86_400_000);
        assert_eq!(bound("from", "123", false).unwrap(), 123);
        assert!(bound("from", "yesterday", false).is_err());
        let csv = to_csv(&[UsageGroup {
            group: "a,b".into(),
            requests: 2,
            ..UsageGroup::default()
        }]);
        assert!(csv.lines().nth(1).unwrap().starts_with("\"a,b\",2,0,"));
    }
}
