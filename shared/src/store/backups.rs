//! `backups`, the backup catalog: one row per committed backup, its verification level and
//! restore-test result, and the per-database lock that keeps one runner per database.
//!
//! A row is inserted only after the backup's manifest (its commit marker) is on disk, so a
//! failed or interrupted dump never has a row. Deleting a backup sets `deleted_at` (the files go
//! first), which keeps the history of what existed.

use chrono::{DateTime, Utc};
use sqlx::{Connection as _, PgConnection, PgPool};

use super::Error;

/// One catalog row.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, serde::Serialize)]
pub struct BackupRow {
    /// The catalog id (what the CLI takes).
    pub id: i64,
    /// The configured database name.
    pub database: String,
    /// `custom` or `directory`.
    pub format: String,
    /// The data: a file (custom) or a directory (directory format).
    pub path: String,
    /// The manifest, the backup's commit marker.
    pub manifest_path: String,
    /// `pg_dumpall --globals-only` output, if taken.
    pub globals_path: Option<String>,
    /// Bytes of data.
    pub size_bytes: i64,
    /// Hex SHA-256 of the data (see the manifest for per-file sums of a directory).
    pub sha256: String,
    /// The server's version at dump time.
    pub server_version: String,
    /// `pg_dump --version`.
    pub pg_dump_version: String,
    /// When the dump started.
    pub started_at: DateTime<Utc>,
    /// When it was committed.
    pub finished_at: DateTime<Utc>,
    /// `toc`, `full_read`, `restored` or `corrupt`.
    pub verification: String,
    /// When the level above was last established.
    pub verified_at: Option<DateTime<Utc>>,
    /// When a restore test last ran.
    pub restore_tested_at: Option<DateTime<Utc>>,
    /// Whether that restore test succeeded.
    pub restore_ok: Option<bool>,
    /// Why it failed.
    pub restore_error: Option<String>,
    /// User tables in the database at dump time.
    pub table_count: i32,
    /// Exact row counts of the largest tables at dump time (`schema.table` → rows).
    pub row_counts: serde_json::Value,
    /// Checksummed copies (`copy_to`): paths.
    pub copies: serde_json::Value,
    /// The job that made it.
    pub job_id: Option<uuid::Uuid>,
    /// When retention (or an operator) deleted it.
    pub deleted_at: Option<DateTime<Utc>>,
}

impl BackupRow {
    /// Verified by at least a full read, never found corrupt, and no failed restore test:
    /// what retention counts.
    #[must_use]
    pub fn is_good(&self) -> bool {
        matches!(self.verification.as_str(), "full_read" | "restored")
            && self.restore_ok != Some(false)
    }
}

/// A backup to record (the manifest is already committed on disk).
#[derive(Debug, Clone)]
pub struct NewBackup {
    /// See [`BackupRow`].
    pub database: String,
    /// See [`BackupRow`].
    pub format: String,
    /// See [`BackupRow`].
    pub path: String,
    /// See [`BackupRow`].
    pub manifest_path: String,
    /// See [`BackupRow`].
    pub globals_path: Option<String>,
    /// See [`BackupRow`].
    pub size_bytes: i64,
    /// See [`BackupRow`].
    pub sha256: String,
    /// See [`BackupRow`].
    pub server_version: String,
    /// See [`BackupRow`].
    pub pg_dump_version: String,
    /// See [`BackupRow`].
    pub started_at: DateTime<Utc>,
    /// See [`BackupRow`].
    pub finished_at: DateTime<Utc>,
    /// See [`BackupRow`].
    pub verification: String,
    /// See [`BackupRow`].
    pub table_count: i32,
    /// See [`BackupRow`].
    pub row_counts: serde_json::Value,
    /// See [`BackupRow`].
    pub copies: serde_json::Value,
    /// See [`BackupRow`].
    pub job_id: Option<uuid::Uuid>,
}

const COLUMNS: &str = "id, database, format, path, manifest_path, globals_path, size_bytes, sha256, \
     server_version, pg_dump_version, started_at, finished_at, verification, verified_at, \
     restore_tested_at, restore_ok, restore_error, table_count, row_counts, copies, job_id, deleted_at";

