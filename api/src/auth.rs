//! Bearer tokens, their roles, and the per-token rate limit of mutating calls.
//!
//! Every route but `/api/v1/health`, `/api/v1/openapi.json` (and `/metrics`) needs
//! `Authorization: Bearer <token>`. Tokens come from `[[api.tokens]]` (a name, a role, and the
//! secret's SHA-256 digest or the secret through `token_env`/`token_file`) and from
//! `UPKEEP_API_TOKEN`, which is a token named `env` with the `operate` role. Without any
//! configured token the API is closed: authenticated routes answer 401 and the server says so
//! at start, so a forgotten variable never leaves it open.
//!
//! The presented token is hashed with SHA-256 and compared with every configured digest in
//! constant time, without stopping at a match, so neither the response time nor the order of
//! the configuration says anything about a token.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
pub use upkeep_shared::api_access::ApiRole as Role;
use upkeep_shared::api_access::{ENV_TOKEN_NAME, decode_digest};
use upkeep_shared::daemons::ApiSettings;

use crate::{ApiError, AppState};

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

/// One accepted token: its name, role and the SHA-256 of its secret.
#[derive(Clone)]
struct Known {
    name: String,
    role: Role,
    digest: [u8; 32],
}

/// The configured tokens and the rate limiter of mutating calls.
pub struct Access {
    tokens: Vec<Known>,
    limiter: RateLimiter,
}

impl std::fmt::Debug for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("tokens", &self.tokens.len())
            .finish_non_exhaustive()
    }
}

impl Access {
    /// The tokens of `[api]` (validated by the configuration already: a digest that does not
    /// decode is skipped).
    #[must_use]
    pub fn from_settings(api: &ApiSettings) -> Self {
        let mut tokens = Vec::new();
        if let Some(token) = &api.token {
            tokens.push(Known {
                name: ENV_TOKEN_NAME.to_owned(),
                role: Role::Operate,
                digest: sha256(token.expose_secret().as_bytes()),
            });
        }
        for entry in &api.tokens {
            let digest = match (&entry.sha256, &entry.token) {
                (Some(hex), _) => decode_digest(hex),
                (None, Some(secret)) => Some(sha256(secret.expose_secret().as_bytes())),
                (None, None) => None,
            };
            if let Some(digest) = digest {
                tokens.push(Known {
                    name: entry.name.trim().to_owned(),
                    role: entry.role,
                    digest,
                });
            }
        }
        Self {
            tokens,
            limiter: RateLimiter::per_minute(api.mutating_rate_per_minute),
        }
    }

    /// Whether no token is configured (every authenticated route answers 401).
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The token whose secret is `presented`, if any.
    fn identify(&self, presented: &str) -> Option<Caller> {
        let digest = sha256(presented.as_bytes());
        let mut found = None;
        for known in &self.tokens {
            if constant_time_eq(&known.digest, &digest) && found.is_none() {
                found = Some(Caller {
                    name: known.name.clone(),
                    role: known.role,
                });
            }
        }
        found
    }

    /// Takes one mutating call from `caller`'s bucket.
    ///
    /// # Errors
    /// [`ApiError::TooManyRequests`] when the bucket is empty.
    pub fn admit_mutation(&self, caller: &Caller) -> Result<(), ApiError> {
        self.limiter
            .take(&caller.name, Instant::now())
            .map_err(|wait| ApiError::TooManyRequests {
                token: caller.name.clone(),
                retry_after_secs: wait.as_secs().max(1),
            })
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// A token bucket per token name: `capacity` calls at once, refilled evenly over a minute.
/// Token names are a small configured set, so the map stays small.
#[derive(Debug)]
pub struct RateLimiter {
    capacity: f64,
    per_second: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

impl RateLimiter {
    /// `per_minute` calls per minute, bursting up to as many.
    #[must_use]
    pub fn per_minute(per_minute: u32) -> Self {
        let capacity = f64::from(per_minute.max(1));
        Self {
            capacity,
            per_second: capacity / 60.0,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one call for `key` at `now`.
    ///
    /// # Errors
    /// How long until the next call is allowed, when none is left.
    pub fn take(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (tokens, last) = buckets
            .entry(key.to_owned())
            .or_insert((self.capacity, now));
        let elapsed = now.saturating_duration_since(*last).as_secs_f64();
        *tokens = (*tokens + elapsed * self.per_second).min(self.capacity);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.per_second))
        }
    }
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
        if presented.is_empty() {
            return Err(ApiError::Unauthorized);
        }
        state
            .access
            .identify(presented)
            .ok_or(ApiError::Unauthorized)
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
    use std::collections::HashMap as Env;

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

    #[test]
    fn configured_tokens_are_identified_by_digest_or_secret_and_the_env_token_is_operate() {
        let digest: String = sha256(b"reader-secret")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let toml = format!(
            "[api]\ntoken = \"plain\"\n\
             [[api.tokens]]\nname = \"ro\"\nrole = \"read\"\nsha256 = \"{digest}\"\n\
             [[api.tokens]]\nname = \"ops\"\nrole = \"tokens\"\ntoken_env = \"OPS_TOKEN\"\n"
        );
        let env = Env::from([("OPS_TOKEN".to_owned(), "ops-secret".to_owned())]);
        let settings =
            upkeep_shared::config::Settings::from_toml_str(&toml, &env).expect("valid settings");
        let access = Access::from_settings(&settings.api);
        let who = |secret: &str| access.identify(secret).map(|c| (c.name, c.role));
        assert_eq!(who("plain"), Some(("env".to_owned(), Role::Operate)));
        assert_eq!(who("reader-secret"), Some(("ro".to_owned(), Role::Read)));
        assert_eq!(who("ops-secret"), Some(("ops".to_owned(), Role::Tokens)));
        assert_eq!(who("nope"), None);
        assert_eq!(who(&digest), None, "the digest itself is not a token");
    }

    #[test]
    fn the_bucket_allows_its_capacity_then_refills_evenly() {
        let limiter = RateLimiter::per_minute(2);
        let t0 = Instant::now();
        assert!(limiter.take("a", t0).is_ok());
        assert!(limiter.take("a", t0).is_ok());
        let wait = limiter.take("a", t0).expect_err("bucket empty");
        assert!(wait > Duration::from_secs(29) && wait <= Duration::from_secs(30));
        assert!(limiter.take("b", t0).is_ok(), "buckets are per token");
        assert!(limiter.take("a", t0 + Duration::from_secs(30)).is_ok());
    }
}
