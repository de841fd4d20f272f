//! `job_runs` (one row per attempt) and `findings`: the hot path of every worker.
//!
//! [`record_runs`] writes a whole batch in one statement (columns passed as arrays and
//! expanded with `UNNEST`), together with the findings of the rows it actually wrote, so a batch
//! costs one round trip and one transaction however large it is (two when a plain insert of new
//! attempts meets one already recorded and the idempotent statement takes over). A large batch
//! of new attempts without findings, the hot path under load, goes by binary `COPY` instead:
//! two round trips, a quarter less Postgres CPU per row. It is idempotent on
//! `(job_id, attempt)`: a finished row is never overwritten by a duplicate delivery; only a
//! `running` row may be completed by a later write. An `abandoned` row is final too: the
//! queue settles a taken-over job from it (see `queue::backend::completer`), so a result that
//! arrives after it (a worker paused between its fence check and its commit) is dropped like
//! a fenced one, and [`record_runs_read_back`] says so. Workers acknowledge a job to
//! Redis only after this returns.
//!
//! Both tables are partitioned by month on `job_id` (see [`super::partitions`]); retention drops
//! whole months there. [`delete_runs_older_than`] deletes rows in bounded batches, for callers
//! that need a finer cut.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{FromRow, PgPool, Row};
use uuid::Uuid;

use super::Error;
use crate::job::{JobId, Outcome};

/// The `job_runs.status` vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// The attempt is in progress.
    Running,
    /// The handler succeeded.
    Succeeded,
    /// The handler failed.
    Failed,
    /// The worker lost the attempt (lease expired, or shut down mid-attempt).
    Abandoned,
    /// Not run: the job had already succeeded.
    Skipped,
}

/// One attempt to write with [`record_runs`].
#[derive(Debug, Clone, PartialEq)]
pub struct RunRecord {
    /// The job.
    pub job_id: JobId,
    /// Which attempt, 1 for the first delivery.
    pub attempt: i32,
    /// The job kind as stored in the queue (may be unknown to this build).
    pub kind: String,
    /// The queue it was fetched from.
    pub queue: String,
    /// How it ended, or [`RunStatus::Running`].
    pub status: RunStatus,
    /// The schedule that produced the job, if any.
    pub schedule: Option<String>,
    /// The nominal fire time of the tick that produced the job, if any.
    pub tick_at: Option<DateTime<Utc>>,
    /// When the job was enqueued.
    pub enqueued_at: DateTime<Utc>,
    /// When this attempt started.
    pub started_at: DateTime<Utc>,
    /// When this attempt ended; `None` while running.
    pub finished_at: Option<DateTime<Utc>>,
    /// The worker's identity.
    pub worker: String,
    /// The job's arguments.
    pub args: serde_json::Value,
    /// What a successful attempt produced; its findings go to `findings`.
    pub outcome: Option<Outcome>,
    /// Why the attempt failed.
    pub error: Option<String>,
    /// What the queue did next: `done`, `retrying` or `dead`.
    pub next_state: Option<String>,
}

/// One row of `job_runs` as read back.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RunRow {
    /// Row id; increases with insertion.
    pub id: i64,
    /// The job.
    pub job_id: JobId,
    /// Which attempt.
    pub attempt: i32,
    /// The job kind.
    pub kind: String,
    /// The queue.
    pub queue: String,
    /// How the attempt ended, or running.
    pub status: RunStatus,
    /// The schedule that produced the job, if any.
    pub schedule: Option<String>,
    /// The tick that produced the job, if any.
    pub tick_at: Option<DateTime<Utc>>,
    /// When the job was enqueued.
    pub enqueued_at: DateTime<Utc>,
    /// When the attempt started.
    pub started_at: DateTime<Utc>,
    /// When the attempt ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// `finished_at - started_at` in milliseconds.
    pub duration_ms: Option<i64>,
    /// The worker's identity.
    pub worker: String,
    /// The job's arguments.
    pub args: serde_json::Value,
    /// What a successful attempt produced.
    pub outcome: Option<Outcome>,
    /// Why the attempt failed.
    pub error: Option<String>,
    /// What the queue did next: `done`, `retrying` or `dead`.
    pub next_state: Option<String>,
    /// When the ledger last wrote the row.
    pub recorded_at: DateTime<Utc>,
}

