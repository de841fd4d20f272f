//! `upkeepctl bench`: enqueue N no-op `system.ping` jobs, drain them with a real worker, and
//! report what the peers benchmark reports (`../shared/bench/peers`), so the two can be
//! compared line by line from one run.
//!
//! Backlog mode (like the peers): enqueue everything first, then start the worker.
//! `process_per_s` is N over first start → last completion; latencies are enqueue → completion
//! per job (mostly queueing delay in backlog mode, as the peers' README explains). Live mode
//! (`--live N`): an idle worker, N single enqueues paced at `--live-rate` per second; its
//! latency is the idle pickup latency. Every run uses its own key prefix, so it never touches
//! the production queues, and deletes its keys at the end.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::future::BoxFuture;
use upkeep_shared::config::Settings;
use upkeep_shared::queue::{
    Attempt, AttemptStatus, History, Ledger, NewJob, NoLedger, Recorded, RedisConn,
};
use upkeep_shared::shutdown::Shutdown;
use upkeep_shared::telemetry::{LogFormat, TelemetrySettings};
use upkeep_shared::{JobId, QueueName};

use crate::ledger::PgLedger;
use crate::registry::{HandlerContext, Registry};
use crate::runtime::WorkerRuntime;

/// Options of `upkeepctl bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Jobs to enqueue and drain.
    #[arg(long, default_value_t = 20_000)]
    pub jobs: usize,
    /// Worker concurrency.
    #[arg(long, default_value_t = 16)]
    pub concurrency: u32,
    /// Jobs leased per fetch: the `[queues.*] batch_size` default. Short jobs are leased up to
    /// two batches ahead of the free slots.
    #[arg(long, default_value_t = 128)]
    pub batch: u32,
    /// Measure Redis alone: do not record attempts in Postgres.
    #[arg(long)]
    pub no_ledger: bool,
    /// Live mode: this many single enqueues into an idle worker, instead of a backlog.
    #[arg(long)]
    pub live: Option<usize>,
    /// Enqueues per second in live mode.
    #[arg(long, default_value_t = 100)]
    pub live_rate: u32,
    /// Give up after this long.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// Log filter of the run (to stderr, like the daemons). Defaults to `[telemetry] filter`
    /// (`info`), the level the daemons run at, so the figure is what a deployed worker does;
    /// `off` measures the queue alone. `RUST_LOG`, when set, wins as it does for the daemons.
    #[arg(long, conflicts_with = "no_logs")]
    pub log_filter: Option<String>,
    /// Same as `--log-filter off`: the queue-alone figure.
    #[arg(long)]
    pub no_logs: bool,
    /// Log line format of the run. Defaults to `json`, what the daemons write in production
    /// (`UPKEEP_LOG_FORMAT=json`).
    #[arg(long, default_value = "json", value_parser = LogFormat::parse)]
    pub log_format: LogFormat,
}

impl BenchArgs {
    /// The default filter and the format to install the subscriber with, given the loaded
    /// `[telemetry]` section.
    #[must_use]
    pub fn logging(&self, telemetry: &TelemetrySettings) -> (String, LogFormat) {
        let filter = if self.no_logs {
            "off".to_owned()
        } else {
            self.log_filter
                .clone()
                .unwrap_or_else(|| telemetry.filter.clone())
        };
        (filter, self.log_format)
    }
}

/// How the run logs, for its output line: the most verbose level the installed subscriber
/// lets through, and the format (`info/json`), or `off`.
fn logging_label(format: LogFormat) -> String {
    let level = tracing::level_filters::LevelFilter::current();
    if level == tracing::level_filters::LevelFilter::OFF {
        return "off".to_owned();
    }
    format!("{}/{}", level.to_string().to_lowercase(), format.as_str())
}

