//! The one error shape: `{"code": "...", "message": "..."}` with a stable machine `code`
//! and a human `message` that names the problem and the fix. [`shape_errors`] rewrites
//! any error response that is not already in this shape (axum's own rejections, 404s,
//! 405s, body limits, timeouts), so every 4xx and 5xx a client sees has it.

use axum::Json;
use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ApiError {
    #[serde(skip)]
    pub status: StatusCode,
    /// Stable, for programs: e.g. `unauthenticated`, `forbidden`, `conflict`.
    pub code: &'static str,
    /// For people: what went wrong and what to do.
    pub message: String,
    /// Extra facts some errors carry (a conflict's current version and author).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), details: None }
    }
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    pub fn unauthenticated() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "log in first: no valid session (it may have expired)",
        )
    }
    pub fn forbidden(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    pub fn internal(error: impl std::fmt::Display) -> ApiError {
        tracing::error!(target: "web", %error, "request failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the box could not do this; the daemon's log has the cause",
        )
    }
    pub fn with_code(mut self, code: &'static str) -> ApiError {
        self.code = code;
        self
    }
    pub fn with_details(mut self, details: serde_json::Value) -> ApiError {
        self.details = Some(details);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        (status, Json(self)).into_response()
    }
}

impl From<store::StoreError> for ApiError {
    fn from(e: store::StoreError) -> ApiError {
        use store::StoreError as E;
        match e {
            E::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            E::Invalid(why) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", why),
            E::Tampered(_) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "tampered", e.to_string()),
            other => ApiError::internal(other),
        }
    }
}

impl From<dataset::DatasetError> for ApiError {
    fn from(e: dataset::DatasetError) -> ApiError {
        match e {
            dataset::DatasetError::Store(e) => e.into(),
            other => ApiError::internal(other),
        }
    }
}

/// The stable code for a status, for errors that did not set one.
pub(crate) fn code_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthenticated",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "timeout",
        409 => "conflict",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        422 => "invalid",
        429 => "rate_limited",
        503 => "unavailable",
        s if s >= 500 => "internal",
        _ => "error",
    }
}

/// What a 413 says, however the limit was hit (a Content-Length over it, or a body that
/// grew past it).
pub(crate) const TOO_LARGE: &str =
    "the request body is too large: at most 2 MiB, and 4 KiB for login and setup; send less";

/// Rewrites error responses that are not JSON into the error shape, keeping their
/// status and headers (e.g. `Allow`, `Retry-After`).
pub async fn shape_errors(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    let is_json =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    let message = match status.as_u16() {
        404 => "no such resource: see /api/v1/openapi.json for the API".to_owned(),
        405 => "this resource does not take that method: see the Allow header".to_owned(),
        408 => "the request took too long and was stopped; try again".to_owned(),
        413 => TOO_LARGE.to_owned(),
        _ if !text.is_empty() => text,
        _ => status.canonical_reason().unwrap_or("error").to_owned(),
    };
    let body = serde_json::json!({ "code": code_for(status), "message": message });
    parts.headers.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body.to_string()))
}
