//! [`RedisBackend`]: the apalis-core `Backend` workers run on, and [`SettleLayer`], the
//! middleware that turns each attempt's result into a ledger row and a queue settlement.
//!
//! Per worker (one queue, one process) there are three cooperating parts:
//! - the backend itself, polled by apalis-core's worker loop: it fetches leased jobs in batches
//!   sized to the free concurrency, and blocks on the queue's wake list when there is nothing
//!   to do (so an idle worker picks up a new job within a round trip, without polling);
//! - a *renewer* task that extends the leases of every job this worker holds, every third of
//!   the lease, and drops the ones it lost;
//! - a *completer* task that takes finished attempts from a bounded channel, writes them to the
//!   [`Ledger`] in one batch, then settles them in Redis in one script call. A job is acked only
//!   after its row is committed. The channel is bounded, so when Postgres is down the handlers
//!   block on it, the concurrency slots fill up and the backend stops fetching: back-pressure
//!   instead of unbounded memory.
//!
//! Redis errors never reach apalis-core as worker errors: every loop logs the first failure of
//! an outage once, retries with capped exponential backoff, and logs again when it recovers.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use apalis_core::backend::finalize::Ephemeral;
use apalis_core::backend::{Backend, BackendConfig};
use apalis_core::error::BoxDynError;
use apalis_core::task::Task;
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::task_id::{RandomId, TaskId};
use apalis_core::worker::context::WorkerContext;
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tower::{Layer, Service};

use super::client::{Fetched, Queue, Settled, Settlement, Verdict};
use super::conn::RedisConn;
use super::ledger::{Attempt, AttemptStatus, Ledger};
use crate::job::{Job, JobError, JobId, Outcome};

/// Retry policy of one job kind (or the queue default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindPolicy {
    /// Longest a single attempt may run; a timeout is a retryable failure.
    pub timeout: Duration,
    /// First retry delay ceiling.
    pub backoff_base: Duration,
    /// Largest retry delay ceiling.
    pub backoff_max: Duration,
}

impl Default for KindPolicy {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(3600),
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
        }
    }
}

/// How one worker consumes one queue.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// Unique per process and per restart, e.g. `reports@host-1234-5f3a`.
    pub worker_id: String,
    /// Most jobs running at once (also the most leased at once).
    pub concurrency: usize,
    /// Most jobs leased per fetch round trip.
    pub batch_size: usize,
    /// Longest an idle worker blocks before looking again (reclaiming expired leases, promoting
    /// due jobs). Defaults to 1 s.
    pub idle_wait_max: Duration,
    /// Policy for kinds without their own.
    pub default_policy: KindPolicy,
    /// Per-kind policies.
    pub kinds: HashMap<String, KindPolicy>,
    /// Finished attempts that may wait for the ledger before handlers block. Defaults to 4096.
    pub completion_buffer: usize,
}

impl ConsumerOptions {
    /// Options with defaults for everything but the identity and concurrency.
    #[must_use]
    pub fn new(worker_id: impl Into<String>, concurrency: usize) -> Self {
        Self {
            worker_id: worker_id.into(),
            concurrency: concurrency.max(1),
            batch_size: 64,
            idle_wait_max: Duration::from_secs(1),
            default_policy: KindPolicy::default(),
            kinds: HashMap::new(),
            completion_buffer: 4096,
        }
    }

    fn policy(&self, kind: &str) -> &KindPolicy {
        self.kinds.get(kind).unwrap_or(&self.default_policy)
    }
}

/// The leases one worker holds, shared by the backend, the renewer, the completer and the
/// runtime (which releases what is left when the grace period runs out).
#[derive(Debug, Default)]
pub struct LeaseBook {
    // A std mutex: it is never held across an await, and every critical section is a map
    // operation.
    entries: Mutex<HashMap<String, LeaseEntry>>,
}

/// One held lease.
#[derive(Debug, Clone)]
pub struct LeaseEntry {
    /// The fencing token.
    pub token: String,
    /// Unix ms when the handler started, `None` while the job waits in the buffer.
    pub started_at_ms: Option<i64>,
    /// The job, for recording an abandoned attempt.
    pub job: Arc<Job>,
    /// Until when this worker knows the lease is still its own: the local monotonic instant
    /// at which the fetch or the last successful renewal was *sent*, plus the lease length.
    /// Redis measured the real deadline from a later instant, so this is conservative
    /// whatever the wall clocks say. A result is recorded in the ledger only while this is
    /// comfortably in the future (see [`LeaseBook::is_confirmed`]): that is the ledger's fence.
    pub confirmed_until: Instant,
}

impl LeaseBook {
    fn insert(&self, id: String, entry: LeaseEntry) {
        self.lock().insert(id, entry);
    }

