//! What every queue test needs: queues on a given Redis, real apalis-core workers on the
//! [`RedisBackend`], a ledger that remembers attempts, polling with a deadline, raw Redis
//! commands, and a lock that keeps heavy and timing-sensitive tests from overlapping.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use apalis::prelude::{WorkerBuilder, WorkerContext, WorkerError};
use futures::future::BoxFuture;
use tower::limit::ConcurrencyLimitLayer;
use upkeep_shared::queue::{
    Attempt, AttemptStatus, ConsumerOptions, History, LeaseBook, Ledger, NewJob, Queue,
    QueueOptions, QueueStats, Recorded, RedisBackend, RedisConn, RedisTarget,
};
use upkeep_shared::{Job, JobError, JobId, Outcome, QueueName};

/// The kind every test job has; the backend does not look at kinds beyond policies.
pub(crate) const KIND: &str = "test.noop";

/// Heavy tests (tens of thousands of jobs, private servers, restarts) and tests that measure
/// latency take this lock, so that on a 2-core machine one never skews the other's timings.
static EXCLUSIVE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits for the machine to be ours alone (among the queue tests).
pub(crate) async fn exclusive() -> tokio::sync::MutexGuard<'static, ()> {
    EXCLUSIVE.lock().await
}

/// A queue named `name` under `prefix` on the standalone Redis at `url`.
pub(crate) fn queue_at(url: &str, prefix: &str, name: &str, options: QueueOptions) -> Queue {
    queue_on(&RedisTarget::standalone(url), prefix, name, options)
}

/// A queue named `name` under `prefix` on `target` (standalone or cluster).
pub(crate) fn queue_on(
    target: &RedisTarget,
    prefix: &str,
    name: &str,
    options: QueueOptions,
) -> Queue {
    let conn = RedisConn::open(target).expect("the redis URL parses");
    let name = QueueName::parse(name).expect("a valid queue name");
    Queue::new(conn, prefix, name, options)
}

/// A queue `q` under a fresh prefix on the shared Redis (`REDIS_URL`).
pub(crate) fn shared_queue(options: QueueOptions) -> (Queue, RedisTarget) {
    let url = upkeep_tests::shared_redis_url();
    let queue = queue_at(&url, &upkeep_tests::unique_prefix(), "q", options);
    (queue, RedisTarget::standalone(url))
}

/// `ack.lua`'s keys in the order the client passes them, for tests that call the script itself.
pub(crate) fn ack_keys(queue: &Queue) -> [&String; 10] {
    let keys = queue.keys();
    [
        &keys.leases,
        &keys.retry,
        &keys.dead,
        &keys.stats,
        &keys.wake,
        &keys.tokens,
        &keys.holders,
        &keys.attempts,
        &keys.done,
        &keys.ready,
    ]
}

/// `n` jobs to run now, each allowed `max_attempts` attempts.
pub(crate) fn jobs(n: usize, max_attempts: u32) -> Vec<NewJob> {
    (0..n)
        .map(|i| NewJob::new(KIND, serde_json::json!({ "i": i }), max_attempts))
        .collect()
}

/// Wall-clock unix milliseconds (the backend's `started_at`/`finished_at` clock).
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_millis() as i64
}

/// One copy in `upkeep_tests`; re-exported so the tests keep importing from here.
pub(crate) use upkeep_tests::eventually;

/// The queue's stats; panics on a Redis error.
pub(crate) async fn stats(queue: &Queue) -> QueueStats {
    queue.stats().await.expect("stats")
}

/// One monotonic counter of the stats (0 when it was never incremented).
pub(crate) fn total(stats: &QueueStats, counter: &str) -> u64 {
    stats.totals.get(counter).copied().unwrap_or(0)
}

/// Waits until the queue's `succeeded` counter reaches `n`; returns the stats at that point.
pub(crate) async fn wait_for_succeeded(queue: &Queue, n: u64, timeout: Duration) -> QueueStats {
    let what = format!("{n} succeeded jobs on queue {}", queue.name());
    eventually(&what, timeout, || async {
        let stats = queue.stats().await.ok()?;
        (total(&stats, "succeeded") >= n).then_some(stats)
    })
    .await
}

