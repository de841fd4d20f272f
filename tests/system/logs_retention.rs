//! The workers' pruner also deletes log scan batches (with their counts) and report snapshots
//! older than the ledger's retention, and leaves younger ones alone.

use std::time::Duration;

use uuid::Uuid;

use crate::support::{Deployment, eventually, wait_for_worker};

#[tokio::test]
async fn a_worker_prunes_scan_batches_and_report_snapshots_past_the_ledger_retention() {
    // Arrange: a batch (with a count) and a snapshot from two hours ago and from ten minutes
    // ago; a worker that keeps one hour and prunes every second.
    let mut deployment = Deployment::new().await;
    deployment.set_env("UPKEEP__MAINTENANCE__LEDGER_RETENTION", "1h");
    deployment.set_env("UPKEEP__MAINTENANCE__LEDGER_PRUNE_INTERVAL", "1s");
    let mut ledger = deployment.ledger().await;
    let mut young_jobs = Vec::new();
    for age in ["2 hours", "10 minutes"] {
        let job_id = Uuid::now_v7();
        if age == "10 minutes" {
            young_jobs.push(job_id);
        }
        let batch: i64 = sqlx::query_scalar(
            "INSERT INTO log_scan_batches (job_id, source, bytes_read, lines_read, backlog_bytes, \
             committed_at) VALUES ($1, 'app', 10, 1, 0, now() - $2::interval) RETURNING id",
        )
        .bind(job_id)
        .bind(age)
        .fetch_one(&mut ledger)
        .await
        .expect("a batch");
        sqlx::query(
            "INSERT INTO log_scan_counts (batch_id, severity, signature, count, example) \
             VALUES ($1, 'error', 'boom <n>', 1, 'boom 1')",
        )
        .bind(batch)
        .execute(&mut ledger)
        .await
        .expect("a count");
        sqlx::query(
            "INSERT INTO report_snapshots (job_id, database, report, status, taken_at) \
             VALUES ($1, 'app', 'bloat', 'ok', now() - $2::interval)",
        )
        .bind(job_id)
        .bind(age)
        .execute(&mut ledger)
        .await
        .expect("a snapshot");
    }

    // Act
    let mut worker = deployment.start("upkeep-worker-reports", [] as [&str; 0]);
    wait_for_worker(&mut worker, "reports");

    // Assert: only the young rows remain, the old batch's count went with it.
    let (batches, snapshots, counts) =
        eventually("the worker to prune", Duration::from_secs(15), async || {
            let batches: Vec<Uuid> =
                sqlx::query_scalar("SELECT job_id FROM log_scan_batches ORDER BY job_id")
                    .fetch_all(&mut ledger)
                    .await
                    .ok()?;
            let snapshots: Vec<Uuid> =
                sqlx::query_scalar("SELECT job_id FROM report_snapshots ORDER BY job_id")
                    .fetch_all(&mut ledger)
                    .await
                    .ok()?;
            let counts: i64 = sqlx::query_scalar("SELECT count(*) FROM log_scan_counts")
                .fetch_one(&mut ledger)
                .await
                .ok()?;
            (batches.len() == 1 && snapshots.len() == 1).then_some((batches, snapshots, counts))
        })
        .await;
    assert_eq!(batches, young_jobs);
    assert_eq!(snapshots, young_jobs);
    assert_eq!(
        counts, 1,
        "the young batch's count stays, the old one's went"
    );
    worker.sigterm().expect("SIGTERM");
    assert!(worker.wait_timeout(Duration::from_secs(35)).is_some());
}