/// Runs one benchmark and prints one summary line.
///
/// # Errors
/// When Redis or Postgres cannot be reached, or the run times out.
pub async fn run(mut settings: Settings, args: BenchArgs) -> anyhow::Result<()> {
    let prefix = format!("bench-{}", &JobId::new().to_string()[24..]);
    settings.redis.key_prefix =
        upkeep_shared::config::KeyPrefix::parse(&prefix).map_err(anyhow::Error::msg)?;
    let queue_name = QueueName::parse("bench")?;
    let mut queue_settings = settings.queue(&queue_name);
    queue_settings.concurrency = args.concurrency;
    queue_settings.batch_size = args.batch;
    queue_settings.retention = Duration::from_secs(60);
    settings.queues.insert(queue_name.clone(), queue_settings);
    settings.worker.grace_period = Duration::from_secs(5);

    let n_jobs = args.live.unwrap_or(args.jobs);
    let inner: Arc<dyn Ledger> = if args.no_ledger {
        Arc::new(NoLedger)
    } else {
        let pool = upkeep_shared::store::connect_and_migrate(&settings.database).await?;
        Arc::new(PgLedger::new(pool))
    };
    let shutdown = Shutdown::new();
    let probe = Arc::new(Probe::new(inner, n_jobs, shutdown.clone()));
    let queue = settings.open_queue(&queue_name)?;
    let mut admin = RedisConn::open(&settings.redis.target())?;
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut admin)
        .await
        .unwrap_or(());

    let runtime = WorkerRuntime::build_with_ledger(
        settings.clone(),
        vec![queue_name.clone()],
        Registry::standard(&HandlerContext::connect_lazy(settings.clone())?),
        probe.clone(),
    )?;
    let ledger_label = if args.no_ledger { "off" } else { "postgres" };
    let mode;
    let enqueue_per_s;
    let started;
    let cpu_before;
    let worker;
    if let Some(n_live) = args.live {
        mode = format!(
            "live ledger={ledger_label} n={n_live} rate={}/s",
            args.live_rate
        );
        worker = tokio::spawn(runtime.run_until_stopped(shutdown.clone()));
        // Warm up: one job end to end, so the worker is idle and blocked on its wake list.
        let warm = NewJob::new("system.ping", serde_json::json!({}), 1);
        queue.enqueue(&[warm]).await?;
        probe.wait_for(1, args.timeout).await?;
        probe.reset(n_live);
        tokio::time::sleep(Duration::from_millis(500)).await;
        started = Instant::now();
        cpu_before = CpuTimes::read(&mut admin).await;
        let period = Duration::from_secs_f64(1.0 / f64::from(args.live_rate.max(1)));
        let mut ticker = tokio::time::interval(period);
        for _ in 0..n_live {
            ticker.tick().await;
            let job = NewJob::new("system.ping", serde_json::json!({}), 1);
            probe.sent(job.id);
            queue.enqueue(&[job]).await?;
        }
        enqueue_per_s = n_live as f64 / started.elapsed().as_secs_f64();
    } else {
        mode = format!("backlog ledger={ledger_label}");
        let enqueue_started = Instant::now();
        let mut n_left = n_jobs;
        while n_left > 0 {
            let n_batch = n_left.min(1000);
            let batch: Vec<NewJob> = (0..n_batch)
                .map(|_| NewJob::new("system.ping", serde_json::json!({}), 1))
                .collect();
            queue.enqueue(&batch).await?;
            n_left -= n_batch;
        }
        enqueue_per_s = n_jobs as f64 / enqueue_started.elapsed().as_secs_f64();
        started = Instant::now();
        cpu_before = CpuTimes::read(&mut admin).await;
        worker = tokio::spawn(runtime.run_until_stopped(shutdown.clone()));
    }
    let finished = probe.wait_for(n_jobs, args.timeout).await;
    let cpu = CpuTimes::read(&mut admin).await.since(&cpu_before);
    shutdown.trigger();
    worker.await.context("worker task")??;
    finished?;
    let _ = started;

    let report = probe.report();
    let commands = total_commands(&mut admin).await.unwrap_or(0);
    let rss_mb = peak_rss_kib().map_or(f64::NAN, |kib| kib as f64 / 1024.0);
    println!(
        "peer=upkeep cfg=\"{mode} logging={logging} c={c} batch={b}\" n={n_jobs} c={c} \
         enqueue_per_s={enqueue_per_s:.0} process_per_s={process:.0} p50_ms={p50:.2} \
         p99_ms={p99:.2} redis_cmds_per_job={cmds:.2} worker_peak_rss_mb={rss_mb:.1} \
         cpu_us_per_job={cpu} redis_runq_wait={runq_wait}",
        logging = logging_label(args.log_format),
        c = args.concurrency,
        b = args.batch,
        process = report.process_per_s,
        p50 = report.p50_ms,
        p99 = report.p99_ms,
        cmds = commands as f64 / n_jobs as f64,
        cpu = cpu.per_job(n_jobs),
        runq_wait = cpu.redis_runq_wait(),
    );
    cleanup(&mut admin, &prefix).await;
    Ok(())
}

