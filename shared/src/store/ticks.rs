//! `schedule_ticks`: one row per expected tick, the arbiter between scheduler replicas.
//!
//! [`claim_tick`] is an `INSERT ... ON CONFLICT DO NOTHING RETURNING`: of any number of replicas
//! claiming the same `(schedule, fire_at)`, exactly one gets the row back, and only that replica
//! acts on the tick. A claim whose decision implies an enqueue ([`Decision::implies_enqueue`]) is
//! confirmed with [`confirm_tick`] once the job is in Redis; [`unconfirmed_ticks`] finds the
//! claims whose claimer died in between, so another replica can enqueue them (the tick's
//! idempotency key makes a second enqueue harmless).

use std::collections::HashMap;
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

/// One tick to claim with [`claim_ticks`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TickClaim {
    /// The schedule's name.
    pub schedule: String,
    /// The nominal fire time.
    pub fire_at: DateTime<Utc>,
    /// The decision to record.
    pub decision: Decision,
    /// Why, when the decision needs explaining.
    pub note: Option<String>,
}

/// Claims many ticks in one statement, each like [`claim_tick`]; returns the rows this caller
/// won (in no particular order). A tick another caller already holds, or listed twice, is
/// won at most once.
///
/// # Errors
/// [`Error::Database`] on a database error; nothing is claimed then (one statement).
pub async fn claim_ticks(
    pool: &PgPool,
    claims: &[TickClaim],
    claimed_by: &str,
) -> Result<Vec<TickRow>, Error> {
    if claims.is_empty() {
        return Ok(Vec::new());
    }
    let schedules: Vec<&str> = claims.iter().map(|c| c.schedule.as_str()).collect();
    let fire_ats: Vec<DateTime<Utc>> = claims.iter().map(|c| c.fire_at).collect();
    let decisions: Vec<&str> = claims.iter().map(|c| c.decision.as_str()).collect();
    let notes: Vec<Option<&str>> = claims.iter().map(|c| c.note.as_deref()).collect();
    Ok(sqlx::query_as::<_, TickRow>(
        "INSERT INTO schedule_ticks (schedule, fire_at, decision, claimed_by, note) \
         SELECT c.schedule, c.fire_at, c.decision, $5, c.note \
           FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[]) \
                AS c(schedule, fire_at, decision, note) \
         ON CONFLICT (schedule, fire_at) DO NOTHING \
         RETURNING id, schedule, fire_at, decision, job_id, claimed_by, claimed_at, enqueued_at, \
         note",
    )
    .bind(schedules)
    .bind(fire_ats)
    .bind(decisions)
    .bind(notes)
    .bind(claimed_by)
    .fetch_all(pool)
    .await?)
}

