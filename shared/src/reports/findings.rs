//! Findings derived from report rows: pure functions, no IO, so every rule is unit-tested here.
//!
//! Subjects start with the report database's name (`app`, `app.public.orders`,
//! `app.public.orders_a_idx/orders_b_idx`, `app.query.<queryid>`), so a handler can resolve
//! the open conditions of exactly the databases it reported on (`job::resolutions`).
//!
//! Staleness: the bloat estimate reads `relpages`, `reltuples` and `pg_stats`, refreshed only
//! by VACUUM and ANALYZE. A table counts as not analysed recently when it was never analysed,
//! or when more rows changed since its last ANALYZE than autovacuum's own analyze trigger with
//! the default settings (50 rows plus 10 % of the live rows); its findings then say so.
//!
//! Unused indexes: Postgres 15 records no index creation time and no last-scan time, so an
//! index's age is the time since upkeep first saw it in an `index_usage` report
//! (`report_index_first_seen`, keyed by the index oid so a recreated index starts over), and
//! the scan count only means something when the statistics cover that long too (the database's
//! `stats_reset` is older than `unused_index_min_age`, or was never reset). Only the indexes in
//! a report's top N (fewest scans first) are noted, so an index first counts from the report
//! in which it first ranks among the least used: later than its creation, never earlier.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::rows::{
    ConnectionRow, IndexBloatRow, IndexDefinition, IndexUsageRow, InvalidIndexRow, SeqScanRow,
    SlowQueries, TableBloatRow, XidRow,
};
use super::settings::Thresholds;
use crate::job::{Finding, Severity};

/// A target database whose part of a report failed (critical; subject: the database).
pub const TARGET_FAILED: &str = "reports.target_failed";
/// `pg_stat_statements` cannot be read (warn; subject: the database).
pub const STATS_UNAVAILABLE: &str = "query.stats_unavailable";

/// The codes `db.slow_queries` raises (and resolves).
pub const SLOW_QUERY_CODES: &[&str] = &[
    "query.slow",
    STATS_UNAVAILABLE,
    "connections.near_max",
    TARGET_FAILED,
];
/// The codes `db.bloat` raises (and resolves).
pub const BLOAT_CODES: &[&str] = &[
    "table.dead_tuples_pct",
    "table.bloat_pct",
    "xid.wraparound_risk",
    TARGET_FAILED,
];
/// The codes `db.index_usage` raises (and resolves).
pub const INDEX_CODES: &[&str] = &[
    "index.unused",
    "index.duplicate",
    "index.bloat_pct",
    "index.invalid",
    "table.seq_scan_heavy",
    TARGET_FAILED,
];

/// Tables with fewer tuples than this get no dead-tuple finding: a few dead rows in a tiny
/// table are noise.
pub const MIN_TUPLES: i64 = 1000;
/// Relations smaller than this get no bloat finding: a few pages always look bloated.
pub const MIN_BLOAT_BYTES: i64 = 1 << 20;
/// Transactions left below which wraparound is critical (pghero's threshold).
pub const XID_CRITICAL_LEFT: i64 = 10_000_000;

/// How to enable `pg_stat_statements`, for the unavailable report and its finding.
pub const HOW_TO_ENABLE_STATEMENTS: &str = "add pg_stat_statements to shared_preload_libraries \
     in postgresql.conf, restart Postgres, then run CREATE EXTENSION pg_stat_statements in this \
     database";

