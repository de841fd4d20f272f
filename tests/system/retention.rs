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
    // The ledger is partitioned by the month a job was minted (UUIDv7 ids): `old_run` was
    // minted 70 days ago, in a month partition created here, which the worker drops whole;
    // `stray` has a v4 id, so it lives in the default partition and is deleted row by row.
    let minted = std::time::SystemTime::now() - Duration::from_secs(70 * 24 * 3600);
    let minted = minted.duration_since(std::time::UNIX_EPOCH).unwrap();
    let old_run = Uuid::new_v7(uuid::Timestamp::from_unix(
        uuid::NoContext,
        minted.as_secs(),
        0,
    ));
    let (stray, young_run) = (Uuid::new_v4(), Uuid::now_v7());
    let old_month: String =
        sqlx::query_scalar("SELECT to_char(to_timestamp($1::float8) AT TIME ZONE 'UTC', 'YYYYMM')")
            .bind(minted.as_secs_f64())
            .fetch_one(&mut ledger)
            .await
            .expect("the month");
    for table in ["job_runs", "findings"] {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TABLE {table}_p{old_month} PARTITION OF {table} FOR VALUES \
             FROM (upkeep_uuid_floor(to_date('{old_month}', 'YYYYMM')::timestamp AT TIME ZONE 'UTC')) \
             TO (upkeep_uuid_floor((to_date('{old_month}', 'YYYYMM') + interval '1 month') AT TIME ZONE 'UTC'))"
        )))
        .execute(&mut ledger)
        .await
        .expect("an old month partition");
    }
    for (job_id, age) in [
        (old_run, "2 hours"),
        (stray, "2 hours"),
        (young_run, "10 minutes"),
    ] {
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
    let month_left: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(format!("job_runs_p{old_month}"))
        .fetch_one(&mut ledger)
        .await
        .expect("a lookup");
    assert!(
        !month_left,
        "the old month was dropped as a whole partition"
    );
    assert_eq!(ticks, 1, "the tick of 30 minutes ago");
    worker.sigterm().expect("SIGTERM");
    assert!(worker.wait_timeout(Duration::from_secs(35)).is_some());
}
