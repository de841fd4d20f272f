//! Max attempts, backoff and dead letters, driven by real workers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use upkeep_shared::queue::{
    AttemptStatus, KindPolicy, NewJob, NextState, QueueOptions, Settlement, Verdict,
};
use upkeep_shared::{JobError, Outcome};

use crate::support::{
    Calls, KIND, TestLedger, TestWorker, catch_the_start_of_an_idle_wait, consumer, eventually,
    exclusive, handler, jobs, shared_queue, stats, total, wait_for_succeeded,
};

/// Retries after at most 20 ms, so the test spends its time on the queue, not on backoff.
fn fast_backoff() -> KindPolicy {
    KindPolicy {
        backoff_base: Duration::from_millis(10),
        backoff_max: Duration::from_millis(20),
        ..KindPolicy::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_job_is_tried_max_attempts_times_then_dead_lettered_and_a_requeue_gives_it_a_fresh_budget()
 {
    // Arrange: a handler that fails as often as `failures_left` says (for now: always).
    let (queue, target) = shared_queue(QueueOptions::default());
    let calls = Arc::new(Calls::default());
    let failures_left = Arc::new(AtomicU32::new(u32::MAX));
    let flaky = {
        let (calls, failures_left) = (calls.clone(), failures_left.clone());
        handler(move |job| {
            let call = calls.record(&job);
            let fail = failures_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            async move {
                if fail {
                    Err(JobError::retryable(format!("always fails (call {call})")))
                } else {
                    Ok(Outcome::default())
                }
            }
        })
    };
    let ledger = Arc::new(TestLedger::default());
    let mut options = consumer("retries", 4);
    options.default_policy = fast_backoff();
    let worker = TestWorker::start(queue.clone(), &target, options, ledger.clone(), flaky);
    let job = NewJob::new(KIND, serde_json::json!({}), 3);
    let id = job.id.to_string();

    // Act
    queue
        .enqueue(std::slice::from_ref(&job))
        .await
        .expect("enqueue");
    eventually("the job to be dead", Duration::from_secs(20), || async {
        (stats(&queue).await.dead == 1).then_some(())
    })
    .await;

    // Assert: three attempts, counted by the handler and by the ledger.
    assert_eq!(calls.of(job.id), 3);
    let attempts = eventually(
        "the third attempt in the ledger",
        Duration::from_secs(5),
        || {
            let attempts = ledger.attempts_of(job.id);
            async move { (attempts.len() >= 3).then_some(attempts) }
        },
    )
    .await;
    let summary: Vec<(u32, AttemptStatus, Option<NextState>)> = attempts
        .iter()
        .map(|a| (a.attempt, a.status, a.next_state))
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, AttemptStatus::Failed, Some(NextState::Retrying)),
            (2, AttemptStatus::Failed, Some(NextState::Retrying)),
            (3, AttemptStatus::Failed, Some(NextState::Dead)),
        ]
    );
    let gaps: Vec<i64> = attempts
        .windows(2)
        .map(|pair| pair[1].started_at_ms - pair[0].finished_at_ms)
        .collect();
    println!("retry gaps with a 10-20 ms backoff: {gaps:?} ms");
    let dead = queue.dead_letters(10).await.expect("dead letters");
    let [letter] = dead.as_slice() else {
        panic!("expected one dead letter, got {dead:?}");
    };
    assert_eq!(letter.id, id);
    assert_eq!(letter.fields["state"], "discarded");
    assert_eq!(letter.fields["err"], "always fails (call 3)");
    assert_eq!(letter.fields["attempt"], "3");
    let record = queue
        .job(&id)
        .await
        .expect("job")
        .expect("dead jobs are kept");
    assert_eq!(&record, letter);
    let stats_dead = stats(&queue).await;
    assert_eq!((stats_dead.dead, stats_dead.retrying), (1, 0));
    assert_eq!(total(&stats_dead, "failed"), 3);
    assert_eq!(total(&stats_dead, "retried"), 2);
    assert_eq!(total(&stats_dead, "dead"), 1);

    // Act: an operator requeues the dead letter; it fails twice more, then succeeds, which
    // it can only do with a fresh budget of 3 attempts.
    failures_left.store(2, Ordering::SeqCst);
    let requeued = queue.requeue_dead(&id).await.expect("requeue");
    wait_for_succeeded(&queue, 1, Duration::from_secs(20)).await;
    worker.stop().await;

    // Assert
    assert!(requeued);
    assert_eq!(
        calls.of(job.id),
        6,
        "3 attempts, then 3 more after the requeue"
    );
    let after: Vec<(AttemptStatus, Option<NextState>)> = ledger.attempts_of(job.id)[3..]
        .iter()
        .map(|a| (a.status, a.next_state))
        .collect();
    assert_eq!(
        after,
        vec![
            (AttemptStatus::Failed, Some(NextState::Retrying)),
            (AttemptStatus::Failed, Some(NextState::Retrying)),
            (AttemptStatus::Succeeded, Some(NextState::Done)),
        ],
        "the attempt budget was reset"
    );
    let record = queue
        .job(&id)
        .await
        .expect("job")
        .expect("completed jobs are kept");
    assert_eq!(record.fields["state"], "completed");
    assert_eq!(record.fields["prev_err"], "always fails (call 3)");
    assert!(
        queue
            .dead_letters(10)
            .await
            .expect("dead letters")
            .is_empty()
    );
    let stats = stats(&queue).await;
    assert_eq!((stats.dead, total(&stats, "dead")), (0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_failure_is_dead_lettered_on_its_first_attempt() {
    // Arrange
    let (queue, target) = shared_queue(QueueOptions::default());
    let calls = Arc::new(Calls::default());
    let refusing = {
        let calls = calls.clone();
        handler(move |job| {
            calls.record(&job);
            async {
                Err(JobError::Permanent(
                    "the backup target does not exist".into(),
                ))
            }
        })
    };
    let ledger = Arc::new(TestLedger::default());
    let worker = TestWorker::start(
        queue.clone(),
        &target,
        consumer("permanent", 2),
        ledger.clone(),
        refusing,
    );
    let job = NewJob::new(KIND, serde_json::json!({}), 5);

    // Act
    queue
        .enqueue(std::slice::from_ref(&job))
        .await
        .expect("enqueue");
    eventually("the job to be dead", Duration::from_secs(10), || async {
        (stats(&queue).await.dead == 1).then_some(())
    })
    .await;
    worker.stop().await;

    // Assert
    assert_eq!(calls.of(job.id), 1, "no retry of a permanent failure");
    let record = queue
        .job(&job.id.to_string())
        .await
        .expect("job")
        .expect("dead jobs are kept");
    assert_eq!(record.fields["state"], "discarded");
    assert_eq!(record.fields["err"], "the backup target does not exist");
    let attempts = ledger.attempts_of(job.id);
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].next_state, Some(NextState::Dead));
    let stats = stats(&queue).await;
    assert_eq!((total(&stats, "retried"), total(&stats, "dead")), (0, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_panics_dead_letters_its_job_and_the_worker_carries_on() {
    // Arrange
    let (queue, target) = shared_queue(QueueOptions::default());
    let poison = NewJob::new(KIND, serde_json::json!({ "poison": true }), 3);
    let calls = Arc::new(Calls::default());
    let panicky = {
        let calls = calls.clone();
        handler(move |job| {
            calls.record(&job);
            let poisoned = job.args["poison"] == true;
            async move {
                assert!(!poisoned, "poison pill");
                Ok(Outcome::default())
            }
        })
    };
    let worker = TestWorker::start(
        queue.clone(),
        &target,
        consumer("panics", 2),
        Arc::new(TestLedger::default()),
        panicky,
    );

    // Act
    queue
        .enqueue(std::slice::from_ref(&poison))
        .await
        .expect("enqueue");
    queue.enqueue(&jobs(5, 1)).await.expect("enqueue");
    wait_for_succeeded(&queue, 5, Duration::from_secs(10)).await;
    eventually(
        "the poison job to be dead",
        Duration::from_secs(5),
        || async { (stats(&queue).await.dead == 1).then_some(()) },
    )
    .await;
    worker.stop().await;

    // Assert
    assert_eq!(calls.of(poison.id), 1, "a panic is not retried");
    let record = queue
        .job(&poison.id.to_string())
        .await
        .expect("job")
        .expect("dead jobs are kept");
    assert_eq!(record.fields["state"], "discarded");
    assert!(
        record.fields["err"].contains("handler panicked: poison pill"),
        "{}",
        record.fields["err"]
    );
}

#[tokio::test]
async fn attempts_after_a_requeue_are_numbered_after_the_earlier_ones_so_ledger_rows_stay_unique() {
    // Arrange: a job that died on its only attempt (ledger row: attempt 1, failed).
    let (queue, _) = shared_queue(QueueOptions::default());
    queue
        .enqueue(&[NewJob::new(KIND, serde_json::json!({}), 1)])
        .await
        .expect("enqueue");
    let first = queue.fetch("w", 1).await.expect("fetch").jobs.remove(0);
    queue
        .settle(&[Settlement {
            id: first.id.clone(),
            token: first.token,
            verdict: Verdict::Dead,
            error: "broken".to_owned(),
        }])
        .await
        .expect("settle");

    // Act: the operator requeues it and a worker leases it again.
    assert!(queue.requeue_dead(&first.id).await.expect("requeue"));
    let again = queue.fetch("w", 1).await.expect("fetch").jobs.remove(0);

    // Assert: job_runs is UNIQUE (job_id, attempt) and idempotent on it, so a second
    // "attempt 1" would be dropped as a duplicate of the first one.
    assert_eq!(again.id, first.id);
    assert!(
        again.attempt > first.attempt,
        "the requeued delivery is numbered attempt {} again, colliding with the dead \
         attempt's ledger row (job_id, attempt) = ({}, {})",
        again.attempt,
        first.id,
        first.attempt
    );
    assert!(
        again.attempt <= again.max_attempts,
        "and it is within its fresh budget"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_runs_within_150_ms_of_its_backoff_with_nothing_else_waking_the_worker() {
    let _machine = exclusive().await;
    // Arrange: an attempt leased outside the worker (so we decide when it fails), and an
    // idle worker caught just as it starts an idle wait.
    let (queue, target) = shared_queue(QueueOptions::default());
    let job = NewJob::new(KIND, serde_json::json!({}), 3);
    queue
        .enqueue(std::slice::from_ref(&job))
        .await
        .expect("enqueue");
    let leased = queue
        .fetch("elsewhere", 1)
        .await
        .expect("fetch")
        .jobs
        .remove(0);
    let (tx, mut started) = tokio::sync::mpsc::unbounded_channel();
    let report = handler(move |_job| {
        let _ = tx.send(crate::support::now_ms());
        async { Ok(Outcome::default()) }
    });
    let worker = TestWorker::start(
        queue.clone(),
        &target,
        consumer("retry-wake", 2),
        Arc::new(TestLedger::default()),
        report,
    );
    catch_the_start_of_an_idle_wait(&queue, &worker).await;

    // Act: the attempt fails and asks for a retry in 300 ms.
    let due_ms = crate::support::now_ms() + 300;
    queue
        .settle(&[Settlement {
            id: leased.id,
            token: leased.token,
            verdict: Verdict::Retry(Duration::from_millis(300)),
            error: "transient".to_owned(),
        }])
        .await
        .expect("settle");
    let started_ms = tokio::time::timeout(Duration::from_secs(3), started.recv())
        .await
        .expect("the retry starts within 3 s")
        .expect("the handler is alive");
    worker.stop().await;

    // Assert
    let lateness = started_ms - due_ms;
    println!("retry due in 300 ms started {lateness} ms after its due time");
    assert!(
        lateness < 150,
        "the retry started {lateness} ms after its due time: scheduling a retry does not \
         wake idle workers, so they sleep out their idle wait (1 s) first"
    );
}
