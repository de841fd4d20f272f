//! `log_cursors`, `log_scan_batches`, `log_scan_counts`, `log_signatures`: what
//! `logs.scan_errors` has read and what it counted.
//!
//! [`commit`] stores a run's new cursors with its counts in one transaction, after checking
//! (under a per-source advisory lock) that the cursors are still the ones the run started from.
//! A run killed before the commit leaves nothing, so its retry reads the same lines again; a run
//! killed after it leaves the batch under its job id, and [`job_report`] (what the outcome is
//! built from) sums every batch of the job: each line is counted once, whoever reported it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::Error;
use crate::logs::reader::{Batch, Cursor};
use crate::logs::signature::LineSeverity;

/// `log_cursors` columns: path, device, inode, offset, head_len, head_hash, updated_at.
type CursorRow = (String, i64, i64, i64, i64, Vec<u8>, DateTime<Utc>);
/// `log_scan_batches` columns: bytes_read, lines_read, backlog_bytes, gaps, previous_scan_at,
/// committed_at.
type BatchRow = (
    i64,
    i64,
    i64,
    serde_json::Value,
    Option<DateTime<Utc>>,
    DateTime<Utc>,
);

/// The source's cursors and when they were last committed.
///
/// # Errors
/// When the query fails.
pub async fn load(
    pool: &PgPool,
    source: &str,
) -> Result<(Vec<Cursor>, Option<DateTime<Utc>>), Error> {
    let rows: Vec<CursorRow> = sqlx::query_as(
        "SELECT path, device, inode, \"offset\", head_len, head_hash, updated_at \
         FROM log_cursors WHERE source = $1 ORDER BY path",
    )
    .bind(source)
    .fetch_all(pool)
    .await?;
    let updated_at = rows.iter().map(|row| row.6).max();
    let cursors = rows
        .into_iter()
        .map(
            |(path, device, inode, offset, head_len, head_hash, _)| Cursor {
                path,
                device: from_db(device),
                inode: from_db(inode),
                offset: from_db(offset),
                head_len: from_db(head_len),
                head_hash,
            },
        )
        .collect();
    Ok((cursors, updated_at))
}

/// Outcome of [`commit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Commit {
    /// The batch and cursors are stored.
    Committed,
    /// Another run moved the cursors since `previous` was loaded; nothing was stored.
    CursorMoved,
}

/// Stores `batch` (read from `previous`) for `job_id` in one transaction: replaces the
/// source's cursors, inserts the batch and its counts, and adds the signatures to
/// `log_signatures` (a signature's first job is kept).
///
/// # Errors
/// When a statement fails; nothing is stored then.
pub async fn commit(
    pool: &PgPool,
    job_id: Uuid,
    source: &str,
    previous: &[Cursor],
    previous_scan_at: Option<DateTime<Utc>>,
    batch: &Batch,
) -> Result<Commit, Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('log_cursors:' || $1, 0))")
        .bind(source)
        .execute(&mut *tx)
        .await?;
    let current: Vec<(String, i64, i64, i64)> = sqlx::query_as(
        "SELECT path, device, inode, \"offset\" FROM log_cursors WHERE source = $1 ORDER BY path",
    )
    .bind(source)
    .fetch_all(&mut *tx)
    .await?;
    let mut expected: Vec<(String, i64, i64, i64)> = previous
        .iter()
        .map(|c| {
            (
                c.path.clone(),
                to_db(c.device),
                to_db(c.inode),
                to_db(c.offset),
            )
        })
        .collect();
    expected.sort();
    if current != expected {
        return Ok(Commit::CursorMoved);
    }
    sqlx::query("DELETE FROM log_cursors WHERE source = $1")
        .bind(source)
        .execute(&mut *tx)
        .await?;
    for cursor in &batch.cursors {
        sqlx::query(
            "INSERT INTO log_cursors (source, path, device, inode, \"offset\", head_len, head_hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(source)
        .bind(&cursor.path)
        .bind(to_db(cursor.device))
        .bind(to_db(cursor.inode))
        .bind(to_db(cursor.offset))
        .bind(to_db(cursor.head_len))
        .bind(&cursor.head_hash)
        .execute(&mut *tx)
        .await?;
    }
    let gaps = serde_json::to_value(&batch.gaps).map_err(|source| Error::Encode {
        what: "scan gaps",
        source,
    })?;
    let batch_id: i64 = sqlx::query_scalar(
        "INSERT INTO log_scan_batches \
         (job_id, source, bytes_read, lines_read, backlog_bytes, gaps, previous_scan_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
    )
    .bind(job_id)
    .bind(source)
    .bind(to_db(batch.bytes_read))
    .bind(to_db(batch.lines_read))
    .bind(to_db(batch.backlog_bytes))
    .bind(gaps)
    .bind(previous_scan_at)
    .fetch_one(&mut *tx)
    .await?;
    let mut severities = Vec::with_capacity(batch.counts.len());
    let mut signatures = Vec::with_capacity(batch.counts.len());
    let mut counts = Vec::with_capacity(batch.counts.len());
    let mut examples = Vec::with_capacity(batch.counts.len());
    for ((severity, signature), count) in &batch.counts {
        severities.push(severity.as_str().to_owned());
        signatures.push(signature.clone());
        counts.push(to_db(count.count));
        examples.push(count.example.clone());
    }
    sqlx::query(
        "INSERT INTO log_scan_counts (batch_id, severity, signature, count, example) \
         SELECT $1, * FROM unnest($2::text[], $3::text[], $4::bigint[], $5::text[])",
    )
    .bind(batch_id)
    .bind(&severities)
    .bind(&signatures)
    .bind(&counts)
    .bind(&examples)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO log_signatures (source, severity, signature, first_job_id, total, example) \
         SELECT $1, s, g, $2, c, e FROM unnest($3::text[], $4::text[], $5::bigint[], $6::text[]) \
             AS t(s, g, c, e) WHERE g <> '' \
         ON CONFLICT (source, severity, signature) DO UPDATE \
         SET total = log_signatures.total + EXCLUDED.total, last_seen_at = now()",
    )
    .bind(source)
    .bind(job_id)
    .bind(&severities)
    .bind(&signatures)
    .bind(&counts)
    .bind(&examples)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Commit::Committed)
}

