//! OAuth2 credentials kept fresh by `upkeep-worker-tokens`: settings, encryption at rest,
//! refresh planning, the token endpoint client, the refresh pass and the operator's verbs.
//!
//! - [`settings`]: `[tokens]` and `[[tokens.providers]]`.
//! - [`crypto`]: AES-256-GCM with row/column-bound associated data and key ids.
//! - [`plan`]: when a credential is due, backoff, what an endpoint's error means (pure).
//! - [`client`]: one refresh-token grant over `oauth2` + `reqwest` (rustls, no redirects,
//!   timeouts), with the HTTP status and `Retry-After` kept for classification.
//! - [`export`]: the atomic write of the access token to `export_file`.
//! - [`refresher`]: the `tokens.refresh` pass (row lock, version re-check, commit before
//!   export, findings).
//! - [`admin`]: `upkeepctl tokens add|list|get|revoke|rotate-key`.
//!
//! Secrets only travel as `secrecy` types; errors, findings, outcomes and logs carry provider
//! names, statuses and key ids, never a token, a client secret or a key.

pub mod admin;
pub mod client;
pub mod crypto;
pub mod export;
pub mod plan;
pub mod refresher;
pub mod settings;

pub use crypto::{Column, Key, Keyring};

/// The keyring of `settings`: `UPKEEP_SECRET_KEY`, and `UPKEEP_SECRET_KEY_PREVIOUS` during a
/// rotation.
///
/// # Errors
/// [`Error::NoKey`] without `UPKEEP_SECRET_KEY`.
pub fn keyring(settings: &crate::config::Settings) -> Result<Keyring, Error> {
    let key = |secret: &crate::config::SecretKey| {
        Key::new(&secrecy::SecretBox::new(Box::new(*secret.expose_bytes())))
    };
    let current = settings.secret_key.as_ref().ok_or(Error::NoKey)?;
    Ok(Keyring::new(
        key(current),
        settings.secret_key_previous.as_ref().map(key),
    ))
}
pub use refresher::Refresher;
pub use settings::{AuthMethod, ProviderSettings, TokenSettings};

/// A credential's status in `oauth_tokens.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenStatus {
    /// Refreshed as it comes due.
    Active,
    /// The grant was refused (`invalid_grant`): run `upkeepctl tokens add` again.
    NeedsReauth,
    /// The endpoint refused the client configuration; retried slowly.
    ConfigError,
    /// A ciphertext did not decrypt (tampered, moved, or under an unknown key).
    DecryptError,
}

impl TokenStatus {
    /// The column's spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::NeedsReauth => "needs_reauth",
            Self::ConfigError => "config_error",
            Self::DecryptError => "decrypt_error",
        }
    }

    /// Parses the column's spelling.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(Self::Active),
            "needs_reauth" => Some(Self::NeedsReauth),
            "config_error" => Some(Self::ConfigError),
            "decrypt_error" => Some(Self::DecryptError),
            _ => None,
        }
    }
}

/// Why a token operation failed. Messages name providers and keys, never secrets.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A query failed.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    /// A ciphertext did not decrypt, or encryption failed.
    #[error(transparent)]
    Crypto(#[from] crypto::CryptoError),
    /// No `UPKEEP_SECRET_KEY` was given.
    #[error("UPKEEP_SECRET_KEY is not set (base64 of 32 bytes); stored credentials need it")]
    NoKey,
    /// The provider is not in `[[tokens.providers]]`.
    #[error("provider {name:?} is not configured in [[tokens.providers]] (configured: {known})")]
    UnknownProvider {
        /// The name asked for.
        name: String,
        /// The configured names.
        known: String,
    },
    /// The provider has no stored credential.
    #[error("no credential stored for {0:?}: run `upkeepctl tokens add {0} --refresh-token-stdin`")]
    NotStored(String),
    /// The credential has no usable access token.
    #[error("no usable access token for {provider:?}: {reason}")]
    NoAccessToken {
        /// The provider.
        provider: String,
        /// Why (status, expiry).
        reason: String,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client for token requests")]
    HttpClient(#[source] reqwest::Error),
}
