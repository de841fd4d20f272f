//! Postgres health reports: the checklist's views (`slow_queries`, `table_bloat_stats`,
//! `index_usage_stats`, `connection_stats`), their settings, and the findings derived from
//! them.
//!
//! - [`settings`]: `[reports]`, the target databases and the thresholds.
//! - [`views`]: the SQL, embedded from `sql/*.sql`, and the DDL that installs the views.
//! - [`rows`]: one typed row per query.
//! - [`findings`]: pure functions from rows to findings with stable codes.
//!
//! This module does no IO: `store::reports` runs the queries (read-only transactions with
//! statement and lock timeouts) and `workers::handlers::reports` runs the jobs. Adapted SQL
//! keeps its notice in `THIRD_PARTY_NOTICES` at the repository root.

pub mod findings;
pub mod rows;
pub mod settings;
pub mod views;

pub use rows::{Report, SlowQueries};
pub use settings::{ReportDatabase, ReportsSettings, Thresholds};
