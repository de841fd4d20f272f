//! Idempotency keys: a key stands for the first job enqueued with it.

use upkeep_shared::queue::{Enqueued, JobState, NewJob, QueueOptions, Settlement, Verdict};

use crate::support::{KIND, shared_queue, stats, total};

fn keyed(key: &str) -> NewJob {
    let mut job = NewJob::new(KIND, serde_json::json!({}), 1);
    job.idempotency_key = Some(key.to_owned());
    job
}

#[tokio::test]
async fn a_second_enqueue_with_the_same_idempotency_key_returns_the_first_job_and_adds_nothing() {
    // Arrange
    let (queue, _) = shared_queue(QueueOptions::default());
    let first = keyed("tick-2024-01-01T02:00");
    let second = keyed("tick-2024-01-01T02:00");

    // Act
    let first_result = queue.enqueue(std::slice::from_ref(&first)).await.unwrap();
    let second_result = queue.enqueue(std::slice::from_ref(&second)).await.unwrap();

    // Assert
    assert_eq!(first_result, vec![Enqueued::New(first.id)]);
    assert_eq!(
        second_result,
        vec![Enqueued::Duplicate(first.id, JobState::Available)]
    );
    let stats = stats(&queue).await;
    assert_eq!(stats.pending, 1);
    assert_eq!(total(&stats, "enqueued"), 1);
    assert!(queue.job(&second.id.to_string()).await.unwrap().is_none());
}

#[tokio::test]
async fn jobs_sharing_an_idempotency_key_within_one_batch_collapse_onto_the_first() {
    // Arrange
    let (queue, _) = shared_queue(QueueOptions::default());
    let a = keyed("k1");
    let b = keyed("k1");
    let c = keyed("k2");
    let d = NewJob::new(KIND, serde_json::json!({}), 1);

    // Act
    let result = queue
        .enqueue(&[a.clone(), b.clone(), c.clone(), d.clone()])
        .await
        .unwrap();

    // Assert
    assert_eq!(
        result,
        vec![
            Enqueued::New(a.id),
            Enqueued::Duplicate(a.id, JobState::Available),
            Enqueued::New(c.id),
            Enqueued::New(d.id),
        ]
    );
    let stats = stats(&queue).await;
    assert_eq!(stats.pending, 3);
    assert_eq!(total(&stats, "enqueued"), 3);
}

#[tokio::test]
async fn an_idempotency_key_still_stands_for_its_job_after_the_job_has_run() {
    // Arrange: the job was enqueued, leased and completed.
    let (queue, _) = shared_queue(QueueOptions::default());
    let first = keyed("tick-once");
    queue.enqueue(std::slice::from_ref(&first)).await.unwrap();
    let leased = queue.fetch("w", 1).await.unwrap().jobs.remove(0);
    queue
        .settle(&[Settlement {
            id: leased.id,
            token: leased.token,
            verdict: Verdict::Done,
            error: String::new(),
        }])
        .await
        .unwrap();

    // Act: the same tick is enqueued again (e.g. by a second scheduler replica).
    let again = queue.enqueue(&[keyed("tick-once")]).await.unwrap();

    // Assert
    assert_eq!(
        again,
        vec![Enqueued::Duplicate(first.id, JobState::Completed)]
    );
    let stats = stats(&queue).await;
    assert_eq!((stats.pending, total(&stats, "enqueued")), (0, 1));
}
