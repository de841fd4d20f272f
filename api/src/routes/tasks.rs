//! `GET /api/v1/tasks` and `POST /api/v1/tasks/{id}/ack`.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::StatusCode;
use chrono::{NaiveDate, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use upkeep_shared::tasks::Period;

use crate::auth::{Caller, Role};
use crate::checklist::{self, AckError, Checklist};
use crate::{ApiError, AppState};

/// The query of `GET /api/v1/tasks`.
#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    period: Option<String>,
    date: Option<String>,
}

/// The checklist of a period (default daily) for the window containing `date` (default today
/// in the checklist's zone).
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    Query(query): Query<ListQuery>,
) -> Result<Json<Checklist>, ApiError> {
    caller.require(Role::Read)?;
    let period = match query.period.as_deref() {
        None => Period::Daily,
        Some(text) => Period::parse(text).map_err(|message| ApiError::bad("period", message))?,
    };
    let now = Utc::now();
    let date = match query.date.as_deref() {
        None => checklist::today(&state.settings.tasks, now),
        Some(text) => NaiveDate::parse_from_str(text, "%Y-%m-%d").map_err(|_| {
            ApiError::bad("date", format!("expected a date YYYY-MM-DD, got {text:?}"))
        })?,
    };
    let list = checklist::checklist(&state.db, &state.settings.tasks, period, date, now).await?;
    Ok(Json(list))
}

/// The body of an acknowledgement.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AckBody {
    note: String,
}

/// Acknowledges an item with a note (operate role); recorded in the audit trail.
pub(crate) async fn ack(
    State(state): State<AppState>,
    caller: Caller,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    body: Result<Json<AckBody>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    caller.require(Role::Operate)?;
    let Json(body) = body.map_err(|rejection| ApiError::bad("note", rejection.body_text()))?;
    let at = checklist::acknowledge(
        &state.db,
        &state.settings.tasks,
        &id,
        &body.note,
        &caller.name,
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
        Json(json!({ "id": id, "acknowledged_at": at, "actor": caller.name })),
    ))
}
