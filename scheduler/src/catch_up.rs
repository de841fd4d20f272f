//! Catch-up: the ticks that fell due while this replica could not act (it was not running, its
//! stores were away, or the clock jumped), decided by the schedule's catch-up policy.
//!
//! At start ([`Scheduler::catch_up_all`]) and in the loop after an outage or a clock jump
//! ([`Scheduler::catch_up_live`]) the same plan (`schedule::plan_catch_up`) is made up to the
//! same decision instant ([`Scheduler::decision_instant`]), and the loop continues at
//! `schedule::live_after` of it: one boundary, so no tick is decided twice or left without a row.

use chrono::{DateTime, Utc};
use upkeep_shared::schedule::{TickDecision, live_after, plan_catch_up};
use upkeep_shared::store::replicas;
use upkeep_shared::store::ticks::{self, Decision};

use crate::due::{DueHeap, Entry};
use crate::fire::CLAIM_CHUNK;
use crate::{CATCH_UP_GRACE, Scheduler};

impl Scheduler {
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
    pub(crate) async fn catch_up_all(
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
    pub(crate) async fn decision_instant(
        &self,
        now: DateTime<Utc>,
    ) -> anyhow::Result<DateTime<Utc>> {
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
    pub(crate) async fn record_catch_up(
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
    pub(crate) async fn catch_up_live(
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
    pub(crate) fn plan_entry(
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
}