    fn mark_started(&self, id: &str, at_ms: i64) {
        if let Some(entry) = self.lock().get_mut(id) {
            entry.started_at_ms = Some(at_ms);
        }
    }

    fn remove(&self, id: &str) -> Option<LeaseEntry> {
        self.lock().remove(id)
    }

    /// Extends the confirmed lifetime of the leases in `ids` (a renewal that Redis accepted).
    fn confirm(&self, ids: &[String], until: Instant) {
        let mut entries = self.lock();
        for id in ids {
            if let Some(entry) = entries.get_mut(id) {
                entry.confirmed_until = entry.confirmed_until.max(until);
            }
        }
    }

    /// Whether `id` is still held and its lease is confirmed for at least `margin` more: only
    /// then may an attempt start, or its result be written to the ledger. Past that point
    /// another worker may already own the job (a partition, a Redis outage, a long pause), and
    /// this worker behaves as if it had crashed: its result is dropped, and whoever reclaims
    /// the lease records the attempt as abandoned.
    #[must_use]
    pub fn is_confirmed(&self, id: &str, margin: Duration) -> bool {
        self.lock()
            .get(id)
            .is_some_and(|entry| entry.confirmed_until > Instant::now() + margin)
    }

    fn tokens(&self) -> Vec<(String, String)> {
        self.lock()
            .iter()
            .map(|(id, entry)| (id.clone(), entry.token.clone()))
            .collect()
    }

    /// Takes every lease still held (for release at shutdown).
    pub fn drain(&self) -> Vec<(String, LeaseEntry)> {
        self.lock().drain().collect()
    }

    /// How many leases are held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no lease is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, LeaseEntry>> {
        // A poisoned lock means a panic while holding it; the map is still consistent because
        // every critical section is a single map call.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Counters a worker exposes about its queue protocol.
#[derive(Debug, Default)]
pub struct BackendCounters {
    /// Acks refused because the fencing token was stale.
    pub refused_acks: AtomicU64,
    /// Leases the renewer found lost.
    pub lost_leases: AtomicU64,
    /// Attempts settled.
    pub settled: AtomicU64,
    /// Attempts not started, or whose result was dropped before the ledger, because the
    /// lease could no longer be confirmed.
    pub fenced_results: AtomicU64,
}

enum Completion {
    Finished {
        attempt: Box<Attempt>,
        settlement: Settlement,
    },
    Record(Box<Attempt>),
    Flush(oneshot::Sender<()>),
}

/// The carrier of a task's lease through the middleware stack.
#[derive(Debug, Clone)]
struct LeaseTag {
    id: String,
    token: String,
}

struct Shared {
    queue: Queue,
    options: ConsumerOptions,
    leases: Arc<LeaseBook>,
    completions: mpsc::Sender<Completion>,
    in_flight: AtomicUsize,
    counters: Arc<BackendCounters>,
    /// Set by the completer while the ledger refuses writes: the backend stops leasing new
    /// jobs, so results do not pile up in memory and jobs stay in Redis for healthier workers.
    ledger_down: Arc<AtomicBool>,
    /// Moving average of how long a handler runs, in µs (`u64::MAX` until the first one
    /// finishes): decides whether fetching ahead pays (see [`FETCH_AHEAD_MAX_RUN`]).
    run_time_us: AtomicU64,
}

impl Shared {
    /// Whether this queue's jobs are short enough that a fetch round trip is a real part of
    /// their cost, so the backend leases up to one extra batch ahead of the free slots.
    fn jobs_are_short(&self) -> bool {
        self.run_time_us.load(Ordering::Relaxed) < FETCH_AHEAD_MAX_RUN_US
    }

    fn record_run_time(&self, elapsed: Duration) {
        let sample = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        let _ = self
            .run_time_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |average| {
                Some(if average == u64::MAX {
                    sample
                } else {
                    // An exponential moving average with weight 1/8 for the new sample.
                    average - average / 8 + sample / 8
                })
            });
    }
}

/// Jobs that run shorter than this on average (10 ms) are fetched ahead: while they run, the
/// next batch is already on its way, so a worker of no-op jobs is not bound by round trips.
/// Longer jobs are leased only for free slots, so a slow job never holds another job hostage
/// in a local buffer while another worker sits idle (Celery's prefetch complaint).
const FETCH_AHEAD_MAX_RUN_US: u64 = 10_000;

/// How many concurrencies' worth of short jobs a worker leases ahead of its free slots: at 16
/// slots, jobs under 10 ms wait at most ~20 ms in the buffer, and a fetch's fixed cost in
/// Redis (about a dozen calls) is spread over 16-48 jobs. One concurrency's worth measured
/// ~30% fewer no-op jobs/s (`upkeepctl bench --no-ledger`, 38-41k against 52-55k).
const FETCH_AHEAD_CONCURRENCIES: usize = 2;