/// Records a batch of attempts in one statement, with their findings; returns how many run rows
/// were inserted or completed.
///
/// Idempotent: a record whose `(job_id, attempt)` row already exists only completes a
/// `running` row (a `running` record never replaces anything); a finished row is
/// left alone, and so are its findings. Findings are written only for rows this call wrote.
/// When the batch holds the same attempt twice, the most final record wins.
///
/// # Errors
/// [`Error::Database`] on a database error, or when an outcome cannot be encoded.
/// Nothing is written then: the statement is atomic.
pub async fn record_runs(pool: &PgPool, records: &[RunRecord]) -> Result<u64, Error> {
    Ok(write_batch(pool, records).await?.len() as u64)
}

/// The `(job_id, attempt)` keys a batch write inserted or completed.
enum Written {
    /// Every distinct key of the batch: the plain insert (or `COPY`) went through, the common
    /// batch, which then needs no set of its keys built and hashed.
    All(usize),
    /// Those the idempotent statement returned.
    Keys(HashSet<(Uuid, i32)>),
}

impl Written {
    fn len(&self) -> usize {
        match self {
            Self::All(n_rows) => *n_rows,
            Self::Keys(keys) => keys.len(),
        }
    }

    /// An `All` batch wrote every distinct key it holds (asked when it held one attempt twice).
    fn contains(&self, key: &(Uuid, i32)) -> bool {
        match self {
            Self::All(_) => true,
            Self::Keys(keys) => keys.contains(key),
        }
    }
}

/// The write behind [`record_runs`]: a plain insert (a `COPY` from [`COPY_MIN_ROWS`] rows) for
/// a batch of new attempts without findings, the idempotent statement otherwise or when that
/// insert meets a recorded key;
/// returns the `(job_id, attempt)` of the rows inserted or completed.
async fn write_batch(pool: &PgPool, records: &[RunRecord]) -> Result<Written, Error> {
    if records.is_empty() {
        return Ok(Written::Keys(HashSet::new()));
    }
    // One INSERT ... ON CONFLICT cannot touch the same row twice, so duplicates inside the batch
    // are settled here. The rows go in key order: job ids grow with time, so each batch then
    // appends to the right edge of the primary key, whose B-tree splits a full rightmost page
    // 90/10; in any other order an insert lands inside that page and the split is 50/50
    // (600,000 rows in hash order: 4,437 pages of `job_runs_pkey`, about 60 % full).
    let mut best: BTreeMap<(JobId, i32), &RunRecord> = BTreeMap::new();
    for record in records {
        best.entry((record.job_id, record.attempt))
            .and_modify(|kept| {
                if record.status.finality() >= kept.status.finality() {
                    *kept = record;
                }
            })
            .or_insert(record);
    }
    let n_rows = best.len();
    let mut columns = Columns::with_capacity(n_rows);
    let mut any_findings = false;
    for record in best.into_values() {
        any_findings |= record
            .outcome
            .as_ref()
            .is_some_and(|outcome| !outcome.findings.is_empty());
        columns.push(record);
    }
    // The common batch: new attempts, none with findings. A plain INSERT writes it at about
    // half the cost of the idempotent statement (no speculative insertion, no RETURNING, no
    // findings CTE to set up); a key that already has a row fails it as a whole, with nothing
    // written, and the idempotent statement then settles the batch row by row.
    if !any_findings {
        let inserted = if n_rows >= COPY_MIN_ROWS && copy_enabled() {
            copy_new_runs(pool, columns.copy_rows()?).await
        } else {
            sqlx::query_with(INSERT_RUNS_SQL, columns.arguments()?)
                .execute(pool)
                .await
                .map(drop)
        };
        match inserted {
            Ok(()) => return Ok(Written::All(n_rows)),
            Err(error) if is_unique_violation(&error) => {
                tracing::debug!(
                    rows = n_rows,
                    "a run of the batch already has a row; writing it idempotently"
                );
            }
            Err(error) => return Err(error.into()),
        }
    }
    let written: Vec<(Uuid, i32)> = sqlx::query_as_with(RECORD_RUNS_SQL, columns.arguments()?)
        .fetch_all(pool)
        .await?;
    Ok(Written::Keys(written.into_iter().collect()))
}

/// Batches of new attempts from this many rows up are written by `COPY` instead of
/// [`INSERT_RUNS_SQL`]: a quarter less Postgres CPU per row (multi-row heap inserts, binary
/// input with no arrays to unpack), at the price of a second round trip (the server must
/// answer the `COPY` before the rows go). A batch of a few rows means a lightly loaded worker,
/// where the round trip matters more than the CPU; eight already means several attempts ended
/// within one ledger write (8 against 32: 4-9 % less CPU per job in 18 interleaved benchmark
/// pairs, jobs/s pair medians 1.04 and 1.02). Only on pools whose connections have Nagle's
/// algorithm off (`store::nagle`): on the others a `COPY` would wait out a delayed ACK.
pub const COPY_MIN_ROWS: usize = 8;

