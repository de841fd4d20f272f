//! Health-report queries: against target databases (the reports of `reports::views`, each in
//! a read-only transaction with `statement_timeout` and `lock_timeout` set locally), and
//! against upkeep's own database (`report_snapshots`, `report_index_first_seen`, the week's
//! failure signatures from `job_runs`).
//!
//! A target may not have the views installed (`upkeepctl reports install-views` is opt-in), so
//! the reports run the views' `SELECT`s wrapped with a `LIMIT` and a window count: every
//! report is bounded (top N by its ranking column) and says how many rows there were.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, FromRow, PgPool, Postgres, Row, Transaction};

use super::Error;
use crate::reports::findings::HOW_TO_ENABLE_STATEMENTS;
use crate::reports::rows::{
    ConnectionRow, IndexBloatRow, IndexDefinition, IndexUsageRow, InvalidIndexRow, Report,
    SeqScanRow, SlowQueries, SlowQueryRow, TableBloatRow, XidRow,
};
use crate::reports::views;

/// The local timeouts of every report query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// `statement_timeout`.
    pub statement: Duration,
    /// `lock_timeout`.
    pub lock: Duration,
}

/// Most index definitions read for duplicate detection.
pub const MAX_INDEX_DEFINITIONS: i64 = 10_000;

/// Opens a one-connection pool to a target database and checks it.
///
/// # Errors
/// [`Error::Connect`] naming the redacted URL and why (refused, authentication, unknown
/// database, timeout).
pub async fn connect_target(
    url: &SecretString,
    connect_timeout: Duration,
) -> Result<PgPool, Error> {
    let redacted = crate::config::redact_url(url.expose_secret());
    let options: PgConnectOptions =
        url.expose_secret()
            .parse()
            .map_err(|source| Error::Connect {
                url: redacted.clone(),
                source,
            })?;
    // Report queries are catalog-heavy and may take seconds by design; sqlx would log each
    // one over 1 s as a warning with its full text.
    let options = sqlx::ConnectOptions::disable_statement_logging(options);
    let connect = async {
        use sqlx::Connection as _;
        // One direct attempt first: the pool would only say "timed out" after retrying a
        // refused connection, and the operator needs the cause.
        sqlx::PgConnection::connect_with(&options)
            .await?
            .close()
            .await?;
        PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(connect_timeout)
            .connect_with(options.clone())
            .await
    };
    match tokio::time::timeout(connect_timeout, connect).await {
        Ok(Ok(pool)) => Ok(pool),
        Ok(Err(source)) => Err(Error::Connect {
            url: redacted,
            source,
        }),
        Err(_) => Err(Error::Connect {
            url: redacted,
            source: sqlx::Error::PoolTimedOut,
        }),
    }
}

/// The `slow_queries` report, or why `pg_stat_statements` cannot be read.
///
/// # Errors
/// When a query fails for another reason (timeout, permissions, connection).
pub async fn slow_queries(
    pool: &PgPool,
    timeouts: Timeouts,
    limit: i64,
) -> Result<SlowQueries, Error> {
    let mut tx = begin_read_only(pool, timeouts).await?;
    let installed: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements')",
    )
    .fetch_one(&mut *tx)
    .await?;
    if !installed {
        return Ok(SlowQueries::Unavailable {
            reason: format!(
                "the pg_stat_statements extension is not installed: {HOW_TO_ENABLE_STATEMENTS}"
            ),
        });
    }
    let report = match bounded::<SlowQueryRow>(&mut tx, views::SLOW_QUERIES, "total_ms DESC", limit)
        .await
    {
        Ok(report) => report,
        // 55000: "pg_stat_statements must be loaded via shared_preload_libraries";
        // 42P01/42703: an extension version that does not match the server's columns.
        Err(Error::Database(sqlx::Error::Database(error)))
            if matches!(error.code().as_deref(), Some("55000" | "42P01" | "42703")) =>
        {
            return Ok(SlowQueries::Unavailable {
                reason: format!(
                    "pg_stat_statements is installed but cannot be read ({}): {HOW_TO_ENABLE_STATEMENTS} \
                     (or run ALTER EXTENSION pg_stat_statements UPDATE)",
                    error.message()
                ),
            });
        }
        Err(error) => return Err(error),
    };
    let stats_reset: Option<DateTime<Utc>> =
        sqlx::query_scalar("SELECT stats_reset FROM pg_stat_statements_info")
            .fetch_optional(&mut *tx)
            .await?
            .flatten();
    tx.commit().await?;
    Ok(SlowQueries::Available {
        report,
        stats_reset,
    })
}

