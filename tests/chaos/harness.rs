//! What every chaos scenario shares: a [`Cluster`] (a private Redis with an append-only file,
//! a private Postgres cluster, optionally a TCP proxy between the workers and Redis, and two
//! or more real `upkeep-worker-reports` processes), the job mix, the wait for the drain, and
//! the final comparison of the enqueued ids with the ledger ([`Verdict`]).

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};
use tempfile::TempDir;
use upkeep_shared::QueueName;
use upkeep_shared::queue::keys::QueueKeys;
use upkeep_tests::{
    AppendFsync, ChildProcess, PrivatePostgres, PrivateRedis, RedisOptions, TcpProxy, cargo_bin,
};
use uuid::Uuid;

/// The queue `system.ping` runs on by default, served by `upkeep-worker-reports`.
pub(crate) const QUEUE: &str = "reports";
const WORKER_BINARY: &str = "upkeep-worker-reports";
const PREFIX: &str = "chaos";

/// How many jobs each scenario runs: `UPKEEP_CHAOS_JOBS`, default 1000 (the CI profile; the
/// full profile is 10000).
pub(crate) fn n_jobs() -> usize {
    match std::env::var("UPKEEP_CHAOS_JOBS") {
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("UPKEEP_CHAOS_JOBS must be a number, got {text:?}")),
        Err(_) => 1000,
    }
}

/// How a scenario's cluster is set up.
#[derive(Debug, Clone)]
pub(crate) struct ClusterOptions {
    pub(crate) n_workers: usize,
    /// Put a [`TcpProxy`] between the workers and Redis (the test itself talks to Redis
    /// directly).
    pub(crate) proxy: bool,
    /// The `upkeep.toml` every process reads; defaults to [`CONFIG`].
    pub(crate) config: String,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        Self {
            n_workers: 2,
            proxy: false,
            config: CONFIG.to_owned(),
        }
    }
}

/// The config every worker of a scenario reads. A 4 s lease brings a killed worker's jobs
/// back quickly and is shorter than the 5 s partition; ten attempts keep faults from sending
/// a job to the dead letters; a 2 s grace period is shorter than the longest jobs, so a
/// SIGTERM leaves some attempts to release.
pub(crate) const CONFIG: &str = r#"
[queues.reports]
concurrency = 4
lease = "4s"
max_attempts = 10
backoff_base = "100ms"
backoff_max = "1s"

[worker]
grace_period = "2s"

[redis]
response_timeout = "2s"

[database]
connect_timeout = "2s"
"#;

/// One scenario's private installation.
pub(crate) struct Cluster {
    /// Worker processes by slot; `None` while a slot is down.
    pub(crate) workers: Vec<Option<ChildProcess>>,
    /// Workers that were stopped, kept for their logs.
    retired: Vec<ChildProcess>,
    pub(crate) proxy: Option<TcpProxy>,
    pub(crate) redis: PrivateRedis,
    pub(crate) postgres: PrivatePostgres,
    /// Holds `upkeep.toml`.
    dir: TempDir,
    n_starts: usize,
}

impl Cluster {
    /// Starts Redis (AOF, fsync every second), Postgres, the proxy if asked, migrates the
    /// ledger and starts the workers.
    pub(crate) fn start(options: &ClusterOptions) -> Self {
        let redis = PrivateRedis::start_with(
            RedisOptions::default()
                .appendonly(true)
                .appendfsync(AppendFsync::EverySec),
        )
        .expect("private redis starts");
        let postgres = PrivatePostgres::start().expect("private postgres starts");
        let proxy = options
            .proxy
            .then(|| TcpProxy::start(([127, 0, 0, 1], redis.port()).into()).expect("proxy starts"));
        let dir = tempfile::Builder::new()
            .prefix("upkeep-chaos-")
            .tempdir()
            .expect("creating a temporary directory");
        std::fs::write(dir.path().join("upkeep.toml"), &options.config)
            .expect("writing upkeep.toml");
        let mut cluster = Self {
            workers: Vec::new(),
            retired: Vec::new(),
            proxy,
            redis,
            postgres,
            dir,
            n_starts: 0,
        };
        cluster.ctl(&["migrate"]);
        for slot in 0..options.n_workers {
            cluster.workers.push(None);
            cluster.start_worker(slot);
        }
        for slot in 0..options.n_workers {
            cluster.wait_until_serving(slot);
        }
        cluster
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("upkeep.toml")
    }

