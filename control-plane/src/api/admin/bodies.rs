//! The request bodies of the admin API as the OpenAPI document describes them. The handlers
//! read bodies field by field (to name the field at fault and to apply merge patches), so these
//! types describe what they accept; the tests send bodies checked against them.

use serde::Deserialize;
use utoipa::ToSchema;

use crate::tenants::model::{KeyLimits, Plan};

/// `POST /admin/v1/tiers`: the tier's id and its plan's fields.
#[derive(Deserialize, ToSchema)]
pub struct TierCreate {
    /// 1 to 64 of letters, digits, `_`, `-` and `.` (`free`, `pro`, ...).
    pub id: String,
    /// What it allows (every field optional: absent means no limit).
    #[serde(flatten)]
    pub plan: Plan,
}

/// `POST /admin/v1/tenants`.
#[derive(Deserialize, ToSchema)]
pub struct TenantCreate {
    /// Its id (generated, `ten_...`, when absent).
    pub id: Option<String>,
    /// Display name (its id when absent).
    pub name: Option<String>,
    /// Its tier's id.
    pub tier: String,
    /// What differs from the tier.
    pub overrides: Option<Plan>,
}

/// `PATCH /admin/v1/tenants/{id}`.
#[derive(Deserialize, ToSchema)]
pub struct TenantPatch {
    /// New display name.
    pub name: Option<String>,
    /// New tier.
    pub tier: Option<String>,
    /// A JSON merge patch of its overrides (`null` clears them all, a `null` field clears one).
    pub overrides: Option<Plan>,
}

/// `POST /admin/v1/tenants/{id}/keys` (the body may be empty).
#[derive(Deserialize, ToSchema)]
pub struct KeyCreate {
    /// A label.
    pub name: Option<String>,
    /// The key's own limits, on top of its tenant's.
    #[serde(flatten)]
    pub limits: KeyLimits,
}
