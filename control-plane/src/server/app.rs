//! The HTTP application: the routes, and the tower layers every request passes (tracing,
//! request counting, CORS); the web demo (or a JSON 404) answers everything else.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post};
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::services::ServeDir;
use tower_http::trace::TraceLayer;

use crate::accounting;
use crate::api::admin::{self, directory, reports};
use crate::api::{
    auth, chat, completions, embeddings, files, health, infill, models, route, usage,
};
use crate::errors::ApiError;
use crate::state::SharedState;

/// Builds the application: API routes, then the web demo (or a JSON 404) for everything else.
pub fn router(state: SharedState, cors_origins: &[String], web_root: Option<&Path>) -> Router {
    let generation = Router::new()
        .route("/v1/chat/completions", post(chat::handle))
        .route("/v1/completions", post(completions::handle))
        .route("/v1/embeddings", post(embeddings::handle))
        .route("/infill", post(infill::handle))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            auth::require_key,
        ))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            accounting::tag_requests,
        ));
    let v1 = Router::new()
        .route("/v1/route", post(route::handle))
        .route("/v1/models", get(models::list))
        .route("/v1/models/{*id}", get(models::get))
        .route("/v1/usage/browser", post(usage::browser))
        .route("/v1/usage", get(usage::report))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            auth::require_key,
        ));
    let admin = Router::new()
        .route(
            "/admin/v1/tiers",
            get(directory::list_tiers).post(directory::create_tier),
        )
        .route(
            "/admin/v1/tiers/{id}",
            get(directory::get_tier)
                .patch(directory::patch_tier)
                .delete(directory::delete_tier),
        )
        .route(
            "/admin/v1/tenants",
            get(directory::list_tenants).post(directory::create_tenant),
        )
        .route(
            "/admin/v1/tenants/{id}",
            get(directory::get_tenant)
                .patch(directory::patch_tenant)
                .delete(directory::delete_tenant),
        )
        .route(
            "/admin/v1/tenants/{id}/keys",
            get(directory::list_keys).post(directory::create_key),
        )
        .route("/admin/v1/keys/{id}", delete(directory::revoke_key))
        .route("/admin/v1/upstreams", get(admin::upstreams::list))
        .route("/admin/v1/usage", get(reports::usage))
        .route(
            "/admin/v1/invoices/{tenant}/{period}",
            get(reports::invoice),
        )
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            auth::require_admin,
        ));
    let api = Router::new()
        .merge(generation)
        .merge(v1)
        .merge(admin)
        .route("/admin", get(admin::page::redirect))
        .route("/admin/", get(admin::page::index))
        .route("/admin/{file}", get(admin::page::file))
        .route("/models/{id}/{file}", get(files::get))
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .route("/metrics", get(health::metrics))
        .route_layer(middleware::from_fn_with_state(
            Arc::clone(&state),
            count_requests,
        ))
        .method_not_allowed_fallback(|| async { ApiError::method_not_allowed() });
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
