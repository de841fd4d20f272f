//! The worker runtime: one apalis-core worker per queue, under one `Monitor`, until shutdown.
//!
//! Start-up connects lazily (a worker starts even while Redis or Postgres is down, and says so
//! once), applies migrations when configured, and registers a worker per queue with a unique
//! identity. On SIGTERM/SIGINT the workers stop fetching, in-flight jobs get the grace period
//! to finish, fetched-but-unstarted jobs are released at once, and whatever still runs when
//! the grace period ends is released back to the queue and recorded as `abandoned`.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use apalis::prelude::{Monitor, WorkerBuilder};
use sqlx::PgPool;
use tower::limit::ConcurrencyLimitLayer;
use upkeep_shared::QueueName;
use upkeep_shared::alerts::Alerter;
use upkeep_shared::config::{ReconcileAction, Settings};
use upkeep_shared::daemons::Daemon;
use upkeep_shared::outage::Outage;
use upkeep_shared::queue::{
    ConsumerOptions, KindPolicy, LeaseBook, Ledger, RedisBackend, RedisConn, release_leftovers,
};
use upkeep_shared::reconcile;
use upkeep_shared::shutdown::Shutdown;
use upkeep_shared::store::{partitions, ticks};

use crate::ledger::PgLedger;
use crate::registry::{HandlerContext, Registry, dispatch};

/// A built, not yet running, set of workers.
pub struct WorkerRuntime {
    settings: Settings,
    queues: Vec<QueueName>,
    registry: Arc<Registry>,
    ledger: Arc<dyn Ledger>,
    /// The ledger's pool, for the reconciliation pass; `None` with a ledger of the caller's
    /// choice (the benchmark), which has nothing to reconcile.
    pool: Option<PgPool>,
    conn: RedisConn,
    identity: String,
}

