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
//! for each schedule from the last tick a scheduler decided (see `schedule::plan_catch_up`).
//!
//! # Modules
//! - `run`: [`Scheduler::run_until_stopped`], the start-up steps and the loop.
//! - `due`: the schedules' cursors and the min-heap of their next due ticks.
//! - `catch_up`: ticks that fell due while the replica could not act, per catch-up policy.
//! - `fire`: claiming, enqueueing and confirming due ticks (bulk and one by one).
//! - `stragglers`: unconfirmed claims of dead replicas, enqueued again.
//! - [`operator`]: what `upkeepctl schedules` does; [`bench`]: `upkeep-scheduler-bench`.

pub mod bench;
mod catch_up;
mod due;
mod fire;
pub mod operator;
mod run;
mod stragglers;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use upkeep_shared::JobId;
use upkeep_shared::QueueName;
use upkeep_shared::config::{ScheduleSettings, Settings};
use upkeep_shared::queue::{NewJob, Queue, RedisConn};
use upkeep_shared::schedule::{Clock, ScheduleSpec, SystemClock};

use crate::due::Entry;

/// Ticks due less than this long ago when a replica starts are left to its normal loop (as
/// `enqueued`) rather than planned as catch-up: another replica is likely claiming them at
/// that very moment, and a tick that late is still on time.
pub const CATCH_UP_GRACE: Duration = Duration::from_secs(2);

/// The idempotency key of the job of tick `(schedule, fire_at)`: every replica, and every
/// retry of an unconfirmed claim, enqueues under the same key, so Redis keeps one job.
#[must_use]
pub fn tick_idempotency_key(schedule: &str, fire_at: DateTime<Utc>) -> String {
    format!("tick:{schedule}:{}", fire_at.timestamp_millis())
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

    /// The loop's entry for one enabled schedule; its cursor is set by catch-up.
    pub(crate) fn entry(&self, schedule: &ScheduleSettings) -> Entry {
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
