//! `POST /api/v1/jobs` (enqueue, through `shared::operator` like `upkeepctl enqueue`) and
//! `GET /api/v1/jobs/{id}` (its state in Redis and every attempt in the ledger).

use std::net::SocketAddr;
use std::time::Duration;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use serde::Serialize;
use serde_json::{Value, json};
use upkeep_shared::JobId;
use upkeep_shared::operator::{self, JobRequest};
use upkeep_shared::queue::JobState;
use upkeep_shared::store::runs::{self, RunRow};
use utoipa::ToSchema;

use crate::audit::Mutation;
use crate::auth::{Caller, Role};
use crate::params::{Body, PathOf};
use crate::routes::openapi::ErrorBody;
use crate::{ApiError, AppState};

/// The longest `delay_seconds`: a year.
const MAX_DELAY_SECONDS: u64 = 366 * 24 * 3600;
/// The longest `idempotency_key`, in characters.
const MAX_KEY_CHARS: usize = 200;

/// The body of `POST /api/v1/jobs`.
#[derive(Debug, ToSchema)]
#[allow(dead_code)] // read field by field from the JSON value, so each error names its field
pub(crate) struct EnqueueBody {
    /// A job kind of the catalog with a handler in this build (`system.ping`).
    kind: String,
    /// The kind's arguments, checked by the kind's own parser. Default `{}`.
    #[schema(value_type = Option<Object>)]
    args: Option<Value>,
    /// Run no earlier than this many seconds from now (0 to 31,622,400).
    #[schema(minimum = 0, maximum = 31_622_400)]
    delay_seconds: Option<u64>,
    /// A second enqueue with the same key returns the first job's id and enqueues nothing
    /// (1 to 200 characters).
    #[schema(min_length = 1, max_length = 200)]
    idempotency_key: Option<String>,
}

/// What `POST /api/v1/jobs` answers.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Enqueued {
    /// The job's id (a UUIDv7).
    job_id: String,
    /// The queue it went to.
    queue: String,
}

/// Enqueues one job (operate role; audited as `jobs.enqueue`).
#[utoipa::path(
    post,
    path = "/api/v1/jobs",
    tag = "jobs",
    request_body = EnqueueBody,
    responses(
        (status = 202, description = "Enqueued", body = Enqueued),
        (status = 400, description = "A field is invalid; `field` names it", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "The token's role is below operate", body = ErrorBody),
        (status = 429, description = "The token's mutating calls are used up", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn enqueue(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    body: Result<Body, ApiError>,
) -> Result<(StatusCode, Json<Enqueued>), ApiError> {
    let target = body
        .as_ref()
        .ok()
        .and_then(|Body(value)| value.get("kind")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| "-".to_owned());
    let gate = Mutation::admit(&state, caller, client, "jobs.enqueue", target).await?;
    let result = enqueue_inner(&state, body).await;
    let detail = result
        .as_ref()
        .ok()
        .map(|(_, Json(done))| json!({"job_id": done.job_id, "queue": done.queue}));
    gate.finish(result, detail).await
}

async fn enqueue_inner(
    state: &AppState,
    body: Result<Body, ApiError>,
) -> Result<(StatusCode, Json<Enqueued>), ApiError> {
    let mut body = body?.object(&["kind", "args", "delay_seconds", "idempotency_key"])?;
    let kind = match body.remove("kind") {
        Some(Value::String(kind)) => kind,
        Some(other) => {
            return Err(ApiError::bad(
                "kind",
                format!("kind must be a string, got {other}"),
            ));
        }
        None => return Err(ApiError::bad("kind", "kind is required")),
    };
    let args = match body.remove("args") {
        None | Some(Value::Null) => json!({}),
        Some(args) => args,
    };
    let delay = match body.remove("delay_seconds") {
        None | Some(Value::Null) => None,
        Some(value) => match value.as_u64() {
            Some(seconds) if seconds <= MAX_DELAY_SECONDS => Some(Duration::from_secs(seconds)),
            _ => {
                return Err(ApiError::bad(
                    "delay_seconds",
                    format!(
                        "delay_seconds must be a whole number of seconds from 0 to \
                         {MAX_DELAY_SECONDS}, got {value}"
                    ),
                ));
            }
        },
    };
    let idempotency_key = match body.remove("idempotency_key") {
        None | Some(Value::Null) => None,
        Some(Value::String(key))
            if !key.trim().is_empty() && key.chars().count() <= MAX_KEY_CHARS =>
        {
            Some(key)
        }
        Some(other) => {
            return Err(ApiError::bad(
                "idempotency_key",
                format!(
                    "idempotency_key must be a non-blank string of at most {MAX_KEY_CHARS} \
                     characters, got {other}"
                ),
            ));
        }
    };
    let job = JobRequest {
        kind,
        args,
        delay,
        queue: None,
        idempotency_key,
    };
    let (kind, queue_name) = operator::check_job(&state.settings, &job)?;
    let handle = state
        .queues
        .iter()
        .find(|queue| queue.name() == &queue_name)
        .ok_or_else(|| ApiError::bad("kind", format!("queue {queue_name} is not open")))?;
    let mut ids = Vec::new();
    operator::enqueue_checked(&state.settings, handle, kind, &job, 1, |id| {
        ids.push(id.to_owned());
    })
    .await?;
    let job_id = ids
        .pop()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("enqueue returned no id")))?;
    Ok((
        StatusCode::ACCEPTED,
        Json(Enqueued {
            job_id,
            queue: queue_name.as_str().to_owned(),
        }),
    ))
}

