//! `queues.snapshot` and `jobs.failed_review` against real Redis and Postgres.

use serde_json::json;
use upkeep_shared::queue::NewJob;
use upkeep_shared::store::runs::RunStatus;
use upkeep_shared::{QueueName, Severity};
use upkeep_workers::handlers::reports;

use crate::support::{Harness, job, with_code};

#[tokio::test]
async fn the_queue_snapshot_reports_every_queue_and_the_review_groups_failures_by_signature() {
    let harness = Harness::new(&[], "").await;
    let queue = harness
        .ctx
        .settings
        .open_queue(&QueueName::parse("reports").expect("valid"))
        .expect("queue");
    queue
        .enqueue(&[NewJob::new("system.ping", json!({}), 3)])
        .await
        .expect("enqueue");

    let snapshot = reports::queues_snapshot(&harness.ctx, job("queues.snapshot", json!({})))
        .await
        .expect("queues.snapshot succeeds");
    assert_eq!(snapshot.metrics["queues"]["reports"]["pending"], 1);
    assert_eq!(snapshot.metrics["queues"]["backups"]["pending"], 0);
    assert_eq!(snapshot.summary, "4 queues snapshotted");

    // Two failures that differ only in numbers share a signature; another kind has its own.
    for (kind, error) in [
        (
            "system.ping",
            "connecting to 10.0.0.7:5432: refused after 3 attempts",
        ),
        (
            "system.ping",
            "connecting to 10.0.0.9:5432: refused after 5 attempts",
        ),
        (
            "db.bloat",
            "db.bloat failed for every database: database app: timeout",
        ),
    ] {
        harness
            .record(&job(kind, json!({})), RunStatus::Failed, None, Some(error))
            .await;
    }
    let review = reports::failed_review(&harness.ctx, job("jobs.failed_review", json!({})))
        .await
        .expect("jobs.failed_review succeeds");
    let signatures = review.metrics["failure_signatures"]
        .as_array()
        .expect("signatures");
    assert_eq!(signatures.len(), 2, "{signatures:#?}");
    assert_eq!(signatures[0]["kind"], "system.ping");
    assert_eq!(signatures[0]["n_failures"], 2);
    assert_eq!(
        signatures[0]["signature"],
        "connecting to N.N.N.N:N: refused after N attempts"
    );
    let failures = with_code(&review, "jobs.failures");
    let mut subjects: Vec<_> = failures
        .iter()
        .map(|f| f.subject.clone().expect("subject"))
        .collect();
    subjects.sort();
    assert_eq!(subjects, vec!["db.bloat", "system.ping"]);
    assert!(failures.iter().all(|f| f.severity == Severity::Warn));
    assert_eq!(review.metrics["dead_letters"]["reports"]["count"], 0);
}
