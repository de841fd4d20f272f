//! `GET /api/v1/findings`: what jobs observed, newest first, in keyset pages by row id.

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use upkeep_shared::Severity;
use upkeep_shared::store::findings::{self, FindingFilter, FindingRow};
use utoipa::ToSchema;

use crate::auth::{Caller, Role};
use crate::params::Params;
use crate::routes::openapi::ErrorBody;
use crate::routes::page::PageRequest;
use crate::{ApiError, AppState};

/// The longest `code` accepted.
const MAX_CODE_CHARS: usize = 200;

/// A finding's severity, as the `severity` filter takes it.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // documents the accepted values
#[schema(rename_all = "lowercase")]
pub(crate) enum SeverityParam {
    Ok,
    Warn,
    Critical,
}

/// One page of findings.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct FindingsPage {
    /// Findings, newest row first; `open` says whether each is its condition's newest and
    /// `warn` or `critical`.
    #[schema(value_type = Vec<Object>)]
    findings: Vec<FindingRow>,
    /// Pass as `before` for the next (older) page; null on the last page.
    next: Option<i64>,
}

/// Findings, newest first (read role).
#[utoipa::path(
    get,
    path = "/api/v1/findings",
    tag = "ledger",
    params(
        ("severity" = Option<SeverityParam>, Query, description = "Only this severity"),
        ("code" = Option<String>, Query, description = "Only this code (`disk.used_pct`)"),
        ("open" = Option<bool>, Query, description = "true: only open conditions; false: only the others"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "Page size (default 50)"),
        ("before" = Option<i64>, Query, minimum = 1, description = "Only rows older than this id: the previous page's `next`"),
    ),
    responses(
        (status = 200, description = "A page of findings", body = FindingsPage),
        (status = 400, description = "A parameter is invalid; `field` names it", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    mut params: Params,
) -> Result<Json<FindingsPage>, ApiError> {
    caller.require(Role::Read)?;
    let severity = match params.text("severity")?.as_deref() {
        None => None,
        Some("ok") => Some(Severity::Ok),
        Some("warn") => Some(Severity::Warn),
        Some("critical") => Some(Severity::Critical),
        Some(other) => {
            return Err(ApiError::bad(
                "severity",
                format!("severity must be ok, warn or critical, got {other:?}"),
            ));
        }
    };
    let code = params.text("code")?;
    if let Some(code) = &code
        && (code.trim().is_empty() || code.chars().count() > MAX_CODE_CHARS)
    {
        return Err(ApiError::bad(
            "code",
            format!("code must be 1 to {MAX_CODE_CHARS} characters, got {code:?}"),
        ));
    }
    let open = params.bool("open")?;
    let page = PageRequest::take(&mut params)?;
    params.finish(&["severity", "code", "open", "limit", "before"])?;
    let filter = FindingFilter {
        severity,
        code,
        open,
    };
    let rows = findings::page(&state.db, &filter, page.before, page.limit).await?;
    let next = page.next(&rows, |row| row.id);
    Ok(Json(FindingsPage {
        findings: rows,
        next,
    }))
}
