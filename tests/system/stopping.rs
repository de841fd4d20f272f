//! Stopping a worker: gracefully with SIGTERM, and abruptly with kill -9, where the lease
//! hands the job to another worker.

use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::support::{
    Deployment, runs_of, unix_now, wait_for_log_entry, wait_for_status, wait_for_worker,
};

#[tokio::test]
async fn sigterm_during_a_3s_job_lets_it_finish_as_succeeded_and_the_worker_exits_0_within_the_grace_period()
 {
    let mut deployment = Deployment::new().await;
    let grace = Duration::from_secs(10);
    deployment.set_env("UPKEEP__WORKER__GRACE_PERIOD", "10s");
    let mut worker = deployment.start("upkeep-worker-reports", [] as [&str; 0]);
    wait_for_worker(&mut worker, "reports");
    let ids = deployment.enqueue("system.ping", r#"{"sleep_ms":3000}"#, &[]);
    deployment
        .wait_for_running("reports", 1, Duration::from_secs(10))
        .await;

    let signalled = Instant::now();
    worker.sigterm().expect("SIGTERM");
    let status = worker.wait_timeout(grace).unwrap_or_else(|| {
        panic!(
            "the worker still runs {grace:?} after SIGTERM; log:\n{}",
            worker.log()
        )
    });
    let stopped_after = signalled.elapsed();

    assert_eq!(status.code(), Some(0), "exit status {status}");
    let mut ledger = deployment.ledger().await;
    let runs = runs_of(&mut ledger, ids[0]).await;
    assert_eq!(
        runs.iter()
            .map(|run| (run.attempt, run.status.as_str()))
            .collect::<Vec<_>>(),
        [(1, "succeeded")],
        "the job finished inside the grace period: {runs:#?}"
    );
    let run = &runs[0];
    let ran_for = run.finished_at.expect("a succeeded run has finished") - run.started_at;
    assert!(ran_for >= 2.9, "the handler slept its 3 s: {run:#?}");
    assert!(
        stopped_after < grace,
        "exited {stopped_after:?} after SIGTERM"
    );
    let reports = &deployment.stats()["reports"];
    assert_eq!(
        (&reports["running"], &reports["pending"]),
        (&0.into(), &0.into()),
        "the job is settled in Redis, not handed back: {reports}"
    );
}

#[tokio::test]
async fn sigterm_during_a_job_longer_than_the_grace_period_records_it_abandoned_and_gives_it_back()
{
    let mut deployment = Deployment::new().await;
    let grace = Duration::from_secs(2);
    deployment.set_env("UPKEEP__WORKER__GRACE_PERIOD", "2s");
    let mut worker = deployment.start("upkeep-worker-reports", [] as [&str; 0]);
    let first_id = wait_for_worker(&mut worker, "reports");
    let ids = deployment.enqueue("system.ping", r#"{"sleep_ms":6000}"#, &[]);
    deployment
        .wait_for_running("reports", 1, Duration::from_secs(10))
        .await;

    let signalled = Instant::now();
    worker.sigterm().expect("SIGTERM");
    let status = worker
        .wait_timeout(grace + Duration::from_secs(8))
        .unwrap_or_else(|| {
            panic!(
                "the worker ignores its grace period; log:\n{}",
                worker.log()
            )
        });
    let stopped_after = signalled.elapsed();

    assert_eq!(status.code(), Some(0), "exit status {status}");
    assert!(
        stopped_after >= grace && stopped_after < grace + Duration::from_secs(3),
        "exited {stopped_after:?} after SIGTERM with a {grace:?} grace period"
    );
    let mut ledger = deployment.ledger().await;
    let runs = runs_of(&mut ledger, ids[0]).await;
    assert_eq!(
        runs.iter()
            .map(|run| (run.attempt, run.status.as_str(), run.worker.as_str()))
            .collect::<Vec<_>>(),
        [(1, "abandoned", first_id.as_str())],
        "{runs:#?}"
    );
    assert_eq!(runs[0].next_state.as_deref(), Some("retrying"), "{runs:#?}");
    let reports = &deployment.stats()["reports"];
    assert_eq!(
        (&reports["running"], &reports["pending"]),
        (&0.into(), &1.into()),
        "the job is back on the queue at once, not left to its lease: {reports}"
    );

    let mut next = deployment.start("upkeep-worker-reports", [] as [&str; 0]);
    let next_id = wait_for_worker(&mut next, "reports");
    let runs = wait_for_status(&mut ledger, ids[0], "succeeded", Duration::from_secs(20)).await;
    assert_eq!(
        runs.iter()
            .map(|run| (run.attempt, run.status.as_str(), run.worker.as_str()))
            .collect::<Vec<_>>(),
        [
            (1, "abandoned", first_id.as_str()),
            (2, "succeeded", next_id.as_str())
        ],
        "{runs:#?}"
    );
}

#[tokio::test]
async fn a_job_of_a_worker_killed_with_sigkill_is_finished_by_another_worker_once_its_lease_expires()
 {
    let mut deployment = Deployment::new().await;
    let lease_s = 2.0;
    deployment.set_env("UPKEEP__QUEUES__REPORTS__LEASE", "2s");
    let mut doomed = deployment.start("upkeep-worker-reports", [] as [&str; 0]);
    let doomed_id = wait_for_worker(&mut doomed, "reports");
    let ids = deployment.enqueue("system.ping", r#"{"sleep_ms":4000}"#, &[]);
    deployment
        .wait_for_running("reports", 1, Duration::from_secs(10))
        .await;
    // The second worker is up and idle before the first dies: only the expired lease can
    // give it the job.
    let mut survivor = deployment.start("upkeep-worker-reports", [] as [&str; 0]);
    let survivor_id = wait_for_worker(&mut survivor, "reports");
    assert_ne!(doomed_id, survivor_id, "worker ids are unique per process");

    let killed_at = unix_now();
    doomed.kill9().expect("kill -9");

    let mut ledger = deployment.ledger().await;
    let runs = wait_for_status(&mut ledger, ids[0], "succeeded", Duration::from_secs(20)).await;
    let summary: Vec<(i32, &str, &str)> = runs
        .iter()
        .map(|run| (run.attempt, run.status.as_str(), run.worker.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            (1, "abandoned", doomed_id.as_str()),
            (2, "succeeded", survivor_id.as_str())
        ],
        "{runs:#?}"
    );
    let second = &runs[1];
    eprintln!(
        "attempt 2 started {:.3}s after the kill",
        second.started_at - killed_at
    );
    // The renewer extends the lease every third of it, so it ran out at most one lease
    // after the kill; the second attempt cannot start before the last renewal expired.
    assert!(
        second.started_at >= killed_at + lease_s / 3.0,
        "attempt 2 started {:.3}s after the kill, before the lease could expire",
        second.started_at - killed_at
    );
    assert!(
        second.started_at <= killed_at + lease_s + 3.0,
        "attempt 2 started {:.3}s after the kill, long after the {lease_s}s lease expired",
        second.started_at - killed_at
    );
    assert_eq!(runs[0].next_state.as_deref(), Some("retrying"), "{runs:#?}");
    assert!(survivor.is_running());
}

/// The abandoned attempt of a scheduled job must stay linked to its tick, like every other
/// attempt: `job_runs.tick_at` is how "did the 02:00 backup run?" finds its attempts.
#[tokio::test]
async fn an_attempt_abandoned_by_a_killed_worker_keeps_the_link_to_its_schedule_tick() {
    let mut deployment = Deployment::new().await;
    deployment.set_env("UPKEEP__QUEUES__REPORTS__LEASE", "2s");
    deployment.write_config(
        r#"
[[schedules]]
name = "slow-ping"
cron = "* * * * * *"
kind = "system.ping"
args = { sleep_ms = 4000 }
"#,
    );
    let mut doomed = deployment.start("upkeep-worker-reports", [] as [&str; 0]);
    wait_for_worker(&mut doomed, "reports");
    let mut scheduler = deployment.start("upkeep-scheduler", [] as [&str; 0]);
    // One tick is enough: stop the scheduler once it has enqueued one.
    let tick = wait_for_log_entry(
        &mut scheduler,
        "an enqueued tick",
        Duration::from_secs(15),
        |entry| entry["message"] == "tick enqueued",
    );
    scheduler.kill9().expect("kill -9 the scheduler");
    let job_id: Uuid = tick["job_id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("the tick entry names its job: {tick}"));
    // A scheduler that starts just after a second boundary also enqueues the previous
    // second's tick (due less than the catch-up grace before its start), so one or two jobs
    // run; the test follows the first tick's.
    crate::support::eventually(
        "a running job on reports",
        Duration::from_secs(10),
        async || {
            let running = deployment.stats()["reports"]["running"].as_u64();
            running.is_some_and(|n| n >= 1).then_some(())
        },
    )
    .await;
    let mut survivor = deployment.start("upkeep-worker-reports", [] as [&str; 0]);
    wait_for_worker(&mut survivor, "reports");
    doomed.kill9().expect("kill -9");

    let mut ledger = deployment.ledger().await;
    wait_for_status(&mut ledger, job_id, "succeeded", Duration::from_secs(30)).await;
    // attempt, status, schedule, tick_at, and the fire time of the job's tick.
    type Linked = (i32, String, Option<String>, Option<f64>, Option<f64>);
    let attempts: Vec<Linked> = sqlx::query_as(
        "SELECT r.attempt, r.status, r.schedule,
                extract(epoch FROM r.tick_at)::float8, extract(epoch FROM t.fire_at)::float8
           FROM job_runs r
           LEFT JOIN schedule_ticks t ON t.job_id = r.job_id
          WHERE r.job_id = $1
          ORDER BY r.attempt",
    )
    .bind(job_id)
    .fetch_all(&mut ledger)
    .await
    .expect("reading the attempts");
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    for (attempt, status, schedule, tick_at, fire_at) in &attempts {
        assert!(
            schedule.as_deref() == Some("slow-ping") && tick_at.is_some() && tick_at == fire_at,
            "attempt {attempt} ({status}) is not linked to its tick: schedule {schedule:?}, \
             tick_at {tick_at:?}, the tick fired at {fire_at:?}"
        );
    }
}
