//! Redis ends where the ledger says (issue 10, items 1-8): a committed verdict survives a lost
//! ack, a ledger that cannot be read runs nothing, a replayed attempt number loses no result,
//! max attempts bounds every path, and the scripts' bounds, idempotency keys and counters.

use std::sync::Arc;
use std::time::Duration;

use upkeep_shared::JobId;
use upkeep_shared::queue::{
    Attempt, AttemptStatus, Enqueued, JobState, NewJob, NextState, QueueOptions, Settled,
    Settlement, Verdict,
};

use upkeep_shared::queue::RedisTarget;
use upkeep_tests::{AppendFsync, PrivateRedis, RedisOptions, unique_prefix};

use crate::support::{
    Calls, KIND, TestLedger, TestWorker, consumer, counting, eventually, now_ms, queue_on, raw,
    shared_queue, stats, total, wait_for_succeeded,
};

fn one_second_lease() -> QueueOptions {
    QueueOptions {
        lease: Duration::from_secs(1),
        ..QueueOptions::default()
    }
}

/// A row as an earlier execution (another worker, another start) committed it.
fn committed(id: JobId, attempt: u32, status: AttemptStatus, next: NextState) -> Attempt {
    Attempt {
        job_id: id,
        attempt,
        kind: KIND.to_owned(),
        queue: "q".to_owned(),
        status,
        schedule: None,
        tick_ms: None,
        enqueued_at_ms: now_ms(),
        started_at_ms: now_ms() - 10,
        finished_at_ms: now_ms(),
        worker: "earlier-worker".to_owned(),
        args: serde_json::json!({}),
        outcome: None,
        error: (status == AttemptStatus::Failed).then(|| "it broke".to_owned()),
        next_state: Some(next),
    }
}

