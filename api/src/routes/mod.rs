//! The routes, one module per resource, registered from one table ([`table`]) so that the
//! router and the list the OpenAPI round-trip test compares with the document
//! ([`route_list`]) cannot disagree.

mod backups;
mod dead;
mod findings;
mod health;
mod jobs;
pub(crate) mod openapi;
mod page;
mod queues;
mod runs;

pub(crate) use runs::RunsPage;
mod schedules;
mod tasks;
mod tokens;

use axum::Router;
use axum::http::Method;
use axum::routing::{MethodRouter, get, post};

use crate::AppState;

/// Every route of `/api/v1`: method, path (axum's syntax, which is also OpenAPI's), handler.
fn table() -> Vec<(Method, &'static str, MethodRouter<AppState>)> {
    vec![
        (Method::GET, "/api/v1/health", get(health::get)),
        (Method::GET, "/api/v1/openapi.json", get(openapi::get)),
        (Method::GET, "/api/v1/queues/stats", get(queues::stats)),
        (Method::POST, "/api/v1/jobs", post(jobs::enqueue)),
        (Method::GET, "/api/v1/jobs/{id}", get(jobs::get)),
        (Method::GET, "/api/v1/runs", get(runs::list)),
        (Method::GET, "/api/v1/dead", get(dead::list)),
        (Method::POST, "/api/v1/dead/{id}/retry", post(dead::retry)),
        (Method::GET, "/api/v1/schedules", get(schedules::list)),
        (
            Method::POST,
            "/api/v1/schedules/{name}/pause",
            post(schedules::pause),
        ),
        (
            Method::POST,
            "/api/v1/schedules/{name}/resume",
            post(schedules::resume),
        ),
        (
            Method::POST,
            "/api/v1/schedules/{name}/trigger",
            post(schedules::trigger),
        ),
        (Method::GET, "/api/v1/tasks", get(tasks::list)),
        (Method::POST, "/api/v1/tasks/{id}/ack", post(tasks::ack)),
        (Method::GET, "/api/v1/findings", get(findings::list)),
        (Method::GET, "/api/v1/backups", get(backups::list)),
        (Method::GET, "/api/v1/tokens", get(tokens::list)),
        (
            Method::GET,
            "/api/v1/tokens/{provider}/access_token",
            get(tokens::access_token),
        ),
    ]
}

/// Every route of `/api/v1`, with a JSON 404 for any other path under it.
pub(crate) fn router() -> Router<AppState> {
    table()
        .into_iter()
        .fold(Router::new(), |router, (_, path, handler)| {
            router.route(path, handler)
        })
}

/// The method and path of every route the router serves, as the round-trip test reads them.
#[must_use]
pub fn route_list() -> Vec<(Method, &'static str)> {
    table()
        .into_iter()
        .map(|(method, path, _)| (method, path))
        .collect()
}

pub(crate) async fn not_found(uri: axum::http::Uri) -> crate::ApiError {
    crate::ApiError::NotFound(format!("no route {}", uri.path()))
}
