//! The scheduler benchmark (`upkeep-scheduler-bench`): N schedules firing every minute,
//! spread over the minute with jitter, run by one real [`Scheduler`] for a while; reports
//! the scheduler's CPU and the due time → enqueue lag of every tick.
//!
//! Everything happens in scratch space: a database of its own (created on the server of
//! `DATABASE_URL`, dropped at the end unless `--keep`) and a Redis key prefix of its own
//! (deleted at the end). No worker runs; the jobs only accumulate in the scratch queue.
//!
//! Lags are measured from each tick's due time (its fire time plus the schedule's jitter
//! offset) to `schedule_ticks.claimed_at` (the claim) and `enqueued_at` (confirmed after
//! the Redis enqueue, so an upper bound of the enqueue lag). Both are Postgres `now()` on the
//! same machine as the scheduler.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use upkeep_shared::config::{KeyPrefix, ScheduleSettings, Settings};
use upkeep_shared::schedule::{CatchUp, CronExpr, Overlap, ScheduleSpec};
use upkeep_shared::shutdown::Shutdown;
use upkeep_shared::{JobId, JobKind, QueueName};

use crate::Scheduler;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// How many schedules.
    pub n_schedules: usize,
    /// Their cron expression (default: every minute at second 0).
    pub cron: String,
    /// The jitter spreading them (default 60 s: over the whole minute).
    pub jitter: Duration,
    /// How long the scheduler runs.
    pub duration: Duration,
    /// Keep the scratch database for inspection.
    pub keep: bool,
    /// Start the scheduler at this second of a minute (0–59), to measure a start early or late
    /// in a minute; `None` starts it at once.
    pub start_second: Option<u32>,
}

/// The figures of one run.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// Schedules configured.
    pub n_schedules: usize,
    /// Reconciling them into an empty table.
    pub reconcile: Duration,
    /// When the scheduler was started: the measured window runs from here.
    pub started_at: DateTime<Utc>,
    /// What became of the ticks due inside the window.
    pub counts: TickCounts,
    /// Due → claim lag percentiles (p50, p99, max), seconds.
    pub claim_lag: (f64, f64, f64),
    /// Due → enqueue confirmed lag percentiles (p50, p99, max), seconds.
    pub enqueue_lag: (f64, f64, f64),
    /// Scheduler CPU time (user + system) over the run, seconds.
    pub cpu_seconds: f64,
    /// Wall time of the run, seconds.
    pub wall_seconds: f64,
}

impl std::fmt::Display for BenchReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = |s: f64| s * 1000.0;
        write!(
            f,
            "schedules={} reconcile_ms={:.0} started_at={} ticks_expected={} ticks_enqueued={} \
             ticks_other_decision={} ticks_without_row={} claim_lag_ms p50={:.1} p99={:.1} max={:.1} \
             enqueue_lag_ms p50={:.1} p99={:.1} max={:.1} \
             cpu_s={:.2} wall_s={:.1} cpu_pct={:.1}",
            self.n_schedules,
            ms(self.reconcile.as_secs_f64()),
            self.started_at.format("%H:%M:%S%.3f"),
            self.counts.expected,
            self.counts.enqueued,
            self.counts.other_decision,
            self.counts.without_row(),
            ms(self.claim_lag.0),
            ms(self.claim_lag.1),
            ms(self.claim_lag.2),
            ms(self.enqueue_lag.0),
            ms(self.enqueue_lag.1),
            ms(self.enqueue_lag.2),
            self.cpu_seconds,
            self.wall_seconds,
            100.0 * self.cpu_seconds / self.wall_seconds.max(f64::EPSILON),
        )
    }
}

/// The ticks due inside the measured window (from the scheduler's start to shortly before it
/// stops), by what the ledger says of them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickCounts {
    /// Ticks due inside the window.
    pub expected: usize,
    /// Of those, ticks with a `schedule_ticks` row, whatever its decision.
    pub with_row: usize,
    /// Of those, ticks recorded `enqueued` and confirmed with a job.
    pub enqueued: usize,
    /// Ticks with a row of another decision (`missed`, an unconfirmed claim, ...).
    pub other_decision: usize,
}

