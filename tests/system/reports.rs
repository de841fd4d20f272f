//! The health reports end to end: `upkeep-worker-reports` runs an enqueued `db.bloat` against a
//! target configured with `url_env`, records its snapshot and findings, and `upkeepctl reports
//! show` reads the same target.

use std::time::Duration;

use upkeep_tests::{fresh_database, shared_database_url};

use crate::support::{Deployment, eventually, wait_for_status, wait_for_worker};

#[tokio::test]
async fn the_reports_worker_runs_db_bloat_on_a_configured_target_and_records_its_findings() {
    let target = fresh_database(&shared_database_url()).await;
    let mut connection = <sqlx::PgConnection as sqlx::Connection>::connect(&target)
        .await
        .expect("target");
    sqlx::raw_sql(
        "CREATE TABLE orders (id int PRIMARY KEY, note text) WITH (autovacuum_enabled = false);
         INSERT INTO orders SELECT g, 'n' FROM generate_series(1, 4000) g;
         DELETE FROM orders WHERE id % 2 = 0;",
    )
    .execute(&mut connection)
    .await
    .expect("seed the target");
    sqlx::Connection::close(connection).await.expect("close");
    // A closed session's counters reach the statistics shortly after it exits.
    let mut reader = <sqlx::PgConnection as sqlx::Connection>::connect(&target)
        .await
        .expect("target");
    eventually(
        "the deletes in the statistics",
        Duration::from_secs(20),
        async || {
            let n_dead: Option<i64> = sqlx::query_scalar(
                "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'orders'",
            )
            .fetch_optional(&mut reader)
            .await
            .expect("statistics");
            (n_dead.unwrap_or(0) >= 2000).then_some(())
        },
    )
    .await;

    let mut deployment = Deployment::new().await;
    deployment.set_env("APP_MONITOR_URL", &target);
    deployment
        .write_config("[[reports.databases]]\nname = \"app\"\nurl_env = \"APP_MONITOR_URL\"\n");
    let mut worker = deployment.start("upkeep-worker-reports", std::iter::empty::<&str>());
    wait_for_worker(&mut worker, "reports");

    let job_id = deployment.enqueue("db.bloat", "{}", &[])[0];
    let mut ledger = deployment.ledger().await;
    wait_for_status(&mut ledger, job_id, "succeeded", Duration::from_secs(60)).await;

    let (report, total_count): (String, i64) = sqlx::query_as(
        "SELECT report, total_count FROM report_snapshots
          WHERE job_id = $1 AND database = 'app' AND report = 'table_bloat_stats'",
    )
    .bind(job_id)
    .fetch_one(&mut ledger)
    .await
    .expect("the worker recorded the snapshot");
    assert_eq!((report.as_str(), total_count), ("table_bloat_stats", 1));
    let subjects: Vec<String> = sqlx::query_scalar(
        "SELECT subject FROM findings WHERE job_id = $1 AND code = 'table.dead_tuples_pct'",
    )
    .bind(job_id)
    .fetch_all(&mut ledger)
    .await
    .expect("findings");
    assert_eq!(subjects, vec!["app.public.orders"]);

    let shown = deployment.ctl_ok(["reports", "show", "bloat", "--db", "app", "--json"]);
    let shown: serde_json::Value = serde_json::from_str(&shown).expect("JSON");
    assert_eq!(shown["reports"][0]["rows"][0]["relname"], "orders");
    assert_eq!(shown["reports"][0]["rows"][0]["dead_tuple_percent"], 50.0);
}