/// Runs one raw command on the queue's own connection.
pub(crate) async fn raw<T: redis::FromRedisValue>(queue: &Queue, cmd: &redis::Cmd) -> T {
    cmd.query_async(&mut queue.conn())
        .await
        .unwrap_or_else(|error| panic!("raw redis command failed: {error}"))
}

/// Redis's own clock, unix ms (the clock leases and due times are measured with).
pub(crate) async fn redis_now_ms(queue: &Queue) -> i64 {
    let (secs, micros): (i64, i64) = raw(queue, &redis::cmd("TIME")).await;
    secs * 1000 + micros / 1000
}

/// A field of `INFO <section>` as text.
pub(crate) async fn info_field(queue: &Queue, section: &str, field: &str) -> String {
    let info: String = raw(queue, redis::cmd("INFO").arg(section)).await;
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("INFO {section} has no field {field}"))
        .trim()
        .to_owned()
}

/// When `worker` last fetched, by Redis's clock: every fetch stamps the `workers` zset.
pub(crate) async fn last_fetch_ms(queue: &Queue, worker: &TestWorker) -> Option<i64> {
    raw(
        queue,
        redis::cmd("ZSCORE")
            .arg(&queue.keys().workers)
            .arg(worker.id()),
    )
    .await
}

/// Returns right after an idle `worker` fetched again and found nothing, i.e. as it starts a
/// new idle wait (up to its `idle_wait_max`): the least favourable moment for something new to
/// become due, because only a wake-up can cut that wait short.
pub(crate) async fn catch_the_start_of_an_idle_wait(queue: &Queue, worker: &TestWorker) {
    let first = eventually("the worker's first fetch", Duration::from_secs(5), || {
        last_fetch_ms(queue, worker)
    })
    .await;
    eventually(
        "the worker's next idle fetch",
        Duration::from_secs(5),
        || async { (last_fetch_ms(queue, worker).await? > first).then_some(()) },
    )
    .await;
}

/// A ledger that keeps its rows in memory with the Postgres ledger's rules: one row per
/// `(job, attempt)`, a row is never overwritten, a replayed attempt number's result is
/// stored under the next free number (unless it is a second success), and `record` returns the
/// row that stands for each attempt.
#[derive(Debug, Default)]
pub(crate) struct TestLedger {
    /// Every row written (inserted, completed or renumbered), in writing order.
    attempts: Mutex<Vec<Attempt>>,
    rows: Mutex<HashMap<(JobId, u32), Attempt>>,
    /// While set, `history` fails as an unreachable Postgres would.
    failing_reads: AtomicBool,
    /// Every job id `history` was asked about, in asking order.
    asked: Mutex<Vec<JobId>>,
}

impl TestLedger {
    /// Every row written so far, in writing order.
    pub(crate) fn attempts(&self) -> Vec<Attempt> {
        self.attempts.lock().expect("ledger lock").clone()
    }

    /// The rows written for one job, in writing order.
    pub(crate) fn attempts_of(&self, id: JobId) -> Vec<Attempt> {
        self.attempts()
            .into_iter()
            .filter(|attempt| attempt.job_id == id)
            .collect()
    }

    /// The rows of one job as they stand now, by attempt number.
    pub(crate) fn rows_of(&self, id: JobId) -> Vec<Attempt> {
        let mut rows: Vec<Attempt> = self
            .rows
            .lock()
            .expect("ledger lock")
            .values()
            .filter(|row| row.job_id == id)
            .cloned()
            .collect();
        rows.sort_by_key(|row| row.attempt);
        rows
    }

    /// Puts a row in as if an earlier execution had committed it.
    pub(crate) fn insert(&self, attempt: Attempt) {
        self.rows
            .lock()
            .expect("ledger lock")
            .insert((attempt.job_id, attempt.attempt), attempt.clone());
        self.attempts.lock().expect("ledger lock").push(attempt);
    }

    /// Every job id `history` was asked about so far, in asking order.
    pub(crate) fn asked(&self) -> Vec<JobId> {
        self.asked.lock().expect("ledger lock").clone()
    }

    /// Makes `history` fail (`true`) or answer again (`false`).
    pub(crate) fn fail_reads(&self, failing: bool) {
        self.failing_reads.store(failing, Ordering::SeqCst);
    }

