//! One error type for every route, mapped to a status code and a JSON body in one place.
//!
//! Clients get `{"error": "…", "field": "…"}`; a 5xx says only that something failed inside,
//! while the log gets the whole chain.

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
        field: Option<&'static str>,
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
    /// A dependency is down (503).
    #[error("{0} is unavailable")]
    Unavailable(&'static str),
    /// Anything else (500); the chain is logged, the client gets an opaque message.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// A 400 about `field`.
    pub fn bad(field: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            field: Some(field),
            message: message.into(),
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
        let (status, field) = match &self {
            Self::BadRequest { field, .. } => (StatusCode::BAD_REQUEST, *field),
            Self::Unauthorized => (StatusCode::UNAUTHORIZED, None),
            Self::Forbidden { .. } => (StatusCode::FORBIDDEN, None),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, None),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, None),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, None),
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
        response
    }
}