/// `query.slow` for each statement at or over both thresholds, or one warn
/// `query.stats_unavailable` saying how to enable the extension.
#[must_use]
pub fn slow_queries(db: &str, report: &SlowQueries, t: &Thresholds) -> Vec<Finding> {
    match report {
        SlowQueries::Unavailable { reason } => vec![
            Finding::new(
                STATS_UNAVAILABLE,
                Severity::Warn,
                format!("slow queries unavailable in {db}: {reason}"),
            )
            .with_subject(db),
        ],
        SlowQueries::Available { report, .. } => report
            .rows
            .iter()
            .filter(|row| row.calls >= t.slow_min_calls && row.mean_ms.unwrap_or(0.0) >= t.slow_mean_ms)
            .map(|row| {
                let id = row.queryid.map_or_else(|| "unknown".to_owned(), |id| id.to_string());
                let text: String = row.query.chars().take(120).collect();
                Finding::new(
                    "query.slow",
                    Severity::Warn,
                    format!(
                        "mean {:.1} ms over {} calls ({:.1} % of the database's statement time): {text}",
                        row.mean_ms.unwrap_or(0.0),
                        row.calls,
                        row.pct_total_time.unwrap_or(0.0),
                    ),
                )
                .with_subject(format!("{db}.query.{id}"))
                .with_detail(json!({
                    "queryid": row.queryid, "calls": row.calls, "mean_ms": row.mean_ms,
                    "total_ms": row.total_ms, "query": row.query,
                }))
            })
            .collect(),
    }
}

/// `connections.near_max`: warn at 80 % of the connections non-superusers may open, critical
/// at 95 %.
#[must_use]
pub fn connections(db: &str, row: &ConnectionRow) -> Vec<Finding> {
    let usable = (row.max_connections - row.reserved_connections).max(1);
    #[expect(clippy::cast_precision_loss, reason = "connection counts are small")]
    let used_pct = 100.0 * row.total as f64 / usable as f64;
    let severity = if used_pct >= 95.0 {
        Severity::Critical
    } else if used_pct >= 80.0 {
        Severity::Warn
    } else {
        return Vec::new();
    };
    vec![
        Finding::new(
            "connections.near_max",
            severity,
            format!(
                "{} of {usable} usable connections open ({used_pct:.0} %): {} active, {} idle in transaction, {} waiting for a lock",
                row.total, row.active, row.idle_in_transaction, row.waiting
            ),
        )
        .with_subject(db),
    ]
}

/// Why a table's estimate is stale, or `None` when it was analysed recently (see the module
/// docs for the rule).
#[must_use]
pub fn staleness(row: &TableBloatRow) -> Option<String> {
    let Some(analyzed_at) = row.analyzed_at() else {
        return Some("the table was never analysed".to_owned());
    };
    #[expect(clippy::cast_precision_loss, reason = "row counts; an estimate")]
    let trigger = 50.0 + 0.1 * row.n_live_tup as f64;
    #[expect(clippy::cast_precision_loss, reason = "row counts; an estimate")]
    let stale = row.n_mod_since_analyze as f64 > trigger;
    stale.then(|| {
        format!(
            "{} rows changed since the last ANALYZE at {}",
            row.n_mod_since_analyze,
            analyzed_at.format("%Y-%m-%d %H:%M UTC")
        )
    })
}

/// `table.dead_tuples_pct` and `table.bloat_pct` per table, each saying when the estimate is
/// stale.
#[must_use]
pub fn tables(db: &str, rows: &[TableBloatRow], t: &Thresholds) -> Vec<Finding> {
    let mut findings = Vec::new();
    for row in rows {
        let subject = format!("{db}.{}.{}", row.schemaname, row.relname);
        let stale = staleness(row);
        let note = stale.as_ref().map_or_else(String::new, |why| {
            format!(
                "; estimate is stale: {why} (run ANALYZE {}.{})",
                row.schemaname, row.relname
            )
        });
        let detail = json!({
            "n_live_tup": row.n_live_tup, "n_dead_tup": row.n_dead_tup,
            "dead_tuple_percent": row.dead_tuple_percent,
            "est_bloat_pct": row.est_bloat_pct, "est_bloat_bytes": row.est_bloat_bytes,
            "last_analyze": row.analyzed_at(), "last_vacuum": row.last_vacuum.max(row.last_autovacuum),
            "stale": stale.is_some(), "stale_reason": stale,
        });
        if let Some(pct) = row.dead_tuple_percent
            && row.n_live_tup + row.n_dead_tup >= MIN_TUPLES
            && pct >= t.dead_tuple_pct
        {
            findings.push(
                Finding::new(
                    "table.dead_tuples_pct",
                    Severity::Warn,
                    format!(
                        "{pct:.1} % dead tuples ({} dead, {} live){note}",
                        row.n_dead_tup, row.n_live_tup
                    ),
                )
                .with_subject(subject.clone())
                .with_detail(detail.clone()),
            );
        }
        if !row.estimate_na
            && row.total_bytes >= MIN_BLOAT_BYTES
            && row.est_bloat_pct >= t.bloat_pct
        {
            findings.push(
                Finding::new(
                    "table.bloat_pct",
                    Severity::Warn,
                    format!(
                        "estimated bloat {:.1} % ({} bytes){note}",
                        row.est_bloat_pct, row.est_bloat_bytes
                    ),
                )
                .with_subject(subject)
                .with_detail(detail),
            );
        }
    }
    findings
}

