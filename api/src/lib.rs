//! `upkeep-api`: the operator's HTTP surface over the ledger and the queues.
//!
//! - [`checklist`]: the task lists of a period, with each item's status and evidence (shared
//!   with `upkeepctl tasks`).
//! - [`auth`]: bearer tokens and their roles.
//! - [`dashboard`]: the server-rendered dashboard at `/` with its sign-in and session cookie.
//! - `routes`: one module per resource (`health`, `tasks`, `queues`); `error` maps every
//!   failure to a status code and a JSON body `{"error", "field"}` in one place.
//!
//! The server reads Postgres and Redis and holds no state of its own, so any number of replicas
//! can run behind a load balancer. Every mutating call is written to `audit_log`.

pub mod auth;
pub mod checklist;
pub mod dashboard;
mod error;
mod routes;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tower_http::timeout::TimeoutLayer;
use upkeep_shared::config::Settings;
use upkeep_shared::queue::{Queue, RedisConn};

pub use error::ApiError;

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
    /// A connection for health probes.
    pub redis: RedisConn,
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
            settings: Arc::new(settings),
            db,
            queues: Arc::new(queues),
            redis,
        })
    }
}

/// The API's routes over `state`, with the body limit and the request timeout.
pub fn router(state: AppState) -> Router {
    routes::router()
        .merge(dashboard::routes())
        .layer(DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .with_state(state)
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
