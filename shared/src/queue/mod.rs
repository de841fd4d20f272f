//! upkeep's Redis queue backend for apalis-core 1.0.
//!
//! We do not use apalis-redis 1.0.0 (see DESIGN.md, decision 1). This module owns the Redis
//! protocol: key names ([`keys`]), Lua scripts (`lua/*.lua`), their typed callers ([`Queue`])
//! and the apalis-core [`Backend`](apalis_core::backend::Backend) that workers run on
//! ([`RedisBackend`]).
//!
//! # Connection
//! Every call goes through a [`RedisConn`], built from a [`RedisTarget`] (the `[redis]`
//! settings): one server (`redis://`, `rediss://`), a Sentinel-managed master
//! (`redis+sentinel://`, format in [`SentinelUrl`]) or a Redis Cluster (`cluster_urls`). A worker
//! holds two: a multiplexed one for commands and scripts, and one of its own for the blocking
//! wait on `wake` (BLPOP), which must not share a socket. Under Sentinel each finds the master
//! through the sentinels and looks again after a connection error, a timeout or a `READONLY`,
//! `UNBLOCKED`, `MASTERDOWN` or `NOREPLICAS` reply, and, while in use, checks every 500 ms that
//! the sentinels still name the same master (after `SENTINEL FAILOVER` the old master accepts
//! writes for about ten seconds before it is demoted). To the worker loops a failover is an
//! outage like any other: logged once, retried with backoff. Replication is asynchronous, so
//! writes the old master acknowledged after its replica was promoted are lost;
//! `min-replicas-to-write 1` on the master makes it refuse them instead.
//!
//! # Key layout
//! Every key of a queue is `<prefix>:{<queue>}:<suffix>`; the braces are the Redis Cluster hash
//! tag, so a queue lives in one slot and no script touches a key outside it. There are no global
//! keys.
//!
//! | suffix | type | content |
//! |---|---|---|
//! | `job:<id>` | hash | `kind`, `args`, `attempt`, `max` (absolute limit), `base` (attempts before the current budget, set by requeue), `enq`, `run_at`, `avail` (when it last became ready, if not at enqueue), `state`, `token`, `worker`, `leased_at`, `err`, `sched`, `tick`, `idem`, `finished` |
//! | `ready` | list | ids ready to run; LPUSH on enqueue, RPOP on fetch |
//! | `delayed` | zset | ids scored by run-at ms |
//! | `retry` | zset | ids scored by retry-at ms |
//! | `leases` | zset | ids scored by lease deadline ms |
//! | `dead` | zset | ids scored by time of death ms |
//! | `stats` | hash | counters, see [Counters](#counters) |
//! | `fence` | string | fencing-token counter |
//! | `workers` | zset | worker ids scored by last sign of life |
//! | `wake` | list | wake-up tokens idle workers block on (capped at 64) |
//! | `tokens` | hash | job id → its current lease, `token|attempt|worker|leased_at` (only while leased) |
//! | `holders` | hash | job id → `worker|leased_at`: only for a lease written by an earlier release, before leases were one value (see below) |
//! | `attempts` | hash | job id → attempts used so far, kept only when that count outlives a lease: from a job's second attempt on, and after an attempt that ended without completing it; until dead or deleted |
//!
//! `tokens` also holds one pin field (a name longer than `hash-max-listpack-value`, never
//! read) that keeps it in hashtable encoding, so field lookups stay O(1) instead of scanning a
//! listpack of live leases; it is never deleted.
//!
//! A lease used to be three hash entries (`tokens` the bare token, `holders`, `attempts` for
//! every leased job); it is one value now, which took a third of Redis's work off each job.
//! During a rolling upgrade workers of both releases share a queue: every script reads both
//! forms (`lua/lease.lua`), takes over the other's expired leases with their holder and count,
//! and keeps `attempts` exact wherever the earlier release reads it (a job's first attempt has
//! no entry, and the earlier release reads a missing entry as 0 attempts used).
//! `tests/queue/upgrade.rs` plays the earlier release's scripts against this one.
//! | `done` | zset | completed job ids scored by completion time; fetch deletes their hashes in bulk after `retention` |
//! | `idem:<key>` | string | the job id an idempotency key stands for; no expiry while the job can be acted on, then it expires with the job (and never before enqueue + `idempotency_ttl`) |
//!
//! # Scripts and their contracts
//! Times come from Redis (`TIME`), so worker clocks do not matter for leases. Every range read
//! has a `LIMIT`; no script's cost grows with the backlog.
//! - `enqueue.lua`: per job, claim the idempotency key (`SET NX`) or return the id already
//!   holding it with that job's current state; write the hash; LPUSH to `ready` or ZADD to
//!   `delayed`; push wake tokens.
//! - `fetch.lua`: promote at most `maintenance_limit` due ids from `delayed` and `retry`; take
//!   over at most `maintenance_limit` expired leases as *verdict leases* of the fetching worker
//!   (new token, same attempt count: the worker settles each to what the ledger holds for the
//!   lost attempt, see `backend::completer`); trim at most `maintenance_limit` old dead letters
//!   and completed jobs; RPOP up to `count` ids and lease each: `attempt += 1` (a job already
//!   at its limit is dead-lettered instead), a new fencing token from `fence`, ZADD `leases`
//!   at now + lease. The lease is one value in the per-queue `tokens` hash, written once per
//!   batch (and a job's count in `attempts` from its second attempt on): leasing a job costs
//!   one HMGET of its hash and nothing else per job, which is what makes the hot path cheap.
//!   `attempts` is not even read while it does not exist. Returns the leased jobs, the verdict leases
//!   and, when the ready list ran out (fewer ids than asked for, none included), when the next
//!   delayed job is due: the worker then waits on `wake` before its next fetch instead of
//!   paying one that finds nothing.
//! - `ack.lua`: per settlement, refuse it unless the token is the job's current lease's in
//!   `tokens` (a settled or reclaimed lease has none); else complete (expire after retention),
//!   schedule a retry, dead-letter, give back a counted attempt (`release`: ready, or dead on
//!   the last attempt) or an unstarted one (`unstarted`: ready, not counted). Lease
//!   bookkeeping is removed once per batch, and a completion is one ZADD to `done` per batch.
//!   The reply is one string, a letter per settlement; `fetch.lua` replies with four strings
//!   per leased job (its numbers joined in one): reply strings cost Redis and the worker's
//!   RESP parser as much as the work itself.
//! - `renew.lua`: extend leases whose token still matches; report the ones lost.
//! - `release.lua`: give leases back to `ready` (on shutdown): unstarted attempts do not
//!   count; a started one counts, and on the last attempt the job is dead instead.
//! - `requeue.lua`: operator moves a dead job back to `ready` with a fresh attempt budget.
//! - `restore.lua`: reconciliation puts back a job whose hash Redis lost (same id, attempts
//!   counted on from the ledger); a job whose hash exists is never touched.
//! - `stats.lua`: LLEN/ZCARD/HGETALL, all O(1) in the backlog.
//!
//! Max attempts is a hard bound on every path: a retry, a lost lease or a release at shutdown
//! on the last attempt makes a dead letter, and fetch never leases attempt `max + 1`.
//!
//! # Counters
//! The `stats` hash holds monotonic counters; what moves each one:
//! - `enqueued`: a job created in Redis: a new job in `enqueue.lua` (not a duplicate of an
//!   idempotency key), or a lost job put back by `restore.lua`.
//! - `requeued`: a dead letter revived by an operator (`requeue.lua`).
//! - `succeeded`: a job completed (`ack.lua` done), including a redelivery skipped because
//!   the ledger already had its success and a taken-over lease settled to a committed success.
//! - `failed`: an attempt that ended without success and counts: a handler failure, timeout or
//!   panic (`ack.lua` retry or dead), a lost lease with no result in the ledger (`ack.lua`
//!   release), a worker stopped mid-attempt (`release.lua` started).
//! - `retried`: a failed attempt after which the job is tried again (retry zset, or back to
//!   `ready`). `failed = retried + the dead letters that followed a failed attempt`.
//! - `dead`: a job moved to the dead letters, by any path (including ids with no job data and
//!   jobs found at their limit by `fetch.lua`).
//! - `reclaimed`: an expired lease taken over by `fetch.lua` (its attempt is then counted in
//!   `succeeded`, `failed`, or nowhere when the ledger says it was already settled).
//!
//! `oldest_pending_age_seconds` is the time since the next job in line became ready (its
//! `avail`, or its `run_at` when it was enqueued to run now), not since its first enqueue.
//!
//! # Job state machine
//! ```text
//!            enqueue (run_at > now)          fetch: promote when due
//!  (new) ──────────────────────────▶ scheduled ───────────────┐
//!    │ enqueue (now)                                           ▼
//!    └──────────────────────────────────────────────────▶ available ◀──── release (shutdown)
//!                                                             │  ▲  ◀──── requeue (operator)
//!                                        fetch: lease+token   │  │ fetch: lease expired,
//!                                                             ▼  │ attempts left (reclaim)
//!                                                          running ──────────────┐
//!              ack done ┌────────────────────────────────────┤ │ ack retry         │ lease expired on
//!                       ▼                     ack dead /     │ ▼                   │ the last attempt
//!                  completed                  last attempt   │ retryable ──▶ available (fetch: due)
//!            (expires after retention)                       ▼                   │
//!                                                        discarded (dead) ◀──────┘
//!                                               (expires after dead retention)
//! ```
//! The worker moves jobs out of `running` (ack, release); `fetch` moves them in and also does the
//! timed moves (promotion, reclaim); operators requeue dead jobs; nothing else writes job state.