    /// A command for a workspace binary with this cluster's environment; workers reach Redis
    /// through the proxy when there is one.
    fn command(&self, binary: &str, through_proxy: bool) -> Command {
        let mut command = Command::new(cargo_bin(binary));
        for (key, _) in std::env::vars_os() {
            if key
                .to_str()
                .is_some_and(|key| key.starts_with("UPKEEP") || key == "RUST_LOG")
            {
                command.env_remove(&key);
            }
        }
        let redis_url = match (&self.proxy, through_proxy) {
            (Some(proxy), true) => proxy.redis_url(),
            _ => self.redis.url(),
        };
        command
            .env("DATABASE_URL", self.postgres.url())
            .env("REDIS_URL", redis_url)
            .env("UPKEEP_CONFIG", self.config_path())
            .env("UPKEEP__REDIS__KEY_PREFIX", PREFIX)
            .env("UPKEEP_LOG_FORMAT", "json");
        command
    }

    /// Runs `upkeepctl ARGS` to completion (at most 60 s), failing the test unless it
    /// succeeds; returns its stdout.
    pub(crate) fn ctl(&self, args: &[&str]) -> String {
        let output = self
            .command("upkeepctl", false)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running upkeepctl");
        assert!(
            output.status.success(),
            "upkeepctl {args:?} failed ({})\nstdout:\n{}\nstderr:\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Starts a worker process in `slot` (which must be empty).
    pub(crate) fn start_worker(&mut self, slot: usize) {
        assert!(self.workers[slot].is_none(), "worker slot {slot} is taken");
        self.n_starts += 1;
        let label = format!("worker{slot}-{}", self.n_starts);
        let command = self.command(WORKER_BINARY, true);
        let process = ChildProcess::spawn(&label, command)
            .unwrap_or_else(|e| panic!("starting {label}: {e:#}"));
        self.workers[slot] = Some(process);
    }

    fn wait_until_serving(&mut self, slot: usize) {
        let process = self.workers[slot].as_mut().expect("worker is running");
        assert!(
            process.wait_for_log("worker starting", Duration::from_secs(30)),
            "worker {slot} did not start"
        );
    }

    /// `kill -9` of the worker in `slot`.
    pub(crate) fn kill9_worker(&mut self, slot: usize) {
        if let Some(mut process) = self.workers[slot].take() {
            process.kill9().expect("killing a worker");
            self.retired.push(process);
        }
    }

    /// SIGTERM to the workers in `slots` at once, then waits for each to exit (grace period
    /// plus release); a worker that does not exit in 30 s fails the test.
    pub(crate) fn sigterm_workers(&mut self, slots: &[usize]) {
        for slot in slots {
            if let Some(process) = self.workers[*slot].as_mut() {
                process.sigterm().expect("sending SIGTERM");
            }
        }
        for slot in slots {
            if let Some(mut process) = self.workers[*slot].take() {
                let status = process.wait_timeout(Duration::from_secs(30));
                assert!(
                    status.is_some(),
                    "worker {slot} did not exit within 30 s of SIGTERM"
                );
                self.retired.push(process);
            }
        }
    }

    /// Enqueues the scenario's job mix with `upkeepctl enqueue --count` and returns what was
    /// enqueued; see [`Mix`].
    pub(crate) fn enqueue_mix(&self, n_jobs: usize) -> Enqueued {
        let mut enqueued = Enqueued::default();
        // Four rounds, so every kind of job is spread over the whole run.
        let n_rounds = 4;
        let n_regular = n_jobs.saturating_sub(Mix::N_LONG_PER_ROUND * n_rounds);
        let mut counts: Vec<usize> = Mix::SHARES
            .iter()
            .map(|(_, percent, _)| n_regular * percent / 100)
            .collect();
        // The first kind takes the rounding remainder, so the total is exactly `n_jobs`.
        counts[0] += n_regular - counts.iter().sum::<usize>();
        for round in 0..n_rounds {
            for ((args, _, fails_once), total) in Mix::SHARES.iter().zip(&counts) {
                let n = total / n_rounds + usize::from(round < total % n_rounds);
                if n > 0 {
                    enqueued.add(self.enqueue(args, n), *fails_once);
                }
            }
            // A few long jobs per round, whatever the size: they span the faults.
            enqueued.add(self.enqueue(Mix::LONG, Mix::N_LONG_PER_ROUND), false);
        }
        assert_eq!(
            enqueued.all.len(),
            enqueued.ids_in_order.len(),
            "job ids are unique"
        );
        enqueued
    }

    pub(crate) fn enqueue(&self, args: &str, count: usize) -> Vec<Uuid> {
        let count = count.to_string();
        upkeep_tests::printed_job_ids(&self.ctl(&[
            "enqueue",
            "system.ping",
            "--args",
            args,
            "--count",
            &count,
        ]))
    }

    /// The key names of the queue (the cluster's prefix).
    pub(crate) fn keys(&self) -> QueueKeys {
        QueueKeys::new(PREFIX, &QueueName::parse(QUEUE).expect("valid queue name"))
    }

    /// A connection to the private Redis, for raw commands.
    pub(crate) fn redis_connection(&self) -> redis::Connection {
        self.redis
            .client()
            .get_connection_with_timeout(Duration::from_secs(2))
            .expect("connecting to the private redis")
    }

    /// `upkeepctl enqueue system.ping --args ARGS`: the job id.
    pub(crate) fn enqueue_one(&self, args: &str) -> Uuid {
        self.enqueue(args, 1)[0]
    }

    /// Every run of `job_id` as (attempt, status, next_state, error), oldest first.
    pub(crate) async fn runs_of(&self, job_id: Uuid) -> Vec<RunSummary> {
        sqlx::query_as(
            "SELECT attempt, status, next_state, error FROM job_runs WHERE job_id = $1 \
             ORDER BY attempt",
        )
        .bind(job_id)
        .fetch_all(&mut self.ledger().await)
        .await
        .expect("reading job_runs")
    }

    /// Waits until `job_id` has a run that `matches`; returns all its runs. Fails after
    /// `timeout`.
    pub(crate) async fn wait_for_run(
        &self,
        job_id: Uuid,
        timeout: Duration,
        matches: impl Fn(&RunSummary) -> bool,
    ) -> Vec<RunSummary> {
        let deadline = Instant::now() + timeout;
        loop {
            let runs = self.runs_of(job_id).await;
            if runs.iter().any(&matches) {
                return runs;
            }
            assert!(
                Instant::now() < deadline,
                "job {job_id}: no matching run within {timeout:?}; runs: {runs:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// How many distinct jobs have a succeeded run, or `None` while Postgres is unreachable.
    pub(crate) async fn n_succeeded(&self) -> Option<usize> {
        let mut ledger = self.try_ledger().await?;
        let n: i64 = sqlx::query_scalar(
            "SELECT count(DISTINCT job_id) FROM job_runs WHERE status = 'succeeded'",
        )
        .fetch_one(&mut ledger)
        .await
        .ok()?;
        Some(usize::try_from(n).unwrap_or(0))
    }

    /// Waits (failing the test after `timeout`) until `n` jobs have a succeeded run.
    pub(crate) async fn wait_for_progress(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if self.n_succeeded().await.is_some_and(|done| done >= n) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "fewer than {n} jobs succeeded within {timeout:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn try_ledger(&self) -> Option<PgConnection> {
        tokio::time::timeout(
            Duration::from_secs(3),
            PgConnection::connect(&self.postgres.url()),
        )
        .await
        .ok()?
        .ok()
    }

    /// A connection to the ledger.
    pub(crate) async fn ledger(&self) -> PgConnection {
        upkeep_tests::connect_ledger(&self.postgres.url()).await
    }

    /// Jobs still in flight in Redis (ready, delayed, retrying or leased), or `None` while
    /// Redis is unreachable.
    pub(crate) fn n_unsettled(&self) -> Option<u64> {
        let keys = QueueKeys::new(PREFIX, &QueueName::parse(QUEUE).expect("valid queue name"));
        let mut connection = self
            .redis
            .client()
            .get_connection_with_timeout(Duration::from_secs(1))
            .ok()?;
        let (ready, delayed, retry, leases): (u64, u64, u64, u64) = redis::pipe()
            .cmd("LLEN")
            .arg(&keys.ready)
            .cmd("ZCARD")
            .arg(&keys.delayed)
            .cmd("ZCARD")
            .arg(&keys.retry)
            .cmd("ZCARD")
            .arg(&keys.leases)
            .query(&mut connection)
            .ok()?;
        Some(ready + delayed + retry + leases)
    }

    /// Waits until every enqueued job has a succeeded run and Redis holds nothing in flight;
    /// returns the ledger then. Fails the test after `timeout`, naming what is missing.
    pub(crate) async fn wait_for_drain(&self, enqueued: &Enqueued, timeout: Duration) -> Ledger {
        let deadline = Instant::now() + timeout;
        loop {
            let done = self.n_succeeded().await.unwrap_or(0) >= enqueued.all.len();
            if done && self.n_unsettled() == Some(0) {
                return Ledger::read(&mut self.ledger().await).await;
            }
            if Instant::now() >= deadline {
                let ledger = Ledger::read(&mut self.ledger().await).await;
                let verdict = Verdict::judge(enqueued, &ledger);
                panic!(
                    "not drained within {timeout:?}: {} in flight in Redis; {verdict:?}",
                    self.n_unsettled()
                        .map_or_else(|| "unknown".to_owned(), |n| n.to_string()),
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// How many log entries of all workers so far (including exited ones still held) have
    /// `message`.
    pub(crate) fn count_worker_logs(&self, message: &str) -> usize {
        self.workers
            .iter()
            .flatten()
            .chain(&self.retired)
            .map(|process| {
                process
                    .log()
                    .lines()
                    .filter(|line| line.contains(message))
                    .count()
            })
            .sum()
    }
}

/// (attempt, status, next_state, error) of one run.
pub(crate) type RunSummary = (i32, String, Option<String>, Option<String>);

/// The job mix: what share of the jobs gets which `system.ping` args.
pub(crate) struct Mix;

impl Mix {
    /// (args, share in percent, whether the job fails its first attempt)
    const SHARES: &'static [(&'static str, usize, bool)] = &[
        ("{}", 50, false),
        (r#"{"sleep_ms":100}"#, 30, false),
        (r#"{"fail_attempts":1}"#, 10, true),
        (r#"{"sleep_ms":400}"#, 10, false),
    ];
    /// Jobs longer than the lease and the grace period, two per round.
    const LONG: &'static str = r#"{"sleep_ms":6000}"#;
    const N_LONG_PER_ROUND: usize = 2;
}

/// The ids a scenario enqueued.
#[derive(Debug, Default)]
pub(crate) struct Enqueued {
    pub(crate) all: HashSet<Uuid>,
    pub(crate) ids_in_order: Vec<Uuid>,
    /// Jobs that fail their first attempt on purpose.
    pub(crate) fail_once: HashSet<Uuid>,
}

impl Enqueued {
    fn add(&mut self, ids: Vec<Uuid>, fails_once: bool) {
        for id in ids {
            self.all.insert(id);
            self.ids_in_order.push(id);
            if fails_once {
                self.fail_once.insert(id);
            }
        }
    }
}

/// Every row of `job_runs`, by job.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    /// job id → (attempt, status) in attempt order.
    pub(crate) runs: BTreeMap<Uuid, Vec<(i32, String)>>,
}

impl Ledger {
    pub(crate) async fn read(ledger: &mut PgConnection) -> Self {
        let rows: Vec<(Uuid, i32, String)> =
            sqlx::query_as("SELECT job_id, attempt, status FROM job_runs ORDER BY job_id, attempt")
                .fetch_all(ledger)
                .await
                .expect("reading job_runs");
        let mut runs: BTreeMap<Uuid, Vec<(i32, String)>> = BTreeMap::new();
        for (job_id, attempt, status) in rows {
            runs.entry(job_id).or_default().push((attempt, status));
        }
        Self { runs }
    }
}

/// The end of a scenario: the enqueued ids against the ledger.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Verdict {
    pub(crate) n_jobs: usize,
    /// Enqueued jobs without a succeeded run.
    pub(crate) lost: Vec<Uuid>,
    /// Jobs with more than one succeeded run.
    pub(crate) double_completed: Vec<Uuid>,
    /// Runs of jobs nobody enqueued.
    pub(crate) strangers: Vec<Uuid>,
    /// Jobs whose attempts are not exactly 1..=n, or whose runs after the success are not
    /// all `skipped`/`abandoned` redeliveries, or whose runs before it are not failures.
    pub(crate) unaccounted: Vec<Uuid>,
    /// Attempts beyond the ones the job mix asked for (a planned failure is not one).
    pub(crate) redeliveries: usize,
}

impl Verdict {
    pub(crate) fn judge(enqueued: &Enqueued, ledger: &Ledger) -> Self {
        let mut verdict = Self {
            n_jobs: enqueued.all.len(),
            ..Self::default()
        };
        for id in &enqueued.ids_in_order {
            let Some(runs) = ledger.runs.get(id) else {
                verdict.lost.push(*id);
                continue;
            };
            let n_succeeded = runs.iter().filter(|(_, s)| s == "succeeded").count();
            match n_succeeded {
                0 => verdict.lost.push(*id),
                1 => {}
                _ => verdict.double_completed.push(*id),
            }
            let contiguous = runs
                .iter()
                .enumerate()
                .all(|(idx, (attempt, _))| usize::try_from(*attempt).ok() == Some(idx + 1));
            let success_at = runs.iter().position(|(_, s)| s == "succeeded");
            let well_ordered = success_at.is_none_or(|at| {
                runs[..at]
                    .iter()
                    .all(|(_, s)| s == "failed" || s == "abandoned")
                    && runs[at + 1..]
                        .iter()
                        .all(|(_, s)| s == "skipped" || s == "abandoned")
            });
            if !contiguous || !well_ordered {
                verdict.unaccounted.push(*id);
            }
            let planned = if enqueued.fail_once.contains(id) {
                2
            } else {
                1
            };
            verdict.redeliveries += runs.len().saturating_sub(planned);
        }
        verdict.strangers = ledger
            .runs
            .keys()
            .filter(|id| !enqueued.all.contains(id))
            .copied()
            .collect();
        verdict
    }

    /// The scenario's one line of output.
    pub(crate) fn line(&self, scenario: &str, drain: Duration, extra: &str) -> String {
        format!(
            "chaos scenario={scenario} jobs={} lost={} double_completed={} redeliveries={} \
             unaccounted={} drain={:.1}s{extra}",
            self.n_jobs,
            self.lost.len(),
            self.double_completed.len(),
            self.redeliveries,
            self.unaccounted.len(),
            drain.as_secs_f64(),
        )
    }

    /// Fails the test unless nothing was lost, nothing completed twice, and every attempt is
    /// accounted for.
    pub(crate) fn assert_clean(&self, ledger: &Ledger) {
        let show = |ids: &[Uuid]| -> String {
            ids.iter()
                .take(5)
                .map(|id| format!("{id}: {:?}", ledger.runs.get(id)))
                .collect::<Vec<_>>()
                .join("\n")
        };
        assert!(
            self.lost.is_empty(),
            "{} jobs lost, e.g.\n{}",
            self.lost.len(),
            show(&self.lost)
        );
        assert!(
            self.double_completed.is_empty(),
            "{} jobs completed twice, e.g.\n{}",
            self.double_completed.len(),
            show(&self.double_completed)
        );
        assert!(
            self.strangers.is_empty(),
            "runs of jobs nobody enqueued: {:?}",
            self.strangers
        );
        assert!(
            self.unaccounted.is_empty(),
            "{} jobs with attempts unaccounted for, e.g.\n{}",
            self.unaccounted.len(),
            show(&self.unaccounted)
        );
    }
}

/// A generous drain deadline for `n_jobs` jobs on two workers of concurrency 4.
pub(crate) fn drain_timeout(n_jobs: usize) -> Duration {
    Duration::from_secs(90) + Duration::from_millis(30 * n_jobs as u64)
}

/// Prints the scenario's line (to stdout and to the shared report file, so a full run leaves
/// every line in one place: `target/chaos-report.txt`).
pub(crate) fn report(line: &str) {
    println!("{line}");
    let path = cargo_bin_dir().join("../chaos-report.txt");
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        use std::io::Write as _;
        let _ = writeln!(file, "unix={} {line}", upkeep_tests::unix_now() as u64);
    }
}

fn cargo_bin_dir() -> PathBuf {
    cargo_bin("upkeepctl")
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}
