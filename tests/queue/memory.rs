//! Finished jobs expire: after 100,000 jobs and their retention, Redis's memory is back where
//! it started, with only the queue's handful of bookkeeping keys left.

use std::sync::Arc;
use std::time::{Duration, Instant};

use upkeep_shared::queue::{NoLedger, Queue, QueueOptions, RedisTarget};
use upkeep_tests::{PrivateRedis, unique_prefix};

use crate::support::{
    Calls, TestWorker, consumer, counting, eventually, exclusive, info_field, jobs, queue_on, raw,
    wait_for_succeeded,
};

/// How much more memory than at the start is still "back near the start".
const SLACK_BYTES: i64 = 2 * 1024 * 1024;

async fn used_memory(queue: &Queue) -> i64 {
    info_field(queue, "memory", "used_memory")
        .await
        .parse()
        .expect("used_memory is a number")
}

async fn dbsize(queue: &Queue) -> u64 {
    raw(queue, &redis::cmd("DBSIZE")).await
}

/// Visits every key of the queue, which deletes the expired ones on the way (lazy expiry), and
/// returns the keys that are still alive.
async fn scan_queue_keys(queue: &Queue) -> Vec<String> {
    let mut cursor = 0u64;
    let mut alive = Vec::new();
    loop {
        let (next, keys): (u64, Vec<String>) = raw(
            queue,
            redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(queue.keys().pattern())
                .arg("COUNT")
                .arg(5_000),
        )
        .await;
        alive.extend(keys);
        if next == 0 {
            return alive;
        }
        cursor = next;
    }
}

/// Waits until everything but the bookkeeping keys has expired; returns those keys.
async fn wait_for_expiry(queue: &Queue) -> Vec<String> {
    eventually(
        "finished jobs to expire",
        Duration::from_secs(30),
        || async {
            let alive = scan_queue_keys(queue).await;
            (alive.len() <= 8).then_some(alive)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_100_000_jobs_and_their_retention_redis_memory_is_back_near_its_start() {
    let _machine = exclusive().await;
    // Arrange: a private server, a queue that keeps finished jobs for 1 s, and a worker that
    // has already run a few jobs (scripts loaded, connections open, counters created).
    let redis = PrivateRedis::start().expect("a private redis-server");
    let target = RedisTarget::standalone(redis.url());
    let options = QueueOptions {
        retention: Duration::from_secs(1),
        ..QueueOptions::default()
    };
    let queue = queue_on(&target, &unique_prefix(), "q", options);
    let calls = Arc::new(Calls::default());
    let mut consumer_options = consumer("memory", 64);
    consumer_options.batch_size = 256;
    let worker = TestWorker::start(
        queue.clone(),
        &target,
        consumer_options,
        Arc::new(NoLedger),
        counting(calls.clone()),
    );
    queue.enqueue(&jobs(100, 1)).await.expect("enqueue");
    wait_for_succeeded(&queue, 100, Duration::from_secs(10)).await;
    wait_for_expiry(&queue).await;
    let before = used_memory(&queue).await;
    let keys_before = dbsize(&queue).await;

    // Act
    let started = Instant::now();
    for batch in jobs(100_000, 1).chunks(500) {
        queue.enqueue(batch).await.expect("enqueue");
    }
    let peak_backlog = used_memory(&queue).await;
    wait_for_succeeded(&queue, 100_100, Duration::from_secs(90)).await;
    let processed_in = started.elapsed();
    let peak_finished = used_memory(&queue).await;
    let keys_finished = dbsize(&queue).await;
    let left = wait_for_expiry(&queue).await;
    // The keyspace tables shrink in Redis's cron after the keys are gone: give it time.
    let settle_deadline = Instant::now() + Duration::from_secs(20);
    let mut after = used_memory(&queue).await;
    while after - before > SLACK_BYTES && Instant::now() < settle_deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        after = used_memory(&queue).await;
    }
    let worker_was_alive = !worker.has_ended();
    worker.stop().await;

    // Assert
    println!(
        "memory: used_memory before {before} B ({keys_before} keys), after enqueue {peak_backlog} B, \
         after processing {peak_finished} B ({keys_finished} keys), after retention {after} B \
         ({:+} B); 100,000 jobs in {processed_in:.2?}; keys left: {left:?}",
        after - before
    );
    assert!(worker_was_alive);
    assert!(
        after - before <= SLACK_BYTES,
        "used_memory grew by {} B, more than {SLACK_BYTES} B",
        after - before
    );
    assert_eq!(calls.total(), 100_100);
    let mut suffixes: Vec<&str> = left
        .iter()
        .map(|key| key.rsplit(':').next().unwrap_or(key))
        .collect();
    suffixes.sort_unstable();
    suffixes.retain(|suffix| *suffix != "wake");
    // The per-minute stats rollups (`tp:<unix minute>`, 2 h TTL): one per minute of activity.
    let n_rollups = left.iter().filter(|key| key.contains(":tp:")).count();
    assert!(
        (1..=5).contains(&n_rollups),
        "{n_rollups} per-minute rollups for a run of a few minutes"
    );
    suffixes.retain(|suffix| !suffix.bytes().all(|b| b.is_ascii_digit()));
    assert_eq!(
        suffixes,
        vec!["fence", "stats", "tokens", "workers"],
        "only bookkeeping keys remain (the wake list may too; the lease hash keeps its \
         encoding pin)"
    );
}
