//! The run loop: start-up (migrations, reconciliation, catch-up), then sleep until the next due
//! tick, fire, write this replica's live sign, and finish stragglers, until shutdown.

use std::time::Duration;

use chrono::{DateTime, Utc};
use upkeep_shared::config::ScheduleSettings;
use upkeep_shared::outage::Outage;
use upkeep_shared::shutdown::Shutdown;
use upkeep_shared::store::{replicas, schedules};

use crate::due::DueHeap;
use crate::fire::PausedFlags;
use crate::{CATCH_UP_GRACE, Scheduler};

impl Scheduler {
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
        let mut outage = Outage::new("postgres/redis", "catch up");
        while let Err(error) = self.catch_up_all(&mut entries, started_at).await {
            if !wait_out(&mut outage, &shutdown, &error).await {
                return Ok(());
            }
        }
        outage.recovered();
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
        // The loop's own pace is its retry: a failed pass is tried again within tick_interval.
        let mut outage = Outage::new("postgres/redis", "schedule ticks").with_max_delay(max_sleep);
        let mut retry_in = max_sleep;
        loop {
            let failing = outage.is_down();
            let now = self.clock.now();
            let mut sleep = due
                .next_due()
                .map_or(max_sleep, |due_at| {
                    (due_at - now).to_std().unwrap_or(Duration::ZERO)
                })
                .min(max_sleep);
            if failing {
                // Ticks stay due while the stores are away; do not spin on them.
                sleep = retry_in;
            }
            if !sleep.is_zero() {
                tokio::select! {
                    () = tokio::time::sleep(sleep) => {}
                    () = shutdown.wait() => break,
                }
            } else if shutdown.is_triggered() {
                break;
            }
            // Read together: a slow pass moves both alike and is not mistaken for a jump.
            let pass_now = self.clock.now();
            let pass_mono = tokio::time::Instant::now();
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
                last_ok = Some((pass_now, pass_mono));
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
                Ok(()) => {
                    outage.recovered();
                    // The systemd watchdog's heartbeat, and the last pass for STATUS=.
                    upkeep_shared::daemons::vitals().scheduler_pass(pass_now, entries.len());
                }
                Err(error) => retry_in = outage.failed(error.as_ref()),
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
        let mut outage = Outage::new("postgres", what);
        loop {
            match step().await {
                Ok(value) => {
                    outage.recovered();
                    return Some(value);
                }
                Err(error) => {
                    if !wait_out(&mut outage, shutdown, &error).await {
                        return None;
                    }
                }
            }
        }
    }
}

/// Records a failed try of a start-up step in `outage` (logged once per outage) and waits the
/// backoff it returns; false when shutdown fired meanwhile.
async fn wait_out(outage: &mut Outage, shutdown: &Shutdown, error: &anyhow::Error) -> bool {
    let delay = outage.failed(error.as_ref());
    tokio::select! {
        () = tokio::time::sleep(delay) => true,
        () = shutdown.wait() => false,
    }
}