/// Everything a job's committed batches of one source say.
#[derive(Debug, Clone, Default)]
pub struct JobReport {
    /// Batches committed (one per attempt that got as far as its commit).
    pub n_batches: u64,
    /// Bytes read over all batches.
    pub bytes_read: u64,
    /// Lines read over all batches.
    pub lines_read: u64,
    /// Bytes left after the newest batch.
    pub backlog_bytes: u64,
    /// The gaps every batch recorded.
    pub gaps: Vec<serde_json::Value>,
    /// When the source had been scanned before this job (its first batch's view).
    pub previous_scan_at: Option<DateTime<Utc>>,
    /// When the job's first batch was committed.
    pub first_committed_at: Option<DateTime<Utc>>,
    /// Lines by `(severity, signature)` (signature `""` for the per-severity totals).
    pub counts: BTreeMap<(LineSeverity, String), (u64, String)>,
    /// Signatures this job saw first, as `(severity, signature)`.
    pub new_signatures: Vec<(LineSeverity, String)>,
}

/// Sums the batches `job_id` committed for `source`.
///
/// # Errors
/// When a query fails or a stored severity is unknown.
pub async fn job_report(pool: &PgPool, job_id: Uuid, source: &str) -> Result<JobReport, Error> {
    let batches: Vec<BatchRow> = sqlx::query_as(
        "SELECT bytes_read, lines_read, backlog_bytes, gaps, previous_scan_at, committed_at \
             FROM log_scan_batches WHERE job_id = $1 AND source = $2 ORDER BY id",
    )
    .bind(job_id)
    .bind(source)
    .fetch_all(pool)
    .await?;
    let mut report = JobReport::default();
    for (idx, (bytes, lines, backlog, gaps, previous, committed)) in batches.into_iter().enumerate()
    {
        if idx == 0 {
            report.previous_scan_at = previous;
            report.first_committed_at = Some(committed);
        }
        report.n_batches += 1;
        report.bytes_read += from_db(bytes);
        report.lines_read += from_db(lines);
        report.backlog_bytes = from_db(backlog);
        if let serde_json::Value::Array(gaps) = gaps {
            report.gaps.extend(gaps);
        }
    }
    let counts: Vec<(String, String, i64, String)> = sqlx::query_as(
        "SELECT c.severity, c.signature, sum(c.count)::bigint, min(c.example) \
         FROM log_scan_counts c JOIN log_scan_batches b ON b.id = c.batch_id \
         WHERE b.job_id = $1 AND b.source = $2 GROUP BY c.severity, c.signature",
    )
    .bind(job_id)
    .bind(source)
    .fetch_all(pool)
    .await?;
    for (severity, signature, count, example) in counts {
        report.counts.insert(
            (severity_of(&severity)?, signature),
            (from_db(count), example),
        );
    }
    let new: Vec<(String, String)> = sqlx::query_as(
        "SELECT severity, signature FROM log_signatures \
         WHERE source = $1 AND first_job_id = $2 ORDER BY severity, signature",
    )
    .bind(source)
    .bind(job_id)
    .fetch_all(pool)
    .await?;
    for (severity, signature) in new {
        report
            .new_signatures
            .push((severity_of(&severity)?, signature));
    }
    Ok(report)
}

/// Deletes batches (and their counts) committed before `cutoff`; returns how many.
///
/// # Errors
/// When the delete fails.
pub async fn prune_batches(pool: &PgPool, cutoff: DateTime<Utc>) -> Result<u64, Error> {
    super::delete_in_batches(
        pool,
        "WITH doomed AS (SELECT id FROM log_scan_batches WHERE committed_at < $1 LIMIT $2), \
         gone AS (DELETE FROM log_scan_batches WHERE id IN (SELECT id FROM doomed) RETURNING 1) \
         SELECT count(*) FROM gone",
        cutoff,
        5000,
    )
    .await
}

fn severity_of(text: &str) -> Result<LineSeverity, Error> {
    LineSeverity::parse(text).ok_or_else(|| Error::Invalid(format!("unknown severity {text:?}")))
}

/// Device ids, inodes and offsets are u64; Postgres has i64. The bit pattern round-trips.
fn to_db(value: u64) -> i64 {
    value as i64
}

fn from_db(value: i64) -> u64 {
    value as u64
}
