//! Unit tests of the finding rules: duplicate pairs, unused indexes, staleness, slow statements,
//! connections.

use std::time::Duration;

use chrono::TimeZone;

use super::*;
use crate::reports::rows::{Report, SlowQueryRow};

fn index(name: &str, indkey: &str, unique: bool) -> IndexDefinition {
    let n = indkey.split_whitespace().count();
    IndexDefinition {
        schemaname: "public".to_owned(),
        relname: "orders".to_owned(),
        indexrelname: name.to_owned(),
        access_method: "btree".to_owned(),
        indkey: indkey.to_owned(),
        n_key_columns: i32::try_from(n).expect("small"),
        indclass: vec!["1978"; n].join(" "),
        indcollation: vec!["0"; n].join(" "),
        indoption: vec!["0"; n].join(" "),
        expressions: None,
        predicate: None,
        is_unique: unique,
        is_primary: false,
        is_valid: true,
        definition: format!("CREATE INDEX {name}"),
        index_bytes: 8192,
    }
}

fn names(defs: &[IndexDefinition]) -> Vec<(String, String, bool)> {
    duplicate_pairs(defs)
        .into_iter()
        .map(|p| {
            (
                defs[p.redundant].indexrelname.clone(),
                defs[p.keeper].indexrelname.clone(),
                p.exact,
            )
        })
        .collect()
}

#[test]
fn identical_indexes_and_a_prefix_are_each_reported_once() {
    let defs = vec![
        index("a_idx", "2", false),
        index("a_copy_idx", "2", false),
        index("a_b_idx", "2 3", false),
        index("b_idx", "3", false),
    ];
    assert_eq!(
        names(&defs),
        vec![
            ("a_idx".to_owned(), "a_copy_idx".to_owned(), true),
            ("a_idx".to_owned(), "a_b_idx".to_owned(), false),
            ("a_copy_idx".to_owned(), "a_b_idx".to_owned(), false),
        ]
    );
}

#[test]
fn a_unique_index_is_never_redundant_to_a_wider_or_non_unique_one() {
    let defs = vec![
        index("a_key", "2", true),
        index("a_b_idx", "2 3", false),
        index("a_plain_idx", "2", false),
    ];
    // The plain index duplicates the unique one; the unique one is kept.
    assert_eq!(
        names(&defs),
        vec![
            ("a_plain_idx".to_owned(), "a_key".to_owned(), true),
            ("a_plain_idx".to_owned(), "a_b_idx".to_owned(), false),
        ]
    );
}

#[test]
fn different_predicates_or_orders_are_not_duplicates() {
    let mut partial = index("a_partial_idx", "2", false);
    partial.predicate = Some("(status = 'open'::text)".to_owned());
    let mut desc = index("a_desc_idx", "2", false);
    desc.indoption = "3".to_owned();
    let defs = vec![index("a_idx", "2", false), partial, desc];
    assert_eq!(names(&defs), vec![]);
}

fn usage(name: &str, scans: i64, unique: bool, constraint: bool) -> IndexUsageRow {
    IndexUsageRow {
        schemaname: "public".to_owned(),
        relname: "orders".to_owned(),
        indexrelname: name.to_owned(),
        index_oid: i64::from(name.len() as u8),
        index_scans: scans,
        index_bytes: 16384,
        is_unique: unique,
        is_primary: false,
        backs_constraint: constraint,
        is_valid: true,
        stats_reset: None,
    }
}

#[test]
fn only_old_enough_non_constraint_indexes_under_the_threshold_are_unused() {
    let now = Utc.with_ymd_and_hms(2026, 11, 29, 12, 0, 0).unwrap();
    let rows = vec![
        usage("unused_idx", 3, false, false),
        usage("orders_key", 0, true, true),
        usage("busy_idx_x", 500, false, false),
        usage("young_idx_yz", 0, false, false),
    ];
    let mut first_seen = HashMap::new();
    for row in &rows[..3] {
        first_seen.insert(row.index_oid, now - chrono::Duration::days(8));
    }
    first_seen.insert(rows[3].index_oid, now - chrono::Duration::days(1));
    let t = Thresholds::default();
    let found = unused_indexes("app", &rows, &first_seen, &t, now);
    let subjects: Vec<_> = found.iter().map(|f| f.subject.clone().unwrap()).collect();
    assert_eq!(subjects, vec!["app.public.unused_idx"]);

    // A statistics reset two days ago: nothing is old enough to judge.
    let recent: Vec<_> = rows
        .iter()
        .cloned()
        .map(|mut row| {
            row.stats_reset = Some(now - chrono::Duration::days(2));
            row
        })
        .collect();
    assert!(unused_indexes("app", &recent, &first_seen, &t, now).is_empty());
}

