//! Malformed data in a queue (pushed by hand, or by a buggy or older producer) ends in the
//! dead letters with its reason; the worker keeps serving the good jobs around it.

use std::sync::Arc;
use std::time::Duration;

use upkeep_shared::JobId;
use upkeep_shared::queue::{AttemptStatus, NextState, Queue, QueueOptions};

use crate::support::{
    Calls, KIND, TestLedger, TestWorker, consumer, counting, eventually, jobs, now_ms, raw,
    shared_queue, total,
};

/// Writes a job hash field by field, as enqueue.lua does, with `args` taken verbatim, and
/// pushes its id to the ready list.
async fn push_raw_job(queue: &Queue, id: &str, args: &str) {
    let now = now_ms();
    let () = raw(
        queue,
        redis::cmd("HSET")
            .arg(queue.keys().job(id))
            .arg(&[
                ("kind", KIND),
                ("args", args),
                ("attempt", "0"),
                ("max", "3"),
            ])
            .arg(&[("enq", now), ("run_at", now)])
            .arg(&[("state", "available")]),
    )
    .await;
    let () = raw(queue, redis::cmd("LPUSH").arg(&queue.keys().ready).arg(id)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_entries_are_dead_lettered_with_their_reason_while_the_worker_serves_the_good_jobs()
 {
    // Arrange: good jobs around three kinds of garbage.
    let (queue, target) = shared_queue(QueueOptions::default());
    queue.enqueue(&jobs(5, 1)).await.expect("enqueue");
    let () = raw(
        &queue,
        redis::cmd("LPUSH")
            .arg(&queue.keys().ready)
            .arg("garbage-id"),
    )
    .await;
    let not_json = JobId::new();
    push_raw_job(&queue, &not_json.to_string(), "{this is not json").await;
    push_raw_job(&queue, "not-a-uuid", "{}").await;
    queue.enqueue(&jobs(5, 1)).await.expect("enqueue");
    let calls = Arc::new(Calls::default());
    let ledger = Arc::new(TestLedger::default());
    let worker = TestWorker::start(
        queue.clone(),
        &target,
        consumer("malformed", 4),
        ledger.clone(),
        counting(calls.clone()),
    );

    // Act
    let stats = eventually(
        "10 good jobs done and 3 bad ones dead",
        Duration::from_secs(10),
        || async {
            let stats = queue.stats().await.ok()?;
            (total(&stats, "succeeded") == 10 && stats.dead == 3).then_some(stats)
        },
    )
    .await;
    // More good work after the garbage is still served.
    queue.enqueue(&jobs(5, 1)).await.expect("enqueue");
    crate::support::wait_for_succeeded(&queue, 15, Duration::from_secs(10)).await;
    worker.stop().await;

    // Assert
    assert_eq!(calls.distinct(), 15, "every good job ran");
    assert_eq!(
        calls.of(not_json),
        0,
        "the handler never sees undecodable args"
    );
    assert_eq!((stats.pending, stats.running), (0, 0));
    let field = |record: Option<upkeep_shared::queue::JobRecord>, name: &str| {
        record.expect("dead letters are kept").fields[name].clone()
    };
    let missing = queue.job("garbage-id").await.expect("job");
    assert_eq!(field(missing.clone(), "state"), "discarded");
    assert_eq!(field(missing, "err"), "no job data for this id");
    let undecodable = queue.job(&not_json.to_string()).await.expect("job");
    assert_eq!(field(undecodable.clone(), "state"), "discarded");
    let reason = field(undecodable, "err");
    assert!(reason.contains("JSON"), "the reason names JSON: {reason}");
    let not_uuid = queue.job("not-a-uuid").await.expect("job");
    assert_eq!(field(not_uuid.clone(), "state"), "discarded");
    assert_eq!(field(not_uuid, "err"), "job id is not a uuid");
    let mut dead: Vec<String> = queue
        .dead_letters(10)
        .await
        .expect("dead letters")
        .into_iter()
        .map(|record| record.id)
        .collect();
    dead.sort();
    let mut expected = vec![
        "garbage-id".to_owned(),
        not_json.to_string(),
        "not-a-uuid".to_owned(),
    ];
    expected.sort();
    assert_eq!(dead, expected);
    let attempts = ledger.attempts_of(not_json);
    assert_eq!(
        attempts.len(),
        1,
        "the undecodable job's attempt is recorded"
    );
    assert_eq!(attempts[0].status, AttemptStatus::Failed);
    assert_eq!(attempts[0].next_state, Some(NextState::Dead));
}
