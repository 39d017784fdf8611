//! `GET /models/{id}/{file}`: the GGUF files of the local models, for browsers to run them
//! (the default browser variants). Range requests, `Last-Modified`, a strong `ETag` (the file's
//! SHA-256 once known), `If-None-Match` and long-lived cache headers: the file behind a URL
//! never changes while the server runs.

use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;
use tower_http::services::ServeFile;

use crate::errors::{ApiError, ErrorBody};
use crate::state::SharedState;

/// Downloads a model file.
///
/// Downloads a local model's GGUF file, for browsers to run it (the default browser variants):
/// range requests, a strong `ETag` (the file's SHA-256), `If-None-Match`, long-lived caching.
#[utoipa::path(
    get,
    operation_id = "downloadModelFile",
    path = "/models/{id}/{file}",
    tag = "Tandem",
    params(
        ("id" = String, Path, description = "The local model's id"),
        ("file" = String, Path, description = "The file's name, as its browser variant's `url` gives it"),
    ),
    responses(
        (status = 200, description = "The file", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 206, description = "The requested range", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 304, description = "Not modified (`If-None-Match`)"),
        (status = 404, description = "No such file", body = ErrorBody),
        (status = 416, description = "The range is outside the file"),
    )
)]
pub async fn get(
    State(state): State<SharedState>,
    Path((id, file)): Path<(String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    let loaded = state.loaded()?;
    let variant = loaded
        .locals
        .iter()
        .map(|m| &m.variant)
        .find(|v| v.model_id == id && v.file_name == file)
        .ok_or_else(|| ApiError::route_not_found(req.uri().path()))?;
    let etag = match variant.sha256() {
        Some(sha) => format!("\"{sha}\""),
        None => format!("\"{}-{}\"", variant.bytes, variant.file_name),
    };
    if req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"))
    {
        let mut resp = StatusCode::NOT_MODIFIED.into_response();
        if let Ok(v) = HeaderValue::from_str(&etag) {
            resp.headers_mut().insert(header::ETAG, v);
        }
        return Ok(resp);
    }
    let mut resp = ServeFile::new(&variant.path)
        .oneshot(req)
        .await
        .map_err(|e| ApiError::internal(format!("reading the model file: {e}")))?
        .into_response();
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&etag) {
        headers.insert(header::ETAG, v);
    }
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(resp)
}