impl std::fmt::Debug for WorkerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerRuntime")
            .field("queues", &self.queues)
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl WorkerRuntime {
    /// Prepares workers for `queues`, recording attempts in the configured Postgres.
    ///
    /// # Errors
    /// When a URL is malformed. Unreachable services are not errors: the loops wait for them.
    pub async fn build(
        settings: Settings,
        queues: Vec<QueueName>,
        registry: Registry,
    ) -> anyhow::Result<Self> {
        let pool = settings
            .database
            .connect_lazy()
            .context("building the Postgres pool")?;
        Self::build_with_pool(settings, queues, registry, pool).await
    }

    /// Like [`WorkerRuntime::build`], over a pool the caller already made (the one its
    /// handlers' [`crate::HandlerContext`] shares).
    ///
    /// # Errors
    /// When the Redis URL is malformed.
    pub async fn build_with_pool(
        settings: Settings,
        queues: Vec<QueueName>,
        registry: Registry,
        pool: PgPool,
    ) -> anyhow::Result<Self> {
        if settings.database.migrate_on_start {
            migrate_with_retry(&pool).await;
        }
        let ledger: Arc<dyn Ledger> = Arc::new(PgLedger::new(pool.clone()));
        let mut runtime = Self::build_with_ledger(settings, queues, registry, ledger)?;
        runtime.pool = Some(pool);
        Ok(runtime)
    }

    /// Like [`WorkerRuntime::build`], with a ledger of the caller's choice (the queue benchmark
    /// uses `NoLedger` to measure Redis alone).
    ///
    /// # Errors
    /// When the Redis URL is malformed.
    pub fn build_with_ledger(
        settings: Settings,
        queues: Vec<QueueName>,
        registry: Registry,
        ledger: Arc<dyn Ledger>,
    ) -> anyhow::Result<Self> {
        let conn =
            RedisConn::open(&settings.redis.target()).context("opening the Redis connection")?;
        let identity = settings
            .worker
            .identity
            .clone()
            .unwrap_or_else(default_identity);
        Ok(Self {
            settings,
            queues,
            registry: Arc::new(registry),
            ledger,
            pool: None,
            conn,
            identity,
        })
    }

    /// This process's identity, the suffix of every worker id.
    #[must_use]
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The queues served, comma-separated, for status lines.
    #[must_use]
    pub fn queues_label(&self) -> String {
        let names: Vec<&str> = self.queues.iter().map(QueueName::as_str).collect();
        names.join(",")
    }

    /// Runs every worker until `shutdown` fires, then shuts down gracefully.
    ///
    /// # Errors
    /// When the monitor fails to run.
    pub async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        // Advice only, and slow while Redis is away: a stop meanwhile ends the run at once.
        tokio::select! {
            checked = upkeep_shared::queue::check_eviction_policy(&self.conn) => checked.log(),
            () = shutdown.wait() => {}
        }
        if shutdown.is_triggered() {
            return Ok(());
        }
        let reconciler = self.pool.clone().and_then(|pool| {
            (self.settings.maintenance.reconcile_action != ReconcileAction::Off).then(|| {
                tokio::spawn(
                    Reconciler::new(
                        pool,
                        self.conn.clone(),
                        self.settings.clone(),
                        self.queues.clone(),
                    )
                    .run_until_stopped(),
                )
            })
        });
        let pruner = self.pool.clone().map(|pool| {
            tokio::spawn(
                Pruner::new(
                    pool,
                    self.settings.maintenance.ledger_retention,
                    self.settings.maintenance.ledger_prune_interval,
                )
                .run_until_stopped(),
            )
        });
        let alerter = self.pool.clone().and_then(|pool| {
            Alerter::spawn_if_needed(pool, self.conn.clone(), &self.settings, &self.identity)
        });
        let grace = self.settings.worker.grace_period;
        let mut monitor = Monitor::new().shutdown_timeout(grace);
        let mut books = Vec::new();
        for queue_name in &self.queues {
            let queue = self.settings.queue_on(self.conn.clone(), queue_name);
            let blocking = RedisConn::open_blocking(&self.settings.redis.target())
                .context("opening the blocking Redis connection")?;
            let options = self.consumer_options(queue_name);
            let worker_id = options.worker_id.clone();
            let concurrency = options.concurrency;
            let leases = Arc::new(LeaseBook::default());
            books.push((queue.clone(), leases.clone(), worker_id.clone()));
            let ledger = self.ledger.clone();
            let registry = self.registry.clone();
            tracing::info!(queue = %queue_name, worker_id = %worker_id, concurrency, "worker starting");
            monitor = monitor.register(move |restarts| {
                let backend = RedisBackend::new(
                    queue.clone(),
                    blocking.clone(),
                    options.clone(),
                    ledger.clone(),
                    leases.clone(),
                    Arc::default(),
                );
                WorkerBuilder::new(format!("{worker_id}-r{restarts}"))
                    .backend(backend)
                    .layer(ConcurrencyLimitLayer::new(concurrency))
                    .data(registry.clone())
                    .build(dispatch)
            });
        }
        let signal = {
            let shutdown = shutdown.clone();
            async move {
                shutdown.wait().await;
                Ok(())
            }
        };
        let result = monitor.run_with_signal(signal).await;
        for task in [reconciler, pruner, alerter].into_iter().flatten() {
            task.abort();
        }
        for (queue, leases, worker_id) in books {
            release_leftovers(
                &queue,
                &leases,
                &worker_id,
                self.ledger.as_ref(),
                Duration::from_secs(5),
            )
            .await;
        }
        result.context("running the workers")?;
        tracing::info!("workers stopped");
        Ok(())
    }

    fn consumer_options(&self, queue: &QueueName) -> ConsumerOptions {
        let queue_settings = self.settings.queue(queue);
        let mut options = ConsumerOptions::new(
            format!("{queue}@{}", self.identity),
            queue_settings.concurrency as usize,
        );
        options.batch_size = queue_settings.batch_size as usize;
        options.slow_attempt = queue_settings.slow_attempt;
        options.summary_interval = queue_settings.summary_interval;
        options.default_policy = KindPolicy {
            timeout: queue_settings.timeout,
            backoff_base: queue_settings.backoff_base,
            backoff_max: queue_settings.backoff_max,
        };
        for spec in upkeep_shared::job::CATALOG {
            let policy = self.settings.job_policy(queue, spec.name);
            options.kinds.insert(
                spec.name.to_owned(),
                KindPolicy {
                    timeout: policy.timeout,
                    backoff_base: policy.backoff_base,
                    backoff_max: policy.backoff_max,
                },
            );
        }
        options
    }
}

