//! Stats: every depth and counter of a queue holding jobs in every state.

use std::time::{Duration, Instant};

use upkeep_shared::queue::{NewJob, QueueOptions, Settled, Settlement, Verdict};

use crate::support::{KIND, eventually, now_ms, shared_queue, stats, total};

fn job(max_attempts: u32) -> NewJob {
    NewJob::new(KIND, serde_json::json!({}), max_attempts)
}

#[tokio::test]
async fn stats_count_pending_scheduled_running_retrying_and_dead_jobs_and_the_oldest_pending_age() {
    // Arrange: one job of each fate, in an order that decides which job each fetch takes.
    let (queue, _) = shared_queue(QueueOptions::default());
    let empty = stats(&queue).await;
    let settle = |id: String, token: String, verdict: Verdict| Settlement {
        id,
        token,
        verdict,
        error: "it broke".to_owned(),
    };
    // One dead: its only attempt failed.
    queue.enqueue(&[job(1)]).await.unwrap();
    let dead = queue.fetch("w1", 1).await.unwrap().jobs.remove(0);
    let settled = queue
        .settle(&[settle(
            dead.id.clone(),
            dead.token,
            Verdict::Retry(Duration::ZERO),
        )])
        .await
        .unwrap();
    assert_eq!(settled, vec![(dead.id, Settled::Discarded)], "last attempt");
    // One retrying: failed with attempts left, retry in a minute.
    queue.enqueue(&[job(3)]).await.unwrap();
    let retrying = queue.fetch("w1", 1).await.unwrap().jobs.remove(0);
    queue
        .settle(&[settle(
            retrying.id,
            retrying.token,
            Verdict::Retry(Duration::from_secs(60)),
        )])
        .await
        .unwrap();
    // One running: leased by a second worker and not settled.
    queue.enqueue(&[job(3)]).await.unwrap();
    let running = queue.fetch("w2", 1).await.unwrap();
    assert_eq!(running.jobs.len(), 1);
    // Two scheduled an hour from now, three ready now.
    let mut later = vec![job(1), job(1)];
    for job in &mut later {
        job.run_at_ms = Some(now_ms() + 3_600_000);
    }
    queue.enqueue(&later).await.unwrap();
    let before_ready = Instant::now();
    queue.enqueue(&[job(1), job(1), job(1)]).await.unwrap();

    // Act: read the stats once the oldest ready job has waited a measurable time.
    let stats = eventually(
        "the oldest pending job to be 300 ms old",
        Duration::from_secs(5),
        || async {
            let stats = queue.stats().await.ok()?;
            (stats.oldest_pending_age_seconds? >= 0.3).then_some(stats)
        },
    )
    .await;
    let waited_at_most = before_ready.elapsed().as_secs_f64();

    // Assert
    assert_eq!(
        empty.oldest_pending_age_seconds, None,
        "an empty queue has no age"
    );
    assert_eq!(empty.pending + empty.scheduled + empty.running, 0);
    assert_eq!(stats.name, "q");
    assert_eq!(stats.pending, 3);
    assert_eq!(stats.scheduled, 2);
    assert_eq!(stats.running, 1);
    assert_eq!(stats.retrying, 1);
    assert_eq!(stats.dead, 1);
    assert_eq!(stats.workers, 2, "w1 and w2 fetched in the last 30 s");
    let age = stats
        .oldest_pending_age_seconds
        .expect("there are pending jobs");
    assert!(
        age <= waited_at_most + 0.01,
        "the oldest pending job is {age} s old but was enqueued {waited_at_most} s ago"
    );
    assert!(age >= 0.3);
    assert_eq!(total(&stats, "enqueued"), 8);
    assert_eq!(total(&stats, "failed"), 2);
    assert_eq!(total(&stats, "retried"), 1);
    assert_eq!(total(&stats, "dead"), 1);
    assert_eq!(total(&stats, "succeeded"), 0);
    assert_eq!(total(&stats, "reclaimed"), 0);
}

#[tokio::test]
async fn stats_count_the_last_hour_and_the_throughput_from_per_minute_rollups() {
    // Arrange: 4 jobs succeed and 2 fail now; rollup buckets 30 and 61 minutes old are planted
    // as the settle script would have left them.
    let (queue, _) = shared_queue(QueueOptions::default());
    let jobs: Vec<NewJob> = (0..6).map(|_| job(1)).collect();
    queue.enqueue(&jobs).await.unwrap();
    let fetched = queue.fetch("w1", 6).await.unwrap().jobs;
    assert_eq!(fetched.len(), 6);
    let settlements: Vec<Settlement> = fetched
        .into_iter()
        .enumerate()
        .map(|(i, leased)| Settlement {
            id: leased.id,
            token: leased.token,
            verdict: if i < 4 {
                Verdict::Done
            } else {
                Verdict::Retry(Duration::ZERO)
            },
            error: "it broke".to_owned(),
        })
        .collect();
    let settled_in = now_ms() / 60_000;
    queue.settle(&settlements).await.unwrap();
    let minute = now_ms() / 60_000;
    let base = queue.keys().base.clone();
    let plant = |age: i64, s: i64, f: i64| {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(format!("{base}tp:{}", minute - age))
            .arg("s")
            .arg(s)
            .arg("f")
            .arg(f);
        cmd
    };
    let _: i64 = crate::support::raw(&queue, &plant(30, 100, 10)).await;
    let _: i64 = crate::support::raw(&queue, &plant(61, 1000, 1000)).await;
    // The settle ran in `settled_in` or, across a minute boundary, in `minute`.
    let mut ttl: i64 = -2;
    for m in [settled_in, minute] {
        let pttl: i64 =
            crate::support::raw(&queue, redis::cmd("PTTL").arg(format!("{base}tp:{m}"))).await;
        ttl = ttl.max(pttl);
    }

    // Act
    let stats = stats(&queue).await;

    // Assert: the 30-minute-old bucket counts, the 61-minute-old one does not; the throughput
    // covers only the last 5 minutes (6 attempts over 4 to 5 minutes).
    assert_eq!(stats.succeeded_1h, 104, "{stats:?}");
    assert_eq!(stats.failed_1h, 12, "{stats:?}");
    assert!(
        (6.0 / 5.0..=6.0 / 4.0).contains(&stats.throughput_per_min),
        "{stats:?}"
    );
    assert!(
        (0..=7_200_000).contains(&ttl) && ttl > 7_000_000,
        "the current bucket expires in 2 h, PTTL {ttl}"
    );
}
