//! What an operator does to schedules (`upkeepctl schedules ...`, later the API): pause,
//! resume, trigger now, backfill a past range, preview fire times, read health.
//!
//! Manual and backfilled ticks go through the same ledger as the scheduler's: each one is a
//! `schedule_ticks` row claimed first (decision `manual` or `backfill`, `claimed_by` the
//! operator), then enqueued with the tick's idempotency key, then confirmed. A claim whose
//! enqueue is interrupted is finished by any scheduler replica, like its own. Every action
//! leaves a `schedule_events` row naming the operator.

use anyhow::Context as _;
use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use sqlx::PgPool;
use upkeep_shared::config::{ScheduleSettings, Settings};
use upkeep_shared::queue::{NewJob, RedisConn};
use upkeep_shared::schedule::{ScheduleSpec, live_after, next_live_tick};
use upkeep_shared::store::health::{self, ScheduleHealth};
use upkeep_shared::store::schedules::{self, EventAction};
use upkeep_shared::store::ticks::{self, Decision, TickClaim};
use upkeep_shared::{JobId, store};

use crate::tick_job;

/// The most ticks one backfill enqueues unless told otherwise.
pub const DEFAULT_BACKFILL_MAX: usize = 1000;

/// Operator actions over the configured Postgres and Redis.
pub struct Operator {
    settings: Settings,
    pool: PgPool,
    conn: RedisConn,
}

/// What `trigger` did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Triggered {
    /// The schedule.
    pub schedule: String,
    /// The manual tick's identity (now, to the millisecond).
    pub fire_at: DateTime<Utc>,
    /// Its job.
    pub job_id: JobId,
}

/// What `backfill` did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Backfilled {
    /// The schedule.
    pub schedule: String,
    /// Ticks enqueued by this backfill, with their jobs, oldest first.
    pub enqueued: Vec<(DateTime<Utc>, JobId)>,
    /// Ticks of the range that already had a row (other than `missed`) and were left alone,
    /// with their decision.
    pub existing: Vec<(DateTime<Utc>, Decision)>,
}

/// One previewed fire time.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PreviewRow {
    /// The nominal fire time in UTC.
    pub fire_at: DateTime<Utc>,
    /// The same instant in the schedule's zone, with its offset.
    pub local: String,
    /// The zone's abbreviation at that instant (`CET`, `EDT`).
    pub zone: String,
    /// When the tick is due: the fire time plus the schedule's jitter offset.
    pub due_at: DateTime<Utc>,
}

impl std::fmt::Debug for Operator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operator").finish_non_exhaustive()
    }
}

impl Operator {
    /// An operator over the configured Postgres and Redis; both are connected on first use,
    /// so actions that need neither (`preview`) work without them.
    ///
    /// # Errors
    /// When a URL is malformed.
    pub fn build(settings: Settings) -> anyhow::Result<Self> {
        let pool = settings
            .database
            .connect_lazy()
            .context("building the Postgres pool")?;
        let conn = RedisConn::open(&settings.redis.target()).context("opening Redis")?;
        Ok(Self::with_parts(settings, pool, conn))
    }

    /// An operator over given resources.
    #[must_use]
    pub fn with_parts(settings: Settings, pool: PgPool, conn: RedisConn) -> Self {
        Self {
            settings,
            pool,
            conn,
        }
    }

