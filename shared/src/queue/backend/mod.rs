//! [`RedisBackend`]: the apalis-core `Backend` workers run on, and [`SettleLayer`], the
//! middleware that turns each attempt's result into a ledger row and a queue settlement.
//!
//! Per worker (one queue, one process) the parts are, one module each:
//! - this module, the backend itself, polled by apalis-core's worker loop: it fetches leased
//!   jobs in batches sized to the free concurrency ([`fetch`]), and blocks on the queue's wake
//!   list when there is nothing to do (so an idle worker picks up a new job within a round
//!   trip, without polling);
//! - [`lease_book`]: the leases this worker holds, and until when each is confirmed;
//! - [`settle`]: the middleware around each attempt, and the ledger row it produces;
//! - [`completer`]: a task that takes finished attempts from a bounded channel, writes them to
//!   the [`Ledger`] in one batch, then settles them in Redis in one script call, each to what
//!   the ledger holds. A job is acked only after its row is committed. The channel is bounded,
//!   so when Postgres is down the handlers block on it, the concurrency slots fill up and the
//!   backend stops fetching: back-pressure instead of unbounded memory;
//! - [`renewer`]: a task that extends the leases of every job this worker holds, every third of
//!   the lease, and drops the ones it lost;
//! - [`summary`]: lock-free per-queue counters of the attempts, logged at info as one
//!   `queue summary` line per interval (a successful attempt itself is logged at debug only).
//!
//! Redis errors never reach apalis-core as worker errors: every loop reports an outage through
//! [`Outage`] (logged once when it starts and once when it ends) and retries with capped
//! exponential backoff.

mod completer;
mod fetch;
mod lease_book;
mod renewer;
mod settle;
mod summary;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use apalis_core::backend::finalize::Ephemeral;
use apalis_core::backend::{Backend, BackendConfig};
use apalis_core::task::Task;
use apalis_core::task::task_id::RandomId;
use apalis_core::worker::context::WorkerContext;
use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};

pub use completer::release_leftovers;
pub use lease_book::{LeaseBook, LeaseEntry, LeasePurpose};
pub use settle::{SettleLayer, SettleService};

use self::completer::{Completion, run_completer};
use self::fetch::{FetchError, FetchedTasks, fetch_batch};
use self::renewer::run_renewer;
use self::summary::{AttemptStats, run_summarizer};
use super::client::Queue;
use super::conn::RedisConn;
use super::ledger::Ledger;
use crate::job::Job;
use crate::outage::Outage;

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
    pub kinds: HashMap<String, KindPolicy, foldhash::quality::RandomState>,
    /// Finished attempts that may wait for the ledger before handlers block. Defaults to 4096.
    pub completion_buffer: usize,
    /// An attempt running at least this long is logged at info with its job id. Defaults to
    /// 10 s.
    pub slow_attempt: Duration,
    /// How often the `queue summary` line is logged. Defaults to 60 s.
    pub summary_interval: Duration,
}

impl ConsumerOptions {
    /// Options with defaults for everything but the identity and concurrency.
    #[must_use]
    pub fn new(worker_id: impl Into<String>, concurrency: usize) -> Self {
        Self {
            worker_id: worker_id.into(),
            concurrency: concurrency.max(1),
            batch_size: 128,
            idle_wait_max: Duration::from_secs(1),
            default_policy: KindPolicy::default(),
            kinds: HashMap::default(),
            completion_buffer: 4096,
            slow_attempt: Duration::from_secs(10),
            summary_interval: Duration::from_secs(60),
        }
    }

