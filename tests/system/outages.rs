//! A dependency going away under a running worker.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use upkeep_tests::{ChildProcess, PrivatePostgres};
use uuid::Uuid;

use crate::support::{Deployment, Run, all_runs, eventually, wait_for_log_entry, wait_for_worker};

const N_JOBS: usize = 200;
const OUTAGE: Duration = Duration::from_secs(10);

/// What happened around a Postgres outage in the middle of a backlog.
struct OutageRun {
    enqueued: HashSet<Uuid>,
    /// Every row of `job_runs` once each job had a succeeded row.
    runs: Vec<Run>,
    /// Jobs waiting in Redis just after the worker logged the outage, and at its end.
    pending_when_noticed: u64,
    pending_at_restart: u64,
    /// Fields drop in this order: the worker first, then the keys and the database.
    worker: ChildProcess,
    deployment: Deployment,
    _postgres: PrivatePostgres,
}

/// 200 jobs of 100 ms on a worker with concurrency 4 (about five seconds of work);
/// Postgres is stopped once 20 runs are recorded, for 10 s, then started again.
async fn backlog_through_a_postgres_outage() -> OutageRun {
    let mut postgres = PrivatePostgres::start().expect("private postgres starts");
    let mut deployment = Deployment::with_database_url(postgres.url());
    deployment.run("upkeepctl", ["migrate"]).assert_success();
    deployment.set_env("UPKEEP__QUEUES__REPORTS__CONCURRENCY", "4");
    deployment.set_env("UPKEEP__DATABASE__CONNECT_TIMEOUT", "1s");
    let mut worker = deployment.start("upkeep-worker-reports", [] as [&str; 0]);
    wait_for_worker(&mut worker, "reports");

    let count = N_JOBS.to_string();
    let enqueued = deployment.enqueue("system.ping", r#"{"sleep_ms":100}"#, &["--count", &count]);
    assert_eq!(enqueued.len(), N_JOBS);
    let enqueued: HashSet<Uuid> = enqueued.into_iter().collect();
    assert_eq!(enqueued.len(), N_JOBS, "job ids are unique");

    let mut ledger = deployment.ledger().await;
    let n_before = eventually(
        "the first 20 recorded runs",
        Duration::from_secs(30),
        async || {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM job_runs")
                .fetch_one(&mut ledger)
                .await
                .expect("counting runs");
            (n >= 20).then_some(n)
        },
    )
    .await;
    drop(ledger);
    postgres.stop().expect("stopping postgres");
    let stopped = Instant::now();
    assert!(
        (n_before as usize) < N_JOBS,
        "all jobs ran before the outage; the test proves nothing"
    );

    // The worker notices (a run cannot be recorded), says so, and stays up.
    wait_for_log_entry(&mut worker, "the ledger outage", OUTAGE, |entry| {
        entry["message"] == "dependency unavailable; retrying with backoff"
    });
    let noticed_after = stopped.elapsed();
    let pending = |deployment: &Deployment| {
        deployment.stats()["reports"]["pending"]
            .as_u64()
            .expect("stats has pending")
    };
    let pending_when_noticed = pending(&deployment);
    std::thread::sleep(OUTAGE.saturating_sub(stopped.elapsed()));
    let pending_at_restart = pending(&deployment);
    assert!(worker.is_running(), "the worker exited during the outage");
    postgres.restart().expect("starting postgres again");
    let restarted = Instant::now();

    let mut ledger = deployment.ledger().await;
    let runs = eventually(
        "a succeeded run of every job",
        Duration::from_secs(60),
        async || {
            let runs = all_runs(&mut ledger).await;
            let n_succeeded = runs.iter().filter(|run| run.status == "succeeded").count();
            (n_succeeded >= N_JOBS).then_some(runs)
        },
    )
    .await;
    eprintln!(
        "{n_before} runs recorded before the outage; outage logged after {noticed_after:?}, \
         {pending_when_noticed} jobs pending then, {pending_at_restart} at the restart; \
         postgres down {:?}; all {N_JOBS} succeeded {:?} after the restart",
        restarted - stopped,
        restarted.elapsed()
    );
    OutageRun {
        enqueued,
        runs,
        pending_when_noticed,
        pending_at_restart,
        worker,
        deployment,
        _postgres: postgres,
    }
}

#[tokio::test]
async fn postgres_stopped_for_10s_mid_run_loses_no_job_and_records_each_success_exactly_once() {
    let OutageRun {
        enqueued,
        runs,
        deployment,
        mut worker,
        // Bound, so that Postgres lives to the end of the test rather than of this
        // statement.
        _postgres,
        ..
    } = backlog_through_a_postgres_outage().await;

    let mut succeeded: BTreeMap<Uuid, usize> = BTreeMap::new();
    for run in runs.iter().filter(|run| run.status == "succeeded") {
        *succeeded.entry(run.job_id).or_default() += 1;
    }
    let twice: Vec<_> = succeeded.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "jobs with more than one success: {twice:?}"
    );
    let recorded: HashSet<Uuid> = runs.iter().map(|run| run.job_id).collect();
    let lost: Vec<_> = enqueued.difference(&recorded).collect();
    assert!(lost.is_empty(), "jobs never recorded: {lost:?}");
    let strangers: Vec<_> = recorded.difference(&enqueued).collect();
    assert!(
        strangers.is_empty(),
        "runs of jobs nobody enqueued: {strangers:?}"
    );
    let failed: Vec<_> = runs.iter().filter(|run| run.status == "failed").collect();
    assert!(
        failed.is_empty(),
        "an outage of the ledger is not a failure of the job: {failed:#?}"
    );
    wait_for_log_entry(
        &mut worker,
        "the end of the ledger outage",
        Duration::from_secs(5),
        |entry| entry["message"] == "dependency available again",
    );
    let reports = &deployment.stats()["reports"];
    assert_eq!(
        (&reports["pending"], &reports["running"], &reports["dead"]),
        (&0.into(), &0.into(), &0.into()),
        "every job is settled in Redis: {reports}"
    );
    assert!(worker.is_running(), "the worker exited after the outage");
}

/// README: "While Postgres is down, workers stop fetching new jobs instead of holding
/// results in memory." The completer flags the ledger outage and the backend leases nothing
/// new until a write succeeds again.
#[tokio::test]
async fn while_postgres_is_down_a_worker_stops_fetching_new_jobs() {
    let outage = backlog_through_a_postgres_outage().await;

    assert_eq!(
        outage.pending_at_restart, outage.pending_when_noticed,
        "jobs were fetched from Redis after the worker saw that Postgres was down"
    );
}