    /// The configured schedule `name`.
    ///
    /// # Errors
    /// When the config has no schedule of that name; the message names it.
    pub fn schedule(&self, name: &str) -> anyhow::Result<&ScheduleSettings> {
        self.settings
            .schedules
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| {
                let known: Vec<&str> = self
                    .settings
                    .schedules
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect();
                anyhow::anyhow!(
                    "unknown schedule {name:?} (configured: {})",
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                )
            })
    }

    /// Pauses `name` on behalf of `actor`; false when it already was paused. A paused
    /// schedule records its ticks as `skipped_paused`.
    ///
    /// # Errors
    /// When the schedule is unknown, or on a database error.
    pub async fn pause(&self, name: &str, actor: &str) -> anyhow::Result<bool> {
        self.set_paused(name, true, actor).await
    }

    /// Resumes `name` on behalf of `actor`; false when it was not paused.
    ///
    /// # Errors
    /// When the schedule is unknown, or on a database error.
    pub async fn resume(&self, name: &str, actor: &str) -> anyhow::Result<bool> {
        self.set_paused(name, false, actor).await
    }

    async fn set_paused(&self, name: &str, paused: bool, actor: &str) -> anyhow::Result<bool> {
        match schedules::set_paused(&self.pool, name, paused, actor).await {
            Err(store::Error::ScheduleNotFound(_)) => {
                self.schedule(name)?;
                anyhow::bail!(
                    "schedule {name:?} is configured but not in the ledger yet; start a scheduler \
                     with this config first"
                )
            }
            other => Ok(other?),
        }
    }

    /// Enqueues one run of `name` now, whatever its overlap policy or pause flag, as a
    /// `manual` tick at `now` (to the millisecond) claimed by `actor`.
    ///
    /// # Errors
    /// When the schedule is unknown, the tick already exists, or a store fails.
    pub async fn trigger(
        &self,
        name: &str,
        actor: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Triggered> {
        let schedule = self.schedule(name)?.clone();
        let fire_at = DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now);
        let Some(row) = ticks::claim_tick(
            &self.pool,
            name,
            fire_at,
            Decision::Manual.as_str(),
            actor,
            None,
        )
        .await?
        else {
            anyhow::bail!("schedule {name:?} already has a tick at {fire_at}; trigger again");
        };
        let job_ids = self.enqueue(&schedule, &[fire_at], &|_, _| {}).await?;
        let job_id = job_ids[0];
        ticks::confirm_tick(&self.pool, row.id, job_id).await?;
        schedules::record_event(
            &self.pool,
            name,
            EventAction::Trigger,
            actor,
            serde_json::json!({"fire_at": fire_at, "job_id": job_id}),
        )
        .await?;
        tracing::info!(schedule = name, fire_at = %fire_at, job_id = %job_id, actor, "tick triggered");
        Ok(Triggered {
            schedule: name.to_owned(),
            fire_at,
            job_id,
        })
    }

    /// Enqueues every tick of `name` whose fire time is in `[from, to]`, as `backfill` ticks
    /// claimed by `actor`: ticks without a row are claimed, `missed` ones are taken over, any
    /// other row is left alone and reported. At most `max` ticks; a larger range is refused
    /// rather than cut.
    ///
    /// # Errors
    /// When the schedule is unknown, `from` is after `to`, `to` is after `now`, the range
    /// holds more than `max` ticks, or a store fails.
    pub async fn backfill(
        &self,
        name: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        max: usize,
        actor: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Backfilled> {
        self.backfill_with_progress(name, from, to, max, actor, now, &|_, _| {})
            .await
    }

    /// [`Operator::backfill`], calling `progress(enqueued, total)` after each batch of
    /// claimed ticks is enqueued (`upkeepctl schedules backfill` draws it).
    ///
    /// # Errors
    /// As [`Operator::backfill`].
    #[expect(
        clippy::too_many_arguments,
        reason = "backfill's arguments plus the callback"
    )]
    pub async fn backfill_with_progress(
        &self,
        name: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        max: usize,
        actor: &str,
        now: DateTime<Utc>,
        progress: &(dyn Fn(usize, usize) + Send + Sync),
    ) -> anyhow::Result<Backfilled> {
        let schedule = self.schedule(name)?.clone();
        if from > to {
            anyhow::bail!("--from {from} is after --to {to}: the range is reversed");
        }
        if to > now {
            anyhow::bail!(
                "--to {to} is in the future (now is {now}); backfill covers past ticks only"
            );
        }
        let spec = spec_of(&schedule);
        // The same boundary as the scheduler's: a tick not yet due (its fire time passed, its
        // jittered due time has not) belongs to the scheduler, which will enqueue it on time.
        if let Some(upcoming) = next_live_tick(&spec, None, now)
            && upcoming.fire_at <= to
        {
            anyhow::bail!(
                "--to {to} reaches the tick of {} which is not due until {} (jitter); the \
                 scheduler will enqueue it then. Backfill covers ticks already due: use --to \
                 before {}",
                upcoming.fire_at,
                upcoming.due_at,
                upcoming.fire_at
            );
        }
        let fires = spec.fires_between(from - TimeDelta::nanoseconds(1), to, max.saturating_add(1));
        if fires.len() > max {
            anyhow::bail!(
                "{from} to {to} holds more than {max} ticks of {name:?}; narrow the range or \
                 raise --max"
            );
        }
        let claims: Vec<TickClaim> = fires
            .iter()
            .map(|&fire_at| TickClaim {
                schedule: name.to_owned(),
                fire_at,
                decision: Decision::Backfill,
                note: None,
            })
            .collect();
        let mut won = Vec::new();
        for chunk in claims.chunks(1000) {
            won.extend(ticks::claim_ticks(&self.pool, chunk, actor).await?);
        }
        let taken: std::collections::HashSet<DateTime<Utc>> =
            won.iter().map(|row| row.fire_at).collect();
        let rest: Vec<DateTime<Utc>> = fires
            .iter()
            .copied()
            .filter(|fire_at| !taken.contains(fire_at))
            .collect();
        won.extend(ticks::reclaim_missed_for_backfill(&self.pool, name, &rest, actor).await?);
        won.sort_by_key(|row| row.fire_at);
        let fire_ats: Vec<DateTime<Utc>> = won.iter().map(|row| row.fire_at).collect();
        let job_ids = self.enqueue(&schedule, &fire_ats, progress).await?;
        let confirmed: Vec<(i64, JobId)> = won
            .iter()
            .map(|row| row.id)
            .zip(job_ids.iter().copied())
            .collect();
        ticks::confirm_ticks(&self.pool, &confirmed).await?;
        let won_at: std::collections::HashSet<DateTime<Utc>> = fire_ats.iter().copied().collect();
        let mut existing = Vec::new();
        if let (Some(&first), Some(&last)) = (fires.first(), fires.last()) {
            for row in
                ticks::ticks_between(&self.pool, name, first - TimeDelta::nanoseconds(1), last)
                    .await?
            {
                if !won_at.contains(&row.fire_at) {
                    existing.push((row.fire_at, row.decision));
                }
            }
        }
        schedules::record_event(
            &self.pool,
            name,
            EventAction::Backfill,
            actor,
            serde_json::json!({
                "from": from, "to": to, "n_ticks": fires.len(),
                "n_enqueued": fire_ats.len(), "n_existing": existing.len(),
            }),
        )
        .await?;
        tracing::info!(
            schedule = name,
            n_enqueued = fire_ats.len(),
            n_existing = existing.len(),
            actor,
            "range backfilled"
        );
        Ok(Backfilled {
            schedule: name.to_owned(),
            enqueued: fire_ats.into_iter().zip(job_ids).collect(),
            existing,
        })
    }

    /// The next `n` ticks of `name` not yet due at `now`, in UTC and in its zone: the ticks a
    /// scheduler started at `now` would enqueue. With jitter the first one's fire time may be
    /// before `now` (its due time is not).
    ///
    /// # Errors
    /// When the schedule is unknown.
    pub fn preview(
        &self,
        name: &str,
        now: DateTime<Utc>,
        n: usize,
    ) -> anyhow::Result<Vec<PreviewRow>> {
        let spec = spec_of(self.schedule(name)?);
        Ok(spec
            .preview(live_after(&spec, None, now), n)
            .into_iter()
            .map(
                |(fire_at, local): (DateTime<Utc>, DateTime<Tz>)| PreviewRow {
                    fire_at,
                    local: local.to_rfc3339(),
                    zone: local.format("%Z").to_string(),
                    due_at: spec.due_at(fire_at),
                },
            )
            .collect())
    }

    /// The health of every schedule (or of `only`), as of `now`.
    ///
    /// # Errors
    /// When `only` names no schedule the ledger knows, or on a database error.
    pub async fn health(
        &self,
        now: DateTime<Utc>,
        only: Option<&str>,
    ) -> anyhow::Result<Vec<ScheduleHealth>> {
        let rows = health::schedule_health(&self.pool, now, only).await?;
        if let Some(name) = only
            && rows.is_empty()
        {
            self.schedule(name)?;
            anyhow::bail!("schedule {name:?} is not in the ledger yet");
        }
        Ok(rows)
    }

    /// Enqueues the jobs of `fire_ats` of `schedule` in batches; their ids, in order.
    async fn enqueue(
        &self,
        schedule: &ScheduleSettings,
        fire_ats: &[DateTime<Utc>],
        progress: &(dyn Fn(usize, usize) + Send + Sync),
    ) -> anyhow::Result<Vec<JobId>> {
        let max_attempts = self
            .settings
            .job_policy(&schedule.queue, schedule.kind.as_str())
            .max_attempts;
        let queue = self.settings.queue_on(self.conn.clone(), &schedule.queue);
        let mut ids = Vec::with_capacity(fire_ats.len());
        for chunk in fire_ats.chunks(upkeep_shared::queue::ENQUEUE_CHUNK) {
            let jobs: Vec<NewJob> = chunk
                .iter()
                .map(|&fire_at| tick_job(schedule, max_attempts, fire_at))
                .collect();
            let enqueued = queue.enqueue(&jobs).await?;
            ids.extend(enqueued.into_iter().map(|result| result.id()));
            progress(ids.len(), fire_ats.len());
        }
        Ok(ids)
    }
}

