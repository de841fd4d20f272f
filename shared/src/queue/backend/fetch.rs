//! One fetch: lease a batch, hand verdict leases to the completer, ask the ledger what it
//! knows of the batch, and turn the rest into apalis tasks.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use apalis_core::task::Task;
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::task_id::TaskId;

use super::completer::Completion;
use super::lease_book::{LeaseEntry, LeasePurpose};
use super::settle::AttemptRow;
use super::summary::Ended;
use super::{LeaseTag, Shared, now_ms};
use crate::job::{Job, JobId};
use crate::queue::client::{Fetched, Leased, Reclaimed, Settlement, Verdict};
use crate::queue::ledger::{AttemptStatus, History, Ledger, NextState};

/// Why a fetch produced nothing to run.
#[derive(Debug, thiserror::Error)]
pub(super) enum FetchError {
    /// Redis failed.
    #[error(transparent)]
    Redis(#[from] crate::queue::Error),
    /// The ledger could not say whether the batch already ran; it was given back unstarted.
    #[error("cannot read the ledger before running a batch")]
    Ledger(#[source] anyhow::Error),
}

/// What a successful fetch yields: tasks to run, and whether to wait for more (see
/// [`Fetched`]).
pub(super) struct FetchedTasks {
    /// The tasks to hand out.
    pub(super) tasks: VecDeque<Task<Job>>,
    /// When the next delayed or retrying job is due, if the ready list ran out.
    pub(super) next_due: Option<Duration>,
    /// Whether the ready list ran out: wait on the wake list before the next fetch.
    pub(super) drained: bool,
}

/// Leases a batch and turns it into tasks. Expired leases taken over become verdict leases for
/// the completer; jobs that already succeeded are skipped; a replayed attempt number is moved
/// past the ledger's last one; what cannot be decoded is dead-lettered.
pub(super) async fn fetch_batch(
    shared: Arc<Shared>,
    ledger: Arc<dyn Ledger>,
    count: usize,
) -> Result<FetchedTasks, FetchError> {
    let sent_at = Instant::now();
    let Fetched {
        jobs,
        reclaimed,
        next_due,
        drained,
    } = shared.queue.fetch(&shared.options.worker_id, count).await?;
    let confirmed_until = sent_at + shared.queue.options().lease;
    for lost in reclaimed {
        take_over(&shared, lost, confirmed_until).await;
    }

    let mut decoded = Vec::with_capacity(jobs.len());
    for leased in jobs {
        if let Some(job) = decode(&shared, &leased).await {
            decoded.push((leased, job));
        }
    }
    if decoded.is_empty() {
        return Ok(FetchedTasks {
            tasks: VecDeque::new(),
            next_due,
            drained,
        });
    }

    // Ask the ledger, in one query for the batch, about every job that may have run before:
    // redeliveries, and first deliveries of jobs created by another incarnation of the Redis
    // server. After Redis lost writes (a crash inside the fsync window, a failover) such a job
    // can come back with an attempt number it already used, even 1, and may have succeeded
    // already. A lost write implies a restart or a promotion, which changes the incarnation, so
    // a first delivery of a job this incarnation created cannot have run: it skips the query
    // (the common case, and a Postgres round trip off every job's path).
    let ids: Vec<JobId> = decoded
        .iter()
        .filter(|(leased, job)| leased.suspect || job.attempt > 1)
        .map(|(_, job)| job.id)
        .collect();
    let histories = if ids.is_empty() {
        Ok(std::collections::HashMap::new())
    } else {
        ledger.history(ids).await
    };
    let histories = match histories {
        Ok(histories) => histories,
        Err(error) => {
            // Running without knowing could run a succeeded job again: give the batch back
            // unstarted (its attempts do not count) and let the caller back off.
            let unstarted: Vec<(String, String, bool)> = decoded
                .iter()
                .map(|(leased, _)| (leased.id.clone(), leased.token.clone(), false))
                .collect();
            if let Err(release_error) = shared
                .queue
                .release(&shared.options.worker_id, false, &unstarted)
                .await
            {
                tracing::warn!(queue = %shared.queue.name(), error = %release_error,
                    "could not give back a batch the ledger could not check; its leases will expire");
            }
            return Err(FetchError::Ledger(error));
        }
    };

    let mut tasks = VecDeque::with_capacity(decoded.len());
    for (leased, mut job) in decoded {
        let history = histories.get(&job.id).copied().unwrap_or_default();
        renumber_if_replayed(&shared, &mut job, history);
        let job = Arc::new(job);
        shared.leases.insert(
            leased.id.clone(),
            LeaseEntry {
                token: leased.token.clone(),
                purpose: LeasePurpose::Run,
                started_at_ms: None,
                job: job.clone(),
                confirmed_until,
                settling: false,
            },
        );
        if history.succeeded {
            tracing::info!(job_id = %job.id, attempt = job.attempt, "job already succeeded; acked without running");
            shared.stats.record(Ended::Skipped, None);
            let now = now_ms();
            let attempt = AttemptRow::new(&job, &shared.options.worker_id, AttemptStatus::Skipped)
                .between(now, now)
                .next_state(NextState::Done)
                .build();
            let settlement = Settlement {
                id: leased.id,
                token: leased.token,
                verdict: Verdict::Done,
                error: String::new(),
            };
            let _ = shared
                .completions
                .send(Completion::Finished {
                    attempt: Some(Box::new(attempt)),
                    settlement,
                    fenced: true,
                })
                .await;
            continue;
        }
        let task = TaskBuilder::new(Job::clone(&job))
            // Encoded straight into a buffer: `to_string` goes through `Display` and the
            // formatter, about 260 instructions per job.
            .task_id(TaskId::from_string(
                job.id
                    .0
                    .hyphenated()
                    .encode_lower(&mut uuid::Uuid::encode_buffer()) as &str,
            ))
            .attempt(job.attempt.saturating_sub(1) as usize)
            .max_attempts(job.max_attempts as usize)
            .data(LeaseTag {
                id: leased.id,
                token: leased.token,
                job,
            })
            .build();
        tasks.push_back(task);
    }
    Ok(FetchedTasks {
        tasks,
        next_due,
        drained,
    })
}

/// A job whose attempt number the ledger has already used was leased again after Redis lost
/// writes: run it as the next attempt the ledger has not seen, so its result is not dropped as
/// a duplicate of the earlier one.
fn renumber_if_replayed(shared: &Shared, job: &mut Job, history: History) {
    if history.last_attempt >= job.attempt {
        tracing::warn!(
            queue = %shared.queue.name(), job_id = %job.id, attempt = job.attempt,
            ledger_last_attempt = history.last_attempt,
            "attempt number already in the ledger (redis lost writes); running it as the next one"
        );
        job.attempt = history.last_attempt + 1;
    }
}

/// Holds a verdict lease and hands its `abandoned` attempt to the completer, which settles the
/// job to what the ledger holds for that attempt (see `completer`).
async fn take_over(shared: &Shared, lost: Reclaimed, confirmed_until: Instant) {
    let Ok(job_id) = JobId::parse(&lost.id) else {
        // Not a job id: nothing can have recorded it; the plain release rules apply.
        let _ = shared
            .completions
            .send(Completion::Finished {
                attempt: None,
                settlement: Settlement {
                    id: lost.id,
                    token: lost.token,
                    verdict: Verdict::Release,
                    error: "lease expired".to_owned(),
                },
                fenced: false,
            })
            .await;
        return;
    };
    let now = now_ms();
    let started_at_ms = (lost.leased_at_ms > 0).then_some(lost.leased_at_ms);
    tracing::warn!(
        job_id = %job_id, queue = %shared.queue.name(), attempt = lost.attempt,
        worker_id = %lost.worker, "lease expired; job taken back"
    );
    let job = Arc::new(Job {
        id: job_id,
        kind: lost.kind,
        queue: shared.queue.name().clone(),
        args: serde_json::from_str(&lost.args).unwrap_or(serde_json::Value::Null),
        payload_error: None,
        attempt: lost.attempt,
        max_attempts: lost.max_attempts.max(1),
        enqueued_at_ms: lost.enqueued_at_ms,
        schedule: lost.schedule,
        tick_ms: lost.tick_ms,
    });
    shared.leases.insert(
        lost.id.clone(),
        LeaseEntry {
            token: lost.token.clone(),
            purpose: LeasePurpose::Verdict,
            started_at_ms,
            job: job.clone(),
            confirmed_until,
            settling: false,
        },
    );
    let last = job.attempt >= job.max_attempts;
    let error = if last {
        format!(
            "lease expired on attempt {} of {} (worker {})",
            job.attempt, job.max_attempts, lost.worker
        )
    } else {
        format!("lease expired (worker {})", lost.worker)
    };
    let attempt = AttemptRow::new(&job, &lost.worker, AttemptStatus::Abandoned)
        .between(started_at_ms.unwrap_or(now), now)
        .error("lease expired before the attempt was acknowledged")
        .next_state(if last {
            NextState::Dead
        } else {
            NextState::Retrying
        })
        .build();
    let _ = shared
        .completions
        .send(Completion::Finished {
            attempt: Some(Box::new(attempt)),
            settlement: Settlement {
                id: lost.id,
                token: lost.token,
                verdict: Verdict::Release,
                error,
            },
            fenced: false,
        })
        .await;
}

/// The job a lease carries, or `None` when there is nothing to run (the script already
/// dead-lettered an id without data; an id that is not a UUID is dead-lettered here).
async fn decode(shared: &Shared, leased: &Leased) -> Option<Job> {
    let queue_name = shared.queue.name();
    if leased.missing {
        tracing::warn!(queue = %queue_name, id = %leased.id, "ready id had no job data; dead-lettered");
        return None;
    }
    let Ok(job_id) = JobId::parse(&leased.id) else {
        tracing::warn!(queue = %queue_name, id = %leased.id, "job id is not a uuid; dead-lettered");
        let settlement = Settlement {
            id: leased.id.clone(),
            token: leased.token.clone(),
            verdict: Verdict::Dead,
            error: "job id is not a uuid".to_owned(),
        };
        let _ = shared.queue.settle(&[settlement]).await;
        return None;
    };
    let (args, payload_error) = match serde_json::from_str(&leased.args) {
        Ok(args) => (args, None),
        Err(error) => (
            serde_json::Value::Null,
            Some(format!("payload is not valid JSON: {error}")),
        ),
    };
    Some(Job {
        id: job_id,
        kind: leased.kind.clone(),
        queue: queue_name.clone(),
        args,
        payload_error,
        attempt: leased.attempt,
        max_attempts: leased.max_attempts.max(1),
        enqueued_at_ms: leased.enqueued_at_ms,
        schedule: leased.schedule.clone(),
        tick_ms: leased.tick_ms,
    })
}