/// `xid.wraparound_risk`: critical under 10 million transactions left, warn when a table's
/// age is over twice `autovacuum_freeze_max_age` (autovacuum is not keeping up).
#[must_use]
pub fn xid(db: &str, rows: &[XidRow]) -> Vec<Finding> {
    rows.iter()
        .filter_map(|row| {
            let severity = if row.transactions_left < XID_CRITICAL_LEFT {
                Severity::Critical
            } else if row.xid_age > 2 * row.autovacuum_freeze_max_age {
                Severity::Warn
            } else {
                return None;
            };
            Some(
                Finding::new(
                    "xid.wraparound_risk",
                    severity,
                    format!(
                        "relfrozenxid age {} ({} transactions left before wraparound); VACUUM FREEZE {}.{}",
                        row.xid_age, row.transactions_left, row.schemaname, row.relname
                    ),
                )
                .with_subject(format!("{db}.{}.{}", row.schemaname, row.relname)),
            )
        })
        .collect()
}

/// `index.unused` for each valid, non-unique, non-primary index backing no constraint, with
/// fewer scans than the threshold, known to upkeep (`first_seen`, by index oid) and covered by
/// the statistics for at least `unused_index_min_age`.
#[must_use]
pub fn unused_indexes(
    db: &str,
    rows: &[IndexUsageRow],
    first_seen: &HashMap<i64, DateTime<Utc>>,
    t: &Thresholds,
    now: DateTime<Utc>,
) -> Vec<Finding> {
    let min_age =
        chrono::Duration::from_std(t.unused_index_min_age).unwrap_or(chrono::Duration::MAX);
    rows.iter()
        .filter(|row| {
            let enforces = row.is_unique || row.is_primary || row.backs_constraint;
            let old_enough = first_seen
                .get(&row.index_oid)
                .is_some_and(|seen| now - *seen >= min_age);
            let stats_cover = row.stats_reset.is_none_or(|reset| now - reset >= min_age);
            !enforces
                && row.is_valid
                && row.index_scans < t.unused_index_scans
                && old_enough
                && stats_cover
        })
        .map(|row| {
            Finding::new(
                "index.unused",
                Severity::Warn,
                format!(
                    "{} scans since {} ({} bytes); consider DROP INDEX CONCURRENTLY {}.{}",
                    row.index_scans,
                    row.stats_reset.map_or_else(
                        || "the statistics began".to_owned(),
                        |reset| format!(
                            "the statistics reset at {}",
                            reset.format("%Y-%m-%d %H:%M UTC")
                        )
                    ),
                    row.index_bytes,
                    row.schemaname,
                    row.indexrelname
                ),
            )
            .with_subject(format!("{db}.{}.{}", row.schemaname, row.indexrelname))
            .with_detail(json!({
                "table": row.relname, "index_scans": row.index_scans,
                "index_bytes": row.index_bytes, "stats_reset": row.stats_reset,
                "first_seen": first_seen.get(&row.index_oid),
            }))
        })
        .collect()
}

/// A redundant index and the index that makes it so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DuplicatePair {
    /// Index of the redundant definition in the input slice.
    pub redundant: usize,
    /// Index of the definition that covers it.
    pub keeper: usize,
    /// Same columns, classes, collations and options (not only a prefix).
    pub exact: bool,
}