/// How long past its own timeout a blocking wait may go unanswered before its connection is
/// taken for dead.
const BLOCKING_REPLY_GRACE: Duration = Duration::from_secs(2);

type FetchFuture =
    BoxFuture<'static, Result<(VecDeque<Task<Job>>, Option<Duration>), super::Error>>;

/// The apalis-core backend over one Redis queue. Build one per worker with
/// [`RedisBackend::new`]; it yields `Task<Job>`.
pub struct RedisBackend {
    shared: Arc<Shared>,
    ledger: Arc<dyn Ledger>,
    blocking: RedisConn,
    buffer: VecDeque<Task<Job>>,
    fetch: Option<FetchFuture>,
    wait: Option<BoxFuture<'static, ()>>,
    close: Option<BoxFuture<'static, ()>>,
    redis_outage: Outage,
    started: bool,
    completion_rx: Option<mpsc::Receiver<Completion>>,
    renewer: Option<tokio::task::AbortHandle>,
}

impl std::fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBackend")
            .field("queue", self.shared.queue.name())
            .field("worker_id", &self.shared.options.worker_id)
            .field("buffered", &self.buffer.len())
            .finish_non_exhaustive()
    }
}

impl RedisBackend {
    /// A backend for `queue`, recording attempts in `ledger`, holding leases in `leases`.
    ///
    /// # Errors
    /// When the blocking connection's URL does not parse.
    pub fn new(
        queue: Queue,
        blocking: RedisConn,
        options: ConsumerOptions,
        ledger: Arc<dyn Ledger>,
        leases: Arc<LeaseBook>,
        counters: Arc<BackendCounters>,
    ) -> Self {
        let (completions, completion_rx) = mpsc::channel(options.completion_buffer.max(1));
        let shared = Arc::new(Shared {
            queue,
            options,
            leases,
            completions,
            in_flight: AtomicUsize::new(0),
            counters,
            ledger_down: Arc::new(AtomicBool::new(false)),
            run_time_us: AtomicU64::new(u64::MAX),
        });
        Self {
            shared,
            ledger,
            blocking,
            buffer: VecDeque::new(),
            fetch: None,
            wait: None,
            close: None,
            redis_outage: Outage::new("redis", "fetch"),
            started: false,
            completion_rx: Some(completion_rx),
            renewer: None,
        }
    }

    /// The counters this backend updates.
    #[must_use]
    pub fn counters(&self) -> Arc<BackendCounters> {
        self.shared.counters.clone()
    }

    fn start_background(&mut self) {
        if self.started {
            return;
        }
        self.started = true;
        if let Some(rx) = self.completion_rx.take() {
            tokio::spawn(run_completer(
                rx,
                self.shared.queue.clone(),
                self.ledger.clone(),
                self.shared.leases.clone(),
                self.shared.counters.clone(),
                self.shared.ledger_down.clone(),
            ));
        }
        let renewer = tokio::spawn(run_renewer(
            self.shared.queue.clone(),
            self.shared.options.worker_id.clone(),
            self.shared.leases.clone(),
            self.shared.counters.clone(),
        ));
        self.renewer = Some(renewer.abort_handle());
    }

    /// Leases up to the free slots (plus two concurrencies' worth ahead for short jobs), in a
    /// task of its own so the round trip proceeds while buffered jobs are handed out.
    fn start_fetch(&mut self) {
        let concurrency = self.shared.options.concurrency;
        let ahead = if self.shared.jobs_are_short() {
            FETCH_AHEAD_CONCURRENCIES * concurrency
        } else {
            0
        };
        let held = self.shared.in_flight.load(Ordering::Acquire) + self.buffer.len();
        let count = (concurrency + ahead)
            .saturating_sub(held)
            .clamp(1, self.shared.options.batch_size.max(1));
        let fetch = tokio::spawn(fetch_batch(self.shared.clone(), self.ledger.clone(), count));
        self.fetch = Some(Box::pin(async move {
            fetch.await.unwrap_or_else(|error| {
                Err(super::Error::Protocol(format!(
                    "fetch task failed: {error}"
                )))
            })
        }));
    }

    /// Starts the next fetch while buffered jobs remain, when jobs are short and the buffer is
    /// down to one concurrency, so each fetch leases at least a concurrency's worth.
    fn fetch_ahead(&mut self) {
        if self.fetch.is_none()
            && self.wait.is_none()
            && self.shared.jobs_are_short()
            && self.buffer.len() <= self.shared.options.concurrency
            && !self.shared.ledger_down.load(Ordering::Acquire)
        {
            self.start_fetch();
        }
    }

