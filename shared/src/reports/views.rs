//! The four report views (`slow_queries`, `table_bloat_stats`, `index_usage_stats`,
//! `connection_stats`) and the other report queries, as SQL files embedded here.
//!
//! Each view's `SELECT` lives in `sql/<view>.sql` and is used twice: wrapped in
//! `CREATE OR REPLACE VIEW` by [`install_sql`] (the migration in upkeep's own database holds
//! exactly that text, a unit test checks it, and `upkeepctl reports install-views` runs it in a
//! target database), and wrapped with a `LIMIT` and a total count by `store::reports`, which
//! reads targets where the views may not be installed. This module does no IO.
//!
//! `slow_queries` reads `pg_stat_statements`, which may be missing (not installed in the
//! database, or its library not in `shared_preload_libraries`). A plain view over it could not
//! even be created then, so the view selects from the function `upkeep_slow_queries()`, which
//! checks `pg_extension` and runs the query dynamically, returning no rows when the extension is
//! unavailable.

/// `SELECT` of the `slow_queries` view (pg_stat_statements of the current database).
pub const SLOW_QUERIES: &str = include_str!("sql/slow_queries.sql");
/// `SELECT` of the `table_bloat_stats` view.
pub const TABLE_BLOAT_STATS: &str = include_str!("sql/table_bloat_stats.sql");
/// `SELECT` of the `index_usage_stats` view.
pub const INDEX_USAGE_STATS: &str = include_str!("sql/index_usage_stats.sql");
/// `SELECT` of the `connection_stats` view (one row).
pub const CONNECTION_STATS: &str = include_str!("sql/connection_stats.sql");
/// Index definitions on tables with several indexes (binds `$1` = row limit).
pub const INDEX_DEFINITIONS: &str = include_str!("sql/index_definitions.sql");
/// Invalid indexes (binds `$1` = row limit).
pub const INVALID_INDEXES: &str = include_str!("sql/invalid_indexes.sql");
/// Estimated btree bloat (binds `$1` = row limit).
pub const INDEX_BLOAT: &str = include_str!("sql/index_bloat.sql");
/// Tables read mostly by sequential scans (binds `$1` = row limit).
pub const SEQ_SCAN_HEAVY: &str = include_str!("sql/seq_scan_heavy.sql");
/// Tables closest to transaction-ID wraparound (binds `$1` = row limit).
pub const XID_WRAPAROUND: &str = include_str!("sql/xid_wraparound.sql");

/// The names of the views [`install_sql`] creates.
pub const VIEW_NAMES: &[&str] = &[
    "slow_queries",
    "table_bloat_stats",
    "index_usage_stats",
    "connection_stats",
];

/// The DDL that creates (or replaces) the four views and the function behind `slow_queries`,
/// as one script. The migration `*_create_report_views.sql` is exactly this text.
#[must_use]
pub fn install_sql() -> String {
    format!(
        "-- Report views (generated from shared/src/reports/sql/*.sql by reports::views::install_sql;\n\
         -- a unit test keeps this migration identical to it).\n\
         CREATE OR REPLACE FUNCTION upkeep_slow_queries()\n\
         RETURNS TABLE (queryid bigint, username text, calls bigint, total_ms float8, mean_ms float8,\n\
         \x20              rows bigint, pct_total_time float8, query text)\n\
         LANGUAGE plpgsql STABLE AS $fn$\n\
         BEGIN\n\
         \x20   IF NOT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements') THEN\n\
         \x20       RETURN;\n\
         \x20   END IF;\n\
         \x20   RETURN QUERY EXECUTE $q$\n{SLOW_QUERIES}$q$;\n\
         EXCEPTION\n\
         \x20   -- Installed but not in shared_preload_libraries, or an extension version older\n\
         \x20   -- than the server (ALTER EXTENSION pg_stat_statements UPDATE fixes that).\n\
         \x20   WHEN object_not_in_prerequisite_state OR undefined_table OR undefined_column THEN\n\
         \x20       RETURN;\n\
         END\n\
         $fn$;\n\n\
         CREATE OR REPLACE VIEW slow_queries AS\nSELECT * FROM upkeep_slow_queries();\n\n\
         CREATE OR REPLACE VIEW table_bloat_stats AS\n{TABLE_BLOAT_STATS};\n\n\
         CREATE OR REPLACE VIEW index_usage_stats AS\n{INDEX_USAGE_STATS};\n\n\
         CREATE OR REPLACE VIEW connection_stats AS\n{CONNECTION_STATS};\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_migration_creates_exactly_the_views_install_views_creates() {
        let migration = include_str!("../../../migrations/20261129700001_create_report_views.sql");
        assert_eq!(
            migration,
            install_sql(),
            "regenerate the migration from reports::views::install_sql()"
        );
    }

    #[test]
    fn every_view_is_created_by_the_install_script() {
        let sql = install_sql();
        for name in VIEW_NAMES {
            assert!(
                sql.contains(&format!("CREATE OR REPLACE VIEW {name} AS")),
                "{name}"
            );
        }
    }
}
