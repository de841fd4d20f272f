//! `store::runs`: idempotent batch writes, findings, lookups and retention.

use std::time::Instant;

use chrono::Duration;
use sqlx::PgPool;
use upkeep_shared::store::DatabaseSettings;
use upkeep_shared::store::runs::{self, RunStatus};
use upkeep_shared::{JobId, Severity};

use crate::helpers::{record, succeeded_with_findings, t0};

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(pool)
        .await
        .expect("count query")
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn the_same_batch_recorded_twice_leaves_one_row_per_attempt(pool: PgPool) {
    let batch: Vec<_> = (0..20)
        .map(|_| record(JobId::new(), 1, RunStatus::Succeeded))
        .collect();

    let first = runs::record_runs(&pool, &batch).await.unwrap();
    let second = runs::record_runs(&pool, &batch).await.unwrap();

    assert_eq!(first, 20);
    assert_eq!(second, 0, "a duplicate delivery writes nothing");
    assert_eq!(count(&pool, "SELECT count(*) FROM job_runs").await, 20);
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn a_batch_with_one_attempt_already_recorded_writes_the_others_and_keeps_that_one(
    pool: PgPool,
) {
    one_attempt_already_recorded(pool, 10).await;
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn a_copied_batch_with_one_attempt_already_recorded_writes_the_others_and_keeps_that_one(
    pool: PgPool,
) {
    let pool = pool_like_the_daemons(&pool).await;
    assert!(runs::copy_enabled(), "the batch must take the COPY");
    one_attempt_already_recorded(pool, runs::COPY_MIN_ROWS + 8).await;
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn a_batch_goes_in_key_order_whatever_order_its_attempts_finished_in(pool: PgPool) {
    // Job ids grow with time, so rows written in key order append to the primary key's right
    // edge (90/10 page splits); in any other order its pages end up about 60 % full.
    for (pool, n) in [
        (pool.clone(), 10),
        (pool_like_the_daemons(&pool).await, runs::COPY_MIN_ROWS + 40),
    ] {
        // The second batch must take the COPY (the first is below its size).
        assert!(n < runs::COPY_MIN_ROWS || runs::copy_enabled());
        let ids: Vec<JobId> = (0..n).map(|_| JobId::new()).collect();
        let mut batch: Vec<_> = ids
            .iter()
            .rev()
            .map(|id| record(*id, 1, RunStatus::Succeeded))
            .collect();
        batch.swap(1, n / 2);

        runs::record_runs(&pool, &batch).await.unwrap();

        let written: Vec<uuid::Uuid> =
            sqlx::query_scalar("SELECT job_id FROM job_runs WHERE job_id = ANY($1) ORDER BY id")
                .bind(ids.iter().map(|id| id.0).collect::<Vec<_>>())
                .fetch_all(&pool)
                .await
                .unwrap();
        let mut sorted: Vec<uuid::Uuid> = ids.iter().map(|id| id.0).collect();
        sorted.sort();
        assert_eq!(written, sorted, "rows of a batch of {n} in job id order");
    }
}

/// A pool built as the daemons build theirs (`DatabaseSettings::pool_options`), on the test's
/// database: its connections have Nagle's algorithm off, so large batches go by `COPY`.
async fn pool_like_the_daemons(pool: &PgPool) -> PgPool {
    let url = std::env::var("DATABASE_URL").expect("sqlx::test runs with DATABASE_URL set");
    let settings = DatabaseSettings {
        url: url.into(),
        ..DatabaseSettings::default()
    };
    settings
        .pool_options()
        .connect_with((*pool.connect_options()).clone())
        .await
        .expect("connect like the daemons")
}

/// A batch of `n_new` new attempts and one already recorded, written by the plain insert or
/// (from `COPY_MIN_ROWS` rows) by `COPY`.
async fn one_attempt_already_recorded(pool: PgPool, n_new: usize) {
    // Arrange: one attempt of the coming batch already has a final row (a redelivery), so the
    // plain insert (or COPY) of the batch fails on its key and the idempotent statement writes it.
    let known = record(JobId::new(), 1, RunStatus::Succeeded);
    runs::record_runs(&pool, std::slice::from_ref(&known))
        .await
        .unwrap();
    // The same execution delivered again, reporting otherwise (not a replayed attempt
    // number, which is renumbered: see the replay tests).
    let mut late = known.clone();
    late.status = RunStatus::Failed;
    late.error = Some("late".to_owned());
    let mut batch: Vec<_> = (0..n_new)
        .map(|_| record(JobId::new(), 1, RunStatus::Succeeded))
        .collect();
    batch.insert(5, late);

    // Act
    let written = runs::record_runs(&pool, &batch).await.unwrap();
    let stored = runs::record_runs_read_back(&pool, &batch).await.unwrap();

    // Assert
    assert_eq!(written, n_new as u64, "the new attempts, not the known one");
    assert_eq!(
        count(&pool, "SELECT count(*) FROM job_runs").await,
        n_new as i64 + 1
    );
    assert_eq!(
        stored[5].status,
        RunStatus::Succeeded,
        "the known row stands"
    );
    let kept = runs::runs_for_job(&pool, known.job_id).await.unwrap();
    assert_eq!((kept.len(), kept[0].worker.as_str()), (1, "worker-a"));
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn both_batch_statements_store_the_duration_in_whole_milliseconds(pool: PgPool) {
    // A batch of new attempts without findings takes the plain insert; one with findings
    // takes the idempotent statement. Both round the duration like `numeric` to `bigint`.
    let mut plain = record(JobId::new(), 1, RunStatus::Failed);
    plain.finished_at = Some(plain.started_at + Duration::microseconds(1_500_500));
    let mut with_findings =
        succeeded_with_findings(JobId::new(), 1, &[("disk.used_pct", Severity::Ok)]);
    with_findings.finished_at = Some(with_findings.started_at + Duration::microseconds(2_499_400));

    runs::record_runs(&pool, &[plain.clone()]).await.unwrap();
    runs::record_runs(&pool, &[with_findings.clone()])
        .await
        .unwrap();

    let duration = |job_id| {
        let pool = pool.clone();
        async move { runs::runs_for_job(&pool, job_id).await.unwrap()[0].duration_ms }
    };
    assert_eq!(duration(plain.job_id).await, Some(1501));
    assert_eq!(duration(with_findings.job_id).await, Some(2499));
    assert_eq!(count(&pool, "SELECT count(*) FROM findings").await, 1);
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn a_copied_batch_stores_every_column_as_the_plain_insert_does(pool: PgPool) {
    // Arrange: the same attempts twice over (each copy with its own job ids): written in
    // batches below COPY_MIN_ROWS (the plain insert), and in one batch above it (COPY). Every
    // column varies: statuses with and without an end, an error and a next state, a schedule
    // and a tick, outcomes without findings, unicode text and arguments, odd durations.
    let shapes: Vec<_> = (0..runs::COPY_MIN_ROWS + 4)
        .map(|i| {
            let status = [
                RunStatus::Succeeded,
                RunStatus::Failed,
                RunStatus::Running,
                RunStatus::Abandoned,
                RunStatus::Skipped,
            ][i % 5];
            let mut shape = record(JobId::new(), 1 + i as i32 % 3, status);
            shape.kind = format!("kind.{i}");
            shape.worker = format!("wörker-{i} ✓");
            shape.args =
                serde_json::json!({"i": i, "name": "naïve \"quoted\"", "nested": [1, null]});
            if i % 4 == 0 {
                shape.schedule = Some(format!("nightly-{i}"));
                shape.tick_at = Some(t0() - Duration::minutes(i as i64));
            }
            if let Some(finished) = shape.finished_at.as_mut() {
                *finished += Duration::microseconds(i as i64 * 1_234_567);
            }
            if status == RunStatus::Succeeded {
                shape.outcome = Some(upkeep_shared::Outcome {
                    summary: format!("done {i} ✓"),
                    metrics: serde_json::Map::from_iter([(
                        "rows".to_owned(),
                        serde_json::json!(i),
                    )]),
                    findings: Vec::new(),
                    skipped: false,
                });
            }
            shape
        })
        .collect();
    let again = |shapes: &[runs::RunRecord]| -> Vec<runs::RunRecord> {
        shapes
            .iter()
            .map(|shape| runs::RunRecord {
                job_id: JobId::new(),
                ..shape.clone()
            })
            .collect()
    };
    let inserted = again(&shapes);
    let copied = again(&shapes);
    let pool = pool_like_the_daemons(&pool).await;

    // Act
    for chunk in inserted.chunks(runs::COPY_MIN_ROWS - 1) {
        runs::record_runs(&pool, chunk).await.unwrap();
    }
    assert!(runs::copy_enabled(), "the large batch must take the COPY");
    let n_copied = runs::record_runs(&pool, &copied).await.unwrap();

    // Assert
    assert_eq!(n_copied, copied.len() as u64);
    for (by_insert, by_copy) in inserted.iter().zip(&copied) {
        let mut by_insert = runs::runs_for_job(&pool, by_insert.job_id).await.unwrap();
        let mut by_copy = runs::runs_for_job(&pool, by_copy.job_id).await.unwrap();
        assert_eq!((by_insert.len(), by_copy.len()), (1, 1));
        let (by_insert, by_copy) = (&mut by_insert[0], &mut by_copy[0]);
        // Only what the database assigns differs.
        by_copy.id = by_insert.id;
        by_copy.job_id = by_insert.job_id;
        by_copy.recorded_at = by_insert.recorded_at;
        assert_eq!(by_copy, by_insert);
    }
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn a_duplicate_delivery_does_not_overwrite_a_finished_run(pool: PgPool) {
    let job_id = JobId::new();
    let succeeded = record(job_id, 1, RunStatus::Succeeded);
    runs::record_runs(&pool, &[succeeded]).await.unwrap();

    let mut late_failure = record(job_id, 1, RunStatus::Failed);
    late_failure.worker = "worker-b".to_owned();
    let mut late_running = record(job_id, 1, RunStatus::Running);
    late_running.worker = "worker-c".to_owned();
    let n_failed = runs::record_runs(&pool, &[late_failure]).await.unwrap();
    let n_running = runs::record_runs(&pool, &[late_running]).await.unwrap();

    assert_eq!((n_failed, n_running), (0, 0));
    let rows = runs::runs_for_job(&pool, job_id).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, RunStatus::Succeeded);
    assert_eq!(rows[0].worker, "worker-a");
    assert_eq!(rows[0].error, None);
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn an_abandoned_run_is_final_and_a_late_result_of_that_attempt_reads_back_the_abandoned_row(
    pool: PgPool,
) {
    // Arrange: the worker that took the expired lease over recorded the attempt as abandoned
    // (and settled the job from that row).
    let job_id = JobId::new();
    runs::record_runs(&pool, &[record(job_id, 1, RunStatus::Abandoned)])
        .await
        .unwrap();

    // Act: the paused worker's success of that attempt arrives afterwards.
    let late = succeeded_with_findings(job_id, 1, &[("disk.used_pct", Severity::Warn)]);
    let stored = runs::record_runs_read_back(&pool, &[late]).await.unwrap();

    // Assert: the ledger keeps the row the queue was settled from.
    assert_eq!(stored[0].status, RunStatus::Abandoned);
    assert_eq!(stored[0].attempt, 1);
    let rows = runs::runs_for_job(&pool, job_id).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, RunStatus::Abandoned);
    assert_eq!(count(&pool, "SELECT count(*) FROM findings").await, 0);
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn a_replayed_attempt_number_is_stored_under_the_next_one_and_a_second_success_is_not(
    pool: PgPool,
) {
    // Arrange: attempt 1 failed, attempt 2 is unknown; Redis lost writes and attempt 1 runs
    // again on another worker, twice (a failure, then a success).
    let job_id = JobId::new();
    runs::record_runs(&pool, &[record(job_id, 1, RunStatus::Failed)])
        .await
        .unwrap();
    let mut replayed_success = record(job_id, 1, RunStatus::Succeeded);
    replayed_success.worker = "worker-b".to_owned();
    let mut second_success = record(job_id, 1, RunStatus::Succeeded);
    second_success.worker = "worker-c".to_owned();

    // Act
    let first = runs::record_runs_read_back(&pool, &[replayed_success])
        .await
        .unwrap();
    let second = runs::record_runs_read_back(&pool, &[second_success])
        .await
        .unwrap();

    // Assert
    assert_eq!(
        (first[0].attempt, first[0].status),
        (2, RunStatus::Succeeded)
    );
    assert_eq!(
        (second[0].attempt, second[0].status),
        (2, RunStatus::Succeeded),
        "a second success reads back the first one"
    );
    let rows = runs::runs_for_job(&pool, job_id).await.unwrap();
    let summary: Vec<(i32, RunStatus)> = rows.iter().map(|r| (r.attempt, r.status)).collect();
    assert_eq!(
        summary,
        vec![(1, RunStatus::Failed), (2, RunStatus::Succeeded)]
    );
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn a_replayed_attempt_inside_a_batch_is_renumbered_and_the_rest_of_the_batch_reads_back_as_given(
    pool: PgPool,
) {
    // Arrange: one job's attempt 1 already failed on another worker; a batch holds that
    // attempt number again (Redis lost writes) between fresh first attempts.
    let replayed_job = JobId::new();
    runs::record_runs(&pool, &[record(replayed_job, 1, RunStatus::Failed)])
        .await
        .unwrap();
    let mut replayed = record(replayed_job, 1, RunStatus::Succeeded);
    replayed.worker = "worker-b".to_owned();
    let fresh: Vec<_> = (0..5)
        .map(|_| record(JobId::new(), 1, RunStatus::Succeeded))
        .collect();
    let mut batch = fresh.clone();
    batch.insert(2, replayed);

    // Act
    let stored = runs::record_runs_read_back(&pool, &batch).await.unwrap();

    // Assert: one answer per record, in order; only the replayed one moved.
    let summary: Vec<(i32, RunStatus)> = stored.iter().map(|s| (s.attempt, s.status)).collect();
    let mut expected = vec![(1, RunStatus::Succeeded); 5];
    expected.insert(2, (2, RunStatus::Succeeded));
    assert_eq!(summary, expected);
    for record in &fresh {
        let rows = runs::runs_for_job(&pool, record.job_id).await.unwrap();
        assert_eq!(rows.len(), 1, "a fresh record is written once");
    }
    let rows = runs::runs_for_job(&pool, replayed_job).await.unwrap();
    let attempts: Vec<(i32, RunStatus)> = rows.iter().map(|r| (r.attempt, r.status)).collect();
    assert_eq!(
        attempts,
        vec![(1, RunStatus::Failed), (2, RunStatus::Succeeded)]
    );
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn two_batches_written_at_once_with_the_same_attempt_leave_one_row_and_read_back_the_same(
    pool: PgPool,
) {
    // Arrange: a worker keeps two ledger writes in flight; a redelivery puts the same attempt
    // in both (the late result of a lease that another fetch took over as abandoned), each
    // between other jobs' results.
    let job_id = JobId::new();
    let result = record(job_id, 1, RunStatus::Succeeded);
    let mut takeover = record(job_id, 1, RunStatus::Abandoned);
    takeover.worker = "worker-b".to_owned();
    takeover.next_state = Some("retrying".to_owned());
    let mut first: Vec<_> = (0..50)
        .map(|_| record(JobId::new(), 1, RunStatus::Succeeded))
        .collect();
    first.push(result);
    let mut second: Vec<_> = (0..50)
        .map(|_| record(JobId::new(), 1, RunStatus::Succeeded))
        .collect();
    second.insert(0, takeover);

    // Act
    let (first_stored, second_stored) = tokio::join!(
        runs::record_runs_read_back(&pool, &first),
        runs::record_runs_read_back(&pool, &second)
    );
    let (first_stored, second_stored) = (first_stored.unwrap(), second_stored.unwrap());

    // Assert: one row for the attempt, whichever batch committed first, and both batches
    // read back that row for it; every other record is written once.
    let rows = runs::runs_for_job(&pool, job_id).await.unwrap();
    assert_eq!(rows.len(), 1, "one row per (job, attempt)");
    let standing = (rows[0].attempt, rows[0].status);
    let in_first = first_stored.last().expect("the first batch is not empty");
    assert_eq!((in_first.attempt, in_first.status), standing);
    assert_eq!(
        (second_stored[0].attempt, second_stored[0].status),
        standing
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM job_runs").await, 101);
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn a_running_row_is_completed_by_its_final_record_and_not_by_another_running_one(
    pool: PgPool,
) {
    let job_id = JobId::new();
    runs::record_runs(&pool, &[record(job_id, 1, RunStatus::Running)])
        .await
        .unwrap();

    let n_running_again = runs::record_runs(&pool, &[record(job_id, 1, RunStatus::Running)])
        .await
        .unwrap();
    let n_failed = runs::record_runs(&pool, &[record(job_id, 1, RunStatus::Failed)])
        .await
        .unwrap();

    assert_eq!((n_running_again, n_failed), (0, 1));
    let rows = runs::runs_for_job(&pool, job_id).await.unwrap();
    assert_eq!(rows[0].status, RunStatus::Failed);
    assert_eq!(rows[0].error.as_deref(), Some("boom"));
    assert_eq!(rows[0].next_state.as_deref(), Some("retrying"));
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn findings_are_written_once_even_when_the_run_is_delivered_twice(pool: PgPool) {
    let job_id = JobId::new();
    // Two findings with the same code (two disks) are both kept.
    let run = succeeded_with_findings(
        job_id,
        1,
        &[
            ("disk.used_pct", Severity::Warn),
            ("disk.used_pct", Severity::Critical),
            ("backup.stale", Severity::Ok),
        ],
    );

    runs::record_runs(&pool, std::slice::from_ref(&run))
        .await
        .unwrap();
    runs::record_runs(&pool, &[run]).await.unwrap();

    let findings: Vec<(i32, String, String, String, Option<serde_json::Value>)> = sqlx::query_as(
        "SELECT ordinal, code, severity, kind, detail FROM findings WHERE job_id = $1 \
             ORDER BY ordinal",
    )
    .bind(job_id.0)
    .fetch_all(&pool)
    .await
    .unwrap();
    let codes: Vec<(i32, &str, &str)> = findings
        .iter()
        .map(|(ordinal, code, severity, _, _)| (*ordinal, code.as_str(), severity.as_str()))
        .collect();
    assert_eq!(
        codes,
        [
            (1, "disk.used_pct", "warn"),
            (2, "disk.used_pct", "critical"),
            (3, "backup.stale", "ok")
        ]
    );
    assert_eq!(findings[0].3, "system.ping");
    assert_eq!(findings[0].4, Some(serde_json::json!({"value": 1})));
    let created_at: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT min(created_at) FROM findings")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(
        created_at,
        t0() + Duration::milliseconds(1500),
        "a finding is dated when it was observed"
    );
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn the_most_final_record_wins_when_a_batch_holds_an_attempt_twice(pool: PgPool) {
    let job_id = JobId::new();
    let batch = [
        record(job_id, 1, RunStatus::Succeeded),
        record(job_id, 1, RunStatus::Running),
        record(job_id, 2, RunStatus::Abandoned),
        record(job_id, 2, RunStatus::Failed),
    ];

    let n_written = runs::record_runs(&pool, &batch).await.unwrap();

    assert_eq!(n_written, 2);
    let statuses: Vec<RunStatus> = runs::runs_for_job(&pool, job_id)
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.status)
        .collect();
    assert_eq!(statuses, [RunStatus::Succeeded, RunStatus::Failed]);
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn a_batch_holding_an_attempt_twice_reads_back_the_winning_record_for_both(pool: PgPool) {
    // Arrange: a reclaim's `abandoned` and the late success of the same attempt, in one batch
    // of new attempts (the plain insert, which writes every distinct key at once).
    let job_id = JobId::new();
    let other = JobId::new();
    let batch = [
        record(job_id, 1, RunStatus::Abandoned),
        record(other, 1, RunStatus::Succeeded),
        record(job_id, 1, RunStatus::Succeeded),
    ];

    // Act
    let stored = runs::record_runs_read_back(&pool, &batch).await.unwrap();

    // Assert: one answer per record, both copies of the attempt answered by the row kept.
    let summary: Vec<(i32, RunStatus)> = stored.iter().map(|s| (s.attempt, s.status)).collect();
    assert_eq!(
        summary,
        [
            (1, RunStatus::Succeeded),
            (1, RunStatus::Succeeded),
            (1, RunStatus::Succeeded)
        ]
    );
    let rows = runs::runs_for_job(&pool, job_id).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].status, RunStatus::Succeeded);
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn succeeded_jobs_names_only_jobs_with_a_succeeded_attempt(pool: PgPool) {
    let retried_then_succeeded = JobId::new();
    let only_failed = JobId::new();
    let never_seen = JobId::new();
    runs::record_runs(
        &pool,
        &[
            record(retried_then_succeeded, 1, RunStatus::Failed),
            record(retried_then_succeeded, 2, RunStatus::Succeeded),
            record(only_failed, 1, RunStatus::Failed),
            record(only_failed, 2, RunStatus::Abandoned),
        ],
    )
    .await
    .unwrap();

    let succeeded = runs::succeeded_jobs(&pool, &[retried_then_succeeded, only_failed, never_seen])
        .await
        .unwrap();

    assert_eq!(
        succeeded.into_iter().collect::<Vec<_>>(),
        [retried_then_succeeded]
    );
    assert!(runs::succeeded_jobs(&pool, &[]).await.unwrap().is_empty());
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn runs_read_back_with_every_field(pool: PgPool) {
    let job_id = JobId::new();
    let mut failed = record(job_id, 1, RunStatus::Failed);
    failed.schedule = Some("nightly".to_owned());
    failed.tick_at = Some(t0());
    let succeeded = succeeded_with_findings(job_id, 2, &[("disk.used_pct", Severity::Ok)]);
    runs::record_runs(&pool, &[succeeded.clone(), failed.clone()])
        .await
        .unwrap();

    let rows = runs::runs_for_job(&pool, job_id).await.unwrap();

    assert_eq!(rows.len(), 2);
    let first = &rows[0];
    assert_eq!(
        (first.job_id, first.attempt, first.status),
        (job_id, 1, RunStatus::Failed)
    );
    assert_eq!(first.kind, "system.ping");
    assert_eq!(first.queue, "reports");
    assert_eq!(first.schedule.as_deref(), Some("nightly"));
    assert_eq!(first.tick_at, Some(t0()));
    assert_eq!(first.enqueued_at, failed.enqueued_at);
    assert_eq!(first.started_at, failed.started_at);
    assert_eq!(first.finished_at, failed.finished_at);
    assert_eq!(first.args, failed.args);
    assert_eq!(first.outcome, None);
    assert_eq!(rows[1].outcome, succeeded.outcome);
    assert_eq!(rows[1].next_state.as_deref(), Some("done"));
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn recent_runs_filter_by_kind_and_status_newest_first(pool: PgPool) {
    let mut batch = Vec::new();
    for job_idx in 0..6 {
        let status = if job_idx % 2 == 0 {
            RunStatus::Succeeded
        } else {
            RunStatus::Failed
        };
        let mut run = record(JobId::new(), 1, status);
        run.finished_at = Some(t0() + Duration::seconds(job_idx));
        if job_idx >= 4 {
            run.kind = "db.bloat".to_owned();
        }
        batch.push(run);
    }
    let running = record(JobId::new(), 1, RunStatus::Running);
    batch.push(running.clone());
    runs::record_runs(&pool, &batch).await.unwrap();

    let all = runs::recent_runs(&pool, None, None, 100).await.unwrap();
    let failed_pings = runs::recent_runs(&pool, Some("system.ping"), Some(RunStatus::Failed), 100)
        .await
        .unwrap();
    let newest_two = runs::recent_runs(&pool, None, None, 2).await.unwrap();

    assert_eq!(all.len(), 7);
    assert_eq!(all[0].job_id, running.job_id, "running attempts come first");
    assert_eq!(all[1].finished_at, Some(t0() + Duration::seconds(5)));
    let finished: Vec<i64> = failed_pings
        .iter()
        .map(|row| (row.finished_at.unwrap() - t0()).num_seconds())
        .collect();
    assert_eq!(finished, [3, 1]);
    assert_eq!(newest_two.len(), 2);
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn retention_deletes_old_finished_runs_and_their_findings_in_batches(pool: PgPool) {
    let mut batch = Vec::new();
    for job_idx in 0..25 {
        let mut run = succeeded_with_findings(JobId::new(), 1, &[("disk.used_pct", Severity::Ok)]);
        run.finished_at = Some(t0() + Duration::days(job_idx));
        batch.push(run);
    }
    let mut old_running = record(JobId::new(), 1, RunStatus::Running);
    old_running.started_at = t0() - Duration::days(100);
    batch.push(old_running);
    runs::record_runs(&pool, &batch).await.unwrap();

    // Runs finished on days 0..=9 are older than the cutoff: 10 runs, in batches of 3.
    let n_deleted = runs::delete_runs_older_than(&pool, t0() + Duration::days(10), 3)
        .await
        .unwrap();

    assert_eq!(n_deleted, 10);
    assert_eq!(count(&pool, "SELECT count(*) FROM job_runs").await, 16);
    assert_eq!(count(&pool, "SELECT count(*) FROM findings").await, 15);
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM job_runs WHERE status = 'running'"
        )
        .await,
        1,
        "running attempts are never deleted"
    );
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn recording_ten_thousand_runs_in_batches_of_500_reports_its_throughput(pool: PgPool) {
    // Measures the worker's hot path; prints the rate (run with --nocapture) and asserts only
    // that every row landed, because timing depends on the machine.
    let n_runs: u32 = 10_000;
    let records: Vec<_> = (0..n_runs)
        .map(|run_idx| {
            if run_idx % 10 == 0 {
                succeeded_with_findings(JobId::new(), 1, &[("disk.used_pct", Severity::Ok)])
            } else {
                record(JobId::new(), 1, RunStatus::Succeeded)
            }
        })
        .collect();

    let started = Instant::now();
    let mut n_written = 0;
    for chunk in records.chunks(500) {
        n_written += runs::record_runs(&pool, chunk).await.unwrap();
    }
    let elapsed = started.elapsed();

    println!(
        "record_runs: {n_runs} rows in batches of 500 in {:.3} s = {:.0} rows/s",
        elapsed.as_secs_f64(),
        f64::from(n_runs) / elapsed.as_secs_f64()
    );
    assert_eq!(n_written, u64::from(n_runs));
    assert_eq!(count(&pool, "SELECT count(*) FROM job_runs").await, 10_000);
    assert_eq!(count(&pool, "SELECT count(*) FROM findings").await, 1_000);
}