    /// Takes a fetch's result: buffers its tasks, or arranges the wait before the next fetch.
    fn fetched(&mut self, result: Result<(VecDeque<Task<Job>>, Option<Duration>), super::Error>) {
        match result {
            Ok((tasks, _)) if !tasks.is_empty() => {
                self.redis_outage.recovered();
                self.buffer.extend(tasks);
            }
            Ok((_, next_due)) => {
                self.redis_outage.recovered();
                let idle_max = self.shared.options.idle_wait_max;
                let wait = next_due.map_or(idle_max, |due| due.min(idle_max));
                let queue = self.shared.queue.clone();
                let blocking = self.blocking.clone();
                self.wait = Some(Box::pin(async move {
                    let waited = tokio::time::timeout(
                        wait + BLOCKING_REPLY_GRACE,
                        queue.wait_for_work(&blocking, wait),
                    )
                    .await;
                    match waited {
                        Ok(Ok(_)) => {}
                        Ok(Err(_)) => {
                            // The next fetch reports the outage; don't spin meanwhile.
                            tokio::time::sleep(wait.min(Duration::from_millis(200))).await;
                        }
                        Err(_) => {
                            // Redis answers an expired BLPOP itself, so no reply means a socket
                            // that went silent without closing: replace it.
                            tracing::warn!(
                                queue = %queue.name(),
                                "no reply to a blocking wait; reconnecting its redis connection"
                            );
                            blocking.reset();
                        }
                    }
                }));
            }
            Err(error) => {
                let delay = self.redis_outage.failed(&error);
                self.wait = Some(Box::pin(tokio::time::sleep(delay)));
            }
        }
    }
}

impl Drop for RedisBackend {
    fn drop(&mut self) {
        if let Some(renewer) = self.renewer.take() {
            renewer.abort();
        }
    }
}

impl Backend for RedisBackend {
    type Task = Task<Job>;
    type Error = super::Error;

    fn poll_ready(
        &mut self,
        _: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        self.start_background();
        loop {
            if let Some(fetch) = self.fetch.as_mut() {
                match fetch.poll_unpin(cx) {
                    Poll::Ready(result) => {
                        self.fetch = None;
                        self.fetched(result);
                    }
                    // Nothing to hand out until the fetch returns.
                    Poll::Pending if self.buffer.is_empty() => return Poll::Pending,
                    // A fetch ahead is on its way; hand out what is buffered meanwhile.
                    Poll::Pending => {}
                }
            }
            if let Some(task) = self.buffer.pop_front() {
                self.shared.in_flight.fetch_add(1, Ordering::AcqRel);
                self.fetch_ahead();
                return Poll::Ready(Some(Ok(task)));
            }
            if let Some(wait) = self.wait.as_mut() {
                futures::ready!(wait.poll_unpin(cx));
                self.wait = None;
            }
            if self.shared.ledger_down.load(Ordering::Acquire) {
                // Back-pressure: lease nothing new until the ledger accepts writes again.
                self.wait = Some(Box::pin(tokio::time::sleep(Duration::from_millis(200))));
                continue;
            }
            self.start_fetch();
        }
    }

    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), Self::Error>> {
        if self.close.is_none() {
            self.wait = None;
            let pending_fetch = self.fetch.take();
            let mut buffered: Vec<Task<Job>> = self.buffer.drain(..).collect();
            let shared = self.shared.clone();
            self.close = Some(Box::pin(async move {
                // A fetch in flight has leased jobs in Redis: finish it so they can be given back
                // now instead of waiting for their leases to expire.
                if let Some(fetch) = pending_fetch
                    && let Ok((tasks, _)) = fetch.await
                {
                    buffered.extend(tasks);
                }
                let unstarted: Vec<(String, String, bool)> = buffered
                    .iter()
                    .filter_map(|task| task.ctx().data().get::<LeaseTag>().cloned())
                    .map(|tag| {
                        shared.leases.remove(&tag.id);
                        (tag.id, tag.token, false)
                    })
                    .collect();
                if !unstarted.is_empty() {
                    match shared
                        .queue
                        .release(&shared.options.worker_id, false, &unstarted)
                        .await
                    {
                        Ok(n_released) => tracing::info!(
                            queue = %shared.queue.name(),
                            n_released,
                            "released jobs fetched but not started"
                        ),
                        Err(error) => tracing::warn!(
                            queue = %shared.queue.name(),
                            error = %error,
                            "could not release unstarted jobs; their leases will expire"
                        ),
                    }
                }
                // Wait until every finished attempt is recorded and settled.
                let (done_tx, done_rx) = oneshot::channel();
                if shared
                    .completions
                    .send(Completion::Flush(done_tx))
                    .await
                    .is_ok()
                {
                    let _ = done_rx.await;
                }
            }));
        }
        let close = self.close.as_mut().expect("set above");
        futures::ready!(close.poll_unpin(cx));
        Poll::Ready(Ok(()))
    }
}

