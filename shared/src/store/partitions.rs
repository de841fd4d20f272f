//! Monthly partitions of `job_runs` and `findings`, and retention by dropping whole months.
//!
//! Both tables are range-partitioned on `job_id` (see the migration
//! `20261130200001_partition_job_runs_and_findings`): job ids are UUIDv7, whose leading 48 bits
//! are the unix milliseconds at which the job was minted, so the jobs of a calendar month (UTC)
//! are the id range `[uuid_floor(month start), uuid_floor(next month start))`. Every attempt and
//! every finding of a job live in the same month.
//!
//! Invariants:
//! - a month's partitions are `<table>_pYYYYMM`, and both tables always get a month together;
//! - `<table>_default` holds whatever has no month partition, so an insert never fails;
//!   [`ensure_month`] moves a month's rows out of it in the transaction that attaches the
//!   month, so creating a month that already has rows in the default does not fail either;
//! - [`prune`] drops a month (both tables, in one transaction) only when the month ended at or
//!   before the cutoff, its `job_runs` partition holds no unfinished (`running`) row and no row
//!   finished at or after the cutoff; otherwise the month is skipped and tried again next pass.
//!   Rows in the default partitions are deleted row by row (it is meant to stay near-empty).

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use sqlx::{AssertSqlSafe, PgPool};
use uuid::Uuid;

use super::Error;

/// Dynamic SQL of this module: it only ever interpolates [`TABLES`], partition names built by
/// [`partition_name`] from a date, and UUID bounds, never caller-supplied text.
#[allow(clippy::needless_pass_by_value)]
fn safe(sql: String) -> AssertSqlSafe<String> {
    AssertSqlSafe(sql)
}

/// Months created ahead of the current one by [`ensure_ahead`].
pub const MONTHS_AHEAD: u32 = 2;

/// The two partitioned tables, in the order their months are created and dropped.
const TABLES: [&str; 2] = ["job_runs", "findings"];

/// Serialises partition maintenance across workers (`pg_advisory_xact_lock` key).
const LOCK_KEY: i64 = 0x7570_6b65_6570_0001;

/// The smallest UUID whose timestamp prefix (UUIDv7 layout) is `at` or later: every v7 id
/// minted at or after `at` is at least this.
#[must_use]
pub fn uuid_floor(at: DateTime<Utc>) -> Uuid {
    let ms = u128::try_from(at.timestamp_millis().max(0)).unwrap_or(0) & 0xFFFF_FFFF_FFFF;
    Uuid::from_u128(ms << 80)
}

/// The first day of the month of `at` (UTC).
#[must_use]
pub fn month_of(at: DateTime<Utc>) -> NaiveDate {
    NaiveDate::from_ymd_opt(at.year(), at.month(), 1).unwrap_or(NaiveDate::MIN)
}

fn next_month(month: NaiveDate) -> NaiveDate {
    month
        .checked_add_months(chrono::Months::new(1))
        .unwrap_or(NaiveDate::MAX)
}

fn start_of(month: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&month.and_hms_opt(0, 0, 0).unwrap_or_default())
}

/// The name of a month's partition of `table`.
#[must_use]
pub fn partition_name(table: &str, month: NaiveDate) -> String {
    format!("{table}_p{:04}{:02}", month.year(), month.month())
}

/// Creates the partitions of the month of `now` and of the [`MONTHS_AHEAD`] after it when
/// missing; returns the months it created.
///
/// # Errors
/// [`Error::Database`] on a database error.
pub async fn ensure_ahead(pool: &PgPool, now: DateTime<Utc>) -> Result<Vec<NaiveDate>, Error> {
    let mut month = month_of(now);
    let mut created = Vec::new();
    for _ in 0..=MONTHS_AHEAD {
        if ensure_month(pool, month).await? {
            created.push(month);
        }
        month = next_month(month);
    }
    Ok(created)
}

