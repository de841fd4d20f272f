//! `GET /api/v1/dead` and `POST /api/v1/dead/{id}/retry`, through `shared::operator` like
//! `upkeepctl dead`.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use serde::Serialize;
use upkeep_shared::operator::{self, DeadLetter};
use utoipa::ToSchema;

use crate::audit::Mutation;
use crate::auth::{Caller, Role};
use crate::params::{Params, PathOf};
use crate::routes::openapi::ErrorBody;
use crate::{ApiError, AppState};

/// Dead letters.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeadList {
    /// Up to `limit` per queue, newest first within a queue.
    #[schema(value_type = Vec<Object>)]
    dead: Vec<DeadLetter>,
}

/// Dead letters of every queue (read role).
#[utoipa::path(
    get,
    path = "/api/v1/dead",
    tag = "queues",
    params(("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "Per queue (default 50)")),
    responses(
        (status = 200, description = "Dead letters", body = DeadList),
        (status = 400, description = "A parameter is invalid; `field` names it", body = ErrorBody),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 503, description = "Redis is unavailable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn list(
    State(state): State<AppState>,
    caller: Caller,
    mut params: Params,
) -> Result<Json<DeadList>, ApiError> {
    caller.require(Role::Read)?;
    let limit = params.int("limit", 1, 1000)?.unwrap_or(50);
    params.finish(&["limit"])?;
    let dead =
        operator::dead_letters_in(&state.queues, usize::try_from(limit).unwrap_or(50)).await?;
    Ok(Json(DeadList { dead }))
}

/// A retried dead letter.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Retried {
    /// The job id.
    id: String,
    /// The queue it is back on.
    queue: String,
}

/// Moves a dead job back to its queue with a fresh attempt budget (operate role; audited as
/// `dead.retry`).
#[utoipa::path(
    post,
    path = "/api/v1/dead/{id}/retry",
    tag = "queues",
    params(("id" = String, Path, description = "The dead job's id")),
    responses(
        (status = 200, description = "Requeued", body = Retried),
        (status = 401, description = "No or unknown token", body = ErrorBody),
        (status = 403, description = "The token's role is below operate", body = ErrorBody),
        (status = 404, description = "No configured queue knows the job", body = ErrorBody),
        (status = 409, description = "The job exists but is not dead", body = ErrorBody),
        (status = 429, description = "The token's mutating calls are used up", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn retry(
    State(state): State<AppState>,
    caller: Result<Caller, ApiError>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    path: Result<PathOf<String>, ApiError>,
) -> Result<Json<Retried>, ApiError> {
    let target = path
        .as_ref()
        .map_or_else(|_| "-".to_owned(), |PathOf(id)| id.clone());
    let gate = Mutation::admit(&state, caller, client, "dead.retry", target).await?;
    let result = async {
        let PathOf(id) = path?;
        let queue = operator::retry_dead_in(&state.queues, &id).await?;
        Ok(Json(Retried {
            id,
            queue: queue.as_str().to_owned(),
        }))
    }
    .await;
    gate.finish(result, None).await
}
