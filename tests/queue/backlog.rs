//! Large backlogs: every job is processed, delayed jobs are promoted in bounded batches, and
//! no script call blocks Redis for long (measured with SLOWLOG on a private redis-server, so
//! other tests' traffic cannot show up in it).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use upkeep_shared::queue::{
    Attempt, History, Ledger, NewJob, NoLedger, Queue, QueueOptions, Recorded, RedisTarget,
};
use upkeep_shared::{Job, JobId, Outcome};
use upkeep_tests::{PrivateRedis, unique_prefix};

use crate::slowlog::{SlowEntry, SlowLog};
use crate::support::{
    Calls, KIND, TestLedger, TestWorker, consumer, counting, eventually, exclusive, handler, jobs,
    now_ms, queue_on, redis_now_ms, shared_queue, stats, total, wait_for_succeeded,
};

/// The longest any single command may run at these backlogs.
const SLOW: Duration = Duration::from_millis(10);

/// No call may take this long, stall or not: a script doing work proportional to the backlog
/// (promoting 20,000 due jobs at once, say) takes longer than this even on a fast machine.
const STALL_CEILING: Duration = Duration::from_millis(80);

/// The share of script calls that may reach [`SLOW`]. The VMs this suite runs on stall a
/// process now and then for 10 to 50 ms (seen here: a script's inner `ZREM` of 250 members, a
/// few microseconds of work, logged at 29 ms), so "no call ever reaches 10 ms" would measure the
/// host, not the scripts. The bound itself is asserted structurally next to each use (exactly
/// `maintenance_limit` promoted per call, batches of the configured size).
const SLOW_SHARE: f64 = 0.01;

/// At least this many script calls may reach [`SLOW`], however few calls a run makes. Host
/// stalls come at a rate per second of the run, not per call: the 20,000-job test makes about
/// 385 calls in 2 s, so 1 % would allow 3, and on the slowest VM seen here it failed 3 runs in
/// 8 that way (enqueue calls, whose script had not changed, among the stalled ones) while on
/// an idle fast VM, with two busy loops beside it, its slowest call took 1.9 ms. A script
/// doing work proportional to the backlog still fails: it is slow on every call that meets
/// the backlog, and beyond [`STALL_CEILING`] at these sizes.
const SLOW_CALLS_ALWAYS_ALLOWED: usize = 6;

