//! `db.bloat` on a table half made of dead tuples: the dead-tuple percentage against
//! `pgstattuple`, a stale estimate said before ANALYZE, and the condition resolved after VACUUM.

use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::{Connection, PgConnection};
use upkeep_shared::Severity;
use upkeep_shared::store::reports::snapshots_of_job;
use upkeep_workers::handlers::reports::Family;

use crate::support::{Harness, execute, target_database, with_code};

/// Waits until the statistics show `orders` with at least `n_dead` dead tuples (a closed
/// session's counters reach shared memory shortly after it exits).
async fn wait_for_dead_tuples(url: &str, n_dead: i64) {
    let mut connection = PgConnection::connect(url).await.expect("connect");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let seen: Option<i64> = sqlx::query_scalar(
            "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'orders'",
        )
        .fetch_optional(&mut connection)
        .await
        .expect("read stats");
        if seen.unwrap_or(0) >= n_dead {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "statistics never showed {n_dead} dead tuples (saw {seen:?})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn dead_tuples_agree_with_pgstattuple_after_analyze_and_are_called_stale_before() {
    let url = target_database().await;
    // Autovacuum off so nothing vacuums or analyses behind the test's back; rows of ~400 bytes
    // so page overhead stays small against pgstattuple's byte-based percentages.
    execute(
        &url,
        "CREATE EXTENSION pgstattuple;
         CREATE TABLE orders (id int PRIMARY KEY, payload text) WITH (autovacuum_enabled = false);
         INSERT INTO orders SELECT g, repeat('x', 400) FROM generate_series(1, 20000) g;
         UPDATE orders SET payload = repeat('y', 400);",
    )
    .await;
    wait_for_dead_tuples(&url, 20_000).await;
    let harness = Harness::new(&[("app", &url)], "").await;

    // Before ANALYZE: the counters already say half the tuples are dead, and the finding says
    // the estimate is stale.
    let (_, before) = harness.run(Family::Bloat, json!({})).await;
    let before = before.expect("db.bloat succeeds");
    let dead = with_code(&before, "table.dead_tuples_pct");
    assert_eq!(dead.len(), 1, "{:#?}", before.findings);
    assert_eq!(dead[0].subject.as_deref(), Some("app.public.orders"));
    assert!(
        dead[0]
            .message
            .contains("estimate is stale: the table was never analysed"),
        "{}",
        dead[0].message
    );

    // After ANALYZE: our percentage and pgstattuple's agree within 3 points, and the
    // estimate is no longer called stale.
    execute(&url, "ANALYZE orders").await;
    let (job_id, after) = harness.run(Family::Bloat, json!({"database": "app"})).await;
    let after = after.expect("db.bloat succeeds");
    let snapshots = snapshots_of_job(&harness.ctx.db, job_id.0)
        .await
        .expect("snapshots");
    let table = snapshots
        .iter()
        .find(|s| s.report == "table_bloat_stats")
        .expect("a table_bloat_stats snapshot");
    let row = table
        .rows
        .as_array()
        .expect("rows")
        .iter()
        .find(|row| row["relname"] == "orders")
        .expect("orders in the snapshot");
    let ours = row["dead_tuple_percent"].as_f64().expect("a percentage");
    assert!(
        row.get("last_analyze").is_some_and(|v| !v.is_null()),
        "{row}"
    );
    // Page pruning turns dead tuples into free space that pgstattuple reports as free_percent
    // (measured in the reference notes), so its dead plus free space is the comparable figure.
    let mut connection = PgConnection::connect(&url).await.expect("connect");
    let (dead_pct, free_pct): (f64, f64) =
        sqlx::query_as("SELECT dead_tuple_percent, free_percent FROM pgstattuple('public.orders')")
            .fetch_one(&mut connection)
            .await
            .expect("pgstattuple");
    let theirs = dead_pct + free_pct;
    println!("dead_tuple_percent {ours} vs pgstattuple dead {dead_pct} + free {free_pct}");
    assert!(
        (ours - theirs).abs() <= 3.0,
        "dead_tuple_percent {ours} vs pgstattuple {theirs}"
    );
    let dead = with_code(&after, "table.dead_tuples_pct");
    assert_eq!(dead.len(), 1, "{:#?}", after.findings);
    let reported = dead[0].detail["dead_tuple_percent"]
        .as_f64()
        .expect("detail");
    assert!(
        (reported - theirs).abs() <= 3.0,
        "finding {reported} vs pgstattuple {theirs}"
    );
    assert!(!dead[0].message.contains("stale"), "{}", dead[0].message);
    // The fresh estimate sees the bloat too (the reference measured 35.7 % against 34.5 %).
    let bloat = with_code(&after, "table.bloat_pct");
    assert_eq!(bloat.len(), 1, "{:#?}", after.findings);

    // After VACUUM the conditions are resolved once, not repeated.
    execute(&url, "VACUUM ANALYZE orders").await;
    let (_, vacuumed) = harness.run(Family::Bloat, json!({})).await;
    let vacuumed = vacuumed.expect("db.bloat succeeds");
    let resolved = with_code(&vacuumed, "table.dead_tuples_pct");
    assert_eq!(resolved.len(), 1, "{:#?}", vacuumed.findings);
    assert_eq!(resolved[0].severity, Severity::Ok);
    assert_eq!(resolved[0].subject.as_deref(), Some("app.public.orders"));
    let (_, again) = harness.run(Family::Bloat, json!({})).await;
    assert!(with_code(&again.expect("succeeds"), "table.dead_tuples_pct").is_empty());
}