impl TickCounts {
    /// Ticks due inside the window that have no row at all: lost without a trace.
    #[must_use]
    pub fn without_row(&self) -> usize {
        self.expected - self.with_row
    }
}

/// Runs the benchmark against the server of `settings.database` and `settings.redis`.
///
/// # Errors
/// When Postgres or Redis cannot be reached, or the options are invalid.
pub async fn run(mut settings: Settings, options: BenchOptions) -> anyhow::Result<BenchReport> {
    let id = &JobId::new().to_string()[24..];
    let prefix = format!("bench-sched-{id}");
    settings.redis.key_prefix = KeyPrefix::parse(&prefix).map_err(anyhow::Error::msg)?;
    let db_name = format!("upkeep_bench_{id}");
    let admin_options = settings.database.connect_options()?;
    let mut admin = sqlx::ConnectOptions::connect(&admin_options.clone().database("postgres"))
        .await
        .context("connecting to the postgres database to create a scratch one")?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        r#"CREATE DATABASE "{db_name}""#
    )))
    .execute(&mut admin)
    .await
    .context("creating the scratch database")?;
    let result = run_in(&mut settings, &options, &db_name, &admin_options).await;
    if !options.keep {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            r#"DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)"#
        )))
        .execute(&mut admin)
        .await
        .context("dropping the scratch database")?;
    } else {
        eprintln!("kept scratch database {db_name}");
    }
    delete_prefix(&settings, &prefix).await;
    result
}

async fn run_in(
    settings: &mut Settings,
    options: &BenchOptions,
    db_name: &str,
    admin_options: &sqlx::postgres::PgConnectOptions,
) -> anyhow::Result<BenchReport> {
    let scratch = admin_options.clone().database(db_name);
    let pool = settings
        .database
        .pool_options()
        .max_connections(4)
        .connect_with(scratch)
        .await
        .context("connecting to the scratch database")?;
    upkeep_shared::MIGRATOR.run(&pool).await?;
    let cron = CronExpr::parse(&options.cron)?;
    let kind = JobKind::parse_runnable("system.ping")?;
    let queue = QueueName::parse("reports")?;
    settings.schedules = (0..options.n_schedules)
        .map(|idx| ScheduleSettings {
            name: format!("bench-{idx:05}"),
            cron: cron.clone(),
            timezone: chrono_tz::Tz::UTC,
            kind,
            args: serde_json::json!({}),
            queue: queue.clone(),
            catch_up: CatchUp::Skip,
            catch_up_window: Duration::from_secs(3600),
            catch_up_max: 1,
            overlap: Overlap::Allow,
            jitter: options.jitter,
            enabled: true,
            ping_url: None,
        })
        .collect();
    settings.database.migrate_on_start = false;

    let started = Instant::now();
    let plan = upkeep_shared::store::schedules::reconcile(&pool, &settings.schedules).await?;
    let reconcile = started.elapsed();
    anyhow::ensure!(
        plan.added.len() == options.n_schedules,
        "reconcile added every schedule"
    );

    let conn = upkeep_shared::queue::RedisConn::open(&settings.redis.target())?;
    let scheduler = Scheduler::with_parts(
        settings.clone(),
        pool.clone(),
        conn,
        std::sync::Arc::new(upkeep_shared::schedule::SystemClock),
    );
    if let Some(second) = options.start_second {
        anyhow::ensure!(
            second < 60,
            "--start-second {second} is not a second of a minute (0-59)"
        );
        let now = Utc::now();
        let into_minute = now.timestamp_millis().rem_euclid(60_000);
        let target = i64::from(second) * 1000;
        let wait_ms = (target - into_minute).rem_euclid(60_000);
        tokio::time::sleep(Duration::from_millis(wait_ms.unsigned_abs())).await;
    }
    let shutdown = Shutdown::new();
    let cpu_before = cpu_time();
    let wall = Instant::now();
    // Every tick due from the moment the scheduler starts counts, whatever the second of the
    // minute: a user restarting a scheduler expects exactly those ticks to be enqueued.
    let window_start = Utc::now();
    let task = tokio::spawn(scheduler.run_until_stopped(shutdown.clone()));
    tokio::time::sleep(options.duration).await;
    // Ticks due in the last moments may still be in flight when the scheduler is stopped.
    let window_end = Utc::now() - chrono::TimeDelta::seconds(2);
    shutdown.trigger();
    task.await.context("scheduler task")??;
    let cpu_seconds = (cpu_time() - cpu_before).as_secs_f64();
    let wall_seconds = wall.elapsed().as_secs_f64();

    let mut expected: HashMap<(String, DateTime<Utc>), DateTime<Utc>> = HashMap::new();
    for s in &settings.schedules {
        let spec = ScheduleSpec::new(&s.name, s.cron.clone(), s.timezone, s.jitter);
        let mut cursor = window_start - chrono::TimeDelta::hours(2);
        while let Some(tick) = spec.next_tick_after(cursor) {
            if tick.due_at > window_end {
                break;
            }
            if tick.due_at >= window_start {
                expected.insert((s.name.clone(), tick.fire_at), tick.due_at);
            }
            cursor = tick.fire_at;
        }
    }
    let rows: Vec<TickTimes> = sqlx::query_as(
        "SELECT schedule, fire_at, decision, claimed_at, enqueued_at FROM schedule_ticks",
    )
    .fetch_all(&pool)
    .await?;
    pool.close().await;
    let mut counts = TickCounts {
        expected: expected.len(),
        ..TickCounts::default()
    };
    let mut claim_lags = Vec::new();
    let mut enqueue_lags = Vec::new();
    for (schedule, fire_at, decision, claimed_at, enqueued_at) in rows {
        let Some(&due_at) = expected.get(&(schedule, fire_at)) else {
            continue;
        };
        counts.with_row += 1;
        let seconds = |at: DateTime<Utc>| (at - due_at).as_seconds_f64();
        match enqueued_at {
            Some(enqueued_at) if decision == "enqueued" => {
                counts.enqueued += 1;
                claim_lags.push(seconds(claimed_at));
                enqueue_lags.push(seconds(enqueued_at));
            }
            _ => counts.other_decision += 1,
        }
    }
    Ok(BenchReport {
        n_schedules: options.n_schedules,
        reconcile,
        started_at: window_start,
        counts,
        claim_lag: percentiles(&mut claim_lags),
        enqueue_lag: percentiles(&mut enqueue_lags),
        cpu_seconds,
        wall_seconds,
    })
}

