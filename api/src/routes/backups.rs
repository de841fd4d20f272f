//! `GET /api/v1/backups`: the backup catalog (live backups, newest first per database).

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use upkeep_shared::store::backups::{self, BackupRow};
use utoipa::ToSchema;

use crate::auth::{Caller, Role};
use crate::params::Params;
use crate::routes::openapi::ErrorBody;
use crate::{ApiError, AppState};

/// The catalog.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct BackupList {
    /// Live backups, by database, newest first.
    #[schema(value_type = Vec<Object>)]
    backups: Vec<BackupRow>,
}

/// The backup catalog (read role).
#[utoipa::path(
    get,
    path = "/api/v1/backups",
    tag = "ledger",
    params(("database" = Option<String>, Query, description = "Only this configured database")),
    responses(
        (status = 200, description = "The catalog", body = BackupList),
        (status = 400, description = "A parameter is invalid; `field` names it", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    mut params: Params,
) -> Result<Json<BackupList>, ApiError> {
    caller.require(Role::Read)?;
    let database = params.text("database")?;
    params.finish(&["database"])?;
    let rows = backups::list(&state.db, database.as_deref()).await?;
    Ok(Json(BackupList { backups: rows }))
}
