//! What `upkeepctl` does for operators, as a library: enqueue jobs, read queue stats, list and
//! retry dead letters, list recent attempts from the ledger. Each action returns data; the
//! `render_*` functions turn it into the CLI's text. The CLI only parses arguments.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::config::Settings;
use crate::job::{JobError, JobKind, QueueName};
use crate::queue::{self, JobState, NewJob, Queue, QueueStats};
use crate::store::{self, runs::RunRow, runs::RunStatus};

/// Why an operator action failed. Messages name the bad argument.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An argument is invalid; the message names it.
    #[error("{0}")]
    Invalid(String),
    /// The job kind or its arguments are refused.
    #[error(transparent)]
    Job(#[from] JobError),
    /// One input is refused; `field` names it as the API spells it (`kind`, `args`,
    /// `queue`, `status`, `limit`); the CLI prints it as the option `--field`.
    #[error("--{}: {message}", field.replace('_', "-"))]
    Field {
        /// The input at fault.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The thing named does not exist (a dead letter, a job).
    #[error("{0}")]
    NotFound(String),
    /// The thing exists but is not in a state that allows the action.
    #[error("{0}")]
    Conflict(String),
    /// Redis failed.
    #[error(transparent)]
    Queue(#[from] queue::Error),
    /// The ledger failed.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// Enqueueing failed part-way; the jobs enqueued before were reported to the caller.
    #[error(
        "enqueueing into Redis; {n_done} of {n_total} jobs were enqueued before this failure \
         (their ids were printed), the other {} were not",
        n_total - n_done
    )]
    PartialEnqueue {
        /// Jobs enqueued before the failure.
        n_done: usize,
        /// Jobs asked for.
        n_total: usize,
        /// The Redis error.
        #[source]
        source: queue::Error,
    },
}

impl Error {
    fn field(field: &'static str, message: impl std::fmt::Display) -> Self {
        Self::Field {
            field,
            message: message.to_string(),
        }
    }
}

/// `upkeepctl enqueue`'s arguments.
#[derive(Debug, Clone)]
pub struct EnqueueRequest {
    /// Job kind (`system.ping`); it must have a handler.
    pub kind: String,
    /// JSON arguments, checked against the kind.
    pub args: String,
    /// Run after this delay.
    pub delay: Option<Duration>,
    /// Queue instead of the kind's default; it must be configured.
    pub queue: Option<String>,
    /// How many identical jobs, at least 1.
    pub count: usize,
    /// A second enqueue with the same key returns the first job's id and enqueues nothing.
    pub idempotency_key: Option<String>,
}

/// Enqueues the jobs `request` describes, in batches, calling `emit` with each job id as soon
/// as its batch is in Redis (so the ids of a partial success are not lost).
///
/// # Errors
/// [`Error::Invalid`] or [`Error::Field`] for a bad argument (nothing enqueued);
/// [`Error::Queue`] or [`Error::PartialEnqueue`] when Redis fails.
pub async fn enqueue(
    settings: &Settings,
    request: &EnqueueRequest,
    emit: impl FnMut(&str),
) -> Result<(), Error> {
    // The kind is checked before the arguments, so a bad kind is reported first.
    JobKind::parse_runnable(&request.kind).map_err(|e| Error::field("kind", e))?;
    let args: serde_json::Value = serde_json::from_str(&request.args).map_err(|e| {
        Error::Invalid(format!("--args is not valid JSON: {:?}: {e}", request.args))
    })?;
    let job = JobRequest {
        kind: request.kind.clone(),
        args,
        delay: request.delay,
        queue: request.queue.clone(),
        idempotency_key: request.idempotency_key.clone(),
    };
    let (kind, queue) = check_job(settings, &job)?;
    let count = request.count;
    if count == 0 {
        return Err(Error::Invalid("--count must be at least 1".to_owned()));
    }
    if count > 1 && request.idempotency_key.is_some() {
        return Err(Error::Invalid(
            "--idempotency-key and --count > 1 contradict each other: the key would keep one job"
                .to_owned(),
        ));
    }
    let handle = settings.open_queue(&queue)?;
    queue::check_eviction_policy(&handle.conn()).await.log();
    enqueue_checked(settings, &handle, kind, &job, count, emit).await
}

