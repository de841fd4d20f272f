//! `store::partitions`: months created ahead, rows routed by the month their job was minted in,
//! and retention by dropping whole months (never one with a running row).

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use sqlx::PgPool;
use upkeep_shared::store::partitions::{self, PruneReport};
use upkeep_shared::store::runs::{self, RunStatus};
use upkeep_shared::{JobId, Severity};
use uuid::Uuid;

use crate::helpers::{record, succeeded_with_findings};

fn at(y: i32, m: u32, d: u32, h: u32, min: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, min, s).single().unwrap()
}

fn month(y: i32, m: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, 1).unwrap()
}

/// A v7 job id minted at `when`.
fn minted(when: DateTime<Utc>) -> JobId {
    let ts = uuid::Timestamp::from_unix(
        uuid::NoContext,
        u64::try_from(when.timestamp()).unwrap(),
        when.timestamp_subsec_nanos(),
    );
    JobId(Uuid::new_v7(ts))
}

async fn partition_of(pool: &PgPool, table: &str, job_id: JobId) -> String {
    // `table` is one of the two literal table names of the tests.
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT tableoid::regclass::text FROM {table} WHERE job_id = $1 LIMIT 1"
    )))
    .bind(job_id.0)
    .fetch_one(pool)
    .await
    .expect("the row exists")
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// A finished run of a job minted at `minted_at` that finished at `finished_at`, with a finding.
async fn seed_run(pool: &PgPool, minted_at: DateTime<Utc>, finished_at: DateTime<Utc>) -> JobId {
    let job_id = minted(minted_at);
    let mut run = succeeded_with_findings(job_id, 1, &[("disk.used_pct", Severity::Warn)]);
    run.enqueued_at = minted_at;
    run.started_at = minted_at;
    run.finished_at = Some(finished_at);
    runs::record_runs(pool, &[run]).await.unwrap();
    job_id
}

