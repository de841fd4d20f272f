//! A rolling upgrade: workers of the previous release and of this one on the same queue.
//!
//! A lease is one value in `tokens` (`token|attempt|worker|leased_at`, `lease.lua`) where the
//! release of 5589e5a wrote three hashes (`tokens`, `holders`, `attempts`) per lease. While
//! hosts are upgraded one by one, both kinds of worker fetch from, settle on and take over
//! expired leases of one queue. That release's `fetch.lua` and `ack.lua` are kept in
//! `previous_release/` and played here as its workers: neither side may lose a job, run one
//! past its attempt limit, or miscount its attempts.
//!
//! A job's hash also carries `p`, what a first lease reads, packed by `enqueue.lua`; the
//! release of eadb7a6 (`previous_release/eadb7a6/`) neither wrote nor read it, and wrote the
//! incarnation as a field `inc`, which this release no longer writes. Jobs enqueued by either
//! release are leased by the other with every field they were enqueued with.

use std::time::Duration;

use redis::Value;
use upkeep_shared::queue::{NewJob, Queue, QueueOptions, Settled, Settlement, Verdict};

use crate::support::{KIND, ack_keys, shared_queue};

const LEASE_MS: u64 = 300;

fn options() -> QueueOptions {
    QueueOptions {
        lease: Duration::from_millis(LEASE_MS),
        ..QueueOptions::default()
    }
}

/// One lease as a previous release's fetch reports it: per job ten `|`-terminated fields
/// (token, attempt, max, enq, tick, state_was, then the byte lengths of id, kind, args and
/// sched), then those four values.
#[derive(Debug)]
struct OldLease {
    id: String,
    token: String,
    attempt: u32,
    max: String,
    enq: String,
    tick: String,
    state_was: String,
    kind: String,
    args: String,
    schedule: String,
}

/// A fetch by a worker of a previous release (`source`, its `fetch.lua` with its preludes),
/// called as its client did: the leased jobs and how many expired leases it took over.
async fn previous_fetch(
    queue: &Queue,
    source: &str,
    worker: &str,
    count: usize,
) -> (Vec<OldLease>, usize) {
    let script = redis::Script::new(source);
    let keys = queue.keys();
    let mut invocation = script.prepare_invoke();
    for key in [
        &keys.ready,
        &keys.delayed,
        &keys.retry,
        &keys.leases,
        &keys.dead,
        &keys.stats,
        &keys.fence,
        &keys.workers,
        &keys.tokens,
        &keys.holders,
        &keys.attempts,
        &keys.done,
    ] {
        invocation.key(key);
    }
    invocation
        .arg(&keys.base)
        .arg(worker)
        .arg(count)
        .arg(LEASE_MS)
        .arg(100)
        .arg(60_000)
        .arg(60_000)
        .arg(60_000);
    let reply: Value = invocation
        .invoke_async(&mut queue.conn())
        .await
        .expect("a previous release's fetch");
    let Value::Array(parts) = reply else {
        panic!("fetch reply is not an array: {reply:?}");
    };
    let packed = match &parts[0] {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).expect("utf-8"),
        Value::Nil => String::new(),
        other => panic!("packed jobs: {other:?}"),
    };
    let reclaimed = match &parts[1] {
        Value::Array(fields) => fields.len() / 11,
        other => panic!("reclaimed: {other:?}"),
    };
    (unpack(&packed), reclaimed)
}

/// A fetch by a worker of the 5589e5a release.
async fn old_fetch(queue: &Queue, worker: &str, count: usize) -> (Vec<OldLease>, usize) {
    const SOURCE: &str = concat!(
        include_str!("../../shared/src/queue/lua/incarnation.lua"),
        include_str!("previous_release/fetch.lua")
    );
    previous_fetch(queue, SOURCE, worker, count).await
}

/// The packed jobs of a previous release's fetch reply (see [`OldLease`]).
fn unpack(mut rest: &str) -> Vec<OldLease> {
    let mut out = Vec::new();
    while !rest.is_empty() {
        let mut fields = Vec::new();
        for _ in 0..10 {
            let (field, tail) = rest.split_once('|').expect("a field");
            fields.push(field);
            rest = tail;
        }
        let mut values = fields[6..].iter().map(|len| {
            let len: usize = len.parse().expect("a length");
            let (value, tail) = rest.split_at(len);
            rest = tail;
            value.to_owned()
        });
        let (id, kind, args, schedule) = (
            values.next().expect("id"),
            values.next().expect("kind"),
            values.next().expect("args"),
            values.next().expect("sched"),
        );
        out.push(OldLease {
            id,
            token: fields[0].to_owned(),
            attempt: fields[1].parse().expect("an attempt"),
            max: fields[2].to_owned(),
            enq: fields[3].to_owned(),
            tick: fields[4].to_owned(),
            state_was: fields[5].to_owned(),
            kind,
            args,
            schedule,
        });
    }
    out
}

