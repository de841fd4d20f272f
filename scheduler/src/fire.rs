//! Firing due ticks: claim each tick in the ledger, enqueue the ticks this replica won, confirm
//! them; in bulk for schedules without an overlap policy, one tick at a time for the others.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use sqlx::PgPool;
use upkeep_shared::queue::NewJob;
use upkeep_shared::schedule::Overlap;
use upkeep_shared::store::schedules;
use upkeep_shared::store::ticks::{self, Decision};
use upkeep_shared::{JobId, QueueName};

use crate::due::{DueHeap, Entry};
use crate::{Scheduler, enqueue_tick, tick_job};

/// Most ticks claimed in one statement.
pub(crate) const CLAIM_CHUNK: usize = 1000;

/// Most ticks of one schedule handled in one pass (a clock jump must not stall the loop).
const MAX_TICKS_PER_PASS: usize = 1000;

/// The names of paused schedules, re-read when older than the loop's longest sleep.
#[derive(Default)]
pub(crate) struct PausedFlags {
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

impl Scheduler {
    /// Claims and enqueues every due tick of every schedule whose next tick is due.
    ///
    /// Schedules that allow overlap are handled in bulk: one claim statement for all their
    /// due ticks, one enqueue per queue, one confirm statement. Schedules with an overlap
    /// policy look at their previous job first, one tick at a time. Every schedule taken off
    /// the heap goes back on it, with its next tick, whatever happens.
    pub(crate) async fn fire_due(
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

    pub(crate) async fn fire_entries(
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
    pub(crate) async fn claim_and_enqueue_bulk(
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
    pub(crate) async fn claim_and_enqueue(
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
    pub(crate) async fn overlap_blocks(&self, entry: &Entry) -> anyhow::Result<Option<String>> {
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
}