/// Confirms many ticks in one statement, each like [`confirm_tick`]; returns how many rows
/// changed.
///
/// # Errors
/// [`Error::Database`] on a database error.
pub async fn confirm_ticks(pool: &PgPool, confirmed: &[(i64, JobId)]) -> Result<u64, Error> {
    if confirmed.is_empty() {
        return Ok(0);
    }
    let ids: Vec<i64> = confirmed.iter().map(|(id, _)| *id).collect();
    let job_ids: Vec<uuid::Uuid> = confirmed.iter().map(|(_, job_id)| job_id.0).collect();
    let result = sqlx::query(
        "UPDATE schedule_ticks AS t SET job_id = c.job_id, \
                enqueued_at = COALESCE(t.enqueued_at, now()) \
           FROM unnest($1::bigint[], $2::uuid[]) AS c(id, job_id) \
          WHERE t.id = c.id",
    )
    .bind(ids)
    .bind(job_ids)
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

/// Turns `missed` ticks of `schedule` at `fire_ats` into `backfill` claims of `claimed_by`
/// (an operator re-running what a downtime skipped); returns the rows changed. Each row
/// changes at most once, so concurrent backfills of one range do not both win a tick.
///
/// # Errors
/// [`Error::Database`] on a database error.
pub async fn reclaim_missed_for_backfill(
    pool: &PgPool,
    schedule: &str,
    fire_ats: &[DateTime<Utc>],
    claimed_by: &str,
) -> Result<Vec<TickRow>, Error> {
    if fire_ats.is_empty() {
        return Ok(Vec::new());
    }
    Ok(sqlx::query_as::<_, TickRow>(
        "UPDATE schedule_ticks SET decision = 'backfill', claimed_by = $3, claimed_at = now(), \
                note = 'missed, then backfilled' \
          WHERE schedule = $1 AND fire_at = ANY($2) AND decision = 'missed' \
         RETURNING id, schedule, fire_at, decision, job_id, claimed_by, claimed_at, enqueued_at, \
         note",
    )
    .bind(schedule)
    .bind(fire_ats)
    .bind(claimed_by)
    .fetch_all(pool)
    .await?)
}

/// The newest fire time a scheduler decided (any decision but `manual` and `backfill`) of each
/// of `schedules` that has one, in one statement: where catch-up starts after a downtime.
///
/// Operator ticks are left out: a `manual` tick at "now" or a backfill of part of a downtime
/// does not mean a scheduler saw the ticks before it, and counting them would hide those ticks
/// from catch-up (they would get no row).
///
/// # Errors
/// [`Error::Database`] on a database error.
pub async fn last_fire_times(
    pool: &PgPool,
    schedules: &[String],
) -> Result<HashMap<String, DateTime<Utc>>, Error> {
    if schedules.is_empty() {
        return Ok(HashMap::new());
    }
    let rows: Vec<(String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT n.name, t.fire_at FROM unnest($1::text[]) AS n(name) \
           JOIN LATERAL (SELECT fire_at FROM schedule_ticks WHERE schedule = n.name \
                            AND decision NOT IN ('manual', 'backfill') \
                          ORDER BY fire_at DESC LIMIT 1) AS t ON true",
    )
    .bind(schedules)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
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

/// Claims of `schedules` that imply an enqueue but were never confirmed, claimed before
/// `older_than`, in `(claimed_at, id)` order starting strictly after `after` (`None`: from the
/// oldest), at most `limit` (clamped to 1..=10000).
///
/// The caller pages through them with `after` = the last row's `(claimed_at, id)`, so rows it
/// cannot act on (their enqueue fails every time) do not keep it from reaching the others;
/// claims of schedules it does not run are not listed at all.
///
/// # Errors
/// [`Error::Database`] on a database error.
pub async fn unconfirmed_ticks(
    pool: &PgPool,
    schedules: &[String],
    older_than: DateTime<Utc>,
    after: Option<(DateTime<Utc>, i64)>,
    limit: i64,
) -> Result<Vec<TickRow>, Error> {
    let (after_at, after_id) = after.map_or((None, None), |(at, id)| (Some(at), Some(id)));
    Ok(sqlx::query_as::<_, TickRow>(
        "SELECT id, schedule, fire_at, decision, job_id, claimed_by, claimed_at, enqueued_at, \
         note FROM schedule_ticks \
         WHERE enqueued_at IS NULL \
           AND decision IN ('enqueued', 'caught_up', 'manual', 'backfill') \
           AND claimed_at < $1 \
           AND schedule = ANY($2) \
           AND ($3::timestamptz IS NULL OR (claimed_at, id) > ($3, $4)) \
         ORDER BY claimed_at, id LIMIT $5",
    )
    .bind(older_than)
    .bind(schedules)
    .bind(after_at)
    .bind(after_id)
    .bind(limit.clamp(1, 10_000))
    .fetch_all(pool)
    .await?)
}

/// The retention of `schedule_ticks`: deletes ticks that fired before `cutoff`, except the newest
/// tick of each schedule and its newest tick decided by a scheduler (catch-up after downtime
/// starts from that one, see [`last_fire_times`]), in batches of at most
/// `batch_limit` rows, each its own short statement; returns how many were deleted.
/// `batch_limit` is clamped to 1..=100000.
///
/// # Errors
/// [`Error::Database`] on a database error; batches already deleted stay deleted.
pub async fn delete_ticks_older_than(
    pool: &PgPool,
    cutoff: DateTime<Utc>,
    batch_limit: i64,
) -> Result<u64, Error> {
    // Per schedule through UNIQUE (schedule, fire_at), so no scan of the whole table.
    super::delete_in_batches(
        pool,
        "WITH doomed AS ( \
             SELECT old.id FROM schedules s \
             CROSS JOIN LATERAL ( \
                 SELECT t.id FROM schedule_ticks t \
                 WHERE t.schedule = s.name AND t.fire_at < $1 \
                   AND t.fire_at < (SELECT max(m.fire_at) FROM schedule_ticks m \
                                    WHERE m.schedule = s.name) \
                   AND t.fire_at <> COALESCE((SELECT max(m.fire_at) FROM schedule_ticks m \
                                    WHERE m.schedule = s.name \
                                      AND m.decision NOT IN ('manual', 'backfill')), \
                                    '-infinity') \
                 ORDER BY t.fire_at LIMIT $2) old \
             LIMIT $2 \
         ), gone AS ( \
             DELETE FROM schedule_ticks WHERE id IN (SELECT id FROM doomed) RETURNING 1 \
         ) \
         SELECT count(*) FROM gone",
        cutoff,
        batch_limit,
    )
    .await
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
