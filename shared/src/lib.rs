//! upkeep's library crate: everything the binaries share.
//!
//! # Layout
//! In the order a job meets them:
//! - [`config`]: the typed `Settings` tree, loaded from `upkeep.toml` and the environment.
//! - [`settings`]: what every subsystem's settings section shares (`Section`, `Problems`).
//! - [`daemons`]: the `[worker]`, `[scheduler]`, `[maintenance]` and `[api]` sections.
//! - [`job`]: ids, kinds, queue names, outcomes and handler errors.
//! - [`schedule`]: cron expressions in a time zone, next fire times (pure, no IO).
//! - [`queue`]: our Redis queue backend for apalis-core (enqueue, lease, ack, retry, dead letters).
//! - [`store`]: the Postgres ledger (`job_runs`, `schedules`, `schedule_ticks`, `findings`).
//! - [`reports`]: Postgres health reports: the views' SQL, settings, findings (pure).
//! - [`logs`], [`disk`]: log rotation, the error-log scan and the disk check (`logs.*`,
//!   `system.disk`).
//! - [`backup`]: the backup worker's dumps, catalog, verification and retention.
//! - [`reconcile`]: the maintenance pass that finds jobs Redis lost but the ledger never saw
//!   finish, and requeues or records them.
//! - [`doctor`]: `upkeepctl doctor`, a deployment checked from the operator's seat.
//! - [`operator`]: what `upkeepctl` does (enqueue, stats, dead letters, recent runs).
//! - [`tasks`]: the maintenance checklist as data, and each item's status in a period window.
//! - [`outage`]: the one way every retrying loop logs and paces a dependency outage.
//! - [`alerts`]: incidents from findings, dead letters, missed ticks, stale backups and silent
//!   schedules, delivered from a Postgres outbox to webhooks, Slack and email; heartbeat pings.
//! - [`tokens`]: OAuth2 credentials kept fresh and encrypted at rest (`tokens.refresh`).
//! - [`telemetry`]: the tracing subscriber.
//! - [`shutdown`]: the signal every long-running loop watches.

pub mod alerts;
pub mod api_access;
pub mod backup;
pub mod config;
pub mod daemons;
pub mod disk;
pub mod doctor;
pub mod job;
pub mod logs;
pub mod operator;
pub mod outage;
pub mod queue;
pub mod reconcile;
pub mod reports;
pub mod schedule;
pub mod settings;
pub mod shutdown;
pub mod store;
pub mod tasks;
pub mod telemetry;
pub mod tokens;

pub use job::{Finding, Job, JobError, JobId, JobKind, Outcome, QueueName, Severity};
pub use store::MIGRATOR;
