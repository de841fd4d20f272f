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

pub mod bench;
pub mod operator;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use upkeep_shared::config::{ScheduleSettings, Settings};
use upkeep_shared::queue::{NewJob, Queue, RedisConn};
use upkeep_shared::schedule::{
    Clock, Overlap, ScheduleSpec, SystemClock, Tick, TickDecision, live_after, plan_catch_up,
};
use upkeep_shared::shutdown::Shutdown;
use upkeep_shared::store::ticks::Decision;
use upkeep_shared::store::{replicas, schedules, ticks};
use upkeep_shared::{JobId, QueueName};

/// Ticks due less than this long ago when a replica starts are left to its normal loop (as
/// `enqueued`) rather than planned as catch-up: another replica is likely claiming them at
/// that very moment, and a tick that late is still on time.
pub const CATCH_UP_GRACE: Duration = Duration::from_secs(2);

/// Most ticks claimed in one statement.
const CLAIM_CHUNK: usize = 1000;

/// Most unconfirmed claims the straggler scan looks at per pass.
const STRAGGLER_PAGE: i64 = 100;

/// Most ticks of one schedule handled in one pass (a clock jump must not stall the loop).
const MAX_TICKS_PER_PASS: usize = 1000;

/// The idempotency key of the job of tick `(schedule, fire_at)`: every replica, and every
/// retry of an unconfirmed claim, enqueues under the same key, so Redis keeps one job.
#[must_use]
pub fn tick_idempotency_key(schedule: &str, fire_at: DateTime<Utc>) -> String {
    format!("tick:{schedule}:{}", fire_at.timestamp_millis())
}

/// One configured schedule with everything needed to fire it.
struct Entry {
    settings: ScheduleSettings,
    spec: ScheduleSpec,
    queue: Queue,
    max_attempts: u32,
    /// The newest nominal fire time this replica has handled (claimed or seen claimed).
    cursor: DateTime<Utc>,
    /// The first tick after `cursor`, as last computed: the schedule's key in [`DueHeap`].
    next: Option<Tick>,
}

/// The schedules by next due time: a min-heap of `(due_at, entry index)`, one item per
/// schedule that has a next tick.
#[derive(Default)]
struct DueHeap {
    heap: BinaryHeap<Reverse<(DateTime<Utc>, usize)>>,
}

impl DueHeap {
    fn push(&mut self, entry_idx: usize, entry: &Entry) {
        if let Some(tick) = entry.next {
            self.heap.push(Reverse((tick.due_at, entry_idx)));
        }
    }

    fn next_due(&self) -> Option<DateTime<Utc>> {
        self.heap.peek().map(|Reverse((due_at, _))| *due_at)
    }

    /// Takes every schedule due at `now` off the heap.
    fn pop_due(&mut self, now: DateTime<Utc>) -> Vec<usize> {
        let mut due = Vec::new();
        while let Some(Reverse((due_at, entry_idx))) = self.heap.peek().copied() {
            if due_at > now {
                break;
            }
            self.heap.pop();
            due.push(entry_idx);
        }
        due
    }
}

/// The names of paused schedules, re-read when older than the loop's longest sleep.
#[derive(Default)]
struct PausedFlags {
    names: HashSet<String>,
    read_at: Option<tokio::time::Instant>,
}

