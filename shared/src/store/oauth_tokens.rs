//! `oauth_tokens`: one row per OAuth2 credential, its tokens as AES-256-GCM ciphertexts (see
//! `tokens::crypto`), its expiry, version, status and failure count.
//!
//! Exactly one refresher per credential across every worker: [`lock`] opens a transaction and
//! takes the row lock (`SELECT … FOR UPDATE`), which the refresher holds during its HTTP call
//! and releases by committing the new tokens ([`record_refresh`]) or the failure. A worker that
//! waited for the lock re-reads the row and compares `token_version` with what it saw before,
//! so it uses the tokens another worker just committed instead of spending the old refresh
//! token again. A worker killed mid-call drops its connection, and Postgres releases the lock.
//! Nothing here sees a plaintext secret.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool, Postgres, Transaction};

use super::Error;
use crate::tokens::TokenStatus;

/// One `oauth_tokens` row. The token columns are ciphertexts.
#[derive(Clone, sqlx::FromRow)]
pub struct TokenRow {
    /// The provider (primary key).
    pub provider: String,
    /// Ciphertext of the current access token, if any.
    pub access_token: Option<Vec<u8>>,
    /// Ciphertext of the refresh token.
    pub refresh_token: Vec<u8>,
    /// The key both ciphertexts are under.
    pub key_id: String,
    /// When the access token expires, if known.
    pub expires_at: Option<DateTime<Utc>>,
    /// When the access token was obtained.
    pub obtained_at: Option<DateTime<Utc>>,
    /// Bumped by every refresh and every `tokens add`.
    pub token_version: i64,
    /// `active`, `needs_reauth`, `config_error` or `decrypt_error`.
    pub status: String,
    /// Failed refreshes since the last success.
    pub consecutive_failures: i32,
    /// The last failure, without secrets.
    pub last_error: Option<String>,
    /// No refresh before this (backoff).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The last successful refresh.
    pub refreshed_at: Option<DateTime<Utc>>,
    /// The last change of the row.
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for TokenRow {
    /// Leaves the ciphertexts out: they are not secrets, but they are noise in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRow")
            .field("provider", &self.provider)
            .field("key_id", &self.key_id)
            .field("token_version", &self.token_version)
            .field("status", &self.status)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl TokenRow {
    /// The status as an enum.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a value outside the vocabulary (the table's CHECK prevents it).
    pub fn status(&self) -> Result<TokenStatus, Error> {
        TokenStatus::parse(&self.status).ok_or_else(|| {
            Error::Invalid(format!(
                "oauth_tokens row {:?} has an unknown status {:?}",
                self.provider, self.status
            ))
        })
    }
}

/// What a successful refresh writes (ciphertexts only).
#[derive(Debug, Clone)]
pub struct Refreshed<'a> {
    /// The new access token's ciphertext.
    pub access_token: &'a [u8],
    /// The refresh token's ciphertext: the new one, or the old one re-sealed.
    pub refresh_token: &'a [u8],
    /// The key both are under.
    pub key_id: &'a str,
    /// When the new access token was obtained.
    pub obtained_at: DateTime<Utc>,
    /// When it expires, if the endpoint said.
    pub expires_at: Option<DateTime<Utc>>,
}

/// The columns of [`TokenRow`], as a literal so queries stay static strings.
macro_rules! columns {
    () => {
        "provider, access_token, refresh_token, key_id, expires_at, obtained_at, token_version, \
         status, consecutive_failures, last_error, next_attempt_at, refreshed_at, updated_at"
    };
}

/// Every row, by provider.
///
/// # Errors
/// When the query fails.
pub async fn list(pool: &PgPool) -> Result<Vec<TokenRow>, Error> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM oauth_tokens ORDER BY provider"
    ))
    .fetch_all(pool)
    .await?)
}

/// The row of `provider`, if any.
///
/// # Errors
/// When the query fails.
pub async fn get(db: impl PgExecutor<'_>, provider: &str) -> Result<Option<TokenRow>, Error> {
    Ok(sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM oauth_tokens WHERE provider = $1"
    ))
    .bind(provider)
    .fetch_optional(db)
    .await?)
}

/// Stores a new refresh token for `provider` (an operator's `tokens add`): the access token is
/// dropped, the version bumped, the status reset to `active`. Waits for a refresher holding
/// the row. Returns the new version.
///
/// # Errors
/// When the query fails.
pub async fn put_refresh_token(
    pool: &PgPool,
    provider: &str,
    refresh_token: &[u8],
    key_id: &str,
) -> Result<i64, Error> {
    Ok(sqlx::query_scalar(
        "INSERT INTO oauth_tokens (provider, refresh_token, key_id)
         VALUES ($1, $2, $3)
         ON CONFLICT (provider) DO UPDATE SET
             refresh_token = EXCLUDED.refresh_token, key_id = EXCLUDED.key_id,
             access_token = NULL, expires_at = NULL, obtained_at = NULL,
             token_version = oauth_tokens.token_version + 1, status = 'active',
             consecutive_failures = 0, last_error = NULL, next_attempt_at = NULL,
             updated_at = now()
         RETURNING token_version",
    )
    .bind(provider)
    .bind(refresh_token)
    .bind(key_id)
    .fetch_one(pool)
    .await?)
}