/// One job to enqueue, as the API takes it: arguments already parsed.
#[derive(Debug, Clone)]
pub struct JobRequest {
    /// Job kind (`system.ping`); it must have a handler.
    pub kind: String,
    /// Arguments, checked by the kind's own parser.
    pub args: serde_json::Value,
    /// Run after this delay.
    pub delay: Option<Duration>,
    /// Queue instead of the kind's default; it must be configured.
    pub queue: Option<String>,
    /// A second enqueue with the same key returns the first job's id and enqueues nothing.
    pub idempotency_key: Option<String>,
}

/// Checks `job` as `enqueue` does (the kind has a handler, its arguments parse, the queue is
/// configured) and returns the kind and the queue it goes to. Nothing is contacted.
///
/// # Errors
/// [`Error::Field`] naming `kind`, `args` or `queue`.
pub fn check_job(settings: &Settings, job: &JobRequest) -> Result<(JobKind, QueueName), Error> {
    let kind = JobKind::parse_runnable(&job.kind).map_err(|e| Error::field("kind", e))?;
    kind.validate_args(&job.args)
        .map_err(|e| Error::field("args", e))?;
    let queue = match &job.queue {
        Some(name) => QueueName::parse(name).map_err(|e| Error::field("queue", e))?,
        None => kind.default_queue(),
    };
    // Like a schedule's queue: a job on a queue nobody configured is never run, and neither
    // `stats` nor `dead` would ever show it.
    if !settings.queues.contains_key(&queue) {
        let configured: Vec<&str> = settings.queues.keys().map(QueueName::as_str).collect();
        return Err(Error::field(
            "queue",
            format!(
                "queue {:?} is not configured (configured: {}; add a [queues.{queue}] section)",
                queue.as_str(),
                configured.join(", ")
            ),
        ));
    }
    Ok((kind, queue))
}

/// Enqueues `count` copies of a job [`check_job`] accepted on `handle` (its queue), in
/// batches, calling `emit` with each id once its batch is in Redis.
///
/// # Errors
/// [`Error::Queue`] or [`Error::PartialEnqueue`] when Redis fails.
pub async fn enqueue_checked(
    settings: &Settings,
    handle: &Queue,
    kind: JobKind,
    job: &JobRequest,
    count: usize,
    mut emit: impl FnMut(&str),
) -> Result<(), Error> {
    let policy = settings.job_policy(handle.name(), kind.as_str());
    let run_at_ms = job.delay.map(|d| {
        chrono::Utc::now().timestamp_millis() + i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
    });
    let mut n_left = count;
    while n_left > 0 {
        let n_batch = n_left.min(queue::ENQUEUE_CHUNK);
        let batch: Vec<NewJob> = (0..n_batch)
            .map(|_| {
                let mut new = NewJob::new(kind.as_str(), job.args.clone(), policy.max_attempts);
                new.run_at_ms = run_at_ms;
                new.idempotency_key.clone_from(&job.idempotency_key);
                new
            })
            .collect();
        let n_done = count - n_left;
        let enqueued = handle.enqueue(&batch).await.map_err(|source| {
            if n_done == 0 {
                Error::Queue(source)
            } else {
                Error::PartialEnqueue {
                    n_done,
                    n_total: count,
                    source,
                }
            }
        })?;
        for result in enqueued {
            emit(&result.id().to_string());
        }
        n_left -= n_batch;
    }
    Ok(())
}

/// The stats of every configured queue.
///
/// # Errors
/// [`Error::Queue`] when Redis fails.
pub async fn stats(settings: &Settings) -> Result<Vec<QueueStats>, Error> {
    let mut all = Vec::new();
    for name in settings.queues.keys() {
        all.push(settings.open_queue(name)?.stats().await?);
    }
    Ok(all)
}

