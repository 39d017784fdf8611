//! The error answers each group of operations documents: every one an [`ErrorBody`] in OpenAI's
//! shape, with what its status means there.

use std::collections::BTreeMap;

use utoipa::IntoResponses;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::{ContentBuilder, Ref, RefOr};

#[cfg(doc)]
use crate::errors::ErrorBody;

/// 400.
const BAD_REQUEST: (u16, &str) = (
    400,
    "The request is invalid; `param` names the field at fault",
);
/// 401 on `/v1`.
const NO_API_KEY: (u16, &str) = (
    401,
    "A missing, unknown or revoked API key (only on servers with tenants)",
);
/// 401 on `/admin/v1`.
const NO_ADMIN_KEY: (u16, &str) = (401, "A missing or wrong admin key");
/// 404 naming a model.
const NO_MODEL: (u16, &str) = (
    404,
    "No upstream serves the model, or the key may not use it",
);
/// 404 of the usage endpoints.
const NO_LEDGER: (u16, &str) = (
    404,
    "The server keeps no ledger, or has no tenants (`GET /v1/usage`), or serves no such model",
);
/// 404 of the admin API.
const ADMIN_OFF: (u16, &str) = (404, "The admin API is off, or the object does not exist");
/// 409.
const CONFLICT: (u16, &str) = (409, "The id is taken, or the object is still in use");
/// 413.
const TOO_LARGE: (u16, &str) = (413, "The body is larger than the server's limit");
/// 429.
const LIMITED: (u16, &str) = (
    429,
    "A rate limit or the monthly budget is reached (`Retry-After` says when to retry)",
);
/// 502.
const UPSTREAMS_FAILED: (u16, &str) = (502, "Every upstream tried failed");
/// 503.
const UNAVAILABLE: (u16, &str) = (
    503,
    "No upstream can take the request now, or the server is still loading",
);

/// The responses for `errors`, each an `ErrorResponse` body.
fn responses(errors: &[(u16, &str)]) -> BTreeMap<String, RefOr<Response>> {
    errors
        .iter()
        .map(|(status, description)| {
            let response = ResponseBuilder::new()
                .description(*description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorResponse")))
                        .build(),
                )
                .build();
            (status.to_string(), RefOr::T(response))
        })
        .collect()
}

macro_rules! error_set {
    ($(#[$doc:meta])* $name:ident = [$($error:ident),+ $(,)?]) => {
        $(#[$doc])*
        pub struct $name;

        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                responses(&[$($error),+])
            }
        }
    };
}

error_set!(
    /// The generation endpoints (chat, completions, embeddings, infill).
    GenerationErrors = [BAD_REQUEST, NO_API_KEY, NO_MODEL, TOO_LARGE, LIMITED, UPSTREAMS_FAILED, UNAVAILABLE]
);
error_set!(
    /// `GET /v1/models`.
    ModelListErrors = [NO_API_KEY, UNAVAILABLE]
);
error_set!(
    /// `GET /v1/models/{id}`.
    ModelErrors = [NO_API_KEY, NO_MODEL, UNAVAILABLE]
);
error_set!(
    /// `POST /v1/route`.
    RouteErrors = [BAD_REQUEST, NO_API_KEY, NO_MODEL, TOO_LARGE, UNAVAILABLE]
);
error_set!(
    /// The usage endpoints under `/v1`.
    UsageErrors = [BAD_REQUEST, NO_API_KEY, NO_LEDGER]
);
error_set!(
    /// The admin API's reads.
    AdminReadErrors = [NO_ADMIN_KEY, ADMIN_OFF]
);
error_set!(
    /// The admin API's reads with a query.
    AdminQueryErrors = [BAD_REQUEST, NO_ADMIN_KEY, ADMIN_OFF]
);
error_set!(
    /// The admin API's changes.
    AdminWriteErrors = [BAD_REQUEST, NO_ADMIN_KEY, ADMIN_OFF, CONFLICT]
);
error_set!(
    /// `GET /admin/v1/upstreams`.
    AdminUpstreamErrors = [NO_ADMIN_KEY, UNAVAILABLE]
);
