//! `/admin/v1/tiers`, `/admin/v1/tenants`, their keys and `/admin/v1/keys/{id}`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::bodies::{KeyCreate, TenantCreate, TenantPatch, TierCreate};
use super::{Deleted, List, accounting, check_id, list, merge_patch, object, store_error};
use crate::api::json::JsonBody;
use crate::api::openapi::errors::{AdminReadErrors, AdminWriteErrors};
use crate::errors::ApiError;
use crate::state::SharedState;
use crate::tenants::keys;
use crate::tenants::model::{ApiKeyInfo, KeyLimits, Plan, Tenant, Tier};

type Answer = Result<(StatusCode, Json<Value>), ApiError>;

fn ok(v: Value) -> Answer {
    Ok((StatusCode::OK, Json(v)))
}

fn plan_from(map: serde_json::Map<String, Value>) -> Result<Plan, ApiError> {
    let plan: Plan = serde_json::from_value(Value::Object(map))
        .map_err(|e| ApiError::bad_request(format!("Invalid plan: {e}")))?;
    plan.validate().map_err(ApiError::bad_request)?;
    Ok(plan)
}

/// Removes `field` from `map`: its string; `None` when absent (or `null`, with `null_absent`);
/// a 400 naming the field when it holds anything else.
fn take_string(
    map: &mut serde_json::Map<String, Value>,
    field: &str,
    null_absent: bool,
) -> Result<Option<String>, ApiError> {
    match map.remove(field) {
        Some(Value::String(s)) => Ok(Some(s)),
        None => Ok(None),
        Some(Value::Null) if null_absent => Ok(None),
        Some(_) => Err(ApiError::bad_param(
            field,
            format!("{field} must be a string."),
        )),
    }
}

fn to_value<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

async fn reload(state: &SharedState) -> Result<(), ApiError> {
    accounting(state)?
        .tenants
        .refresh()
        .await
        .map_err(store_error)
}

/// Lists the tiers.
#[utoipa::path(
    get,
    operation_id = "listTiers",
    path = "/admin/v1/tiers",
    tag = "Admin",
    responses(
        (status = 200, description = "The tiers", body = List<Tier>),
        AdminReadErrors,
    ),
    security(("admin_key" = []))
)]
pub async fn list_tiers(State(state): State<SharedState>) -> Answer {
    let tiers = accounting(&state)?
        .store
        .tiers()
        .await
        .map_err(store_error)?;
    ok(list(&tiers))
}

/// Creates a tier.
///
/// Its id and what it allows.
#[utoipa::path(
    post,
    operation_id = "createTier",
    path = "/admin/v1/tiers",
    tag = "Admin",
    request_body = TierCreate,
    responses(
        (status = 201, description = "The tier", body = Tier),
        AdminWriteErrors,
    ),
    security(("admin_key" = []))
)]
pub async fn create_tier(
    State(state): State<SharedState>,
    JsonBody(body): JsonBody<Value>,
) -> Answer {
    let acc = accounting(&state)?;
    let mut map = object(body)?;
    let Ok(Some(id)) = take_string(&mut map, "id", false) else {
        return Err(ApiError::bad_param("id", "A tier needs an id (a string)."));
    };
    check_id("tier", &id)?;
    let plan = plan_from(map)?;
    if !acc
        .store
        .create_tier(&id, &plan)
        .await
        .map_err(store_error)?
    {
        return Err(ApiError::conflict(format!("The tier {id:?} exists.")));
    }
    reload(&state).await?;
    let tier = acc.store.tier(&id).await.map_err(store_error)?;
    Ok((StatusCode::CREATED, Json(to_value(&tier))))
}

/// Describes a tier.
#[utoipa::path(
    get,
    operation_id = "getTier",
    path = "/admin/v1/tiers/{id}",
    tag = "Admin",
    params(("id" = String, Path, description = "The tier's id")),
    responses(
        (status = 200, description = "The tier", body = Tier),
        AdminReadErrors,
    ),
    security(("admin_key" = []))
)]
pub async fn get_tier(State(state): State<SharedState>, Path(id): Path<String>) -> Answer {
    match accounting(&state)?
        .store
        .tier(&id)
        .await
        .map_err(store_error)?
    {
        Some(t) => ok(to_value(&t)),
        None => Err(ApiError::not_found(format!("No tier {id:?}."))),
    }
}