    fn record_one(&self, attempt: Attempt) -> Recorded {
        let mut rows = self.rows.lock().expect("ledger lock");
        let key = (attempt.job_id, attempt.attempt);
        let Some(row) = rows.get(&key).cloned() else {
            rows.insert(key, attempt.clone());
            self.attempts
                .lock()
                .expect("ledger lock")
                .push(attempt.clone());
            return Recorded::as_given(&attempt);
        };
        // Every row is final (the queue writes no `running` rows); an `abandoned` one is a
        // takeover's verdict, so a late result of that attempt is dropped, not renumbered.
        let replayed = row.status != AttemptStatus::Abandoned
            && matches!(
                attempt.status,
                AttemptStatus::Succeeded | AttemptStatus::Failed
            )
            && (row.worker != attempt.worker || row.started_at_ms != attempt.started_at_ms);
        let success = rows
            .values()
            .filter(|other| {
                other.job_id == attempt.job_id && other.status == AttemptStatus::Succeeded
            })
            .min_by_key(|other| other.attempt)
            .cloned();
        if attempt.status == AttemptStatus::Succeeded
            && let Some(success) = success
        {
            return Recorded::as_given(&success);
        }
        if replayed {
            let last = rows
                .keys()
                .filter(|(job_id, _)| *job_id == attempt.job_id)
                .map(|(_, number)| *number)
                .max()
                .unwrap_or(0);
            let mut renumbered = attempt;
            renumbered.attempt = last + 1;
            rows.insert((renumbered.job_id, renumbered.attempt), renumbered.clone());
            self.attempts
                .lock()
                .expect("ledger lock")
                .push(renumbered.clone());
            return Recorded::as_given(&renumbered);
        }
        Recorded::as_given(&row)
    }
}

impl Ledger for TestLedger {
    fn record(
        &self,
        attempts: Vec<Attempt>,
    ) -> BoxFuture<'_, Result<Vec<Recorded>, anyhow::Error>> {
        let recorded = attempts
            .into_iter()
            .map(|attempt| self.record_one(attempt))
            .collect();
        Box::pin(async { Ok(recorded) })
    }

    fn history(
        &self,
        ids: Vec<JobId>,
    ) -> BoxFuture<'_, Result<HashMap<JobId, History>, anyhow::Error>> {
        self.asked
            .lock()
            .expect("ledger lock")
            .extend(ids.iter().copied());
        if self.failing_reads.load(Ordering::SeqCst) {
            return Box::pin(async { Err(anyhow::anyhow!("the test ledger refuses reads")) });
        }
        let mut histories: HashMap<JobId, History> = HashMap::new();
        for row in self.rows.lock().expect("ledger lock").values() {
            if !ids.contains(&row.job_id) {
                continue;
            }
            let history = histories.entry(row.job_id).or_default();
            history.succeeded |= row.status == AttemptStatus::Succeeded;
            history.last_attempt = history.last_attempt.max(row.attempt);
        }
        Box::pin(async move { Ok(histories) })
    }
}

/// How often the handler was called, per job: shared by a test and its handler.
#[derive(Debug, Default)]
pub(crate) struct Calls {
    per_job: Mutex<HashMap<JobId, u32>>,
    total: AtomicU64,
}

impl Calls {
    /// Counts one call of the handler for `job`; returns how many calls that job has had.
    pub(crate) fn record(&self, job: &Job) -> u32 {
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut per_job = self.per_job.lock().expect("calls lock");
        let count = per_job.entry(job.id).or_default();
        *count += 1;
        *count
    }

    /// Calls of the handler for `id`.
    pub(crate) fn of(&self, id: JobId) -> u32 {
        self.per_job
            .lock()
            .expect("calls lock")
            .get(&id)
            .copied()
            .unwrap_or(0)
    }

    /// Calls of the handler for every job.
    pub(crate) fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// How many distinct jobs the handler saw.
    pub(crate) fn distinct(&self) -> usize {
        self.per_job.lock().expect("calls lock").len()
    }

    /// The jobs the handler saw more than once, with their call counts.
    pub(crate) fn repeated(&self) -> Vec<(JobId, u32)> {
        self.per_job
            .lock()
            .expect("calls lock")
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(id, n)| (*id, *n))
            .collect()
    }
}

/// A job handler as the tests write them.
pub(crate) type Handler =
    Arc<dyn Fn(Job) -> BoxFuture<'static, Result<Outcome, JobError>> + Send + Sync>;

