//! `tokens.refresh {"provider"?}`: refreshes the OAuth2 credentials that are due (all
//! configured providers, or the one named) and reports their health as findings.
//!
//! The work is `upkeep_shared::tokens::Refresher::run_pass`; this module decodes the job's
//! arguments and turns library errors into `JobError`s. One `Refresher` (and so one pooled
//! HTTP client) serves every job of the process.

use std::sync::Arc;

use serde::Deserialize;
use upkeep_shared::tokens::{self, Refresher};
use upkeep_shared::{Job, JobError, Outcome};

use crate::registry::HandlerContext;

/// Arguments of `tokens.refresh`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshArgs {
    /// Only this provider; all configured ones when absent.
    #[serde(default)]
    provider: Option<String>,
}

/// Builds the process's refresher from its settings: the keyring from `UPKEEP_SECRET_KEY`
/// (and `UPKEEP_SECRET_KEY_PREVIOUS` during a rotation).
///
/// # Errors
/// When the HTTP client cannot be built.
pub fn refresher(ctx: &HandlerContext) -> Result<Refresher, tokens::Error> {
    let settings = &ctx.settings;
    let keyring = tokens::keyring(settings).ok();
    Refresher::new(settings.tokens.clone(), keyring)
}

/// Runs one `tokens.refresh` job.
///
/// # Errors
/// `Permanent` for bad arguments, an unknown provider or a missing key; `Retryable` when
/// Postgres fails.
pub async fn run(
    ctx: &HandlerContext,
    refresher: &Result<Arc<Refresher>, Arc<tokens::Error>>,
    job: Job,
) -> Result<Outcome, JobError> {
    let args: RefreshArgs = if job.args.is_null() {
        RefreshArgs::default()
    } else {
        serde_json::from_value(job.args.clone())
            .map_err(|e| JobError::Permanent(format!("bad args for tokens.refresh: {e}")))?
    };
    let refresher = refresher
        .as_ref()
        .map_err(|e| JobError::Permanent(format!("the token refresher is unavailable: {e}")))?;
    match refresher.run_pass(&ctx.db, args.provider.as_deref()).await {
        Ok(outcome) => Ok(outcome),
        Err(error @ (tokens::Error::Store(_) | tokens::Error::HttpClient(_))) => {
            Err(JobError::retryable(error_chain(&error)))
        }
        Err(error) => Err(JobError::Permanent(error.to_string())),
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