/// The `table_bloat_stats` report, most dead tuples first.
///
/// # Errors
/// When the query fails (timeout, permissions, connection).
pub async fn table_bloat(
    pool: &PgPool,
    timeouts: Timeouts,
    limit: i64,
) -> Result<Report<TableBloatRow>, Error> {
    let mut tx = begin_read_only(pool, timeouts).await?;
    let report = bounded(
        &mut tx,
        views::TABLE_BLOAT_STATS,
        "n_dead_tup DESC, schemaname, relname",
        limit,
    )
    .await?;
    tx.commit().await?;
    Ok(report)
}

/// The `index_usage_stats` report, fewest scans first.
///
/// # Errors
/// When the query fails (timeout, permissions, connection).
pub async fn index_usage(
    pool: &PgPool,
    timeouts: Timeouts,
    limit: i64,
) -> Result<Report<IndexUsageRow>, Error> {
    let mut tx = begin_read_only(pool, timeouts).await?;
    let report = bounded(
        &mut tx,
        views::INDEX_USAGE_STATS,
        "index_scans ASC, index_bytes DESC, schemaname, indexrelname",
        limit,
    )
    .await?;
    tx.commit().await?;
    Ok(report)
}

/// The `connection_stats` report (one row).
///
/// # Errors
/// When the query fails (timeout, permissions, connection).
pub async fn connections(pool: &PgPool, timeouts: Timeouts) -> Result<ConnectionRow, Error> {
    let mut tx = begin_read_only(pool, timeouts).await?;
    let row = sqlx::query_as(views::CONNECTION_STATS)
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(row)
}

/// What `db.index_usage` reads besides `index_usage_stats`: index definitions (for
/// duplicates, at most [`MAX_INDEX_DEFINITIONS`]), invalid indexes, btree bloat estimates and
/// sequential-scan-heavy tables, each bounded by `limit`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IndexHealth {
    /// Definitions of the indexes of tables with more than one.
    pub definitions: Vec<IndexDefinition>,
    /// Invalid indexes.
    pub invalid: Report<InvalidIndexRow>,
    /// Estimated btree bloat, most wasted bytes first.
    pub bloat: Report<IndexBloatRow>,
    /// Tables read mostly by sequential scans.
    pub seq_scan_heavy: Report<SeqScanRow>,
}