fn spec_of(schedule: &ScheduleSettings) -> ScheduleSpec {
    ScheduleSpec::new(
        &schedule.name,
        schedule.cron.clone(),
        schedule.timezone,
        schedule.jitter,
    )
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use chrono::TimeDelta;

    use super::*;

    /// An operator over a config with one every-minute schedule spread over 50 s; neither
    /// store is contacted by what these tests call.
    fn operator() -> (Operator, ScheduleSpec) {
        let settings = Settings::from_toml_str(
            "[[schedules]]\nname = \"spread\"\ncron = \"0 * * * * *\"\nkind = \"system.ping\"\n\
             jitter = \"50s\"\n",
            &HashMap::new(),
        )
        .expect("valid config");
        let spec = spec_of(&settings.schedules[0]);
        (Operator::build(settings).expect("lazy connections"), spec)
    }

    /// A minute boundary and the instant one second before its tick is due.
    fn just_before_due(spec: &ScheduleSpec) -> (DateTime<Utc>, DateTime<Utc>) {
        let fire_at = DateTime::parse_from_rfc3339("2026-06-01T10:17:00Z")
            .expect("valid")
            .to_utc();
        let offset = TimeDelta::from_std(spec.jitter_offset()).expect("small");
        assert!(
            offset > TimeDelta::seconds(2),
            "the name's offset is {offset}"
        );
        (fire_at, fire_at + offset - TimeDelta::seconds(1))
    }

    #[tokio::test]
    async fn schedules_next_lists_first_the_tick_whose_fire_time_passed_but_due_time_has_not() {
        let (operator, spec) = operator();
        let (fire_at, now) = just_before_due(&spec);
        let rows = operator.preview("spread", now, 2).expect("known schedule");
        assert_eq!(rows[0].fire_at, fire_at);
        assert!(rows[0].due_at > now);
        assert_eq!(rows[1].fire_at, fire_at + TimeDelta::minutes(1));
        let rows = operator
            .preview("spread", now + TimeDelta::seconds(1), 1)
            .expect("known schedule");
        assert_eq!(rows[0].fire_at, fire_at + TimeDelta::minutes(1));
    }

    #[tokio::test]
    async fn backfill_refuses_a_tick_not_yet_due_and_names_when_it_is() {
        let (operator, spec) = operator();
        let (fire_at, now) = just_before_due(&spec);
        let error = operator
            .backfill(
                "spread",
                fire_at - TimeDelta::minutes(5),
                fire_at,
                DEFAULT_BACKFILL_MAX,
                "tester",
                now,
            )
            .await
            .expect_err("the 10:17 tick is the scheduler's");
        let message = error.to_string();
        assert!(message.contains("is not due until"), "{message}");
        assert!(
            message.contains(&spec.due_at(fire_at).to_string()),
            "{message}"
        );
    }
}
