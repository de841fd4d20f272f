//! `db.slow_queries`: a statement made slow on purpose shows in the `slow_queries` view and as
//! `query.slow` (on a private cluster with `pg_stat_statements` preloaded); without the
//! extension the report is unavailable and says how to enable it.

use serde_json::json;
use sqlx::{Connection, PgConnection};
use upkeep_shared::Severity;
use upkeep_shared::store::reports::{Timeouts, install_views, snapshots_of_job};
use upkeep_tests::PrivatePostgres;
use upkeep_workers::handlers::reports::Family;

use crate::support::{Harness, execute, target_database, with_code};

#[tokio::test]
async fn a_deliberately_slow_query_run_110_times_is_in_slow_queries_and_a_finding() {
    let mut postgres = PrivatePostgres::start().expect("private postgres");
    execute(
        &postgres.url(),
        "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'",
    )
    .await;
    postgres
        .restart()
        .expect("restart with pg_stat_statements preloaded");
    execute(&postgres.url(), "CREATE DATABASE app").await;
    let url = postgres.url_for("app");
    execute(&url, "CREATE EXTENSION pg_stat_statements").await;
    let mut connection = PgConnection::connect(&url).await.expect("connect");
    for _ in 0..110 {
        sqlx::query("SELECT pg_sleep(0.012)")
            .execute(&mut connection)
            .await
            .expect("slow query");
    }
    connection.close().await.expect("close");

    // The view, installed in the target the way `upkeepctl reports install-views` does.
    let pool = sqlx::PgPool::connect(&url).await.expect("target");
    let timeouts = Timeouts {
        statement: std::time::Duration::from_secs(30),
        lock: std::time::Duration::from_secs(1),
    };
    install_views(&pool, timeouts).await.expect("install views");
    let (calls, mean_ms): (i64, f64) = sqlx::query_as(
        "SELECT calls, mean_ms FROM slow_queries WHERE query LIKE 'SELECT pg_sleep%'",
    )
    .fetch_one(&pool)
    .await
    .expect("the slow statement is in slow_queries");
    assert_eq!(calls, 110);
    assert!(mean_ms >= 12.0, "mean {mean_ms} ms");

    let harness = Harness::new(&[("app", &url)], "[reports.thresholds]\nslow_mean_ms = 10").await;
    let (job_id, outcome) = harness.run(Family::SlowQueries, json!({})).await;
    let outcome = outcome.expect("db.slow_queries succeeds");
    let slow = with_code(&outcome, "query.slow");
    assert_eq!(slow.len(), 1, "{:#?}", outcome.findings);
    assert!(slow[0].message.contains("110 calls"), "{}", slow[0].message);
    assert!(slow[0].message.contains("pg_sleep"), "{}", slow[0].message);
    let snapshots = snapshots_of_job(&harness.ctx.db, job_id.0)
        .await
        .expect("snapshots");
    let reports: Vec<_> = snapshots
        .iter()
        .map(|s| (s.report.as_str(), s.status.as_str()))
        .collect();
    assert_eq!(
        reports,
        vec![("connection_stats", "ok"), ("slow_queries", "ok")]
    );
}

#[tokio::test]
async fn without_pg_stat_statements_the_report_is_unavailable_and_the_job_succeeds_with_a_warning()
{
    let url = target_database().await;
    let harness = Harness::new(&[("app", &url)], "").await;
    let (job_id, outcome) = harness.run(Family::SlowQueries, json!({})).await;
    let outcome = outcome.expect("db.slow_queries succeeds without the extension");
    let unavailable = with_code(&outcome, "query.stats_unavailable");
    assert_eq!(unavailable.len(), 1, "{:#?}", outcome.findings);
    assert_eq!(unavailable[0].severity, Severity::Warn);
    assert!(
        unavailable[0]
            .message
            .contains("add pg_stat_statements to shared_preload_libraries"),
        "{}",
        unavailable[0].message
    );
    let snapshots = snapshots_of_job(&harness.ctx.db, job_id.0)
        .await
        .expect("snapshots");
    let slow = snapshots
        .iter()
        .find(|s| s.report == "slow_queries")
        .expect("snapshot");
    assert_eq!(slow.status, "unavailable");
    assert!(
        slow.note
            .as_deref()
            .is_some_and(|n| n.contains("not installed"))
    );

    // upkeep's own database has the view from its migration; it exists and returns no rows.
    let n_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM slow_queries")
        .fetch_one(&harness.ctx.db)
        .await
        .expect("the view exists without the extension");
    assert_eq!(n_rows, 0);
}