impl BackendConfig for RedisBackend {
    type Args = Job;
    type Id = RandomId;
    type Kind = Ephemeral;
    type Config = ConsumerOptions;
    type Layer = SettleLayer;

    fn config(&self) -> &Self::Config {
        &self.shared.options
    }

    fn middleware(&mut self, _: &mut WorkerContext) -> Self::Layer {
        SettleLayer {
            shared: self.shared.clone(),
        }
    }
}

/// Leases a batch and turns it into tasks. Records the abandoned attempts of reclaimed leases,
/// dead-letters what cannot be decoded, and skips jobs that already succeeded.
async fn fetch_batch(
    shared: Arc<Shared>,
    ledger: Arc<dyn Ledger>,
    count: usize,
) -> Result<(VecDeque<Task<Job>>, Option<Duration>), super::Error> {
    let sent_at = Instant::now();
    let Fetched {
        jobs,
        reclaimed,
        next_due,
    } = shared.queue.fetch(&shared.options.worker_id, count).await?;
    let confirmed_until = sent_at + shared.queue.options().lease;
    let queue_name = shared.queue.name().clone();
    for lost in reclaimed {
        let Ok(job_id) = JobId::parse(&lost.id) else {
            continue;
        };
        let now = now_ms();
        tracing::warn!(
            job_id = %job_id, queue = %queue_name, attempt = lost.attempt, worker_id = %lost.worker,
            dead = lost.dead, "lease expired; job taken back"
        );
        let attempt = Attempt {
            job_id,
            attempt: lost.attempt,
            kind: lost.kind,
            queue: queue_name.to_string(),
            status: AttemptStatus::Abandoned,
            schedule: lost.schedule,
            tick_ms: lost.tick_ms,
            enqueued_at_ms: lost.enqueued_at_ms,
            started_at_ms: if lost.leased_at_ms > 0 {
                lost.leased_at_ms
            } else {
                now
            },
            finished_at_ms: now,
            worker: lost.worker,
            args: serde_json::from_str(&lost.args).unwrap_or(serde_json::Value::Null),
            outcome: None,
            error: Some("lease expired before the attempt was acknowledged".to_owned()),
            next_state: Some(if lost.dead { "dead" } else { "retrying" }),
        };
        let _ = shared
            .completions
            .send(Completion::Record(Box::new(attempt)))
            .await;
    }

    // Redelivered jobs may have succeeded already (acked row, lost ack): ask the ledger once
    // for the whole batch. First deliveries cannot have a run yet, so they cost nothing.
    let redelivered: Vec<JobId> = jobs
        .iter()
        .filter(|leased| leased.attempt > 1 && !leased.missing)
        .filter_map(|leased| JobId::parse(&leased.id).ok())
        .collect();
    let already_done = if redelivered.is_empty() {
        Default::default()
    } else {
        ledger.succeeded(redelivered).await.unwrap_or_else(|error| {
            tracing::warn!(error = %error, "could not check the ledger for earlier successes; running anyway");
            Default::default()
        })
    };

    let mut tasks = VecDeque::with_capacity(jobs.len());
    for leased in jobs {
        if leased.missing {
            tracing::warn!(queue = %queue_name, id = %leased.id, "ready id had no job data; dead-lettered");
            continue;
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
            continue;
        };
        let (args, payload_error) = match serde_json::from_str(&leased.args) {
            Ok(args) => (args, None),
            Err(error) => (
                serde_json::Value::Null,
                Some(format!("payload is not valid JSON: {error}")),
            ),
        };
        let job = Job {
            id: job_id,
            kind: leased.kind,
            queue: queue_name.clone(),
            args,
            payload_error,
            attempt: leased.attempt,
            max_attempts: leased.max_attempts.max(1),
            enqueued_at_ms: leased.enqueued_at_ms,
            schedule: leased.schedule,
            tick_ms: leased.tick_ms,
        };
        let job = Arc::new(job);
        shared.leases.insert(
            leased.id.clone(),
            LeaseEntry {
                token: leased.token.clone(),
                started_at_ms: None,
                job: job.clone(),
                confirmed_until,
            },
        );
        if already_done.contains(&job_id) {
            tracing::info!(job_id = %job_id, attempt = job.attempt, "job already succeeded; acked without running");
            let now = now_ms();
            let attempt = attempt_row(
                &job,
                &shared,
                AttemptStatus::Skipped,
                now,
                now,
                None,
                None,
                Some("done"),
            );
            let settlement = Settlement {
                id: leased.id,
                token: leased.token,
                verdict: Verdict::Done,
                error: String::new(),
            };
            let _ = shared
                .completions
                .send(Completion::Finished {
                    attempt: Box::new(attempt),
                    settlement,
                })
                .await;
            continue;
        }
        let task = TaskBuilder::new(Job::clone(&job))
            .task_id(TaskId::from_string(job_id.to_string()))
            .attempt(job.attempt.saturating_sub(1) as usize)
            .max_attempts(job.max_attempts as usize)
            .data(LeaseTag {
                id: leased.id,
                token: leased.token,
            })
            .build();
        tasks.push_back(task);
    }
    Ok((tasks, next_due))
}