/// The duplicate pairs among `defs`, each pair once: `a` is redundant given `b` when both are
/// valid, on the same table, with the same access method, expressions and predicate, and `a`'s
/// key columns (with their operator classes, collations and options) are a leading prefix of
/// `b`'s. A primary key is never the redundant one; a unique index only when `b` is unique on
/// the same columns; an index with `INCLUDE` columns only when `b` has the same columns. For an
/// exact pair the redundant one is the non-unique one, else the later name. The rule follows
/// pghero's `index_covers?` (MIT) and pgx_scripts' `duplicate_indexes.sql` (BSD-3-Clause);
/// their notices are in `THIRD_PARTY_NOTICES`.
#[must_use]
pub fn duplicate_pairs(defs: &[IndexDefinition]) -> Vec<DuplicatePair> {
    let mut pairs = Vec::new();
    for i in 0..defs.len() {
        for j in (i + 1)..defs.len() {
            let (a, b) = (&defs[i], &defs[j]);
            if a.schemaname != b.schemaname || a.relname != b.relname {
                continue;
            }
            let exact = same_columns(a, b);
            match (covered_by(a, b), covered_by(b, a)) {
                (true, true) => {
                    // Keep the one that enforces more; between equals, the earlier name.
                    let rank = |d: &IndexDefinition| (d.is_primary, d.is_unique);
                    let (redundant, keeper) = if rank(a) > rank(b) {
                        (j, i)
                    } else if rank(b) > rank(a) {
                        (i, j)
                    } else if a.indexrelname <= b.indexrelname {
                        (j, i)
                    } else {
                        (i, j)
                    };
                    pairs.push(DuplicatePair {
                        redundant,
                        keeper,
                        exact,
                    });
                }
                (true, false) => pairs.push(DuplicatePair {
                    redundant: i,
                    keeper: j,
                    exact,
                }),
                (false, true) => pairs.push(DuplicatePair {
                    redundant: j,
                    keeper: i,
                    exact,
                }),
                (false, false) => {}
            }
        }
    }
    pairs
}

/// `index.duplicate`, one per pair of [`duplicate_pairs`].
#[must_use]
pub fn duplicates(db: &str, defs: &[IndexDefinition]) -> Vec<Finding> {
    duplicate_pairs(defs)
        .into_iter()
        .map(|pair| {
            let (redundant, keeper) = (&defs[pair.redundant], &defs[pair.keeper]);
            let how = if pair.exact {
                "duplicates"
            } else {
                "is a prefix of"
            };
            Finding::new(
                "index.duplicate",
                Severity::Warn,
                format!(
                    "{}.{} {how} {} on {} ({} bytes could be freed)",
                    redundant.schemaname,
                    redundant.indexrelname,
                    keeper.indexrelname,
                    redundant.relname,
                    redundant.index_bytes
                ),
            )
            .with_subject(format!(
                "{db}.{}.{}/{}",
                redundant.schemaname, redundant.indexrelname, keeper.indexrelname
            ))
            .with_detail(json!({
                "exact": pair.exact,
                "redundant": redundant.definition,
                "covering": keeper.definition,
            }))
        })
        .collect()
}

/// `index.invalid` for each invalid index.
#[must_use]
pub fn invalid_indexes(db: &str, rows: &[InvalidIndexRow]) -> Vec<Finding> {
    rows.iter()
        .map(|row| {
            Finding::new(
                "index.invalid",
                Severity::Warn,
                format!(
                    "index {}.{} on {} is invalid (a failed concurrent build?): it slows writes and serves no query; REINDEX INDEX CONCURRENTLY or drop it",
                    row.schemaname, row.indexrelname, row.relname
                ),
            )
            .with_subject(format!("{db}.{}.{}", row.schemaname, row.indexrelname))
        })
        .collect()
}

