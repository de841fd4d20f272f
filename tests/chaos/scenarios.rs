//! The five fault scenarios of issue 5. Each starts its own cluster, enqueues the job mix,
//! injects its fault while the backlog drains, and ends by comparing the enqueued ids with the
//! ledger: nothing lost, nothing completed twice, every attempt accounted for.

use std::time::{Duration, Instant};

use crate::harness::{
    Cluster, ClusterOptions, Enqueued, Ledger, Verdict, drain_timeout, n_jobs, report,
};
use upkeep_tests::ProxyMode;

/// Judges the run, prints its line, and fails the test unless it is clean.
fn conclude(scenario: &str, enqueued: &Enqueued, ledger: &Ledger, drain: Duration, extra: &str) {
    let verdict = Verdict::judge(enqueued, ledger);
    report(&verdict.line(scenario, drain, extra));
    verdict.assert_clean(ledger);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_killed_with_sigkill_every_few_seconds_lose_no_job_and_complete_none_twice() {
    let n = n_jobs();
    let mut cluster = Cluster::start(&ClusterOptions::default());
    let enqueued = cluster.enqueue_mix(n);
    let started = Instant::now();

    // Like a supervisor: a random worker dies every 1.5-3.5 s and is back 300 ms later, until
    // nine tenths of the jobs are done.
    let mut n_kills = 0;
    while cluster.n_succeeded().await.unwrap_or(0) < n * 9 / 10
        && started.elapsed() < drain_timeout(n)
    {
        tokio::time::sleep(Duration::from_millis(rand::random_range(1500..3500))).await;
        let slot = rand::random_range(0..cluster.workers.len());
        cluster.kill9_worker(slot);
        n_kills += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
        cluster.start_worker(slot);
    }
    let ledger = cluster.wait_for_drain(&enqueued, drain_timeout(n)).await;

    assert!(
        n_kills >= 2,
        "only {n_kills} kills: the backlog drained too fast to test anything"
    );
    conclude(
        "kill9",
        &enqueued,
        &ledger,
        started.elapsed(),
        &format!(" kills={n_kills}"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restarted_twice_mid_run_once_cleanly_once_killed_loses_no_job_and_completes_none_twice()
 {
    let n = n_jobs();
    let mut cluster = Cluster::start(&ClusterOptions::default());
    let enqueued = cluster.enqueue_mix(n);
    let started = Instant::now();

    // A clean restart (SIGTERM flushes the append-only file) a quarter in...
    cluster.wait_for_progress(n / 4, drain_timeout(n)).await;
    cluster.redis.restart().expect("restarting redis");
    // ...and a crash half-way: up to a second of writes (leases, acks) is lost with the AOF
    // tail. Every enqueue happened well over a second before, so no job is in that window.
    cluster.wait_for_progress(n / 2, drain_timeout(n)).await;
    cluster.redis.kill9().expect("killing redis");
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.redis.restart().expect("starting redis again");
    let ledger = cluster.wait_for_drain(&enqueued, drain_timeout(n)).await;

    let n_refused = cluster.count_worker_logs("ack refused");
    conclude(
        "redis_restart",
        &enqueued,
        &ledger,
        started.elapsed(),
        &format!(" redis_restarts=2 refused_acks={n_refused}"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crashed_and_restarted_mid_run_loses_no_job_and_completes_none_twice() {
    let n = n_jobs();
    let mut cluster = Cluster::start(&ClusterOptions::default());
    let enqueued = cluster.enqueue_mix(n);
    let started = Instant::now();

    cluster.wait_for_progress(n / 3, drain_timeout(n)).await;
    // An immediate shutdown: no checkpoint, crash recovery on the next start.
    cluster
        .postgres
        .stop_immediate()
        .expect("stopping postgres");
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.postgres.restart().expect("starting postgres again");
    let ledger = cluster.wait_for_drain(&enqueued, drain_timeout(n)).await;

    conclude(
        "postgres_restart",
        &enqueued,
        &ledger,
        started.elapsed(),
        " postgres_down=3s",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_5s_partition_between_workers_and_redis_loses_no_job_and_records_no_fenced_result() {
    let n = n_jobs();
    let cluster = Cluster::start(&ClusterOptions {
        proxy: true,
        ..ClusterOptions::default()
    });
    let enqueued = cluster.enqueue_mix(n);
    let started = Instant::now();

    // The partition outlasts the 4 s lease: every lease held when it starts expires in Redis
    // while the workers keep running their jobs.
    cluster.wait_for_progress(n / 3, drain_timeout(n)).await;
    let proxy = cluster.proxy.as_ref().expect("the cluster has a proxy");
    proxy.set_mode(ProxyMode::Blackhole);
    tokio::time::sleep(Duration::from_secs(5)).await;
    proxy.set_mode(ProxyMode::Forward);
    let ledger = cluster.wait_for_drain(&enqueued, drain_timeout(n)).await;

    let n_fenced = cluster.count_worker_logs("lease no longer confirmed");
    let n_refused = cluster.count_worker_logs("ack refused");
    let n_lost_leases = cluster.count_worker_logs("lease lost; its ack will be refused");
    conclude(
        "partition",
        &enqueued,
        &ledger,
        started.elapsed(),
        &format!(
            " partition=5s fenced_results={n_fenced} refused_acks={n_refused} lost_leases={n_lost_leases}"
        ),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_every_worker_under_load_then_a_rolling_restart_loses_no_job_and_completes_none_twice()
 {
    let n = n_jobs();
    let mut cluster = Cluster::start(&ClusterOptions::default());
    let enqueued = cluster.enqueue_mix(n);
    let started = Instant::now();
    let slots: Vec<usize> = (0..cluster.workers.len()).collect();

    // Everything at once (a deploy that stops the whole fleet)...
    cluster.wait_for_progress(n / 4, drain_timeout(n)).await;
    cluster.sigterm_workers(&slots);
    for slot in &slots {
        cluster.start_worker(*slot);
    }
    // ...then one worker at a time (a rolling deploy).
    cluster.wait_for_progress(n / 2, drain_timeout(n)).await;
    for slot in &slots {
        cluster.sigterm_workers(&[*slot]);
        cluster.start_worker(*slot);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let ledger = cluster.wait_for_drain(&enqueued, drain_timeout(n)).await;

    let n_released = cluster.count_worker_logs("released jobs");
    conclude(
        "rolling_deploy",
        &enqueued,
        &ledger,
        started.elapsed(),
        &format!(" sigterms={} release_logs={n_released}", slots.len() * 2),
    );
}