/// A tick's schedule, fire time, decision, claim time and enqueue confirmation time.
type TickTimes = (
    String,
    DateTime<Utc>,
    String,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);

/// (p50, p99, max) of `values`; zeros when empty.
fn percentiles(values: &mut [f64]) -> (f64, f64, f64) {
    if values.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99), values[values.len() - 1])
}

/// This process's CPU time (user + system), from `/proc/self/stat`; zero when unreadable.
fn cpu_time() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th
    // fields of the line, in clock ticks (100 per second on Linux).
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |idx: usize| {
        fields
            .get(idx)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

async fn delete_prefix(settings: &Settings, prefix: &str) {
    let Ok(client) = settings.redis.client() else {
        return;
    };
    let Ok(mut connection) = client.get_multiplexed_async_connection().await else {
        return;
    };
    let mut cursor: u64 = 0;
    loop {
        let reply: redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut connection)
            .await;
        let Ok((next, keys)) = reply else { return };
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("UNLINK")
                .arg(&keys)
                .query_async(&mut connection)
                .await;
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
    fn percentiles_pick_the_median_the_99th_and_the_largest() {
        let mut values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentiles(&mut values), (51.0, 99.0, 100.0));
        assert_eq!(percentiles(&mut []), (0.0, 0.0, 0.0));
    }

    #[test]
    fn this_process_has_used_some_cpu() {
        let mut x = 0_u64;
        for i in 0..20_000_000_u64 {
            x = x.wrapping_add(i * i);
        }
        assert!(x > 0);
        assert!(cpu_time() > Duration::ZERO);
    }
}