async fn state_of(queue: &upkeep_shared::queue::Queue, id: JobId) -> Option<String> {
    queue
        .job(&id.to_string())
        .await
        .expect("job")
        .and_then(|record| record.fields.get("state").cloned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_success_whose_ack_came_too_late_completes_the_job_instead_of_dead_lettering_it()
 {
    // Arrange: on its only attempt, a worker committed the success and then paused past its
    // lease before acking (the ack never comes).
    let (queue, target) = shared_queue(one_second_lease());
    let job = NewJob::new(KIND, serde_json::json!({}), 1);
    queue.enqueue(std::slice::from_ref(&job)).await.unwrap();
    let paused = queue.fetch("paused", 1).await.unwrap().jobs.remove(0);
    let ledger = Arc::new(TestLedger::default());
    ledger.insert(committed(
        job.id,
        1,
        AttemptStatus::Succeeded,
        NextState::Done,
    ));
    let calls = Arc::new(Calls::default());

    // Act: another worker takes the expired lease over.
    let worker = TestWorker::start(
        queue.clone(),
        &target,
        consumer("survivor", 2),
        ledger.clone(),
        counting(calls.clone()),
    );
    let state = eventually("the job to be settled", Duration::from_secs(10), || async {
        let state = state_of(&queue, job.id).await?;
        (state == "completed" || state == "discarded").then_some(state)
    })
    .await;
    let late_ack = queue
        .settle(&[Settlement {
            id: paused.id.clone(),
            token: paused.token,
            verdict: Verdict::Done,
            error: String::new(),
        }])
        .await
        .unwrap();
    worker.stop().await;

    // Assert
    assert_eq!(state, "completed", "the ledger says succeeded");
    assert_eq!(calls.total(), 0, "never run again");
    assert_eq!(late_ack, vec![(paused.id, Settled::Refused)]);
    let rows = ledger.rows_of(job.id);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].status, AttemptStatus::Succeeded);
    let stats = stats(&queue).await;
    assert_eq!((stats.dead, total(&stats, "succeeded")), (0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_dead_verdict_whose_ack_came_too_late_dead_letters_the_job_instead_of_running_it_again()
 {
    // Arrange: attempt 1 of 3 failed for good (a permanent error), committed, ack lost.
    let (queue, target) = shared_queue(one_second_lease());
    let job = NewJob::new(KIND, serde_json::json!({}), 3);
    queue.enqueue(std::slice::from_ref(&job)).await.unwrap();
    queue.fetch("paused", 1).await.unwrap();
    let ledger = Arc::new(TestLedger::default());
    ledger.insert(committed(job.id, 1, AttemptStatus::Failed, NextState::Dead));
    let calls = Arc::new(Calls::default());

    // Act
    let worker = TestWorker::start(
        queue.clone(),
        &target,
        consumer("survivor", 2),
        ledger.clone(),
        counting(calls.clone()),
    );
    let state = eventually("the job to be settled", Duration::from_secs(10), || async {
        let state = state_of(&queue, job.id).await?;
        (state == "completed" || state == "discarded").then_some(state)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    worker.stop().await;

    // Assert
    assert_eq!(state, "discarded");
    assert_eq!(calls.total(), 0, "a dead verdict is not run again");
    assert_eq!(ledger.rows_of(job.id).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_ledger_cannot_check_is_given_back_unstarted_and_runs_once_the_ledger_answers()
{
    // Arrange: a redelivery (attempt 1 failed and is recorded) while the ledger refuses reads.
    let (queue, target) = shared_queue(QueueOptions::default());
    let job = NewJob::new(KIND, serde_json::json!({}), 3);
    queue.enqueue(std::slice::from_ref(&job)).await.unwrap();
    let first = queue
        .fetch("earlier-worker", 1)
        .await
        .unwrap()
        .jobs
        .remove(0);
    queue
        .settle(&[Settlement {
            id: first.id,
            token: first.token,
            verdict: Verdict::Retry(Duration::ZERO),
            error: "it broke".to_owned(),
        }])
        .await
        .unwrap();
    let ledger = Arc::new(TestLedger::default());
    ledger.insert(committed(
        job.id,
        1,
        AttemptStatus::Failed,
        NextState::Retrying,
    ));
    ledger.fail_reads(true);
    let calls = Arc::new(Calls::default());

    // Act
    let worker = TestWorker::start(
        queue.clone(),
        &target,
        consumer("checker", 2),
        ledger.clone(),
        counting(calls.clone()),
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let calls_while_failing = calls.total();
    ledger.fail_reads(false);
    wait_for_succeeded(&queue, 1, Duration::from_secs(10)).await;
    worker.stop().await;

    // Assert: nothing ran blind, and the give-backs cost no attempt.
    assert_eq!(calls_while_failing, 0, "a job ran without the ledger check");
    assert_eq!(calls.of(job.id), 1);
    let rows = ledger.rows_of(job.id);
    let summary: Vec<(u32, AttemptStatus)> = rows.iter().map(|r| (r.attempt, r.status)).collect();
    assert_eq!(
        summary,
        vec![(1, AttemptStatus::Failed), (2, AttemptStatus::Succeeded)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_redis_lost_writes_a_first_delivery_of_a_succeeded_job_is_skipped_and_a_replayed_attempt_keeps_its_result()
 {
    // Arrange: Redis lost writes (a crash inside the fsync window), so two jobs come back as
    // first deliveries although the ledger has attempt 1 of each: one succeeded, one failed
    // with a retry. Losing writes takes a restart (or a failover), so the jobs are enqueued,
    // then the server restarts from its append-only file before any worker runs.
    let mut redis = PrivateRedis::start_with(
        RedisOptions::default()
            .appendonly(true)
            .appendfsync(AppendFsync::Always),
    )
    .expect("a private redis-server");
    let target = RedisTarget::standalone(redis.url());
    let queue = queue_on(&target, &unique_prefix(), "q", QueueOptions::default());
    let succeeded = NewJob::new(KIND, serde_json::json!({}), 3);
    let failed = NewJob::new(KIND, serde_json::json!({}), 3);
    let ledger = Arc::new(TestLedger::default());
    ledger.insert(committed(
        succeeded.id,
        1,
        AttemptStatus::Succeeded,
        NextState::Done,
    ));
    ledger.insert(committed(
        failed.id,
        1,
        AttemptStatus::Failed,
        NextState::Retrying,
    ));
    queue
        .enqueue(&[succeeded.clone(), failed.clone()])
        .await
        .unwrap();
    redis.restart().expect("restarting redis");
    let calls = Arc::new(Calls::default());

    // Act
    let worker = TestWorker::start(
        queue.clone(),
        &target,
        consumer("after-rollback", 2),
        ledger.clone(),
        counting(calls.clone()),
    );
    wait_for_succeeded(&queue, 2, Duration::from_secs(10)).await;
    worker.stop().await;

    // Assert: the succeeded job never ran again; the other's success is in the ledger.
    assert_eq!(calls.of(succeeded.id), 0, "a committed success ran again");
    assert_eq!(calls.of(failed.id), 1);
    let summary = |id| -> Vec<(u32, AttemptStatus)> {
        ledger
            .rows_of(id)
            .iter()
            .map(|r| (r.attempt, r.status))
            .collect()
    };
    assert_eq!(
        summary(succeeded.id),
        vec![(1, AttemptStatus::Succeeded), (2, AttemptStatus::Skipped)]
    );
    assert_eq!(
        summary(failed.id),
        vec![(1, AttemptStatus::Failed), (2, AttemptStatus::Succeeded)],
        "the replayed attempt's success was dropped"
    );
}

#[tokio::test]
async fn a_first_delivery_of_a_job_this_redis_incarnation_created_skips_the_ledger_read_and_one_from_before_a_restart_does_not()
 {
    // Arrange: a private server that keeps its data across a restart; one job enqueued before
    // the restart, one after it.
    let mut redis = PrivateRedis::start_with(
        RedisOptions::default()
            .appendonly(true)
            .appendfsync(AppendFsync::Always),
    )
    .expect("a private redis-server");
    let target = RedisTarget::standalone(redis.url());
    let queue = queue_on(&target, &unique_prefix(), "q", QueueOptions::default());
    let before = NewJob::new(KIND, serde_json::json!({}), 3);
    queue.enqueue(std::slice::from_ref(&before)).await.unwrap();
    redis.restart().expect("restarting redis");
    let after = NewJob::new(KIND, serde_json::json!({}), 3);
    eventually(
        "the restarted server takes an enqueue",
        Duration::from_secs(10),
        async || queue.enqueue(std::slice::from_ref(&after)).await.ok(),
    )
    .await;
    let ledger = Arc::new(TestLedger::default());
    let calls = Arc::new(Calls::default());

    // Act
    let worker = TestWorker::start(
        queue.clone(),
        &target,
        consumer("incarnation", 2),
        ledger.clone(),
        counting(calls.clone()),
    );
    wait_for_succeeded(&queue, 2, Duration::from_secs(10)).await;
    worker.stop().await;

    // Assert: both ran once; only the job from before the restart was checked first.
    assert_eq!((calls.of(before.id), calls.of(after.id)), (1, 1));
    assert_eq!(
        ledger.asked(),
        vec![before.id],
        "the ledger is read before a first delivery only for jobs an earlier incarnation created"
    );
}

#[tokio::test]
async fn a_started_attempt_released_on_the_last_attempt_is_a_dead_letter_and_fetch_never_leases_past_the_limit()
 {
    // Arrange: two jobs of one attempt each.
    let (queue, _) = shared_queue(QueueOptions::default());
    let released = NewJob::new(KIND, serde_json::json!({}), 1);
    let over = NewJob::new(KIND, serde_json::json!({}), 1);
    queue
        .enqueue(std::slice::from_ref(&released))
        .await
        .unwrap();
    let leased = queue.fetch("stopping", 1).await.unwrap().jobs.remove(0);

    // Act: the worker stops after its grace period with the attempt still running.
    let n_released = queue
        .release("stopping", true, &[(leased.id.clone(), leased.token, true)])
        .await
        .unwrap();
    // ...and a job whose attempt count already reached its limit sits in the ready list (as an
    // older release left it).
    queue.enqueue(std::slice::from_ref(&over)).await.unwrap();
    let _: () = raw(
        &queue,
        redis::cmd("HSET")
            .arg(&queue.keys().attempts)
            .arg(over.id.to_string())
            .arg(1),
    )
    .await;
    let fetched = queue.fetch("next", 5).await.unwrap();

    // Assert
    assert_eq!(n_released, 1);
    assert!(
        fetched.jobs.is_empty(),
        "leased past the limit: {:?}",
        fetched.jobs
    );
    assert_eq!(
        state_of(&queue, released.id).await.as_deref(),
        Some("discarded")
    );
    assert_eq!(
        state_of(&queue, over.id).await.as_deref(),
        Some("discarded")
    );
    let stats = stats(&queue).await;
    assert_eq!((stats.dead, stats.pending, stats.running), (2, 0, 0));
}

#[tokio::test]
async fn an_attempt_given_back_unstarted_does_not_count_and_a_late_reply_about_it_changes_nothing()
{
    // Arrange
    let (queue, _) = shared_queue(QueueOptions::default());
    let job = NewJob::new(KIND, serde_json::json!({}), 1);
    queue.enqueue(std::slice::from_ref(&job)).await.unwrap();
    let first = queue.fetch("fenced", 1).await.unwrap().jobs.remove(0);

    // Act: the worker could not confirm the lease before starting, so it gives it back.
    let unstarted = queue
        .settle(&[Settlement {
            id: first.id.clone(),
            token: first.token.clone(),
            verdict: Verdict::Unstarted,
            error: String::new(),
        }])
        .await
        .unwrap();
    let again = queue.fetch("next", 1).await.unwrap().jobs.remove(0);
    let late = queue
        .settle(&[Settlement {
            id: first.id.clone(),
            token: first.token,
            verdict: Verdict::Unstarted,
            error: String::new(),
        }])
        .await
        .unwrap();

    // Assert: the only attempt is still there to run, and the stale reply is refused.
    assert_eq!(unstarted, vec![(first.id.clone(), Settled::Available)]);
    assert_eq!(again.attempt, 1, "the unstarted attempt did not count");
    assert_eq!(late, vec![(first.id, Settled::Refused)]);
    assert_eq!(stats(&queue).await.running, 1);
}

#[tokio::test]
async fn one_fetch_trims_at_most_the_maintenance_limit_of_expired_dead_letters() {
    // Arrange: 500 dead letters past their retention.
    let options = QueueOptions {
        maintenance_limit: 200,
        ..QueueOptions::default()
    };
    let (queue, _) = shared_queue(options);
    let mut zadd = redis::cmd("ZADD");
    zadd.arg(&queue.keys().dead);
    for i in 0..500 {
        zadd.arg(1_000 + i).arg(format!("old-{i}"));
    }
    let _: i64 = raw(&queue, &zadd).await;

    // Act
    queue.fetch("w", 1).await.unwrap();

    // Assert
    assert_eq!(
        stats(&queue).await.dead,
        300,
        "one fetch trimmed more than its limit"
    );
}

#[tokio::test]
async fn an_idempotency_key_outlives_its_ttl_while_its_delayed_job_waits_and_a_duplicate_says_where_the_job_is()
 {
    // Arrange: keys remembered for 500 ms, a job delayed by a day.
    let options = QueueOptions {
        idempotency_ttl: Duration::from_millis(500),
        ..QueueOptions::default()
    };
    let (queue, _) = shared_queue(options);
    let keyed = |key: &str| {
        let mut job = NewJob::new(KIND, serde_json::json!({}), 1);
        job.idempotency_key = Some(key.to_owned());
        job.run_at_ms = Some(now_ms() + 24 * 3600 * 1000);
        job
    };
    let first = keyed("tick-late");
    queue.enqueue(std::slice::from_ref(&first)).await.unwrap();

    // Act: the same key again, well past the TTL.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let again = queue.enqueue(&[keyed("tick-late")]).await.unwrap();

    // Assert
    assert_eq!(
        again,
        vec![Enqueued::Duplicate(first.id, JobState::Scheduled)]
    );
    assert_eq!(total(&stats(&queue).await, "enqueued"), 1);
}

#[tokio::test]
async fn counters_follow_a_job_through_retry_reclaim_dead_requeue_and_success() {
    // Arrange: one job with two attempts, on a 1 s lease.
    let (queue, _) = shared_queue(one_second_lease());
    let job = NewJob::new(KIND, serde_json::json!({}), 2);
    let id = job.id.to_string();
    queue.enqueue(&[job]).await.unwrap();
    let settle = |token: String, verdict: Verdict| Settlement {
        id: id.clone(),
        token,
        verdict,
        error: "it broke".to_owned(),
    };

    // Act: attempt 1 fails and is retried...
    let first = queue.fetch("w1", 1).await.unwrap().jobs.remove(0);
    queue
        .settle(&[settle(first.token, Verdict::Retry(Duration::ZERO))])
        .await
        .unwrap();
    // ...attempt 2's worker vanishes, and another takes the lease over and finds no result...
    let second = queue.fetch("w1", 1).await.unwrap().jobs.remove(0);
    assert_eq!(second.attempt, 2);
    let reclaim = eventually("the lease to expire", Duration::from_secs(5), || async {
        queue
            .fetch("w2", 1)
            .await
            .unwrap()
            .reclaimed
            .first()
            .cloned()
    })
    .await;
    let buried = queue
        .settle(&[settle(reclaim.token, Verdict::Release)])
        .await
        .unwrap();
    let dead = stats(&queue).await;
    // ...an operator requeues it, long after it was first enqueued...
    assert!(queue.requeue_dead(&id).await.unwrap());
    let requeued = stats(&queue).await;
    // ...and it succeeds.
    let third = queue.fetch("w2", 1).await.unwrap().jobs.remove(0);
    queue
        .settle(&[settle(third.token, Verdict::Done)])
        .await
        .unwrap();
    let end = stats(&queue).await;

    // Assert
    assert_eq!(buried, vec![(id.clone(), Settled::Discarded)]);
    let counters = |stats: &upkeep_shared::queue::QueueStats| {
        [
            "enqueued",
            "requeued",
            "succeeded",
            "failed",
            "retried",
            "dead",
            "reclaimed",
        ]
        .map(|name| total(stats, name))
    };
    assert_eq!(counters(&dead), [1, 0, 0, 2, 1, 1, 1]);
    assert_eq!(counters(&end), [1, 1, 1, 2, 1, 1, 1]);
    let age = requeued
        .oldest_pending_age_seconds
        .expect("the requeued job is pending");
    assert!(
        age < 0.5,
        "the requeued job has waited {age} s, counted from its first enqueue"
    );
    assert_eq!(third.attempt, 3);
}

#[tokio::test]
async fn an_unstarted_attempt_given_back_at_shutdown_or_after_a_retry_leaves_the_count_where_it_was()
 {
    // Arrange: two jobs with 3 attempts; the second fails once, so its next lease is attempt 2.
    let (queue, _) = shared_queue(QueueOptions::default());
    let first = NewJob::new(KIND, serde_json::json!({ "n": 1 }), 3);
    let second = NewJob::new(KIND, serde_json::json!({ "n": 2 }), 3);
    queue
        .enqueue(&[first.clone(), second.clone()])
        .await
        .unwrap();
    let leased = queue.fetch("w", 2).await.unwrap().jobs;
    let lease_of = |id: JobId| {
        leased
            .iter()
            .find(|job| job.id == id.to_string())
            .expect("leased")
            .clone()
    };
    let (a, b) = (lease_of(first.id), lease_of(second.id));
    queue
        .settle(&[Settlement {
            id: b.id.clone(),
            token: b.token.clone(),
            verdict: Verdict::Retry(Duration::ZERO),
            error: "once".to_owned(),
        }])
        .await
        .unwrap();
    let b2 = queue.fetch("w", 1).await.unwrap().jobs.remove(0);
    assert_eq!((b2.id.as_str(), b2.attempt), (b.id.as_str(), 2));

    // Act: the first attempt is given back unstarted at shutdown (release.lua), the second
    // job's attempt 2 by a settlement (ack.lua).
    let released = queue
        .release("w", false, &[(a.id.clone(), a.token.clone(), false)])
        .await
        .unwrap();
    let settled = queue
        .settle(&[Settlement {
            id: b2.id.clone(),
            token: b2.token.clone(),
            verdict: Verdict::Unstarted,
            error: String::new(),
        }])
        .await
        .unwrap();
    let again = queue.fetch("w", 2).await.unwrap().jobs;

    // Assert: neither given-back attempt counted.
    assert_eq!(released, 1);
    assert_eq!(settled, vec![(b2.id.clone(), Settled::Available)]);
    let mut attempts: Vec<(String, u32)> =
        again.iter().map(|j| (j.id.clone(), j.attempt)).collect();
    attempts.sort();
    let mut expected = vec![(a.id, 1), (b2.id, 2)];
    expected.sort();
    assert_eq!(attempts, expected);
}