/// Whether this process writes batches from [`COPY_MIN_ROWS`] rows by `COPY`: once its
/// pools (those of `DatabaseSettings::pool_options`) have opened connections and turned
/// Nagle's algorithm off on every one of them.
#[must_use]
pub fn copy_enabled() -> bool {
    super::nagle::copy_is_quick()
}

/// Writes `rows` (a binary COPY stream of new attempts) in one `COPY`, which is atomic: a key
/// that already has a row fails it with a unique violation and nothing is written.
///
/// The `COPY` runs in a task of its own, so a caller that stops waiting (a timeout) never
/// returns a connection to the pool in the middle of it.
async fn copy_new_runs(pool: &PgPool, rows: Vec<u8>) -> Result<(), sqlx::Error> {
    let pool = pool.clone();
    let copy = tokio::spawn(async move {
        let mut conn = pool.acquire().await?;
        let mut copy = conn.copy_in_raw(COPY_RUNS_SQL).await?;
        copy.send(rows).await?;
        copy.finish().await.map(drop)
    });
    copy.await
        .map_err(|error| sqlx::Error::Protocol(format!("COPY task failed: {error}")))?
}

fn is_unique_violation(error: &sqlx::Error) -> bool {
    error
        .as_database_error()
        .is_some_and(|database| database.is_unique_violation())
}

/// `job_id, attempt, status, next_state, error, worker, started_at` as read back.
type ExistingRowTuple = (
    Uuid,
    i32,
    String,
    Option<String>,
    Option<String>,
    String,
    DateTime<Utc>,
);

/// An existing row as [`record_runs_read_back`] compares it with a record.
struct ExistingRow {
    stored: StoredRun,
    status: RunStatus,
    worker: String,
    started_at: DateTime<Utc>,
}

async fn read_rows(
    pool: &PgPool,
    keys: &[(Uuid, i32)],
) -> Result<HashMap<(Uuid, i32), ExistingRow>, Error> {
    let (job_ids, attempts): (Vec<Uuid>, Vec<i32>) = keys.iter().copied().unzip();
    let rows: Vec<ExistingRowTuple> = sqlx::query_as(
        "SELECT r.job_id, r.attempt, r.status, r.next_state, r.error, r.worker, r.started_at \
             FROM job_runs r JOIN UNNEST($1::uuid[], $2::int4[]) AS k(job_id, attempt) \
             ON r.job_id = k.job_id AND r.attempt = k.attempt",
    )
    .bind(job_ids)
    .bind(attempts)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(
            |(job_id, attempt, status, next_state, error, worker, started_at)| {
                let status = RunStatus::parse(&status)?;
                Ok((
                    (job_id, attempt),
                    ExistingRow {
                        stored: StoredRun {
                            attempt,
                            status,
                            next_state,
                            error,
                        },
                        status,
                        worker,
                        started_at,
                    },
                ))
            },
        )
        .collect()
}

/// Per job: its succeeded row, if any, and its highest attempt number.
struct JobSummary {
    success: Option<StoredRun>,
    last_attempt: i32,
}

async fn job_summaries(pool: &PgPool, jobs: &[Uuid]) -> Result<HashMap<Uuid, JobSummary>, Error> {
    let rows: Vec<(Uuid, i32, Option<i32>)> = sqlx::query_as(
        "SELECT job_id, max(attempt), min(attempt) FILTER (WHERE status = 'succeeded') \
         FROM job_runs WHERE job_id = ANY($1) GROUP BY job_id",
    )
    .bind(jobs)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(job_id, last_attempt, success)| {
            (
                job_id,
                JobSummary {
                    success: success.map(|attempt| StoredRun {
                        attempt,
                        status: RunStatus::Succeeded,
                        next_state: Some("done".to_owned()),
                        error: None,
                    }),
                    last_attempt,
                },
            )
        })
        .collect())
}

impl StoredRun {
    fn of(record: &RunRecord) -> Self {
        Self {
            attempt: record.attempt,
            status: record.status,
            next_state: record.next_state.clone(),
            error: record.error.clone(),
        }
    }
}

/// The row that stands for one record after [`record_runs_read_back`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRun {
    /// The attempt number of the row (the record's, or the next free one when renumbered).
    pub attempt: i32,
    /// The row's status.
    pub status: RunStatus,
    /// The row's `next_state`.
    pub next_state: Option<String>,
    /// The row's error.
    pub error: Option<String>,
}