#[allow(clippy::too_many_arguments)]
fn attempt_row(
    job: &Job,
    shared: &Shared,
    status: AttemptStatus,
    started_at_ms: i64,
    finished_at_ms: i64,
    outcome: Option<Outcome>,
    error: Option<String>,
    next_state: Option<&'static str>,
) -> Attempt {
    Attempt {
        job_id: job.id,
        attempt: job.attempt,
        kind: job.kind.clone(),
        queue: job.queue.to_string(),
        status,
        schedule: job.schedule.clone(),
        tick_ms: job.tick_ms,
        enqueued_at_ms: job.enqueued_at_ms,
        started_at_ms,
        finished_at_ms,
        worker: shared.options.worker_id.clone(),
        args: job.args.clone(),
        outcome,
        error,
        next_state,
    }
}

/// The backend's middleware: wraps every attempt, enforces the kind's timeout, turns panics
/// into dead letters, and hands the result to the completer.
#[derive(Clone)]
pub struct SettleLayer {
    shared: Arc<Shared>,
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
    type Response = Outcome;
    type Error = BoxDynError;
    type Future = Pin<Box<dyn Future<Output = Result<Outcome, BoxDynError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, task: Task<Job>) -> Self::Future {
        let shared = self.shared.clone();
        let tag = task.ctx().data().get::<LeaseTag>().cloned();
        let job = task.args.clone();
        let started_at_ms = now_ms();
        if let Some(tag) = &tag {
            shared.leases.mark_started(&tag.id, started_at_ms);
        }
        let policy = shared.options.policy(&job.kind).clone();
        if let Some(tag) = &tag
            && !shared
                .leases
                .is_confirmed(&tag.id, fence_margin(&shared.queue))
        {
            // The lease may belong to another worker by now (it waited in the buffer through
            // an outage): do not start an attempt whose result could not be recorded.
            shared.leases.remove(&tag.id);
            shared
                .counters
                .fenced_results
                .fetch_add(1, Ordering::Relaxed);
            shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!(job_id = %job.id, queue = %job.queue, attempt = job.attempt,
                "lease no longer confirmed; attempt not started");
            return Box::pin(async {
                Err(
                    Box::new(JobError::retryable("lease lost before the attempt started"))
                        as BoxDynError,
                )
            });
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
            shared.record_run_time(run_started.elapsed());
            let (attempt, verdict, response) = match result {
                Ok(outcome) => (
                    attempt_row(
                        &job,
                        &shared,
                        AttemptStatus::Succeeded,
                        started_at_ms,
                        finished_at_ms,
                        Some(outcome.clone()),
                        None,
                        Some("done"),
                    ),
                    Verdict::Done,
                    Ok(outcome),
                ),
                Err(error) => {
                    let verdict = match &error {
                        JobError::Retryable { retry_after, .. }
                            if job.attempt < job.max_attempts =>
                        {
                            Verdict::Retry(retry_after.unwrap_or_else(|| {
                                super::backoff(job.attempt, policy.backoff_base, policy.backoff_max)
                            }))
                        }
                        _ => Verdict::Dead,
                    };
                    let next_state = if matches!(verdict, Verdict::Dead) {
                        "dead"
                    } else {
                        "retrying"
                    };
                    tracing::warn!(
                        job_id = %job.id, job_kind = %job.kind, queue = %job.queue, attempt = job.attempt,
                        max_attempts = job.max_attempts, next_state, error = %error, "attempt failed"
                    );
                    (
                        attempt_row(
                            &job,
                            &shared,
                            AttemptStatus::Failed,
                            started_at_ms,
                            finished_at_ms,
                            error.outcome().cloned(),
                            Some(error.to_string()),
                            Some(next_state),
                        ),
                        verdict,
                        Err(Box::new(error) as BoxDynError),
                    )
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
                        attempt: Box::new(attempt),
                        settlement,
                    })
                    .await;
            }
            shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            response
        })
    }
}

/// Most attempts recorded and settled per round trip.
const COMPLETION_BATCH: usize = 256;