/// Changes a tier.
///
/// A JSON merge patch of its plan (`null` removes a limit).
#[utoipa::path(
    patch,
    operation_id = "updateTier",
    path = "/admin/v1/tiers/{id}",
    tag = "Admin",
    params(("id" = String, Path, description = "The tier's id")),
    request_body = Plan,
    responses(
        (status = 200, description = "The tier", body = Tier),
        AdminWriteErrors,
    ),
    security(("admin_key" = []))
)]
pub async fn patch_tier(
    State(state): State<SharedState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Answer {
    let acc = accounting(&state)?;
    let Some(tier) = acc.store.tier(&id).await.map_err(store_error)? else {
        return Err(ApiError::not_found(format!("No tier {id:?}.")));
    };
    let mut patch = object(body)?;
    patch.remove("id");
    let mut current = object(to_value(&tier.plan))?;
    merge_patch(&mut current, patch);
    let plan = plan_from(current)?;
    acc.store
        .update_tier(&id, &plan)
        .await
        .map_err(store_error)?;
    reload(&state).await?;
    let tier = acc.store.tier(&id).await.map_err(store_error)?;
    ok(to_value(&tier))
}

/// Deletes a tier.
///
/// Deletes a tier no tenant was ever on.
#[utoipa::path(
    delete,
    operation_id = "deleteTier",
    path = "/admin/v1/tiers/{id}",
    tag = "Admin",
    params(("id" = String, Path, description = "The tier's id")),
    responses(
        (status = 200, description = "Deleted", body = Deleted),
        AdminWriteErrors,
    ),
    security(("admin_key" = []))
)]
pub async fn delete_tier(State(state): State<SharedState>, Path(id): Path<String>) -> Answer {
    let acc = accounting(&state)?;
    if acc.store.tier(&id).await.map_err(store_error)?.is_none() {
        return Err(ApiError::not_found(format!("No tier {id:?}.")));
    }
    if !acc.store.delete_tier(&id).await.map_err(store_error)? {
        return Err(ApiError::conflict(format!(
            "The tier {id:?} has (or had) tenants; move them to another tier first."
        )));
    }
    reload(&state).await?;
    ok(Deleted::of("tier", id))
}

/// A tenant as the admin API shows it: with its effective plan and this month's spending.
#[derive(Serialize, ToSchema)]
pub struct TenantView {
    /// The tenant.
    #[serde(flatten)]
    pub tenant: Tenant,
    /// Its tier's plan with its overrides applied (null while the server has not loaded it).
    pub plan: Option<Plan>,
    /// Spent this calendar month (UTC), USD.
    pub month_spent_usd: f64,
    /// Reserved by requests running now, USD.
    pub month_reserved_usd: f64,
}

/// A key just created: its listing and, this once, the key itself.
#[derive(Serialize, ToSchema)]
pub struct NewKey {
    /// The key as it is listed.
    #[serde(flatten)]
    pub info: ApiKeyInfo,
    /// The key (`Authorization: Bearer <key>`); never shown again.
    pub key: String,
}

/// A tenant with its effective plan and this month's spending.
async fn tenant_json(state: &SharedState, t: &Tenant) -> Value {
    let Ok(acc) = accounting(state) else {
        return to_value(t);
    };
    let (month_spent_usd, month_reserved_usd) = acc.budgets.current(&t.id).await;
    to_value(&TenantView {
        tenant: t.clone(),
        plan: acc.tenants.plan(&t.id),
        month_spent_usd,
        month_reserved_usd,
    })
}

/// Lists the tenants.
///
/// Lists the tenants, with their effective plans and this month's spending.
#[utoipa::path(
    get,
    operation_id = "listTenants",
    path = "/admin/v1/tenants",
    tag = "Admin",
    responses(
        (status = 200, description = "The tenants", body = List<TenantView>),
        AdminReadErrors,
    ),
    security(("admin_key" = []))
)]
pub async fn list_tenants(State(state): State<SharedState>) -> Answer {
    let tenants = accounting(&state)?
        .store
        .tenants()
        .await
        .map_err(store_error)?;
    let mut items = Vec::with_capacity(tenants.len());
    for t in &tenants {
        items.push(tenant_json(&state, t).await);
    }
    ok(list(&items))
}

