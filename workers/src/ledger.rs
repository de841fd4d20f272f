//! The Postgres ledger behind the queue's `Ledger` seam: attempts become `job_runs` rows (and
//! their findings `findings` rows) through `store::runs`, one statement per batch.

use std::collections::HashSet;

use chrono::{DateTime, TimeZone, Utc};
use futures::future::BoxFuture;
use sqlx::PgPool;
use upkeep_shared::JobId;
use upkeep_shared::queue::{Attempt, AttemptStatus, Ledger};
use upkeep_shared::store::runs::{self, RunRecord, RunStatus};

/// Records attempts in `job_runs`.
#[derive(Debug, Clone)]
pub struct PgLedger {
    pool: PgPool,
}

impl PgLedger {
    /// A ledger writing through `pool`.
    #[must_use]
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }
}

impl Ledger for PgLedger {
    fn record(&self, attempts: Vec<Attempt>) -> BoxFuture<'_, Result<(), anyhow::Error>> {
        Box::pin(async move {
            let records: Vec<RunRecord> = attempts.into_iter().map(to_record).collect();
            runs::record_runs(&self.pool, &records).await?;
            Ok(())
        })
    }

    fn succeeded(&self, ids: Vec<JobId>) -> BoxFuture<'_, Result<HashSet<JobId>, anyhow::Error>> {
        Box::pin(async move { Ok(runs::succeeded_jobs(&self.pool, &ids).await?) })
    }
}

fn to_record(attempt: Attempt) -> RunRecord {
    RunRecord {
        job_id: attempt.job_id,
        attempt: i32::try_from(attempt.attempt).unwrap_or(i32::MAX),
        kind: attempt.kind,
        queue: attempt.queue,
        status: match attempt.status {
            AttemptStatus::Succeeded => RunStatus::Succeeded,
            AttemptStatus::Failed => RunStatus::Failed,
            AttemptStatus::Abandoned => RunStatus::Abandoned,
            AttemptStatus::Skipped => RunStatus::Skipped,
        },
        schedule: attempt.schedule,
        tick_at: attempt.tick_ms.map(at),
        enqueued_at: at(attempt.enqueued_at_ms),
        started_at: at(attempt.started_at_ms),
        finished_at: Some(at(attempt.finished_at_ms)),
        worker: attempt.worker,
        args: attempt.args,
        outcome: attempt.outcome,
        error: attempt.error,
        next_state: attempt.next_state.map(str::to_owned),
    }
}

fn at(unix_ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(unix_ms)
        .single()
        .unwrap_or_default()
}