mod backend;
mod client;
mod conn;
pub mod keys;
mod ledger;
mod memory;
mod restore;
mod sentinel;
pub mod settings;

use std::time::Duration;

pub use backend::{
    BackendCounters, ConsumerOptions, KindPolicy, LeaseBook, LeaseEntry, LeasePurpose,
    RedisBackend, SettleLayer, SettleService, now_ms, release_leftovers,
};
pub use client::{
    ENQUEUE_CHUNK, Enqueued, Fetched, JobRecord, JobState, Leased, NewJob, Queue, QueueStats,
    Reclaimed, Settled, Settlement, Verdict,
};
pub use conn::{RedisConn, RedisTarget};
pub use ledger::{Attempt, AttemptStatus, History, Ledger, NextState, NoLedger, Recorded};
pub use memory::{EvictionPolicy, check_eviction_policy};
pub use restore::LostJob;
pub use sentinel::{DEFAULT_SENTINEL_PORT, SENTINEL_SCHEME, SentinelUrl};
pub use settings::{JobPolicy, KeyPrefix, KindSettings, QueueSettings, RedisSettings};

/// Errors of the queue layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Redis failed or timed out; retrying later is the right answer.
    #[error("redis command failed")]
    Redis(#[source] redis::RedisError),
    /// Redis is at its `maxmemory` and, under `noeviction`, refused the write: nothing was
    /// written (an enqueue enqueued nothing). Free memory or raise the limit.
    #[error(
        "redis is out of memory (maxmemory reached; with maxmemory-policy noeviction it refuses \
         writes instead of evicting jobs): the refused command wrote nothing"
    )]
    OutOfMemory(#[source] redis::RedisError),
    /// Redis answered something the scripts never return.
    #[error("unexpected reply from redis: {0}")]
    Protocol(String),
    /// The caller passed something invalid.
    #[error("{0}")]
    Invalid(String),
}