/// `upkeepctl stats` as a table.
#[must_use]
pub fn render_stats(all: &[QueueStats]) -> String {
    let mut out = format!(
        "{:<10} {:>8} {:>9} {:>8} {:>8} {:>6} {:>7} {:>10} {:>8} {:>8} {:>9} {:>8} {:>11}\n",
        "queue",
        "pending",
        "scheduled",
        "running",
        "retrying",
        "dead",
        "workers",
        "succeeded",
        "failed",
        "succ_1h",
        "failed_1h",
        "per_min",
        "oldest_age"
    );
    for s in all {
        let total = |k: &str| s.totals.get(k).copied().unwrap_or(0);
        let _ = writeln!(
            out,
            "{:<10} {:>8} {:>9} {:>8} {:>8} {:>6} {:>7} {:>10} {:>8} {:>8} {:>9} {:>8.1} {:>11}",
            s.name,
            s.pending,
            s.scheduled,
            s.running,
            s.retrying,
            s.dead,
            s.workers,
            total("succeeded"),
            total("failed"),
            s.succeeded_1h,
            s.failed_1h,
            s.throughput_per_min,
            s.oldest_pending_age_seconds
                .map_or("-".to_owned(), |a| format!("{a:.1}s")),
        );
    }
    out
}

/// One dead letter, as `upkeepctl dead` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetter {
    /// Its queue.
    pub queue: String,
    /// The job id.
    pub id: String,
    /// The job kind.
    pub kind: Option<String>,
    /// Attempts made.
    pub attempt: Option<String>,
    /// The last error.
    pub error: Option<String>,
}

/// Up to `limit` dead letters of every configured queue.
///
/// # Errors
/// [`Error::Queue`] when Redis fails.
pub async fn dead_letters(settings: &Settings, limit: usize) -> Result<Vec<DeadLetter>, Error> {
    dead_letters_in(&open_all(settings)?, limit).await
}

/// Up to `limit` dead letters of each of `queues`, newest first within a queue.
///
/// # Errors
/// [`Error::Queue`] when Redis fails.
pub async fn dead_letters_in(queues: &[Queue], limit: usize) -> Result<Vec<DeadLetter>, Error> {
    let mut rows = Vec::new();
    for queue in queues {
        for record in queue.dead_letters(limit).await? {
            rows.push(DeadLetter {
                queue: queue.name().as_str().to_owned(),
                id: record.id.clone(),
                kind: record.fields.get("kind").cloned(),
                attempt: record.fields.get("attempt").cloned(),
                error: record.fields.get("err").cloned(),
            });
        }
    }
    Ok(rows)
}

fn open_all(settings: &Settings) -> Result<Vec<Queue>, Error> {
    Ok(settings
        .queues
        .keys()
        .map(|name| settings.open_queue(name))
        .collect::<Result<Vec<_>, _>>()?)
}

/// `upkeepctl dead` as lines.
#[must_use]
pub fn render_dead_letters(rows: &[DeadLetter]) -> String {
    let mut out = String::new();
    for row in rows {
        let _ = writeln!(
            out,
            "{}  {}  {}  attempts={}  {}",
            row.queue,
            row.id,
            row.kind.as_deref().unwrap_or(""),
            row.attempt.as_deref().unwrap_or(""),
            row.error.as_deref().unwrap_or(""),
        );
    }
    out
}

/// Moves the dead job `id` back to its queue with a fresh attempt budget; returns the queue.
///
/// # Errors
/// [`Error::NotFound`] when no configured queue knows the job, [`Error::Conflict`] when one
/// does but it is not dead; [`Error::Queue`] when Redis fails.
pub async fn retry_dead(settings: &Settings, id: &str) -> Result<QueueName, Error> {
    retry_dead_in(&open_all(settings)?, id).await
}

