//! `schedule_ticks`: one row per expected tick, the arbiter between scheduler replicas.
//!
//! [`claim_tick`] is an `INSERT ... ON CONFLICT DO NOTHING RETURNING`: of any number of replicas
//! claiming the same `(schedule, fire_at)`, exactly one gets the row back, and only that replica
//! acts on the tick. A claim whose decision implies an enqueue ([`Decision::implies_enqueue`]) is
//! confirmed with [`confirm_tick`] once the job is in Redis; [`unconfirmed_ticks`] finds the
//! claims whose claimer died in between, so another replica can enqueue them (the tick's
//! idempotency key makes a second enqueue harmless).

use std::fmt;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{FromRow, PgPool, Row};

use super::Error;
use crate::job::JobId;

/// What became of a tick: the `schedule_ticks.decision` vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Claimed; the decision is not taken yet.
    Pending,
    /// Enqueued on time.
    Enqueued,
    /// Missed while no scheduler ran, and enqueued late per the catch-up policy.
    CaughtUp,
    /// Not enqueued: the schedule's previous job was unfinished.
    SkippedOverlap,
    /// Not enqueued: the schedule was paused.
    SkippedPaused,
    /// Missed while no scheduler ran, and not run per the catch-up policy.
    Missed,
    /// Enqueued by an operator (`trigger`).
    Manual,
    /// Enqueued by an operator for a past fire time (`backfill`).
    Backfill,
}

/// One row of `schedule_ticks`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TickRow {
    /// Row id.
    pub id: i64,
    /// The schedule's name.
    pub schedule: String,
    /// The nominal fire time: with the schedule, the tick's identity.
    pub fire_at: DateTime<Utc>,
    /// What became of the tick.
    pub decision: Decision,
    /// The job, once its enqueue is confirmed.
    pub job_id: Option<JobId>,
    /// The replica (or operator) that claimed it.
    pub claimed_by: String,
    /// When it was claimed.
    pub claimed_at: DateTime<Utc>,
    /// When its enqueue was confirmed; `None` until then (and for decisions without a job).
    pub enqueued_at: Option<DateTime<Utc>>,
    /// Free-form explanation: why it was skipped, what a summary row stands for.
    pub note: Option<String>,
}

/// Claims the tick `(schedule, fire_at)` with `decision` (a [`Decision`] spelling such as
/// `"enqueued"`). `Some` means this caller won the tick and must act on it; `None` means
/// another replica already holds it.
///
/// # Errors
/// [`Error::Invalid`] when `decision` is not a [`Decision`] spelling; [`Error::Database`] on a
/// database error.
pub async fn claim_tick(
    pool: &PgPool,
    schedule: &str,
    fire_at: DateTime<Utc>,
    decision: &str,
    claimed_by: &str,
    note: Option<&str>,
) -> Result<Option<TickRow>, Error> {
    let decision = Decision::parse(decision)?;
    Ok(sqlx::query_as::<_, TickRow>(
        "INSERT INTO schedule_ticks (schedule, fire_at, decision, claimed_by, note) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (schedule, fire_at) DO NOTHING \
         RETURNING id, schedule, fire_at, decision, job_id, claimed_by, claimed_at, enqueued_at, \
         note",
    )
    .bind(schedule)
    .bind(fire_at)
    .bind(decision.as_str())
    .bind(claimed_by)
    .bind(note)
    .fetch_optional(pool)
    .await?)
}

