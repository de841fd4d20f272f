//! The operator's verbs behind `upkeepctl tokens`: add a refresh token, list credentials (never
//! a secret), get the current access token, revoke (forget) a credential, and re-encrypt every
//! row under a new key.

use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sqlx::PgPool;

use super::crypto::{Column, Keyring};
use super::plan;
use super::refresher::due_input;
use super::settings::TokenSettings;
use super::{Error, TokenStatus};
use crate::store;

/// One credential as `tokens list` shows it: state, never a secret.
#[derive(Debug, Clone, Serialize)]
pub struct CredentialInfo {
    /// The provider.
    pub provider: String,
    /// Whether `[[tokens.providers]]` has it.
    pub configured: bool,
    /// `active`, `needs_reauth`, `config_error`, `decrypt_error`, or `missing` (configured,
    /// nothing stored).
    pub status: String,
    /// Whether an access token is stored.
    pub has_access_token: bool,
    /// When it expires.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it will next be refreshed.
    pub next_refresh_at: Option<DateTime<Utc>>,
    /// The row's version.
    pub token_version: Option<i64>,
    /// Failed refreshes since the last success.
    pub consecutive_failures: i32,
    /// The last failure, without secrets.
    pub last_error: Option<String>,
    /// The last successful refresh.
    pub refreshed_at: Option<DateTime<Utc>>,
    /// The key the row is encrypted under.
    pub key_id: Option<String>,
}

/// What `rotate-key` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RotateReport {
    /// The key every row is now under.
    pub key_id: String,
    /// Rows re-encrypted.
    pub n_reencrypted: u64,
    /// Rows that could not be decrypted with either key (left as they are), with the reason.
    pub failed: Vec<(String, String)>,
}

/// Stores `refresh_token` for the configured `provider`; the next `tokens.refresh` obtains an
/// access token with it. Returns the row's new version.
///
/// # Errors
/// [`Error::UnknownProvider`] when it is not configured, else store or crypto errors.
pub async fn add(
    pool: &PgPool,
    settings: &TokenSettings,
    keyring: &Keyring,
    provider: &str,
    refresh_token: &SecretString,
) -> Result<i64, Error> {
    require_configured(settings, provider)?;
    if refresh_token.expose_secret().trim().is_empty() {
        return Err(Error::NoAccessToken {
            provider: provider.to_owned(),
            reason: "the refresh token read from stdin is empty".to_owned(),
        });
    }
    let sealed = keyring.seal(provider, Column::RefreshToken, refresh_token)?;
    Ok(
        store::oauth_tokens::put_refresh_token(pool, provider, &sealed.bytes, &sealed.key_id)
            .await?,
    )
}

/// Every stored or configured credential, by provider.
///
/// # Errors
/// When the query fails.
pub async fn list(pool: &PgPool, settings: &TokenSettings) -> Result<Vec<CredentialInfo>, Error> {
    let rows = store::oauth_tokens::list(pool).await?;
    let mut infos: Vec<CredentialInfo> = rows
        .iter()
        .map(|row| CredentialInfo {
            provider: row.provider.clone(),
            configured: settings.provider(&row.provider).is_some(),
            status: row.status.clone(),
            has_access_token: row.access_token.is_some(),
            expires_at: row.expires_at,
            next_refresh_at: (row.status == TokenStatus::Active.as_str())
                .then(|| plan::due_at(&due_input(row), settings.refresh_at, settings.min_ahead))
                .flatten()
                .map(|at| at.max(row.updated_at)),
            token_version: Some(row.token_version),
            consecutive_failures: row.consecutive_failures,
            last_error: row.last_error.clone(),
            refreshed_at: row.refreshed_at,
            key_id: Some(row.key_id.clone()),
        })
        .collect();
    for provider in &settings.providers {
        if !rows.iter().any(|row| row.provider == provider.name) {
            infos.push(CredentialInfo {
                provider: provider.name.clone(),
                configured: true,
                status: "missing".to_owned(),
                has_access_token: false,
                expires_at: None,
                next_refresh_at: None,
                token_version: None,
                consecutive_failures: 0,
                last_error: None,
                refreshed_at: None,
                key_id: None,
            });
        }
    }
    infos.sort_by(|a, b| a.provider.cmp(&b.provider));
    Ok(infos)
}

