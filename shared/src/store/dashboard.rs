//! What the dashboard reads and keeps: its sessions (`dashboard_sessions`), the last hour's
//! throughput, recent failures a page at a time, and every open finding.
//!
//! Every read is bounded so a page stays fast with millions of runs: the throughput reads one
//! hour of `job_runs_finished_at_idx` into at most 60 buckets, failures are keyset-paginated on
//! a partial index, and open findings come from a skip scan over the findings' codes. Nothing
//! here counts history.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::Error;
use super::findings::OpenFinding;
use super::runs::RunRow;
use crate::job::Severity;

/// A signed-in dashboard session.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Session {
    /// The API token's name the session was opened with.
    pub actor: String,
    /// Whether that token may act (retry dead letters).
    pub can_operate: bool,
    /// The synchronizer token every form of this session carries.
    pub csrf_token: String,
    /// When the session stops being accepted.
    pub expires_at: DateTime<Utc>,
}

/// Stores a new session under `id_hash` (the SHA-256 of the cookie value), and deletes
/// sessions that expired before `now`.
///
/// # Errors
/// When the write fails.
pub async fn create_session(
    pool: &PgPool,
    id_hash: &[u8],
    session: &Session,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    // Expired rows go here rather than in a background loop: sign-ins are rare and the
    // index on expires_at keeps the delete small.
    sqlx::query("DELETE FROM dashboard_sessions WHERE expires_at < $1")
        .bind(now)
        .execute(pool)
        .await?;
    sqlx::query(
        "INSERT INTO dashboard_sessions (id_hash, actor, can_operate, csrf_token, created_at, \
         expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id_hash)
    .bind(&session.actor)
    .bind(session.can_operate)
    .bind(&session.csrf_token)
    .bind(now)
    .bind(session.expires_at)
    .execute(pool)
    .await?;
    Ok(())
}

/// The session stored under `id_hash`, when it has not expired at `now`.
///
/// # Errors
/// When the query fails.
pub async fn session(
    pool: &PgPool,
    id_hash: &[u8],
    now: DateTime<Utc>,
) -> Result<Option<Session>, Error> {
    Ok(sqlx::query_as(
        "SELECT actor, can_operate, csrf_token, expires_at FROM dashboard_sessions \
         WHERE id_hash = $1 AND expires_at > $2",
    )
    .bind(id_hash)
    .bind(now)
    .fetch_optional(pool)
    .await?)
}

/// Ends the session stored under `id_hash`; true when there was one.
///
/// # Errors
/// When the delete fails.
pub async fn delete_session(pool: &PgPool, id_hash: &[u8]) -> Result<bool, Error> {
    let done = sqlx::query("DELETE FROM dashboard_sessions WHERE id_hash = $1")
        .bind(id_hash)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Failed and abandoned attempts, newest first, `limit` at most (clamped to 1..=200), older
/// than the row `before` when given: one page of `job_runs_failures_id_idx`.
///
/// # Errors
/// When the query fails or a row cannot be decoded.
pub async fn failures(
    pool: &PgPool,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<RunRow>, Error> {
    Ok(sqlx::query_as::<_, RunRow>(
        "SELECT id, job_id, attempt, kind, queue, status, schedule, tick_at, enqueued_at, \
         started_at, finished_at, duration_ms, worker, args, outcome, error, next_state, \
         recorded_at \
         FROM job_runs \
         WHERE status IN ('failed', 'abandoned') AND ($1::bigint IS NULL OR id < $1) \
         ORDER BY id DESC LIMIT $2",
    )
    .bind(before)
    .bind(limit.clamp(1, 200))
    .fetch_all(pool)
    .await?)
}

/// Every open condition (`warn` or `critical` newest finding of a `(code, subject)` pair),
/// critical first, then by code and subject.
///
/// # Errors
/// When a query fails or a row has an unknown severity.
pub async fn open_findings(pool: &PgPool) -> Result<Vec<OpenFinding>, Error> {
    // A skip scan over findings_code_subject_created_at_idx: one index probe per distinct
    // code; `findings::open` then probes per pair, never reading the history behind them.
    let codes: Vec<String> = sqlx::query_scalar(
        "WITH RECURSIVE codes(code) AS ( \
           (SELECT code FROM findings ORDER BY code LIMIT 1) \
           UNION ALL \
           SELECT (SELECT f.code FROM findings f WHERE f.code > c.code ORDER BY f.code LIMIT 1) \
           FROM codes c WHERE c.code IS NOT NULL \
         ) SELECT code FROM codes WHERE code IS NOT NULL LIMIT 1000",
    )
    .fetch_all(pool)
    .await?;
    let codes: Vec<&str> = codes.iter().map(String::as_str).collect();
    let mut open = super::findings::open(pool, &codes).await?;
    let rank = |finding: &OpenFinding| u8::from(finding.severity != Severity::Critical);
    open.sort_by(|a, b| {
        rank(a)
            .cmp(&rank(b))
            .then_with(|| a.code.cmp(&b.code))
            .then_with(|| a.subject.cmp(&b.subject))
    });
    Ok(open)
}
