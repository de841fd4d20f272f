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
/// # Errors
/// When the query fails.
pub async fn open(pool: &PgPool, codes: &[&str]) -> Result<Vec<OpenFinding>, Error> {
    let codes: Vec<String> = codes.iter().map(|code| (*code).to_owned()).collect();
    let rows: Vec<Row> = sqlx::query_as(OPEN_SQL)
        .bind(&codes)
        .fetch_all(pool)
        .await?;
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

#[derive(sqlx::FromRow)]
struct Row {
    id: i64,
    job_id: uuid::Uuid,
    kind: String,
    code: String,
    subject: Option<String>,
    severity: String,
    message: String,
    created_at: DateTime<Utc>,
}

/// The newest finding of every `(code, subject)` pair of the given codes, read in index order
/// (`findings_code_subject_created_at_idx`). It reads the codes' retained history (bounded by
/// `maintenance.ledger_retention`), which is small for the per-check codes this serves: a disk
/// check every 15 minutes over 5 paths keeps about 43,000 rows in 90 days.
const OPEN_SQL: &str = "\
SELECT DISTINCT ON (code, subject)
       id, job_id, kind, code, subject, severity, message, created_at
FROM findings
WHERE code = ANY($1)
ORDER BY code, subject, created_at DESC, id DESC";
