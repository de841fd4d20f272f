//! Poison jobs pushed into the queue as raw bytes, past the producer's validation: a payload
//! that is not JSON, a handler that panics, a handler that hangs past its timeout. Each ends in
//! the ledger with a clear reason (dead, or retried then dead for the timeout), and the worker
//! process keeps serving the good jobs.

use std::time::Duration;

use uuid::Uuid;

use crate::harness::{Cluster, ClusterOptions};

const CONFIG: &str = r#"
[queues.reports]
concurrency = 2
lease = "4s"
max_attempts = 2
backoff_base = "100ms"
backoff_max = "200ms"
timeout = "1s"
"#;

/// Writes a job hash field by field, as enqueue.lua does, with `args` verbatim, and pushes its id
/// to the ready list.
fn push_raw(cluster: &Cluster, args: &str) -> Uuid {
    let id = Uuid::now_v7();
    let keys = cluster.keys();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis()
        .to_string();
    let () = redis::pipe()
        .cmd("HSET")
        .arg(keys.job(&id.to_string()))
        .arg(&[
            ("kind", "system.ping"),
            ("args", args),
            ("attempt", "0"),
            ("max", "2"),
            ("enq", now.as_str()),
            ("run_at", now.as_str()),
            ("state", "available"),
        ])
        .ignore()
        .cmd("LPUSH")
        .arg(&keys.ready)
        .arg(id.to_string())
        .ignore()
        .cmd("LPUSH")
        .arg(&keys.wake)
        .arg(1)
        .ignore()
        .query(&mut cluster.redis_connection())
        .expect("pushing a raw job");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_payload_a_panicking_and_a_hanging_handler_end_with_their_reason_while_the_worker_serves_on()
 {
    // Arrange
    let mut cluster = Cluster::start(&ClusterOptions {
        n_workers: 1,
        config: CONFIG.to_owned(),
        ..ClusterOptions::default()
    });

    // Act: raw bytes, then good jobs behind them.
    let not_json = push_raw(&cluster, "{this is not json");
    let panics = push_raw(&cluster, r#"{"panic":true}"#);
    let hangs = push_raw(&cluster, r#"{"sleep_ms":600000}"#);
    let good = cluster.enqueue(r#"{"sleep_ms":10}"#, 20);

    // Assert: each poison job has its reason in the ledger.
    let runs = cluster
        .wait_for_run(not_json, Duration::from_secs(20), |(_, s, _, _)| {
            s == "failed"
        })
        .await;
    assert_eq!(
        runs.len(),
        1,
        "a payload that is not JSON is not retried: {runs:?}"
    );
    let (attempt, _, next, error) = &runs[0];
    assert_eq!((*attempt, next.as_deref()), (1, Some("dead")));
    assert!(
        error
            .as_deref()
            .is_some_and(|e| e.contains("payload is not valid JSON")),
        "{runs:?}"
    );

    let runs = cluster
        .wait_for_run(panics, Duration::from_secs(20), |(_, s, _, _)| {
            s == "failed"
        })
        .await;
    assert_eq!(runs.len(), 1, "a panic is not retried: {runs:?}");
    let (attempt, _, next, error) = &runs[0];
    assert_eq!((*attempt, next.as_deref()), (1, Some("dead")));
    assert!(
        error
            .as_deref()
            .is_some_and(|e| e.contains("handler panicked: system.ping asked to panic")),
        "{runs:?}"
    );

    let runs = cluster
        .wait_for_run(hangs, Duration::from_secs(30), |(_, _, next, _)| {
            next.as_deref() == Some("dead")
        })
        .await;
    let summary: Vec<(i32, &str, Option<&str>)> = runs
        .iter()
        .map(|(a, s, n, _)| (*a, s.as_str(), n.as_deref()))
        .collect();
    assert_eq!(
        summary,
        vec![(1, "failed", Some("retrying")), (2, "failed", Some("dead"))],
        "a timeout is retried, then dead after max_attempts"
    );
    assert!(
        runs.iter().all(|(_, _, _, e)| e
            .as_deref()
            .is_some_and(|e| e.contains("attempt timed out after 1.000s"))),
        "{runs:?}"
    );

    for id in good {
        cluster
            .wait_for_run(id, Duration::from_secs(20), |(_, s, _, _)| s == "succeeded")
            .await;
    }
    let worker = cluster.workers[0]
        .as_mut()
        .expect("the worker slot is filled");
    assert!(
        worker.is_running(),
        "the worker process survived the poison jobs"
    );
    let dead: Vec<String> = redis::cmd("ZRANGE")
        .arg(&cluster.keys().dead)
        .arg(0)
        .arg(-1)
        .query(&mut cluster.redis_connection())
        .expect("ZRANGE dead");
    for id in [not_json, panics, hangs] {
        assert!(
            dead.contains(&id.to_string()),
            "{id} is a dead letter: {dead:?}"
        );
    }
}