/// The periodic reconciliation of the queues this process serves (see
/// `upkeep_shared::reconcile`). It runs in the workers rather than the scheduler because a
/// queue worth reconciling is one that has consumers: every deployment runs workers for its
/// queues, not every one runs the scheduler, and a restored job is only useful where a worker
/// will take it. Replicas may run it concurrently: `restore.lua` restores a job once, and the
/// ledger writes are idempotent.
#[derive(Debug, Clone)]
pub struct Reconciler {
    pool: PgPool,
    conn: RedisConn,
    settings: Settings,
    options: reconcile::Options,
}

impl Reconciler {
    /// A reconciler of `queues` with the `[maintenance]` settings.
    #[must_use]
    pub fn new(pool: PgPool, conn: RedisConn, settings: Settings, queues: Vec<QueueName>) -> Self {
        let mut options = reconcile::Options::from_settings(&settings);
        options.queues = Some(queues);
        Self {
            pool,
            conn,
            settings,
            options,
        }
    }

    /// One pass: compares the ledger with Redis and restores or records the lost jobs.
    ///
    /// # Errors
    /// When Postgres or Redis fails; nothing half-done is left (each step is idempotent).
    pub async fn run_once(&self) -> anyhow::Result<reconcile::Report> {
        let report =
            reconcile::reconcile_once(&self.pool, &self.conn, &self.settings, &self.options)
                .await?;
        if !report.lost.is_empty() {
            tracing::info!(
                n_examined = report.n_examined,
                n_lost = report.lost.len(),
                action = self.settings.maintenance.reconcile_action.as_str(),
                "reconciliation found jobs lost from redis"
            );
        }
        Ok(report)
    }

    /// Runs a pass every `maintenance.reconcile_interval` (jittered ±10% so replicas spread
    /// out) until the task is aborted; a failing pass is an outage, retried with backoff up
    /// to the interval.
    pub async fn run_until_stopped(self) {
        let interval = self.settings.maintenance.reconcile_interval;
        let mut outage = Outage::new("postgres/redis", "reconcile").with_max_delay(interval);
        let mut delay = jittered(interval);
        loop {
            tokio::time::sleep(delay).await;
            delay = match self.run_once().await {
                Ok(_) => {
                    outage.recovered();
                    jittered(interval)
                }
                Err(error) => outage.failed(&*error),
            };
        }
    }
}

/// The ledger's maintenance and retention: creates the monthly partitions of `job_runs` and
/// `findings` ahead (current month and the next two), drops whole months older than
/// `retention` (never one holding a running row; see `store::partitions`), deletes the
/// default partition's old runs and old schedule ticks in bounded batches. Several worker
/// processes may prune at once; partition changes are serialised by an advisory lock.
#[derive(Debug, Clone)]
pub struct Pruner {
    pool: PgPool,
    retention: Duration,
    interval: Duration,
}

impl Pruner {
    /// Rows deleted per statement.
    const BATCH: i64 = 5_000;

    /// A pruner keeping `retention` of history, pruning every `interval`.
    #[must_use]
    pub fn new(pool: PgPool, retention: Duration, interval: Duration) -> Self {
        Self {
            pool,
            retention,
            interval,
        }
    }