/// Creates the partitions of `month` (its first day, or any day in it) of both tables unless
/// they exist, moving the month's rows out of the default partitions; returns whether it
/// created them.
///
/// # Errors
/// [`Error::Database`] on a database error; nothing is changed then.
pub async fn ensure_month(pool: &PgPool, month: NaiveDate) -> Result<bool, Error> {
    let month = NaiveDate::from_ymd_opt(month.year(), month.month(), 1).unwrap_or(month);
    let names: Vec<String> = TABLES.iter().map(|t| partition_name(t, month)).collect();
    if all_exist(pool, &names).await? {
        return Ok(false);
    }
    let (low, high) = (
        uuid_floor(start_of(month)),
        uuid_floor(start_of(next_month(month))),
    );
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(LOCK_KEY)
        .execute(&mut *tx)
        .await?;
    let mut created = false;
    for (table, name) in TABLES.iter().zip(&names) {
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
        if exists {
            continue;
        }
        // Built apart, filled with the month's rows from the default partition, then attached:
        // attaching checks that the default holds none of the month any more.
        sqlx::query(safe(format!(
            "CREATE TABLE {name} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS)"
        )))
        .execute(&mut *tx)
        .await?;
        sqlx::query(safe(format!(
            "WITH moved AS (DELETE FROM {table}_default WHERE job_id >= $1 AND job_id < $2 \
             RETURNING *) INSERT INTO {name} SELECT * FROM moved"
        )))
        .bind(low)
        .bind(high)
        .execute(&mut *tx)
        .await?;
        sqlx::query(safe(format!(
            "ALTER TABLE {table} ATTACH PARTITION {name} FOR VALUES FROM ('{low}') TO ('{high}')"
        )))
        .execute(&mut *tx)
        .await?;
        created = true;
    }
    tx.commit().await?;
    Ok(created)
}

async fn all_exist(pool: &PgPool, names: &[String]) -> Result<bool, Error> {
    Ok(
        sqlx::query_scalar("SELECT bool_and(to_regclass(n) IS NOT NULL) FROM unnest($1::text[]) n")
            .bind(names)
            .fetch_one(pool)
            .await?,
    )
}

/// The month partitions of `job_runs` and `findings` that exist, oldest first.
///
/// # Errors
/// [`Error::Database`] on a database error.
pub async fn months(pool: &PgPool) -> Result<Vec<NaiveDate>, Error> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT substring(c.relname FROM '_p([0-9]{6})$') \
         FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
         WHERE i.inhparent IN ('job_runs'::regclass, 'findings'::regclass) \
           AND c.relname ~ '_p[0-9]{6}$' ORDER BY 1",
    )
    .fetch_all(pool)
    .await?;
    Ok(names
        .iter()
        .filter_map(|yyyymm| NaiveDate::parse_from_str(&format!("{yyyymm}01"), "%Y%m%d").ok())
        .collect())
}

/// What one [`prune`] pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Months whose partitions were detached and dropped.
    pub dropped: Vec<NaiveDate>,
    /// Months past the cutoff that were kept, with why.
    pub skipped: Vec<(NaiveDate, &'static str)>,
    /// Runs deleted row by row from the default partition.
    pub default_rows_deleted: u64,
}

