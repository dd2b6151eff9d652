//! API errors: an HTTP status plus a problem+json body.

use airlock_proto::problem::Problem;
use axum::Json;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};

use crate::store::StoreError;

/// An error answered to an API client.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Body (boxed: errors travel through every handler's `Result`).
    pub problem: Box<Problem>,
    /// Seconds for a `Retry-After` header (rate limits).
    pub retry_after: Option<u64>,
}

/// Result alias for handlers.
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    /// An error with status, problem slug and title.
    pub fn new(status: StatusCode, slug: &str, title: &str) -> Self {
        Self {
            status,
            problem: Box::new(Problem::new(slug, title)),
            retry_after: None,
        }
    }

    /// Adds the detailed message.
    pub fn msg(mut self, msg: impl Into<String>) -> Self {
        self.problem.msg = Some(msg.into());
        self
    }

    /// Adds a hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.problem.hint = Some(hint.into());
        self
    }

    /// Adds data.
    pub fn data(mut self, data: serde_json::Value) -> Self {
        self.problem.data = Some(data);
        self
    }

    /// 400 with the invalid-parameter problem class the client knows.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "invalid-api-params",
            "Missing or invalid API parameters.",
        )
        .msg(msg)
    }

    /// 401: not logged in / bad signature.
    pub fn unauthorized(msg: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "auth-failed",
            "Unauthorized access",
        )
        .msg(msg)
    }

    /// 403.
    pub fn forbidden(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden operation").msg(msg)
    }

    /// 404 for a named kind of object.
    pub fn not_found(slug: &str, msg: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, slug, "Not found").msg(msg)
    }

    /// 409.
    pub fn conflict(msg: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", "Conflict").msg(msg)
    }

    /// 500 that hides the details from the client (they are logged).
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        tracing::error!(error = %detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal-server-error",
            "Internal server error",
        )
        .msg("the server failed to handle the request; see the server log")
    }

    /// 503 (a dependency such as Docker or an agent is unavailable).
    pub fn unavailable(msg: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "service-unavailable",
            "Service unavailable",
        )
        .msg(msg)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(what) => ApiError::conflict(format!("{what} already exists")),
            other => ApiError::internal(other),
        }
    }
}

impl From<airlock_proto::validate::Invalid> for ApiError {
    fn from(e: airlock_proto::validate::Invalid) -> Self {
        ApiError::invalid(e.message).hint(e.hint)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(*self.problem)).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}
