//! `GET /api/v1/tasks` and `POST /api/v1/tasks/{id}/ack`.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use upkeep_shared::tasks::Period;
use utoipa::ToSchema;

use crate::auth::{Caller, Role};
use crate::checklist::{self, AckError, Checklist};
use crate::params::{Body, Params, PathOf};
use crate::routes::openapi::ErrorBody;
use crate::{ApiError, AppState};

/// A checklist period, as the `period` parameter takes it.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // documents the accepted values; parsed by Period::parse
#[schema(rename_all = "lowercase")]
pub(crate) enum PeriodParam {
    Daily,
    Weekly,
    Monthly,
}

/// The checklist of a period (default daily) for the window containing `date` (default today
/// in the checklist's zone).
#[utoipa::path(
    get,
    path = "/api/v1/tasks",
    tag = "tasks",
    params(
        ("period" = Option<PeriodParam>, Query, description = "daily (default), weekly or monthly"),
        ("date" = Option<String>, Query, format = Date, description = "A day of the window, YYYY-MM-DD (default today in [tasks] timezone)"),
    ),
    responses(
        (status = 200, description = "The checklist with each item's status and evidence", body = Object),
        (status = 400, description = "A parameter is invalid; `field` names it", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    mut params: Params,
) -> Result<Json<Checklist>, ApiError> {
    caller.require(Role::Read)?;
    let period = params.text("period")?;
    let date = params.text("date")?;
    params.finish(&["period", "date"])?;
    let period = match period.as_deref() {
        None => Period::Daily,
        Some(text) => Period::parse(text).map_err(|message| ApiError::bad("period", message))?,
    };
    let now = Utc::now();
    let date = match date.as_deref() {
        None => checklist::today(&state.settings.tasks, now),
        Some(text) => NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
            ApiError::bad("date", format!("expected a date YYYY-MM-DD, got {text:?}"))
        })?,
    };
    let list = state.checklist(period, date).await?;
    Ok(Json(Checklist::clone(&list)))
}

/// The body of an acknowledgement.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // read from the JSON value, so each error names its field
pub(crate) struct AckBody {
    /// Why the item is fine (1 to 2000 characters).
    #[schema(min_length = 1, max_length = 2000)]
    note: String,
}

/// A recorded acknowledgement.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Acked {
    /// The item id.
    id: String,
    /// When it was recorded.
    acknowledged_at: DateTime<Utc>,
    /// The token's name.
    actor: String,
}

/// Acknowledges an item with a note (operate role); recorded in the audit trail as
/// `tasks.ack`.
#[utoipa::path(
    post,
    path = "/api/v1/tasks/{id}/ack",
    tag = "tasks",
    params(("id" = String, Path, description = "The item id, `daily.backups.2026-11-29`")),
    request_body = AckBody,
    responses(
        (status = 201, description = "Acknowledged", body = Acked),
        (status = 400, description = "The id or the note is invalid; `field` names it", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "The token's role is below operate", body = ErrorBody),
        (status = 404, description = "No such item in that period", body = ErrorBody),
        (status = 429, description = "The token's mutating calls are used up", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn ack(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    path: Result<PathOf<String>, ApiError>,
    body: Result<Body, ApiError>,
) -> Result<(StatusCode, Json<Acked>), ApiError> {
    let target = path
        .as_ref()
        .map_or_else(|_| "-".to_owned(), |PathOf(id)| id.clone());
    let gate = crate::audit::Mutation::admit(&state, caller, client, "tasks.ack", target).await?;
    // Input that never reaches `acknowledge` is audited here; `acknowledge` audits the rest
    // itself (it is shared with `upkeepctl tasks ack`).
    let input = async {
        let PathOf(id) = path?;
        let mut body = body?.object(&["note"])?;
        let note = match body.remove("note") {
            Some(serde_json::Value::String(note)) => note,
            Some(other) => {
                return Err(ApiError::bad(
                    "note",
                    format!("note must be a string, got {other}"),
                ));
            }
            None => return Err(ApiError::bad("note", "note is required")),
        };
        Ok((id, note))
    }
    .await;
    let (id, note) = match input {
        Ok(input) => input,
        Err(error) => return gate.finish(Err(error), None).await,
    };
    let actor = gate.caller.name.clone();
    let at = checklist::acknowledge(
        &state.db,
        &state.settings.tasks,
        &id,
        &note,
        &actor,
        Some(client.ip().to_string()),
        Utc::now(),
    )
    .await
    .map_err(|error| match error {
        AckError::BadId(message) | AckError::Future(message) => ApiError::bad("id", message),
        AckError::UnknownItem { .. } => ApiError::NotFound(error.to_string()),
        AckError::BadNote(message) => ApiError::bad("note", message),
        AckError::Store(store) => ApiError::from(store),
    })?;
    Ok((
        StatusCode::CREATED,
        Json(Acked {
            id,
            acknowledged_at: at,
            actor,
        }),
    ))
}
