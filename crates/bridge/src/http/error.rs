//! The one mapping from errors to HTTP responses.
//!
//! Every error body is `{"error": {"code": "...", "message": "..."}}`: `code` is stable for
//! programs, `message` is for people. Client errors are not logged (they are the client's
//! problem and would let anyone fill our logs); server errors are logged here, once, inside
//! the request's span, with their cause chain, and answered with a generic message.

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

/// An error a handler answers with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request is malformed.
    #[error("{message}")]
    BadRequest {
        /// Stable code.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// 401: missing or wrong credentials (signature, token).
    #[error("{message}")]
    Unauthorized {
        /// Stable code.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// 403: the credentials are understood and refused.
    #[error("{message}")]
    Forbidden {
        /// What is wrong.
        message: String,
    },
    /// 404.
    #[error("not found")]
    NotFound,
    /// 404 with a reason (a feature that is off).
    #[error("{message}")]
    NotFoundWith {
        /// Stable code.
        code: &'static str,
        /// Why.
        message: String,
    },
    /// 409: the request conflicts with the state of things (a call that ended, a user who
    /// did not allow calls).
    #[error("{message}")]
    Conflict {
        /// Stable code.
        code: &'static str,
        /// What conflicts.
        message: String,
    },
    /// 429 for a limit that is not ours (WhatsApp's).
    #[error("{message}")]
    TooMany {
        /// Stable code.
        code: &'static str,
        /// Which limit.
        message: String,
    },
    /// 502: WhatsApp (or another upstream) failed.
    #[error("{message}")]
    BadGateway {
        /// Stable code.
        code: &'static str,
        /// What failed.
        message: String,
    },
    /// 413: the body is larger than the limit.
    #[error("the body is larger than {limit} bytes")]
    PayloadTooLarge {
        /// The limit.
        limit: usize,
    },
    /// 429: over the rate limit; try again after the duration.
    #[error("too many requests; retry in {}s", retry_after.as_secs())]
    RateLimited {
        /// When to retry.
        retry_after: Duration,
    },
    /// 503: we cannot serve this now (a dependency is down, a setting is missing, shutting
    /// down); the client should retry.
    #[error("{message}")]
    Unavailable {
        /// Stable code.
        code: &'static str,
        /// What is missing.
        message: String,
        /// When to retry, if known.
        retry_after: Option<Duration>,
    },
    /// 500: a bug or an unexpected failure.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound | ApiError::NotFoundWith { .. } => StatusCode::NOT_FOUND,
            ApiError::Conflict { .. } => StatusCode::CONFLICT,
            ApiError::TooMany { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::BadGateway { .. } => StatusCode::BAD_GATEWAY,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. }
            | ApiError::Unauthorized { code, .. }
            | ApiError::Unavailable { code, .. }
            | ApiError::NotFoundWith { code, .. }
            | ApiError::Conflict { code, .. }
            | ApiError::TooMany { code, .. }
            | ApiError::BadGateway { code, .. } => code,
            ApiError::Forbidden { .. } => "forbidden",
            ApiError::NotFound => "not_found",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Internal(_) => "internal",
        }
    }
}

/// Seconds for a `Retry-After` header: whole, rounded up, at least 1.
fn retry_after_secs(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0 || duration.is_zero())
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let code = self.code();
        let message = match &self {
            ApiError::Internal(err) => {
                tracing::error!(error.message = %err, error.cause_chain = ?err, "request failed");
                "internal error; the service logged the details".to_owned()
            }
            ApiError::Unavailable { message, .. } => {
                tracing::warn!(code, message = %message, "request refused: service unavailable");
                message.clone()
            }
            ApiError::BadGateway { message, .. } => {
                tracing::warn!(code, message = %message, "request failed upstream");
                message.clone()
            }
            other @ (ApiError::BadRequest { .. }
            | ApiError::Unauthorized { .. }
            | ApiError::Forbidden { .. }
            | ApiError::NotFound
            | ApiError::NotFoundWith { .. }
            | ApiError::Conflict { .. }
            | ApiError::TooMany { .. }
            | ApiError::PayloadTooLarge { .. }
            | ApiError::RateLimited { .. }) => other.to_string(),
        };
        let retry_after = match &self {
            ApiError::RateLimited { retry_after } => Some(*retry_after),
            ApiError::Unavailable { retry_after, .. } => *retry_after,
            ApiError::BadRequest { .. }
            | ApiError::Unauthorized { .. }
            | ApiError::Forbidden { .. }
            | ApiError::NotFound
            | ApiError::NotFoundWith { .. }
            | ApiError::Conflict { .. }
            | ApiError::TooMany { .. }
            | ApiError::BadGateway { .. }
            | ApiError::PayloadTooLarge { .. }
            | ApiError::Internal(_) => None,
        };
        let mut response = (
            status,
            Json(json!({"error": {"code": code, "message": message}})),
        )
            .into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let Some(after) = retry_after {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(retry_after_secs(after)),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_millis(100)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
