//! [`SettleLayer`]: the middleware around every attempt. It fences the start, enforces the
//! kind's timeout, turns panics into dead letters, and hands the result to the completer as a
//! ledger row ([`AttemptRow`]) and a settlement.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use apalis_core::error::BoxDynError;
use apalis_core::task::Task;
use futures::FutureExt;
use tower::{Layer, Service};

use super::completer::Completion;
use super::summary::Ended;
use super::{LeaseTag, Shared, fence_margin, humanize, now_ms, panic_message};
use crate::job::{Job, JobError, Outcome};
use crate::queue::backoff;
use crate::queue::client::{Settlement, Verdict};
use crate::queue::ledger::{Attempt, AttemptStatus, NextState};

/// Builds the ledger row of one attempt of `job`: the status is given, the rest defaults to an
/// instant attempt with no outcome, no error and no next state.
#[derive(Debug)]
pub(super) struct AttemptRow<'a> {
    job: &'a Job,
    worker: &'a str,
    status: AttemptStatus,
    started_at_ms: Option<i64>,
    finished_at_ms: Option<i64>,
    outcome: Option<Outcome>,
    error: Option<String>,
    next_state: Option<NextState>,
}

impl<'a> AttemptRow<'a> {
    pub(super) fn new(job: &'a Job, worker: &'a str, status: AttemptStatus) -> Self {
        Self {
            job,
            worker,
            status,
            started_at_ms: None,
            finished_at_ms: None,
            outcome: None,
            error: None,
            next_state: None,
        }
    }

    /// When the attempt started and ended (unix ms).
    pub(super) fn between(mut self, started_at_ms: i64, finished_at_ms: i64) -> Self {
        self.started_at_ms = Some(started_at_ms);
        self.finished_at_ms = Some(finished_at_ms);
        self
    }

    pub(super) fn outcome(mut self, outcome: Outcome) -> Self {
        self.outcome = Some(outcome);
        self
    }

    pub(super) fn error(mut self, error: impl Into<String>) -> Self {
        self.error = Some(error.into());
        self
    }

    pub(super) fn next_state(mut self, next_state: NextState) -> Self {
        self.next_state = Some(next_state);
        self
    }

    pub(super) fn build(self) -> Attempt {
        let now = now_ms();
        let job = self.job;
        Attempt {
            job_id: job.id,
            attempt: job.attempt,
            kind: job.kind.clone(),
            queue: job.queue.to_string(),
            status: self.status,
            schedule: job.schedule.clone(),
            tick_ms: job.tick_ms,
            enqueued_at_ms: job.enqueued_at_ms,
            started_at_ms: self.started_at_ms.unwrap_or(now),
            finished_at_ms: self.finished_at_ms.unwrap_or(now),
            worker: self.worker.to_owned(),
            args: job.args.clone(),
            outcome: self.outcome,
            error: self.error,
            next_state: self.next_state,
        }
    }
}

/// The backend's middleware: wraps every attempt, enforces the kind's timeout, turns panics
/// into dead letters, and hands the result to the completer.
#[derive(Clone)]
pub struct SettleLayer {
    pub(super) shared: Arc<Shared>,
}

impl std::fmt::Debug for SettleLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SettleLayer").finish_non_exhaustive()
    }
}

impl<S> Layer<S> for SettleLayer {
    type Service = SettleService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SettleService {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// See [`SettleLayer`].
#[derive(Clone)]
pub struct SettleService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> std::fmt::Debug for SettleService<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SettleService").finish_non_exhaustive()
    }
}

