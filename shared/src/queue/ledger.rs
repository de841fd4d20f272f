//! The seam between the queue and the durable record of attempts.
//!
//! The backend writes every finished attempt through a [`Ledger`] *before* acknowledging it to
//! Redis, so an acked job always has its row, and it settles the job to what the ledger holds
//! afterwards (see [`Recorded`]): when the two disagree, the ledger decides. Before running a
//! batch it asks the ledger what it knows of those jobs ([`History`]), so a job with a committed
//! success never runs again and a replayed attempt number is not reused. The Postgres
//! implementation lives with the workers; [`NoLedger`] exists for the queue benchmark, which
//! measures Redis alone.

use std::collections::HashMap;

use futures::future::BoxFuture;

use crate::job::{JobId, Outcome};

/// The status of a recorded attempt (the `job_runs.status` vocabulary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AttemptStatus {
    /// The handler succeeded.
    Succeeded,
    /// The handler failed (retry or dead follows).
    Failed,
    /// The worker lost the job: lease expired or it shut down mid-attempt.
    Abandoned,
    /// Not run: the job already had a succeeded attempt.
    Skipped,
}

/// What the queue does with a job after an attempt (the `job_runs.next_state` vocabulary).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NextState {
    /// Completed: it succeeded (or had already succeeded and was skipped).
    Done,
    /// Tried again later.
    Retrying,
    /// A dead letter.
    Dead,
}

impl NextState {
    /// The SQL spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::Retrying => "retrying",
            Self::Dead => "dead",
        }
    }

    /// Parses the SQL spelling; `None` for anything else.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "done" => Some(Self::Done),
            "retrying" => Some(Self::Retrying),
            "dead" => Some(Self::Dead),
            _ => None,
        }
    }
}

impl std::fmt::Display for NextState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One attempt as the ledger records it.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// The job.
    pub job_id: JobId,
    /// Which attempt (1-based).
    pub attempt: u32,
    /// Kind string as stored.
    pub kind: String,
    /// Queue it ran on.
    pub queue: String,
    /// How it ended.
    pub status: AttemptStatus,
    /// Schedule that produced the job, if any.
    pub schedule: Option<String>,
    /// Nominal tick (unix ms), if any.
    pub tick_ms: Option<i64>,
    /// Enqueue time, unix ms.
    pub enqueued_at_ms: i64,
    /// Start time, unix ms.
    pub started_at_ms: i64,
    /// End time, unix ms.
    pub finished_at_ms: i64,
    /// Worker identity.
    pub worker: String,
    /// Arguments (null when they did not decode).
    pub args: serde_json::Value,
    /// Result of a succeeded attempt.
    pub outcome: Option<Outcome>,
    /// Error of a failed or abandoned attempt.
    pub error: Option<String>,
    /// What the queue does next.
    pub next_state: Option<NextState>,
}

/// The row that stands in the ledger for one recorded attempt once the write is committed.
///
/// Usually the attempt as given. It differs when the ledger already held a final row for that
/// `(job, attempt)` written by another execution: a late result of a lease that was taken over
/// (then the earlier row stands, `abandoned` included, and the queue converges to it), or a
/// replayed attempt
/// number after Redis lost writes (then a succeeded or failed result is stored under the next
/// free attempt number instead of being dropped, unless it is a second success).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The attempt number the row has.
    pub attempt: u32,
    /// Its status.
    pub status: AttemptStatus,
    /// What the queue does next, per the row.
    pub next_state: Option<NextState>,
    /// Its error, if any.
    pub error: Option<String>,
}

impl Recorded {
    /// The row as `attempt` itself describes it (what a fresh insert stores).
    #[must_use]
    pub fn as_given(attempt: &Attempt) -> Self {
        Self {
            attempt: attempt.attempt,
            status: attempt.status,
            next_state: attempt.next_state,
            error: attempt.error.clone(),
        }
    }
}

/// What the ledger knows about a job about to be run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct History {
    /// Some attempt succeeded: the job must not run again.
    pub succeeded: bool,
    /// The highest attempt number with a row (0 when none).
    pub last_attempt: u32,
}

/// Where attempts are recorded. Implementations must be idempotent on (job id, attempt):
/// delivery is at-least-once, so the same attempt may be written twice.
pub trait Ledger: Send + Sync + 'static {
    /// Records a batch of attempts durably; returns, for each attempt in order, the row that
    /// now stands for it (see [`Recorded`]).
    ///
    /// # Errors
    /// When the store is unreachable; the caller retries and does not ack meanwhile.
    fn record(&self, attempts: Vec<Attempt>)
    -> BoxFuture<'_, Result<Vec<Recorded>, anyhow::Error>>;

    /// What the ledger knows of `ids`; a job without rows is absent from the map.
    ///
    /// # Errors
    /// When the store is unreachable.
    fn history(
        &self,
        ids: Vec<JobId>,
    ) -> BoxFuture<'_, Result<HashMap<JobId, History>, anyhow::Error>>;
}

/// A ledger that records nothing: for measuring the queue alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLedger;

impl Ledger for NoLedger {
    fn record(
        &self,
        attempts: Vec<Attempt>,
    ) -> BoxFuture<'_, Result<Vec<Recorded>, anyhow::Error>> {
        let recorded = attempts.iter().map(Recorded::as_given).collect();
        Box::pin(async { Ok(recorded) })
    }

    fn history(
        &self,
        _: Vec<JobId>,
    ) -> BoxFuture<'_, Result<HashMap<JobId, History>, anyhow::Error>> {
        Box::pin(async { Ok(HashMap::new()) })
    }
}
