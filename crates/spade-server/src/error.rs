//! API errors, mapped once to RFC 7807 `application/problem+json` responses with a stable
//! `type` per kind of failure.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request does not match the API (malformed body, unknown field, a value of
    /// the wrong type or out of the documented range).
    #[error("{0}")]
    BadRequest(String),
    /// 422: well-formed, but not something the model can run (an image that does not
    /// decode, ids beyond its classes, a latent of the wrong length, conflicting options).
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("no model named `{0}`")]
    UnknownModel(String),
    #[error("{0}")]
    NotFound(String),
    #[error("method not allowed on this route; see /openapi.yaml")]
    MethodNotAllowed,
    #[error("{0}")]
    Conflict(String),
    #[error("missing or invalid API key")]
    Unauthorized,
    #[error("request body too large")]
    PayloadTooLarge,
    #[error("the request body did not arrive within {0:.1} s")]
    BodyTimeout(f64),
    #[error("the queue of model `{0}` is full; retry later")]
    QueueFull(String),
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("the request could not start within {0:.1} s")]
    Timeout(f64),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::UnknownModel(_) | ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::QueueFull(_) | ApiError::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable problem type, documented in openapi.yaml.
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad-request",
            ApiError::Unprocessable(_) => "invalid-input",
            ApiError::UnsupportedMediaType(_) => "unsupported-media-type",
            ApiError::UnknownModel(_) => "unknown-model",
            ApiError::NotFound(_) => "not-found",
            ApiError::MethodNotAllowed => "method-not-allowed",
            ApiError::Conflict(_) => "not-supported-by-model",
            ApiError::Unauthorized => "unauthorized",
            ApiError::PayloadTooLarge => "payload-too-large",
            ApiError::BodyTimeout(_) => "body-timeout",
            ApiError::QueueFull(_) => "queue-full",
            ApiError::ShuttingDown => "shutting-down",
            ApiError::Timeout(_) => "timeout",
            ApiError::Internal(_) => "internal",
        }
    }
}

/// Input errors from the model crate are the client's: 422 with the crate's message.
impl From<spade_model::Error> for ApiError {
    fn from(err: spade_model::Error) -> Self {
        match err {
            spade_model::Error::Input { .. } | spade_model::Error::Config { .. } => {
                ApiError::Unprocessable(err.to_string())
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = json!({
            "type": format!("https://spade.dev/problems/{}", self.kind()),
            "title": status.canonical_reason().unwrap_or("error"),
            "status": status.as_u16(),
            "detail": self.to_string(),
        });
        let mut response = (status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        match self {
            ApiError::QueueFull(_) | ApiError::ShuttingDown => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            ApiError::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}