    fn policy(&self, kind: &str) -> &KindPolicy {
        self.kinds.get(kind).unwrap_or(&self.default_policy)
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
    /// Attempts not started (given back unstarted), or whose result was dropped before the
    /// ledger, because the lease could no longer be confirmed.
    pub fenced_results: AtomicU64,
}

/// The carrier of a task's lease through the middleware stack.
#[derive(Debug, Clone)]
pub(crate) struct LeaseTag {
    id: String,
    token: String,
    /// The job as leased (the lease book's copy): the settle layer builds the attempt's row
    /// from it instead of copying the task's arguments once more.
    job: Arc<Job>,
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
    /// What the periodic `queue summary` line reports.
    stats: Arc<AttemptStats>,
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

/// How many batches (`batch_size`) of short jobs a worker leases ahead of its free slots. The
/// next fetch starts when the buffer is down to one batch, so a full batch is on its way while
/// the last one is handed out: at full speed the worker's handout waits on the fetch round
/// trip, not on its handlers (instrumented: the buffer stood empty with a fetch in flight for
/// 80-90 % of a drain when the next fetch started at one concurrency left). With the default
/// batch of 128 at 16 slots, 272 jobs; jobs under 10 ms then wait at most ~170 ms in the buffer.
/// Against four concurrencies ahead, fetching at one left, batches of 64: 1.13x the jobs/s
/// (10 interleaved pairs of 20,000 jobs with the ledger, 0.99-1.23) and 11 % less CPU per job.
const FETCH_AHEAD_BATCHES: usize = 2;

/// How long past its own timeout a blocking wait may go unanswered before its connection is
/// taken for dead.
const BLOCKING_REPLY_GRACE: Duration = Duration::from_secs(2);

type FetchFuture = BoxFuture<'static, Result<FetchedTasks, FetchError>>;

/// The apalis-core backend over one Redis queue. Build one per worker with
/// [`RedisBackend::new`]; it yields `Task<Job>`.
pub struct RedisBackend {
    shared: Arc<Shared>,
    ledger: Arc<dyn Ledger>,
    blocking: RedisConn,
    buffer: VecDeque<Task<Job>>,
    fetch: Option<FetchFuture>,
    /// Since when the handout has been empty with a fetch on its way (the summary's
    /// `fetch_wait_s`).
    starved_since: Option<Instant>,
    wait: Option<BoxFuture<'static, ()>>,
    close: Option<BoxFuture<'static, ()>>,
    redis_outage: Outage,
    /// The ledger could not be read before running a batch (see `fetch`).
    ledger_outage: Outage,
    started: bool,
    completion_rx: Option<mpsc::Receiver<Completion>>,
    renewer: Option<tokio::task::AbortHandle>,
    summarizer: Option<tokio::task::AbortHandle>,
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
            stats: Arc::default(),
        });
        Self {
            shared,
            ledger,
            blocking,
            buffer: VecDeque::new(),
            fetch: None,
            starved_since: None,
            wait: None,
            close: None,
            redis_outage: Outage::new("redis", "fetch"),
            ledger_outage: Outage::new("postgres", "check the ledger before running"),
            started: false,
            completion_rx: Some(completion_rx),
            renewer: None,
            summarizer: None,
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
        let summarizer = tokio::spawn(run_summarizer(
            self.shared.stats.clone(),
            self.shared.queue.name().to_string(),
            self.shared.options.worker_id.clone(),
            self.shared.options.summary_interval,
        ));
        self.summarizer = Some(summarizer.abort_handle());
    }

    /// Logs the attempts not yet in a summary line (at shutdown).
    fn log_last_summary(shared: &Shared) {
        shared
            .stats
            .log(shared.queue.name().as_str(), &shared.options.worker_id);
    }

    /// Leases up to the free slots (plus two batches ahead for short jobs), in a
    /// task of its own so the round trip proceeds while buffered jobs are handed out.
    fn start_fetch(&mut self) {
        let count = self
            .room_to_lease()
            .clamp(1, self.shared.options.batch_size.max(1));
        let fetch = tokio::spawn(fetch_batch(self.shared.clone(), self.ledger.clone(), count));
        self.fetch = Some(Box::pin(async move {
            fetch.await.unwrap_or_else(|error| {
                Err(FetchError::Redis(super::Error::Protocol(format!(
                    "fetch task failed: {error}"
                ))))
            })
        }));
    }

