//! The admin API under `/admin/v1/`, behind the admin key: tiers, tenants and their keys,
//! upstream health, usage reports and invoices; and the admin page at `/admin/` on top of it.

pub mod bodies;
pub mod directory;
pub mod page;
pub mod reports;
pub mod upstreams;

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::accounting::Accounting;
use crate::errors::ApiError;
use crate::state::SharedState;
use crate::store::StoreError;

/// The accounting of a server with the admin API on.
fn accounting(state: &SharedState) -> Result<&Arc<Accounting>, ApiError> {
    state
        .accounting
        .as_ref()
        .ok_or_else(|| ApiError::not_found("The admin API is off."))
}

fn store_error(e: StoreError) -> ApiError {
    tracing::error!("admin: {e}");
    ApiError::internal(format!("database: {e}"))
}

/// A JSON object from a body, or 400.
fn object(v: Value) -> Result<Map<String, Value>, ApiError> {
    match v {
        Value::Object(m) => Ok(m),
        _ => Err(ApiError::bad_request("The body must be a JSON object.")),
    }
}

/// Applies a JSON merge patch (RFC 7396) of `patch` onto `target`: null removes a field.
fn merge_patch(target: &mut Map<String, Value>, patch: Map<String, Value>) {
    for (k, v) in patch {
        if v.is_null() {
            target.remove(&k);
        } else {
            target.insert(k, v);
        }
    }
}

/// Checks an id given by the admin: 1 to 64 of `[A-Za-z0-9_.-]`.
fn check_id(what: &str, id: &str) -> Result<(), ApiError> {
    let ok = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_param(
            "id",
            format!("A {what} id is 1 to 64 letters, digits, '_', '-' or '.', got {id:?}."),
        ))
    }
}

/// `{"object": "list", "data": [...]}`.
#[derive(Serialize, ToSchema)]
pub struct List<T> {
    /// Always `list`.
    pub object: &'static str,
    /// The items.
    pub data: Vec<T>,
}

/// What a `DELETE` answers.
#[derive(Serialize, ToSchema)]
pub struct Deleted {
    /// The object's id.
    pub id: String,
    /// `tier`, `tenant` or `key`.
    pub object: &'static str,
    /// Always true.
    pub deleted: bool,
}

impl Deleted {
    /// The answer for the `object` (a kind) with `id`.
    fn of(object: &'static str, id: String) -> Value {
        serde_json::to_value(Deleted {
            id,
            object,
            deleted: true,
        })
        .unwrap_or(Value::Null)
    }
}

/// `{"object": "list", "data": [...]}` as JSON.
fn list<T: Serialize>(items: &[T]) -> Value {
    serde_json::to_value(List {
        object: "list",
        data: items.iter().collect(),
    })
    .unwrap_or(Value::Null)
}
