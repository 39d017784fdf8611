//! The HTTP application: the routes, and the tower layers every request passes (tracing,
//! request counting, CORS); the web demo (or a JSON 404) answers everything else, cross-origin
//! isolated.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use tower::ServiceBuilder;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};
use tower_http::services::ServeDir;
use tower_http::set_header::{SetResponseHeader, SetResponseHeaderLayer};
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
        Some(root) => api.fallback_service(isolated(
            ServeDir::new(root).not_found_service(axum::routing::any(not_found)),
        )),
        None => api.fallback(not_found),
    };
    let mut app = api.layer(TraceLayer::new_for_http()).with_state(state);
    if let Some(cors) = cors(cors_origins) {
        app = app.layer(cors);
    }
    app
}

/// `service` with the headers that make its pages cross-origin isolated (COOP `same-origin`,
/// COEP `require-corp`), so that the browser engine can share memory between its CPU threads.
/// Everything the demo loads comes from this server, which needs no further headers.
fn isolated<S>(service: S) -> SetResponseHeader<SetResponseHeader<S, HeaderValue>, HeaderValue> {
    ServiceBuilder::new()
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("cross-origin-embedder-policy"),
            HeaderValue::from_static("require-corp"),
        ))
        .service(service)
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use crate::metrics::MetricsNames;
    use crate::state::AppState;

    /// The demo's files come cross-origin isolated (its CPU engine may share memory between
    /// threads); the API's answers do not carry those headers.
    #[tokio::test]
    async fn the_demo_is_cross_origin_isolated_and_the_api_is_not() {
        let dir = std::env::temp_dir().join(format!("tandem-web-root-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("index.html"), "<!doctype html><title>demo</title>").unwrap();
        let state = Arc::new(AppState::new(1 << 20, MetricsNames::Tandem));
        let app = super::router(state, &[], Some(&dir));
        let get = |path: &str| {
            let app = app.clone();
            let req = Request::get(path).body(Body::empty()).unwrap();
            async move { app.oneshot(req).await.unwrap() }
        };
        let page = get("/").await;
        assert_eq!(page.status(), StatusCode::OK);
        assert_eq!(page.headers()["cross-origin-opener-policy"], "same-origin");
        assert_eq!(
            page.headers()["cross-origin-embedder-policy"],
            "require-corp"
        );
        let health = get("/health").await;
        assert!(
            !health
                .headers()
                .contains_key("cross-origin-embedder-policy")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