impl From<redis::RedisError> for Error {
    fn from(error: redis::RedisError) -> Self {
        if error.code() == Some("OOM") {
            Self::OutOfMemory(error)
        } else {
            Self::Redis(error)
        }
    }
}

/// Timing options of one queue, shared by producers and consumers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueOptions {
    /// How long a fetched job is leased before another worker may take it. Defaults to 30 s.
    pub lease: Duration,
    /// How long a completed job stays in Redis. Defaults to 1 h.
    pub retention: Duration,
    /// How long a dead letter stays in Redis. Defaults to 7 days.
    pub dead_retention: Duration,
    /// How long an idempotency key is remembered at least, from enqueue; it lives on as long
    /// as its job can be acted on, whatever this says. Defaults to 24 h.
    pub idempotency_ttl: Duration,
    /// The most due jobs promoted, and expired leases reclaimed, per fetch. Defaults to 200.
    pub maintenance_limit: usize,
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(30),
            retention: Duration::from_secs(3600),
            dead_retention: Duration::from_secs(7 * 24 * 3600),
            idempotency_ttl: Duration::from_secs(24 * 3600),
            maintenance_limit: 200,
        }
    }
}

/// Exponential backoff with full jitter: a uniform draw from `[0, min(max, base * 2^(attempt-1))]`.
///
/// Full jitter spreads the retries of jobs that failed together (e.g. during a Postgres
/// outage) instead of sending them back in one wave.
#[must_use]
pub fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let exponent = attempt.saturating_sub(1).min(30);
    let ceiling = base.saturating_mul(1u32 << exponent).min(max);
    let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(rand::random_range(0..=millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_under_the_exponential_ceiling_and_the_cap() {
        let base = Duration::from_secs(1);
        let max = Duration::from_secs(60);
        for _ in 0..200 {
            assert!(backoff(1, base, max) <= Duration::from_secs(1));
            assert!(backoff(3, base, max) <= Duration::from_secs(4));
            assert!(backoff(30, base, max) <= max);
        }
    }

    #[test]
    fn backoff_is_jittered() {
        let draws: std::collections::HashSet<Duration> = (0..50)
            .map(|_| backoff(5, Duration::from_secs(1), Duration::from_secs(60)))
            .collect();
        assert!(
            draws.len() > 10,
            "full jitter should spread draws, got {draws:?}"
        );
    }
}
