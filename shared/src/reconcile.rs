//! Reconciliation of the ledger with Redis: finding the jobs that Redis no longer knows although
//! the ledger says they never finished, and putting them back or recording them as lost.
//!
//! # What can be concluded, and what cannot
//! A job keeps its hash in Redis in every state: scheduled, ready, leased, retrying, completed
//! (until the retention) and dead (until the dead retention). So a job is *lost* when:
//! - the ledger expects Redis to run it again: its latest attempt ended with
//!   `next_state = 'retrying'`, and it has no later attempt and no succeeded, done or dead row
//!   (`store::reconcile::retrying_jobs`); or a confirmed scheduler tick named it and it has no
//!   run at all (`store::reconcile::unrun_tick_jobs`);
//! - that ledger entry is older than the grace period (`maintenance.reconcile_grace`), so no
//!   write of the job can still be in flight;
//! - and its hash is missing in Redis ([`Queue::known`](crate::queue::Queue)).
//!
//! A job Redis knows in any state is never touched. A job enqueued but lost before its first
//! attempt, outside a scheduler tick, left no trace in the ledger: reconciliation cannot see it
//! (the append-only file's fsync window is the guarantee there; see ARCHITECTURE.md, "Failure
//! model").
//!
//! # What it does
//! Per `maintenance.reconcile_action`: `requeue` puts the job back with the same id, its
//! arguments from the ledger and its attempts counted on (`restore.lua`, which does nothing
//! when the hash exists, so concurrent passes restore a job once), with a warn finding
//! `job.requeued_after_loss`; `record` writes an `abandoned` run with `next_state = 'dead'` and a
//! critical finding `job.lost`. The pass is bounded: at most [`BATCH`] candidates per source
//! and a look-back of [`LOOKBACK`].

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::PgPool;

use crate::QueueName;
use crate::config::Settings;
use crate::daemons::ReconcileAction;
use crate::queue::{LostJob, RedisConn};
use crate::store::reconcile::{self as ledger, Unfinished};

/// How far back the ledger is searched: as long as the default dead-letter retention.
pub const LOOKBACK: Duration = Duration::from_secs(7 * 24 * 3600);

/// Most candidates read per source per pass.
pub const BATCH: i64 = 500;

/// Errors of a reconciliation pass.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The ledger could not be read or written.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    /// Redis could not be read or written.
    #[error(transparent)]
    Queue(#[from] crate::queue::Error),
}

/// How one pass runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// What to do with a lost job; [`ReconcileAction::Off`] only reports (a dry run).
    pub action: ReconcileAction,
    /// Only ledger entries older than this are judged.
    pub grace: Duration,
    /// The queues to reconcile; `None` for every configured queue.
    pub queues: Option<Vec<QueueName>>,
}

impl Options {
    /// The configured action and grace, for every queue.
    #[must_use]
    pub fn from_settings(settings: &Settings) -> Self {
        Self {
            action: settings.maintenance.reconcile_action,
            grace: settings.maintenance.reconcile_grace,
            queues: None,
        }
    }
}

/// What a pass did with one lost job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Taken {
    /// Put back in its queue.
    Requeued,
    /// Recorded as lost in the ledger.
    Recorded,
    /// Only reported (dry run).
    Reported,
    /// Redis knew it again by the time of the restore (another pass, or a late write): left
    /// alone.
    Reappeared,
}

/// One lost job.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Lost {
    /// The job id.
    pub job_id: String,
    /// Its kind.
    pub kind: String,
    /// Its queue.
    pub queue: String,
    /// The highest attempt the ledger has (0: it never ran).
    pub last_attempt: i32,
    /// Where the ledger knew it from: `job_runs` or `schedule_ticks`.
    pub source: &'static str,
    /// What was done.
    pub action: Taken,
}

/// The result of one pass.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Report {
    /// Unfinished jobs in the ledger that were checked against Redis.
    pub n_examined: usize,
    /// Candidates skipped because their queue is not configured here.
    pub n_unknown_queue: usize,
    /// The lost ones.
    pub lost: Vec<Lost>,
}

