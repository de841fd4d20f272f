//! The seam between the queue and the durable record of attempts.
//!
//! The backend writes every finished attempt through a [`Ledger`] *before* acknowledging it to
//! Redis, so an acked job always has its row. The Postgres implementation lives with the store;
//! [`NoLedger`] exists for the queue benchmark, which measures Redis alone.

use std::collections::HashSet;

use futures::future::BoxFuture;

use crate::job::{JobId, Outcome};

/// The status of a recorded attempt (the `job_runs.status` vocabulary).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// What the queue does next: `done`, `retrying` or `dead`.
    pub next_state: Option<&'static str>,
}

/// Where attempts are recorded. Implementations must be idempotent on (job id, attempt):
/// delivery is at-least-once, so the same attempt may be written twice.
pub trait Ledger: Send + Sync + 'static {
    /// Records a batch of attempts durably.
    ///
    /// # Errors
    /// When the store is unreachable; the caller retries and does not ack meanwhile.
    fn record(&self, attempts: Vec<Attempt>) -> BoxFuture<'_, Result<(), anyhow::Error>>;

    /// Which of `ids` already have a succeeded attempt.
    ///
    /// # Errors
    /// When the store is unreachable.
    fn succeeded(&self, ids: Vec<JobId>) -> BoxFuture<'_, Result<HashSet<JobId>, anyhow::Error>>;
}

/// A ledger that records nothing: for measuring the queue alone.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoLedger;

impl Ledger for NoLedger {
    fn record(&self, _: Vec<Attempt>) -> BoxFuture<'_, Result<(), anyhow::Error>> {
        Box::pin(async { Ok(()) })
    }

    fn succeeded(&self, _: Vec<JobId>) -> BoxFuture<'_, Result<HashSet<JobId>, anyhow::Error>> {
        Box::pin(async { Ok(HashSet::new()) })
    }
}
