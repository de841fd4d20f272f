//! `GET /api/v1/schedules` (health and next fire times, from `store::health`) and
//! `POST /api/v1/schedules/{name}/{pause|resume|trigger}`, through the scheduler's
//! `Operator` like `upkeepctl schedules`.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use upkeep_scheduler::operator::Operator;
use upkeep_shared::store::health::{self, ScheduleHealth};
use utoipa::ToSchema;

use crate::audit::Mutation;
use crate::auth::{Caller, Role};
use crate::params::PathOf;
use crate::routes::openapi::ErrorBody;
use crate::{ApiError, AppState};

/// Every schedule's health.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ScheduleList {
    /// Each schedule the ledger knows: cron, zone, paused, last tick, last success, next fire
    /// time, lags, missed and skipped ticks.
    #[schema(value_type = Vec<Object>)]
    schedules: Vec<ScheduleHealth>,
    /// When this answer was computed.
    generated_at: DateTime<Utc>,
}

/// Schedules with their next fire times and health (read role).
#[utoipa::path(
    get,
    path = "/api/v1/schedules",
    tag = "schedules",
    responses(
        (status = 200, description = "Every schedule", body = ScheduleList),
        (status = 401, description = "No or unknown token", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<ScheduleList>, ApiError> {
    caller.require(Role::Read)?;
    let now = Utc::now();
    let schedules = health::schedule_health(&state.db, now, None).await?;
    Ok(Json(ScheduleList {
        schedules,
        generated_at: now,
    }))
}

/// What an action did.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ScheduleAction {
    /// The schedule.
    schedule: String,
    /// `paused`, `resumed` or `triggered`.
    action: String,
    /// For pause and resume: false when it already was in that state.
    #[serde(skip_serializing_if = "Option::is_none")]
    changed: Option<bool>,
    /// For trigger: the manual tick's fire time.
    #[serde(skip_serializing_if = "Option::is_none")]
    fire_at: Option<DateTime<Utc>>,
    /// For trigger: its job.
    #[serde(skip_serializing_if = "Option::is_none")]
    job_id: Option<String>,
}

#[derive(Clone, Copy)]
enum Action {
    Pause,
    Resume,
    Trigger,
}

/// Pauses a schedule: its ticks are recorded as `skipped_paused` until resumed (operate
/// role; audited as `schedules.pause`).
#[utoipa::path(
    post,
    path = "/api/v1/schedules/{name}/pause",
    tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name")),
    responses(
        (status = 200, description = "Paused (or already paused: `changed` is false)", body = ScheduleAction),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "The token's role is below operate", body = ErrorBody),
        (status = 404, description = "No schedule of that name is configured", body = ErrorBody),
        (status = 409, description = "Configured but not in the ledger yet (no scheduler ran this config)", body = ErrorBody),
        (status = 429, description = "The token's mutating calls are used up", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn pause(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    path: Result<PathOf<String>, ApiError>,
) -> Result<(StatusCode, Json<ScheduleAction>), ApiError> {
    act(state, caller, client, path, Action::Pause).await
}

/// Resumes a paused schedule (operate role; audited as `schedules.resume`).
#[utoipa::path(
    post,
    path = "/api/v1/schedules/{name}/resume",
    tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name")),
    responses(
        (status = 200, description = "Resumed (or was not paused: `changed` is false)", body = ScheduleAction),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "The token's role is below operate", body = ErrorBody),
        (status = 404, description = "No schedule of that name is configured", body = ErrorBody),
        (status = 409, description = "Configured but not in the ledger yet", body = ErrorBody),
        (status = 429, description = "The token's mutating calls are used up", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn resume(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    path: Result<PathOf<String>, ApiError>,
) -> Result<(StatusCode, Json<ScheduleAction>), ApiError> {
    act(state, caller, client, path, Action::Resume).await
}

/// Enqueues one run now as a `manual` tick, whatever the overlap policy or pause flag
/// (operate role; audited as `schedules.trigger`).
#[utoipa::path(
    post,
    path = "/api/v1/schedules/{name}/trigger",
    tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name")),
    responses(
        (status = 202, description = "Enqueued", body = ScheduleAction),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "The token's role is below operate", body = ErrorBody),
        (status = 404, description = "No schedule of that name is configured", body = ErrorBody),
        (status = 409, description = "A tick already exists at this millisecond; trigger again", body = ErrorBody),
        (status = 429, description = "The token's mutating calls are used up", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn trigger(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    path: Result<PathOf<String>, ApiError>,
) -> Result<(StatusCode, Json<ScheduleAction>), ApiError> {
    act(state, caller, client, path, Action::Trigger).await
}

async fn act(
    state: AppState,
    caller: Result<Caller, ApiError>,
    client: SocketAddr,
    path: Result<PathOf<String>, ApiError>,
    action: Action,
) -> Result<(StatusCode, Json<ScheduleAction>), ApiError> {
    let audit_action = match action {
        Action::Pause => "schedules.pause",
        Action::Resume => "schedules.resume",
        Action::Trigger => "schedules.trigger",
    };
    let target = path
        .as_ref()
        .map_or_else(|_| "-".to_owned(), |PathOf(name)| name.clone());
    let gate = Mutation::admit(&state, caller, client, audit_action, target).await?;
    let actor = format!("api:{}", gate.caller.name);
    let result = async {
        let PathOf(name) = path?;
        let operator = Operator::with_parts(
            (*state.settings).clone(),
            state.db.clone(),
            state.redis.clone(),
        );
        operator
            .schedule(&name)
            .map_err(|error| ApiError::NotFound(error.to_string()))?;
        let done = match action {
            Action::Pause | Action::Resume => {
                let changed = if matches!(action, Action::Pause) {
                    operator.pause(&name, &actor).await
                } else {
                    operator.resume(&name, &actor).await
                }
                .map_err(operator_error)?;
                (
                    StatusCode::OK,
                    ScheduleAction {
                        schedule: name,
                        action: if matches!(action, Action::Pause) {
                            "paused"
                        } else {
                            "resumed"
                        }
                        .to_owned(),
                        changed: Some(changed),
                        fire_at: None,
                        job_id: None,
                    },
                )
            }
            Action::Trigger => {
                let triggered = operator
                    .trigger(&name, &actor, Utc::now())
                    .await
                    .map_err(operator_error)?;
                (
                    StatusCode::ACCEPTED,
                    ScheduleAction {
                        schedule: name,
                        action: "triggered".to_owned(),
                        changed: None,
                        fire_at: Some(triggered.fire_at),
                        job_id: Some(triggered.job_id.to_string()),
                    },
                )
            }
        };
        Ok(done)
    }
    .await;
    let detail: Option<Value> = result
        .as_ref()
        .ok()
        .and_then(|(_, done)| done.job_id.as_ref().map(|job| json!({ "job_id": job })));
    gate.finish(result.map(|(status, done)| (status, Json(done))), detail)
        .await
}

/// An `Operator` failure for a known schedule: a store or Redis error is ours (500, 503);
/// anything else is the schedule's state refusing the action (409).
fn operator_error(error: anyhow::Error) -> ApiError {
    if error
        .downcast_ref::<upkeep_shared::store::Error>()
        .is_some()
    {
        ApiError::Internal(error)
    } else if error
        .downcast_ref::<upkeep_shared::queue::Error>()
        .is_some()
    {
        tracing::warn!(error = %error, "redis call failed");
        ApiError::Unavailable("redis")
    } else {
        ApiError::Conflict(error.to_string())
    }
}
