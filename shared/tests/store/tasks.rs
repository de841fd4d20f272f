//! `store::tasks`: a checklist's evidence is a few index probes per item, whatever the history.

use chrono::NaiveDate;
use sqlx::PgPool;
use upkeep_shared::store::tasks;
use upkeep_shared::tasks::{Period, Window, builtin_items};

/// 30,000 succeeded `system.disk` runs inside one day and none of `backup.verify`: the shape
/// that made the planner walk the whole day on `job_runs_finished_at_idx` for the kind with no
/// run, once per item, when the kind was a parameter of the lateral probe.
#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn the_evidence_query_probes_its_own_index_and_never_walks_a_window(pool: PgPool) {
    sqlx::query(
        "INSERT INTO job_runs (job_id, attempt, kind, queue, status, enqueued_at, started_at, \
                               finished_at, duration_ms, worker, args, next_state) \
         SELECT gen_random_uuid(), 1, 'system.disk', 'system', 'succeeded', at, at, at, 1, 'w', \
                '{}'::jsonb, 'done' \
         FROM (SELECT timestamptz '2026-11-22 00:00:00+00' + i * interval '2 seconds' AS at \
               FROM generate_series(1, 30000) AS i) AS g",
    )
    .execute(&pool)
    .await
    .expect("seeded");
    sqlx::query("ANALYZE job_runs")
        .execute(&pool)
        .await
        .expect("analyzed");
    let day = NaiveDate::from_ymd_opt(2026, 11, 22).expect("a date");
    let window = Window::containing(Period::Daily, day, chrono_tz::UTC);
    let items: Vec<_> = builtin_items()
        .into_iter()
        .filter(|item| item.period == Period::Daily)
        .collect();
    let plan = tasks::explain_evidence(&pool, &items, &window)
        .await
        .expect("explained");
    assert!(
        plan.contains("kind_status_timezone_idx"),
        "the probes use job_runs_task_evidence_idx (kind_status_timezone_idx on each partition):\n{plan}"
    );
    assert!(
        !plan.contains("finished_at_idx"),
        "no probe walks the window on the finished_at index:\n{plan}"
    );

    let evidence = tasks::evidence(&pool, &items, &window)
        .await
        .expect("evidence");
    let disk = items
        .iter()
        .position(|item| item.name == "disk_space")
        .expect("a disk_space item");
    let newest = evidence[disk].last_success.as_ref().expect("a success");
    assert_eq!(
        newest.finished_at,
        chrono::DateTime::parse_from_rfc3339("2026-11-22T16:40:00Z").expect("an instant")
    );
    assert!(
        evidence
            .iter()
            .enumerate()
            .all(|(i, e)| i == disk || e.last_success.is_none())
    );
}