/// Checks on a [`SlowLog`] armed at 1 ms, so a run reports its slowest calls even when none
/// reaches [`SLOW`].
impl SlowLog {
    /// Prints what SLOWLOG and commandstats saw, and fails if more script calls reached
    /// [`SLOW`] than [`SLOW_SHARE`] of them (or [`SLOW_CALLS_ALWAYS_ALLOWED`], the larger), or
    /// any reached [`STALL_CEILING`].
    async fn assert_nothing_reached_slow(&self, label: &str) {
        let entries = self.entries().await;
        let max = entries.iter().map(|e| e.micros).max().unwrap_or(0);
        let evalsha = self.evalsha_stats().await;
        println!(
            "{label}: {} commands took >= 1 ms, the slowest {max} us (limit {} us); {evalsha}",
            entries.len(),
            SLOW.as_micros()
        );
        let mut by_call: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
        for entry in &entries {
            // A script by its name, any other command by its own.
            let name = entry
                .script
                .or_else(|| entry.call.split(' ').next())
                .unwrap_or("")
                .to_owned();
            by_call.entry(name).or_default().push(entry.micros);
        }
        for (call, mut micros) in by_call {
            micros.sort_unstable();
            println!(
                "  {label}: {call}: {} calls >= 1 ms; median {} us, slowest {} us",
                micros.len(),
                micros[micros.len() / 2],
                micros[micros.len() - 1]
            );
        }
        let slow: Vec<&SlowEntry> = entries
            .iter()
            .filter(|e| e.micros >= SLOW.as_micros() as i64)
            .collect();
        let calls = self.evalsha_calls().await.max(1);
        let allowed = ((SLOW_SHARE * calls as f64) as usize).max(SLOW_CALLS_ALWAYS_ALLOWED);
        assert!(
            slow.len() <= allowed
                && slow
                    .iter()
                    .all(|e| e.micros < STALL_CEILING.as_micros() as i64),
            "{label}: {} of {calls} script calls took {SLOW:?} or more (at most {allowed} may: \
             {:.0} % or {SLOW_CALLS_ALWAYS_ALLOWED}; none {STALL_CEILING:?}): {slow:#?}",
            slow.len(),
            SLOW_SHARE * 100.0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_thousand_jobs_due_at_once_are_all_processed_and_no_script_call_takes_10_ms() {
    let _machine = exclusive().await;
    // Arrange
    let redis = PrivateRedis::start().expect("a private redis-server");
    let target = RedisTarget::standalone(redis.url());
    let queue = queue_on(&target, &unique_prefix(), "q", QueueOptions::default());
    let slowlog = SlowLog::arm(&queue, Duration::from_millis(1)).await;
    println!("{}", slowlog.prioritise_server().await);
    let enqueueing = Instant::now();
    queue.enqueue(&jobs(50_000, 1)).await.expect("enqueue");
    let enqueued_in = enqueueing.elapsed();
    assert_eq!(
        stats(&queue).await.pending,
        50_000,
        "all 50,000 are due now"
    );
    let calls = Arc::new(Calls::default());
    let mut options = consumer("bulk", 64);
    options.batch_size = 256;

    // Act
    let processing = Instant::now();
    let worker = TestWorker::start(
        queue.clone(),
        &target,
        options,
        Arc::new(NoLedger),
        counting(calls.clone()),
    );
    wait_for_succeeded(&queue, 50_000, Duration::from_secs(90)).await;
    let processed_in = processing.elapsed();
    worker.stop().await;

    // Assert
    println!(
        "50,000 due jobs: enqueued in {enqueued_in:.2?}, processed in {processed_in:.2?} ({:.0} jobs/s)",
        50_000.0 / processed_in.as_secs_f64()
    );
    assert_eq!(calls.total(), 50_000, "one handler call per job");
    assert_eq!(calls.distinct(), 50_000);
    let stats = stats(&queue).await;
    assert_eq!(
        (stats.pending, stats.running, stats.retrying, stats.dead),
        (0, 0, 0, 0)
    );
    assert_eq!(total(&stats, "succeeded"), 50_000);
    assert_eq!(total(&stats, "failed"), 0);
    slowlog.assert_nothing_reached_slow("50k due").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_thousand_delayed_jobs_falling_due_together_are_promoted_in_bounded_batches_and_all_run()
 {
    let _machine = exclusive().await;
    // Arrange
    let redis = PrivateRedis::start().expect("a private redis-server");
    let target = RedisTarget::standalone(redis.url());
    let limit = 250;
    let options = QueueOptions {
        maintenance_limit: limit,
        ..QueueOptions::default()
    };
    let queue = queue_on(&target, &unique_prefix(), "q", options);
    let slowlog = SlowLog::arm(&queue, Duration::from_millis(1)).await;
    println!("{}", slowlog.prioritise_server().await);
    let due_at = now_ms() + 2_000;
    let mut delayed = jobs(20_000, 1);
    for job in &mut delayed {
        job.run_at_ms = Some(due_at);
    }
    queue.enqueue(&delayed).await.expect("enqueue");
    let before = stats(&queue).await;
    assert_eq!(
        (before.scheduled, before.pending),
        (20_000, 0),
        "all 20,000 wait for the same due time"
    );
    eventually(
        "the due time on Redis's clock",
        Duration::from_secs(5),
        || {
            let queue = queue.clone();
            async move { (redis_now_ms(&queue).await > due_at).then_some(()) }
        },
    )
    .await;

    // Act: two fetches that lease nothing, so they only do maintenance.
    let first = queue.fetch("probe", 0).await.expect("fetch");
    let after_first = stats(&queue).await;
    let second = queue.fetch("probe", 0).await.expect("fetch");
    let after_second = stats(&queue).await;

    // Assert: each call promoted exactly `limit`, not the whole due backlog.
    assert!(first.jobs.is_empty() && second.jobs.is_empty());
    assert_eq!(
        (after_first.scheduled, after_first.pending),
        (20_000 - limit as u64, limit as u64)
    );
    assert_eq!(
        (after_second.scheduled, after_second.pending),
        (20_000 - 2 * limit as u64, 2 * limit as u64)
    );
    assert_eq!(
        first.next_due,
        Some(Duration::ZERO),
        "the rest is already due"
    );

    // Act: a worker drains the rest, promoting as it goes.
    let calls = Arc::new(Calls::default());
    let mut options = consumer("delayed", 64);
    options.batch_size = 256;
    let processing = Instant::now();
    let worker = TestWorker::start(
        queue.clone(),
        &target,
        options,
        Arc::new(NoLedger),
        counting(calls.clone()),
    );
    wait_for_succeeded(&queue, 20_000, Duration::from_secs(60)).await;
    let processed_in = processing.elapsed();
    worker.stop().await;

    // Assert
    println!("20,000 delayed jobs due together: processed in {processed_in:.2?}");
    assert_eq!(calls.total(), 20_000);
    assert_eq!(calls.distinct(), 20_000);
    let stats = stats(&queue).await;
    assert_eq!((stats.scheduled, stats.pending, stats.running), (0, 0, 0));
    slowlog.assert_nothing_reached_slow("20k delayed").await;
}

/// A ledger that refuses every write while `down` is set, like Postgres during an outage.
#[derive(Default)]
struct FlakyLedger {
    down: AtomicBool,
    inner: TestLedger,
}

impl Ledger for FlakyLedger {
    fn record(
        &self,
        attempts: Vec<Attempt>,
    ) -> BoxFuture<'_, Result<Vec<Recorded>, anyhow::Error>> {
        if self.down.load(Ordering::SeqCst) {
            return Box::pin(async { Err(anyhow::anyhow!("ledger down")) });
        }
        self.inner.record(attempts)
    }

    fn history(
        &self,
        ids: Vec<JobId>,
    ) -> BoxFuture<'_, Result<HashMap<JobId, History>, anyhow::Error>> {
        self.inner.history(ids)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_the_ledger_is_down_the_worker_stops_leasing_and_acks_nothing_then_catches_up_in_fast_calls()
 {
    let _machine = exclusive().await;
    // Arrange: the ledger is down. Nothing may be acked before its ledger row exists, and the
    // worker must not keep leasing jobs whose results it cannot record (back-pressure).
    let redis = PrivateRedis::start().expect("a private redis-server");
    let target = RedisTarget::standalone(redis.url());
    let queue = queue_on(&target, &unique_prefix(), "q", QueueOptions::default());
    let ledger = Arc::new(FlakyLedger::default());
    ledger.down.store(true, Ordering::SeqCst);
    let calls = Arc::new(Calls::default());
    let concurrency = 64;
    let options_batch = 256;
    let mut options = consumer("ledger-outage", concurrency);
    options.batch_size = options_batch;
    let worker = TestWorker::start(
        queue.clone(),
        &target,
        options,
        ledger.clone(),
        counting(calls.clone()),
    );
    queue.enqueue(&jobs(3_000, 1)).await.expect("enqueue");
    eventually("some jobs to run", Duration::from_secs(30), || {
        let ran = calls.total();
        async move { (ran > 0).then_some(()) }
    })
    .await;
    // Let the worker notice the outage, then check that it stopped leasing.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let ran_during_outage = calls.total();
    let during = stats(&queue).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let ran_later = calls.total();
    let slowlog = SlowLog::arm(&queue, Duration::from_millis(1)).await;
    println!("{}", slowlog.prioritise_server().await);

    // Act: the ledger comes back.
    ledger.down.store(false, Ordering::SeqCst);
    wait_for_succeeded(&queue, 3_000, Duration::from_secs(60)).await;
    worker.stop().await;

    // Assert
    println!("jobs run while the ledger was down: {ran_during_outage}");
    assert_eq!(
        total(&during, "succeeded"),
        0,
        "nothing is acked before the ledger has its row"
    );
    assert_eq!(
        ran_later, ran_during_outage,
        "the worker kept running jobs during the outage"
    );
    // Before the first write fails, the worker holds up to its slots plus two batches fetched
    // ahead (short jobs), and one more fetch of up to a batch may be on its way (a fetch also
    // reads the batch's history from the ledger, which is up): at most 64 + 2 * 256 + 256 = 832
    // jobs run, of 3,000.
    let most = (concurrency + 3 * options_batch) as u64;
    assert!(
        ran_during_outage <= most,
        "{ran_during_outage} jobs ran during the outage: leasing should stop after the first failed write"
    );
    assert!(during.pending >= 3_000 - most, "{during:?}");
    assert_eq!(ledger.inner.attempts().len(), 3_000);
    slowlog
        .assert_nothing_reached_slow("settle after ledger outage")
        .await;
}

/// A handler that succeeds at once, except for jobs whose args have `hold`: those keep their
/// slot until `gate` lets them go.
fn holding(gate: Arc<tokio::sync::Semaphore>) -> crate::support::Handler {
    handler(move |job: Job| {
        let gate = gate.clone();
        async move {
            if job.args.get("hold").is_some() {
                gate.acquire().await.expect("the gate stays open").forget();
            }
            Ok(Outcome::default())
        }
    })
}

/// A worker with 4 slots and batches of 8 on a fresh queue, running [`holding`] behind the
/// returned gate (closed).
fn gated_worker(name: &str) -> (Queue, Arc<tokio::sync::Semaphore>, TestWorker) {
    let (queue, target) = shared_queue(QueueOptions::default());
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let mut options = consumer(name, 4);
    options.batch_size = 8;
    let worker = TestWorker::start(
        queue.clone(),
        &target,
        options,
        Arc::new(NoLedger),
        holding(gate.clone()),
    );
    (queue, gate, worker)
}

/// `n` jobs that hold their slot (see [`holding`]).
fn held_jobs(n: usize) -> Vec<NewJob> {
    (0..n)
        .map(|_| NewJob::new(KIND, serde_json::json!({ "hold": true }), 1))
        .collect()
}

/// How many jobs the queue has leased once that number has held still for half a second.
async fn settled_leases(queue: &Queue) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = stats(queue).await.running;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = stats(queue).await.running;
        if now == last && now > 0 {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "the leases did not hold still within 10 s (last {now})"
        );
        last = now;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_of_short_jobs_fetches_ahead_while_one_batch_is_left_and_stops_with_its_slots_taken()
 {
    // Arrange: a worker with 4 slots and batches of 8 learns that its jobs are short (20 no-op
    // jobs); then every job holds its slot until the gate opens.
    let (queue, gate, worker) = gated_worker("ahead");
    queue.enqueue(&jobs(20, 1)).await.expect("enqueue");
    wait_for_succeeded(&queue, 20, Duration::from_secs(10)).await;

    // Act
    queue.enqueue(&held_jobs(100)).await.expect("enqueue");
    let leased = settled_leases(&queue).await;

    // Assert: the first fetch leases a batch (8); with at most one batch in the buffer and room
    // for two batches beyond the slots, the next fetch leases another; then the 4 slots are
    // taken and 12 wait in the buffer, more than one batch, so no third fetch starts however
    // long the slots stay taken, and the rest stays in Redis for other workers. (With one
    // batch of room the second fetch could lease only 4.)
    assert_eq!((leased, stats(&queue).await.pending), (16, 84));
    gate.add_permits(100);
    wait_for_succeeded(&queue, 120, Duration::from_secs(20)).await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_has_not_seen_its_jobs_run_short_leases_only_for_its_free_slots() {
    // Arrange: a fresh worker (no run time measured yet: a slow job must not hold others
    // hostage in its buffer) with 4 slots and batches of 8.
    let (queue, gate, worker) = gated_worker("slots");

    // Act
    queue.enqueue(&held_jobs(20)).await.expect("enqueue");
    let leased = settled_leases(&queue).await;

    // Assert
    assert_eq!((leased, stats(&queue).await.pending), (4, 16));
    gate.add_permits(20);
    wait_for_succeeded(&queue, 20, Duration::from_secs(20)).await;
    worker.stop().await;
}
