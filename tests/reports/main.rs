//! The Postgres health reports (`db.slow_queries`, `db.bloat`, `db.index_usage`) against real
//! databases: each test makes its own target database (on the shared Postgres, or on a private
//! cluster when `pg_stat_statements` must be preloaded) and its own migrated upkeep database,
//! runs the handlers as a worker would, and records their outcomes through the ledger so the
//! next run sees the open findings.

mod support;

mod indexes;
mod queues;
mod scale;
mod slow_queries;
mod tables;
mod targets;
