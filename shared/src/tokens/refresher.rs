//! The `tokens.refresh` pass: refresh every configured credential that is due, exactly once
//! across all workers, and report the credentials' health as findings.
//!
//! Per due credential: lock its row (`store::oauth_tokens::lock`, `FOR UPDATE`), re-read it
//! and compare `token_version` with the version seen before waiting. A changed version means
//! another worker refreshed while this one waited: its tokens are used, no request is made.
//! Otherwise the refresh token is decrypted and exchanged while the lock is held, and the new
//! tokens are committed (the new refresh token, or the old one when the response has none)
//! before the access token is exported. `invalid_grant` makes the credential `needs_reauth`
//! after re-reading the row; 429, 5xx and timeouts keep the old tokens and set a jittered
//! `next_attempt_at`. A worker killed mid-request drops its connection and so its lock.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use sqlx::PgPool;

use super::client::{ExchangeError, TokenClient};
use super::crypto::{Column, Keyring};
use super::plan::{self, DueInput, Verdict};
use super::settings::{ProviderSettings, TokenSettings};
use super::{Error, TokenStatus, export};
use crate::job::{self, Finding, Outcome, Severity};
use crate::store::{self, oauth_tokens::TokenRow};

/// The finding codes this pass reports and resolves.
pub const FINDING_CODES: &[&str] = &[
    "tokens.needs_reauth",
    "tokens.decrypt_error",
    "tokens.config_error",
    "tokens.refresh_failing",
    "tokens.expiring",
    "tokens.missing",
    "tokens.export_failed",
];

/// Refreshes credentials; one per process, shared by its jobs.
#[derive(Debug)]
pub struct Refresher {
    settings: TokenSettings,
    keyring: Option<Keyring>,
    client: TokenClient,
}

/// What happened to one credential in a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// This worker refreshed it; the new version.
    Refreshed(i64),
    /// Another worker did while this one waited; the version it wrote.
    RefreshedElsewhere(i64),
    /// Nothing to do.
    NotDue,
    /// The refresh failed; the credential's new status.
    Failed(TokenStatus),
}

impl Refresher {
    /// A refresher for `settings`, with `keyring` when `UPKEEP_SECRET_KEY` is set.
    ///
    /// # Errors
    /// [`Error::HttpClient`] when the TLS backend cannot be initialised.
    pub fn new(settings: TokenSettings, keyring: Option<Keyring>) -> Result<Self, Error> {
        let client = TokenClient::new(settings.request_timeout).map_err(Error::HttpClient)?;
        Ok(Self {
            settings,
            keyring,
            client,
        })
    }

