//! API errors in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}` with the
//! matching HTTP status (and `Retry-After` when the server is busy).

use std::borrow::Cow;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use engine_core::engine::{EngineError, SubmitError};
use serde::Serialize;
use utoipa::ToSchema;

/// An error answered to an API client.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Human-readable explanation.
    pub message: String,
    /// OpenAI error type (`invalid_request_error`, `not_found_error`, ...).
    pub kind: Cow<'static, str>,
    /// The request parameter at fault, if one is.
    pub param: Option<String>,
    /// A machine-readable code, if any.
    pub code: Option<Cow<'static, str>>,
    /// Seconds after which a retry may succeed (sent as `Retry-After`).
    pub retry_after: Option<u64>,
}

/// The body of every error answer (`ErrorResponse` in the OpenAPI document).
#[derive(Serialize, ToSchema)]
#[schema(as = ErrorResponse)]
pub struct ErrorBody<'a> {
    /// What went wrong.
    #[schema(value_type = ErrorObject)]
    error: ErrorObject<'a>,
}

/// The error itself, as OpenAI's API has it.
#[derive(Serialize, ToSchema)]
pub struct ErrorObject<'a> {
    /// Human-readable explanation.
    message: &'a str,
    /// `invalid_request_error`, `authentication_error`, `rate_limit_error`, `server_error`, ...
    #[serde(rename = "type")]
    kind: &'a str,
    /// The request parameter at fault, if one is.
    param: Option<&'a str>,
    /// A machine-readable code (`model_not_found`, `invalid_api_key`, `insufficient_quota`,
    /// ...), if any.
    code: Option<&'a str>,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            kind: Cow::Borrowed(kind),
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// 400: a parameter is missing, of the wrong type or out of range.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
    }

    /// 400 naming the parameter at fault.
    pub fn bad_param(param: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            param: Some(param.to_owned()),
            ..ApiError::bad_request(message)
        }
    }

    /// 404: no such model.
    pub fn model_not_found(model: &str) -> ApiError {
        ApiError {
            param: Some("model".into()),
            code: Some(Cow::Borrowed("model_not_found")),
            ..ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                format!("The model `{model}` does not exist."),
            )
        }
    }

    /// 404: no such route.
    pub fn route_not_found(path: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            format!("Unknown route {path}"),
        )
    }

    /// 405: the route exists, not with this method.
    pub fn method_not_allowed() -> ApiError {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
            "Method not allowed for this route",
        )
    }

    /// 413: the body is larger than the configured limit.
    pub fn too_large(limit: usize) -> ApiError {
        ApiError {
            code: Some(Cow::Borrowed("request_too_large")),
            ..ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                format!("The request body is larger than the limit of {limit} bytes."),
            )
        }
    }

    /// 429: every sequence slot and the queue are taken.
    pub fn busy(message: impl Into<String>) -> ApiError {
        ApiError {
            code: Some(Cow::Borrowed("rate_limit_exceeded")),
            retry_after: Some(1),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", message)
        }
    }

    /// 503: the model is still loading, or the server is shutting down.
    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError {
            retry_after: Some(1),
            ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "server_error", message)
        }
    }

    /// 502: the upstream failed (connection refused, a 5xx, a broken stream).
    pub fn bad_gateway(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_GATEWAY, "server_error", message)
    }

    /// 504: the upstream did not answer in time.
    pub fn timeout(message: impl Into<String>) -> ApiError {
        ApiError {
            code: Some(Cow::Borrowed("timeout")),
            ..ApiError::new(StatusCode::GATEWAY_TIMEOUT, "server_error", message)
        }
    }

    /// An error a remote upstream answered with `status` and `body`: its OpenAI-shaped error
    /// when the body is one, else the body's text.
    pub fn from_upstream(status: u16, body: &[u8]) -> ApiError {
        #[derive(serde::Deserialize)]
        struct Wire {
            error: WireInner,
        }
        #[derive(serde::Deserialize)]
        struct WireInner {
            #[serde(default)]
            message: Option<String>,
            #[serde(rename = "type", default)]
            kind: Option<String>,
            #[serde(default)]
            param: Option<String>,
            #[serde(default)]
            code: Option<serde_json::Value>,
        }
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
        let default_kind = if status.is_client_error() {
            "invalid_request_error"
        } else {
            "server_error"
        };
        match serde_json::from_slice::<Wire>(body) {
            Ok(w) => ApiError {
                status,
                message: w
                    .error
                    .message
                    .unwrap_or_else(|| format!("The upstream answered {status}.")),
                kind: w.error.kind.map_or(Cow::Borrowed(default_kind), Cow::Owned),
                param: w.error.param,
                code: w.error.code.and_then(|c| match c {
                    serde_json::Value::String(s) => Some(Cow::Owned(s)),
                    serde_json::Value::Number(n) => Some(Cow::Owned(n.to_string())),
                    _ => None,
                }),
                retry_after: None,
            },
            Err(_) => {
                let text = String::from_utf8_lossy(&body[..body.len().min(512)]);
                ApiError::new(
                    status,
                    default_kind,
                    format!("The upstream answered {status}: {}", text.trim()),
                )
            }
        }
    }

    /// 401: a missing, unknown or revoked API key.
    pub fn invalid_api_key(message: impl Into<String>) -> ApiError {
        ApiError {
            code: Some(Cow::Borrowed("invalid_api_key")),
            ..ApiError::new(StatusCode::UNAUTHORIZED, "invalid_request_error", message)
        }
    }

    /// 401 on the admin API: the admin key is missing or wrong.
    pub fn invalid_admin_key() -> ApiError {
        ApiError {
            code: Some(Cow::Borrowed("invalid_admin_key")),
            ..ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_request_error",
                "The admin API needs the admin key (Authorization: Bearer ADMIN_KEY).",
            )
        }
    }

    /// 429: a per-minute limit is reached; retry after `retry_after` seconds.
    pub fn rate_limited(message: impl Into<String>, retry_after: u64) -> ApiError {
        ApiError {
            code: Some(Cow::Borrowed("rate_limit_exceeded")),
            retry_after: Some(retry_after.max(1)),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "requests", message)
        }
    }

    /// 429: the tenant's budget is spent.
    pub fn insufficient_quota(message: impl Into<String>) -> ApiError {
        ApiError {
            code: Some(Cow::Borrowed("insufficient_quota")),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "insufficient_quota", message)
        }
    }

    /// 404: an admin object that does not exist.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "invalid_request_error", message)
    }

    /// 409: the request conflicts with what exists.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError {
            code: Some(Cow::Borrowed("conflict")),
            ..ApiError::new(StatusCode::CONFLICT, "invalid_request_error", message)
        }
    }

    /// 500: a failure inside the server (never caused by the request's content).
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    /// The JSON body, for a response or a streamed `data:` line.
    pub fn body_json(&self) -> String {
        serde_json::to_string(&ErrorBody {
            error: ErrorObject {
                message: &self.message,
                kind: &self.kind,
                param: self.param.as_deref(),
                code: self.code.as_deref(),
            },
        })
        .unwrap_or_else(|_| "{\"error\":{}}".into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            self.body_json(),
        )
            .into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> ApiError {
        match e {
            SubmitError::QueueFull { .. } => ApiError::busy(e.to_string()),
            SubmitError::Stopped => ApiError::unavailable(e.to_string()),
        }
    }
}

/// The error code of a structured-output grammar or schema the engine cannot use.
pub const INVALID_GRAMMAR: &str = "invalid_grammar";

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> ApiError {
        match &e {
            EngineError::EmptyPrompt => ApiError::bad_param("prompt", e.to_string()),
            EngineError::PromptTooLong { .. } | EngineError::KvTooSmall { .. } => ApiError {
                code: Some(Cow::Borrowed("context_length_exceeded")),
                ..ApiError::bad_param("messages", e.to_string())
            },
            EngineError::Sampler(s) => ApiError::bad_param(s.param(), s.to_string()),
            EngineError::Template(t) => ApiError::bad_param("messages", t.to_string()),
            EngineError::Grammar(g) => ApiError {
                code: Some(Cow::Borrowed(INVALID_GRAMMAR)),
                ..ApiError::bad_param("response_format", g.to_string())
            },
            _ => ApiError::internal(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_the_openai_shape() {
        let e = ApiError::bad_param("temperature", "too hot");
        let v: serde_json::Value = serde_json::from_str(&e.body_json()).unwrap();
        assert_eq!(v["error"]["message"], "too hot");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "temperature");
        assert!(v["error"]["code"].is_null());
        let resp = ApiError::busy("full").into_response();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
    }
}