/// Reads [`IndexHealth`], each query in its own read-only transaction.
///
/// # Errors
/// When a query fails (timeout, permissions, connection).
pub async fn index_health(
    pool: &PgPool,
    timeouts: Timeouts,
    limit: i64,
) -> Result<IndexHealth, Error> {
    let mut tx = begin_read_only(pool, timeouts).await?;
    let definitions = sqlx::query_as(views::INDEX_DEFINITIONS)
        .bind(MAX_INDEX_DEFINITIONS)
        .fetch_all(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(IndexHealth {
        definitions,
        invalid: counted(pool, timeouts, views::INVALID_INDEXES, limit).await?,
        bloat: counted(pool, timeouts, views::INDEX_BLOAT, limit).await?,
        seq_scan_heavy: counted(pool, timeouts, views::SEQ_SCAN_HEAVY, limit).await?,
    })
}

/// Tables closest to transaction-ID wraparound.
///
/// # Errors
/// When the query fails (timeout, permissions, connection).
pub async fn xid_wraparound(
    pool: &PgPool,
    timeouts: Timeouts,
    limit: i64,
) -> Result<Report<XidRow>, Error> {
    counted(pool, timeouts, views::XID_WRAPAROUND, limit).await
}

/// When the target database's statistics were last reset (`None`: never).
///
/// # Errors
/// When the query fails.
pub async fn stats_reset(
    pool: &PgPool,
    timeouts: Timeouts,
) -> Result<Option<DateTime<Utc>>, Error> {
    let mut tx = begin_read_only(pool, timeouts).await?;
    let reset = sqlx::query_scalar(
        "SELECT stats_reset FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_optional(&mut *tx)
    .await?
    .flatten();
    tx.commit().await?;
    Ok(reset)
}

/// Creates (or replaces) the four report views in a target database: the one write this
/// module makes to a target, for `upkeepctl reports install-views`.
///
/// # Errors
/// When the DDL fails (permissions, a conflicting object of the same name, a timeout).
pub async fn install_views(pool: &PgPool, timeouts: Timeouts) -> Result<(), Error> {
    let mut tx = pool.begin().await?;
    set_timeouts(&mut tx, timeouts).await?;
    sqlx::raw_sql(AssertSqlSafe(views::install_sql()))
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// One snapshot to record in `report_snapshots`.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The job that took it.
    pub job_id: uuid::Uuid,
    /// The report database's configured name.
    pub database: String,
    /// `slow_queries`, `table_bloat_stats`, `index_usage_stats`, `connection_stats`, ...
    pub report: String,
    /// `ok` or `unavailable`.
    pub status: String,
    /// Since when the counters run.
    pub stats_reset: Option<DateTime<Utc>>,
    /// Rows before the limit.
    pub total_count: i64,
    /// The bounded rows as a JSON array.
    pub rows: serde_json::Value,
    /// Why a report is unavailable.
    pub note: Option<String>,
}

/// A recorded snapshot.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct SnapshotRecord {
    /// The job that took it.
    pub job_id: uuid::Uuid,
    /// The report database.
    pub database: String,
    /// The report.
    pub report: String,
    /// `ok` or `unavailable`.
    pub status: String,
    /// When it was recorded.
    pub taken_at: DateTime<Utc>,
    /// Since when the counters run.
    pub stats_reset: Option<DateTime<Utc>>,
    /// Rows before the limit.
    pub total_count: i64,
    /// The bounded rows.
    pub rows: serde_json::Value,
    /// Why a report is unavailable.
    pub note: Option<String>,
}

/// Deletes snapshots taken before `cutoff`; returns how many (see `logs::retention`).
///
/// # Errors
/// When the delete fails.
pub async fn prune_snapshots(
    pool: &PgPool,
    cutoff: chrono::DateTime<chrono::Utc>,
) -> Result<u64, Error> {
    super::delete_in_batches(
        pool,
        "WITH doomed AS (SELECT id FROM report_snapshots WHERE taken_at < $1 LIMIT $2), \
         gone AS (DELETE FROM report_snapshots WHERE id IN (SELECT id FROM doomed) RETURNING 1) \
         SELECT count(*) FROM gone",
        cutoff,
        5000,
    )
    .await
}

/// Records `snapshot`; a repeated delivery of the same job replaces its earlier write.
///
/// # Errors
/// When the insert fails.
pub async fn record_snapshot(pool: &PgPool, snapshot: &Snapshot) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO report_snapshots
             (job_id, database, report, status, stats_reset, total_count, rows, note)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (job_id, database, report) DO UPDATE SET
             status = EXCLUDED.status, taken_at = now(), stats_reset = EXCLUDED.stats_reset,
             total_count = EXCLUDED.total_count, rows = EXCLUDED.rows, note = EXCLUDED.note",
    )
    .bind(snapshot.job_id)
    .bind(&snapshot.database)
    .bind(&snapshot.report)
    .bind(&snapshot.status)
    .bind(snapshot.stats_reset)
    .bind(snapshot.total_count)
    .bind(&snapshot.rows)
    .bind(&snapshot.note)
    .execute(pool)
    .await?;
    Ok(())
}

/// The snapshots a job recorded, by database then report.
///
/// # Errors
/// When the query fails.
pub async fn snapshots_of_job(
    pool: &PgPool,
    job_id: uuid::Uuid,
) -> Result<Vec<SnapshotRecord>, Error> {
    Ok(sqlx::query_as(
        "SELECT job_id, database, report, status, taken_at, stats_reset, total_count, rows, note
         FROM report_snapshots WHERE job_id = $1 ORDER BY database, report",
    )
    .bind(job_id)
    .fetch_all(pool)
    .await?)
}

/// Notes that `indexes` (oid, schema-qualified name) exist in `database` now and returns when
/// upkeep first saw each, by oid.
///
/// # Errors
/// When the query fails.
pub async fn indexes_first_seen(
    pool: &PgPool,
    database: &str,
    indexes: &[(i64, String)],
) -> Result<HashMap<i64, DateTime<Utc>>, Error> {
    let (oids, names): (Vec<i64>, Vec<String>) = indexes.iter().cloned().unzip();
    let rows: Vec<(i64, DateTime<Utc>)> = sqlx::query_as(
        "WITH seen AS (
             INSERT INTO report_index_first_seen (database, index_oid, index_name)
             SELECT $1, oid, name FROM unnest($2::bigint[], $3::text[]) AS t(oid, name)
             ON CONFLICT DO NOTHING
             RETURNING index_oid, first_seen
         )
         SELECT index_oid, first_seen FROM seen
         UNION ALL
         SELECT f.index_oid, f.first_seen
         FROM report_index_first_seen f
         JOIN unnest($2::bigint[], $3::text[]) AS t(oid, name)
           ON f.index_oid = t.oid AND f.index_name = t.name
         WHERE f.database = $1",
    )
    .bind(database)
    .bind(&oids)
    .bind(&names)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Failed attempts of one kind with one error signature (digits and ids blanked out).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, serde::Serialize)]