    /// One pass over the configured providers (or only `only`): refreshes what is due and
    /// reports each credential's condition. Conditions reported before and still open are
    /// not repeated; ones that went away are resolved.
    ///
    /// # Errors
    /// [`Error::UnknownProvider`] for an unconfigured `only`, [`Error::NoKey`] when providers
    /// are configured but no key was given, [`Error::Store`] when Postgres fails.
    pub async fn run_pass(&self, pool: &PgPool, only: Option<&str>) -> Result<Outcome, Error> {
        if let Some(name) = only
            && self.settings.provider(name).is_none()
        {
            return Err(Error::UnknownProvider {
                name: name.to_owned(),
                known: self.known(),
            });
        }
        if self.settings.providers.is_empty() {
            return Ok(Outcome {
                summary: "no token providers configured: nothing to refresh".to_owned(),
                ..Outcome::default()
            });
        }
        let keyring = self.keyring.as_ref().ok_or(Error::NoKey)?;
        let rows: BTreeMap<String, TokenRow> = store::oauth_tokens::list(pool)
            .await?
            .into_iter()
            .map(|row| (row.provider.clone(), row))
            .collect();
        let mut current = Vec::new();
        let mut versions = serde_json::Map::new();
        let (mut n_refreshed, mut n_elsewhere, mut n_failed, mut n_requests) = (0, 0, 0, 0u32);
        // Owned copies: borrowing through a filter closure makes the future not `Send`.
        let mut scope: Vec<ProviderSettings> = Vec::new();
        for provider in &self.settings.providers {
            if only.is_none_or(|name| provider.name == name) {
                scope.push(provider.clone());
            }
        }
        for provider in &scope {
            let Some(seen) = rows.get(&provider.name) else {
                current.push(
                    Finding::new(
                        "tokens.missing",
                        Severity::Warn,
                        format!(
                            "no credential stored for {0}: run `upkeepctl tokens add {0} \
                             --refresh-token-stdin`",
                            provider.name
                        ),
                    )
                    .with_subject(&provider.name),
                );
                continue;
            };
            let step = self.refresh_if_due(pool, keyring, provider, seen).await?;
            match step {
                Step::Refreshed(_) => {
                    n_refreshed += 1;
                    n_requests += 1;
                }
                Step::RefreshedElsewhere(_) => n_elsewhere += 1,
                Step::Failed(_) => {
                    n_failed += 1;
                    n_requests += 1;
                }
                Step::NotDue => {}
            }
            let row = match step {
                Step::NotDue => Some(seen.clone()),
                _ => store::oauth_tokens::get(pool, &provider.name).await?,
            };
            let Some(row) = row else { continue };
            versions.insert(provider.name.clone(), row.token_version.into());
            current.extend(conditions(&self.settings, &row, Utc::now()));
            if let Some(finding) = self.export_if_needed(keyring, provider, &row, &step) {
                current.push(finding);
            }
        }
        for row in rows.values() {
            if only.is_none() && self.settings.provider(&row.provider).is_none() {
                current.push(
                    Finding::new(
                        "tokens.config_error",
                        Severity::Critical,
                        format!(
                            "a credential is stored for {0}, but {0} is not in \
                             [[tokens.providers]]: configure it or `upkeepctl tokens revoke {0}`",
                            row.provider
                        ),
                    )
                    .with_subject(&row.provider),
                );
            }
        }
        let open = store::findings::open(pool, FINDING_CODES).await?;
        let open_in_scope: Vec<_> = open
            .iter()
            .filter(|finding| only.is_none_or(|name| finding.subject.as_deref() == Some(name)))
            .collect();
        let pairs: Vec<(String, Option<String>)> =
            open_in_scope.iter().map(|finding| finding.pair()).collect();
        let resolved = job::resolutions(&pairs, &current);
        // A condition already open with the same severity is not reported again every minute.
        let mut findings: Vec<Finding> = current
            .into_iter()
            .filter(|finding| {
                !open_in_scope.iter().any(|open| {
                    open.code == finding.code
                        && open.subject == finding.subject
                        && open.severity == finding.severity
                })
            })
            .collect();
        findings.extend(resolved);
        let summary = format!(
            "{n_refreshed} refreshed, {n_elsewhere} refreshed by another worker, {n_failed} \
             failed, of {} credentials",
            scope.len()
        );
        let mut metrics = serde_json::Map::new();
        metrics.insert("refreshed".to_owned(), n_refreshed.into());
        metrics.insert("refreshed_elsewhere".to_owned(), n_elsewhere.into());
        metrics.insert("failed".to_owned(), n_failed.into());
        metrics.insert("requests".to_owned(), n_requests.into());
        metrics.insert("token_versions".to_owned(), versions.into());
        Ok(Outcome {
            summary,
            metrics,
            findings,
            ..Outcome::default()
        })
    }

    fn known(&self) -> String {
        let names: Vec<&str> = self
            .settings
            .providers
            .iter()
            .map(|provider| provider.name.as_str())
            .collect();
        if names.is_empty() {
            "none".to_owned()
        } else {
            names.join(", ")
        }
    }

    fn is_due(&self, row: &TokenRow, now: DateTime<Utc>) -> bool {
        let status = TokenStatus::parse(&row.status);
        matches!(status, Some(TokenStatus::Active | TokenStatus::ConfigError))
            && plan::is_due(
                &due_input(row),
                self.settings.refresh_at,
                self.settings.min_ahead,
                now,
            )
    }

