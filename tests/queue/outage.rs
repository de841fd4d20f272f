//! Redis hiccups: a worker rides out `CLIENT PAUSE` and a redis-server crash and restart by
//! itself, and every job still succeeds exactly once.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Mutex;
use upkeep_shared::queue::{AttemptStatus, NewJob, Queue, QueueOptions, RedisTarget};
use upkeep_shared::{JobId, Outcome};
use upkeep_tests::proxy::TcpProxy;
use upkeep_tests::{AppendFsync, PrivateRedis, RedisOptions, unique_prefix};

use crate::support::{
    Calls, KIND, TestLedger, TestWorker, consumer, counting, eventually, exclusive, handler, jobs,
    queue_on, stats, total,
};

/// Enqueues one job every few milliseconds until `stop`, retrying each (with its idempotency
/// key, so a retry after a lost reply cannot add it twice) until Redis takes it.
async fn produce(queue: Queue, stop: Arc<AtomicBool>, enqueued: Arc<Mutex<Vec<JobId>>>) {
    while !stop.load(Ordering::SeqCst) {
        let mut job = NewJob::new(KIND, serde_json::json!({}), 3);
        job.idempotency_key = Some(job.id.to_string());
        loop {
            match queue.enqueue(std::slice::from_ref(&job)).await {
                Ok(result) => {
                    assert_eq!(result[0].id(), job.id, "the key stands for this job");
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(25)).await,
            }
        }
        enqueued.lock().await.push(job.id);
        tokio::time::sleep(Duration::from_millis(4)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_recovers_by_itself_from_a_client_pause_and_a_redis_restart_and_every_job_succeeds_once()
 {
    let _machine = exclusive().await;
    // Arrange: a private server whose append-only file survives a kill, and a worker and a
    // producer on it. The lease is long enough that neither the pause nor the restart
    // expires a lease the worker holds.
    let mut redis = PrivateRedis::start_with(
        RedisOptions::default()
            .appendonly(true)
            .appendfsync(AppendFsync::Always),
    )
    .expect("a private redis-server");
    let target = RedisTarget::standalone(redis.url());
    let options = QueueOptions {
        lease: Duration::from_secs(5),
        ..QueueOptions::default()
    };
    let queue = queue_on(&target, &unique_prefix(), "q", options);
    let calls = Arc::new(Calls::default());
    let ledger = Arc::new(TestLedger::default());
    let work = {
        let calls = calls.clone();
        handler(move |job| {
            calls.record(&job);
            async {
                tokio::time::sleep(Duration::from_millis(2)).await;
                Ok(Outcome::default())
            }
        })
    };
    let worker = TestWorker::start(
        queue.clone(),
        &target,
        consumer("outage", 16),
        ledger.clone(),
        work,
    );
    let stop_producing = Arc::new(AtomicBool::new(false));
    let enqueued = Arc::new(Mutex::new(Vec::new()));
    let producer = tokio::spawn(produce(
        queue.clone(),
        stop_producing.clone(),
        enqueued.clone(),
    ));
    // Waits until the handler has run `more` jobs beyond `floor`; returns how long it took.
    let progress = |floor: u64, more: u64| {
        let calls = calls.clone();
        async move {
            let since = Instant::now();
            eventually(
                "the worker to make progress",
                Duration::from_secs(30),
                || {
                    let done = calls.total();
                    async move { (done >= floor + more).then_some(()) }
                },
            )
            .await;
            since.elapsed()
        }
    };
    progress(0, 50).await;

    // Act 1: every client is paused for 2 s.
    let paused_at = Instant::now();
    redis.pause(2_000).expect("CLIENT PAUSE 2000 ALL");
    let during_pause = calls.total();
    eventually("the pause to end", Duration::from_secs(5), || async {
        (paused_at.elapsed() >= Duration::from_millis(2_000)).then_some(())
    })
    .await;
    let after_pause = progress(during_pause, 50).await;
    assert!(!worker.has_ended(), "the worker survived the pause");

    // Act 2: the server crashes and comes back on the same port with its append-only file.
    tokio::task::block_in_place(|| {
        redis.kill9().expect("kill -9 redis-server");
        redis.restart().expect("restart redis-server");
    });
    let at_restart = calls.total();
    let first_after_restart = progress(at_restart, 1).await;
    progress(at_restart, 50).await;
    assert!(!worker.has_ended(), "the worker survived the restart");
    eventually(
        "600 jobs enqueued in all",
        Duration::from_secs(30),
        || async { (enqueued.lock().await.len() >= 600).then_some(()) },
    )
    .await;
    stop_producing.store(true, Ordering::SeqCst);
    producer.await.expect("the producer finished");
    let enqueued = enqueued.lock().await.clone();
    let n = enqueued.len() as u64;
    // A fetch whose reply the crash swallowed leaves its jobs leased until the lease expires.
    eventually(
        "every enqueued job to succeed",
        Duration::from_secs(30),
        || async {
            let stats = queue.stats().await.ok()?;
            (total(&stats, "succeeded") >= n).then_some(())
        },
    )
    .await;
    let counters = worker.counters();
    worker.stop().await;

    // Assert
    let stats = stats(&queue).await;
    println!(
        "outage: 50 more jobs ran {after_pause:.2?} after the pause ended; the first job \
         {first_after_restart:.2?} after the restart; {n} jobs enqueued, {} handler calls, \
         reclaimed {}, refused acks {}, stats {:?}",
        calls.total(),
        total(&stats, "reclaimed"),
        counters.refused_acks,
        stats.totals
    );
    assert!(n > 500, "a stream of jobs, not a handful ({n})");
    assert_eq!(total(&stats, "enqueued"), n, "each job enqueued once");
    assert_eq!(total(&stats, "succeeded"), n, "each job acked once");
    assert_eq!(total(&stats, "failed"), 0);
    assert_eq!((stats.pending, stats.running, stats.dead), (0, 0, 0));
    for id in &enqueued {
        let succeeded = ledger
            .attempts_of(*id)
            .iter()
            .filter(|a| a.status == AttemptStatus::Succeeded)
            .count();
        assert_eq!(succeeded, 1, "job {id} succeeded {succeeded} times");
    }
    // The handler saw a job twice only if its first lease expired unacknowledged.
    let repeated = calls.repeated();
    assert!(
        repeated.len() as u64 <= total(&stats, "reclaimed"),
        "jobs run twice without an expired lease: {repeated:?}"
    );
    assert_eq!(calls.distinct() as u64, n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_worker_whose_sockets_go_silent_without_closing_reconnects_and_takes_new_jobs() {
    // Arrange: a worker reaches the shared Redis through a proxy; a producer goes direct.
    let upstream = url::Url::parse(&upkeep_tests::shared_redis_url()).expect("REDIS_URL");
    let upstream = std::net::SocketAddr::from((
        std::net::Ipv4Addr::LOCALHOST,
        upstream.port().unwrap_or(6379),
    ));
    let proxy = TcpProxy::start(upstream).expect("a proxy");
    let mut through_proxy = RedisTarget::standalone(proxy.redis_url());
    through_proxy.response_timeout = Duration::from_secs(1);
    let prefix = unique_prefix();
    let worker_queue = queue_on(&through_proxy, &prefix, "q", QueueOptions::default());
    let direct = queue_on(
        &RedisTarget::standalone(upkeep_tests::shared_redis_url()),
        &prefix,
        "q",
        QueueOptions::default(),
    );
    let calls = Arc::new(Calls::default());
    let mut options = consumer("half-open", 4);
    options.idle_wait_max = Duration::from_millis(500);
    let worker = TestWorker::start(
        worker_queue,
        &through_proxy,
        options,
        Arc::new(TestLedger::default()),
        counting(calls.clone()),
    );
    direct
        .enqueue(&jobs(1, 1))
        .await
        .expect("enqueue the first job");
    eventually("the first job to run", Duration::from_secs(10), || {
        let n = calls.total();
        async move { (n == 1).then_some(()) }
    })
    .await;

    // Act: every socket the worker has goes silent without closing, as when a NAT or firewall
    // forgets the connections. Then a job arrives.
    proxy.strand_all();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let enqueued_at = Instant::now();
    direct
        .enqueue(&jobs(1, 1))
        .await
        .expect("enqueue the second job");

    // Assert: the worker notices (its blocking wait and its commands time out), reconnects
    // and runs the job. Without a reconnect it would wait for the kernel to give up on the
    // sockets, about 15 minutes.
    eventually(
        "the job enqueued after the sockets went silent to run",
        Duration::from_secs(20),
        || {
            let n = calls.total();
            async move { (n == 2).then_some(()) }
        },
    )
    .await;
    println!(
        "half-open: the job ran {:.2?} after it was enqueued",
        enqueued_at.elapsed()
    );
    assert!(!worker.has_ended(), "the worker survived");
    worker.stop().await;
}
