//! upkeep's library crate: everything the binaries share.
//!
//! # Layout
//! In the order a job meets them:
//! - [`config`]: the typed `Settings` tree, loaded from `upkeep.toml` and the environment.
//! - [`settings`]: what every subsystem's settings section shares (`Section`, `Problems`).
//! - [`job`]: ids, kinds, queue names, outcomes and handler errors.
//! - [`schedule`]: cron expressions in a time zone, next fire times (pure, no IO).
//! - [`queue`]: our Redis queue backend for apalis-core (enqueue, lease, ack, retry, dead letters).
//! - [`store`]: the Postgres ledger (`job_runs`, `schedules`, `schedule_ticks`, `findings`).
//! - [`backup`]: the backup worker's dumps, catalog, verification and retention.
//! - [`reconcile`]: the maintenance pass that finds jobs Redis lost but the ledger never saw
//!   finish, and requeues or records them.
//! - [`tasks`]: the maintenance checklist as data, and each item's status in a period window.
//! - [`telemetry`]: the tracing subscriber.
//! - [`shutdown`]: the signal every long-running loop watches.

pub mod backup;
pub mod config;
pub mod job;
pub mod queue;
pub mod reconcile;
pub mod schedule;
pub mod settings;
pub mod shutdown;
pub mod store;
pub mod tasks;
pub mod telemetry;

pub use job::{Finding, Job, JobError, JobId, JobKind, Outcome, QueueName, Severity};
pub use store::MIGRATOR;