/// Like [`record_runs`], and returns, for each record in order, the row that stands for it once
/// the batch is committed: the queue settles each job to what the ledger holds.
///
/// A record whose `(job_id, attempt)` already has a final row written by another execution
/// (another worker, or another start time) is not dropped when it is a `succeeded` or `failed`
/// result: the attempt number was replayed (Redis lost writes and leased the job again with a
/// number already used), so it is stored under the job's next free attempt number. A second
/// success is the exception: a job has at most one `succeeded` row, so that record yields the
/// existing success instead. Anything else (a duplicate of the same execution, a late
/// `abandoned`) yields the existing row. Every step is idempotent; renumbered rows are written
/// in a second statement, which happens only after Redis lost writes.
///
/// # Errors
/// As [`record_runs`]. A failure after the first statement leaves that statement committed;
/// calling again with the same records is safe.
pub async fn record_runs_read_back(
    pool: &PgPool,
    records: &[RunRecord],
) -> Result<Vec<StoredRun>, Error> {
    let mut stored: Vec<Option<StoredRun>> = vec![None; records.len()];
    let mut pending: Vec<usize> = (0..records.len()).collect();
    // Copied only when a record is renumbered (after Redis lost writes): the common batch is
    // written straight from `records`.
    let mut batch: Cow<'_, [RunRecord]> = Cow::Borrowed(records);
    // Each round writes what is pending; a renumbered record that loses a race for its new
    // number to a concurrent writer is tried again with the next one.
    for _round in 0..4 {
        if pending.is_empty() {
            break;
        }
        let written = if pending.len() == batch.len() {
            write_batch(pool, &batch).await?
        } else {
            let to_write: Vec<RunRecord> = pending.iter().map(|idx| batch[*idx].clone()).collect();
            write_batch(pool, &to_write).await?
        };
        // The common batch: every record written, none twice (the set has one key per record),
        // so each record stands for itself.
        if written.len() == pending.len() {
            for idx in &pending {
                stored[*idx] = Some(StoredRun::of(&batch[*idx]));
            }
            break;
        }
        let unwritten: Vec<usize> = pending
            .iter()
            .copied()
            .filter(|idx| !written.contains(&(batch[*idx].job_id.0, batch[*idx].attempt)))
            .collect();
        // The batch may hold one attempt twice (a reclaim's `abandoned` and the late result):
        // the write kept the most final record, and that is what stands for both.
        let mut winners: HashMap<(Uuid, i32), usize> = HashMap::new();
        for idx in &pending {
            let record = &batch[*idx];
            winners
                .entry((record.job_id.0, record.attempt))
                .and_modify(|kept| {
                    if record.status.finality() >= batch[*kept].status.finality() {
                        *kept = *idx;
                    }
                })
                .or_insert(*idx);
        }
        for idx in &pending {
            let key = (batch[*idx].job_id.0, batch[*idx].attempt);
            if written.contains(&key) {
                stored[*idx] = Some(StoredRun::of(&batch[winners[&key]]));
            }
        }
        if unwritten.is_empty() {
            break;
        }
        let keys: Vec<(Uuid, i32)> = unwritten
            .iter()
            .map(|idx| (batch[*idx].job_id.0, batch[*idx].attempt))
            .collect();
        let existing = read_rows(pool, &keys).await?;
        let jobs: Vec<Uuid> = keys.iter().map(|(job_id, _)| *job_id).collect();
        let summaries = job_summaries(pool, &jobs).await?;
        let mut renumbered = Vec::new();
        for idx in unwritten {
            let record = &batch[idx];
            let row = existing.get(&(record.job_id.0, record.attempt));
            let summary = summaries.get(&record.job_id.0);
            // An `abandoned` row is a takeover's verdict: the queue was settled from it, so a
            // late result of that attempt is dropped like a fenced one, not renumbered.
            let replayed = row.is_some_and(|row| {
                matches!(
                    row.status,
                    RunStatus::Succeeded | RunStatus::Failed | RunStatus::Skipped
                ) && matches!(record.status, RunStatus::Succeeded | RunStatus::Failed)
                    && (row.worker != record.worker || row.started_at != record.started_at)
            });
            let second_success = record.status == RunStatus::Succeeded
                && summary.is_some_and(|summary| summary.success.is_some());
            match (replayed, second_success, summary) {
                (true, false, Some(summary)) => {
                    batch.to_mut()[idx].attempt = summary.last_attempt + 1;
                    renumbered.push(idx);
                }
                (_, true, Some(summary)) => {
                    stored[idx] = summary.success.clone();
                }
                _ => {
                    stored[idx] = row.map(|row| row.stored.clone());
                }
            }
        }
        pending = renumbered;
    }
    stored
        .into_iter()
        .zip(records)
        .map(|(stored, record)| {
            stored.ok_or_else(|| {
                Error::Invalid(format!(
                    "job {} attempt {}: no row after recording it",
                    record.job_id, record.attempt
                ))
            })
        })
        .collect()
}

