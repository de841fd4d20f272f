//! Putting back jobs that Redis lost: the queue side of reconciliation (see
//! [`crate::reconcile`]). Kept apart from `client.rs` because only the maintenance pass uses it.

use std::sync::LazyLock;

use redis::Script;

use super::{Error, Queue};
use crate::job::JobId;

static RESTORE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/restore.lua")));

/// A job to put back in its queue, rebuilt from the ledger.
#[derive(Debug, Clone, PartialEq)]
pub struct LostJob {
    /// Its id, unchanged.
    pub id: JobId,
    /// Its kind string.
    pub kind: String,
    /// Its arguments, as the ledger recorded them.
    pub args: serde_json::Value,
    /// Attempts the ledger already has; the next lease is attempt `attempts + 1`.
    pub attempts: u32,
    /// Attempts allowed from here on (at least 1).
    pub budget: u32,
    /// When it was first enqueued, unix ms.
    pub enqueued_at_ms: i64,
    /// The schedule that produced it.
    pub schedule: Option<String>,
    /// The tick (unix ms) that produced it.
    pub tick_ms: Option<i64>,
}

impl Queue {
    /// Which of `ids` Redis knows: a job keeps its hash in every state (scheduled, ready,
    /// leased, retrying, completed until its retention, dead until its dead retention), so a
    /// missing hash means the job is gone. One round trip.
    ///
    /// # Errors
    /// On a Redis error.
    pub async fn known(&self, ids: &[JobId]) -> Result<Vec<bool>, Error> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("EXISTS").arg(self.keys().job(&id.to_string()));
        }
        let exists: Vec<i64> = pipe.query_async(&mut self.conn()).await?;
        Ok(exists.into_iter().map(|n| n > 0).collect())
    }

    /// Puts lost jobs back at the head of the ready list with their ids, arguments and attempt
    /// count, unless Redis knows them (then nothing changes). Returns, per job, whether it was
    /// restored. One round trip.
    ///
    /// # Errors
    /// On a Redis error.
    pub async fn restore(&self, jobs: &[LostJob]) -> Result<Vec<bool>, Error> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let keys = self.keys();
        let mut invocation = RESTORE.prepare_invoke();
        invocation
            .key(&keys.ready)
            .key(&keys.wake)
            .key(&keys.attempts)
            .key(&keys.stats)
            .arg(&keys.base);
        for job in jobs {
            invocation
                .arg(job.id.to_string())
                .arg(&job.kind)
                .arg(job.args.to_string())
                .arg(job.attempts)
                .arg(job.budget.max(1))
                .arg(job.enqueued_at_ms)
                .arg(job.schedule.as_deref().unwrap_or(""))
                .arg(job.tick_ms.map(|t| t.to_string()).unwrap_or_default());
        }
        let restored: Vec<i64> = invocation.invoke_async(&mut self.conn()).await?;
        if restored.len() != jobs.len() {
            return Err(Error::Protocol(
                "restore reply does not have one entry per job".to_owned(),
            ));
        }
        Ok(restored.into_iter().map(|n| n == 1).collect())
    }
}