/// The completer is a two-stage pipeline: stage one writes a batch to the ledger, stage two
/// settles it in Redis. Each stage is sequential, so ledger batches stay as large as the
/// backlog allows (one commit, one fsync, per batch), while one batch's Redis settle overlaps
/// the next batch's commit. A job still reaches stage two only after its row is committed.
async fn run_completer(
    mut rx: mpsc::Receiver<Completion>,
    queue: Queue,
    ledger: Arc<dyn Ledger>,
    leases: Arc<LeaseBook>,
    counters: Arc<BackendCounters>,
    ledger_down: Arc<AtomicBool>,
) {
    let (settle_tx, settle_rx) = mpsc::channel::<Recorded>(2);
    let margin = fence_margin(&queue);
    let queue_name = queue.name().to_string();
    let settler = tokio::spawn(run_settler(
        settle_rx,
        queue,
        leases.clone(),
        counters.clone(),
    ));
    let mut ledger_outage = Outage::new("ledger", "record attempts");
    let mut batch = Vec::with_capacity(COMPLETION_BATCH);
    while rx.recv_many(&mut batch, COMPLETION_BATCH).await > 0 {
        let mut finished = Vec::with_capacity(batch.len());
        let mut records = Vec::new();
        let mut flushes = Vec::new();
        for completion in batch.drain(..) {
            match completion {
                Completion::Finished {
                    attempt,
                    settlement,
                } => finished.push((*attempt, settlement)),
                Completion::Record(attempt) => records.push(*attempt),
                Completion::Flush(done) => flushes.push(done),
            }
        }
        // The ledger first: a job is never acked before its row is committed.
        loop {
            // The ledger's fence: a result is written only while its lease is confirmed, so a
            // worker cut off from Redis (whose job may be running elsewhere by now) never
            // records a second success. Checked again before every retry of the write.
            finished.retain(|(attempt, settlement)| {
                if leases.is_confirmed(&settlement.id, margin) {
                    return true;
                }
                leases.remove(&settlement.id);
                counters.fenced_results.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    queue = %queue_name, job_id = %attempt.job_id, attempt = attempt.attempt,
                    "lease no longer confirmed; result dropped before the ledger"
                );
                false
            });
            let attempts: Vec<Attempt> = records
                .iter()
                .cloned()
                .chain(finished.iter().map(|(attempt, _)| attempt.clone()))
                .collect();
            if attempts.is_empty() {
                break;
            }
            match ledger.record(attempts).await {
                Ok(()) => {
                    ledger_outage.recovered();
                    ledger_down.store(false, Ordering::Release);
                    break;
                }
                Err(error) => {
                    ledger_down.store(true, Ordering::Release);
                    let delay = ledger_outage.failed(&*error);
                    tokio::time::sleep(delay).await;
                }
            }
        }
        let settlements = finished
            .into_iter()
            .map(|(_, settlement)| settlement)
            .collect();
        if settle_tx
            .send(Recorded {
                settlements,
                flushes,
            })
            .await
            .is_err()
        {
            return;
        }
    }
    drop(settle_tx);
    let _ = settler.await;
}

/// A batch whose ledger rows are committed, ready to settle.
struct Recorded {
    settlements: Vec<Settlement>,
    /// Flush requests received with this batch: answered once it is settled.
    flushes: Vec<oneshot::Sender<()>>,
}