/// What the ledger knows of a job before it runs: whether it succeeded, and its highest
/// attempt number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobHistory {
    /// Some attempt succeeded.
    pub succeeded: bool,
    /// The highest attempt number with a row.
    pub last_attempt: i32,
}

/// The history of each of `ids` that has rows, in one statement (an index range scan per job).
///
/// # Errors
/// [`Error::Database`] on a database error.
pub async fn job_histories(
    pool: &PgPool,
    ids: &[JobId],
) -> Result<HashMap<JobId, JobHistory>, Error> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let uuids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
    let rows: Vec<(Uuid, bool, i32)> = sqlx::query_as(
        "SELECT job_id, bool_or(status = 'succeeded'), max(attempt) FROM job_runs \
         WHERE job_id = ANY($1) GROUP BY job_id",
    )
    .bind(uuids)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(job_id, succeeded, last_attempt)| {
            (
                JobId(job_id),
                JobHistory {
                    succeeded,
                    last_attempt,
                },
            )
        })
        .collect())
}

/// Which of `ids` already have a succeeded attempt (workers skip those: delivery is
/// at-least-once).
///
/// # Errors
/// [`Error::Database`] on a database error.
pub async fn succeeded_jobs(pool: &PgPool, ids: &[JobId]) -> Result<HashSet<JobId>, Error> {
    if ids.is_empty() {
        return Ok(HashSet::new());
    }
    let uuids: Vec<Uuid> = ids.iter().map(|id| id.0).collect();
    let rows: Vec<Uuid> = sqlx::query_scalar(
        "SELECT DISTINCT job_id FROM job_runs WHERE job_id = ANY($1) AND status = 'succeeded'",
    )
    .bind(uuids)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(JobId).collect())
}

/// Every attempt of one job, first attempt first.
///
/// # Errors
/// [`Error::Database`] on a database error or a row this build cannot decode.
pub async fn runs_for_job(pool: &PgPool, job_id: JobId) -> Result<Vec<RunRow>, Error> {
    Ok(sqlx::query_as::<_, RunRow>(
        "SELECT id, job_id, attempt, kind, queue, status, schedule, tick_at, enqueued_at, \
         started_at, finished_at, duration_ms, worker, args, outcome, error, next_state, \
         recorded_at \
         FROM job_runs WHERE job_id = $1 ORDER BY attempt",
    )
    .bind(job_id.0)
    .fetch_all(pool)
    .await?)
}

/// The most recent attempts, optionally of one kind and/or one status: running ones first,
/// then by `finished_at`, newest first. `limit` is clamped to 1..=10000.
///
/// # Errors
/// [`Error::Database`] on a database error or a row this build cannot decode.
pub async fn recent_runs(
    pool: &PgPool,
    kind: Option<&str>,
    status: Option<RunStatus>,
    limit: i64,
) -> Result<Vec<RunRow>, Error> {
    Ok(sqlx::query_as::<_, RunRow>(
        "SELECT id, job_id, attempt, kind, queue, status, schedule, tick_at, enqueued_at, \
         started_at, finished_at, duration_ms, worker, args, outcome, error, next_state, \
         recorded_at \
         FROM job_runs \
         WHERE ($1::text IS NULL OR kind = $1) AND ($2::text IS NULL OR status = $2) \
         ORDER BY finished_at DESC, id DESC LIMIT $3",
    )
    .bind(kind)
    .bind(status.map(RunStatus::as_str))
    .bind(limit.clamp(1, 10_000))
    .fetch_all(pool)
    .await?)
}

