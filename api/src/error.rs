//! One error type for every route, mapped to a status code and a JSON body in one place.
//!
//! Clients get `{"error": "…", "field": "…"}`; a 5xx says only that something failed inside,
//! while the log gets the whole chain.

use std::borrow::Cow;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A field of the request is invalid (400), naming the field.
    #[error("{message}")]
    BadRequest {
        /// The query parameter, path segment or body field at fault.
        field: Option<Cow<'static, str>>,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// No token, or a token that matches none (401).
    #[error("missing or invalid bearer token")]
    Unauthorized,
    /// The token's role does not allow this route (403).
    #[error("the token's role {have} cannot do this (needs {need})")]
    Forbidden {
        /// The token's role.
        have: &'static str,
        /// The role the route needs.
        need: &'static str,
    },
    /// The thing named does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The thing exists but its state does not allow the action (409).
    #[error("{0}")]
    Conflict(String),
    /// The token used up its mutating calls for now (429).
    #[error("too many mutating calls for token {token:?}; retry in {retry_after_secs}s")]
    TooManyRequests {
        /// The token's name.
        token: String,
        /// When the next call is allowed.
        retry_after_secs: u64,
    },
    /// A request axum could not read (a body too large, not JSON, a bad path encoding),
    /// with the status axum chose.
    #[error("{message}")]
    Rejected {
        /// 400, 413, 415 or 422.
        status: StatusCode,
        /// The part of the request at fault.
        field: &'static str,
        /// axum's explanation.
        message: String,
    },
    /// A dependency is down (503).
    #[error("{0} is unavailable")]
    Unavailable(&'static str),
    /// Anything else (500); the chain is logged, the client gets an opaque message.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// A 400 about `field`.
    pub fn bad(field: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self::BadRequest {
            field: Some(field.into()),
            message: message.into(),
        }
    }
}

impl ApiError {
    /// The status code this error is answered with.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Rejected { status, .. } => *status,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// What the audit trail records for a refused call: the status and the message a
    /// client saw.
    #[must_use]
    pub fn audit_result(&self) -> String {
        let message = match self {
            Self::Internal(_) => "internal error".to_owned(),
            other => other.to_string(),
        };
        format!("{} {message}", self.status().as_u16())
    }
}

impl From<upkeep_shared::operator::Error> for ApiError {
    fn from(error: upkeep_shared::operator::Error) -> Self {
        use upkeep_shared::operator::Error;
        match error {
            Error::Field { field, message } => Self::bad(field, message),
            Error::Invalid(message) => Self::BadRequest {
                field: None,
                message,
            },
            Error::Job(job) => Self::BadRequest {
                field: None,
                message: job.to_string(),
            },
            Error::NotFound(message) => Self::NotFound(message),
            Error::Conflict(message) => Self::Conflict(message),
            Error::Queue(_) | Error::PartialEnqueue { .. } => {
                tracing::warn!(error = %error, "redis call failed");
                Self::Unavailable("redis")
            }
            Error::Store(store) => Self::from(store),
        }
    }
}

impl From<upkeep_shared::store::Error> for ApiError {
    fn from(error: upkeep_shared::store::Error) -> Self {
        Self::Internal(anyhow::Error::new(error))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let field: Option<String> = match &self {
            Self::BadRequest { field, .. } => field.as_ref().map(|f| f.to_string()),
            Self::Rejected { field, .. } => Some((*field).to_owned()),
            _ => None,
        };
        let message = match &self {
            Self::Internal(error) => {
                tracing::error!(error = %error, error.chain = ?error, "request failed");
                "internal error".to_owned()
            }
            other => other.to_string(),
        };
        let mut body = serde_json::json!({ "error": message });
        if let Some(field) = field {
            body["field"] = serde_json::Value::from(field);
        }
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        if let Self::TooManyRequests {
            retry_after_secs, ..
        } = &self
        {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(*retry_after_secs),
            );
        }
        response
    }
}
