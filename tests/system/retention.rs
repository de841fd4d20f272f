//! Ledger retention: a running worker prunes finished runs and old ticks past
//! `maintenance.ledger_retention`, and leaves everything younger alone.

use std::time::Duration;

use uuid::Uuid;

use crate::support::{Deployment, eventually, wait_for_worker};

#[tokio::test]
async fn a_worker_prunes_runs_and_ticks_older_than_the_ledger_retention() {
    // Arrange: a finished run and a tick from two hours ago, their young counterparts, and a
    // worker that keeps one hour and prunes every second.
    let mut deployment = Deployment::new().await;
    deployment.set_env("UPKEEP__MAINTENANCE__LEDGER_RETENTION", "1h");
    deployment.set_env("UPKEEP__MAINTENANCE__LEDGER_PRUNE_INTERVAL", "1s");
    let mut ledger = deployment.ledger().await;
    let (old_run, young_run) = (Uuid::now_v7(), Uuid::now_v7());
    for (job_id, age) in [(old_run, "2 hours"), (young_run, "10 minutes")] {
        sqlx::query(
            "INSERT INTO job_runs (job_id, attempt, kind, queue, status, enqueued_at, started_at, \
             finished_at, worker) VALUES ($1, 1, 'system.ping', 'reports', 'succeeded', \
             now() - $2::interval, now() - $2::interval, now() - $2::interval, 'test')",
        )
        .bind(job_id)
        .bind(age)
        .execute(&mut ledger)
        .await
        .expect("a run");
    }
    sqlx::query(
        "INSERT INTO schedules (name, cron, timezone, kind, queue, catch_up, catch_up_window_ms, \
         catch_up_max, overlap, config_hash) VALUES ('hourly', '0 0 * * * *', 'UTC', \
         'system.ping', 'reports', 'latest', 0, 1, 'allow', 'test')",
    )
    .execute(&mut ledger)
    .await
    .expect("a schedule");
    for age in ["3 hours", "2 hours", "30 minutes"] {
        sqlx::query(
            "INSERT INTO schedule_ticks (schedule, fire_at, decision, claimed_by) \
             VALUES ('hourly', date_trunc('second', now() - $1::interval), 'missed', 'test')",
        )
        .bind(age)
        .execute(&mut ledger)
        .await
        .expect("a tick");
    }

    // Act
    let mut worker = deployment.start("upkeep-worker-reports", [] as [&str; 0]);
    wait_for_worker(&mut worker, "reports");

    // Assert: the old run and the two old ticks go; the young ones stay.
    let (runs, ticks) = eventually("the worker to prune", Duration::from_secs(15), async || {
        let runs: Vec<Uuid> = sqlx::query_scalar("SELECT job_id FROM job_runs ORDER BY job_id")
            .fetch_all(&mut ledger)
            .await
            .ok()?;
        let ticks: i64 = sqlx::query_scalar("SELECT count(*) FROM schedule_ticks")
            .fetch_one(&mut ledger)
            .await
            .ok()?;
        (runs.len() == 1 && ticks == 1).then_some((runs, ticks))
    })
    .await;
    assert_eq!(runs, vec![young_run]);
    assert_eq!(ticks, 1, "the tick of 30 minutes ago");
    worker.sigterm().expect("SIGTERM");
    assert!(worker.wait_timeout(Duration::from_secs(35)).is_some());
}
