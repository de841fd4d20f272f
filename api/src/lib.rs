//! `upkeep-api`: the operator's HTTP surface over the ledger and the queues.
//!
//! - [`checklist`]: the task lists of a period, with each item's status and evidence (shared
//!   with `upkeepctl tasks`).
//! - [`auth`]: bearer tokens, their roles, the per-token rate limit of mutating calls.
//! - [`dashboard`]: the server-rendered dashboard at `/` with its sign-in and session cookie.
//! - `routes`: one module per resource, registered from one table; `openapi` generates the
//!   document from the handlers' annotations. `error` maps every failure to a status code and
//!   a JSON body `{"error", "field"}` in one place; `params` reads query strings, paths and
//!   bodies so that every refusal names its parameter; `audit` gates and records every
//!   mutating call.
//!
//! The server reads Postgres and Redis and holds no state of its own but the rate-limit
//! buckets, so any number of replicas can run behind a load balancer (each with its own
//! buckets). Every mutating call, refused or not, is written to `audit_log`.

mod audit;
pub mod auth;
pub mod checklist;
pub mod coalesce;
pub mod dashboard;
mod error;
mod metrics;
mod params;
mod routes;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{NaiveDate, Utc};
use sqlx::PgPool;
use tokio::net::TcpListener;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::timeout::TimeoutLayer;
use upkeep_shared::config::Settings;
use upkeep_shared::queue::{Queue, QueueStats, RedisConn};
use upkeep_shared::tasks::{Period, Window};

pub use error::ApiError;
pub use routes::openapi::ApiDoc;
pub use routes::route_list;

/// Request bodies larger than this are refused with 413: every body this API takes is a small
/// JSON object.
const BODY_LIMIT_BYTES: usize = 64 * 1024;

/// A request that takes longer than this is answered 408 and its work dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What every route shares.
#[derive(Clone)]
pub struct AppState {
    /// The settings the process loaded.
    pub settings: Arc<Settings>,
    /// upkeep's database.
    pub db: PgPool,
    /// One handle per configured queue, in configuration order.
    pub queues: Arc<Vec<Queue>>,
    /// A connection for health probes and schedule triggers.
    pub redis: RedisConn,
    /// The accepted tokens and the rate limiter of mutating calls.
    pub access: Arc<auth::Access>,
    /// Shared computations of the checklists and the queue stats (see [`coalesce`]).
    pub answers: Arc<Answers>,
}

/// The read answers that concurrent requests share ([`coalesce::Coalescer`]): each request
/// gets one computed after it arrived, never a cached one from before.
#[derive(Debug, Default)]
pub struct Answers {
    /// Checklists by period and window's first day.
    pub checklists: coalesce::Coalescer<(Period, NaiveDate), Arc<checklist::Checklist>>,
    /// Every queue's stats, in configuration order.
    pub queue_stats: coalesce::Coalescer<(), Arc<Vec<QueueStats>>>,
    /// Pages of `GET /api/v1/runs` by kind, status, `before` and limit.
    pub(crate) runs_pages: coalesce::Coalescer<RunsPageKey, Arc<routes::RunsPage>>,
}

/// What a page of `GET /api/v1/runs` depends on.
type RunsPageKey = (Option<String>, Option<&'static str>, Option<i64>, i64);

impl AppState {
    /// The checklist of `period` for the window containing `date`, evaluated at the time its
    /// computation starts.
    ///
    /// # Errors
    /// When the ledger cannot be read.
    pub async fn checklist(
        &self,
        period: Period,
        date: NaiveDate,
    ) -> Result<Arc<checklist::Checklist>, upkeep_shared::store::Error> {
        let tasks = &self.settings.tasks;
        let first_day = Window::containing(period, date, tasks.zone()).first_day;
        self.answers
            .checklists
            .get((period, first_day), || async {
                checklist::checklist(&self.db, tasks, period, first_day, Utc::now())
                    .await
                    .map(Arc::new)
            })
            .await
    }

    /// Every queue's stats, the script calls of all queues in flight at once.
    ///
    /// # Errors
    /// The first queue whose stats could not be read.
    pub async fn queue_stats(&self) -> Result<Arc<Vec<QueueStats>>, upkeep_shared::queue::Error> {
        self.answers
            .queue_stats
            .get((), || async {
                futures::future::try_join_all(self.queues.iter().map(Queue::stats))
                    .await
                    .map(Arc::new)
            })
            .await
    }
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("queues", &self.queues.len())
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// Opens lazy connections to the database and the queues of `settings`; nothing is
    /// contacted until a request needs it.
    ///
    /// # Errors
    /// When a URL is malformed.
    pub fn connect_lazy(settings: Settings) -> anyhow::Result<Self> {
        let db = settings
            .database
            .connect_lazy()
            .context("building the Postgres pool")?;
        let queues = settings
            .queues
            .keys()
            .map(|name| settings.open_queue(name))
            .collect::<Result<Vec<_>, _>>()
            .context("opening the queues")?;
        let redis = RedisConn::open(&settings.redis.target()).context("opening Redis")?;
        Ok(Self {
            access: Arc::new(auth::Access::from_settings(&settings.api)),
            settings: Arc::new(settings),
            db,
            queues: Arc::new(queues),
            redis,
            answers: Arc::default(),
        })
    }
}

/// The API's routes over `state`, with the body limit, the request timeout, JSON bodies for
/// every error under `/api/`, and CORS when `[api] cors_origins` is set.
pub fn router(state: AppState) -> Router {
    let cors = cors_layer(&state.settings.api.cors_origins);
    let app = Router::new()
        .merge(routes::router())
        .merge(metrics::router())
        .merge(dashboard::routes())
        .fallback(routes::not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(axum::middleware::from_fn(json_errors));
    let app = match cors {
        Some(cors) => app.layer(cors),
        None => app,
    };
    app.with_state(state)
}

/// CORS for the configured origins; none (no CORS headers at all) when the list is empty.
fn cors_layer(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|origin| origin == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin).ok()),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]),
    )
}

/// Gives every error response under `/api/` the JSON shape `{"error"}`: axum's own
/// responses (405, a timeout's 408) have an empty or plain-text body otherwise.
async fn json_errors(request: Request, next: Next) -> Response {
    let api = request.uri().path().starts_with("/api/");
    let response = next.run(request).await;
    let status = response.status();
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    if !api || is_json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let message = match status {
        StatusCode::METHOD_NOT_ALLOWED => "method not allowed for this route".to_owned(),
        StatusCode::REQUEST_TIMEOUT => "the request took too long and was dropped".to_owned(),
        other => other
            .canonical_reason()
            .unwrap_or("request failed")
            .to_lowercase(),
    };
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = axum::Json(serde_json::json!({ "error": message }));
    let mut fresh = (status, body).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE {
            fresh.headers_mut().insert(name.clone(), value.clone());
        }
    }
    fresh
}

/// Serves the API on `listener` until `shutdown` completes, then finishes the requests in
/// flight.
///
/// # Errors
/// When the server fails.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("serving the API")
}