/// Records a committed backup; returns its id. Idempotent on `path`.
///
/// # Errors
/// When the insert fails.
pub async fn insert(pool: &PgPool, backup: &NewBackup) -> Result<i64, Error> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO backups (database, format, path, manifest_path, globals_path, size_bytes, sha256, \
           server_version, pg_dump_version, started_at, finished_at, verification, verified_at, \
           table_count, row_counts, copies, job_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $11, $13, $14, $15, $16) \
         ON CONFLICT (path) DO UPDATE SET path = EXCLUDED.path RETURNING id",
    )
    .bind(&backup.database)
    .bind(&backup.format)
    .bind(&backup.path)
    .bind(&backup.manifest_path)
    .bind(&backup.globals_path)
    .bind(backup.size_bytes)
    .bind(&backup.sha256)
    .bind(&backup.server_version)
    .bind(&backup.pg_dump_version)
    .bind(backup.started_at)
    .bind(backup.finished_at)
    .bind(&backup.verification)
    .bind(backup.table_count)
    .bind(&backup.row_counts)
    .bind(&backup.copies)
    .bind(backup.job_id)
    .fetch_one(pool)
    .await?;
    Ok(id)
}

/// One row by id, deleted or not.
///
/// # Errors
/// When the query fails.
pub async fn get(pool: &PgPool, id: i64) -> Result<Option<BackupRow>, Error> {
    Ok(sqlx::query_as::<_, BackupRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM backups WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

/// The live (not deleted) rows, of one database or all, newest first.
///
/// # Errors
/// When the query fails.
pub async fn list(pool: &PgPool, database: Option<&str>) -> Result<Vec<BackupRow>, Error> {
    Ok(sqlx::query_as::<_, BackupRow>(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM backups WHERE deleted_at IS NULL AND ($1::text IS NULL OR database = $1) \
         ORDER BY database, finished_at DESC, id DESC"
    )))
    .bind(database)
    .fetch_all(pool)
    .await?)
}

/// Sets the verification level (`full_read`, `restored`, `corrupt`) established now.
///
/// # Errors
/// When the update fails.
pub async fn set_verification(pool: &PgPool, id: i64, level: &str) -> Result<(), Error> {
    sqlx::query("UPDATE backups SET verification = $2, verified_at = now() WHERE id = $1")
        .bind(id)
        .bind(level)
        .execute(pool)
        .await?;
    Ok(())
}

/// Records a restore test's result (and `restored` as the level when it succeeded).
///
/// # Errors
/// When the update fails.
pub async fn set_restore_result(pool: &PgPool, id: i64, error: Option<&str>) -> Result<(), Error> {
    sqlx::query(
        "UPDATE backups SET restore_tested_at = now(), restore_ok = $2, restore_error = $3, \
           verification = CASE WHEN $2 THEN 'restored' ELSE verification END, \
           verified_at = CASE WHEN $2 THEN now() ELSE verified_at END \
         WHERE id = $1",
    )
    .bind(id)
    .bind(error.is_none())
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// Marks a backup deleted (after its files are gone).
///
/// # Errors
/// When the update fails.
pub async fn mark_deleted(pool: &PgPool, id: i64) -> Result<(), Error> {
    sqlx::query("UPDATE backups SET deleted_at = now() WHERE id = $1 AND deleted_at IS NULL")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// The newest good backup's commit time of every database that has one.
///
/// # Errors
/// When the query fails.
pub async fn newest_good(pool: &PgPool) -> Result<Vec<(String, DateTime<Utc>, i64)>, Error> {
    Ok(sqlx::query_as(
        "SELECT DISTINCT ON (database) database, finished_at, size_bytes FROM backups \
         WHERE deleted_at IS NULL AND verification IN ('full_read', 'restored') \
           AND restore_ok IS DISTINCT FROM false \
         ORDER BY database, finished_at DESC",
    )
    .fetch_all(pool)
    .await?)
}

/// The lock that makes one runner per database across all workers: a session advisory lock on
/// upkeep's database, held by a dedicated connection. It is released by [`BackupLock::release`]
/// or when the connection dies with its process (a worker killed mid-dump holds nothing).
#[derive(Debug)]
pub struct BackupLock {
    conn: PgConnection,
}

/// The advisory lock's first key: "upkeep backup" namespaces it from other advisory locks.
const LOCK_NAMESPACE: i32 = 0x0B4C_0001;

/// Takes the lock of `database` if no one holds it; `None` when another runner does.
///
/// # Errors
/// When upkeep's database cannot be reached.
pub async fn try_lock(pool: &PgPool, database: &str) -> Result<Option<BackupLock>, Error> {
    let mut conn = pool.acquire().await?.detach();
    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1, hashtext($2))")
        .bind(LOCK_NAMESPACE)
        .bind(database)
        .fetch_one(&mut conn)
        .await?;
    if got {
        Ok(Some(BackupLock { conn }))
    } else {
        let _ = conn.close().await;
        Ok(None)
    }
}

impl BackupLock {
    /// Releases the lock by closing its connection.
    pub async fn release(self) {
        let _ = self.conn.close().await;
    }
}