/// A provider's current access token, as [`get`] returns it.
#[derive(Debug)]
pub struct AccessToken {
    /// The token itself.
    pub token: SecretString,
    /// When it expires, if the provider said.
    pub expires_at: Option<DateTime<Utc>>,
}

/// The current access token of `provider`, for scripts and the API.
///
/// # Errors
/// [`Error::NotStored`], [`Error::NoAccessToken`] when the credential is not `active`, has no
/// access token yet or it expired; [`Error::Crypto`] when it does not decrypt.
pub async fn get(pool: &PgPool, keyring: &Keyring, provider: &str) -> Result<AccessToken, Error> {
    let row = store::oauth_tokens::get(pool, provider)
        .await?
        .ok_or_else(|| Error::NotStored(provider.to_owned()))?;
    let unusable = |reason: String| Error::NoAccessToken {
        provider: provider.to_owned(),
        reason,
    };
    if row.status != TokenStatus::Active.as_str() {
        return Err(unusable(format!("its status is {}", row.status)));
    }
    let access = row
        .access_token
        .as_ref()
        .ok_or_else(|| unusable("no refresh has run yet".to_owned()))?;
    if let Some(expires_at) = row.expires_at
        && expires_at <= Utc::now()
    {
        return Err(unusable(format!("it expired at {expires_at}")));
    }
    Ok(AccessToken {
        token: keyring.open(provider, Column::AccessToken, &row.key_id, access)?,
        expires_at: row.expires_at,
    })
}

/// Forgets the credential of `provider` (its row is deleted); whether one was stored.
///
/// # Errors
/// When the query fails.
pub async fn revoke(pool: &PgPool, provider: &str) -> Result<bool, Error> {
    Ok(store::oauth_tokens::delete(pool, provider).await?)
}

/// Re-encrypts every row not yet under the keyring's current key, `batch` rows at a time, each
/// row under its lock (so a refresher holding it finishes first and its new tokens are the ones
/// re-encrypted). Rows that decrypt with neither key are reported and left alone.
///
/// # Errors
/// Store errors.
pub async fn rotate_key(
    pool: &PgPool,
    keyring: &Keyring,
    batch: i64,
) -> Result<RotateReport, Error> {
    let mut report = RotateReport {
        key_id: keyring.current_id().to_owned(),
        ..RotateReport::default()
    };
    loop {
        let providers =
            store::oauth_tokens::under_other_key(pool, keyring.current_id(), batch.max(1)).await?;
        let pending: Vec<String> = providers
            .into_iter()
            .filter(|provider| !report.failed.iter().any(|(failed, _)| failed == provider))
            .collect();
        if pending.is_empty() {
            return Ok(report);
        }
        for provider in pending {
            let (mut tx, row) =
                store::oauth_tokens::lock(pool, &provider, Duration::from_secs(60)).await?;
            let Some(row) = row else { continue };
            if row.key_id == keyring.current_id() {
                continue;
            }
            let opened = (|| {
                let refresh = keyring.open(
                    &provider,
                    Column::RefreshToken,
                    &row.key_id,
                    &row.refresh_token,
                )?;
                let access = row
                    .access_token
                    .as_ref()
                    .map(|bytes| keyring.open(&provider, Column::AccessToken, &row.key_id, bytes))
                    .transpose()?;
                let refresh = keyring.seal(&provider, Column::RefreshToken, &refresh)?;
                let access = access
                    .map(|access| keyring.seal(&provider, Column::AccessToken, &access))
                    .transpose()?;
                Ok::<_, super::crypto::CryptoError>((access, refresh))
            })();
            match opened {
                Ok((access, refresh)) => {
                    store::oauth_tokens::reencrypt(
                        &mut *tx,
                        &provider,
                        access.as_ref().map(|sealed| sealed.bytes.as_slice()),
                        &refresh.bytes,
                        &refresh.key_id,
                    )
                    .await?;
                    tx.commit().await.map_err(store::Error::from)?;
                    report.n_reencrypted += 1;
                }
                Err(error) => report.failed.push((provider.clone(), error.to_string())),
            }
        }
    }
}

fn require_configured(settings: &TokenSettings, provider: &str) -> Result<(), Error> {
    if settings.provider(provider).is_some() {
        return Ok(());
    }
    let names: Vec<&str> = settings.providers.iter().map(|p| p.name.as_str()).collect();
    Err(Error::UnknownProvider {
        name: provider.to_owned(),
        known: if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        },
    })
}
