//! The HTTP application: the routes, and the tower layers every request passes (tracing,
//! request counting, CORS); the web demo (or a JSON 404) answers everything else.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::Response;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::services::ServeDir;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::accounting;
use crate::api::admin::{self, directory, reports};
use crate::api::{
    auth, chat, completions, embeddings, files, health, infill, models, openapi, route, usage,
};
use crate::errors::ApiError;
use crate::state::SharedState;

/// Builds the application: API routes, then the web demo (or a JSON 404) for everything else.
/// Every route comes from its handler's `#[utoipa::path]` attribute, which also puts it in the
/// OpenAPI document served at `/openapi.json`.
pub fn router(state: SharedState, cors_origins: &[String], web_root: Option<&Path>) -> Router {
    let generation = OpenApiRouter::new()
        .routes(routes!(chat::handle))
        .routes(routes!(completions::handle))
        .routes(routes!(embeddings::handle))
        .routes(routes!(infill::handle))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            auth::require_key,
        ))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            accounting::tag_requests,
        ));
    let v1 = OpenApiRouter::new()
        .routes(routes!(route::handle))
        .routes(routes!(models::list))
        .routes(routes!(models::get))
        .routes(routes!(usage::browser))
        .routes(routes!(usage::report))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            auth::require_key,
        ));
    let admin = OpenApiRouter::new()
        .routes(routes!(directory::list_tiers, directory::create_tier))
        .routes(routes!(
            directory::get_tier,
            directory::patch_tier,
            directory::delete_tier
        ))
        .routes(routes!(directory::list_tenants, directory::create_tenant))
        .routes(routes!(
            directory::get_tenant,
            directory::patch_tenant,
            directory::delete_tenant
        ))
        .routes(routes!(directory::list_keys, directory::create_key))
        .routes(routes!(directory::revoke_key))
        .routes(routes!(admin::upstreams::list))
        .routes(routes!(reports::usage))
        .routes(routes!(reports::invoice))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            auth::require_admin,
        ));
    let (api, doc) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .merge(generation)
        .merge(v1)
        .merge(admin)
        .routes(routes!(admin::page::redirect))
        .routes(routes!(admin::page::index))
        .routes(routes!(admin::page::file))
        .routes(routes!(files::get))
        .routes(routes!(health::health))
        .routes(routes!(health::ready))
        .routes(routes!(health::metrics))
        .routes(routes!(openapi::serve))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            count_requests,
        ))
        .split_for_parts();
    openapi::publish(&openapi::finish(doc));
    let api = api.method_not_allowed_fallback(|| async { ApiError::method_not_allowed() });
    let api = match web_root {
        Some(root) => api
            .fallback_service(ServeDir::new(root).not_found_service(axum::routing::any(not_found))),
        None => api.fallback(not_found),
    };
    let mut app = api.layer(TraceLayer::new_for_http()).with_state(state);
    if let Some(cors) = cors(cors_origins) {
        app = app.layer(cors);
    }
    app
}

async fn not_found(req: Request) -> ApiError {
    ApiError::route_not_found(req.uri().path())
}

/// Counts responses by route and status for `/metrics`.
async fn count_requests(State(state): State<SharedState>, req: Request, next: Next) -> Response {
    let endpoint = req.extensions().get::<MatchedPath>().cloned();
    let resp = next.run(req).await;
    state.metrics.record_request(
        endpoint.as_ref().map_or("other", MatchedPath::as_str),
        resp.status().as_u16(),
    );
    resp
}

/// CORS for the allowed origins; browsers may read the headers a download's progress and
/// cache checks need.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let layer = CorsLayer::new()
        .allow_methods(Any)
        .allow_headers(Any)
        .expose_headers([
            header::CONTENT_LENGTH,
            header::CONTENT_RANGE,
            header::ETAG,
            header::ACCEPT_RANGES,
        ]);
    Some(if origins.iter().any(|o| o == "*") {
        layer.allow_origin(Any)
    } else {
        layer.allow_origin(AllowOrigin::list(
            origins.iter().filter_map(|o| o.parse().ok()),
        ))
    })
}

/// The folder served at `/`: the configured one, else `web-demo/` of the workspace found
/// relative to the binary (`target/<profile>/tandem`) or the working directory.
pub fn web_root(configured: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = configured {
        if p.is_dir() {
            return Some(p.to_owned());
        }
        tracing::warn!("web root {} is not a directory", p.display());
        return None;
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        candidates.extend(exe.ancestors().skip(1).take(4).map(|d| d.join("web-demo")));
    }
    if let Ok(cwd) = std::env::current_dir() {
        candidates.push(cwd.join("web-demo"));
    }
    candidates
        .into_iter()
        .find(|c| c.join("index.html").is_file())
}