/// A ledger decorator that times every completion and stops the run after the last one.
struct Probe {
    inner: Arc<dyn Ledger>,
    target: AtomicUsize,
    done: AtomicUsize,
    first_start_ms: AtomicI64,
    last_finish_ms: AtomicI64,
    latencies_ms: Mutex<Vec<f64>>,
    sent_at: Mutex<std::collections::HashMap<JobId, i64>>,
    counted: Mutex<HashSet<JobId>>,
    notify: tokio::sync::Notify,
    shutdown: Shutdown,
}

struct Report {
    process_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

impl Probe {
    fn new(inner: Arc<dyn Ledger>, target: usize, shutdown: Shutdown) -> Self {
        Self {
            inner,
            target: AtomicUsize::new(target),
            done: AtomicUsize::new(0),
            first_start_ms: AtomicI64::new(i64::MAX),
            last_finish_ms: AtomicI64::new(0),
            latencies_ms: Mutex::new(Vec::with_capacity(target)),
            sent_at: Mutex::default(),
            // Sized for the run: growing it by doubling rehashes every id counted so far.
            counted: Mutex::new(HashSet::with_capacity(target)),
            notify: tokio::sync::Notify::new(),
            shutdown,
        }
    }

    fn reset(&self, target: usize) {
        self.target.store(target, Ordering::SeqCst);
        self.done.store(0, Ordering::SeqCst);
        self.first_start_ms.store(i64::MAX, Ordering::SeqCst);
        self.last_finish_ms.store(0, Ordering::SeqCst);
        lock(&self.latencies_ms).clear();
    }

    fn sent(&self, id: JobId) {
        lock(&self.sent_at).insert(id, now_us());
    }

    async fn wait_for(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.done.load(Ordering::SeqCst) < n {
            if self.shutdown.is_triggered() && self.done.load(Ordering::SeqCst) < n {
                anyhow::bail!("stopped before every job completed");
            }
            if tokio::time::timeout_at(deadline, self.notify.notified())
                .await
                .is_err()
            {
                anyhow::bail!(
                    "timed out: {} of {n} jobs completed",
                    self.done.load(Ordering::SeqCst)
                );
            }
        }
        Ok(())
    }