/// Deletes the row of `provider`; whether there was one.
///
/// # Errors
/// When the query fails.
pub async fn delete(pool: &PgPool, provider: &str) -> Result<bool, Error> {
    let result = sqlx::query("DELETE FROM oauth_tokens WHERE provider = $1")
        .bind(provider)
        .execute(pool)
        .await?;
    Ok(result.rows_affected() > 0)
}

/// Opens a transaction and locks the row of `provider` (`FOR UPDATE`), waiting at most
/// `wait` for another holder; returns the transaction and the row as it is now (`None` if it
/// is gone). Commit or drop the transaction to release the lock.
///
/// # Errors
/// When the query fails, including a lock wait longer than `wait`.
pub async fn lock(
    pool: &PgPool,
    provider: &str,
    wait: Duration,
) -> Result<(Transaction<'static, Postgres>, Option<TokenRow>), Error> {
    let mut tx = pool.begin().await?;
    // `SET LOCAL` takes no bind parameters; `set_config(..., true)` is the same, bound.
    sqlx::query("SELECT set_config('lock_timeout', $1, true)")
        .bind(format!("{}ms", wait.as_millis().max(1)))
        .execute(&mut *tx)
        .await?;
    let row = sqlx::query_as(concat!(
        "SELECT ",
        columns!(),
        " FROM oauth_tokens WHERE provider = $1 FOR UPDATE"
    ))
    .bind(provider)
    .fetch_optional(&mut *tx)
    .await?;
    Ok((tx, row))
}

/// Writes a successful refresh: new ciphertexts, expiry, `token_version + 1`, status `active`,
/// failures cleared. Returns the new version.
///
/// # Errors
/// When the query fails.
pub async fn record_refresh(
    db: impl PgExecutor<'_>,
    provider: &str,
    refreshed: &Refreshed<'_>,
) -> Result<i64, Error> {
    Ok(sqlx::query_scalar(
        "UPDATE oauth_tokens SET access_token = $2, refresh_token = $3, key_id = $4,
             obtained_at = $5, expires_at = $6, token_version = token_version + 1,
             status = 'active', consecutive_failures = 0, last_error = NULL,
             next_attempt_at = NULL, refreshed_at = $5, updated_at = now()
         WHERE provider = $1
         RETURNING token_version",
    )
    .bind(provider)
    .bind(refreshed.access_token)
    .bind(refreshed.refresh_token)
    .bind(refreshed.key_id)
    .bind(refreshed.obtained_at)
    .bind(refreshed.expires_at)
    .fetch_one(db)
    .await?)
}

/// Writes a failed refresh: the tokens stay, the status becomes `status`, the failure count
/// goes up, `last_error` (never a secret) and the backoff are set.
///
/// # Errors
/// When the query fails.
pub async fn record_failure(
    db: impl PgExecutor<'_>,
    provider: &str,
    status: TokenStatus,
    last_error: &str,
    next_attempt_at: Option<DateTime<Utc>>,
) -> Result<(), Error> {
    sqlx::query(
        "UPDATE oauth_tokens SET status = $2, consecutive_failures = consecutive_failures + 1,
             last_error = $3, next_attempt_at = $4, updated_at = now()
         WHERE provider = $1",
    )
    .bind(provider)
    .bind(status.as_str())
    .bind(last_error)
    .bind(next_attempt_at)
    .execute(db)
    .await?;
    Ok(())
}

/// Up to `limit` providers whose row is under a key other than `key_id` (for rotate-key).
///
/// # Errors
/// When the query fails.
pub async fn under_other_key(
    pool: &PgPool,
    key_id: &str,
    limit: i64,
) -> Result<Vec<String>, Error> {
    Ok(sqlx::query_scalar(
        "SELECT provider FROM oauth_tokens WHERE key_id <> $1 ORDER BY provider LIMIT $2",
    )
    .bind(key_id)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Replaces both ciphertexts of a locked row with ones under `key_id` (rotate-key); the
/// version is unchanged, since the secrets are.
///
/// # Errors
/// When the query fails.
pub async fn reencrypt(
    db: impl PgExecutor<'_>,
    provider: &str,
    access_token: Option<&[u8]>,
    refresh_token: &[u8],
    key_id: &str,
) -> Result<(), Error> {
    sqlx::query(
        "UPDATE oauth_tokens SET access_token = $2, refresh_token = $3, key_id = $4,
             updated_at = now()
         WHERE provider = $1",
    )
    .bind(provider)
    .bind(access_token)
    .bind(refresh_token)
    .bind(key_id)
    .execute(db)
    .await?;
    Ok(())
}
