//! upkeep-scheduler: turns cron schedules into jobs, exactly once per tick, with any number of
//! replicas and no leader.
//!
//! Every replica computes the same ticks from the same config. Postgres is the arbiter:
//! `schedule_ticks` has `UNIQUE (schedule, fire_at)`, and only the replica whose insert wins a
//! tick enqueues it, with the idempotency key `tick:<schedule>:<fire_at ms>`. The row is then
//! confirmed with the job id. A claimed tick that stays unconfirmed (its claimer died between
//! the insert and the enqueue) is enqueued again by any replica after `confirm_timeout`; the
//! idempotency key makes that second enqueue a no-op if the first one did reach Redis.
//!
//! At start the scheduler reconciles the `schedules` table with the config and plans catch-up
//! for each schedule from the last tick the ledger knows (see `schedule::plan_catch_up`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use upkeep_shared::config::{ScheduleSettings, Settings};
use upkeep_shared::queue::{NewJob, Queue, RedisConn};
use upkeep_shared::schedule::{
    Clock, Overlap, ScheduleSpec, SystemClock, TickDecision, plan_catch_up,
};
use upkeep_shared::shutdown::Shutdown;
use upkeep_shared::store::{schedules, ticks};
use upkeep_shared::{JobId, QueueName};

/// One configured schedule with everything needed to fire it.
struct Entry {
    settings: ScheduleSettings,
    spec: ScheduleSpec,
    queue: Queue,
    max_attempts: u32,
    /// The newest nominal fire time this replica has handled (claimed or seen claimed).
    cursor: DateTime<Utc>,
}