/// Settlements by a worker of the previous release (its `ack.lua`): one letter per settlement.
async fn old_ack(queue: &Queue, settlements: &[(&str, &str, &str)]) -> String {
    let script = redis::Script::new(include_str!("previous_release/ack.lua"));
    let mut invocation = script.prepare_invoke();
    for key in ack_keys(queue) {
        invocation.key(key);
    }
    invocation.arg(&queue.keys().base).arg(60_000);
    for (id, token, verdict) in settlements {
        invocation.arg(*id).arg(*token).arg(*verdict);
    }
    invocation
        .invoke_async(&mut queue.conn())
        .await
        .expect("the previous release's ack")
}

fn settlement(id: &str, token: &str, verdict: Verdict) -> Settlement {
    Settlement {
        id: id.to_owned(),
        token: token.to_owned(),
        verdict,
        error: "failed on purpose".to_owned(),
    }
}

/// Fails one attempt, to be retried at once, with this release's client.
async fn fail(queue: &Queue, id: &str, token: &str) -> Settled {
    settle(queue, id, token, Verdict::Retry(Duration::ZERO)).await
}

/// Settles one attempt with this release's client; what the queue did with it.
async fn settle(queue: &Queue, id: &str, token: &str, verdict: Verdict) -> Settled {
    let settled = queue
        .settle(&[settlement(id, token, verdict)])
        .await
        .expect("settle");
    settled[0].1
}

