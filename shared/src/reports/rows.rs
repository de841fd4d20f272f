//! Typed rows of the reports, one struct per query in `sql/`. They are what `store::reports`
//! decodes, what snapshots store as JSON, and what `findings` derives findings from.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A bounded report: the top rows by its ranking column and how many rows there were in all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report<T> {
    /// At most the configured `top_n` rows, in ranking order.
    pub rows: Vec<T>,
    /// Rows before the limit.
    pub total_count: i64,
}

impl<T> Default for Report<T> {
    fn default() -> Self {
        Self {
            rows: Vec::new(),
            total_count: 0,
        }
    }
}

/// What the slow-query report found: rows, or why `pg_stat_statements` cannot be read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum SlowQueries {
    /// The extension is readable.
    Available {
        /// The statements, most total time first.
        report: Report<SlowQueryRow>,
        /// `pg_stat_statements_info.stats_reset`: since when the counters run.
        stats_reset: Option<DateTime<Utc>>,
    },
    /// The extension is missing or not preloaded; `reason` says which and how to enable it.
    Unavailable {
        /// Why, and what to do.
        reason: String,
    },
}

/// A row of `slow_queries`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct SlowQueryRow {
    /// pg_stat_statements' query id.
    pub queryid: Option<i64>,
    /// The role that ran it.
    pub username: Option<String>,
    /// Executions since the statistics reset.
    pub calls: i64,
    /// Planning plus execution time, in milliseconds.
    pub total_ms: f64,
    /// `total_ms / calls`.
    pub mean_ms: Option<f64>,
    /// Rows returned or affected.
    pub rows: i64,
    /// Share of the database's total statement time, in percent.
    pub pct_total_time: Option<f64>,
    /// The normalised statement text (first 10,000 characters).
    pub query: String,
}

/// A row of `table_bloat_stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct TableBloatRow {
    /// Schema.
    pub schemaname: String,
    /// Table.
    pub relname: String,
    /// Live tuples (statistics counter).
    pub n_live_tup: i64,
    /// Dead tuples (statistics counter).
    pub n_dead_tup: i64,
    /// `100 * dead / (live + dead)`; `None` for an empty table.
    pub dead_tuple_percent: Option<f64>,
    /// Estimated bloat in bytes (planner statistics; as fresh as the last ANALYZE).
    pub est_bloat_bytes: i64,
    /// Estimated bloat in percent of the table's pages.
    pub est_bloat_pct: f64,
    /// The estimate is unusable (never analysed, or a column type it cannot size).
    pub estimate_na: bool,
    /// Table, indexes and TOAST, in bytes.
    pub total_bytes: i64,
    /// Rows modified since the last ANALYZE.
    pub n_mod_since_analyze: i64,
    /// Last manual VACUUM.
    pub last_vacuum: Option<DateTime<Utc>>,
    /// Last autovacuum.
    pub last_autovacuum: Option<DateTime<Utc>>,
    /// Last manual ANALYZE.
    pub last_analyze: Option<DateTime<Utc>>,
    /// Last autoanalyze.
    pub last_autoanalyze: Option<DateTime<Utc>>,
}

impl TableBloatRow {
    /// The newer of the manual and automatic ANALYZE.
    #[must_use]
    pub fn analyzed_at(&self) -> Option<DateTime<Utc>> {
        self.last_analyze.max(self.last_autoanalyze)
    }
}

/// A row of `index_usage_stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct IndexUsageRow {
    /// Schema.
    pub schemaname: String,
    /// Table.
    pub relname: String,
    /// Index.
    pub indexrelname: String,
    /// The index's oid (a recreated index gets a new one).
    pub index_oid: i64,
    /// Scans since the statistics reset.
    pub index_scans: i64,
    /// Size in bytes.
    pub index_bytes: i64,
    /// Unique index.
    pub is_unique: bool,
    /// Primary key.
    pub is_primary: bool,
    /// Backs a constraint (unique, primary, exclusion, or referenced by a foreign key).
    pub backs_constraint: bool,
    /// Usable by queries (false after a failed concurrent build).
    pub is_valid: bool,
    /// When the database's statistics were last reset; `None` when never.
    pub stats_reset: Option<DateTime<Utc>>,
}

/// A row of `connection_stats`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct ConnectionRow {
    /// Client connections to the server.
    pub total: i64,
    /// ... of which to this database.
    pub this_database: i64,
    /// Running a statement.
    pub active: i64,
    /// Idle.
    pub idle: i64,
    /// Idle inside a transaction (holding its snapshot and locks).
    pub idle_in_transaction: i64,
    /// Waiting for a lock.
    pub waiting: i64,
    /// `max_connections`.
    pub max_connections: i64,
    /// `superuser_reserved_connections`.
    pub reserved_connections: i64,
    /// `100 * total / max_connections`.
    pub used_pct: f64,
}

/// An index definition, for duplicate detection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct IndexDefinition {
    /// Schema.
    pub schemaname: String,
    /// Table.
    pub relname: String,
    /// Index.
    pub indexrelname: String,
    /// Access method (`btree`, `gin`, ...).
    pub access_method: String,
    /// `pg_index.indkey` as text: column numbers, `0` for an expression.
    pub indkey: String,
    /// How many of `indkey` are key columns (the rest are `INCLUDE` columns).
    pub n_key_columns: i32,
    /// Operator classes of the key columns, as text.
    pub indclass: String,
    /// Collations, as text.
    pub indcollation: String,
    /// Per-column flags (DESC, NULLS FIRST), as text.
    pub indoption: String,
    /// Index expressions, if any.
    pub expressions: Option<String>,
    /// Partial-index predicate, if any.
    pub predicate: Option<String>,
    /// Unique.
    pub is_unique: bool,
    /// Primary key.
    pub is_primary: bool,
    /// Valid.
    pub is_valid: bool,
    /// `pg_get_indexdef`.
    pub definition: String,
    /// Size in bytes.
    pub index_bytes: i64,
}

/// An invalid index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct InvalidIndexRow {
    /// Schema.
    pub schemaname: String,
    /// Table.
    pub relname: String,
    /// Index.
    pub indexrelname: String,
    /// Size in bytes.
    pub index_bytes: i64,
}

/// Estimated bloat of a btree index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct IndexBloatRow {
    /// Schema.
    pub schemaname: String,
    /// Table.
    pub relname: String,
    /// Index.
    pub indexrelname: String,
    /// Size in bytes.
    pub index_bytes: i64,
    /// Estimated waste in bytes, at least 0.
    pub est_bloat_bytes: i64,
    /// Estimated waste in percent, at least 0.
    pub est_bloat_pct: f64,
}

/// A table read mostly by sequential scans.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct SeqScanRow {
    /// Schema.
    pub schemaname: String,
    /// Table.
    pub relname: String,
    /// Sequential scans since the statistics reset.
    pub seq_scan: i64,
    /// Index scans since the statistics reset.
    pub idx_scan: i64,
    /// Estimated live rows.
    pub n_live_tup: i64,
    /// Share of scans that used an index, in percent.
    pub index_use_pct: Option<f64>,
}

/// A table's distance to transaction-ID wraparound.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct XidRow {
    /// Schema.
    pub schemaname: String,
    /// Table.
    pub relname: String,
    /// Age of the table's relfrozenxid.
    pub xid_age: i64,
    /// Transactions left before Postgres refuses writes.
    pub transactions_left: i64,
    /// `autovacuum_freeze_max_age`.
    pub autovacuum_freeze_max_age: i64,
}
