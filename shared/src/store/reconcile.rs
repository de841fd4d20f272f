//! The ledger side of reconciliation (see [`crate::reconcile`]): which jobs the ledger says
//! never finished, and how a job given up as lost is recorded.
//!
//! Both candidate queries are bounded by a time window (`lookback`) and a `LIMIT`, and start
//! from an index (`job_runs_finished_at_idx`; `schedule_ticks` by its unique key's scan), so a
//! pass costs the same on a ledger of any age.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::Error;
use crate::job::JobId;

/// A job the ledger says did not finish: its latest attempt said the queue would retry it,
/// or a confirmed scheduler tick named it and it never ran.
#[derive(Debug, Clone, PartialEq)]
pub struct Unfinished {
    /// The job.
    pub job_id: JobId,
    /// Its kind.
    pub kind: String,
    /// Its queue.
    pub queue: String,
    /// Its arguments (from its last run, or from its schedule for a tick that never ran).
    pub args: serde_json::Value,
    /// The highest attempt the ledger has (0 for a tick that never ran).
    pub last_attempt: i32,
    /// When it was enqueued.
    pub enqueued_at: DateTime<Utc>,
    /// The schedule that produced it.
    pub schedule: Option<String>,
    /// The tick that produced it.
    pub tick_at: Option<DateTime<Utc>>,
    /// Where the ledger's knowledge comes from: `job_runs` or `schedule_ticks`.
    pub source: &'static str,
}

/// Jobs whose latest attempt ended with `next_state = 'retrying'` between `lookback` and
/// `grace` ago, and that have no later attempt and no succeeded, done or dead row: the ledger
/// expects Redis to run them again. Oldest first, at most `limit`.
///
/// # Errors
/// [`Error::Database`] on a database error.
pub async fn retrying_jobs(
    pool: &PgPool,
    grace: std::time::Duration,
    lookback: std::time::Duration,
    limit: i64,
) -> Result<Vec<Unfinished>, Error> {
    let rows: Vec<RetryingRow> = sqlx::query_as(
        "SELECT l.job_id, l.kind, l.queue, l.args, l.attempt, l.enqueued_at, l.schedule, \
                l.tick_at \
         FROM job_runs l \
         WHERE l.finished_at >= now() - make_interval(secs => $2) \
           AND l.finished_at < now() - make_interval(secs => $1) \
           AND l.next_state = 'retrying' \
           AND NOT EXISTS ( \
               SELECT 1 FROM job_runs r WHERE r.job_id = l.job_id \
                 AND (r.attempt > l.attempt OR r.status = 'succeeded' \
                      OR r.next_state IN ('done', 'dead'))) \
         ORDER BY l.finished_at LIMIT $3",
    )
    .bind(grace.as_secs_f64())
    .bind(lookback.as_secs_f64())
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(job_id, kind, queue, args, attempt, enqueued_at, schedule, tick_at)| Unfinished {
                job_id: JobId(job_id),
                kind,
                queue,
                args,
                last_attempt: attempt,
                enqueued_at,
                schedule,
                tick_at,
                source: "job_runs",
            },
        )
        .collect())
}

/// Jobs of confirmed scheduler ticks (enqueue confirmed between `lookback` and `grace` ago)
/// that have no run at all, with their schedule's kind, queue and arguments. Oldest first, at
/// most `limit`. (Unconfirmed ticks are the scheduler's own business: it re-enqueues them.)
///
/// # Errors
/// [`Error::Database`] on a database error.
pub async fn unrun_tick_jobs(
    pool: &PgPool,
    grace: std::time::Duration,
    lookback: std::time::Duration,
    limit: i64,
) -> Result<Vec<Unfinished>, Error> {
    let rows: Vec<TickRow> = sqlx::query_as(
        "SELECT t.job_id, s.kind, s.queue, s.args, t.enqueued_at, t.schedule, t.fire_at \
         FROM schedule_ticks t JOIN schedules s ON s.name = t.schedule \
         WHERE t.job_id IS NOT NULL \
           AND t.decision IN ('enqueued', 'caught_up', 'manual', 'backfill') \
           AND t.enqueued_at IS NOT NULL \
           AND t.fire_at >= now() - make_interval(secs => $2) \
           AND t.enqueued_at < now() - make_interval(secs => $1) \
           AND NOT EXISTS (SELECT 1 FROM job_runs r WHERE r.job_id = t.job_id) \
         ORDER BY t.fire_at LIMIT $3",
    )
    .bind(grace.as_secs_f64())
    .bind(lookback.as_secs_f64())
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(job_id, kind, queue, args, enqueued_at, schedule, fire_at)| Unfinished {
                job_id: JobId(job_id),
                kind,
                queue,
                args,
                last_attempt: 0,
                enqueued_at,
                schedule: Some(schedule),
                tick_at: Some(fire_at),
                source: "schedule_ticks",
            },
        )
        .collect())
}

