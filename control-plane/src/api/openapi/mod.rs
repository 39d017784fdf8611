//! `GET /openapi.json`: the OpenAPI 3.1 document of every route, generated from the handlers'
//! `#[utoipa::path]` attributes and their request and response types. The router registers
//! each route from the same attribute, so the document and the routes cannot disagree.

pub mod errors;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa::Modify;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, Schema};

use crate::errors::ErrorBody;

/// The document's fixed parts: what the API is, its groups of operations and how callers
/// authenticate. The routes add their paths and schemas.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tandem",
        description = "Hybrid LLM inference: an OpenAI-compatible API in front of local engines and remote upstreams, routing each request to the user's browser or a server. With tenants configured, `/v1/*` needs an API key; the admin API needs the admin key.",
    ),
    tags(
        (name = "OpenAI", description = "OpenAI-compatible endpoints (with vLLM's extensions)"),
        (name = "llama.cpp", description = "llama-server's native endpoints, for tools written for it"),
        (name = "Tandem", description = "Browser routing, browser model files and usage"),
        (name = "Admin", description = "Tiers, tenants, API keys, upstreams, usage and invoices"),
        (name = "Admin page", description = "The admin web page"),
        (name = "Operations", description = "Health, readiness, metrics and this document"),
    ),
    components(schemas(ErrorBody)),
    modifiers(&SecuritySchemes),
)]
pub struct ApiDoc;

/// Adds the two bearer schemes: API keys (`api_key`) and the admin key (`admin_key`).
struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A tenant's API key (`Authorization: Bearer <key>`); needed only when the server has tenants.",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "admin_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The admin key (`--admin-key` / `TANDEM_ADMIN_KEY`), never an API key.",
                    ))
                    .build(),
            ),
        );
    }
}

/// Finishes the document the router collected: axum's wildcard captures (`{*id}`) become plain
/// OpenAPI path parameters (`{id}`), and schemas that others flatten in stay open.
pub fn finish(mut doc: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    let paths = std::mem::take(&mut doc.paths.paths);
    doc.paths.paths = paths
        .into_iter()
        .map(|(path, item)| (path.replace("{*", "{"), item))
        .collect();
    if let Some(components) = doc.components.as_mut() {
        open_flattened(&mut components.schemas);
    }
    doc
}

/// A type that refuses unknown fields (`additionalProperties: false`) and is flattened into
/// another (an `allOf` branch) would refuse the other's fields too: its schema leaves the
/// property list open (the server still refuses unknown fields).
fn open_flattened(schemas: &mut BTreeMap<String, RefOr<Schema>>) {
    let flattened: BTreeSet<String> = schemas
        .values()
        .filter_map(|s| match s {
            RefOr::T(Schema::AllOf(all)) => Some(&all.items),
            _ => None,
        })
        .flatten()
        .filter_map(|item| match item {
            RefOr::Ref(r) => r
                .ref_location
                .strip_prefix("#/components/schemas/")
                .map(str::to_owned),
            RefOr::T(_) => None,
        })
        .collect();
    for name in flattened {
        if let Some(RefOr::T(Schema::Object(object))) = schemas.get_mut(&name) {
            object.additional_properties = None;
        }
    }
}

/// The document, serialized once. It depends on nothing but the code (every router builds the
/// same one), so one copy serves the whole process, with no per-request work to reach it.
static DOCUMENT: OnceLock<String> = OnceLock::new();

/// Keeps `doc` as the document [`serve`] answers (the first router built sets it).
pub fn publish(doc: &utoipa::openapi::OpenApi) {
    DOCUMENT.get_or_init(|| doc.to_json().unwrap_or_default());
}

/// This document.
///
/// Every route of the server, its parameters, bodies and answers.
#[utoipa::path(
    get,
    operation_id = "openapi",
    path = "/openapi.json",
    tag = "Operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", content_type = "application/json", body = Object))
)]
pub async fn serve() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        DOCUMENT.get().map_or("{}", String::as_str),
    )
        .into_response()
}
