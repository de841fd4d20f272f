//! What `upkeepctl` does for operators, as a library: enqueue jobs, read queue stats, list and
//! retry dead letters, list recent attempts from the ledger. Each action returns data; the
//! `render_*` functions turn it into the CLI's text. The CLI only parses arguments.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::config::Settings;
use crate::job::{JobError, JobKind, QueueName};
use crate::queue::{self, NewJob, QueueStats};
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
/// [`Error::Invalid`] or [`Error::Job`] for a bad argument (nothing enqueued);
/// [`Error::Queue`] or [`Error::PartialEnqueue`] when Redis fails.
pub async fn enqueue(
    settings: &Settings,
    request: &EnqueueRequest,
    mut emit: impl FnMut(&str),
) -> Result<(), Error> {
    let kind = JobKind::parse_runnable(&request.kind)?;
    let args: serde_json::Value = serde_json::from_str(&request.args).map_err(|e| {
        Error::Invalid(format!("--args is not valid JSON: {:?}: {e}", request.args))
    })?;
    kind.validate_args(&args)?;
    let queue = match &request.queue {
        Some(name) => {
            QueueName::parse(name).map_err(|e| Error::Invalid(format!("--queue: {e}")))?
        }
        None => kind.default_queue(),
    };
    // Like a schedule's queue: a job on a queue nobody configured is never run, and neither
    // `stats` nor `dead` would ever show it.
    if !settings.queues.contains_key(&queue) {
        let configured: Vec<&str> = settings.queues.keys().map(QueueName::as_str).collect();
        return Err(Error::Invalid(format!(
            "--queue: queue {:?} is not configured (configured: {}; add a [queues.{queue}] section)",
            queue.as_str(),
            configured.join(", ")
        )));
    }
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
    let policy = settings.job_policy(&queue, kind.as_str());
    let run_at_ms = request.delay.map(|d| {
        chrono::Utc::now().timestamp_millis() + i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
    });
    let handle = settings.open_queue(&queue)?;
    queue::check_eviction_policy(&handle.conn()).await.log();
    let mut n_left = count;
    while n_left > 0 {
        let n_batch = n_left.min(queue::ENQUEUE_CHUNK);
        let batch: Vec<NewJob> = (0..n_batch)
            .map(|_| {
                let mut job = NewJob::new(kind.as_str(), args.clone(), policy.max_attempts);
                job.run_at_ms = run_at_ms;
                job.idempotency_key.clone_from(&request.idempotency_key);
                job
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
    let mut rows = Vec::new();
    for name in settings.queues.keys() {
        let queue = settings.open_queue(name)?;
        for record in queue.dead_letters(limit).await? {
            rows.push(DeadLetter {
                queue: name.as_str().to_owned(),
                id: record.id.clone(),
                kind: record.fields.get("kind").cloned(),
                attempt: record.fields.get("attempt").cloned(),
                error: record.fields.get("err").cloned(),
            });
        }
    }
    Ok(rows)
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
/// [`Error::Invalid`] when no configured queue has it as a dead letter; [`Error::Queue`] when
/// Redis fails.
pub async fn retry_dead(settings: &Settings, id: &str) -> Result<QueueName, Error> {
    for name in settings.queues.keys() {
        if settings.open_queue(name)?.requeue_dead(id).await? {
            return Ok(name.clone());
        }
    }
    Err(Error::Invalid(format!(
        "{id} is not a dead letter of any configured queue"
    )))
}

/// The `limit` most recent attempts in the ledger (running ones first), optionally of one
/// kind and one status (`running`, `succeeded`, `failed`, `abandoned`, `skipped`).
///
/// # Errors
/// [`Error::Invalid`] for an unknown kind or status; [`Error::Store`] when Postgres fails.
pub async fn recent_runs(
    settings: &Settings,
    kind: Option<&str>,
    status: Option<&str>,
    limit: i64,
) -> Result<Vec<RunRow>, Error> {
    if let Some(kind) = kind {
        JobKind::parse(kind).map_err(|e| Error::Invalid(format!("--kind: {e}")))?;
    }
    let status = status.map(RunStatus::parse).transpose().map_err(|e| {
        Error::Invalid(format!(
            "--status: {e} (expected running, succeeded, failed, abandoned or skipped)"
        ))
    })?;
    if !(1..=10_000).contains(&limit) {
        return Err(Error::Invalid(format!(
            "--limit must be between 1 and 10000, got {limit}"
        )));
    }
    let pool = store::connect(&settings.database).await?;
    Ok(store::runs::recent_runs(&pool, kind, status, limit).await?)
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