#[test]
fn a_uuid_floor_bounds_the_v7_ids_minted_from_that_instant() {
    let start = at(2026, 12, 1, 0, 0, 0);
    let floor = partitions::uuid_floor(start);
    let just_before = minted(start - Duration::milliseconds(1));
    let at_start = minted(start);
    assert!(just_before.0 < floor, "{just_before} < {floor}");
    assert!(at_start.0 >= floor, "{at_start} >= {floor}");
    assert_eq!(
        partitions::partition_name("job_runs", month(2026, 12)),
        "job_runs_p202612"
    );
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn runs_and_findings_land_in_the_month_their_job_was_minted_across_a_month_boundary(
    pool: PgPool,
) {
    // Arrange: the months around a boundary exist.
    partitions::ensure_month(&pool, month(2026, 1))
        .await
        .unwrap();
    partitions::ensure_month(&pool, month(2026, 2))
        .await
        .unwrap();
    let last_ms = at(2026, 1, 31, 23, 59, 59) + Duration::milliseconds(999);
    let first_ms = at(2026, 2, 1, 0, 0, 0);

    // Act: one job minted in the last millisecond of January, one in the first of February,
    // one far in the future (no month partition), and one with a random (v4) id.
    let january = seed_run(&pool, last_ms, first_ms + Duration::seconds(5)).await;
    let february = seed_run(&pool, first_ms, first_ms + Duration::seconds(5)).await;
    let future = seed_run(&pool, at(2031, 6, 1, 0, 0, 0), at(2031, 6, 1, 0, 1, 0)).await;
    let random = JobId(Uuid::new_v4());
    runs::record_runs(&pool, &[record(random, 1, RunStatus::Succeeded)])
        .await
        .unwrap();

    // Assert
    assert_eq!(
        partition_of(&pool, "job_runs", january).await,
        "job_runs_p202601"
    );
    assert_eq!(
        partition_of(&pool, "findings", january).await,
        "findings_p202601"
    );
    assert_eq!(
        partition_of(&pool, "job_runs", february).await,
        "job_runs_p202602"
    );
    assert_eq!(
        partition_of(&pool, "findings", february).await,
        "findings_p202602"
    );
    assert_eq!(
        partition_of(&pool, "job_runs", future).await,
        "job_runs_default"
    );
    assert_eq!(
        partition_of(&pool, "findings", future).await,
        "findings_default"
    );
    assert_eq!(
        partition_of(&pool, "job_runs", random).await,
        "job_runs_default"
    );
    // The idempotency key still works on a partitioned table: the same batch again is a no-op.
    let again = runs::record_runs(&pool, &[record(random, 1, RunStatus::Succeeded)])
        .await
        .unwrap();
    assert_eq!(again, 0);
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn creating_a_month_moves_its_rows_out_of_the_default_partition(pool: PgPool) {
    // Arrange: a run of a month that has no partition yet lands in the default.
    let job_id = seed_run(&pool, at(2031, 6, 10, 0, 0, 0), at(2031, 6, 10, 0, 1, 0)).await;
    assert_eq!(
        partition_of(&pool, "job_runs", job_id).await,
        "job_runs_default"
    );

    // Act
    let created = partitions::ensure_month(&pool, month(2031, 6))
        .await
        .unwrap();
    let again = partitions::ensure_month(&pool, month(2031, 6))
        .await
        .unwrap();

    // Assert
    assert!(created);
    assert!(!again, "an existing month is left alone");
    assert_eq!(
        partition_of(&pool, "job_runs", job_id).await,
        "job_runs_p203106"
    );
    assert_eq!(
        partition_of(&pool, "findings", job_id).await,
        "findings_p203106"
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM job_runs").await, 1);
    let months = partitions::months(&pool).await.unwrap();
    assert!(months.contains(&month(2031, 6)), "{months:?}");
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn the_months_ahead_exist_after_migrating_and_ensure_ahead_adds_the_missing_ones(
    pool: PgPool,
) {
    let now = Utc::now();
    let months = partitions::months(&pool).await.unwrap();
    let this_month = partitions::month_of(now);
    for ahead in 0..=partitions::MONTHS_AHEAD {
        let m = this_month
            .checked_add_months(chrono::Months::new(ahead))
            .unwrap();
        assert!(months.contains(&m), "{m} in {months:?}");
    }
    let later = partitions::ensure_ahead(&pool, at(2030, 11, 15, 0, 0, 0))
        .await
        .unwrap();
    assert_eq!(
        later,
        vec![month(2030, 11), month(2030, 12), month(2031, 1)]
    );
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn retention_drops_old_months_keeps_newer_ones_and_never_a_month_with_a_running_row(
    pool: PgPool,
) {
    // Arrange: March, April, May and June 2025; the cutoff is 10 May 2025. March is done;
    // April holds a running row; May is not over; June is in the future of the cutoff.
    for m in 3..=6 {
        partitions::ensure_month(&pool, month(2025, m))
            .await
            .unwrap();
    }
    let march = seed_run(&pool, at(2025, 3, 5, 0, 0, 0), at(2025, 3, 5, 0, 0, 9)).await;
    let march_late = seed_run(&pool, at(2025, 3, 31, 23, 0, 0), at(2025, 4, 1, 1, 0, 0)).await;
    let april_done = seed_run(&pool, at(2025, 4, 2, 0, 0, 0), at(2025, 4, 2, 0, 0, 9)).await;
    let april_running = minted(at(2025, 4, 3, 0, 0, 0));
    let mut running = record(april_running, 1, RunStatus::Running);
    running.enqueued_at = at(2025, 4, 3, 0, 0, 0);
    running.started_at = at(2025, 4, 3, 0, 0, 0);
    runs::record_runs(&pool, &[running]).await.unwrap();
    let may = seed_run(&pool, at(2025, 5, 1, 0, 0, 0), at(2025, 5, 1, 0, 0, 9)).await;
    let june = seed_run(&pool, at(2025, 6, 1, 0, 0, 0), at(2025, 6, 1, 0, 0, 9)).await;
    let cutoff = at(2025, 5, 10, 0, 0, 0);

    // Act
    let report = partitions::prune(&pool, cutoff, 100).await.unwrap();

    // Assert: March (both tables) is gone as whole partitions; April is skipped for its
    // running row; May and June are kept.
    assert_eq!(
        report,
        PruneReport {
            dropped: vec![month(2025, 3)],
            skipped: vec![(month(2025, 4), "holds a running row")],
            default_rows_deleted: 0,
        }
    );
    let exists = |name: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, bool>("SELECT to_regclass($1) IS NOT NULL")
                .bind(name)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert!(!exists("job_runs_p202503").await);
    assert!(!exists("findings_p202503").await);
    assert!(exists("job_runs_p202504").await);
    for gone in [march, march_late] {
        assert!(runs::runs_for_job(&pool, gone).await.unwrap().is_empty());
    }
    for kept in [april_done, april_running, may, june] {
        assert_eq!(
            runs::runs_for_job(&pool, kept).await.unwrap().len(),
            1,
            "{kept}"
        );
    }
    assert_eq!(count(&pool, "SELECT count(*) FROM findings").await, 3);

    // Act again: once April's running row finishes (before the cutoff), April goes too.
    let mut finished = record(april_running, 1, RunStatus::Succeeded);
    finished.started_at = at(2025, 4, 3, 0, 0, 0);
    finished.finished_at = Some(at(2025, 4, 3, 0, 0, 5));
    runs::record_runs(&pool, &[finished]).await.unwrap();
    let report = partitions::prune(&pool, cutoff, 100).await.unwrap();
    assert_eq!(report.dropped, vec![month(2025, 4)]);
    assert!(report.skipped.is_empty(), "{report:?}");
    assert!(!exists("job_runs_p202504").await);
    assert!(exists("job_runs_p202505").await);
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn retention_keeps_a_month_with_a_run_that_finished_after_the_cutoff(pool: PgPool) {
    // A job minted in January that was retried until June: its month stays until June's
    // finish is past the retention too.
    partitions::ensure_month(&pool, month(2025, 1))
        .await
        .unwrap();
    let job = seed_run(&pool, at(2025, 1, 20, 0, 0, 0), at(2025, 6, 1, 0, 0, 0)).await;

    let report = partitions::prune(&pool, at(2025, 3, 1, 0, 0, 0), 100)
        .await
        .unwrap();

    assert!(report.dropped.is_empty());
    assert_eq!(
        report.skipped,
        vec![(month(2025, 1), "holds a row finished after the cutoff")]
    );
    assert_eq!(runs::runs_for_job(&pool, job).await.unwrap().len(), 1);
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn retention_deletes_old_rows_of_the_default_partition_row_by_row(pool: PgPool) {
    let old = JobId(Uuid::new_v4());
    let young = JobId(Uuid::new_v4());
    let mut old_run = succeeded_with_findings(old, 1, &[("x.y", Severity::Critical)]);
    old_run.finished_at = Some(at(2020, 1, 1, 0, 0, 0));
    let mut young_run = record(young, 1, RunStatus::Succeeded);
    young_run.finished_at = Some(at(2030, 1, 1, 0, 0, 0));
    runs::record_runs(&pool, &[old_run, young_run])
        .await
        .unwrap();

    let report = partitions::prune(&pool, at(2025, 1, 1, 0, 0, 0), 1)
        .await
        .unwrap();

    assert_eq!(report.default_rows_deleted, 1);
    assert!(runs::runs_for_job(&pool, old).await.unwrap().is_empty());
    assert_eq!(runs::runs_for_job(&pool, young).await.unwrap().len(), 1);
    assert_eq!(count(&pool, "SELECT count(*) FROM findings").await, 0);
}