    async fn refresh_if_due(
        &self,
        pool: &PgPool,
        keyring: &Keyring,
        provider: &ProviderSettings,
        seen: &TokenRow,
    ) -> Result<Step, Error> {
        if !self.is_due(seen, Utc::now()) {
            return Ok(Step::NotDue);
        }
        // Long enough for the holder's request to time out and its failure to be written.
        let wait = self.settings.request_timeout * 2 + Duration::from_secs(5);
        let (mut tx, row) = store::oauth_tokens::lock(pool, &provider.name, wait).await?;
        let Some(row) = row else {
            return Ok(Step::NotDue);
        };
        if row.token_version != seen.token_version {
            tx.commit().await.map_err(store::Error::from)?;
            tracing::debug!(provider = %provider.name, token_version = row.token_version, "credential refreshed by another worker");
            return Ok(Step::RefreshedElsewhere(row.token_version));
        }
        if !self.is_due(&row, Utc::now()) {
            return Ok(Step::NotDue);
        }
        let refresh_token = match keyring.open(
            &provider.name,
            Column::RefreshToken,
            &row.key_id,
            &row.refresh_token,
        ) {
            Ok(token) => token,
            Err(error) => {
                store::oauth_tokens::record_failure(
                    &mut *tx,
                    &provider.name,
                    TokenStatus::DecryptError,
                    &error.to_string(),
                    None,
                )
                .await?;
                tx.commit().await.map_err(store::Error::from)?;
                tracing::error!(provider = %provider.name, error = %error, "credential does not decrypt");
                return Ok(Step::Failed(TokenStatus::DecryptError));
            }
        };
        match self.client.refresh(provider, &refresh_token).await {
            Ok(grant) => {
                let obtained_at = Utc::now();
                let new_refresh = grant.refresh_token.as_ref().unwrap_or(&refresh_token);
                let access =
                    keyring.seal(&provider.name, Column::AccessToken, &grant.access_token)?;
                let refresh = keyring.seal(&provider.name, Column::RefreshToken, new_refresh)?;
                let expires_at = grant
                    .expires_in
                    .and_then(|lifetime| chrono::Duration::from_std(lifetime).ok())
                    .map(|lifetime| obtained_at + lifetime);
                let version = store::oauth_tokens::record_refresh(
                    &mut *tx,
                    &provider.name,
                    &store::oauth_tokens::Refreshed {
                        access_token: &access.bytes,
                        refresh_token: &refresh.bytes,
                        key_id: &access.key_id,
                        obtained_at,
                        expires_at,
                    },
                )
                .await?;
                // The new refresh token is durable before the new access token is used.
                tx.commit().await.map_err(store::Error::from)?;
                tracing::info!(
                    provider = %provider.name,
                    token_version = version,
                    rotated = grant.refresh_token.is_some(),
                    "credential refreshed"
                );
                Ok(Step::Refreshed(version))
            }
            Err(failure) => {
                let status = self
                    .record_exchange_failure(&mut tx, &row, &failure)
                    .await?;
                tx.commit().await.map_err(store::Error::from)?;
                tracing::warn!(
                    provider = %provider.name,
                    status = status.as_str(),
                    http_status = failure.status,
                    error = %failure,
                    "credential refresh failed"
                );
                Ok(Step::Failed(status))
            }
        }
    }

    async fn record_exchange_failure(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        row: &TokenRow,
        failure: &ExchangeError,
    ) -> Result<TokenStatus, Error> {
        let verdict = plan::classify(failure.status, failure.code.as_deref());
        let n_failures = u32::try_from(row.consecutive_failures).unwrap_or(0) + 1;
        let now = Utc::now();
        let (status, delay) = match verdict {
            Verdict::NeedsReauth => {
                // Re-read the row: if its refresh token changed since it was read (an operator's
                // `tokens add` that did not wait for the lock), the refusal was about the old
                // grant and the new one must not be marked.
                let again = store::oauth_tokens::get(&mut **tx, &row.provider).await?;
                if again.is_some_and(|again| again.token_version != row.token_version) {
                    return Ok(TokenStatus::Active);
                }
                (TokenStatus::NeedsReauth, None)
            }
            Verdict::ConfigError => (TokenStatus::ConfigError, Some(self.settings.retry_max)),
            Verdict::Transient => (
                TokenStatus::Active,
                Some(plan::backoff(
                    n_failures,
                    self.settings.retry_base,
                    self.settings.retry_max,
                    rand::random::<f64>(),
                    failure.retry_after,
                )),
            ),
        };
        let next_attempt_at = delay
            .and_then(|delay| chrono::Duration::from_std(delay).ok())
            .map(|delay| now + delay);
        store::oauth_tokens::record_failure(
            &mut **tx,
            &row.provider,
            status,
            &failure.to_string(),
            next_attempt_at,
        )
        .await?;
        Ok(status)
    }

    /// Writes the export file after a refresh, or when it is missing; a warn finding when the
    /// write fails (the credential itself is fine).
    fn export_if_needed(
        &self,
        keyring: &Keyring,
        provider: &ProviderSettings,
        row: &TokenRow,
        step: &Step,
    ) -> Option<Finding> {
        let path = provider.export_file.as_ref()?;
        let access = row.access_token.as_ref()?;
        let fresh = matches!(step, Step::Refreshed(_) | Step::RefreshedElsewhere(_));
        let wanted = fresh || !path.exists();
        if row.status != TokenStatus::Active.as_str() || !wanted {
            return None;
        }
        let token: SecretString =
            match keyring.open(&provider.name, Column::AccessToken, &row.key_id, access) {
                Ok(token) => token,
                Err(error) => {
                    return Some(
                        Finding::new("tokens.export_failed", Severity::Warn, error.to_string())
                            .with_subject(&provider.name),
                    );
                }
            };
        match export::write_atomically(
            path,
            &token,
            provider.export_mode_bits(),
            provider.export_owner_ids(),
        ) {
            Ok(()) => {
                tracing::info!(provider = %provider.name, path = %path.display(), token_version = row.token_version, "access token exported");
                None
            }
            Err(error) => Some(
                Finding::new(
                    "tokens.export_failed",
                    Severity::Warn,
                    format!("cannot write {}: {error}", path.display()),
                )
                .with_subject(&provider.name),
            ),
        }
    }
}

