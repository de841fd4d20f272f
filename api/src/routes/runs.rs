//! `GET /api/v1/runs`: attempts from the ledger, newest first, in keyset pages by row id.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use upkeep_shared::operator::RunFilter;
use upkeep_shared::store::runs::{self, RunRow};
use utoipa::ToSchema;

use crate::auth::{Caller, Role};
use crate::params::Params;
use crate::routes::openapi::ErrorBody;
use crate::routes::page::PageRequest;
use crate::{ApiError, AppState};

/// A `job_runs` status, as the `status` filter takes it.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // documents the accepted values; parsed by RunStatus::parse
#[schema(rename_all = "lowercase")]
pub(crate) enum RunStatusParam {
    Running,
    Succeeded,
    Failed,
    Abandoned,
    Skipped,
}

/// One page of attempts.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub(crate) struct RunsPage {
    /// Attempts, newest row first.
    #[schema(value_type = Vec<Object>)]
    runs: Vec<RunRow>,
    /// Pass as `before` for the next (older) page; null on the last page.
    next: Option<i64>,
}

/// Recent attempts, newest first (read role).
#[utoipa::path(
    get,
    path = "/api/v1/runs",
    tag = "ledger",
    params(
        ("kind" = Option<String>, Query, description = "Only this job kind (`system.ping`)"),
        ("status" = Option<RunStatusParam>, Query, description = "Only this status"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "Page size (default 50)"),
        ("before" = Option<i64>, Query, minimum = 1, description = "Only rows older than this id: the previous page's `next`"),
    ),
    responses(
        (status = 200, description = "A page of attempts", body = RunsPage),
        (status = 400, description = "A parameter is invalid; `field` names it", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    mut params: Params,
) -> Result<Json<RunsPage>, ApiError> {
    caller.require(Role::Read)?;
    let kind = params.text("kind")?;
    let status = params.text("status")?;
    let page = PageRequest::take(&mut params)?;
    params.finish(&["kind", "status", "limit", "before"])?;
    let filter = RunFilter::parse(kind.as_deref(), status.as_deref(), page.limit)?;
    // Concurrent requests for the same page (dashboards polling the newest attempts) share
    // one query that started after they arrived.
    let key = (
        filter.kind.clone(),
        filter.status.map(|status| status.as_str()),
        page.before,
        filter.limit,
    );
    let shared = state
        .answers
        .runs_pages
        .get(key, || async {
            let rows = runs::runs_page(
                &state.db,
                filter.kind.as_deref(),
                filter.status,
                page.before,
                filter.limit,
            )
            .await?;
            let next = page.next(&rows, |row| row.id);
            Ok::<_, ApiError>(Arc::new(RunsPage { runs: rows, next }))
        })
        .await?;
    Ok(Json(RunsPage::clone(&shared)))
}