/// Creates a tenant.
///
/// Creates a tenant on a tier, with optional overrides of the tier's plan.
#[utoipa::path(
    post,
    operation_id = "createTenant",
    path = "/admin/v1/tenants",
    tag = "Admin",
    request_body = TenantCreate,
    responses(
        (status = 201, description = "The tenant", body = TenantView),
        AdminWriteErrors,
    ),
    security(("admin_key" = []))
)]
pub async fn create_tenant(
    State(state): State<SharedState>,
    JsonBody(body): JsonBody<Value>,
) -> Answer {
    let acc = accounting(&state)?;
    let mut map = object(body)?;
    let id = take_string(&mut map, "id", true)?.unwrap_or_else(|| keys::new_id("ten_"));
    check_id("tenant", &id)?;
    let name = take_string(&mut map, "name", false)?.unwrap_or_else(|| id.clone());
    let Ok(Some(tier)) = take_string(&mut map, "tier", false) else {
        return Err(ApiError::bad_param(
            "tier",
            "A tenant needs a tier (its id).",
        ));
    };
    let overrides = match map.remove("overrides") {
        Some(Value::Object(o)) => plan_from(o)?,
        None | Some(Value::Null) => Plan::default(),
        _ => {
            return Err(ApiError::bad_param(
                "overrides",
                "overrides must be an object.",
            ));
        }
    };
    if let Some(k) = map.keys().next() {
        return Err(ApiError::bad_param(k, format!("Unknown field {k:?}.")));
    }
    if acc.store.tier(&tier).await.map_err(store_error)?.is_none() {
        return Err(ApiError::bad_param("tier", format!("No tier {tier:?}.")));
    }
    if !acc
        .store
        .create_tenant(&id, &name, &tier, &overrides)
        .await
        .map_err(store_error)?
    {
        return Err(ApiError::conflict(format!(
            "The tenant id {id:?} is taken."
        )));
    }
    reload(&state).await?;
    let t = acc.store.tenant(&id).await.map_err(store_error)?;
    let v = match t {
        Some(t) => tenant_json(&state, &t).await,
        None => Value::Null,
    };
    Ok((StatusCode::CREATED, Json(v)))
}

async fn live_tenant(state: &SharedState, id: &str) -> Result<Tenant, ApiError> {
    accounting(state)?
        .store
        .tenant(id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found(format!("No tenant {id:?}.")))
}

/// Describes a tenant.
///
/// Describes a tenant, with its effective plan and this month's spending.
#[utoipa::path(
    get,
    operation_id = "getTenant",
    path = "/admin/v1/tenants/{id}",
    tag = "Admin",
    params(("id" = String, Path, description = "The tenant's id")),
    responses(
        (status = 200, description = "The tenant", body = TenantView),
        AdminReadErrors,
    ),
    security(("admin_key" = []))
)]
pub async fn get_tenant(State(state): State<SharedState>, Path(id): Path<String>) -> Answer {
    let t = live_tenant(&state, &id).await?;
    ok(tenant_json(&state, &t).await)
}

/// Changes a tenant.
///
/// Its name, its tier, and a JSON merge patch of its overrides.
#[utoipa::path(
    patch,
    operation_id = "updateTenant",
    path = "/admin/v1/tenants/{id}",
    tag = "Admin",
    params(("id" = String, Path, description = "The tenant's id")),
    request_body = TenantPatch,
    responses(
        (status = 200, description = "The tenant", body = TenantView),
        AdminWriteErrors,
    ),
    security(("admin_key" = []))
)]
pub async fn patch_tenant(
    State(state): State<SharedState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<Value>,
) -> Answer {
    let acc = accounting(&state)?;
    let mut t = live_tenant(&state, &id).await?;
    let mut map = object(body)?;
    if let Some(name) = take_string(&mut map, "name", false)? {
        t.name = name;
    }
    if let Some(tier) = take_string(&mut map, "tier", false)? {
        if acc.store.tier(&tier).await.map_err(store_error)?.is_none() {
            return Err(ApiError::bad_param("tier", format!("No tier {tier:?}.")));
        }
        t.tier = tier;
    }
    match map.remove("overrides") {
        Some(Value::Object(patch)) => {
            let mut current = object(to_value(&t.overrides))?;
            merge_patch(&mut current, patch);
            t.overrides = plan_from(current)?;
        }
        Some(Value::Null) => t.overrides = Plan::default(),
        None => {}
        _ => {
            return Err(ApiError::bad_param(
                "overrides",
                "overrides must be an object.",
            ));
        }
    }
    map.remove("id");
    if let Some(k) = map.keys().next() {
        return Err(ApiError::bad_param(k, format!("Unknown field {k:?}.")));
    }
    acc.store.update_tenant(&t).await.map_err(store_error)?;
    reload(&state).await?;
    let t = live_tenant(&state, &id).await?;
    ok(tenant_json(&state, &t).await)
}

