//! Idle workers wake up at once: for a newly enqueued job (the wake list) and for a delayed
//! job that falls due (the fetch reports when the next one is due), with no polling interval
//! in between.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use upkeep_shared::queue::{NewJob, NoLedger, Queue, QueueOptions, RedisTarget};
use upkeep_shared::{JobId, Outcome};
use upkeep_tests::{PrivateRedis, unique_prefix};

use crate::slowlog::SlowLog;
use crate::support::{
    KIND, TestWorker, catch_the_start_of_an_idle_wait, consumer, eventually, exclusive, handler,
    jobs, last_fetch_ms, now_ms, queue_on, shared_queue, wait_for_succeeded,
};

/// When the handler started a job: a monotonic instant and wall-clock unix ms.
type Started = (JobId, Instant, i64);

/// A worker whose handler reports every start on a channel.
fn reporting_worker(
    queue: &Queue,
    target: &upkeep_shared::queue::RedisTarget,
) -> (TestWorker, mpsc::UnboundedReceiver<Started>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let report = handler(move |job| {
        let _ = tx.send((job.id, Instant::now(), now_ms()));
        async { Ok(Outcome::default()) }
    });
    let worker = TestWorker::start(
        queue.clone(),
        target,
        consumer("idle", 4),
        Arc::new(NoLedger),
        report,
    );
    (worker, rx)
}

async fn next_start(rx: &mut mpsc::UnboundedReceiver<Started>) -> Started {
    tokio::time::timeout(Duration::from_secs(3), rx.recv())
        .await
        .expect("the handler starts the job within 3 s")
        .expect("the handler is alive")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_starts_a_newly_enqueued_job_within_50_ms() {
    let _machine = exclusive().await;
    // Arrange
    let (queue, target) = shared_queue(QueueOptions::default());
    let (worker, mut started) = reporting_worker(&queue, &target);
    eventually("the worker's first fetch", Duration::from_secs(5), || {
        last_fetch_ms(&queue, &worker)
    })
    .await;
    let mut pickups = Vec::new();
    // Idle periods that end at different points of the worker's 1 s wait cycle.
    for idle in [1_000, 1_350, 1_700] {
        tokio::time::sleep(Duration::from_millis(idle)).await;
        let job = NewJob::new(KIND, serde_json::json!({}), 1);

        // Act
        let enqueued = Instant::now();
        queue
            .enqueue(std::slice::from_ref(&job))
            .await
            .expect("enqueue");
        let (id, at, _) = next_start(&mut started).await;

        // Assert (below, for all samples)
        assert_eq!(id, job.id);
        pickups.push((idle, at - enqueued));
    }
    worker.stop().await;

    println!("idle pickup (idle ms -> enqueue to handler start): {pickups:.1?}");
    for (idle, pickup) in pickups {
        assert!(
            pickup < Duration::from_millis(50),
            "after {idle} ms idle the job started {pickup:?} after its enqueue"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delayed_job_starts_within_150_ms_of_its_due_time_with_nothing_else_waking_the_worker() {
    let _machine = exclusive().await;
    // Arrange: catch the worker just as it starts an idle wait (right after an empty fetch),
    // the least favourable moment to learn about a job due in 500 ms.
    let (queue, target) = shared_queue(QueueOptions::default());
    let (worker, mut started) = reporting_worker(&queue, &target);
    catch_the_start_of_an_idle_wait(&queue, &worker).await;
    let mut job = NewJob::new(KIND, serde_json::json!({}), 1);
    let due_ms = now_ms() + 500;
    job.run_at_ms = Some(due_ms);

    // Act
    queue
        .enqueue(std::slice::from_ref(&job))
        .await
        .expect("enqueue");
    let (id, _, started_ms) = next_start(&mut started).await;
    worker.stop().await;

    // Assert
    assert_eq!(id, job.id);
    let lateness = started_ms - due_ms;
    println!("delayed job due in 500 ms started {lateness} ms after its due time");
    assert!(lateness >= 0, "the job started {} ms early", -lateness);
    // Redis times out a blocked BLPOP on its cron tick (hz 10), up to 100 ms late; the rest
    // of the budget is the fetch and the hand-off to the handler.
    assert!(
        lateness < 150,
        "the job started {lateness} ms after its due time"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_job_enqueued_into_an_idle_worker_costs_it_one_fetch_not_a_second_that_finds_nothing()
 {
    // Arrange: an idle worker on a private redis-server (SLOWLOG then holds only this test's
    // calls), warmed up by one job so its scripts are loaded and it waits on the wake list;
    // its idle wait is long, so no timed-out wait fetches during the test.
    let redis = PrivateRedis::start().expect("a private redis-server");
    let target = RedisTarget::standalone(redis.url());
    let queue = queue_on(&target, &unique_prefix(), "q", QueueOptions::default());
    let mut options = consumer("lone", 4);
    options.idle_wait_max = Duration::from_secs(60);
    let worker = TestWorker::start(
        queue.clone(),
        &target,
        options,
        Arc::new(NoLedger),
        handler(|_| async { Ok(Outcome::default()) }),
    );
    queue.enqueue(&jobs(1, 1)).await.expect("enqueue");
    wait_for_succeeded(&queue, 1, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let slowlog = SlowLog::arm(&queue, Duration::ZERO).await;

    // Act
    queue.enqueue(&jobs(1, 1)).await.expect("enqueue");
    wait_for_succeeded(&queue, 2, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Assert: the fetch that leased the job said the ready list ran out, and the worker went
    // back to its wake list instead of fetching again.
    let calls = slowlog.entries().await;
    let fetches = calls
        .iter()
        .filter(|call| call.script == Some("fetch"))
        .count();
    assert_eq!(fetches, 1, "fetch calls for one job: {calls:#?}");
    worker.stop().await;
}
