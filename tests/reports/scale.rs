//! Every report against a database with 10,000 tables finishes within its statement timeout
//! and keeps only the top N rows, with the total count.

use std::time::Instant;

use serde_json::json;
use upkeep_shared::store::reports::snapshots_of_job;
use upkeep_workers::handlers::reports::Family;

use crate::support::{Harness, execute, target_database};

#[tokio::test]
async fn every_report_on_10000_tables_finishes_within_its_statement_timeout_with_bounded_output() {
    let url = target_database().await;
    // 10,000 tables with a primary key and a second index each, created in batches of 1,000
    // so no transaction takes too many locks.
    for batch in 0..10 {
        execute(
            &url,
            &format!(
                "DO $$ BEGIN
                   FOR i IN {} .. {} LOOP
                     EXECUTE format('CREATE TABLE t_%s (id int PRIMARY KEY, v int)', i);
                     EXECUTE format('CREATE INDEX t_%s_v_idx ON t_%s (v)', i, i);
                   END LOOP;
                 END $$;",
                batch * 1000,
                batch * 1000 + 999
            ),
        )
        .await;
    }
    let harness = Harness::new(&[("app", &url)], "statement_timeout = \"30s\"\ntop_n = 50").await;
    for (family, report, min_total) in [
        (Family::SlowQueries, "connection_stats", 1),
        (Family::Bloat, "table_bloat_stats", 10_000),
        (Family::IndexUsage, "index_usage_stats", 20_000),
    ] {
        let started = Instant::now();
        let (job_id, outcome) = harness.run(family, json!({})).await;
        let outcome = outcome.unwrap_or_else(|error| panic!("{}: {error}", family.kind()));
        let elapsed = started.elapsed();
        println!("{} on 10,000 tables: {elapsed:?}", family.kind());
        assert_eq!(outcome.metrics["n_failed"], 0);
        let snapshots = snapshots_of_job(&harness.ctx.db, job_id.0)
            .await
            .expect("snapshots");
        let snapshot = snapshots
            .iter()
            .find(|s| s.report == report)
            .expect("snapshot");
        assert!(
            snapshot.total_count >= min_total,
            "{report}: {}",
            snapshot.total_count
        );
        let n_rows = snapshot.rows.as_array().map_or(0, Vec::len);
        assert!(n_rows <= 50, "{report} kept {n_rows} rows");
    }
}