async fn run_settler(
    mut rx: mpsc::Receiver<Recorded>,
    queue: Queue,
    leases: Arc<LeaseBook>,
    counters: Arc<BackendCounters>,
) {
    let mut redis_outage = Outage::new("redis", "settle attempts");
    while let Some(Recorded {
        settlements,
        flushes,
    }) = rx.recv().await
    {
        while !settlements.is_empty() {
            match queue.settle(&settlements).await {
                Ok(results) => {
                    redis_outage.recovered();
                    counters
                        .settled
                        .fetch_add(results.len() as u64, Ordering::Relaxed);
                    for (id, settled) in results {
                        leases.remove(&id);
                        if settled == Settled::Refused {
                            counters.refused_acks.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(
                                queue = %queue.name(), job_id = %id,
                                "ack refused: this worker's lease was stale (the job was leased again)"
                            );
                        }
                    }
                    break;
                }
                Err(error) => {
                    let delay = redis_outage.failed(&error);
                    tokio::time::sleep(delay).await;
                }
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

async fn run_renewer(
    queue: Queue,
    worker_id: String,
    leases: Arc<LeaseBook>,
    counters: Arc<BackendCounters>,
) {
    let period = (queue.options().lease / 3).max(Duration::from_millis(100));
    let mut outage = Outage::new("redis", "renew leases");
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let held = leases.tokens();
        let sent_at = Instant::now();
        match queue.renew(&worker_id, &held).await {
            Ok(lost) => {
                outage.recovered();
                let kept: Vec<String> = held
                    .into_iter()
                    .map(|(id, _)| id)
                    .filter(|id| !lost.contains(id))
                    .collect();
                leases.confirm(&kept, sent_at + queue.options().lease);
                for id in lost {
                    // Still in the book means we did not settle it ourselves in the meantime.
                    if leases.remove(&id).is_some() {
                        counters.lost_leases.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(queue = %queue.name(), job_id = %id, worker_id = %worker_id, "lease lost; its ack will be refused");
                    }
                }
            }
            Err(error) => {
                outage.failed(&error);
            }
        }
    }
}

/// Logs a dependency outage once when it starts and once when it ends, and paces retries with
/// capped exponential backoff and jitter.
#[derive(Debug)]
pub(crate) struct Outage {
    dependency: &'static str,
    action: &'static str,
    since: Option<Instant>,
    failures: u32,
}

impl Outage {
    pub(crate) fn new(dependency: &'static str, action: &'static str) -> Self {
        Self {
            dependency,
            action,
            since: None,
            failures: 0,
        }
    }

    /// Records a failure; returns how long to wait before the next try.
    pub(crate) fn failed(&mut self, error: &dyn std::error::Error) -> Duration {
        if self.since.is_none() {
            self.since = Some(Instant::now());
            tracing::warn!(
                dependency = self.dependency, action = self.action, error = %error,
                error.chain = ?ErrorChain(error), "dependency unavailable; retrying with backoff"
            );
        }
        self.failures = self.failures.saturating_add(1);
        let ceiling = Duration::from_millis(50)
            .saturating_mul(1 << self.failures.min(7))
            .min(Duration::from_secs(5));
        ceiling / 2 + super::backoff(1, ceiling / 2, ceiling / 2)
    }

    /// Records a success, logging the end of an outage if one was running.
    pub(crate) fn recovered(&mut self) {
        if let Some(since) = self.since.take() {
            tracing::info!(
                dependency = self.dependency,
                action = self.action,
                outage_ms = since.elapsed().as_millis() as u64,
                failures = self.failures,
                "dependency available again"
            );
            self.failures = 0;
        }
    }
}

struct ErrorChain<'a>(&'a dyn std::error::Error);

impl std::fmt::Debug for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut list = f.debug_list();
        let mut current: Option<&dyn std::error::Error> = Some(self.0);
        while let Some(error) = current {
            list.entry(&format_args!("{error}"));
            current = error.source();
        }
        list.finish()
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "non-string panic payload".to_owned())
}

/// How much confirmed lease an attempt must have left to start, or to have its result written:
/// a quarter of the lease. The ledger write must finish within it (see ARCHITECTURE.md,
/// "Failure model").
fn fence_margin(queue: &Queue) -> Duration {
    queue.options().lease / 4
}

fn humanize(duration: Duration) -> String {
    format!("{:.3}s", duration.as_secs_f64())
}

/// This host's clock as Unix milliseconds: the unit of every [`Attempt`] timestamp.
#[must_use]
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Captures what the `tracing` macros write while `run` runs.
    fn logs_of(run: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("buffer").extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, run);
        let bytes = buffer.0.lock().expect("buffer").clone();
        String::from_utf8(bytes).expect("utf-8 logs")
    }

    fn refused() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused")
    }

    #[test]
    fn an_outage_is_logged_once_when_it_starts_and_once_when_it_ends() {
        let mut outage = Outage::new("redis", "fetch");
        let logs = logs_of(|| {
            for _ in 0..50 {
                outage.failed(&refused());
            }
            outage.recovered();
            outage.recovered();
        });
        assert_eq!(
            logs.matches("dependency unavailable").count(),
            1,
            "one warning for 50 failures:\n{logs}"
        );
        assert_eq!(
            logs.matches("dependency available again").count(),
            1,
            "{logs}"
        );
        assert!(logs.contains("failures=50"), "{logs}");
        assert!(
            logs.contains("connection refused"),
            "the cause is logged:\n{logs}"
        );
    }

    #[test]
    fn outage_retries_back_off_exponentially_up_to_5_s_and_start_over_after_recovery() {
        let mut outage = Outage::new("postgres", "record attempts");
        let delays: Vec<Duration> = (0..12).map(|_| outage.failed(&refused())).collect();
        for (i, delay) in delays.iter().enumerate() {
            // The ceiling doubles from 100 ms and stops at 5 s; the delay is in its upper half.
            let ceiling = Duration::from_millis(50 << (i + 1).min(7)).min(Duration::from_secs(5));
            assert!(
                *delay >= ceiling / 2 && *delay <= ceiling,
                "failure {}: {delay:?} not within {:?}..={ceiling:?}",
                i + 1,
                ceiling / 2
            );
        }
        assert!(delays[11] >= Duration::from_millis(2500), "{delays:?}");

        outage.recovered();
        let first_again = outage.failed(&refused());
        assert!(
            first_again <= Duration::from_millis(100),
            "a new outage starts from the bottom: {first_again:?}"
        );
    }
}
