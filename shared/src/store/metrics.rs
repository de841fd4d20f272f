//! The bounded reads behind `GET /metrics`: each is a handful of index probes or a keyset
//! range with a limit, whatever the size of the ledger.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::Error;

/// How many conditions (`(code, subject)` pairs) are open, by severity (`warn`, `critical`).
///
/// A condition is open when its newest finding is `warn` or `critical` (as in
/// [`super::findings::open`]). The pairs are enumerated by a skip scan over
/// `findings_code_subject_created_at_idx` (one probe per code and per pair), and each pair's
/// newest finding is one more probe, so the cost follows the number of conditions, not the
/// findings' history.
///
/// # Errors
/// [`Error::Database`] on a database error.
pub async fn open_findings_by_severity(pool: &PgPool) -> Result<Vec<(String, i64)>, Error> {
    Ok(sqlx::query_as(OPEN_BY_SEVERITY_SQL).fetch_all(pool).await?)
}

const OPEN_BY_SEVERITY_SQL: &str = "\
WITH RECURSIVE codes AS (
    (SELECT code FROM findings ORDER BY code LIMIT 1)
    UNION ALL
    SELECT (SELECT f.code FROM findings f WHERE f.code > c.code ORDER BY f.code LIMIT 1)
    FROM codes c WHERE c.code IS NOT NULL
), subjects AS (
    SELECT c.code,
           (SELECT f.subject FROM findings f
             WHERE f.code = c.code AND f.subject IS NOT NULL
             ORDER BY f.subject LIMIT 1) AS subject
    FROM codes c WHERE c.code IS NOT NULL
    UNION ALL
    SELECT s.code,
           (SELECT f.subject FROM findings f
             WHERE f.code = s.code AND f.subject > s.subject
             ORDER BY f.subject LIMIT 1)
    FROM subjects s WHERE s.subject IS NOT NULL
), newest AS (
    SELECT n.severity FROM subjects s
    CROSS JOIN LATERAL (SELECT f.severity FROM findings f
                         WHERE f.code = s.code AND f.subject = s.subject
                         ORDER BY f.created_at DESC, f.id DESC LIMIT 1) n
    WHERE s.subject IS NOT NULL
    UNION ALL
    SELECT n.severity FROM codes c
    CROSS JOIN LATERAL (SELECT f.severity FROM findings f
                         WHERE f.code = c.code AND f.subject IS NULL
                         ORDER BY f.created_at DESC, f.id DESC LIMIT 1) n
    WHERE c.code IS NOT NULL
)
SELECT severity, count(*)::bigint FROM newest WHERE severity <> 'ok' GROUP BY severity";

/// The highest `job_runs.id` (0 when empty): one probe of `job_runs_id_idx` per partition.
///
/// # Errors
/// [`Error::Database`] on a database error.
pub async fn newest_run_id(pool: &PgPool) -> Result<i64, Error> {
    Ok(
        sqlx::query_scalar("SELECT coalesce(max(id), 0)::bigint FROM job_runs")
            .fetch_one(pool)
            .await?,
    )
}

/// One finished attempt, as the duration histograms take it.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct FinishedRun {
    /// Row id (the cursor).
    pub id: i64,
    /// Job kind.
    pub kind: String,
    /// `succeeded`, `failed`, ...
    pub status: String,
    /// How long the attempt took.
    pub duration_ms: Option<i64>,
    /// When the ledger wrote the row.
    pub recorded_at: DateTime<Utc>,
}

/// The runs with `id > after`, lowest id first, at most `limit` (a keyset range of
/// `job_runs_id_idx`).
///
/// # Errors
/// [`Error::Database`] on a database error.
pub async fn runs_after(pool: &PgPool, after: i64, limit: i64) -> Result<Vec<FinishedRun>, Error> {
    Ok(sqlx::query_as(
        "SELECT id, kind, status, duration_ms, recorded_at FROM job_runs \
         WHERE id > $1 ORDER BY id LIMIT $2",
    )
    .bind(after)
    .bind(limit.clamp(1, 100_000))
    .fetch_all(pool)
    .await?)
}