    fn report(&self) -> Report {
        let mut latencies = lock(&self.latencies_ms).clone();
        latencies.sort_by(f64::total_cmp);
        let pick = |q: f64| {
            if latencies.is_empty() {
                f64::NAN
            } else {
                latencies[((latencies.len() - 1) as f64 * q).round() as usize]
            }
        };
        let span_ms = (self.last_finish_ms.load(Ordering::SeqCst)
            - self.first_start_ms.load(Ordering::SeqCst))
        .max(1) as f64;
        Report {
            process_per_s: self.done.load(Ordering::SeqCst) as f64 / (span_ms / 1000.0),
            p50_ms: pick(0.50),
            p99_ms: pick(0.99),
        }
    }
}

impl Ledger for Probe {
    fn record(
        &self,
        attempts: Vec<Attempt>,
    ) -> BoxFuture<'_, Result<Vec<Recorded>, anyhow::Error>> {
        Box::pin(async move {
            let succeeded: Vec<(JobId, i64, i64)> = attempts
                .iter()
                .filter(|a| a.status == AttemptStatus::Succeeded)
                .map(|a| (a.job_id, a.enqueued_at_ms, a.started_at_ms))
                .collect();
            let recorded = self.inner.record(attempts).await?;
            // Completion is taken after the ledger commit, like the peers take it after their
            // own completion bookkeeping.
            let now = now_us();
            let mut n_new = 0;
            // The earliest start of the batch, published once: the benchmark's bookkeeping
            // stays a small share of the worker's CPU, as the peers' drivers keep theirs.
            let mut first_start_ms = i64::MAX;
            {
                let mut counted = lock(&self.counted);
                let sent_at = lock(&self.sent_at);
                let mut latencies = lock(&self.latencies_ms);
                for (id, enqueued_ms, started_ms) in succeeded {
                    if !counted.insert(id) {
                        continue;
                    }
                    n_new += 1;
                    first_start_ms = first_start_ms.min(started_ms);
                    let from_us = sent_at.get(&id).copied().unwrap_or(enqueued_ms * 1000);
                    latencies.push((now - from_us) as f64 / 1000.0);
                }
            }
            self.first_start_ms
                .fetch_min(first_start_ms, Ordering::SeqCst);
            self.last_finish_ms.fetch_max(now / 1000, Ordering::SeqCst);
            let done = self.done.fetch_add(n_new, Ordering::SeqCst) + n_new;
            if n_new > 0 || done >= self.target.load(Ordering::SeqCst) {
                self.notify.notify_waiters();
            }
            Ok(recorded)
        })
    }

    fn history(
        &self,
        ids: Vec<JobId>,
    ) -> BoxFuture<'_, Result<HashMap<JobId, History>, anyhow::Error>> {
        self.inner.history(ids)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

async fn total_commands(conn: &mut RedisConn) -> anyhow::Result<u64> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await?;
    Ok(info
        .lines()
        .filter(|line| line.starts_with("cmdstat_"))
        .filter_map(|line| line.split("calls=").nth(1))
        .filter_map(|rest| rest.split(',').next())
        .filter_map(|n| n.parse::<u64>().ok())
        .sum())
}

/// CPU seconds used so far by this process (the worker, all threads), by the Redis server (its
/// `INFO cpu`) and by every process named `postgres` on this host (the ledger's backends, WAL
/// writer, checkpointer, autovacuum; none when Postgres runs elsewhere). The difference of two
/// readings says where a run's time went, per process, however busy the machine was.
///
/// Also how long the Redis server, when it runs on this host, was runnable but waiting for a CPU
/// (`/proc/PID/schedstat`), against the wall-clock time between the readings: on a machine
/// where the worker, Redis and Postgres share the cores, the share of the run the queue's
/// single-threaded server stood in the run queue.
#[derive(Debug, Clone, Copy)]
struct CpuTimes {
    worker: f64,
    redis: Option<f64>,
    postgres: Option<f64>,
    redis_waited: Option<f64>,
    /// Seconds on a monotonic clock (since the first reading of this process).
    wall: f64,
}

/// Linux reports process times in `/proc` in units of `USER_HZ`, which is 100 on every
/// architecture the kernel exposes to user space.
const USER_HZ: f64 = 100.0;