pub struct FailureSignature {
    /// The job kind.
    pub kind: String,
    /// The normalised error (first 200 characters).
    pub signature: String,
    /// Failed attempts.
    pub n_failures: i64,
    /// Distinct jobs.
    pub n_jobs: i64,
    /// Of those attempts, how many left the job dead.
    pub n_dead: i64,
    /// The newest failure.
    pub last_at: Option<DateTime<Utc>>,
    /// One error as written.
    pub sample_error: Option<String>,
}

/// The failure signatures of attempts that finished since `since`, most failures first, at
/// most `limit`.
///
/// # Errors
/// When the query fails.
pub async fn failure_signatures(
    pool: &PgPool,
    since: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<FailureSignature>, Error> {
    Ok(sqlx::query_as(
        "SELECT kind, signature, count(*)::bigint AS n_failures,
                count(DISTINCT job_id)::bigint AS n_jobs,
                count(*) FILTER (WHERE next_state = 'dead')::bigint AS n_dead,
                max(finished_at) AS last_at, min(error) AS sample_error
         FROM (
             SELECT kind, job_id, next_state, finished_at, error,
                    regexp_replace(
                        regexp_replace(left(coalesce(error, ''), 200),
                                       '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}',
                                       '<id>', 'gi'),
                        '[0-9]+', 'N', 'g') AS signature
             FROM job_runs
             WHERE status = 'failed' AND finished_at >= $1
         ) AS failures
         GROUP BY kind, signature
         ORDER BY n_failures DESC, kind, signature
         LIMIT $2",
    )
    .bind(since)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

async fn begin_read_only(
    pool: &PgPool,
    timeouts: Timeouts,
) -> Result<Transaction<'static, Postgres>, Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION READ ONLY")
        .execute(&mut *tx)
        .await?;
    set_timeouts(&mut tx, timeouts).await?;
    Ok(tx)
}

async fn set_timeouts(
    tx: &mut Transaction<'static, Postgres>,
    timeouts: Timeouts,
) -> Result<(), Error> {
    sqlx::query(
        "SELECT set_config('statement_timeout', $1, true), set_config('lock_timeout', $2, true)",
    )
    .bind(format!("{}ms", timeouts.statement.as_millis()))
    .bind(format!("{}ms", timeouts.lock.as_millis()))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Runs a view's `SELECT` with a total count and `LIMIT $1`, ordered by `order`.
async fn bounded<T>(
    tx: &mut Transaction<'static, Postgres>,
    body: &str,
    order: &str,
    limit: i64,
) -> Result<Report<T>, Error>
where
    T: for<'r> FromRow<'r, PgRow> + Send + Unpin,
{
    let sql = format!(
        "SELECT *, count(*) OVER ()::bigint AS total_count FROM (\n{body}\n) AS report ORDER BY {order} LIMIT $1"
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .bind(limit)
        .fetch_all(&mut **tx)
        .await?;
    decode(&rows)
}

/// Runs a query that has its own `total_count` column and `LIMIT $1`, in its own read-only
/// transaction.
async fn counted<T>(
    pool: &PgPool,
    timeouts: Timeouts,
    sql: &'static str,
    limit: i64,
) -> Result<Report<T>, Error>
where
    T: for<'r> FromRow<'r, PgRow> + Send + Unpin,
{
    let mut tx = begin_read_only(pool, timeouts).await?;
    let rows = sqlx::query(sql).bind(limit).fetch_all(&mut *tx).await?;
    tx.commit().await?;
    decode(&rows)
}

fn decode<T>(rows: &[PgRow]) -> Result<Report<T>, Error>
where
    T: for<'r> FromRow<'r, PgRow>,
{
    let total_count = match rows.first() {
        Some(row) => row.try_get("total_count")?,
        None => 0,
    };
    let rows = rows
        .iter()
        .map(T::from_row)
        .collect::<Result<Vec<T>, _>>()?;
    Ok(Report { rows, total_count })
}
