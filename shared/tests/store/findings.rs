//! `store::findings`: open conditions are the `(code, subject)` pairs whose newest finding is
//! warn or critical, written through `runs::record_runs` like every finding.

use chrono::Duration;
use sqlx::PgPool;
use upkeep_shared::job::resolutions;
use upkeep_shared::store::findings;
use upkeep_shared::store::runs::{self, RunStatus};
use upkeep_shared::{Finding, JobId, Outcome, Severity};

use crate::helpers::{record, t0};

async fn report(pool: &PgPool, minutes: i64, found: Vec<Finding>) {
    let mut run = record(JobId::new(), 1, RunStatus::Succeeded);
    run.kind = "system.disk".to_owned();
    run.finished_at = Some(t0() + Duration::minutes(minutes));
    run.outcome = Some(Outcome {
        summary: "checked".to_owned(),
        findings: found,
        ..Outcome::default()
    });
    runs::record_runs(pool, &[run]).await.expect("recorded");
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn a_condition_is_open_until_its_newest_finding_is_ok(pool: PgPool) {
    let used = |severity, subject: &str| {
        Finding::new("disk.used_pct", severity, "used").with_subject(subject)
    };
    report(
        &pool,
        0,
        vec![used(Severity::Warn, "/a"), used(Severity::Critical, "/b")],
    )
    .await;
    report(&pool, 1, vec![used(Severity::Critical, "/a")]).await;
    report(
        &pool,
        2,
        vec![Finding::new("backup.stale", Severity::Warn, "old")],
    )
    .await;

    let open = findings::open(&pool, &["disk.used_pct", "backup.stale"])
        .await
        .unwrap();
    let pairs: Vec<_> = open.iter().map(|f| (f.pair(), f.severity)).collect();
    assert_eq!(
        pairs,
        vec![
            (("backup.stale".to_owned(), None), Severity::Warn),
            (
                ("disk.used_pct".to_owned(), Some("/a".to_owned())),
                Severity::Critical
            ),
            (
                ("disk.used_pct".to_owned(), Some("/b".to_owned())),
                Severity::Critical
            ),
        ]
    );

    // The next check sees /a only: /b is resolved by the check's own ok finding.
    let current = vec![used(Severity::Critical, "/a")];
    let disk_open: Vec<_> = open
        .iter()
        .filter(|f| f.code == "disk.used_pct")
        .map(findings::OpenFinding::pair)
        .collect();
    let mut reported = current.clone();
    reported.extend(resolutions(&disk_open, &current));
    report(&pool, 3, reported).await;

    let open = findings::open(&pool, &["disk.used_pct"]).await.unwrap();
    let subjects: Vec<_> = open.iter().map(|f| f.subject.as_deref()).collect();
    assert_eq!(subjects, vec![Some("/a")]);
    assert!(
        findings::open(&pool, &["index.unused"])
            .await
            .unwrap()
            .is_empty()
    );
}

/// The dashboard's open findings enumerate codes and pairs by skip scans: across a history of
/// many checks per pair, each pair counts once, by its newest finding, critical first.
#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn the_dashboard_lists_each_open_pair_once_by_its_newest_finding_critical_first(
    pool: PgPool,
) {
    let used = |severity, subject: &str| {
        Finding::new("disk.used_pct", severity, "used").with_subject(subject)
    };
    // Forty checks: /a alternates and ends critical, /b ends ok, /c stays warn; the
    // subject-less backup.stale ends warn and index.unused ends ok.
    for check in 0..40 {
        let last = check == 39;
        let a = if check % 2 == 1 {
            Severity::Critical
        } else {
            Severity::Warn
        };
        let b = if last {
            Severity::Ok
        } else {
            Severity::Critical
        };
        let stale = if check % 3 == 1 {
            Severity::Ok
        } else {
            Severity::Warn
        };
        let unused = if last { Severity::Ok } else { Severity::Warn };
        report(
            &pool,
            check,
            vec![
                used(a, "/a"),
                used(b, "/b"),
                used(Severity::Warn, "/c"),
                Finding::new("backup.stale", stale, "old"),
                Finding::new("index.unused", unused, "unused").with_subject("db.idx"),
            ],
        )
        .await;
    }
    let open = upkeep_shared::store::dashboard::open_findings(&pool)
        .await
        .unwrap();
    let listed: Vec<_> = open
        .iter()
        .map(|f| (f.code.as_str(), f.subject.as_deref(), f.severity))
        .collect();
    assert_eq!(
        listed,
        vec![
            ("disk.used_pct", Some("/a"), Severity::Critical),
            ("backup.stale", None, Severity::Warn),
            ("disk.used_pct", Some("/c"), Severity::Warn),
        ]
    );
    // Each is the pair's newest row.
    let newest_a: i64 = sqlx::query_scalar(
        "SELECT max(id) FROM findings WHERE code = 'disk.used_pct' AND subject = '/a'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(open[0].id, newest_a);
}