impl<S> Service<Task<Job>> for SettleService<S>
where
    S: Service<Task<Job>, Response = Outcome>,
    S::Error: Into<BoxDynError>,
    S::Future: Send + 'static,
{
    /// Nothing: the outcome goes to the ledger with the attempt's row, and apalis only drops
    /// what a service answers (returning it cost a copy of every outcome).
    type Response = ();
    type Error = BoxDynError;
    type Future = Pin<Box<dyn Future<Output = Result<(), BoxDynError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, task: Task<Job>) -> Self::Future {
        let shared = self.shared.clone();
        let tag = task.ctx().data().get::<LeaseTag>().cloned();
        let job = tag
            .as_ref()
            .map_or_else(|| Arc::new(task.args.clone()), |tag| tag.job.clone());
        let started_at_ms = now_ms();
        let policy = shared.options.policy(&job.kind).clone();
        if let Some(tag) = tag.clone()
            && !shared
                .leases
                .is_confirmed(&tag.id, &tag.token, fence_margin(&shared.queue))
        {
            // The lease may belong to another worker by now (it waited in the buffer through
            // an outage or a pause): do not start an attempt whose result could not be
            // recorded. Give it back unstarted, so it does not cost an attempt; if the lease
            // is gone already, the ack is refused and whoever took it over settles it.
            shared
                .counters
                .fenced_results
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(job_id = %job.id, queue = %job.queue, attempt = job.attempt,
                "lease no longer confirmed; attempt not started");
            return Box::pin(async move {
                let _ = shared
                    .completions
                    .send(Completion::Finished {
                        attempt: None,
                        settlement: Settlement {
                            id: tag.id,
                            token: tag.token,
                            verdict: Verdict::Unstarted,
                            error: String::new(),
                        },
                        fenced: false,
                    })
                    .await;
                shared.in_flight.fetch_sub(1, Ordering::AcqRel);
                Err(
                    Box::new(JobError::retryable("lease lost before the attempt started"))
                        as BoxDynError,
                )
            });
        }
        if let Some(tag) = &tag {
            shared
                .leases
                .mark_started(&tag.id, &tag.token, started_at_ms);
        }
        let inner = if let Some(reason) = &job.payload_error {
            // Never hand an undecodable payload to a handler.
            let reason = reason.clone();
            async move { Err::<Outcome, BoxDynError>(Box::new(JobError::Permanent(reason))) }
                .boxed()
        } else {
            let fut = self.inner.call(task);
            async move { fut.await.map_err(Into::into) }.boxed()
        };
        Box::pin(async move {
            let run_started = std::time::Instant::now();
            let result =
                match tokio::time::timeout(policy.timeout, AssertUnwindSafe(inner).catch_unwind())
                    .await
                {
                    Err(_) => Err(JobError::retryable(format!(
                        "attempt timed out after {}",
                        humanize(policy.timeout)
                    ))),
                    Ok(Err(panic)) => Err(JobError::Permanent(format!(
                        "handler panicked: {}",
                        panic_message(&panic)
                    ))),
                    Ok(Ok(Ok(outcome))) => Ok(outcome),
                    Ok(Ok(Err(error))) => Err(match error.downcast::<JobError>() {
                        Ok(job_error) => *job_error,
                        Err(other) => JobError::retryable(other.to_string()),
                    }),
                };
            let finished_at_ms = now_ms();
            let elapsed = run_started.elapsed();
            shared.record_run_time(elapsed);
            let duration_ms = elapsed.as_secs_f64() * 1000.0;
            let slow = elapsed >= shared.options.slow_attempt;
            let worker = shared.options.worker_id.as_str();
            let (attempt, verdict, response) = match result {
                Ok(outcome) => {
                    shared.stats.record(
                        if outcome.skipped {
                            Ended::Skipped
                        } else {
                            Ended::Succeeded
                        },
                        Some(elapsed),
                    );
                    // A success is logged at debug only (in `dispatch`): the periodic summary
                    // and the ledger carry it. A slow one is worth a line of its own.
                    if slow {
                        tracing::info!(
                            job_id = %job.id, job_kind = %job.kind, queue = %job.queue,
                            attempt = job.attempt, duration_ms, skipped = outcome.skipped,
                            "slow attempt"
                        );
                    }
                    (
                        AttemptRow::new(
                            &job,
                            worker,
                            if outcome.skipped {
                                AttemptStatus::Skipped
                            } else {
                                AttemptStatus::Succeeded
                            },
                        )
                        .between(started_at_ms, finished_at_ms)
                        .outcome(outcome)
                        .next_state(NextState::Done)
                        .build(),
                        Verdict::Done,
                        Ok(()),
                    )
                }
                Err(error) => {
                    let verdict = match &error {
                        JobError::Retryable { retry_after, .. }
                            if job.attempt < job.max_attempts =>
                        {
                            Verdict::Retry(retry_after.unwrap_or_else(|| {
                                backoff(job.attempt, policy.backoff_base, policy.backoff_max)
                            }))
                        }
                        _ => Verdict::Dead,
                    };
                    let next_state = if matches!(verdict, Verdict::Dead) {
                        NextState::Dead
                    } else {
                        NextState::Retrying
                    };
                    shared.stats.record(
                        if next_state == NextState::Dead {
                            Ended::Dead
                        } else {
                            Ended::Retried
                        },
                        Some(elapsed),
                    );
                    // Failures, retries and dead letters always get a line, with the job id.
                    tracing::warn!(
                        job_id = %job.id, job_kind = %job.kind, queue = %job.queue, attempt = job.attempt,
                        max_attempts = job.max_attempts, next_state = next_state.as_str(),
                        duration_ms, slow, error = %error, "attempt failed"
                    );
                    // A handler that reported findings with its failure (a failed backup's
                    // stderr and `backup.failed`) keeps them on the failed attempt's row.
                    let mut row = AttemptRow::new(&job, worker, AttemptStatus::Failed)
                        .between(started_at_ms, finished_at_ms)
                        .error(error.to_string())
                        .next_state(next_state);
                    if let Some(outcome) = error.outcome() {
                        row = row.outcome(outcome.clone());
                    }
                    (row.build(), verdict, Err(Box::new(error) as BoxDynError))
                }
            };
            if let Some(tag) = tag {
                let settlement = Settlement {
                    id: tag.id,
                    token: tag.token,
                    verdict,
                    error: attempt.error.clone().unwrap_or_default(),
                };
                // Bounded: when the ledger is down this waits, which is the back-pressure.
                let _ = shared
                    .completions
                    .send(Completion::Finished {
                        attempt: Some(Box::new(attempt)),
                        settlement,
                        fenced: true,
                    })
                    .await;
            }
            shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            response
        })
    }
}
