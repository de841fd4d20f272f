//! Retention of the job outputs kept beside the ledger: `log_scan_batches` (with their
//! `log_scan_counts`, by cascade) and `report_snapshots`. They follow the ledger's own
//! retention (`[maintenance] ledger_retention`, 90 days by default): a batch or snapshot is only
//! read through the run that made it (`job_report`, the run's outcome) or as recent history, so
//! once the run is pruned it has no reader. The workers' `Pruner` calls [`prune`] on each pass
//! (`[maintenance] ledger_prune_interval`), with the ledger's cutoff.
//!
//! Not here: `disk_samples` are pruned by every `system.disk` run (`[disk] sample_retention`),
//! and the scan cursors (`log_cursors`) are one row per source, never history.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::store;

/// Deletes scan batches committed and report snapshots taken before `cutoff`, in bounded
/// batches; returns `(batches, snapshots)` deleted. Several workers may run it at once.
///
/// # Errors
/// When Postgres fails; what was deleted stays deleted.
pub async fn prune(pool: &PgPool, cutoff: DateTime<Utc>) -> Result<(u64, u64), store::Error> {
    let n_batches = store::log_cursors::prune_batches(pool, cutoff).await?;
    let n_snapshots = store::reports::prune_snapshots(pool, cutoff).await?;
    if n_batches + n_snapshots > 0 {
        tracing::info!(n_batches, n_snapshots, %cutoff, "pruned log scan batches and report snapshots");
    }
    Ok((n_batches, n_snapshots))
}
