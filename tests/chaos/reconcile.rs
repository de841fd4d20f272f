//! Reconciliation: a job whose keys are deleted behind upkeep's back while the ledger expects
//! it to run again is found, then requeued (same id, attempts counted on) or recorded as lost.

use std::time::Duration;

use uuid::Uuid;

use crate::harness::{Cluster, ClusterOptions};

/// Retries wait up to an hour, so a failed job sits in the retry set while the test deletes it.
fn config(maintenance: &str) -> String {
    format!(
        r#"
[queues.reports]
concurrency = 2
lease = "4s"
max_attempts = 3
backoff_base = "1h"
backoff_max = "1h"

[maintenance]
{maintenance}
"#
    )
}

/// Enqueues a job that fails its first attempt, waits until the ledger says it will be retried,
/// then deletes everything Redis has of it.
async fn a_failed_job_redis_then_loses(cluster: &Cluster) -> Uuid {
    let id = cluster.enqueue_one(r#"{"fail_attempts":1}"#);
    cluster
        .wait_for_run(id, Duration::from_secs(20), |(_, status, next, _)| {
            status == "failed" && next.as_deref() == Some("retrying")
        })
        .await;
    // The ack follows the ledger row; wait until the job waits in the retry set.
    let keys = cluster.keys();
    let mut redis = cluster.redis_connection();
    for _ in 0..100 {
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg(&keys.retry)
            .arg(id.to_string())
            .query(&mut redis)
            .expect("ZSCORE");
        if score.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let () = redis::pipe()
        .cmd("DEL")
        .arg(keys.job(&id.to_string()))
        .ignore()
        .cmd("ZREM")
        .arg(&keys.retry)
        .arg(id.to_string())
        .ignore()
        .cmd("HDEL")
        .arg(&keys.attempts)
        .arg(id.to_string())
        .ignore()
        .query(&mut redis)
        .expect("deleting the job's keys");
    id
}

fn reconcile_json(cluster: &Cluster, args: &[&str]) -> serde_json::Value {
    let mut argv = vec!["reconcile", "--json", "--grace", "1s"];
    argv.extend_from_slice(args);
    let stdout = cluster.ctl(&argv);
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("reconcile --json printed {stdout:?}: {e}"))
}

fn lost_ids(report: &serde_json::Value) -> Vec<(String, String)> {
    report["lost"]
        .as_array()
        .expect("a lost array")
        .iter()
        .map(|lost| {
            (
                lost["job_id"].as_str().expect("job_id").to_owned(),
                lost["action"].as_str().expect("action").to_owned(),
            )
        })
        .collect()
}

async fn findings_of(cluster: &Cluster, id: Uuid) -> Vec<(i32, String, String)> {
    sqlx::query_as("SELECT attempt, code, severity FROM findings WHERE job_id = $1 ORDER BY id")
        .bind(id)
        .fetch_all(&mut cluster.ledger().await)
        .await
        .expect("reading findings")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upkeepctl_reconcile_finds_a_job_redis_lost_and_requeues_it_under_the_same_id() {
    // Arrange: one lost job, and one failed job Redis still has (not lost).
    let cluster = Cluster::start(&ClusterOptions {
        n_workers: 1,
        config: config(r#"reconcile_action = "off""#),
        ..ClusterOptions::default()
    });
    let lost = a_failed_job_redis_then_loses(&cluster).await;
    let kept = cluster.enqueue_one(r#"{"fail_attempts":1}"#);
    cluster
        .wait_for_run(kept, Duration::from_secs(20), |(_, status, _, _)| {
            status == "failed"
        })
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // Act + Assert: a dry run names it and changes nothing.
    let dry = reconcile_json(&cluster, &["--dry-run"]);
    assert_eq!(
        lost_ids(&dry),
        vec![(lost.to_string(), "reported".to_owned())],
        "{dry}"
    );
    assert!(
        cluster.runs_of(lost).await.len() == 1,
        "a dry run writes nothing"
    );

    // The real pass puts it back; the worker runs attempt 2, which succeeds.
    let requeued = reconcile_json(&cluster, &[]);
    assert_eq!(
        lost_ids(&requeued),
        vec![(lost.to_string(), "requeued".to_owned())],
        "{requeued}"
    );
    let runs = cluster
        .wait_for_run(lost, Duration::from_secs(20), |(_, status, _, _)| {
            status == "succeeded"
        })
        .await;
    let attempts: Vec<(i32, &str)> = runs.iter().map(|(a, s, _, _)| (*a, s.as_str())).collect();
    assert_eq!(attempts, vec![(1, "failed"), (2, "succeeded")]);
    assert!(
        findings_of(&cluster, lost).await.contains(&(
            1,
            "job.requeued_after_loss".to_owned(),
            "warn".to_owned()
        )),
        "a warn finding records the requeue"
    );

    // A second pass finds nothing: the job finished, and the kept one is still in Redis.
    let again = reconcile_json(&cluster, &[]);
    assert_eq!(lost_ids(&again), vec![], "{again}");
    assert!(
        cluster.runs_of(kept).await.len() == 1,
        "the job Redis kept was not touched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_with_action_record_records_the_lost_job_as_abandoned_and_dead_with_a_critical_finding()
 {
    let cluster = Cluster::start(&ClusterOptions {
        n_workers: 1,
        config: config(r#"reconcile_action = "off""#),
        ..ClusterOptions::default()
    });
    let lost = a_failed_job_redis_then_loses(&cluster).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let recorded = reconcile_json(&cluster, &["--action", "record"]);

    assert_eq!(
        lost_ids(&recorded),
        vec![(lost.to_string(), "recorded".to_owned())],
        "{recorded}"
    );
    let runs = cluster.runs_of(lost).await;
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(
        (runs[1].0, runs[1].1.as_str(), runs[1].2.as_deref()),
        (2, "abandoned", Some("dead"))
    );
    assert!(
        runs[1]
            .3
            .as_deref()
            .is_some_and(|e| e.contains("lost from redis")),
        "{runs:?}"
    );
    assert!(findings_of(&cluster, lost).await.contains(&(
        2,
        "job.lost".to_owned(),
        "critical".to_owned()
    )));
    let again = reconcile_json(&cluster, &["--action", "record"]);
    assert_eq!(
        lost_ids(&again),
        vec![],
        "a recorded loss is final: {again}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workers_periodic_pass_requeues_a_lost_job_without_an_operator() {
    let cluster = Cluster::start(&ClusterOptions {
        n_workers: 2,
        config: config(
            "reconcile_action = \"requeue\"\nreconcile_interval = \"500ms\"\nreconcile_grace = \"1s\"",
        ),
        ..ClusterOptions::default()
    });
    let lost = a_failed_job_redis_then_loses(&cluster).await;

    let runs = cluster
        .wait_for_run(lost, Duration::from_secs(20), |(_, status, _, _)| {
            status == "succeeded"
        })
        .await;

    let attempts: Vec<(i32, &str)> = runs.iter().map(|(a, s, _, _)| (*a, s.as_str())).collect();
    assert_eq!(
        attempts,
        vec![(1, "failed"), (2, "succeeded")],
        "restored once, run once"
    );
    // The daemons log through a non-blocking writer: the restoring pass's line can reach the
    // file after the job's run reached the ledger.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while cluster.count_worker_logs("job lost from redis") == 0
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        cluster.count_worker_logs("job lost from redis"),
        1,
        "two workers reconcile, but the job is restored once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confirmed_ticks_job_that_redis_lost_before_it_ever_ran_is_requeued_and_runs_linked_to_its_tick()
 {
    // Arrange: the ledger says a tick of "nightly" was enqueued as job `lost` a minute ago, but
    // Redis never heard of it (lost in a failover right after the scheduler's enqueue) and no
    // attempt ever started.
    let cluster = Cluster::start(&ClusterOptions {
        n_workers: 1,
        config: config(r#"reconcile_action = "off""#),
        ..ClusterOptions::default()
    });
    let lost = Uuid::now_v7();
    let mut ledger = cluster.ledger().await;
    sqlx::query(
        "INSERT INTO schedules (name, cron, timezone, kind, args, queue, catch_up, \
         catch_up_window_ms, catch_up_max, overlap, config_hash) \
         VALUES ('nightly', '0 0 2 * * *', 'UTC', 'system.ping', '{\"sleep_ms\": 1}', 'reports', \
         'latest', 0, 1, 'allow', 'test')",
    )
    .execute(&mut ledger)
    .await
    .expect("a schedule");
    let fire_at: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT date_trunc('second', now() - interval '1 minute')")
            .fetch_one(&mut ledger)
            .await
            .expect("a fire time");
    sqlx::query(
        "INSERT INTO schedule_ticks (schedule, fire_at, decision, job_id, claimed_by, claimed_at, \
         enqueued_at) VALUES ('nightly', $1, 'enqueued', $2, 'scheduler-test', $1, \
         $1 + interval '1 second')",
    )
    .bind(fire_at)
    .bind(lost)
    .execute(&mut ledger)
    .await
    .expect("a confirmed tick");

    // Act
    let report = reconcile_json(&cluster, &[]);

    // Assert: requeued under the tick's job id, then run once by the worker, linked to the tick.
    assert_eq!(
        lost_ids(&report),
        vec![(lost.to_string(), "requeued".to_owned())],
        "{report}"
    );
    let runs = cluster
        .wait_for_run(lost, Duration::from_secs(20), |(_, status, _, _)| {
            status == "succeeded"
        })
        .await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].0, 1, "the first attempt: the job never ran before");
    let (schedule, tick_at): (Option<String>, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as("SELECT schedule, tick_at FROM job_runs WHERE job_id = $1")
            .bind(lost)
            .fetch_one(&mut ledger)
            .await
            .expect("the run");
    assert_eq!(
        (schedule.as_deref(), tick_at),
        (Some("nightly"), Some(fire_at))
    );
    let again = reconcile_json(&cluster, &[]);
    assert_eq!(lost_ids(&again), vec![], "it ran: nothing to do: {again}");
}