/// Boxes an `async` closure into a [`Handler`].
pub(crate) fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(Job) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Outcome, JobError>> + Send + 'static,
{
    Arc::new(move |job| Box::pin(f(job)))
}

/// A handler that counts its calls in `calls` and succeeds.
pub(crate) fn counting(calls: Arc<Calls>) -> Handler {
    handler(move |job: Job| {
        calls.record(&job);
        async { Ok(Outcome::default()) }
    })
}

/// Consumer options for a test worker: a unique id, `concurrency`, and a batch size to match.
pub(crate) fn consumer(name: &str, concurrency: usize) -> ConsumerOptions {
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let mut options = ConsumerOptions::new(format!("{name}-{suffix}"), concurrency);
    options.batch_size = concurrency.min(256);
    options
}

/// The backend's protocol counters, read at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counters {
    /// Acks refused because the fencing token was stale.
    pub(crate) refused_acks: u64,
    /// Leases the renewer found lost.
    pub(crate) lost_leases: u64,
    /// Attempts settled.
    pub(crate) settled: u64,
}

/// A real apalis-core worker running on a [`RedisBackend`] in a task of the test's runtime.
pub(crate) struct TestWorker {
    context: WorkerContext,
    worker_id: String,
    join: Option<tokio::task::JoinHandle<Result<(), WorkerError>>>,
    counters: Box<dyn Fn() -> Counters + Send + Sync>,
}

impl TestWorker {
    /// Builds the worker as the worker binaries do (backend, concurrency limit, handler) and
    /// spawns `worker.run()`.
    pub(crate) fn start(
        queue: Queue,
        target: &RedisTarget,
        options: ConsumerOptions,
        ledger: Arc<dyn Ledger>,
        handler: Handler,
    ) -> Self {
        let concurrency = options.concurrency;
        let worker_id = options.worker_id.clone();
        let blocking = RedisConn::open_blocking(target).expect("the redis URL parses");
        let backend = RedisBackend::new(
            queue,
            blocking,
            options,
            ledger,
            Arc::new(LeaseBook::default()),
            Default::default(),
        );
        let shared_counters = backend.counters();
        let counters = Box::new(move || Counters {
            refused_acks: shared_counters.refused_acks.load(Ordering::Relaxed),
            lost_leases: shared_counters.lost_leases.load(Ordering::Relaxed),
            settled: shared_counters.settled.load(Ordering::Relaxed),
        });
        let context = WorkerContext::new(&worker_id);
        let service = move |job: Job| handler(job);
        let worker = WorkerBuilder::new(&context)
            .backend(backend)
            .layer(ConcurrencyLimitLayer::new(concurrency))
            .build(service);
        let join = tokio::spawn(worker.run());
        Self {
            context,
            worker_id,
            join: Some(join),
            counters,
        }
    }

    /// The worker id it leases jobs under.
    pub(crate) fn id(&self) -> &str {
        &self.worker_id
    }

    /// The backend's counters now.
    pub(crate) fn counters(&self) -> Counters {
        (self.counters)()
    }

    /// Whether the worker future has ended (it never should before `stop`).
    pub(crate) fn has_ended(&self) -> bool {
        self.join.as_ref().is_none_or(|join| join.is_finished())
    }

    /// Stops the worker gracefully and checks that it ended without an error.
    ///
    /// # Panics
    /// When the worker had already ended, does not stop within 30 s, or ends with an error.
    pub(crate) async fn stop(mut self) {
        assert!(
            !self.has_ended(),
            "worker {} ended before it was told to stop",
            self.worker_id
        );
        let context = self.context.clone();
        eventually("the worker to be running", Duration::from_secs(10), || {
            let running = context.is_running();
            async move { running.then_some(()) }
        })
        .await;
        self.context.stop().expect("stopping a running worker");
        let join = self.join.take().expect("joined once");
        let result = tokio::time::timeout(Duration::from_secs(30), join)
            .await
            .expect("the worker stops within 30 s of being told to")
            .expect("the worker task did not panic");
        if let Err(error) = result {
            panic!("worker {} ended with an error: {error}", self.worker_id);
        }
    }
}

impl Drop for TestWorker {
    fn drop(&mut self) {
        if let Some(join) = self.join.take() {
            join.abort();
        }
    }
}
