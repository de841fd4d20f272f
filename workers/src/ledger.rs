//! The Postgres ledger behind the queue's `Ledger` seam: attempts become `job_runs` rows (and
//! their findings `findings` rows) through `store::runs`, one statement per batch.

use std::collections::HashMap;

use chrono::{DateTime, TimeZone, Utc};
use futures::future::BoxFuture;
use sqlx::PgPool;
use upkeep_shared::JobId;
use upkeep_shared::queue::{Attempt, AttemptStatus, History, Ledger, NextState, Recorded};
use upkeep_shared::store::runs::{self, RunRecord, RunStatus, StoredRun};

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
    fn record(
        &self,
        attempts: Vec<Attempt>,
    ) -> BoxFuture<'_, Result<Vec<Recorded>, anyhow::Error>> {
        Box::pin(async move {
            let records: Vec<RunRecord> = attempts.into_iter().map(to_record).collect();
            let stored = runs::record_runs_read_back(&self.pool, &records).await?;
            Ok(stored.into_iter().map(from_stored).collect())
        })
    }

    fn history(
        &self,
        ids: Vec<JobId>,
    ) -> BoxFuture<'_, Result<HashMap<JobId, History>, anyhow::Error>> {
        Box::pin(async move {
            let histories = runs::job_histories(&self.pool, &ids).await?;
            Ok(histories
                .into_iter()
                .map(|(id, history)| {
                    (
                        id,
                        History {
                            succeeded: history.succeeded,
                            last_attempt: u32::try_from(history.last_attempt).unwrap_or(0),
                        },
                    )
                })
                .collect())
        })
    }
}

fn from_stored(stored: StoredRun) -> Recorded {
    Recorded {
        attempt: u32::try_from(stored.attempt).unwrap_or(0),
        status: match stored.status {
            RunStatus::Succeeded => AttemptStatus::Succeeded,
            RunStatus::Failed => AttemptStatus::Failed,
            // A `running` row is never final; to the queue it is as good as abandoned.
            RunStatus::Abandoned | RunStatus::Running => AttemptStatus::Abandoned,
            RunStatus::Skipped => AttemptStatus::Skipped,
        },
        next_state: stored.next_state.as_deref().and_then(NextState::parse),
        error: stored.error,
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
        next_state: attempt.next_state.map(|next| next.as_str().to_owned()),
    }
}

fn at(unix_ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(unix_ms)
        .single()
        .unwrap_or_default()
}