/// A job as `GET /api/v1/jobs/{id}` shows it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct JobView {
    /// The job id.
    job_id: String,
    /// Its queue, from Redis or the ledger.
    queue: Option<String>,
    /// Its kind.
    kind: Option<String>,
    /// Where it is: `scheduled`, `available`, `running`, `retryable`, `completed`,
    /// `discarded` (dead), or `gone` once Redis forgot it (the ledger remains).
    state: String,
    /// Attempts made so far, as Redis counts them.
    attempt: Option<String>,
    /// The last error Redis holds.
    error: Option<String>,
    /// Every attempt the ledger recorded, first attempt first.
    #[schema(value_type = Vec<Object>)]
    attempts: Vec<RunRow>,
}

/// A job's state and every attempt (read role).
#[utoipa::path(
    get,
    path = "/api/v1/jobs/{id}",
    tag = "jobs",
    params(("id" = String, Path, description = "The job id (a UUID)")),
    responses(
        (status = 200, description = "The job", body = JobView),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 404, description = "Neither Redis nor the ledger knows the job", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn get(
    State(state): State<AppState>,
    caller: Caller,
    PathOf(id): PathOf<String>,
) -> Result<Json<JobView>, ApiError> {
    caller.require(Role::Read)?;
    let job_id = JobId::parse(&id)
        .map_err(|_| ApiError::bad("id", format!("a job id is a UUID, got {id:?}")))?;
    let mut found = None;
    for queue in state.queues.iter() {
        let record = queue
            .job(&id)
            .await
            .map_err(|_| ApiError::Unavailable("redis"))?;
        if let Some(record) = record {
            found = Some((queue.name().as_str().to_owned(), record));
            break;
        }
    }
    let attempts = runs::runs_for_job(&state.db, job_id).await?;
    if found.is_none() && attempts.is_empty() {
        return Err(ApiError::NotFound(format!(
            "no job {id} in any configured queue or in the ledger"
        )));
    }
    let last = attempts.last();
    let view = match found {
        Some((queue, record)) => {
            let field = |name: &str| record.fields.get(name).cloned();
            let state = field("state").map_or(JobState::Gone, |s| JobState::parse(&s));
            JobView {
                job_id: id,
                queue: Some(queue),
                kind: field("kind").or_else(|| last.map(|run| run.kind.clone())),
                state: state_name(state),
                attempt: field("attempt"),
                error: field("err"),
                attempts,
            }
        }
        None => JobView {
            job_id: id,
            queue: last.map(|run| run.queue.clone()),
            kind: last.map(|run| run.kind.clone()),
            state: state_name(JobState::Gone),
            attempt: last.map(|run| run.attempt.to_string()),
            error: last.and_then(|run| run.error.clone()),
            attempts,
        },
    };
    Ok(Json(view))
}

fn state_name(state: JobState) -> String {
    serde_json::to_value(state)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_else(|| "gone".to_owned())
}