impl CpuTimes {
    async fn read(conn: &mut RedisConn) -> Self {
        let redis_waited = local_redis_dir(conn)
            .await
            .and_then(|dir| runq_wait_seconds(&dir));
        let redis = match redis::cmd("INFO")
            .arg("cpu")
            .query_async::<String>(conn)
            .await
        {
            Ok(info) => {
                let field = |name: &str| {
                    info.lines()
                        .find_map(|line| line.strip_prefix(name))
                        .and_then(|v| v.trim().parse::<f64>().ok())
                };
                Some(field("used_cpu_user:").unwrap_or(0.0) + field("used_cpu_sys:").unwrap_or(0.0))
            }
            Err(_) => None,
        };
        let postgres = std::fs::read_dir("/proc").ok().and_then(|entries| {
            let mut total = None;
            for entry in entries.flatten() {
                let path = entry.path();
                let is_pid = path
                    .file_name()
                    .and_then(|name| name.to_str())
                    .is_some_and(|name| name.bytes().all(|b| b.is_ascii_digit()));
                if !is_pid {
                    continue;
                }
                let is_postgres = std::fs::read_to_string(path.join("comm"))
                    .is_ok_and(|comm| comm.trim_end() == "postgres");
                if let (true, Some(seconds)) = (is_postgres, process_seconds(&path)) {
                    total = Some(total.unwrap_or(0.0) + seconds);
                }
            }
            total
        });
        Self {
            worker: process_seconds(std::path::Path::new("/proc/self")).unwrap_or(0.0),
            redis,
            postgres,
            redis_waited,
            wall: monotonic_seconds(),
        }
    }

    /// The times between `before` and this reading (`wall`: the seconds between the two).
    fn since(&self, before: &Self) -> Self {
        let diff = |after: Option<f64>, before: Option<f64>| Some(after? - before?);
        Self {
            worker: self.worker - before.worker,
            redis: diff(self.redis, before.redis),
            postgres: diff(self.postgres, before.postgres),
            redis_waited: diff(self.redis_waited, before.redis_waited),
            wall: self.wall - before.wall,
        }
    }

    /// `31%`: the share of the run the Redis server was runnable but not running; `n/a` when
    /// it does not run on this host.
    fn redis_runq_wait(&self) -> String {
        match self.redis_waited {
            Some(waited) if self.wall > 0.0 => format!("{:.0}%", 100.0 * waited / self.wall),
            _ => "n/a".to_owned(),
        }
    }

    /// `worker:12.3,redis:20.1,postgres:30.4`, in microseconds per job.
    fn per_job(&self, n_jobs: usize) -> String {
        let us = |seconds: f64| format!("{:.1}", seconds * 1e6 / n_jobs.max(1) as f64);
        let mut parts = vec![format!("worker:{}", us(self.worker))];
        if let Some(redis) = self.redis {
            parts.push(format!("redis:{}", us(redis)));
        }
        if let Some(postgres) = self.postgres {
            parts.push(format!("postgres:{}", us(postgres)));
        }
        parts.join(",")
    }
}

/// Seconds since the first call, on a monotonic clock.
fn monotonic_seconds() -> f64 {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_secs_f64()
}

/// The `/proc` directory of the Redis server behind `conn`, when it runs on this host: the
/// `process_id` of its `INFO server`, if that process here is a `redis-server`.
async fn local_redis_dir(conn: &mut RedisConn) -> Option<std::path::PathBuf> {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(conn)
        .await
        .ok()?;
    let pid: u32 = info
        .lines()
        .find_map(|line| line.strip_prefix("process_id:"))?
        .trim()
        .parse()
        .ok()?;
    let dir = std::path::PathBuf::from(format!("/proc/{pid}"));
    let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
    comm.trim_end().starts_with("redis-server").then_some(dir)
}

/// Seconds a process has spent runnable but waiting for a CPU, from `<proc dir>/schedstat`
/// (run time, run-queue wait, time slices; nanoseconds).
fn runq_wait_seconds(proc_dir: &std::path::Path) -> Option<f64> {
    let schedstat = std::fs::read_to_string(proc_dir.join("schedstat")).ok()?;
    let waited_ns: u64 = schedstat.split_whitespace().nth(1)?.parse().ok()?;
    Some(waited_ns as f64 / 1e9)
}

