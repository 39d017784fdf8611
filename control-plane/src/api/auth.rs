//! Authentication layers: `/v1/*` requires an API key once tenants exist (the caller is attached
//! to the request); `/admin/v1/*` requires the separate admin key.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::accounting::RequestTag;
use crate::errors::ApiError;
use crate::state::SharedState;

/// The token of an `Authorization: Bearer` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Requires an API key when tenants are configured; an open server lets everything through.
pub async fn require_key(
    State(state): State<SharedState>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(acc) = &state.accounting else {
        return next.run(req).await;
    };
    if !acc.tenants.enabled() {
        return next.run(req).await;
    }
    match acc.tenants.authenticate(bearer(req.headers())).await {
        Ok(caller) => {
            if let Some(tag) = req.extensions().get::<Arc<RequestTag>>() {
                tag.set_caller(&caller);
            }
            req.extensions_mut().insert(caller);
            next.run(req).await
        }
        Err(e) => ApiError::invalid_api_key(e.to_string()).into_response(),
    }
}

/// Requires the admin key; without one configured the admin API does not exist.
pub async fn require_admin(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    let Some(expected) = state
        .accounting
        .as_ref()
        .and_then(|a| a.admin_key.as_deref())
    else {
        return ApiError::not_found(
            "The admin API is off: start the server with --admin-key (or TANDEM_ADMIN_KEY).",
        )
        .into_response();
    };
    let given = bearer(req.headers()).unwrap_or_default();
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        next.run(req).await
    } else {
        ApiError::invalid_admin_key().into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_from_the_header() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "Bearer  abc ".parse().unwrap());
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "bearer ".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }
}
