//! `disk_samples`: one row per filesystem per `system.disk` run, the history behind the
//! "full within 24 h" trend; and the two questions `system.disk` asks PostgreSQL about itself
//! (its data directory, its current log files).

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::Error;
use crate::disk::Sample;

/// Stores one sample of the filesystem `subject` (its mount point).
///
/// # Errors
/// When the insert fails.
pub async fn insert(
    pool: &PgPool,
    subject: &str,
    sample: &Sample,
    total_bytes: u64,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO disk_samples (subject, sampled_at, used_bytes, avail_bytes, total_bytes) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(subject)
    .bind(sample.sampled_at)
    .bind(i64::try_from(sample.used_bytes).unwrap_or(i64::MAX))
    .bind(i64::try_from(sample.avail_bytes).unwrap_or(i64::MAX))
    .bind(i64::try_from(total_bytes).unwrap_or(i64::MAX))
    .execute(pool)
    .await?;
    Ok(())
}

/// The samples of `subject` taken at or after `since`, oldest first.
///
/// # Errors
/// When the query fails.
pub async fn since(
    pool: &PgPool,
    subject: &str,
    since: DateTime<Utc>,
) -> Result<Vec<Sample>, Error> {
    let rows: Vec<(DateTime<Utc>, i64, i64)> = sqlx::query_as(
        "SELECT sampled_at, used_bytes, avail_bytes FROM disk_samples \
         WHERE subject = $1 AND sampled_at >= $2 ORDER BY sampled_at LIMIT 10000",
    )
    .bind(subject)
    .bind(since)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(sampled_at, used, avail)| Sample {
            sampled_at,
            used_bytes: u64::try_from(used).unwrap_or(0),
            avail_bytes: u64::try_from(avail).unwrap_or(0),
        })
        .collect())
}

/// Deletes samples older than `cutoff`; returns how many.
///
/// # Errors
/// When the delete fails.
pub async fn prune(pool: &PgPool, cutoff: DateTime<Utc>) -> Result<u64, Error> {
    super::delete_in_batches(
        pool,
        "WITH doomed AS (SELECT id FROM disk_samples WHERE sampled_at < $1 LIMIT $2), \
         gone AS (DELETE FROM disk_samples WHERE id IN (SELECT id FROM doomed) RETURNING 1) \
         SELECT count(*) FROM gone",
        cutoff,
        5000,
    )
    .await
}

/// The server's data directory, when this role may read it (superuser or
/// `pg_read_all_settings`); `None` otherwise.
///
/// # Errors
/// When the connection fails.
pub async fn data_directory(pool: &PgPool) -> Result<Option<String>, Error> {
    let row: Option<(Option<String>,)> =
        sqlx::query_as("SELECT setting FROM pg_settings WHERE name = 'data_directory'")
            .fetch_optional(pool)
            .await?;
    Ok(row.and_then(|(setting,)| setting).filter(|s| !s.is_empty()))
}

/// The file names (last path component) PostgreSQL's collector writes now, for every log
/// destination; empty when the collector is off.
///
/// # Errors
/// When the query fails (`pg_current_logfile` needs superuser or an explicit grant).
pub async fn current_logfiles(pool: &PgPool) -> Result<Vec<String>, Error> {
    let row: (Option<String>, Option<String>, Option<String>) = sqlx::query_as(
        "SELECT pg_current_logfile('stderr'), pg_current_logfile('csvlog'), pg_current_logfile('jsonlog')",
    )
    .fetch_one(pool)
    .await?;
    Ok([row.0, row.1, row.2]
        .into_iter()
        .flatten()
        .filter_map(|path| {
            std::path::Path::new(&path)
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
        })
        .collect())
}
