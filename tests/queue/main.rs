//! Queue tests: upkeep's Redis queue backend (`upkeep_shared::queue`) against real Redis, with
//! real apalis-core workers.
//!
//! Each test isolates itself: a unique key prefix on the shared Redis (`REDIS_URL`), or a
//! `redis-server` of its own when it kills, pauses or measures the server. Heavy and
//! timing-sensitive tests take [`support::exclusive`] so they never overlap.
//!
//! Run with `cargo test -p upkeep-tests --test queue -- --nocapture` (figures are printed).

mod support;

mod backlog;
mod cluster;
mod idempotency;
mod latency;
mod leases;
mod malformed;
mod memory;
mod outage;
mod retries;
mod sentinel;
mod slowlog;
mod stats;
mod upgrade;
mod verdicts;
