//! The routes, one module per resource.

mod health;
mod queues;
mod tasks;

use axum::Router;
use axum::routing::{get, post};

use crate::AppState;

/// Every route of the API.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/health", get(health::get))
        .route("/api/v1/queues/stats", get(queues::stats))
        .route("/api/v1/tasks", get(tasks::list))
        .route("/api/v1/tasks/{id}/ack", post(tasks::ack))
        .fallback(not_found)
}

async fn not_found(uri: axum::http::Uri) -> crate::ApiError {
    crate::ApiError::NotFound(format!("no route {}", uri.path()))
}
