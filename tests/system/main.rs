//! System tests: the real binaries against real Redis and Postgres.
//!
//! Run them with `scripts/test.sh`, which provides the services and builds the binaries
//! first (see `upkeep_tests` for the helpers). One module per area of behaviour; each test
//! has a database and a Redis key prefix of its own (`support::Deployment`), so they run in
//! parallel.

mod alerts;
mod backup;
mod bench;
mod check_config;
mod cron_ctl;
mod disk;
mod enqueue;
mod harness;
mod logs_retention;
mod logs_rotate;
mod logs_scan;
mod outages;
mod reports;
mod retention;
mod schedule_catch_up;
mod schedule_config;
mod schedule_ctl;
mod schedule_ledger;
mod schedule_overlap;
mod schedule_replicas;
mod schedule_rows;
mod schedule_start;
mod schedule_watchdog;
mod scheduling;
mod startup;
mod stopping;
mod support;
mod telemetry_file;
mod tokens;
mod up;
mod worker_logging;
