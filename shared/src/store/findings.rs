//! `findings` as conditions: which `(code, subject)` pairs are open, so a check can resolve the
//! ones it no longer observes (`job::resolutions`) instead of dropping them silently.
//!
//! Rows are written by `runs::record_runs` with the attempt that reported them; this module only
//! reads. A pair is open when its newest finding is `warn` or `critical`, resolved when it is
//! `ok`.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::Error;
use crate::job::Severity;

/// The newest finding of an open condition.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenFinding {
    /// The row's id.
    pub id: i64,
    /// The job id of the attempt that reported it.
    pub job_id: uuid::Uuid,
    /// The job kind that reported it.
    pub kind: String,
    /// The finding's code.
    pub code: String,
    /// What it is about, if the code applies to several things.
    pub subject: Option<String>,
    /// `warn` or `critical`.
    pub severity: Severity,
    /// The message of the newest finding.
    pub message: String,
    /// When the newest finding was observed.
    pub created_at: DateTime<Utc>,
}

impl OpenFinding {
    /// The condition's identity, as `job::resolutions` takes it.
    #[must_use]
    pub fn pair(&self) -> (String, Option<String>) {
        (self.code.clone(), self.subject.clone())
    }
}

/// The open conditions among `codes`: for each `(code, subject)` pair seen, its newest finding,
/// when that is `warn` or `critical`. Ordered by code, then subject.
///
/// Its cost follows the number of pairs, not the history behind them: a skip scan over
/// `findings_code_subject_created_at_idx` takes one index probe per distinct subject of each
/// code and one for the newest row of each pair (a `DISTINCT ON` over the codes' history read
/// 200,000 findings in 900 ms).
///
/// # Errors
/// When the query fails.
pub async fn open(pool: &PgPool, codes: &[&str]) -> Result<Vec<OpenFinding>, Error> {
    let codes: Vec<String> = codes.iter().map(|code| (*code).to_owned()).collect();
    let rows: Vec<OpenRow> = sqlx::query_as(OPEN_SQL)
        .bind(&codes)
        .fetch_all(pool)
        .await?;
    let mut open = open_findings_of(rows)?;
    open.sort_by(|a, b| a.code.cmp(&b.code).then_with(|| a.subject.cmp(&b.subject)));
    Ok(open)
}

/// The newest finding of a condition, as the open-condition queries select it.
#[derive(sqlx::FromRow)]
struct OpenRow {
    id: i64,
    job_id: uuid::Uuid,
    kind: String,
    code: String,
    subject: Option<String>,
    severity: String,
    message: String,
    created_at: DateTime<Utc>,
}

/// The open conditions among `rows`: an `ok` newest finding closes its condition.
///
/// # Errors
/// A row with an unknown severity.
fn open_findings_of(rows: Vec<OpenRow>) -> Result<Vec<OpenFinding>, Error> {
    let mut open = Vec::with_capacity(rows.len());
    for row in rows {
        let severity = match row.severity.as_str() {
            "ok" => continue,
            "warn" => Severity::Warn,
            "critical" => Severity::Critical,
            other => {
                return Err(Error::Invalid(format!(
                    "finding {} has an unknown severity {other:?}",
                    row.id
                )));
            }
        };
        open.push(OpenFinding {
            id: row.id,
            job_id: row.job_id,
            kind: row.kind,
            code: row.code,
            subject: row.subject,
            severity,
            message: row.message,
            created_at: row.created_at,
        });
    }
    Ok(open)
}