    /// How many more jobs this worker may hold: its free slots, plus two batches
    /// ahead for short jobs, less what is running or buffered.
    fn room_to_lease(&self) -> usize {
        let concurrency = self.shared.options.concurrency;
        let ahead = if self.shared.jobs_are_short() {
            FETCH_AHEAD_BATCHES * self.shared.options.batch_size.max(1)
        } else {
            0
        };
        let held = self.shared.in_flight.load(Ordering::Acquire) + self.buffer.len();
        (concurrency + ahead).saturating_sub(held)
    }

    /// Starts the next fetch while buffered jobs remain, when jobs are short, the buffer is
    /// down to one batch (or one concurrency, when that is more) and there is room for a full
    /// batch (a concurrency's worth, or `batch_size` when smaller).
    ///
    /// The room condition matters when the ledger is the slower stage: handlers then wait on
    /// the completion channel with their slots taken, and fetching whenever one slot frees
    /// leased one or two jobs per script call (measured: 5 jobs per call on average with the
    /// ledger, against 14 without), each call paying the script's fixed work in Redis.
    fn fetch_ahead(&mut self) {
        let full_batch = self
            .shared
            .options
            .concurrency
            .min(self.shared.options.batch_size)
            .max(1);
        if self.fetch.is_none()
            && self.wait.is_none()
            && self.shared.jobs_are_short()
            && self.buffer.len()
                <= self
                    .shared
                    .options
                    .batch_size
                    .max(self.shared.options.concurrency)
            && self.room_to_lease() >= full_batch
            && !self.shared.ledger_down.load(Ordering::Acquire)
        {
            self.start_fetch();
        }
    }

    /// Takes a fetch's result: buffers its tasks, or arranges the wait before the next fetch.
    fn fetched(&mut self, result: Result<FetchedTasks, FetchError>) {
        if result.is_ok() {
            // A round trip Redis answered: the worker's heartbeat for the systemd watchdog.
            let n_leased = self.shared.leases.len();
            crate::daemons::vitals().worker_round_trip(self.shared.queue.name().as_str(), n_leased);
            self.redis_outage.recovered();
            self.ledger_outage.recovered();
        }
        if let Ok(fetched) = &result {
            self.shared.stats.record_fetch(fetched.tasks.len());
        }
        match result {
            Ok(fetched) if !fetched.drained => self.buffer.extend(fetched.tasks),
            Ok(FetchedTasks {
                tasks, next_due, ..
            }) => {
                // The ready list ran out: hand out what came, then wait on the wake list
                // instead of a fetch that would find nothing (one script call per drained
                // fetch, in Redis and the worker, off a lone job's enqueue-to-completion path).
                // The wait goes alone, never pipelined with the fetch after it: on a socket
                // gone silent Redis still serves the blocked client, and a fetch queued behind
                // its wait would lease jobs nobody receives (ARCHITECTURE.md, failure model).
                self.buffer.extend(tasks);
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
            Err(FetchError::Redis(error)) => {
                let delay = self.redis_outage.failed(&error);
                self.wait = Some(Box::pin(tokio::time::sleep(delay)));
            }
            Err(FetchError::Ledger(error)) => {
                self.redis_outage.recovered();
                let delay = self.ledger_outage.failed(&*error);
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
        if let Some(summarizer) = self.summarizer.take() {
            summarizer.abort();
            Self::log_last_summary(&self.shared);
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
                        if let Some(since) = self.starved_since.take() {
                            self.shared.stats.record_fetch_wait(since.elapsed());
                        }
                        self.fetched(result);
                    }
                    // Nothing to hand out until the fetch returns.
                    Poll::Pending if self.buffer.is_empty() => {
                        self.starved_since.get_or_insert_with(Instant::now);
                        return Poll::Pending;
                    }
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
                    && let Ok(fetched) = fetch.await
                {
                    buffered.extend(fetched.tasks);
                }
                let unstarted: Vec<(String, String, bool)> = buffered
                    .iter()
                    .filter_map(|task| task.ctx().data().get::<LeaseTag>().cloned())
                    .map(|tag| {
                        shared.leases.remove(&tag.id, &tag.token);
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
                Self::log_last_summary(&shared);
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