async fn field(queue: &Queue, id: &str, name: &str) -> Option<String> {
    let record = queue.job(id).await.expect("job lookup").expect("known job");
    record.fields.get(name).cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_of_the_previous_release_is_taken_over_with_its_holder_and_attempt() {
    // Arrange: a job with 3 attempts, failed once by an old worker and leased by it again
    // (attempt 2), whose lease then expires: that worker died mid-attempt.
    let (queue, _) = shared_queue(options());
    let job = NewJob::new(KIND, serde_json::json!({}), 3);
    let id = job.id.to_string();
    queue.enqueue(&[job]).await.expect("enqueue");
    let (leased, _) = old_fetch(&queue, "old-worker", 1).await;
    assert_eq!((leased[0].id.as_str(), leased[0].attempt), (id.as_str(), 1));
    let states = old_ack(&queue, &[(&id, &leased[0].token, "retry|0|boom")]).await;
    assert_eq!(states, "r");
    let (leased, _) = old_fetch(&queue, "old-worker", 1).await;
    assert_eq!(leased.len(), 1, "the retry is promoted and leased again");
    assert_eq!(leased[0].attempt, 2);
    assert_eq!(
        field(&queue, &id, "worker").await.as_deref(),
        Some("old-worker")
    );

    // Act: after the lease's expiry, a worker of this release fetches.
    tokio::time::sleep(Duration::from_millis(LEASE_MS + 100)).await;
    let fetched = queue.fetch("new-worker", 10).await.expect("fetch");

    // Assert: the lost attempt comes back as a verdict lease with its count and first holder,
    // its old holder entry is gone, and the lookup shows the new lease.
    assert!(fetched.jobs.is_empty());
    let [lost] = fetched.reclaimed.as_slice() else {
        panic!("one reclaimed lease, got {:?}", fetched.reclaimed);
    };
    assert_eq!((lost.id.as_str(), lost.attempt), (id.as_str(), 2));
    assert_eq!(lost.worker, "old-worker");
    assert!(lost.leased_at_ms > 0, "the old lease's start is known");
    let mut conn = queue.conn();
    let holder: Option<String> = redis::cmd("HGET")
        .arg(&queue.keys().holders)
        .arg(&id)
        .query_async(&mut conn)
        .await
        .expect("HGET");
    assert_eq!(holder, None, "the old holder entry is removed on takeover");
    assert_eq!(
        field(&queue, &id, "state").await.as_deref(),
        Some("running")
    );
    assert_eq!(
        field(&queue, &id, "worker").await.as_deref(),
        Some("new-worker")
    );
    assert_eq!(field(&queue, &id, "attempt").await.as_deref(), Some("2"));

    // And: given back as a counted attempt, the job's last attempt is its third, after which a
    // failure makes it a dead letter at attempt 3.
    let settled = settle(&queue, &id, &lost.token, Verdict::Release).await;
    assert_eq!(settled, Settled::Available);
    let fetched = queue.fetch("new-worker", 10).await.expect("fetch");
    assert_eq!(fetched.jobs.len(), 1);
    assert_eq!(fetched.jobs[0].attempt, 3);
    let settled = fail(&queue, &id, &fetched.jobs[0].token).await;
    assert_eq!(settled, Settled::Discarded, "attempt 3 of 3 was the last");
    assert_eq!(field(&queue, &id, "attempt").await.as_deref(), Some("3"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_alternate_between_releases_and_are_counted_on_both_sides() {
    // Arrange: a job with 4 attempts.
    let (queue, _) = shared_queue(options());
    let job = NewJob::new(KIND, serde_json::json!({}), 4);
    let id = job.id.to_string();
    queue.enqueue(&[job]).await.expect("enqueue");

    // Act and assert: attempt 1 on a new worker, 2 on an old one, 3 on a new one, 4 on an old
    // one; each fails, and the fourth failure makes the job a dead letter.
    let fetched = queue.fetch("new-worker", 1).await.expect("fetch");
    assert_eq!(fetched.jobs[0].attempt, 1);
    let settled = fail(&queue, &id, &fetched.jobs[0].token).await;
    assert_eq!(settled, Settled::Retryable);

    let (leased, _) = old_fetch(&queue, "old-worker", 1).await;
    assert_eq!(
        leased[0].attempt, 2,
        "the old worker counts the new one's attempt"
    );
    assert_eq!(
        old_ack(&queue, &[(&id, &leased[0].token, "retry|0|boom")]).await,
        "r"
    );

    let fetched = queue.fetch("new-worker", 1).await.expect("fetch");
    assert_eq!(
        fetched.jobs[0].attempt, 3,
        "the new worker counts the old one's"
    );
    assert_eq!(
        fail(&queue, &id, &fetched.jobs[0].token).await,
        Settled::Retryable
    );

    let (leased, _) = old_fetch(&queue, "old-worker", 1).await;
    assert_eq!(leased[0].attempt, 4);
    assert_eq!(
        old_ack(&queue, &[(&id, &leased[0].token, "retry|0|boom")]).await,
        "d",
        "the fourth of four attempts was the last"
    );
    assert_eq!(
        field(&queue, &id, "state").await.as_deref(),
        Some("discarded")
    );
    assert_eq!(field(&queue, &id, "attempt").await.as_deref(), Some("4"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_of_this_release_lost_by_its_worker_is_settled_by_a_worker_of_the_previous_one() {
    // Arrange: attempt 2 of a job with 2 attempts, leased by a new worker that then dies.
    let (queue, _) = shared_queue(options());
    let job = NewJob::new(KIND, serde_json::json!({}), 2);
    let id = job.id.to_string();
    queue.enqueue(&[job]).await.expect("enqueue");
    let fetched = queue.fetch("new-worker", 1).await.expect("fetch");
    assert_eq!(
        fail(&queue, &id, &fetched.jobs[0].token).await,
        Settled::Retryable
    );
    let fetched = queue.fetch("new-worker", 1).await.expect("fetch");
    assert_eq!(fetched.jobs[0].attempt, 2);

    // Act: an old worker takes the expired lease over and gives the lost attempt back, as its
    // worker did for a verdict lease with nothing in the ledger (`release`).
    tokio::time::sleep(Duration::from_millis(LEASE_MS + 100)).await;
    let (_, n_reclaimed) = old_fetch(&queue, "old-worker", 1).await;
    assert_eq!(n_reclaimed, 1);
    let mut conn = queue.conn();
    let token: String = redis::cmd("HGET")
        .arg(&queue.keys().tokens)
        .arg(&id)
        .query_async(&mut conn)
        .await
        .expect("HGET");
    let states = old_ack(&queue, &[(&id, &token, "release|0|worker lost")]).await;

    // Assert: the old worker saw attempt 2 of 2 (the count this release keeps from a job's
    // second attempt on), so the job is a dead letter, not run a third time.
    assert_eq!(states, "d");
    assert_eq!(
        field(&queue, &id, "state").await.as_deref(),
        Some("discarded")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_job_reports_the_attempt_it_completed_on() {
    // Arrange: one job completed on its first attempt, one on its second.
    let (queue, _) = shared_queue(options());
    let first = NewJob::new(KIND, serde_json::json!({ "n": 1 }), 3);
    let second = NewJob::new(KIND, serde_json::json!({ "n": 2 }), 3);
    let (first_id, second_id) = (first.id.to_string(), second.id.to_string());
    queue.enqueue(&[first, second]).await.expect("enqueue");
    let fetched = queue.fetch("w", 2).await.expect("fetch");
    let token_of = |id: &str| {
        fetched
            .jobs
            .iter()
            .find(|job| job.id == id)
            .expect("leased")
            .token
            .clone()
    };

    // Act
    queue
        .settle(&[
            settlement(&first_id, &token_of(&first_id), Verdict::Done),
            settlement(
                &second_id,
                &token_of(&second_id),
                Verdict::Retry(Duration::ZERO),
            ),
        ])
        .await
        .expect("settle");
    let again = queue.fetch("w", 2).await.expect("fetch");
    assert_eq!(again.jobs.len(), 1);
    assert_eq!(
        field(&queue, &second_id, "attempt").await.as_deref(),
        Some("2")
    );
    assert_eq!(
        settle(&queue, &second_id, &again.jobs[0].token, Verdict::Done).await,
        Settled::Completed
    );

    // Assert
    for (id, attempt) in [(&first_id, "1"), (&second_id, "2")] {
        assert_eq!(
            field(&queue, id, "state").await.as_deref(),
            Some("completed")
        );
        assert_eq!(field(&queue, id, "attempt").await.as_deref(), Some(attempt));
    }
}

/// An enqueue by `source` (an `enqueue.lua` with its prelude), called as the client does but
/// with the job's limit as given (the client raises a limit of 0 to 1).
async fn enqueue_with(queue: &Queue, source: &str, job: &NewJob) {
    let script = redis::Script::new(source);
    let keys = queue.keys();
    let mut invocation = script.prepare_invoke();
    for key in [
        &keys.ready,
        &keys.delayed,
        &keys.stats,
        &keys.wake,
        &keys.done,
        &keys.tokens,
    ] {
        invocation.key(key);
    }
    invocation
        .arg(&keys.base)
        .arg(60_000)
        .arg(job.id.to_string())
        .arg(&job.kind)
        .arg(job.args.to_string())
        .arg(job.max_attempts)
        .arg(0)
        .arg("")
        .arg(job.schedule.as_deref().unwrap_or(""))
        .arg(job.tick_ms.map(|t| t.to_string()).unwrap_or_default());
    let _: Value = invocation
        .invoke_async(&mut queue.conn())
        .await
        .expect("an enqueue by script");
}

/// An enqueue by the release of eadb7a6: the job's fields one by one and its incarnation as
/// `inc`, no packed `p`.
async fn eadb7a6_enqueue(queue: &Queue, job: &NewJob) {
    const SOURCE: &str = concat!(
        include_str!("../../shared/src/queue/lua/incarnation.lua"),
        include_str!("previous_release/eadb7a6/enqueue.lua")
    );
    enqueue_with(queue, SOURCE, job).await;
}

/// A fetch of one job by a worker of the eadb7a6 release.
async fn eadb7a6_fetch(queue: &Queue, worker: &str) -> OldLease {
    const SOURCE: &str = concat!(
        include_str!("../../shared/src/queue/lua/incarnation.lua"),
        include_str!("../../shared/src/queue/lua/lease.lua"),
        include_str!("previous_release/eadb7a6/fetch.lua")
    );
    let (mut leased, _) = previous_fetch(queue, SOURCE, worker, 1).await;
    assert_eq!(leased.len(), 1, "one job leased");
    leased.remove(0)
}

/// A job from a schedule, with a `|` in its arguments and schedule: the packed forms carry
/// them by length, unescaped.
fn scheduled_job(max_attempts: u32) -> NewJob {
    let mut job = NewJob::new(
        KIND,
        serde_json::json!({ "path": "/var/log/a|b.log", "note": "ü" }),
        max_attempts,
    );
    job.schedule = Some("nightly|logs".to_owned());
    job.tick_ms = Some(1_764_460_800_000);
    job
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_enqueued_by_the_eadb7a6_release_is_leased_by_this_one_with_every_field() {
    // Arrange: a scheduled job enqueued as that release did (no packed part).
    let (queue, _) = shared_queue(options());
    let job = scheduled_job(4);
    eadb7a6_enqueue(&queue, &job).await;
    assert_eq!(
        field(&queue, &job.id.to_string(), "kind").await.as_deref(),
        Some(KIND)
    );

    // Act
    let fetched = queue.fetch("new-worker", 10).await.expect("fetch");

    // Assert: every field it was enqueued with, and not suspect: the same server created it.
    let [leased] = fetched.jobs.as_slice() else {
        panic!("one job leased, got {:?}", fetched.jobs);
    };
    assert_eq!(
        (
            leased.id.as_str(),
            leased.attempt,
            leased.max_attempts,
            leased.kind.as_str(),
            leased.args.as_str(),
            leased.schedule.as_deref(),
            leased.tick_ms,
            leased.suspect,
            leased.missing,
        ),
        (
            job.id.to_string().as_str(),
            1,
            4,
            KIND,
            job.args.to_string().as_str(),
            Some("nightly|logs"),
            Some(1_764_460_800_000),
            false,
            false
        )
    );
    assert!(leased.enqueued_at_ms > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_enqueued_by_this_release_is_leased_by_the_eadb7a6_one_with_every_field_and_checked_first()
 {
    // Arrange: the same job, enqueued by this release (fields by name and the packed part).
    let (queue, _) = shared_queue(options());
    let job = scheduled_job(4);
    queue
        .enqueue(std::slice::from_ref(&job))
        .await
        .expect("enqueue");
    let id = job.id.to_string();
    let mut conn = queue.conn();
    let packed: Option<String> = redis::cmd("HGET")
        .arg(queue.keys().job(&id))
        .arg("p")
        .query_async(&mut conn)
        .await
        .expect("HGET");
    assert!(
        packed.is_some(),
        "this release packs what a first lease reads"
    );
    assert_eq!(
        field(&queue, &id, "p").await,
        None,
        "the job's record leaves it out"
    );

    // Act: a worker of the earlier release fetches.
    let leased = eadb7a6_fetch(&queue, "old-worker").await;

    // Assert: it reads every field by name; without `inc` the job is suspect, so that worker
    // asks the ledger before running it, which is always safe.
    assert_eq!(
        (
            leased.id.as_str(),
            leased.attempt,
            leased.max.as_str(),
            leased.tick.as_str(),
            leased.state_was.as_str(),
        ),
        (id.as_str(), 1, "4", "1764460800000", "suspect")
    );
    assert!(leased.enq.parse::<i64>().expect("enq") > 0);
    assert_eq!(
        (
            leased.kind.as_str(),
            leased.args.as_str(),
            leased.schedule.as_str()
        ),
        (KIND, job.args.to_string().as_str(), "nightly|logs")
    );
    // And: the lease it wrote is this release's kind of lease, settled here as usual.
    assert_eq!(
        settle(&queue, &id, &leased.token, Verdict::Done).await,
        Settled::Completed
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_packed_with_a_limit_of_zero_is_a_dead_letter_at_its_first_fetch() {
    // Arrange: a job of this release's layout whose limit is 0, written by the script itself
    // (the client never sends one): a first lease reads the limit only from the packed part.
    const SOURCE: &str = concat!(
        include_str!("../../shared/src/queue/lua/incarnation.lua"),
        include_str!("../../shared/src/queue/lua/enqueue.lua")
    );
    let (queue, _) = shared_queue(options());
    let mut job = NewJob::new(KIND, serde_json::json!({}), 1);
    job.max_attempts = 0;
    enqueue_with(&queue, SOURCE, &job).await;
    let id = job.id.to_string();

    // Act
    let fetched = queue.fetch("new-worker", 10).await.expect("fetch");

    // Assert: max attempts is a hard bound on a first lease too.
    assert!(
        fetched.jobs.is_empty(),
        "leased past its limit: {:?}",
        fetched.jobs
    );
    assert_eq!(
        field(&queue, &id, "state").await.as_deref(),
        Some("discarded")
    );
    assert_eq!(
        field(&queue, &id, "err").await.as_deref(),
        Some("attempt limit reached before the attempt started")
    );
}