/// One page of attempts, newest row first (by `id`, which increases with insertion), of one
/// kind and/or one status, strictly older than the row `before` when given. Pages are stable
/// while rows arrive: a new row has a larger id than any page already read, so walking
/// `before = last id of the previous page` never repeats or skips a row. `limit` is clamped
/// to 1..=10000.
///
/// # Errors
/// [`Error::Database`] on a database error or a row this build cannot decode.
pub async fn runs_page(
    pool: &PgPool,
    kind: Option<&str>,
    status: Option<RunStatus>,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<RunRow>, Error> {
    Ok(sqlx::query_as::<_, RunRow>(
        "SELECT id, job_id, attempt, kind, queue, status, schedule, tick_at, enqueued_at, \
         started_at, finished_at, duration_ms, worker, args, outcome, error, next_state, \
         recorded_at \
         FROM job_runs \
         WHERE ($1::text IS NULL OR kind = $1) AND ($2::text IS NULL OR status = $2) \
           AND ($3::bigint IS NULL OR id < $3) \
         ORDER BY id DESC LIMIT $4",
    )
    .bind(kind)
    .bind(status.map(RunStatus::as_str))
    .bind(before)
    .bind(limit.clamp(1, 10_000))
    .fetch_all(pool)
    .await?)
}

/// The retention mechanism: deletes the runs that finished before `cutoff`, and their findings,
/// in batches of at most `batch_limit` rows (each its own short transaction, so no statement
/// holds locks or grows WAL for long); returns how many runs were deleted. Running rows are
/// never deleted. `batch_limit` is clamped to 1..=100000.
///
/// # Errors
/// [`Error::Database`] on a database error; batches already deleted stay deleted.
pub async fn delete_runs_older_than(
    pool: &PgPool,
    cutoff: DateTime<Utc>,
    batch_limit: i64,
) -> Result<u64, Error> {
    super::delete_in_batches(
        pool,
        "WITH doomed AS ( \
             DELETE FROM job_runs WHERE id IN ( \
                 SELECT id FROM job_runs WHERE finished_at < $1 \
                 ORDER BY finished_at LIMIT $2) \
             RETURNING job_id, attempt \
         ), gone AS ( \
             DELETE FROM findings f USING doomed d \
             WHERE f.job_id = d.job_id AND f.attempt = d.attempt \
         ) \
         SELECT count(*) FROM doomed",
        cutoff,
        batch_limit,
    )
    .await
}

impl RunStatus {
    /// The SQL spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Abandoned => "abandoned",
            Self::Skipped => "skipped",
        }
    }

    /// Parses the SQL spelling.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the unknown value.
    pub fn parse(text: &str) -> Result<Self, Error> {
        Ok(match text {
            "running" => Self::Running,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "abandoned" => Self::Abandoned,
            "skipped" => Self::Skipped,
            other => return Err(Error::Invalid(format!("unknown run status {other:?}"))),
        })
    }

    /// Whether the attempt is over (anything but running, which a later write completes). An
    /// `abandoned` row is final: whoever took the lease over settled the job from it, so a
    /// late result of that attempt must not change what the ledger says.
    #[must_use]
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Running)
    }

    /// How final a status is, to pick one record when a batch holds the same attempt twice.
    fn finality(self) -> u8 {
        match self {
            Self::Running => 0,
            Self::Abandoned => 1,
            Self::Skipped => 2,
            Self::Failed => 3,
            Self::Succeeded => 4,
        }
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<'r> FromRow<'r, PgRow> for RunRow {
    fn from_row(row: &'r PgRow) -> Result<Self, sqlx::Error> {
        let status: String = row.try_get("status")?;
        let outcome: Option<serde_json::Value> = row.try_get("outcome")?;
        let decode = |column: &str, source: Box<dyn std::error::Error + Send + Sync>| {
            sqlx::Error::ColumnDecode {
                index: column.to_owned(),
                source,
            }
        };
        Ok(Self {
            id: row.try_get("id")?,
            job_id: JobId(row.try_get("job_id")?),
            attempt: row.try_get("attempt")?,
            kind: row.try_get("kind")?,
            queue: row.try_get("queue")?,
            status: RunStatus::parse(&status).map_err(|e| decode("status", Box::new(e)))?,
            schedule: row.try_get("schedule")?,
            tick_at: row.try_get("tick_at")?,
            enqueued_at: row.try_get("enqueued_at")?,
            started_at: row.try_get("started_at")?,
            finished_at: row.try_get("finished_at")?,
            duration_ms: row.try_get("duration_ms")?,
            worker: row.try_get("worker")?,
            args: row.try_get("args")?,
            outcome: outcome
                .map(serde_json::from_value)
                .transpose()
                .map_err(|e| decode("outcome", Box::new(e)))?,
            error: row.try_get("error")?,
            next_state: row.try_get("next_state")?,
            recorded_at: row.try_get("recorded_at")?,
        })
    }
}

/// A batch of records, column by column, ready to bind as arrays.
struct Columns<'a> {
    job_id: Vec<Uuid>,
    attempt: Vec<i32>,
    kind: Vec<&'a str>,
    queue: Vec<&'a str>,
    status: Vec<&'static str>,
    schedule: Vec<Option<&'a str>>,
    tick_at: Vec<Option<DateTime<Utc>>>,
    enqueued_at: Vec<DateTime<Utc>>,
    started_at: Vec<DateTime<Utc>>,
    finished_at: Vec<Option<DateTime<Utc>>>,
    /// `finished_at - started_at` in whole milliseconds (rounded, as `numeric` to `bigint`).
    duration_ms: Vec<Option<i64>>,
    worker: Vec<&'a str>,
    args: Vec<&'a serde_json::Value>,
    /// Serialized straight from the outcome when bound (no intermediate `serde_json::Value`).
    outcome: Vec<Option<Json<&'a Outcome>>>,
    error: Vec<Option<&'a str>>,
    next_state: Vec<Option<&'a str>>,
}