/// User plus system CPU seconds of a process, from `<proc dir>/stat`.
fn process_seconds(proc_dir: &std::path::Path) -> Option<f64> {
    let stat = std::fs::read_to_string(proc_dir.join("stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it start past its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 past the name.
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kib| kib.parse().ok())
}

async fn cleanup(conn: &mut RedisConn, prefix: &str) {
    let mut cursor: u64 = 0;
    loop {
        let reply: redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await;
        let Ok((next, keys)) = reply else { return };
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("UNLINK").arg(&keys).query_async(conn).await;
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_seconds_reads_the_cpu_this_process_spent() {
        // Arrange: a command name with a space and a parenthesis, as `/proc/<pid>/stat` may
        // hold one: the fields are counted from the last ')'.
        let dir = std::env::temp_dir().join(format!("upkeep-stat-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fields_after_name = "S 1 1 1 0 -1 0 0 0 0 0 250 50 0 0 20 0 1 0";
        std::fs::write(dir.join("stat"), format!("42 (a b) c) {fields_after_name}")).unwrap();

        // Act
        let parsed = process_seconds(&dir);
        let own_before = process_seconds(std::path::Path::new("/proc/self")).unwrap();
        let started = Instant::now();
        let mut own_after = own_before;
        while own_after - own_before < 0.02 && started.elapsed() < Duration::from_secs(10) {
            let mut spin = 0_u64;
            for _ in 0..1_000_000 {
                spin = spin.wrapping_add(std::hint::black_box(1));
            }
            std::hint::black_box(spin);
            own_after = process_seconds(std::path::Path::new("/proc/self")).unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();

        // Assert: utime 250 + stime 50 ticks of 1/100 s.
        assert_eq!(parsed, Some(3.0));
        assert!(
            own_after - own_before >= 0.02,
            "spinning shows in /proc/self/stat: {own_before} -> {own_after}"
        );
    }

    #[test]
    fn runq_wait_seconds_reads_the_time_a_thread_waited_for_a_cpu() {
        // Arrange: a schedstat line (run ns, wait ns, slices), a garbled one, and more
        // spinning threads than this machine has CPUs, so some of them must wait.
        let dir = std::env::temp_dir().join(format!("upkeep-schedstat-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("good")).unwrap();
        std::fs::create_dir_all(dir.join("bad")).unwrap();
        std::fs::write(dir.join("good/schedstat"), "123456789 2500000000 42\n").unwrap();
        std::fs::write(dir.join("bad/schedstat"), "123456789\n").unwrap();
        let n_threads = std::thread::available_parallelism().map_or(2, usize::from) + 2;

        // Act
        let good = runq_wait_seconds(&dir.join("good"));
        let bad = runq_wait_seconds(&dir.join("bad"));
        let missing = runq_wait_seconds(&dir.join("missing"));
        let waits: Vec<f64> = (0..n_threads)
            .map(|_| {
                std::thread::spawn(|| {
                    let me = std::path::Path::new("/proc/thread-self");
                    let before = runq_wait_seconds(me).unwrap();
                    let started = Instant::now();
                    let mut spin = 0_u64;
                    while started.elapsed() < Duration::from_millis(300) {
                        spin = spin.wrapping_add(std::hint::black_box(1));
                    }
                    std::hint::black_box(spin);
                    runq_wait_seconds(me).unwrap() - before
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|thread| thread.join().unwrap())
            .collect();
        std::fs::remove_dir_all(&dir).unwrap();

        // Assert
        assert_eq!((good, bad, missing), (Some(2.5), None, None));
        assert!(
            waits.iter().all(|waited| *waited >= 0.0) && waits.iter().sum::<f64>() > 0.0,
            "{n_threads} spinning threads on fewer CPUs waited: {waits:?}"
        );
    }
}