/// [`retry_dead`] over given queue handles.
///
/// # Errors
/// As [`retry_dead`].
pub async fn retry_dead_in(queues: &[Queue], id: &str) -> Result<QueueName, Error> {
    for queue in queues {
        if queue.requeue_dead(id).await? {
            return Ok(queue.name().clone());
        }
    }
    for queue in queues {
        if let Some(record) = queue.job(id).await? {
            let state = record
                .fields
                .get("state")
                .map_or(JobState::Gone, |s| JobState::parse(s));
            if state != JobState::Gone {
                return Err(Error::Conflict(format!(
                    "{id} is not a dead letter: it is {} on queue {}",
                    serde_json::to_value(state)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    queue.name()
                )));
            }
        }
    }
    Err(Error::NotFound(format!(
        "{id} is not a dead letter of any configured queue"
    )))
}

/// The `limit` most recent attempts in the ledger (running ones first), optionally of one
/// kind and one status (`running`, `succeeded`, `failed`, `abandoned`, `skipped`).
///
/// # Errors
/// [`Error::Field`] for an unknown kind or status or a limit out of range; [`Error::Store`]
/// when Postgres fails.
pub async fn recent_runs(
    settings: &Settings,
    kind: Option<&str>,
    status: Option<&str>,
    limit: i64,
) -> Result<Vec<RunRow>, Error> {
    let filter = RunFilter::parse(kind, status, limit)?;
    let pool = store::connect(&settings.database).await?;
    Ok(
        store::runs::recent_runs(&pool, filter.kind.as_deref(), filter.status, filter.limit)
            .await?,
    )
}

/// The most runs one page or listing holds.
pub const MAX_RUNS: i64 = 10_000;

/// A checked filter over `job_runs`: what `upkeepctl runs` and `GET /api/v1/runs` accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFilter {
    /// A catalog kind.
    pub kind: Option<String>,
    /// A run status.
    pub status: Option<RunStatus>,
    /// 1 to [`MAX_RUNS`].
    pub limit: i64,
}

impl RunFilter {
    /// Checks a kind (in the catalog), a status and a limit.
    ///
    /// # Errors
    /// [`Error::Field`] naming `kind`, `status` or `limit`.
    pub fn parse(kind: Option<&str>, status: Option<&str>, limit: i64) -> Result<Self, Error> {
        if let Some(kind) = kind {
            JobKind::parse(kind).map_err(|e| Error::field("kind", e))?;
        }
        let status = status.map(RunStatus::parse).transpose().map_err(|e| {
            Error::field(
                "status",
                format!("{e} (expected running, succeeded, failed, abandoned or skipped)"),
            )
        })?;
        if !(1..=MAX_RUNS).contains(&limit) {
            return Err(Error::field(
                "limit",
                format!("must be between 1 and {MAX_RUNS}, got {limit}"),
            ));
        }
        Ok(Self {
            kind: kind.map(str::to_owned),
            status,
            limit,
        })
    }
}

/// `upkeepctl runs` as a table: finish time, status, kind, queue, attempt, duration, job id,
/// and the error of a failed attempt.
#[must_use]
pub fn render_runs(runs: &[RunRow]) -> String {
    let mut out = format!(
        "{:<24} {:<9} {:<18} {:<8} {:>7} {:>9}  {:<36}  {}\n",
        "finished", "status", "kind", "queue", "attempt", "took", "job", "error"
    );
    for run in runs {
        let finished = run.finished_at.map_or_else(
            || "-".to_owned(),
            |at| at.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
        );
        let took = run
            .duration_ms
            .map_or_else(|| "-".to_owned(), |ms| format!("{ms}ms"));
        let _ = writeln!(
            out,
            "{:<24} {:<9} {:<18} {:<8} {:>7} {:>9}  {:<36}  {}",
            finished,
            run.status.as_str(),
            run.kind,
            run.queue,
            run.attempt,
            took,
            run.job_id,
            run.error.as_deref().unwrap_or(""),
        );
    }
    out
}