impl<'a> Columns<'a> {
    fn with_capacity(n: usize) -> Self {
        Self {
            job_id: Vec::with_capacity(n),
            attempt: Vec::with_capacity(n),
            kind: Vec::with_capacity(n),
            queue: Vec::with_capacity(n),
            status: Vec::with_capacity(n),
            schedule: Vec::with_capacity(n),
            tick_at: Vec::with_capacity(n),
            enqueued_at: Vec::with_capacity(n),
            started_at: Vec::with_capacity(n),
            finished_at: Vec::with_capacity(n),
            duration_ms: Vec::with_capacity(n),
            worker: Vec::with_capacity(n),
            args: Vec::with_capacity(n),
            outcome: Vec::with_capacity(n),
            error: Vec::with_capacity(n),
            next_state: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, record: &'a RunRecord) {
        self.job_id.push(record.job_id.0);
        self.attempt.push(record.attempt);
        self.kind.push(&record.kind);
        self.queue.push(&record.queue);
        self.status.push(record.status.as_str());
        self.schedule.push(record.schedule.as_deref());
        self.tick_at.push(record.tick_at);
        self.enqueued_at.push(record.enqueued_at);
        self.started_at.push(record.started_at);
        self.finished_at.push(record.finished_at);
        self.duration_ms.push(record.finished_at.map(|finished| {
            let micros = (finished - record.started_at)
                .num_microseconds()
                .unwrap_or(i64::MAX);
            #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
            let millis = (micros as f64 / 1000.0).round() as i64;
            millis
        }));
        self.worker.push(&record.worker);
        self.args.push(&record.args);
        self.outcome.push(record.outcome.as_ref().map(Json));
        self.error.push(record.error.as_deref());
        self.next_state.push(record.next_state.as_deref());
    }
}

impl Columns<'_> {
    /// The columns as the arguments `$1..$16` of either batch statement.
    fn arguments(&self) -> Result<sqlx::postgres::PgArguments, sqlx::Error> {
        let mut arguments = sqlx::postgres::PgArguments::default();
        self.encode(&mut arguments).map_err(sqlx::Error::Encode)?;
        Ok(arguments)
    }

    fn encode(
        &self,
        arguments: &mut sqlx::postgres::PgArguments,
    ) -> Result<(), sqlx::error::BoxDynError> {
        use sqlx::Arguments as _;
        arguments.add(&self.job_id)?;
        arguments.add(&self.attempt)?;
        arguments.add(&self.kind)?;
        arguments.add(&self.queue)?;
        arguments.add(&self.status)?;
        arguments.add(&self.schedule)?;
        arguments.add(&self.tick_at)?;
        arguments.add(&self.enqueued_at)?;
        arguments.add(&self.started_at)?;
        arguments.add(&self.finished_at)?;
        arguments.add(&self.duration_ms)?;
        arguments.add(&self.worker)?;
        arguments.add(&self.args)?;
        arguments.add(&self.outcome)?;
        arguments.add(&self.error)?;
        arguments.add(&self.next_state)
    }