/// Records that a lost job was given up: an `abandoned` attempt (the next attempt number,
/// worker `reconcile`, `next_state = 'dead'`) and a critical `job.lost` finding. Idempotent:
/// an existing row or finding is left alone. Returns whether the row was written.
///
/// # Errors
/// [`Error::Database`] on a database error.
pub async fn record_lost(pool: &PgPool, job: &Unfinished, reason: &str) -> Result<bool, Error> {
    let attempt = job.last_attempt + 1;
    let mut tx = pool.begin().await?;
    let written = sqlx::query(
        "INSERT INTO job_runs (job_id, attempt, kind, queue, status, schedule, tick_at, \
             enqueued_at, started_at, finished_at, duration_ms, worker, args, error, next_state) \
         VALUES ($1, $2, $3, $4, 'abandoned', $5, $6, $7, now(), now(), 0, 'reconcile', $8, $9, \
             'dead') \
         ON CONFLICT (job_id, attempt) DO NOTHING",
    )
    .bind(job.job_id.0)
    .bind(attempt)
    .bind(&job.kind)
    .bind(&job.queue)
    .bind(&job.schedule)
    .bind(job.tick_at)
    .bind(job.enqueued_at)
    .bind(&job.args)
    .bind(reason)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    insert_finding(&mut tx, job, attempt, "job.lost", "critical", reason).await?;
    tx.commit().await?;
    Ok(written > 0)
}

/// Records a warn `job.requeued_after_loss` finding on the job's last attempt: Redis had lost
/// the job and reconciliation put it back.
///
/// # Errors
/// [`Error::Database`] on a database error.
pub async fn record_requeued(pool: &PgPool, job: &Unfinished, message: &str) -> Result<(), Error> {
    let mut tx = pool.begin().await?;
    insert_finding(
        &mut tx,
        job,
        job.last_attempt,
        "job.requeued_after_loss",
        "warn",
        message,
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Reconciliation findings take ordinal -1: handlers number theirs from 1, so the two never
/// collide, and a second pass over the same attempt writes nothing new.
async fn insert_finding(
    tx: &mut sqlx::PgConnection,
    job: &Unfinished,
    attempt: i32,
    code: &str,
    severity: &str,
    message: &str,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO findings (job_id, attempt, ordinal, kind, code, severity, message, detail) \
         VALUES ($1, $2, -1, $3, $4, $5, $6, $7) \
         ON CONFLICT (job_id, attempt, ordinal) DO NOTHING",
    )
    .bind(job.job_id.0)
    .bind(attempt)
    .bind(&job.kind)
    .bind(code)
    .bind(severity)
    .bind(message)
    .bind(serde_json::json!({ "queue": job.queue, "source": job.source }))
    .execute(tx)
    .await?;
    Ok(())
}

type RetryingRow = (
    Uuid,
    String,
    String,
    serde_json::Value,
    i32,
    DateTime<Utc>,
    Option<String>,
    Option<DateTime<Utc>>,
);

type TickRow = (
    Uuid,
    String,
    String,
    serde_json::Value,
    DateTime<Utc>,
    String,
    DateTime<Utc>,
);
