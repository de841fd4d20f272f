//! `scheduler_replicas`: each running scheduler replica's live sign, so that a starting replica
//! leaves to a live one the ticks it has not decided yet.
//!
//! A replica writes [`heartbeat`] after passes of its loop: `decided_until` is the instant up
//! to which it has decided every due tick. A replica that starts, or recovers from an outage,
//! asks [`live_horizon`] for the oldest such instant among the others still alive, and plans
//! catch-up (which may record `missed`) only up to it; later ticks it enqueues like any live
//! tick, racing the others through the tick's unique row.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::Error;

/// Records that `identity` is alive at `seen_at` and has decided every tick due at or before
/// `decided_until`.
///
/// # Errors
/// [`Error::Database`] on a database error.
pub async fn heartbeat(
    pool: &PgPool,
    identity: &str,
    decided_until: DateTime<Utc>,
    seen_at: DateTime<Utc>,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO scheduler_replicas (identity, decided_until, seen_at) VALUES ($1, $2, $3) \
         ON CONFLICT (identity) DO UPDATE SET \
             decided_until = GREATEST(scheduler_replicas.decided_until, EXCLUDED.decided_until), \
             seen_at = EXCLUDED.seen_at",
    )
    .bind(identity)
    .bind(decided_until)
    .bind(seen_at)
    .execute(pool)
    .await?;
    Ok(())
}

/// The oldest `decided_until` of the replicas other than `identity` seen after `alive_after`,
/// or `None` when no other replica is alive.
///
/// # Errors
/// [`Error::Database`] on a database error.
pub async fn live_horizon(
    pool: &PgPool,
    identity: &str,
    alive_after: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, Error> {
    let (horizon,): (Option<DateTime<Utc>>,) = sqlx::query_as(
        "SELECT min(decided_until) FROM scheduler_replicas \
          WHERE identity <> $1 AND seen_at > $2",
    )
    .bind(identity)
    .bind(alive_after)
    .fetch_one(pool)
    .await?;
    Ok(horizon)
}

/// Removes `identity`'s row (a replica stopping cleanly), and rows of replicas not seen since
/// `dead_before`; returns how many rows went.
///
/// # Errors
/// [`Error::Database`] on a database error.
pub async fn forget(
    pool: &PgPool,
    identity: &str,
    dead_before: DateTime<Utc>,
) -> Result<u64, Error> {
    let result = sqlx::query("DELETE FROM scheduler_replicas WHERE identity = $1 OR seen_at < $2")
        .bind(identity)
        .bind(dead_before)
        .execute(pool)
        .await?;
    Ok(result.rows_affected())
}