/// Runs one reconciliation pass.
///
/// # Errors
/// When the ledger or Redis fails; what was done before the failure stays done (every step is
/// idempotent, so the next pass picks up the rest).
pub async fn reconcile_once(
    pool: &PgPool,
    conn: &RedisConn,
    settings: &Settings,
    options: &Options,
) -> Result<Report, Error> {
    let mut candidates = ledger::retrying_jobs(pool, options.grace, LOOKBACK, BATCH).await?;
    candidates.extend(ledger::unrun_tick_jobs(pool, options.grace, LOOKBACK, BATCH).await?);
    let mut report = Report::default();
    let mut by_queue: BTreeMap<QueueName, Vec<Unfinished>> = BTreeMap::new();
    for candidate in candidates {
        let wanted = QueueName::parse(&candidate.queue).ok().filter(|queue| {
            settings.queues.contains_key(queue)
                && options
                    .queues
                    .as_ref()
                    .is_none_or(|only| only.contains(queue))
        });
        match wanted {
            Some(queue) => by_queue.entry(queue).or_default().push(candidate),
            None => report.n_unknown_queue += 1,
        }
    }
    for (queue_name, candidates) in by_queue {
        let queue = settings.queue_on(conn.clone(), &queue_name);
        let ids: Vec<_> = candidates.iter().map(|c| c.job_id).collect();
        let known = queue.known(&ids).await?;
        report.n_examined += candidates.len();
        let lost: Vec<Unfinished> = candidates
            .into_iter()
            .zip(known)
            .filter_map(|(candidate, known)| (!known).then_some(candidate))
            .collect();
        if lost.is_empty() {
            continue;
        }
        let taken: Vec<Taken> = match options.action {
            ReconcileAction::Off => vec![Taken::Reported; lost.len()],
            ReconcileAction::Record => {
                let mut taken = Vec::with_capacity(lost.len());
                for job in &lost {
                    let reason = format!(
                        "lost from redis: the ledger expected queue {} to run attempt {} but \
                         redis no longer knew the job (recorded by reconciliation)",
                        job.queue,
                        job.last_attempt + 1
                    );
                    ledger::record_lost(pool, job, &reason).await?;
                    taken.push(Taken::Recorded);
                }
                taken
            }
            ReconcileAction::Requeue => {
                let restores: Vec<LostJob> = lost
                    .iter()
                    .map(|job| LostJob {
                        id: job.job_id,
                        kind: job.kind.clone(),
                        args: job.args.clone(),
                        attempts: u32::try_from(job.last_attempt).unwrap_or(0),
                        budget: settings.job_policy(&queue_name, &job.kind).max_attempts,
                        enqueued_at_ms: job.enqueued_at.timestamp_millis(),
                        schedule: job.schedule.clone(),
                        tick_ms: job.tick_at.map(|at| at.timestamp_millis()),
                    })
                    .collect();
                let restored = queue.restore(&restores).await?;
                let mut taken = Vec::with_capacity(lost.len());
                for (job, restored) in lost.iter().zip(restored) {
                    if restored {
                        let message = format!(
                            "redis had lost this job; reconciliation put it back in queue {} \
                             (next attempt {})",
                            job.queue,
                            job.last_attempt + 1
                        );
                        ledger::record_requeued(pool, job, &message).await?;
                        taken.push(Taken::Requeued);
                    } else {
                        taken.push(Taken::Reappeared);
                    }
                }
                taken
            }
        };
        for (job, action) in lost.into_iter().zip(taken) {
            if action == Taken::Reappeared {
                // Another worker's pass restored it between our check and our restore (or a
                // late write landed): one loss, already handled, so not a second warning.
                tracing::info!(
                    job_id = %job.job_id, job_kind = %job.kind, queue = %job.queue,
                    attempt = job.last_attempt, source = job.source,
                    "job missing from redis reappeared before the restore; left alone"
                );
            } else {
                tracing::warn!(
                    job_id = %job.job_id, job_kind = %job.kind, queue = %job.queue,
                    attempt = job.last_attempt, source = job.source, action = ?action,
                    "job lost from redis"
                );
            }
            report.lost.push(Lost {
                job_id: job.job_id.to_string(),
                kind: job.kind,
                queue: job.queue,
                last_attempt: job.last_attempt,
                source: job.source,
                action,
            });
        }
    }
    Ok(report)
}