/// The newest finding of every `(code, subject)` pair of the codes `$1` (a recursive skip scan
/// over each code's subjects) and of every code's subject-less findings, when that newest
/// finding is not `ok`.
const OPEN_SQL: &str = "\
WITH RECURSIVE pairs(code, subject) AS (
  SELECT c.code, s.subject FROM unnest($1::text[]) c(code) CROSS JOIN LATERAL (
    SELECT f.subject FROM findings f WHERE f.code = c.code AND f.subject IS NOT NULL
    ORDER BY f.subject LIMIT 1) s
  UNION ALL
  SELECT p.code, n.subject FROM pairs p CROSS JOIN LATERAL (
    SELECT f.subject FROM findings f WHERE f.code = p.code AND f.subject > p.subject
    ORDER BY f.subject LIMIT 1) n
)
SELECT * FROM (
  SELECT l.* FROM pairs p CROSS JOIN LATERAL (
    SELECT f.id, f.job_id, f.kind, f.code, f.subject, f.severity, f.message, f.created_at
    FROM findings f WHERE f.code = p.code AND f.subject = p.subject
    ORDER BY f.created_at DESC, f.id DESC LIMIT 1) l
  UNION ALL
  SELECT l.* FROM unnest($1::text[]) c(code) CROSS JOIN LATERAL (
    SELECT f.id, f.job_id, f.kind, f.code, f.subject, f.severity, f.message, f.created_at
    FROM findings f WHERE f.code = c.code AND f.subject IS NULL
    ORDER BY f.created_at DESC, f.id DESC LIMIT 1) l
) newest
WHERE severity <> 'ok'";

/// One row of `findings` as the API lists it.
#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow)]
pub struct FindingRow {
    /// Row id; increases with insertion, pages go `before` it.
    pub id: i64,
    /// The job of the attempt that reported it.
    pub job_id: uuid::Uuid,
    /// That attempt.
    pub attempt: i32,
    /// The job kind that reported it.
    pub kind: String,
    /// The finding's code (`disk.used_pct`).
    pub code: String,
    /// What it is about, when the code applies to several things.
    pub subject: Option<String>,
    /// `ok`, `warn` or `critical`.
    pub severity: String,
    /// What was observed.
    pub message: String,
    /// Structured detail, if any.
    pub detail: Option<serde_json::Value>,
    /// When it was observed.
    pub created_at: DateTime<Utc>,
    /// Whether it is its condition's newest finding and that is `warn` or `critical`.
    pub open: bool,
}

/// Which findings a page holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FindingFilter {
    /// Only this severity.
    pub severity: Option<Severity>,
    /// Only this code.
    pub code: Option<String>,
    /// Only open conditions (`Some(true)`), only the others (`Some(false)`).
    pub open: Option<bool>,
}

/// One page of findings, newest row first (by `id`), strictly older than the row `before`
/// when given; see `runs::runs_page` for why keyset pages neither repeat nor skip rows while
/// new ones arrive. A finding is open when no newer finding of its `(code, subject)` exists
/// and it is `warn` or `critical`. `limit` is clamped to 1..=1000.
///
/// # Errors
/// When the query fails.
pub async fn page(
    pool: &PgPool,
    filter: &FindingFilter,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<FindingRow>, Error> {
    let severity = filter.severity.map(|s| match s {
        Severity::Ok => "ok",
        Severity::Warn => "warn",
        Severity::Critical => "critical",
    });
    Ok(sqlx::query_as::<_, FindingRow>(PAGE_SQL)
        .bind(severity)
        .bind(filter.code.as_deref())
        .bind(filter.open)
        .bind(before)
        .bind(limit.clamp(1, 1000))
        .fetch_all(pool)
        .await?)
}

/// `latest` says whether a newer finding of the same condition exists (through
/// `findings_code_subject_created_at_idx`).
const PAGE_SQL: &str = "\
SELECT * FROM (
    SELECT f.id, f.job_id, f.attempt, f.kind, f.code, f.subject, f.severity, f.message,
           f.detail, f.created_at,
           (f.severity <> 'ok' AND NOT EXISTS (
               SELECT 1 FROM findings n
               WHERE n.code = f.code AND n.subject IS NOT DISTINCT FROM f.subject
                 AND (n.created_at, n.id) > (f.created_at, f.id))) AS open
    FROM findings f
    WHERE ($1::text IS NULL OR f.severity = $1)
      AND ($2::text IS NULL OR f.code = $2)
      AND ($4::bigint IS NULL OR f.id < $4)
) page
WHERE ($3::boolean IS NULL OR page.open = $3)
ORDER BY id DESC
LIMIT $5";