/// Records that the tick's job is in the queue: sets its `job_id`, and `enqueued_at` unless
/// already set. Returns false when no tick has this id.
///
/// # Errors
/// [`Error::Database`] on a database error.
pub async fn confirm_tick(pool: &PgPool, tick_id: i64, job_id: JobId) -> Result<bool, Error> {
    let result = sqlx::query(
        "UPDATE schedule_ticks SET job_id = $2, enqueued_at = COALESCE(enqueued_at, now()) \
         WHERE id = $1",
    )
    .bind(tick_id)
    .bind(job_id.0)
    .execute(pool)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Claims that imply an enqueue but were never confirmed, claimed before `older_than`, oldest
/// first, at most `limit` (clamped to 1..=10000).
///
/// # Errors
/// [`Error::Database`] on a database error.
pub async fn unconfirmed_ticks(
    pool: &PgPool,
    older_than: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<TickRow>, Error> {
    Ok(sqlx::query_as::<_, TickRow>(
        "SELECT id, schedule, fire_at, decision, job_id, claimed_by, claimed_at, enqueued_at, \
         note FROM schedule_ticks \
         WHERE enqueued_at IS NULL \
           AND decision IN ('enqueued', 'caught_up', 'manual', 'backfill') \
           AND claimed_at < $1 \
         ORDER BY claimed_at LIMIT $2",
    )
    .bind(older_than)
    .bind(limit.clamp(1, 10_000))
    .fetch_all(pool)
    .await?)
}

/// The newest tick of a schedule, whatever its decision.
///
/// # Errors
/// [`Error::Database`] on a database error.
pub async fn last_tick(pool: &PgPool, schedule: &str) -> Result<Option<TickRow>, Error> {
    Ok(sqlx::query_as::<_, TickRow>(
        "SELECT id, schedule, fire_at, decision, job_id, claimed_by, claimed_at, enqueued_at, \
         note FROM schedule_ticks WHERE schedule = $1 ORDER BY fire_at DESC LIMIT 1",
    )
    .bind(schedule)
    .fetch_optional(pool)
    .await?)
}

/// The newest tick of a schedule whose job is known (its enqueue was confirmed).
///
/// # Errors
/// [`Error::Database`] on a database error.
pub async fn last_enqueued_tick(pool: &PgPool, schedule: &str) -> Result<Option<TickRow>, Error> {
    Ok(sqlx::query_as::<_, TickRow>(
        "SELECT id, schedule, fire_at, decision, job_id, claimed_by, claimed_at, enqueued_at, \
         note FROM schedule_ticks WHERE schedule = $1 AND job_id IS NOT NULL \
         ORDER BY fire_at DESC LIMIT 1",
    )
    .bind(schedule)
    .fetch_optional(pool)
    .await?)
}

/// The ticks of a schedule with `from < fire_at <= to`, oldest first, at most 10000 (callers
/// asking for more should page by moving `from`).
///
/// # Errors
/// [`Error::Database`] on a database error.
pub async fn ticks_between(
    pool: &PgPool,
    schedule: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<TickRow>, Error> {
    Ok(sqlx::query_as::<_, TickRow>(
        "SELECT id, schedule, fire_at, decision, job_id, claimed_by, claimed_at, enqueued_at, \
         note FROM schedule_ticks WHERE schedule = $1 AND fire_at > $2 AND fire_at <= $3 \
         ORDER BY fire_at LIMIT 10000",
    )
    .bind(schedule)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?)
}

impl Decision {
    /// The SQL spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Enqueued => "enqueued",
            Self::CaughtUp => "caught_up",
            Self::SkippedOverlap => "skipped_overlap",
            Self::SkippedPaused => "skipped_paused",
            Self::Missed => "missed",
            Self::Manual => "manual",
            Self::Backfill => "backfill",
        }
    }

    /// Parses the SQL spelling.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the unknown value.
    pub fn parse(text: &str) -> Result<Self, Error> {
        Ok(match text {
            "pending" => Self::Pending,
            "enqueued" => Self::Enqueued,
            "caught_up" => Self::CaughtUp,
            "skipped_overlap" => Self::SkippedOverlap,
            "skipped_paused" => Self::SkippedPaused,
            "missed" => Self::Missed,
            "manual" => Self::Manual,
            "backfill" => Self::Backfill,
            other => return Err(Error::Invalid(format!("unknown tick decision {other:?}"))),
        })
    }

    /// Whether a tick with this decision must end with a job in the queue (and so is
    /// re-enqueued by [`unconfirmed_ticks`]' callers when its claim is never confirmed).
    #[must_use]
    pub fn implies_enqueue(self) -> bool {
        matches!(
            self,
            Self::Enqueued | Self::CaughtUp | Self::Manual | Self::Backfill
        )
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'r> FromRow<'r, PgRow> for TickRow {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        let decision: String = row.try_get("decision")?;
        Ok(Self {
            id: row.try_get("id")?,
            schedule: row.try_get("schedule")?,
            fire_at: row.try_get("fire_at")?,
            decision: Decision::parse(&decision).map_err(|e| sqlx::Error::ColumnDecode {
                index: "decision".to_owned(),
                source: Box::new(e),
            })?,
            job_id: row.try_get::<Option<uuid::Uuid>, _>("job_id")?.map(JobId),
            claimed_by: row.try_get("claimed_by")?,
            claimed_at: row.try_get("claimed_at")?,
            enqueued_at: row.try_get("enqueued_at")?,
            note: row.try_get("note")?,
        })
    }
}
