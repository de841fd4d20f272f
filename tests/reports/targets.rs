//! One unreachable target among two fails only its own part.

use serde_json::json;
use upkeep_shared::Severity;
use upkeep_shared::store::reports::snapshots_of_job;
use upkeep_tests::free_port;
use upkeep_workers::handlers::reports::Family;

use crate::support::{Harness, target_database, with_code};

#[tokio::test]
async fn one_unreachable_target_among_two_is_one_error_naming_it_and_the_other_is_recorded() {
    let url = target_database().await;
    let gone = format!("postgres://postgres@127.0.0.1:{}/gone", free_port());
    let harness = Harness::new(&[("app", &url), ("gone", &gone)], "").await;

    let (job_id, outcome) = harness.run(Family::Bloat, json!({})).await;
    let outcome = outcome.expect("a partial failure still succeeds");
    let failed = with_code(&outcome, "reports.target_failed");
    assert_eq!(failed.len(), 1, "{:#?}", outcome.findings);
    assert_eq!(failed[0].severity, Severity::Critical);
    assert_eq!(failed[0].subject.as_deref(), Some("gone"));
    assert!(
        failed[0].message.contains("database gone"),
        "{}",
        failed[0].message
    );
    assert_eq!(outcome.metrics["databases"]["gone"]["status"], "error");
    assert_eq!(outcome.metrics["databases"]["app"]["status"], "ok");
    let recorded: Vec<_> = snapshots_of_job(&harness.ctx.db, job_id.0)
        .await
        .expect("snapshots")
        .into_iter()
        .map(|s| (s.database, s.report))
        .collect();
    assert_eq!(
        recorded,
        vec![
            ("app".to_owned(), "table_bloat_stats".to_owned()),
            ("app".to_owned(), "xid_wraparound".to_owned()),
        ]
    );

    // When the only target asked for fails, the run fails, naming it.
    let (_, alone) = harness
        .run(Family::Bloat, json!({"database": "gone"}))
        .await;
    let error = alone.expect_err("every target failed");
    assert!(error.is_retryable());
    assert!(error.to_string().contains("database gone"), "{error}");

    // An unknown name is refused for good, listing the configured ones.
    let (_, unknown) = harness
        .run(Family::Bloat, json!({"database": "nope"}))
        .await;
    let error = unknown.expect_err("unknown database");
    assert!(!error.is_retryable());
    assert!(
        error.to_string().contains("configured: app, gone"),
        "{error}"
    );
}
