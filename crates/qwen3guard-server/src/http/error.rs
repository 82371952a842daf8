//! The one error type of the HTTP layer and its one map to statuses.
//!
//! Every failure a handler can meet becomes an [`AppError`]; [`AppError::status`] is the
//! single place deciding the status code, and every body has the OpenAI shape
//! `{"error": {"message", "type", "code"}}` so that SDKs surface the message.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use qwen3guard::ErrorKind;
use serde_json::json;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The body is not valid JSON, or a field is missing, mistyped or out of range.
    #[error("{0}")]
    Invalid(String),
    /// No route has this path or method.
    #[error("{0}")]
    NoRoute(String),
    /// The path exists, but not with this method.
    #[error("{0}")]
    WrongMethod(String),
    /// No or a wrong bearer key.
    #[error("missing or invalid API key (send `Authorization: Bearer <key>`)")]
    Unauthorized,
    /// The session id names no open session (closed, expired, or held by another
    /// replica).
    #[error("no open stream session {0:?} (it was closed, expired, or never opened here)")]
    SessionNotFound(String),
    /// An append's offset skips text or tokens the server never received.
    #[error("{0}")]
    OffsetGap(String),
    /// Input or body larger than a limit or the model's context.
    #[error("{0}")]
    TooLarge(String),
    /// Too many open sessions.
    #[error("{0}")]
    TooManySessions(String),
    /// The scheduler's queue is full; retry shortly.
    #[error("the server is busy ({0} requests queued); retry shortly")]
    Overloaded(usize),
    /// The replica is draining before it stops: it takes no new sessions (open them on
    /// another replica); its open ones go on.
    #[error("this replica is draining before it stops: {0}")]
    Draining(&'static str),
    /// Models are still loading, the server is shutting down, or the scheduler stopped.
    #[error("{0}")]
    Unavailable(String),
    /// The endpoint needs a model this server was not started with.
    #[error("{0}")]
    ModelNotLoaded(String),
    /// A server this one calls (a helpfulness reward server, an upstream LLM) failed.
    #[error("{0}")]
    Upstream(String),
    /// The upstream LLM server sent nothing for too long.
    #[error("{0}")]
    UpstreamTimeout(String),
    /// The upstream LLM server answered an error status: a client error (a wrong model
    /// name, say) keeps its status, so that the client sees what it would without the
    /// proxy; a server error is a 502.
    #[error("{message}")]
    UpstreamStatus {
        /// The upstream's status.
        status: u16,
        /// What it said.
        message: String,
    },
    /// One item of a batch failed; the status is the item's.
    #[error("{place}: {source}")]
    At {
        /// The item, such as `samples[3]`.
        place: String,
        /// Its error.
        source: Box<AppError>,
    },
    /// The engine refused or failed the request.
    #[error(transparent)]
    Engine(#[from] qwen3guard::Error),
}

impl AppError {
    /// The status code, the error `type` and the machine-readable `code`.
    pub fn status(&self) -> (StatusCode, &'static str, &'static str) {
        match self {
            AppError::Invalid(_) => (
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                "invalid_request",
            ),
            AppError::NoRoute(_) => (StatusCode::NOT_FOUND, "not_found_error", "no_route"),
            AppError::WrongMethod(_) => (
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request_error",
                "method_not_allowed",
            ),
            AppError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                "authentication_error",
                "invalid_api_key",
            ),
            AppError::SessionNotFound(_) => (
                StatusCode::NOT_FOUND,
                "not_found_error",
                "session_not_found",
            ),
            AppError::OffsetGap(_) => (StatusCode::CONFLICT, "invalid_request_error", "offset_gap"),
            AppError::TooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "too_large",
            ),
            AppError::TooManySessions(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                "too_many_sessions",
            ),
            AppError::Overloaded(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded_error",
                "queue_full",
            ),
            AppError::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable_error",
                "unavailable",
            ),
            AppError::Draining(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable_error",
                "draining",
            ),
            AppError::ModelNotLoaded(_) => (
                StatusCode::NOT_IMPLEMENTED,
                "invalid_request_error",
                "model_not_loaded",
            ),
            AppError::Upstream(_) => (StatusCode::BAD_GATEWAY, "upstream_error", "upstream_error"),
            AppError::UpstreamTimeout(_) => (
                StatusCode::GATEWAY_TIMEOUT,
                "upstream_error",
                "upstream_timeout",
            ),
            AppError::UpstreamStatus { status, .. } => (
                StatusCode::from_u16(*status)
                    .ok()
                    .filter(StatusCode::is_client_error)
                    .unwrap_or(StatusCode::BAD_GATEWAY),
                "upstream_error",
                "upstream_status",
            ),
            AppError::At { source, .. } => source.status(),
            AppError::Engine(e) => match e.kind() {
                ErrorKind::InvalidInput => (
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "invalid_input",
                ),
                ErrorKind::TooLong => (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "invalid_request_error",
                    "context_length_exceeded",
                ),
                ErrorKind::Unsupported => (
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "unsupported",
                ),
                _ => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "internal_error",
                ),
            },
        }
    }
}

impl AppError {
    /// This error as that of the batch item `place`.
    pub fn at(self, place: impl Into<String>) -> AppError {
        AppError::At {
            place: place.into(),
            source: Box::new(self),
        }
    }

    /// The `{"message", "type", "code"}` object every error body carries under `error`.
    pub fn body(&self) -> serde_json::Value {
        let (_, kind, code) = self.status();
        json!({"message": self.to_string(), "type": kind, "code": code})
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status().0;
        let body = json!({"error": self.body()});
        let mut response = (status, axum::Json(body)).into_response();
        if matches!(self, AppError::Overloaded(_) | AppError::Draining(_)) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}