/// `index.bloat_pct` for btree indexes of at least 1 MiB over the bloat threshold (the
/// estimate is clamped at 0 and indicative only on deduplicated indexes).
#[must_use]
pub fn index_bloat(db: &str, rows: &[IndexBloatRow], t: &Thresholds) -> Vec<Finding> {
    rows.iter()
        .filter(|row| row.index_bytes >= MIN_BLOAT_BYTES && row.est_bloat_pct.max(0.0) >= t.bloat_pct)
        .map(|row| {
            Finding::new(
                "index.bloat_pct",
                Severity::Warn,
                format!(
                    "estimated bloat {:.1} % ({} of {} bytes, indicative only: from planner statistics)",
                    row.est_bloat_pct.max(0.0), row.est_bloat_bytes.max(0), row.index_bytes
                ),
            )
            .with_subject(format!("{db}.{}.{}", row.schemaname, row.indexrelname))
        })
        .collect()
}

/// `table.seq_scan_heavy`: a missing-index hint per table the query selected.
#[must_use]
pub fn seq_scan_heavy(db: &str, rows: &[SeqScanRow]) -> Vec<Finding> {
    rows.iter()
        .map(|row| {
            Finding::new(
                "table.seq_scan_heavy",
                Severity::Warn,
                format!(
                    "{} sequential scans against {} index scans ({:.0} % index use) on about {} rows: an index may be missing",
                    row.seq_scan, row.idx_scan, row.index_use_pct.unwrap_or(0.0), row.n_live_tup
                ),
            )
            .with_subject(format!("{db}.{}.{}", row.schemaname, row.relname))
        })
        .collect()
}

/// The critical finding of a target whose part of `kind` failed.
#[must_use]
pub fn target_failed(db: &str, kind: &str, error: &str) -> Finding {
    Finding::new(
        TARGET_FAILED,
        Severity::Critical,
        format!("{kind} could not report on database {db}: {error}"),
    )
    .with_subject(db)
}

/// Whether `subject` belongs to database `db` (is `db` or starts with `db.`).
#[must_use]
pub fn subject_of(db: &str, subject: Option<&str>) -> bool {
    subject.is_some_and(|s| s == db || s.strip_prefix(db).is_some_and(|rest| rest.starts_with('.')))
}

fn tokens(text: &str) -> Vec<&str> {
    text.split_whitespace().collect()
}

fn key_columns(d: &IndexDefinition) -> Vec<&str> {
    let all = tokens(&d.indkey);
    let n_key = usize::try_from(d.n_key_columns).unwrap_or(0).min(all.len());
    all[..n_key].to_vec()
}

fn is_prefix(short: &[&str], long: &[&str]) -> bool {
    short.len() <= long.len() && short == &long[..short.len()]
}

fn same_columns(a: &IndexDefinition, b: &IndexDefinition) -> bool {
    a.indkey == b.indkey
        && a.n_key_columns == b.n_key_columns
        && a.indclass == b.indclass
        && a.indcollation == b.indcollation
        && a.indoption == b.indoption
}

/// Whether `a` is redundant given `b` (see [`duplicate_pairs`]).
fn covered_by(a: &IndexDefinition, b: &IndexDefinition) -> bool {
    if !a.is_valid || !b.is_valid || a.is_primary {
        return false;
    }
    if a.access_method != b.access_method
        || a.expressions != b.expressions
        || a.predicate != b.predicate
    {
        return false;
    }
    let has_include = tokens(&a.indkey).len() > key_columns(a).len();
    // Prefix logic is only sound for plain btree columns without INCLUDE lists.
    if a.is_unique || has_include || a.expressions.is_some() || a.access_method != "btree" {
        return same_columns(a, b) && (!a.is_unique || b.is_unique);
    }
    is_prefix(&key_columns(a), &key_columns(b))
        && is_prefix(&tokens(&a.indclass), &tokens(&b.indclass))
        && is_prefix(&tokens(&a.indcollation), &tokens(&b.indcollation))
        && is_prefix(&tokens(&a.indoption), &tokens(&b.indoption))
}

#[cfg(test)]
mod tests;
