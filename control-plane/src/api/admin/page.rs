//! The admin page at `/admin/`: a static page (built into the binary) that reads the admin API
//! with the admin key typed into it: tenants, keys, usage and cost per day, browser savings and
//! upstream health. Served only when the admin API is on.

use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};

use crate::errors::{ApiError, ErrorBody};
use crate::state::SharedState;

const INDEX: &str = include_str!("page/index.html");
const SCRIPT: &str = include_str!("page/admin.js");
const STYLE: &str = include_str!("page/admin.css");

fn admin_on(state: &SharedState) -> Result<(), ApiError> {
    match state.accounting.as_ref().and_then(|a| a.admin_key.as_ref()) {
        Some(_) => Ok(()),
        None => Err(ApiError::route_not_found("/admin/")),
    }
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut resp = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    let h = resp.headers_mut();
    // The page loads only its own files and is never framed.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// Redirects to the admin page.
#[utoipa::path(
    get,
    operation_id = "adminPageRedirect",
    path = "/admin",
    tag = "Admin page",
    responses(
        (status = 308, description = "To `/admin/`"),
        (status = 404, description = "The admin API is off", body = ErrorBody),
    )
)]
pub async fn redirect(State(state): State<SharedState>) -> Result<Redirect, ApiError> {
    admin_on(&state)?;
    Ok(Redirect::permanent("/admin/"))
}

/// The admin page.
///
/// Tenants, keys, usage and cost per day, browser savings, upstream health
/// (it asks for the admin key and reads the admin API with it).
#[utoipa::path(
    get,
    operation_id = "adminPage",
    path = "/admin/",
    tag = "Admin page",
    responses(
        (status = 200, description = "The page", content_type = "text/html", body = String),
        (status = 404, description = "The admin API is off", body = ErrorBody),
    )
)]
pub async fn index(State(state): State<SharedState>) -> Result<Response, ApiError> {
    admin_on(&state)?;
    Ok(asset("text/html; charset=utf-8", INDEX))
}

/// A file of the admin page.
///
/// A file of the admin page (its script and style).
#[utoipa::path(
    get,
    operation_id = "adminPageFile",
    path = "/admin/{file}",
    tag = "Admin page",
    params(("file" = String, Path, description = "`admin.js` or `admin.css`")),
    responses(
        (status = 200, description = "The file", content_type = "text/plain", body = String),
        (status = 404, description = "No such file, or the admin API is off", body = ErrorBody),
    )
)]
pub async fn file(
    State(state): State<SharedState>,
    Path(file): Path<String>,
) -> Result<Response, ApiError> {
    admin_on(&state)?;
    match file.as_str() {
        "admin.js" => Ok(asset("text/javascript; charset=utf-8", SCRIPT)),
        "admin.css" => Ok(asset("text/css; charset=utf-8", STYLE)),
        _ => Err(ApiError::route_not_found(&format!("/admin/{file}"))),
    }
}