fn table(dead: i64, live: i64, analyzed: bool, n_mod: i64) -> TableBloatRow {
    TableBloatRow {
        schemaname: "public".to_owned(),
        relname: "orders".to_owned(),
        n_live_tup: live,
        n_dead_tup: dead,
        #[expect(clippy::cast_precision_loss, reason = "test values")]
        dead_tuple_percent: Some(100.0 * dead as f64 / (dead + live) as f64),
        est_bloat_bytes: 0,
        est_bloat_pct: 0.0,
        estimate_na: !analyzed,
        total_bytes: 10 << 20,
        n_mod_since_analyze: n_mod,
        last_vacuum: None,
        last_autovacuum: None,
        last_analyze: analyzed.then(|| Utc.with_ymd_and_hms(2026, 11, 29, 11, 0, 0).unwrap()),
        last_autoanalyze: None,
    }
}

#[test]
fn a_table_never_analysed_says_its_estimate_is_stale_and_a_fresh_one_does_not() {
    let t = Thresholds::default();
    let stale = tables("app", &[table(5000, 5000, false, 10_000)], &t);
    assert_eq!(stale.len(), 1);
    assert_eq!(stale[0].code, "table.dead_tuples_pct");
    assert!(
        stale[0]
            .message
            .contains("estimate is stale: the table was never analysed"),
        "{}",
        stale[0].message
    );

    let fresh = tables("app", &[table(5000, 5000, true, 0)], &t);
    assert_eq!(fresh.len(), 1);
    assert!(!fresh[0].message.contains("stale"), "{}", fresh[0].message);

    let modified = staleness(&table(10, 1000, true, 1000));
    assert!(
        modified.is_some_and(|why| why.starts_with("1000 rows changed since the last ANALYZE"))
    );
}

#[test]
fn a_small_table_gets_no_dead_tuple_finding() {
    assert!(tables("app", &[table(400, 100, true, 0)], &Thresholds::default()).is_empty());
}

#[test]
fn slow_statements_need_both_the_mean_and_the_calls() {
    let row = |calls, mean: f64| SlowQueryRow {
        queryid: Some(calls),
        username: None,
        calls,
        total_ms: mean * 100.0,
        mean_ms: Some(mean),
        rows: 1,
        pct_total_time: Some(10.0),
        query: "SELECT pg_sleep($1)".to_owned(),
    };
    let report = SlowQueries::Available {
        report: Report {
            rows: vec![row(150, 120.0), row(50, 500.0), row(1000, 2.0)],
            total_count: 3,
        },
        stats_reset: None,
    };
    let found = slow_queries("app", &report, &Thresholds::default());
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].subject.as_deref(), Some("app.query.150"));

    let unavailable = SlowQueries::Unavailable {
        reason: HOW_TO_ENABLE_STATEMENTS.to_owned(),
    };
    let found = slow_queries("app", &unavailable, &Thresholds::default());
    assert_eq!(found[0].severity, Severity::Warn);
    assert!(found[0].message.contains("shared_preload_libraries"));
}

#[test]
fn subjects_are_matched_to_their_database_by_name_and_dot() {
    assert!(subject_of("app", Some("app")));
    assert!(subject_of("app", Some("app.public.orders")));
    assert!(!subject_of("app", Some("app2.public.orders")));
    assert!(!subject_of("app", None));
}

#[test]
fn connections_near_the_limit_are_warned_then_critical() {
    let row = |total| ConnectionRow {
        total,
        this_database: total,
        active: 1,
        idle: 0,
        idle_in_transaction: 0,
        waiting: 0,
        max_connections: 103,
        reserved_connections: 3,
        used_pct: 0.0,
    };
    assert!(connections("app", &row(50)).is_empty());
    assert_eq!(connections("app", &row(85))[0].severity, Severity::Warn);
    assert_eq!(connections("app", &row(99))[0].severity, Severity::Critical);
    let _ = Duration::ZERO;
}
