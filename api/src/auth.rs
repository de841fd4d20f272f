//! Bearer tokens and their roles.
//!
//! Every route but `/api/v1/health` (and later `/metrics`) needs `Authorization: Bearer
//! <token>`. `UPKEEP_API_TOKEN` is a token named `default` with the `operate` role. Without any
//! configured token the API is closed: authenticated routes answer 401 and the server says so
//! at start, so a forgotten variable never leaves it open. Tokens are compared in constant time.

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use secrecy::ExposeSecret;

use crate::{ApiError, AppState};

/// What a token may do. Each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Read task lists, stats, runs, findings.
    Read,
    /// Also act: acknowledge items, retry dead letters, pause and trigger schedules.
    Operate,
}

impl Role {
    /// The role's name as configuration and errors spell it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Operate => "operate",
        }
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name, recorded in the audit trail.
    pub name: String,
    /// What it may do.
    pub role: Role,
}

impl Caller {
    /// Checks that the caller's role includes `need`.
    ///
    /// # Errors
    /// [`ApiError::Forbidden`] naming both roles.
    pub fn require(&self, need: Role) -> Result<(), ApiError> {
        if self.role >= need {
            Ok(())
        } else {
            Err(ApiError::Forbidden {
                have: self.role.as_str(),
                need: need.as_str(),
            })
        }
    }
}

/// Compares two byte strings in time that depends only on their lengths, so a wrong token's
/// response time says nothing about how much of it matched.
#[must_use]
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .ok_or(ApiError::Unauthorized)?;
        let presented = header
            .strip_prefix("Bearer ")
            .ok_or(ApiError::Unauthorized)?
            .trim();
        match &state.settings.api.token {
            Some(token)
                if constant_time_eq(token.expose_secret().as_bytes(), presented.as_bytes()) =>
            {
                Ok(Self {
                    name: "default".to_owned(),
                    role: Role::Operate,
                })
            }
            _ => Err(ApiError::Unauthorized),
        }
    }
}

impl OptionalFromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, ApiError> {
        match <Self as FromRequestParts<AppState>>::from_request_parts(parts, state).await {
            Ok(caller) => Ok(Some(caller)),
            Err(ApiError::Unauthorized) => Ok(None),
            Err(other) => Err(other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_equal_only_when_identical() {
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3creT"));
        assert!(!constant_time_eq(b"s3cret", b"s3cret2"));
    }

    #[test]
    fn operate_includes_read_but_not_the_reverse() {
        let reader = Caller {
            name: "ro".to_owned(),
            role: Role::Read,
        };
        assert!(reader.require(Role::Read).is_ok());
        assert!(matches!(
            reader.require(Role::Operate),
            Err(ApiError::Forbidden {
                have: "read",
                need: "operate"
            })
        ));
    }
}