    /// The batch as a binary `COPY` stream, in [`COPY_RUNS_SQL`]'s column order.
    fn copy_rows(&self) -> Result<Vec<u8>, sqlx::Error> {
        let n = self.job_id.len();
        let mut rows = super::copy_binary::CopyRows::new(16, n * 256);
        for i in 0..n {
            rows.row()
                .uuid(self.job_id[i])
                .int4(self.attempt[i])
                .text(Some(self.kind[i]))
                .text(Some(self.queue[i]))
                .text(Some(self.status[i]))
                .text(self.schedule[i])
                .timestamptz(self.tick_at[i])
                .timestamptz(Some(self.enqueued_at[i]))
                .timestamptz(Some(self.started_at[i]))
                .timestamptz(self.finished_at[i])
                .int8(self.duration_ms[i])
                .text(Some(self.worker[i]))
                .jsonb(Some(self.args[i]))
                .and_then(|rows| rows.jsonb(self.outcome[i].as_ref().map(|json| json.0)))
                .map_err(|error| sqlx::Error::Encode(Box::new(error)))?
                .text(self.error[i])
                .text(self.next_state[i]);
        }
        Ok(rows.finish())
    }
}

/// The `job_runs` columns every batch write sets, in the order of `$1..$16` and of
/// [`Columns::copy_rows`].
macro_rules! run_columns {
    () => {
        "job_id, attempt, kind, queue, status, schedule, tick_at, enqueued_at, started_at,
         finished_at, duration_ms, worker, args, outcome, error, next_state"
    };
}

/// The columns of a batch as `UNNEST` expands them (both batch statements).
macro_rules! batch_input {
    () => {
        concat!(
            "UNNEST(
        $1::uuid[], $2::int4[], $3::text[], $4::text[], $5::text[], $6::text[],
        $7::timestamptz[], $8::timestamptz[], $9::timestamptz[], $10::timestamptz[], $11::int8[],
        $12::text[], $13::jsonb[], $14::jsonb[], $15::text[], $16::text[]
    ) AS t(",
            run_columns!(),
            ")"
        )
    };
}

/// The fast batch write: new rows only. Any key that already has a row fails the whole
/// statement with a unique violation (nothing is written), and the caller falls back to
/// [`RECORD_RUNS_SQL`]. Only for batches without findings.
const INSERT_RUNS_SQL: &str = concat!(
    "INSERT INTO job_runs (",
    run_columns!(),
    ") SELECT ",
    run_columns!(),
    " FROM ",
    batch_input!()
);

/// [`INSERT_RUNS_SQL`] by `COPY`, for batches from [`COPY_MIN_ROWS`] rows: the same rows and
/// the same all-or-nothing unique violation.
const COPY_RUNS_SQL: &str = concat!(
    "COPY job_runs (",
    run_columns!(),
    ") FROM STDIN (FORMAT binary)"
);

/// The batch write: rows in, conflicts settled, findings of the written rows in, the keys of
/// the written rows out.
///
/// The `ON CONFLICT ... WHERE` clause is the idempotency rule: an existing row is only
/// completed when it is `running`, and never by a `running` record. An `abandoned` row is
/// final: the worker that took the lease over settled the job from it. `RETURNING` yields only rows inserted or
/// updated, so findings of a duplicate delivery are not written again; the unique
/// `(job_id, attempt, ordinal)` key makes that doubly sure.
const RECORD_RUNS_SQL: &str = concat!(
    "WITH input AS (SELECT * FROM ",
    batch_input!(),
    "), written AS (
    INSERT INTO job_runs (",
    run_columns!(),
    ") SELECT ",
    run_columns!(),
    " FROM input
    ON CONFLICT (job_id, attempt) DO UPDATE SET
        status = EXCLUDED.status,
        started_at = EXCLUDED.started_at,
        finished_at = EXCLUDED.finished_at,
        duration_ms = EXCLUDED.duration_ms,
        worker = EXCLUDED.worker,
        outcome = EXCLUDED.outcome,
        error = EXCLUDED.error,
        next_state = EXCLUDED.next_state,
        recorded_at = now()
    WHERE job_runs.status = 'running'
      AND EXCLUDED.status <> 'running'
    RETURNING job_id, attempt, kind, outcome, finished_at
), found AS (
    INSERT INTO findings (job_id, attempt, ordinal, kind, code, severity, message, detail,
                          subject, created_at)
    SELECT w.job_id, w.attempt, f.ordinal::int4, w.kind, f.finding->>'code',
           f.finding->>'severity', COALESCE(f.finding->>'message', ''),
           NULLIF(f.finding->'detail', 'null'::jsonb), f.finding->>'subject',
           COALESCE(w.finished_at, now())
    FROM written w
    CROSS JOIN LATERAL jsonb_array_elements(COALESCE(w.outcome->'findings', '[]'::jsonb))
        WITH ORDINALITY AS f(finding, ordinal)
    ON CONFLICT (job_id, attempt, ordinal) DO NOTHING
)
SELECT job_id, attempt FROM written"
);