/// The planning view of a row.
#[must_use]
pub fn due_input(row: &TokenRow) -> DueInput<'_> {
    DueInput {
        provider: &row.provider,
        token_version: row.token_version,
        obtained_at: row.access_token.as_ref().and(row.obtained_at),
        expires_at: row.access_token.as_ref().and(row.expires_at),
        next_attempt_at: row.next_attempt_at,
    }
}

/// The conditions a row shows at `now`: its status, failing refreshes, and expiry while
/// refreshes fail.
fn conditions(settings: &TokenSettings, row: &TokenRow, now: DateTime<Utc>) -> Vec<Finding> {
    let mut findings = Vec::new();
    let subject = row.provider.as_str();
    let last_error = row.last_error.as_deref().unwrap_or("unknown error");
    match TokenStatus::parse(&row.status) {
        Some(TokenStatus::NeedsReauth) => findings.push(
            Finding::new(
                "tokens.needs_reauth",
                Severity::Critical,
                format!(
                    "the provider refused the grant of {subject}: re-authorise and run \
                     `upkeepctl tokens add {subject} --refresh-token-stdin` ({last_error})"
                ),
            )
            .with_subject(subject),
        ),
        Some(TokenStatus::DecryptError) => findings.push(
            Finding::new("tokens.decrypt_error", Severity::Critical, last_error)
                .with_subject(subject),
        ),
        Some(TokenStatus::ConfigError) => findings.push(
            Finding::new(
                "tokens.config_error",
                Severity::Critical,
                format!("the provider refused the client configuration: {last_error}"),
            )
            .with_subject(subject),
        ),
        Some(TokenStatus::Active) | None => {}
    }
    if row.consecutive_failures > 0 {
        let failing = TokenStatus::parse(&row.status)
            .is_some_and(|status| matches!(status, TokenStatus::Active | TokenStatus::ConfigError));
        if failing {
            findings.push(
                Finding::new(
                    "tokens.refresh_failing",
                    Severity::Warn,
                    format!(
                        "{} consecutive refreshes failed: {last_error}",
                        row.consecutive_failures
                    ),
                )
                .with_subject(subject),
            );
        }
        let alert_before =
            chrono::Duration::from_std(settings.alert_before).unwrap_or(chrono::Duration::zero());
        if let Some(expires_at) = row.expires_at
            && expires_at - now <= alert_before
        {
            let message = if expires_at <= now {
                format!("the access token expired at {expires_at} and refreshes are failing")
            } else {
                format!("the access token expires at {expires_at} and refreshes are failing")
            };
            findings.push(
                Finding::new("tokens.expiring", Severity::Critical, message)
                    .with_subject(subject)
                    .with_detail(serde_json::json!({
                        "expires_at": expires_at,
                        "consecutive_failures": row.consecutive_failures,
                    })),
            );
        }
    }
    findings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(status: &str, failures: i32, expires_in_secs: i64) -> TokenRow {
        let now = Utc::now();
        TokenRow {
            provider: "crm".to_owned(),
            access_token: Some(vec![0; 40]),
            refresh_token: vec![0; 40],
            key_id: "k".to_owned(),
            expires_at: Some(now + chrono::Duration::seconds(expires_in_secs)),
            obtained_at: Some(now - chrono::Duration::seconds(3000)),
            token_version: 4,
            status: status.to_owned(),
            consecutive_failures: failures,
            last_error: (failures > 0).then(|| "the token request timed out".to_owned()),
            next_attempt_at: None,
            refreshed_at: None,
            updated_at: now,
        }
    }

    fn codes(findings: &[Finding]) -> Vec<(&str, Severity)> {
        findings
            .iter()
            .map(|f| (f.code.as_str(), f.severity))
            .collect()
    }

    #[test]
    fn a_credential_close_to_expiry_while_refreshes_fail_is_critical() {
        let settings = TokenSettings::default();
        let now = Utc::now();

        let healthy = conditions(&settings, &row("active", 0, 60), now);
        let failing_far = conditions(&settings, &row("active", 2, 3600), now);
        let failing_near = conditions(&settings, &row("active", 2, 600), now);
        let reauth = conditions(&settings, &row("needs_reauth", 1, 600), now);

        assert!(healthy.is_empty(), "{healthy:?}");
        assert_eq!(
            codes(&failing_far),
            [("tokens.refresh_failing", Severity::Warn)]
        );
        assert_eq!(
            codes(&failing_near),
            [
                ("tokens.refresh_failing", Severity::Warn),
                ("tokens.expiring", Severity::Critical)
            ]
        );
        assert_eq!(
            codes(&reauth)[0],
            ("tokens.needs_reauth", Severity::Critical)
        );
        assert!(
            failing_near
                .iter()
                .all(|f| f.subject.as_deref() == Some("crm"))
        );
    }
}
