//! `GET /api/v1/queues/stats`: every queue's depths, counters and latency, from the backend's
//! O(1) counters (one script call per queue, all in flight at once; no history is scanned;
//! concurrent requests share one computation that started after they arrived).

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use crate::auth::{Caller, Role};
use crate::{ApiError, AppState};

/// The stats of every configured queue.
#[utoipa::path(
    get,
    path = "/api/v1/queues/stats",
    tag = "queues",
    responses(
        (status = 200, description = "Every queue's depths, counters and latency", body = Object),
        (status = 401, description = "No or unknown token", body = crate::routes::openapi::ErrorBody),
        (status = 503, description = "Redis is unavailable", body = crate::routes::openapi::ErrorBody),
    ),
    security(("bearer" = []))
)]
pub(crate) async fn stats(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.require(Role::Read)?;
    let all = state
        .queue_stats()
        .await
        .map_err(|_| ApiError::Unavailable("redis"))?;
    let mut queues = Vec::with_capacity(all.len());
    for stats in all.iter() {
        let total = |name: &str| stats.totals.get(name).copied().unwrap_or(0);
        queues.push(json!({
            "name": stats.name,
            "pending": stats.pending,
            "scheduled": stats.scheduled,
            "running": stats.running,
            "retrying": stats.retrying,
            "dead": stats.dead,
            "workers": stats.workers,
            "oldest_pending_age_seconds": stats.oldest_pending_age_seconds.unwrap_or(0.0),
            "succeeded_total": total("succeeded"),
            "failed_total": total("failed"),
            "succeeded_1h": stats.succeeded_1h,
            "failed_1h": stats.failed_1h,
            "throughput_per_min": stats.throughput_per_min,
        }));
    }
    Ok(Json(json!({
        "queues": queues,
        "generated_at": chrono::Utc::now(),
    })))
}