/// A built scheduler, ready to run.
pub struct Scheduler {
    settings: Settings,
    pool: PgPool,
    conn: RedisConn,
    clock: Arc<dyn Clock>,
    identity: String,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// Prepares a scheduler over the configured Postgres and Redis.
    ///
    /// # Errors
    /// When a URL is malformed. Unreachable services are waited for in `run_until_stopped`.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let pool = settings
            .database
            .connect_lazy()
            .context("building the Postgres pool")?;
        let conn = RedisConn::open(&settings.redis.target()).context("opening Redis")?;
        Ok(Self::with_parts(
            settings,
            pool,
            conn,
            Arc::new(SystemClock),
        ))
    }

    /// A scheduler over given resources and clock (tests inject a manual clock).
    #[must_use]
    pub fn with_parts(
        settings: Settings,
        pool: PgPool,
        conn: RedisConn,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let identity = format!(
            "scheduler@{}-{}",
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .unwrap_or_else(|_| "host".to_owned()),
            std::process::id()
        );
        Self {
            settings,
            pool,
            conn,
            clock,
            identity,
        }
    }

    /// Runs until `shutdown` fires. Outages of Postgres or Redis are logged once and waited
    /// out; the scheduler never stops on its own.
    ///
    /// # Errors
    /// Only for broken configuration found at start.
    pub async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        if self.settings.database.migrate_on_start {
            self.retry_until_ok(&shutdown, "apply migrations", || async {
                upkeep_shared::MIGRATOR
                    .run(&self.pool)
                    .await
                    .map_err(anyhow::Error::from)
            })
            .await;
        }
        let configured: Vec<ScheduleSettings> = self.settings.schedules.clone();
        let plan = self
            .retry_until_ok(&shutdown, "reconcile schedules", || async {
                schedules::reconcile(&self.pool, &configured)
                    .await
                    .map_err(anyhow::Error::from)
            })
            .await;
        let Some(plan) = plan else { return Ok(()) };
        tracing::info!(
            added = ?plan.added, changed = ?plan.changed, removed = ?plan.removed,
            n_schedules = configured.len(), "schedules reconciled with the config"
        );
        let mut entries = Vec::new();
        for schedule in configured.iter().filter(|s| s.enabled) {
            entries.push(self.entry(schedule)?);
        }
        for entry in &mut entries {
            let mut retry = Retry::new("catch up");
            while let Err(error) = self.catch_up(entry).await {
                if !retry.wait(&shutdown, &error).await {
                    return Ok(());
                }
            }
            retry.done();
        }
        let mut ticker = tokio::time::interval(self.settings.scheduler.tick_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        let mut paused: HashMap<String, bool> = HashMap::new();
        let mut last_pause_read = None::<tokio::time::Instant>;
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                () = shutdown.wait() => break,
            }
            if last_pause_read
                .is_none_or(|at: tokio::time::Instant| at.elapsed() >= Duration::from_secs(1))
            {
                if let Ok(rows) = schedules::list(&self.pool).await {
                    paused = rows.into_iter().map(|row| (row.name, row.paused)).collect();
                }
                last_pause_read = Some(tokio::time::Instant::now());
            }
            let mut result = Ok(());
            for entry in &mut entries {
                let is_paused = paused.get(&entry.settings.name).copied().unwrap_or(false);
                if let Err(error) = self.fire_due(entry, is_paused).await {
                    result = Err(error);
                    break;
                }
            }
            if result.is_ok() {
                result = self.confirm_stragglers(&entries).await;
            }
            match result {
                Ok(()) if failing => {
                    tracing::info!("scheduler healthy again; missed ticks were caught up in order");
                    failing = false;
                }
                Ok(()) => {}
                Err(error) if !failing => {
                    tracing::warn!(error = %error, error.chain = ?error, "scheduler cannot reach its stores; retrying every tick");
                    failing = true;
                }
                Err(_) => {}
            }
        }
        tracing::info!("scheduler stopped");
        Ok(())
    }

    fn entry(&self, schedule: &ScheduleSettings) -> anyhow::Result<Entry> {
        let spec = ScheduleSpec::new(
            &schedule.name,
            schedule.cron.clone(),
            schedule.timezone,
            schedule.jitter,
        );
        let queue_name: QueueName = schedule.queue.clone();
        let policy = self
            .settings
            .job_policy(&queue_name, schedule.kind.as_str());
        Ok(Entry {
            settings: schedule.clone(),
            spec,
            queue: self.settings.queue_on(self.conn.clone(), &queue_name),
            max_attempts: policy.max_attempts,
            cursor: self.clock.now(),
        })
    }

    /// Plans and records the ticks missed while no scheduler ran, per the catch-up policy.
    async fn catch_up(&self, entry: &mut Entry) -> anyhow::Result<()> {
        let now = self.clock.now();
        let last = ticks::last_tick(&self.pool, &entry.settings.name).await?;
        let last_seen = last.map(|row| row.fire_at);
        let plan = plan_catch_up(
            &entry.spec,
            last_seen,
            now,
            entry.settings.catch_up,
            entry.settings.catch_up_window,
            entry.settings.catch_up_max as usize,
        );
        if let Some(omitted) = plan.omitted {
            tracing::warn!(
                schedule = %entry.settings.name, first = %omitted.first, before = %omitted.before,
                "downtime too long to list every missed tick; the oldest are summarised"
            );
            ticks::claim_tick(
                &self.pool,
                &entry.settings.name,
                omitted.first,
                "missed",
                &self.identity,
                Some(&format!(
                    "ticks from {} to {} were missed and not listed",
                    omitted.first, omitted.before
                )),
            )
            .await?;
        }
        let mut n_caught_up = 0;
        let mut n_missed = 0;
        for tick in &plan.ticks {
            match tick.decision {
                TickDecision::Missed => {
                    ticks::claim_tick(
                        &self.pool,
                        &entry.settings.name,
                        tick.fire_at,
                        "missed",
                        &self.identity,
                        None,
                    )
                    .await?;
                    n_missed += 1;
                }
                TickDecision::CaughtUp => {
                    self.claim_and_enqueue(entry, tick.fire_at, "caught_up")
                        .await?;
                    n_caught_up += 1;
                }
            }
        }
        if n_caught_up + n_missed > 0 {
            tracing::info!(
                schedule = %entry.settings.name, policy = entry.settings.catch_up.as_str(),
                n_caught_up, n_missed, "caught up after downtime"
            );
        }
        // Continue after the newest tick the plan handled. With no history (a new schedule)
        // nothing before now is owed; ticks not yet due (jitter) stay after the cursor.
        entry.cursor = match last_seen {
            None => now,
            Some(last_seen) => plan
                .ticks
                .iter()
                .map(|t| t.fire_at)
                .fold(last_seen, DateTime::max),
        };
        Ok(())
    }

    /// Claims and enqueues every tick of `entry` that is due.
    async fn fire_due(&self, entry: &mut Entry, paused: bool) -> anyhow::Result<()> {
        let now = self.clock.now();
        // Bounded: at most 1000 ticks per pass, so a huge clock jump cannot stall the loop.
        for _ in 0..1000 {
            let Some(tick) = entry.spec.next_tick_after(entry.cursor) else {
                return Ok(());
            };
            if tick.due_at > now {
                return Ok(());
            }
            if paused {
                ticks::claim_tick(
                    &self.pool,
                    &entry.settings.name,
                    tick.fire_at,
                    "skipped_paused",
                    &self.identity,
                    None,
                )
                .await?;
            } else {
                self.claim_and_enqueue(entry, tick.fire_at, "enqueued")
                    .await?;
            }
            entry.cursor = tick.fire_at;
        }
        Ok(())
    }

    /// Claims one tick; the winner applies the overlap policy, enqueues, and confirms.
    async fn claim_and_enqueue(
        &self,
        entry: &Entry,
        fire_at: DateTime<Utc>,
        decision: &str,
    ) -> anyhow::Result<()> {
        if entry.settings.overlap != Overlap::Allow
            && let Some(reason) = self.overlap_blocks(entry).await?
        {
            if ticks::claim_tick(
                &self.pool,
                &entry.settings.name,
                fire_at,
                "skipped_overlap",
                &self.identity,
                Some(&reason),
            )
            .await?
            .is_some()
            {
                tracing::info!(schedule = %entry.settings.name, fire_at = %fire_at, reason, "tick skipped: previous run unfinished");
            }
            return Ok(());
        }
        let Some(row) = ticks::claim_tick(
            &self.pool,
            &entry.settings.name,
            fire_at,
            decision,
            &self.identity,
            None,
        )
        .await?
        else {
            return Ok(()); // Another replica owns this tick.
        };
        let job_id = self.enqueue_tick(entry, fire_at).await?;
        ticks::confirm_tick(&self.pool, row.id, job_id).await?;
        tracing::info!(schedule = %entry.settings.name, fire_at = %fire_at, job_id = %job_id, decision, "tick enqueued");
        Ok(())
    }

    async fn enqueue_tick(&self, entry: &Entry, fire_at: DateTime<Utc>) -> anyhow::Result<JobId> {
        let fire_ms = fire_at.timestamp_millis();
        let mut job = NewJob::new(
            entry.settings.kind.as_str(),
            entry.settings.args.clone(),
            entry.max_attempts,
        );
        job.idempotency_key = Some(format!("tick:{}:{fire_ms}", entry.settings.name));
        job.schedule = Some(entry.settings.name.clone());
        job.tick_ms = Some(fire_ms);
        let enqueued = entry
            .queue
            .enqueue(&[job])
            .await
            .context("enqueueing a tick")?;
        Ok(enqueued[0].id())
    }

    /// Returns why the overlap policy forbids a new run now, if it does: the schedule's most
    /// recent enqueued job is still pending or running in Redis.
    async fn overlap_blocks(&self, entry: &Entry) -> anyhow::Result<Option<String>> {
        let Some(last) = ticks::last_enqueued_tick(&self.pool, &entry.settings.name).await? else {
            return Ok(None);
        };
        let Some(job_id) = last.job_id else {
            return Ok(None);
        };
        let Some(record) = entry.queue.job(&job_id.to_string()).await? else {
            return Ok(None);
        };
        let state = record.fields.get("state").map_or("", String::as_str);
        let blocks = match entry.settings.overlap {
            Overlap::Allow => false,
            Overlap::Skip => matches!(state, "available" | "scheduled" | "running" | "retryable"),
            // One may wait behind a running job; a job that is itself still waiting blocks.
            Overlap::QueueOne => matches!(state, "available" | "scheduled" | "retryable"),
        };
        Ok(blocks.then(|| format!("job {job_id} of tick {} is {state}", last.fire_at)))
    }

    /// Re-enqueues ticks claimed but never confirmed (their claimer died in between).
    async fn confirm_stragglers(&self, entries: &[Entry]) -> anyhow::Result<()> {
        let timeout = chrono::TimeDelta::from_std(self.settings.scheduler.confirm_timeout)
            .unwrap_or_default();
        let stale = ticks::unconfirmed_ticks(&self.pool, self.clock.now() - timeout, 100).await?;
        for row in stale {
            let Some(entry) = entries.iter().find(|e| e.settings.name == row.schedule) else {
                continue;
            };
            let job_id = self.enqueue_tick(entry, row.fire_at).await?;
            ticks::confirm_tick(&self.pool, row.id, job_id).await?;
            tracing::warn!(schedule = %row.schedule, fire_at = %row.fire_at, job_id = %job_id, claimed_by = ?row.claimed_by, "unconfirmed tick enqueued by this replica");
        }
        Ok(())
    }

    async fn retry_until_ok<T, F, Fut>(
        &self,
        shutdown: &Shutdown,
        what: &'static str,
        mut step: F,
    ) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = anyhow::Result<T>>,
    {
        let mut retry = Retry::new(what);
        loop {
            match step().await {
                Ok(value) => {
                    retry.done();
                    return Some(value);
                }
                Err(error) => {
                    if !retry.wait(shutdown, &error).await {
                        return None;
                    }
                }
            }
        }
    }
}

/// Paces retries of a start-up step with capped exponential backoff, logging the outage once.
struct Retry {
    what: &'static str,
    delay: Duration,
    logged: bool,
}

impl Retry {
    fn new(what: &'static str) -> Self {
        Self {
            what,
            delay: Duration::from_millis(200),
            logged: false,
        }
    }

    /// Waits before the next try; false when shutdown fired meanwhile.
    async fn wait(&mut self, shutdown: &Shutdown, error: &anyhow::Error) -> bool {
        if !self.logged {
            tracing::warn!(step = self.what, error = %error, error.chain = ?error, "scheduler waiting for its stores");
            self.logged = true;
        }
        tokio::select! {
            () = tokio::time::sleep(self.delay) => {}
            () = shutdown.wait() => return false,
        }
        self.delay = (self.delay * 2).min(Duration::from_secs(5));
        true
    }

    fn done(&self) {
        if self.logged {
            tracing::info!(step = self.what, "scheduler stores available again");
        }
    }
}
