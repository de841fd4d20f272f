//! The scheduler and a worker as separate processes: cron ticks become recorded runs.

use std::time::Duration;

use uuid::Uuid;

use crate::support::{Deployment, eventually, wait_for_worker};

const EVERY_SECOND: &str = r#"
[[schedules]]
name = "ping-every-second"
cron = "* * * * * *"
kind = "system.ping"
"#;

/// A tick with its run: fire time, job id, and how long after the fire time the run
/// finished.
#[derive(Debug)]
struct LinkedTick {
    fire_at: f64,
    job_id: Uuid,
    finished_after_fire_s: f64,
}

#[tokio::test]
async fn a_schedule_firing_every_second_yields_a_succeeded_run_linked_to_its_tick_within_3s() {
    let deployment = Deployment::new().await;
    deployment.write_config(EVERY_SECOND);
    let mut worker = deployment.start("upkeep-worker-reports", [] as [&str; 0]);
    wait_for_worker(&mut worker, "reports");
    let mut scheduler = deployment.start("upkeep-scheduler", [] as [&str; 0]);
    let mut ledger = deployment.ledger().await;

    // Three ticks in a row, each enqueued and run; the join is the link the contract
    // promises: same schedule, tick_at = fire_at, same job id.
    let linked: Vec<LinkedTick> = eventually(
        "three ticks with succeeded runs",
        Duration::from_secs(20),
        async || {
            let rows: Vec<(f64, Uuid, f64)> = sqlx::query_as(
                "SELECT extract(epoch FROM t.fire_at)::float8, t.job_id,
                        extract(epoch FROM r.finished_at - t.fire_at)::float8
                   FROM schedule_ticks t
                   JOIN job_runs r
                     ON r.job_id = t.job_id
                    AND r.schedule = t.schedule
                    AND r.tick_at = t.fire_at
                  WHERE t.schedule = 'ping-every-second'
                    AND t.decision = 'enqueued'
                    AND r.status = 'succeeded'
                  ORDER BY t.fire_at",
            )
            .fetch_all(&mut ledger)
            .await
            .expect("joining ticks and runs");
            (rows.len() >= 3).then(|| {
                rows.into_iter()
                    .map(|(fire_at, job_id, finished_after_fire_s)| LinkedTick {
                        fire_at,
                        job_id,
                        finished_after_fire_s,
                    })
                    .collect()
            })
        },
    )
    .await;

    for tick in &linked {
        assert!(
            (0.0..3.0).contains(&tick.finished_after_fire_s),
            "the run of the tick at {} finished {:.3}s after it, not within 3s: {linked:#?}",
            tick.fire_at,
            tick.finished_after_fire_s
        );
    }
    let distinct_jobs: std::collections::HashSet<Uuid> =
        linked.iter().map(|tick| tick.job_id).collect();
    assert_eq!(distinct_jobs.len(), linked.len(), "one job per tick");

    // No tick up to the last linked one was left without its run: every enqueued tick in
    // that span is linked, one second apart.
    let last_linked = linked.last().expect("three of them").fire_at;
    let first_linked = linked[0].fire_at;
    let n_ticks: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM schedule_ticks
          WHERE schedule = 'ping-every-second'
            AND fire_at BETWEEN to_timestamp($1) AND to_timestamp($2)",
    )
    .bind(first_linked)
    .bind(last_linked)
    .fetch_one(&mut ledger)
    .await
    .expect("counting ticks");
    assert_eq!(
        n_ticks as usize,
        linked.len(),
        "ticks between the first and the last linked one: {linked:#?}"
    );
    assert!(
        scheduler.is_running() && worker.is_running(),
        "both daemons keep running"
    );
}