    /// One pass; returns how many runs (months dropped count as their rows are not counted:
    /// only default-partition rows are) and ticks it deleted.
    ///
    /// # Errors
    /// When Postgres fails; months and batches already dropped stay dropped.
    pub async fn run_once(&self) -> anyhow::Result<(u64, u64)> {
        let now = chrono::Utc::now();
        let created = partitions::ensure_ahead(&self.pool, now).await?;
        if !created.is_empty() {
            tracing::info!(?created, "created ledger partitions");
        }
        let cutoff =
            now - chrono::TimeDelta::from_std(self.retention).unwrap_or(chrono::TimeDelta::MAX);
        let report = partitions::prune(&self.pool, cutoff, Self::BATCH).await?;
        for (month, reason) in &report.skipped {
            tracing::warn!(%month, reason, %cutoff, "kept a ledger month past the retention");
        }
        let n_runs = report.default_rows_deleted;
        let n_ticks = ticks::delete_ticks_older_than(&self.pool, cutoff, Self::BATCH).await?;
        upkeep_shared::logs::retention::prune(&self.pool, cutoff).await?;
        if n_runs + n_ticks > 0 || !report.dropped.is_empty() {
            tracing::info!(n_runs, n_ticks, dropped = ?report.dropped, %cutoff, "pruned the ledger");
        }
        Ok((n_runs, n_ticks))
    }

    /// Runs a pass every `interval` (jittered ±10%) until the task is aborted; a failing pass
    /// is an outage, retried with backoff up to the interval.
    pub async fn run_until_stopped(self) {
        let mut outage = Outage::new("postgres", "prune the ledger").with_max_delay(self.interval);
        // The first pass comes soon after start, so a fresh deployment has its months ahead.
        let mut delay = jittered(self.interval.min(Duration::from_secs(5)));
        loop {
            tokio::time::sleep(delay).await;
            delay = match self.run_once().await {
                Ok(_) => {
                    outage.recovered();
                    jittered(self.interval)
                }
                Err(error) => outage.failed(&*error),
            };
        }
    }
}

/// `interval` give or take 10%, so replicas spread out.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(rand::random_range(0.9..=1.1))
}

async fn migrate_with_retry(pool: &PgPool) {
    let mut outage = Outage::new("postgres", "apply migrations");
    loop {
        match upkeep_shared::MIGRATOR.run(pool).await {
            Ok(()) => {
                outage.recovered();
                tracing::info!("migrations applied");
                return;
            }
            Err(error) => {
                let delay = outage.failed(&error);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// `hostname-pid-xxxx`: unique per process and per restart, so a restarted worker never
/// inherits the identity (and thus the leases) of its previous life.
fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "host".to_owned());
    let nonce: u16 = rand::random();
    format!("{host}-{}-{nonce:04x}", std::process::id())
}

/// The whole life of a worker daemon serving `queues` (see `upkeep_shared::daemons::Daemon`):
/// arguments, config, the wait for Redis, Postgres and the schema, `READY=1`, the workers until
/// SIGTERM/SIGINT, and the exit code. The four worker binaries are one call to this.
pub async fn run_daemon(service: &'static str, queues: &[&str]) -> std::process::ExitCode {
    let summary = format!("The worker daemon of the {} queue.", queues.join(", "));
    let daemon = match Daemon::start(service, &summary).await {
        Ok(daemon) => daemon,
        Err(code) => return code,
    };
    // Before the build: with migrate_on_start it waits for Postgres, and the start-up
    // timeout must count that wait too.
    daemon.ready(format!("serving {}", queues.join(",")));
    let result = async {
        let queues = queues
            .iter()
            .map(|q| QueueName::parse(q))
            .collect::<Result<Vec<_>, _>>()?;
        let settings = upkeep_shared::disk::discover_redis_dir(daemon.settings().clone()).await;
        let ctx =
            HandlerContext::connect_lazy(settings.clone()).context("building the Postgres pool")?;
        let registry = Registry::standard(&ctx);
        // A stop (SIGTERM, or the start-up timeout giving up on Redis) also ends a build that is
        // still waiting for its dependencies.
        let stopped = daemon.shutdown();
        let runtime = tokio::select! {
            built = WorkerRuntime::build_with_pool(settings, queues, registry, ctx.db) => built?,
            () = stopped.wait() => return Ok(()),
        };
        tracing::info!(identity = runtime.identity(), queues = %runtime.queues_label(), "workers built");
        runtime.run_until_stopped(daemon.shutdown()).await
    }
    .await;
    daemon.finish(result)
}