impl PausedFlags {
    async fn refresh(&mut self, pool: &PgPool, max_age: Duration) -> anyhow::Result<()> {
        if self.read_at.is_none_or(|at| at.elapsed() >= max_age) {
            self.names = schedules::paused_names(pool).await?;
            self.read_at = Some(tokio::time::Instant::now());
        }
        Ok(())
    }
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
    /// The loop sleeps until the earliest due time of any schedule (kept in a min-heap, so the
    /// cost of a pass is proportional to the ticks due, not to the number of schedules), but
    /// never longer than `scheduler.tick_interval`, so that pause flags, unconfirmed claims and
    /// a moved clock are looked at that often.
    ///
    /// # Errors
    /// Only for broken configuration found at start.
    pub async fn run_until_stopped(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let started_at = self.clock.now();
        // Warns when Redis could evict queue data (the scheduler enqueues too).
        upkeep_shared::queue::check_eviction_policy(&self.conn)
            .await
            .log();
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
            entries.push(self.entry(schedule));
        }
        let mut retry = Retry::new("catch up");
        while let Err(error) = self.catch_up_all(&mut entries, started_at).await {
            if !retry.wait(&shutdown, &error).await {
                return Ok(());
            }
        }
        retry.done();
        let mut due = DueHeap::default();
        for (entry_idx, entry) in entries.iter_mut().enumerate() {
            entry.next = entry.spec.next_tick_after(entry.cursor);
            due.push(entry_idx, entry);
        }
        let max_sleep = self.settings.scheduler.tick_interval;
        let mut paused = PausedFlags::default();
        let mut last_straggler_check = None::<tokio::time::Instant>;
        let mut straggler_after = None;
        let mut last_heartbeat = None::<tokio::time::Instant>;
        let mut last_ok = None;
        let mut failing = false;
        loop {
            let now = self.clock.now();
            let mut sleep = due
                .next_due()
                .map_or(max_sleep, |due_at| {
                    (due_at - now).to_std().unwrap_or(Duration::ZERO)
                })
                .min(max_sleep);
            if failing {
                // Ticks stay due while the stores are away; do not spin on them.
                sleep = max_sleep;
            }
            if !sleep.is_zero() {
                tokio::select! {
                    () = tokio::time::sleep(sleep) => {}
                    () = shutdown.wait() => break,
                }
            } else if shutdown.is_triggered() {
                break;
            }
            let pass_now = self.clock.now();
            // Wall time that moved further than monotonic time since the last good pass: the
            // clock jumped forwards, and the ticks jumped over are late, not due.
            let jumped =
                last_ok.is_some_and(|(wall, mono): (DateTime<Utc>, tokio::time::Instant)| {
                    chrono::TimeDelta::from_std(mono.elapsed() + CATCH_UP_GRACE)
                        .is_ok_and(|elapsed| pass_now - wall > elapsed)
                });
            let mut result = if failing || jumped {
                self.catch_up_live(&mut entries, &mut due, pass_now).await
            } else {
                Ok(())
            };
            if result.is_ok() {
                result = self.fire_due(&mut entries, &mut due, &mut paused).await;
            }
            if result.is_ok()
                && last_heartbeat.is_none_or(|at: tokio::time::Instant| at.elapsed() >= max_sleep)
            {
                result = replicas::heartbeat(&self.pool, &self.identity, pass_now, pass_now)
                    .await
                    .map_err(anyhow::Error::from);
                last_heartbeat = Some(tokio::time::Instant::now());
            }
            if result.is_ok() {
                last_ok = Some((pass_now, tokio::time::Instant::now()));
            }
            if result.is_ok()
                && last_straggler_check
                    .is_none_or(|at: tokio::time::Instant| at.elapsed() >= max_sleep)
            {
                result = self
                    .confirm_stragglers(&entries, &mut straggler_after)
                    .await;
                last_straggler_check = Some(tokio::time::Instant::now());
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
        // A clean stop is no longer a live replica; others need not wait for its horizon.
        let forgotten = replicas::forget(
            &self.pool,
            &self.identity,
            self.clock.now() - chrono::TimeDelta::days(1),
        )
        .await;
        if let Err(error) = forgotten {
            tracing::debug!(error = %error, "could not remove this replica's live sign");
        }
        tracing::info!("scheduler stopped");
        Ok(())
    }

    fn entry(&self, schedule: &ScheduleSettings) -> Entry {
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
        Entry {
            settings: schedule.clone(),
            spec,
            queue: self.settings.queue_on(self.conn.clone(), &queue_name),
            max_attempts: policy.max_attempts,
            cursor: self.clock.now(),
            next: None,
        }
    }

    /// Plans and records, for every schedule, the ticks missed while no scheduler ran, per
    /// its catch-up policy; the newest tick of every schedule is read in one query.
    ///
    /// The `missed` rows of every schedule are written before any `caught_up` tick is claimed:
    /// the caught-up ticks are the newest of a plan, so a failure (or `kill -9`) in between
    /// leaves the ledger's newest row older than every tick still unrecorded, and the next
    /// attempt plans them again. Recording a caught-up tick first would make the next attempt
    /// start after it and lose the missed ones' rows for good.
    ///
    /// A schedule new to the ledger owes nothing due before `started_at` (this scheduler's
    /// start): ticks due while it reconciled and read the ledger are still enqueued.
    async fn catch_up_all(
        &self,
        entries: &mut [Entry],
        started_at: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let names: Vec<String> = entries.iter().map(|e| e.settings.name.clone()).collect();
        let last_seen = ticks::last_fire_times(&self.pool, &names).await?;
        let now = self.clock.now();
        replicas::forget(&self.pool, &self.identity, now - chrono::TimeDelta::days(1)).await?;
        let grace = chrono::TimeDelta::from_std(CATCH_UP_GRACE).unwrap_or_default();
        // The decision instant: ticks due at or before it are catch-up's, later ones the loop's.
        let at = self.decision_instant(now).await?;
        let mut missed = Vec::new();
        let mut caught_up = Vec::new();
        for (entry_idx, entry) in entries.iter().enumerate() {
            let last_seen = last_seen.get(&entry.settings.name).copied();
            for fire_at in self.plan_entry(entry, last_seen, at, &mut missed) {
                caught_up.push((entry_idx, fire_at));
            }
        }
        self.record_catch_up(entries, &missed, &caught_up).await?;
        replicas::heartbeat(&self.pool, &self.identity, at, now).await?;
        for entry in entries.iter_mut() {
            // The loop takes over exactly where the plan stops (one boundary, so no gap): with
            // no history, every tick not yet due is the loop's, even one whose fire time passed.
            entry.cursor = match last_seen.get(&entry.settings.name).copied() {
                None => live_after(&entry.spec, None, started_at.min(now) - grace),
                Some(last_seen) => live_after(&entry.spec, Some(last_seen), at),
            };
        }
        Ok(())
    }

    /// The instant up to which this replica may decide late ticks through the catch-up
    /// policy: `now` less [`CATCH_UP_GRACE`], but never after the oldest `decided_until` of
    /// the other live replicas (item: a starting or recovering replica must not record as
    /// `missed` a tick a live but lagging replica is about to enqueue; the ticks after that
    /// instant are enqueued by the loop, whoever claims them first).
    async fn decision_instant(&self, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
        let grace = chrono::TimeDelta::from_std(CATCH_UP_GRACE).unwrap_or_default();
        let liveness =
            chrono::TimeDelta::from_std(self.settings.scheduler.tick_interval * 3 + CATCH_UP_GRACE)
                .unwrap_or_default();
        let at = now - grace;
        let horizon = replicas::live_horizon(&self.pool, &self.identity, now - liveness).await?;
        Ok(horizon.map_or(at, |horizon| horizon.min(at)))
    }

    /// Writes a catch-up: every `missed` row first, then the `caught_up` ticks, which are
    /// the newest of their schedule's plan (see [`Scheduler::catch_up_all`] for why the order
    /// matters).
    async fn record_catch_up(
        &self,
        entries: &[Entry],
        missed: &[ticks::TickClaim],
        caught_up: &[(usize, DateTime<Utc>)],
    ) -> anyhow::Result<()> {
        for chunk in missed.chunks(CLAIM_CHUNK) {
            ticks::claim_ticks(&self.pool, chunk, &self.identity).await?;
        }
        for &(entry_idx, fire_at) in caught_up {
            self.claim_and_enqueue(&entries[entry_idx], fire_at, Decision::CaughtUp)
                .await?;
        }
        Ok(())
    }

    /// Applies the catch-up policy to the ticks that fell due while this replica's loop could
    /// not act (a store outage, or a clock jump forwards): the same plan a restarted replica
    /// would make, from this replica's cursor, instead of enqueueing them all in a burst.
    /// Ticks due within [`CATCH_UP_GRACE`] of `now` are left to [`Scheduler::fire_due`].
    async fn catch_up_live(
        &self,
        entries: &mut [Entry],
        due: &mut DueHeap,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        let at = self.decision_instant(now).await?;
        let late = due.pop_due(at);
        if late.is_empty() {
            return Ok(());
        }
        let mut missed = Vec::new();
        let mut caught_up = Vec::new();
        for &entry_idx in &late {
            let entry = &entries[entry_idx];
            for fire_at in self.plan_entry(entry, Some(entry.cursor), at, &mut missed) {
                caught_up.push((entry_idx, fire_at));
            }
        }
        let result = self.record_catch_up(entries, &missed, &caught_up).await;
        for &entry_idx in &late {
            let entry = &mut entries[entry_idx];
            if result.is_ok() {
                entry.cursor = live_after(&entry.spec, Some(entry.cursor), at);
            }
            entry.next = entry.spec.next_tick_after(entry.cursor);
            due.push(entry_idx, entry);
        }
        result
    }

    /// Plans the catch-up of one schedule up to the decision instant `at`: adds its `missed`
    /// ticks (oldest first) to `missed`, to be claimed in bulk, and returns the fire times of
    /// its `caught_up` ones, oldest first.
    fn plan_entry(
        &self,
        entry: &Entry,
        last_seen: Option<DateTime<Utc>>,
        at: DateTime<Utc>,
        missed: &mut Vec<ticks::TickClaim>,
    ) -> Vec<DateTime<Utc>> {
        let plan = plan_catch_up(
            &entry.spec,
            last_seen,
            at,
            entry.settings.catch_up,
            entry.settings.catch_up_window,
            entry.settings.catch_up_max as usize,
        );
        if let Some(omitted) = plan.omitted {
            tracing::warn!(
                schedule = %entry.settings.name, first = %omitted.first, before = %omitted.before,
                "downtime too long to list every missed tick; the oldest are summarised"
            );
            missed.push(ticks::TickClaim {
                schedule: entry.settings.name.clone(),
                fire_at: omitted.first,
                decision: Decision::Missed,
                note: Some(format!(
                    "ticks from {} to {} were missed and not listed",
                    omitted.first, omitted.before
                )),
            });
        }
        let mut caught_up = Vec::new();
        let mut n_missed = 0;
        for tick in &plan.ticks {
            match tick.decision {
                TickDecision::Missed => {
                    missed.push(ticks::TickClaim {
                        schedule: entry.settings.name.clone(),
                        fire_at: tick.fire_at,
                        decision: Decision::Missed,
                        note: None,
                    });
                    n_missed += 1;
                }
                TickDecision::CaughtUp => caught_up.push(tick.fire_at),
            }
        }
        if !caught_up.is_empty() || n_missed > 0 {
            tracing::info!(
                schedule = %entry.settings.name, policy = entry.settings.catch_up.as_str(),
                n_caught_up = caught_up.len(), n_missed, "catching up after downtime"
            );
        }
        caught_up
    }

    /// Claims and enqueues every due tick of every schedule whose next tick is due.
    ///
    /// Schedules that allow overlap are handled in bulk: one claim statement for all their
    /// due ticks, one enqueue per queue, one confirm statement. Schedules with an overlap
    /// policy look at their previous job first, one tick at a time. Every schedule taken off
    /// the heap goes back on it, with its next tick, whatever happens.
    async fn fire_due(
        &self,
        entries: &mut [Entry],
        due: &mut DueHeap,
        paused: &mut PausedFlags,
    ) -> anyhow::Result<()> {
        let now = self.clock.now();
        let due_idxs = due.pop_due(now);
        if due_idxs.is_empty() {
            return Ok(());
        }
        let result = self.fire_entries(entries, &due_idxs, paused, now).await;
        for &entry_idx in &due_idxs {
            let entry = &mut entries[entry_idx];
            entry.next = entry.spec.next_tick_after(entry.cursor);
            due.push(entry_idx, entry);
        }
        result
    }

    async fn fire_entries(
        &self,
        entries: &mut [Entry],
        due_idxs: &[usize],
        paused: &mut PausedFlags,
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        paused
            .refresh(&self.pool, self.settings.scheduler.tick_interval)
            .await?;
        let mut bulk: Vec<(usize, ticks::TickClaim)> = Vec::new();
        for &entry_idx in due_idxs {
            let entry = &mut entries[entry_idx];
            let is_paused = paused.names.contains(&entry.settings.name);
            let mut cursor = entry.cursor;
            // Bounded: a huge clock jump cannot stall the loop; the rest waits for the next
            // pass.
            for _ in 0..MAX_TICKS_PER_PASS {
                let Some(tick) = entry.spec.next_tick_after(cursor) else {
                    break;
                };
                if tick.due_at > now {
                    break;
                }
                if is_paused || entry.settings.overlap == Overlap::Allow {
                    let decision = if is_paused {
                        Decision::SkippedPaused
                    } else {
                        Decision::Enqueued
                    };
                    bulk.push((
                        entry_idx,
                        ticks::TickClaim {
                            schedule: entry.settings.name.clone(),
                            fire_at: tick.fire_at,
                            decision,
                            note: None,
                        },
                    ));
                } else {
                    self.claim_and_enqueue(entry, tick.fire_at, Decision::Enqueued)
                        .await?;
                    entry.cursor = tick.fire_at;
                }
                cursor = tick.fire_at;
            }
        }
        for chunk in bulk.chunks(CLAIM_CHUNK) {
            self.claim_and_enqueue_bulk(entries, chunk).await?;
        }
        Ok(())
    }

    /// Claims a batch of ticks; enqueues the `enqueued` ones this replica won, one enqueue
    /// per queue, and confirms them in one statement. Cursors move only once all of it
    /// succeeded.
    async fn claim_and_enqueue_bulk(
        &self,
        entries: &mut [Entry],
        batch: &[(usize, ticks::TickClaim)],
    ) -> anyhow::Result<()> {
        let claims: Vec<ticks::TickClaim> = batch.iter().map(|(_, c)| c.clone()).collect();
        let won = ticks::claim_ticks(&self.pool, &claims, &self.identity).await?;
        let entry_of: HashMap<&str, usize> = batch
            .iter()
            .map(|(entry_idx, claim)| (claim.schedule.as_str(), *entry_idx))
            .collect();
        let mut by_queue: HashMap<QueueName, Vec<(i64, NewJob)>> = HashMap::new();
        for row in &won {
            if row.decision != Decision::Enqueued {
                continue;
            }
            let Some(&entry_idx) = entry_of.get(row.schedule.as_str()) else {
                continue;
            };
            let entry = &entries[entry_idx];
            by_queue
                .entry(entry.settings.queue.clone())
                .or_default()
                .push((
                    row.id,
                    tick_job(&entry.settings, entry.max_attempts, row.fire_at),
                ));
        }
        let mut confirmed = Vec::new();
        for (queue_name, jobs) in by_queue {
            let Some(entry) = entries.iter().find(|e| e.settings.queue == queue_name) else {
                continue;
            };
            let new_jobs: Vec<NewJob> = jobs.iter().map(|(_, job)| job.clone()).collect();
            let enqueued = entry
                .queue
                .enqueue(&new_jobs)
                .await
                .context("enqueueing ticks")?;
            for ((tick_id, _), result) in jobs.iter().zip(enqueued) {
                confirmed.push((*tick_id, result.id()));
            }
        }
        ticks::confirm_ticks(&self.pool, &confirmed).await?;
        let job_of: HashMap<i64, JobId> = confirmed.iter().copied().collect();
        for row in &won {
            match (row.decision, job_of.get(&row.id)) {
                (Decision::SkippedPaused, _) => {
                    tracing::info!(schedule = %row.schedule, fire_at = %row.fire_at, "tick skipped: schedule paused");
                }
                (_, Some(job_id)) => {
                    tracing::info!(schedule = %row.schedule, fire_at = %row.fire_at, job_id = %job_id, decision = %row.decision, "tick enqueued");
                }
                (_, None) => {
                    tracing::info!(schedule = %row.schedule, fire_at = %row.fire_at, decision = %row.decision, "tick claimed");
                }
            }
        }
        for (entry_idx, claim) in batch {
            let entry = &mut entries[*entry_idx];
            entry.cursor = entry.cursor.max(claim.fire_at);
        }
        Ok(())
    }

    /// Claims one tick; the winner applies the overlap policy, enqueues, and confirms.
    async fn claim_and_enqueue(
        &self,
        entry: &Entry,
        fire_at: DateTime<Utc>,
        decision: Decision,
    ) -> anyhow::Result<()> {
        if entry.settings.overlap != Overlap::Allow
            && let Some(reason) = self.overlap_blocks(entry).await?
        {
            if ticks::claim_tick(
                &self.pool,
                &entry.settings.name,
                fire_at,
                Decision::SkippedOverlap.as_str(),
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
            decision.as_str(),
            &self.identity,
            None,
        )
        .await?
        else {
            return Ok(()); // Another replica owns this tick.
        };
        let job_id =
            enqueue_tick(&entry.queue, &entry.settings, entry.max_attempts, fire_at).await?;
        ticks::confirm_tick(&self.pool, row.id, job_id).await?;
        tracing::info!(schedule = %entry.settings.name, fire_at = %fire_at, job_id = %job_id, decision = %decision, "tick enqueued");
        Ok(())
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

    /// Re-enqueues ticks claimed but never confirmed (their claimer died in between), one
    /// page of [`STRAGGLER_PAGE`] per call.
    ///
    /// The scan continues from where the previous call stopped (`after`) and wraps around at
    /// the end, and a claim whose enqueue fails does not stop the others: claims that fail
    /// every time cannot keep the scan from the rest. Claims of schedules this replica does
    /// not run (disabled, removed) are not listed. Returns the first error, after trying
    /// every claim of the page, when none of them could be enqueued.
    async fn confirm_stragglers(
        &self,
        entries: &[Entry],
        after: &mut Option<(DateTime<Utc>, i64)>,
    ) -> anyhow::Result<()> {
        let timeout = chrono::TimeDelta::from_std(self.settings.scheduler.confirm_timeout)
            .unwrap_or_default();
        let names: Vec<String> = entries.iter().map(|e| e.settings.name.clone()).collect();
        let stale = ticks::unconfirmed_ticks(
            &self.pool,
            &names,
            self.clock.now() - timeout,
            *after,
            STRAGGLER_PAGE,
        )
        .await?;
        *after = match stale.last() {
            Some(last) if stale.len() as i64 == STRAGGLER_PAGE => Some((last.claimed_at, last.id)),
            _ => None,
        };
        let mut first_error = None;
        let mut n_enqueued = 0;
        for row in stale {
            let Some(entry) = entries.iter().find(|e| e.settings.name == row.schedule) else {
                continue;
            };
            let result = async {
                let job_id = enqueue_tick(
                    &entry.queue,
                    &entry.settings,
                    entry.max_attempts,
                    row.fire_at,
                )
                .await?;
                ticks::confirm_tick(&self.pool, row.id, job_id).await?;
                anyhow::Ok(job_id)
            }
            .await;
            match result {
                Ok(job_id) => {
                    n_enqueued += 1;
                    tracing::warn!(schedule = %row.schedule, fire_at = %row.fire_at, job_id = %job_id, claimed_by = ?row.claimed_by, "unconfirmed tick enqueued by this replica");
                }
                Err(error) => {
                    tracing::warn!(schedule = %row.schedule, fire_at = %row.fire_at, error = %error, "unconfirmed tick still not enqueued");
                    first_error.get_or_insert(error);
                }
            }
        }
        // Only a page where nothing worked looks like an outage; one bad claim is not.
        match first_error {
            Some(error) if n_enqueued == 0 => Err(error),
            _ => Ok(()),
        }
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

/// The job of tick `fire_at` of `schedule`: its kind and arguments, the tick's idempotency
/// key, and the schedule and tick it came from (workers copy both into `job_runs`).
#[must_use]
pub fn tick_job(schedule: &ScheduleSettings, max_attempts: u32, fire_at: DateTime<Utc>) -> NewJob {
    let mut job = NewJob::new(schedule.kind.as_str(), schedule.args.clone(), max_attempts);
    job.idempotency_key = Some(tick_idempotency_key(&schedule.name, fire_at));
    job.schedule = Some(schedule.name.clone());
    job.tick_ms = Some(fire_at.timestamp_millis());
    job
}

/// Enqueues the job of one tick; returns its id (the earlier job's, when the tick's
/// idempotency key was already used).
///
/// # Errors
/// On a Redis error.
pub async fn enqueue_tick(
    queue: &Queue,
    schedule: &ScheduleSettings,
    max_attempts: u32,
    fire_at: DateTime<Utc>,
) -> anyhow::Result<JobId> {
    let enqueued = queue
        .enqueue(&[tick_job(schedule, max_attempts, fire_at)])
        .await
        .context("enqueueing a tick")?;
    enqueued
        .first()
        .map(|result| result.id())
        .context("enqueue returned no id")
}
