//! `GET /api/v1/health`: whether Redis and Postgres answer. Unauthenticated, and it says
//! nothing but up or down.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::AppState;

/// How long each dependency gets to answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// 200 with `status: ok` when both answer, 503 with `status: degraded` otherwise.
#[utoipa::path(
    get,
    path = "/api/v1/health",
    tag = "health",
    responses(
        (status = 200, description = "Redis and Postgres answer", body = Object,
         example = json!({"status": "ok", "redis": "ok", "postgres": "ok"})),
        (status = 503, description = "A dependency is down", body = Object,
         example = json!({"status": "degraded", "redis": "down", "postgres": "ok"})),
    )
)]
pub(crate) async fn get(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let postgres = tokio::time::timeout(
        PROBE_TIMEOUT,
        sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&state.db),
    );
    let mut conn = state.redis.clone();
    let redis = async move {
        tokio::time::timeout(
            PROBE_TIMEOUT,
            redis::cmd("PING").query_async::<String>(&mut conn),
        )
        .await
        .is_ok_and(|reply| reply.is_ok())
    };
    let (postgres, redis) = tokio::join!(postgres, redis);
    let postgres = postgres.is_ok_and(|reply| reply.is_ok());
    let word = |up: bool| if up { "ok" } else { "down" };
    let healthy = postgres && redis;
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if healthy { "ok" } else { "degraded" },
        "redis": word(redis),
        "postgres": word(postgres),
    });
    (status, Json(body))
}
