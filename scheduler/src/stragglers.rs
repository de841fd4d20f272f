//! Stragglers: ticks claimed by a replica that died before its enqueue was confirmed, enqueued
//! again by any replica after `scheduler.confirm_timeout` (the tick's idempotency key makes a
//! second enqueue harmless).

use chrono::{DateTime, Utc};
use upkeep_shared::store::ticks;

use crate::due::Entry;
use crate::{Scheduler, enqueue_tick};

/// Most unconfirmed claims the straggler scan looks at per pass.
const STRAGGLER_PAGE: i64 = 100;

impl Scheduler {
    /// Re-enqueues ticks claimed but never confirmed (their claimer died in between), one
    /// page of [`STRAGGLER_PAGE`] per call.
    ///
    /// The scan continues from where the previous call stopped (`after`) and wraps around at
    /// the end, and a claim whose enqueue fails does not stop the others: claims that fail
    /// every time cannot keep the scan from the rest. Claims of schedules this replica does
    /// not run (disabled, removed) are not listed. Returns the first error, after trying
    /// every claim of the page, when none of them could be enqueued.
    pub(crate) async fn confirm_stragglers(
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
}