/// Retention: drops the months (both tables) that ended at or before `cutoff`, unless their
/// `job_runs` partition holds a running row or a row that finished at or after `cutoff`; then
/// deletes the runs in the default partition that finished before `cutoff`, with their
/// findings, in batches of `batch_limit`.
///
/// # Errors
/// [`Error::Database`] on a database error; months already dropped stay dropped. A month whose
/// table lock is not granted within a few seconds (busy writers) is skipped, not an error.
pub async fn prune(
    pool: &PgPool,
    cutoff: DateTime<Utc>,
    batch_limit: i64,
) -> Result<PruneReport, Error> {
    let mut report = PruneReport::default();
    for month in months(pool).await? {
        if start_of(next_month(month)) > cutoff {
            break;
        }
        match drop_month(pool, month, cutoff).await? {
            None => report.dropped.push(month),
            Some(reason) => report.skipped.push((month, reason)),
        }
    }
    report.default_rows_deleted = super::delete_in_batches(
        pool,
        "WITH doomed AS ( \
             DELETE FROM job_runs_default WHERE (job_id, attempt) IN ( \
                 SELECT job_id, attempt FROM job_runs_default WHERE finished_at < $1 \
                 ORDER BY finished_at LIMIT $2) \
             RETURNING job_id, attempt \
         ), gone AS ( \
             DELETE FROM findings_default f USING doomed d \
             WHERE f.job_id = d.job_id AND f.attempt = d.attempt \
         ) \
         SELECT count(*) FROM doomed",
        cutoff,
        batch_limit,
    )
    .await?;
    Ok(report)
}

/// Drops one month of both tables; `Some(reason)` when it must be kept.
async fn drop_month(
    pool: &PgPool,
    month: NaiveDate,
    cutoff: DateTime<Utc>,
) -> Result<Option<&'static str>, Error> {
    let runs = partition_name("job_runs", month);
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(LOCK_KEY)
        .execute(&mut *tx)
        .await?;
    // Bounded waits: a busy table makes this month wait for the next pass instead of queueing
    // the writers behind our lock.
    sqlx::query("SET LOCAL lock_timeout = '3s'")
        .execute(&mut *tx)
        .await?;
    let runs_exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(&runs)
        .fetch_one(&mut *tx)
        .await?;
    if runs_exists {
        // Writers are held off the partition from here to the drop, so the check stays true.
        if let Err(error) = sqlx::query(safe(format!("LOCK TABLE {runs} IN SHARE MODE")))
            .execute(&mut *tx)
            .await
        {
            return lock_not_granted(error);
        }
        // Two index probes: any running row (job_runs_status_id_idx), then the newest finish
        // (job_runs_finished_at_idx read backward: DESC with nulls first, so an unfinished row
        // comes first).
        let running: bool = sqlx::query_scalar(safe(format!(
            "SELECT EXISTS (SELECT 1 FROM {runs} WHERE status = 'running')"
        )))
        .fetch_one(&mut *tx)
        .await?;
        if running {
            return Ok(Some("holds a running row"));
        }
        let newest: Option<Option<DateTime<Utc>>> = sqlx::query_scalar(safe(format!(
            "SELECT finished_at FROM {runs} ORDER BY finished_at DESC NULLS FIRST LIMIT 1"
        )))
        .fetch_optional(&mut *tx)
        .await?;
        match newest {
            Some(None) => return Ok(Some("holds an unfinished row")),
            Some(Some(at)) if at >= cutoff => {
                return Ok(Some("holds a row finished after the cutoff"));
            }
            _ => {}
        }
    }
    for table in TABLES {
        let name = partition_name(table, month);
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(&name)
            .fetch_one(&mut *tx)
            .await?;
        if !exists {
            continue;
        }
        if let Err(error) =
            sqlx::query(safe(format!("ALTER TABLE {table} DETACH PARTITION {name}")))
                .execute(&mut *tx)
                .await
        {
            return lock_not_granted(error);
        }
        sqlx::query(safe(format!("DROP TABLE {name}")))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(None)
}

/// A lock timeout (SQLSTATE 55P03) or deadlock (40P01) skips the month; anything else is an
/// error. The transaction is rolled back when dropped.
fn lock_not_granted(error: sqlx::Error) -> Result<Option<&'static str>, Error> {
    let code = error
        .as_database_error()
        .and_then(|e| e.code().map(|c| c.into_owned()));
    match code.as_deref() {
        Some("55P03" | "40P01") => Ok(Some("its lock was not granted in time")),
        _ => Err(error.into()),
    }
}