/// Deletes a tenant.
///
/// Its keys are revoked; its usage stays in the ledger.
#[utoipa::path(
    delete,
    operation_id = "deleteTenant",
    path = "/admin/v1/tenants/{id}",
    tag = "Admin",
    params(("id" = String, Path, description = "The tenant's id")),
    responses(
        (status = 200, description = "Deleted", body = Deleted),
        AdminWriteErrors,
    ),
    security(("admin_key" = []))
)]
pub async fn delete_tenant(State(state): State<SharedState>, Path(id): Path<String>) -> Answer {
    let acc = accounting(&state)?;
    if !acc.store.delete_tenant(&id).await.map_err(store_error)? {
        return Err(ApiError::not_found(format!("No tenant {id:?}.")));
    }
    reload(&state).await?;
    ok(Deleted::of("tenant", id))
}

/// Creates an API key.
///
/// Creates an API key for a tenant. The answer holds the key; it is never shown again.
#[utoipa::path(
    post,
    operation_id = "createKey",
    path = "/admin/v1/tenants/{id}/keys",
    tag = "Admin",
    params(("id" = String, Path, description = "The tenant's id")),
    request_body = KeyCreate,
    responses(
        (status = 201, description = "The key (with the secret, once)", body = NewKey),
        AdminWriteErrors,
    ),
    security(("admin_key" = []))
)]
pub async fn create_key(
    State(state): State<SharedState>,
    Path(tenant): Path<String>,
    body: axum::body::Bytes,
) -> Answer {
    let acc = accounting(&state)?;
    live_tenant(&state, &tenant).await?;
    let mut map = if body.iter().all(u8::is_ascii_whitespace) {
        serde_json::Map::new()
    } else {
        object(crate::api::json::parse(&body)?)?
    };
    let name = take_string(&mut map, "name", true)?.unwrap_or_default();
    let limits: KeyLimits = serde_json::from_value(Value::Object(map))
        .map_err(|e| ApiError::bad_request(format!("Invalid key limits: {e}")))?;
    if limits.requests_per_minute == Some(0) || limits.tokens_per_minute == Some(0) {
        return Err(ApiError::bad_request(
            "A per-minute limit must be at least 1 (leave it out for none).",
        ));
    }
    let (key, prefix, hash) = keys::generate();
    let id = keys::new_id("key_");
    let info = acc
        .store
        .create_key(&id, &tenant, &name, &prefix, &hash, &limits)
        .await
        .map_err(store_error)?;
    reload(&state).await?;
    Ok((StatusCode::CREATED, Json(to_value(&NewKey { info, key }))))
}

/// Lists a tenant's API keys.
///
/// Lists a tenant's keys (never the keys themselves).
#[utoipa::path(
    get,
    operation_id = "listKeys",
    path = "/admin/v1/tenants/{id}/keys",
    tag = "Admin",
    params(("id" = String, Path, description = "The tenant's id")),
    responses(
        (status = 200, description = "The keys", body = List<ApiKeyInfo>),
        AdminReadErrors,
    ),
    security(("admin_key" = []))
)]
pub async fn list_keys(State(state): State<SharedState>, Path(tenant): Path<String>) -> Answer {
    let acc = accounting(&state)?;
    live_tenant(&state, &tenant).await?;
    let keys: Vec<_> = acc
        .store
        .keys()
        .await
        .map_err(store_error)?
        .into_iter()
        .filter(|k| k.info.tenant == tenant)
        .map(|k| k.info)
        .collect();
    ok(list(&keys))
}

/// Revokes an API key.
#[utoipa::path(
    delete,
    operation_id = "revokeKey",
    path = "/admin/v1/keys/{id}",
    tag = "Admin",
    params(("id" = String, Path, description = "The key's id (`key_...`)")),
    responses(
        (status = 200, description = "Revoked", body = Deleted),
        AdminWriteErrors,
    ),
    security(("admin_key" = []))
)]
pub async fn revoke_key(State(state): State<SharedState>, Path(id): Path<String>) -> Answer {
    let acc = accounting(&state)?;
    if !acc.store.revoke_key(&id).await.map_err(store_error)? {
        return Err(ApiError::not_found(format!("No live key {id:?}.")));
    }
    reload(&state).await?;
    ok(Deleted::of("key", id))
}
