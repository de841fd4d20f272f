//! The Postgres ledger: the only module that issues SQL.
//!
//! - [`alerts`]: `alert_incidents` and `alert_outbox` (the evaluation lock, incident upserts,
//!   the outbox's claim and settle), and the ledger reads behind alert conditions.
//! - [`backups`]: the backup catalog and the one-runner-per-database lock.
//! - [`runs`]: `job_runs`, one row per attempt, and the `findings` each attempt reported
//!   (large batches of new attempts by binary `COPY`, written by `copy_binary`).
//! - [`findings`]: which `(code, subject)` conditions are open, so checks can resolve them.
//! - [`tasks`]: the evidence of checklist items, their acknowledgements, and the audit trail.
//! - [`log_cursors`]: `logs.scan_errors` cursors, per-run counts and known signatures.
//! - [`metrics`]: the bounded reads behind `GET /metrics` (open conditions by severity, runs
//!   after a cursor).
//! - [`disk_samples`]: `system.disk` samples for the trend, and the server's own paths.
//! - [`ticks`]: `schedule_ticks`, one row per expected tick of a schedule.
//! - [`replicas`]: `scheduler_replicas`, each live scheduler replica's last sign and horizon.
//! - [`schedules`]: `schedules` as reconciled from the config, and the `schedule_events` audit.
//! - [`reports`]: health-report queries against target databases (read-only, with timeouts),
//!   and `report_snapshots` in upkeep's own.
//! - [`oauth_tokens`]: encrypted OAuth2 credentials, locked per row while refreshed.
//! - [`partitions`]: the monthly partitions of `job_runs` and `findings`, created ahead, and
//!   retention by dropping whole months.
//! - [`schema`]: the database's applied migrations against the embedded set.
//! - [`dashboard`]: dashboard sessions and its bounded reads (last hour, failures, open
//!   findings).
//! - [`health`]: each schedule's last tick, last success, next fire, lag and skip counts, and
//!   their Prometheus rendering.
//!
//! Every write is idempotent, because delivery is at-least-once and scheduler replicas race:
//! runs on `(job_id, attempt)`, ticks on `(schedule, fire_at)`. Queries are checked at run time
//! (`sqlx::query`, not the `query!` macros), so the workspace builds without a database; the
//! tests in `shared/tests/store/` run every query against a real Postgres. Connection details
//! come from [`DatabaseSettings`] (the `[database]` section, owned here); this module never reads the environment.

pub mod alerts;
pub mod backups;
mod copy_binary;
pub mod dashboard;
pub mod disk_samples;
pub mod findings;
pub mod health;
pub mod log_cursors;
pub mod metrics;
mod nagle;
pub mod oauth_tokens;
pub mod partitions;
pub mod reconcile;
pub mod replicas;
pub mod reports;
pub mod runs;
pub mod schedules;
pub mod schema;
mod settings;
pub mod tasks;
pub mod ticks;

use sqlx::PgPool;

pub use settings::DatabaseSettings;

/// All migrations, embedded once; every binary and test uses this.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Connecting to Postgres failed; `url` has its password hidden.
    #[error("connecting to Postgres at {url}")]
    Connect {
        /// The URL tried, redacted.
        url: String,
        /// Why it failed (refused, authentication, unknown database, ...).
        #[source]
        source: sqlx::Error,
    },
    /// Applying migrations failed.
    #[error("cannot apply migrations")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A query failed.
    #[error("database query failed")]
    Database(#[from] sqlx::Error),
    /// A value is outside its vocabulary (an unknown status or decision), whether given by a
    /// caller or read from a row.
    #[error("{0}")]
    Invalid(String),
    /// A value could not be encoded for the database.
    #[error("cannot encode {what} as JSON")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// Why it failed.
        #[source]
        source: serde_json::Error,
    },
    /// The named schedule does not exist.
    #[error("schedule {0:?} not found")]
    ScheduleNotFound(String),
}

/// Opens a pool from `database` and applies pending migrations when
/// `database.migrate_on_start` is set.
///
/// # Errors
/// [`Error::Connect`] when Postgres cannot be reached, [`Error::Migrate`] when a migration fails.
pub async fn connect(database: &DatabaseSettings) -> Result<PgPool, Error> {
    let pool = open(database).await?;
    if database.migrate_on_start {
        MIGRATOR.run(&pool).await?;
        partitions::ensure_ahead(&pool, chrono::Utc::now()).await?;
    }
    Ok(pool)
}

/// Opens a pool from `database` and applies pending migrations, whatever
/// `migrate_on_start` says (for `upkeepctl migrate`, `upkeepctl up` and tests).
///
/// # Errors
/// [`Error::Connect`] when Postgres cannot be reached, [`Error::Migrate`] when a migration fails.
pub async fn connect_and_migrate(database: &DatabaseSettings) -> Result<PgPool, Error> {
    let pool = open(database).await?;
    MIGRATOR.run(&pool).await?;
    partitions::ensure_ahead(&pool, chrono::Utc::now()).await?;
    Ok(pool)
}

/// Runs `sql` (binding `$1` = `cutoff`, `$2` = the batch size; it deletes at most that many rows
/// and returns how many) until a batch comes back short; returns the total. Each batch is its own
/// statement, so none holds locks or grows WAL for long. `batch_limit` is clamped to 1..=100000.
async fn delete_in_batches(
    pool: &PgPool,
    sql: &'static str,
    cutoff: chrono::DateTime<chrono::Utc>,
    batch_limit: i64,
) -> Result<u64, Error> {
    let batch_limit = batch_limit.clamp(1, 100_000);
    let mut n_deleted: u64 = 0;
    loop {
        let n_batch: i64 = sqlx::query_scalar(sql)
            .bind(cutoff)
            .bind(batch_limit)
            .fetch_one(pool)
            .await?;
        n_deleted += u64::try_from(n_batch).unwrap_or(0);
        if n_batch < batch_limit {
            return Ok(n_deleted);
        }
    }
}

async fn open(database: &DatabaseSettings) -> Result<PgPool, Error> {
    database.connect().await.map_err(|source| Error::Connect {
        url: database.redacted_url(),
        source,
    })
}
