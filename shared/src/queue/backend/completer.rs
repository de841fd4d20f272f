//! The completer: finished attempts go to the ledger in one batch, then to Redis in one script
//! call, each job settled to what the ledger holds for its attempt.
//!
//! A two-stage pipeline: stage one writes a batch to the ledger, stage two settles it in Redis.
//! Stage one keeps up to two batches in flight (each one statement and one commit, on its own
//! connection), so one batch's statement runs while the other's commit is flushed; the second
//! starts only when half a batch waits, so a busy stage writes large batches; stage two is
//! sequential and settles the batches in the order stage one took them. Batches stay as large
//! as the backlog allows, and one batch's settle overlaps the next batches' commits. A job
//! reaches stage two only after its row is committed.
//!
//! The ledger decides: [`Ledger::record`] returns the row that stands for each attempt, and the
//! settlement follows that row. For a verdict lease (an expired lease taken over by `fetch`)
//! the recorded `abandoned` attempt meets the late worker's committed result when there is one,
//! so the job completes (or dies) as the ledger says instead of being dead-lettered or run
//! again; without one, the attempt counts and the job goes back to `ready` (or dead on the last
//! attempt).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use super::lease_book::{LeaseBook, LeasePurpose};
use super::{BackendCounters, fence_margin, now_ms};
use crate::outage::Outage;
use crate::queue::client::{Queue, Settled, Settlement, Verdict};
use crate::queue::ledger::{Attempt, AttemptStatus, Ledger, NextState, Recorded};

/// What the handlers, the fetcher and the shutdown path hand to the completer.
pub(super) enum Completion {
    /// A settlement, with the attempt to record first (none for an unstarted one).
    Finished {
        attempt: Option<Box<Attempt>>,
        settlement: Settlement,
        /// Whether the ledger write is fenced by the lease's confirmation: true for results
        /// of attempts this worker ran (or skipped), false for a verdict lease's `abandoned`
        /// row, which never adds a verdict of its own.
        fenced: bool,
    },
    /// Answered once everything sent before it is settled.
    Flush(oneshot::Sender<()>),
}

/// Most attempts recorded and settled per round trip.
const COMPLETION_BATCH: usize = 256;

/// Most ledger writes in flight at once, each a batch on its own connection. With one, the
/// ledger stage idles through every commit's fsync and round trip while the next batch waits;
/// with two, one batch's statement runs while the other's commit is flushed, and Postgres
/// can flush both commits in one fsync. Their settles still go to Redis in the order the
/// batches were taken, each after its own commit.
const LEDGER_WRITES_IN_FLIGHT: usize = 2;

/// A second ledger write starts only once this many completions wait; fewer wait for the
/// write in flight and go with the next batch. A batch costs a fixed statement and commit
/// besides its rows, so small batches taken only because a slot was free cost Postgres more
/// per job; an idle ledger stage still writes the first completion at once.
const SECOND_WRITE_MIN: usize = COMPLETION_BATCH / 2;

/// What a ledger write needs, shared by the writes in flight.
struct LedgerStage {
    queue_name: String,
    ledger: Arc<dyn Ledger>,
    leases: Arc<LeaseBook>,
    counters: Arc<BackendCounters>,
    ledger_down: Arc<AtomicBool>,
    margin: Duration,
    /// One outage for the stage, whichever write meets it. A std mutex: it is held only
    /// around `failed`/`recovered`, never across an await.
    outage: Mutex<Outage>,
}

/// Runs the pipeline until the channel closes.
pub(super) async fn run_completer(
    mut rx: mpsc::Receiver<Completion>,
    queue: Queue,
    ledger: Arc<dyn Ledger>,
    leases: Arc<LeaseBook>,
    counters: Arc<BackendCounters>,
    ledger_down: Arc<AtomicBool>,
) {
    let (settle_tx, settle_rx) = mpsc::channel::<RecordedBatch>(2);
    let stage = Arc::new(LedgerStage {
        queue_name: queue.name().to_string(),
        ledger,
        leases: leases.clone(),
        counters: counters.clone(),
        ledger_down,
        margin: fence_margin(&queue),
        outage: Mutex::new(Outage::new("postgres", "record attempts")),
    });
    let settler = tokio::spawn(run_settler(
        settle_rx,
        queue,
        leases.clone(),
        counters.clone(),
    ));
    // Ledger writes in flight, oldest first: they are settled in this order.
    let mut writes: VecDeque<JoinHandle<RecordedBatch>> = VecDeque::new();
    let mut batch = Vec::with_capacity(COMPLETION_BATCH);
    let mut open = true;
    loop {
        let start_write = !batch.is_empty()
            && (writes.is_empty()
                || (writes.len() < LEDGER_WRITES_IN_FLIGHT && batch.len() >= SECOND_WRITE_MIN));
        if start_write {
            let completions = std::mem::replace(&mut batch, Vec::with_capacity(COMPLETION_BATCH));
            writes.push_back(tokio::spawn(stage.clone().record(completions)));
        }
        let room = COMPLETION_BATCH - batch.len();
        let recorded = tokio::select! {
            biased;
            joined = async { writes.front_mut().expect("checked non-empty").await },
                if !writes.is_empty() => {
                writes.pop_front();
                joined
            }
            n_received = rx.recv_many(&mut batch, room), if open && room > 0 => {
                if n_received == 0 {
                    open = false;
                }
                continue;
            }
            else => break,
        };
        let Ok(recorded) = recorded else {
            // A write task panicked: its jobs stay leased in Redis, and whoever takes the
            // expired leases over settles them from the ledger.
            tracing::error!(queue = %stage.queue_name, "a ledger write failed unexpectedly; its leases will expire");
            continue;
        };
        if settle_tx.send(recorded).await.is_err() {
            return;
        }
    }
    drop(settle_tx);
    let _ = settler.await;
}

impl LedgerStage {
    /// Writes one batch to the ledger (retrying until it is committed) and returns its
    /// settlements, each following the row the ledger holds for its attempt.
    async fn record(self: Arc<Self>, batch: Vec<Completion>) -> RecordedBatch {
        let mut finished = Vec::with_capacity(batch.len());
        let mut flushes = Vec::new();
        for completion in batch {
            match completion {
                Completion::Finished {
                    attempt,
                    settlement,
                    fenced,
                } => finished.push((attempt.map(|attempt| *attempt), settlement, fenced)),
                Completion::Flush(done) => flushes.push(done),
            }
        }
        // The ledger first: a job is never acked before its row is committed.
        let recorded = loop {
            // The ledger's fence: a result is written only while its lease is confirmed, so a
            // worker cut off from Redis (whose job may be running elsewhere by now) never
            // records a second success. Checked again before every retry of the write.
            finished.retain(|(attempt, settlement, fenced)| {
                if !fenced
                    || self
                        .leases
                        .is_confirmed(&settlement.id, &settlement.token, self.margin)
                {
                    return true;
                }
                self.leases.remove(&settlement.id, &settlement.token);
                self.counters.fenced_results.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    queue = %self.queue_name, job_id = %settlement.id,
                    attempt = attempt.as_ref().map(|a| a.attempt),
                    "lease no longer confirmed; result dropped before the ledger"
                );
                false
            });
            // Sized up front: collected from a filter, the vector of these large rows would
            // grow by doubling, copying every row several times (6 % of a busy worker's time).
            let mut attempts: Vec<Attempt> = Vec::with_capacity(finished.len());
            attempts.extend(
                finished
                    .iter()
                    .filter_map(|(attempt, _, _)| attempt.clone()),
            );
            if attempts.is_empty() {
                break Vec::new();
            }
            match self.ledger.record(attempts).await {
                Ok(recorded) => {
                    lock(&self.outage).recovered();
                    self.ledger_down.store(false, Ordering::Release);
                    break recorded;
                }
                Err(error) => {
                    self.ledger_down.store(true, Ordering::Release);
                    let delay = lock(&self.outage).failed(&*error);
                    tokio::time::sleep(delay).await;
                }
            }
        };
        let mut recorded = recorded.into_iter();
        let settlements = finished
            .into_iter()
            .map(|(attempt, settlement, _)| match attempt {
                Some(attempt) => match recorded.next() {
                    Some(row) => settle_as_recorded(&self.queue_name, &attempt, &row, settlement),
                    None => settlement,
                },
                None => settlement,
            })
            .collect();
        RecordedBatch {
            settlements,
            flushes,
        }
    }
}

fn lock(outage: &Mutex<Outage>) -> std::sync::MutexGuard<'_, Outage> {
    // A poisoned lock means a panic inside `failed`/`recovered`; the outage state is still
    // usable (at worst one log line too many).
    outage
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The settlement that makes Redis agree with the ledger's `row` for `attempt`: the worker's
/// own when the row is its attempt as sent, else the row's verdict.
fn settle_as_recorded(
    queue: &str,
    attempt: &Attempt,
    row: &Recorded,
    mut settlement: Settlement,
) -> Settlement {
    if row.status == attempt.status && row.next_state == attempt.next_state {
        return settlement;
    }
    let verdict = match (row.status, row.next_state) {
        (AttemptStatus::Succeeded | AttemptStatus::Skipped, _) => Verdict::Done,
        (AttemptStatus::Failed, Some(NextState::Dead)) => Verdict::Dead,
        (AttemptStatus::Failed, _) => Verdict::Retry(Duration::ZERO),
        (AttemptStatus::Abandoned, _) => Verdict::Release,
    };
    tracing::info!(
        queue, job_id = %attempt.job_id, attempt = attempt.attempt, ledger_attempt = row.attempt,
        ledger_status = ?row.status, ?verdict,
        "the ledger holds another verdict for this attempt; settling the job to it"
    );
    if let Some(error) = &row.error {
        settlement.error.clone_from(error);
    }
    settlement.verdict = verdict;
    settlement
}

/// A batch whose ledger rows are committed, ready to settle.
struct RecordedBatch {
    settlements: Vec<Settlement>,
    /// Flush requests received with this batch: answered once it is settled.
    flushes: Vec<oneshot::Sender<()>>,
}

async fn run_settler(
    mut rx: mpsc::Receiver<RecordedBatch>,
    queue: Queue,
    leases: Arc<LeaseBook>,
    counters: Arc<BackendCounters>,
) {
    let mut redis_outage = Outage::new("redis", "settle attempts");
    while let Some(RecordedBatch {
        settlements,
        flushes,
    }) = rx.recv().await
    {
        // From here the settle reply, not a racing renewal, says whether each lease was lost.
        leases.mark_settling(
            settlements
                .iter()
                .map(|settlement| (settlement.id.as_str(), settlement.token.as_str())),
        );
        while !settlements.is_empty() {
            match queue.settle(&settlements).await {
                Ok(results) => {
                    redis_outage.recovered();
                    counters
                        .settled
                        .fetch_add(results.len() as u64, Ordering::Relaxed);
                    for ((id, settled), settlement) in results.into_iter().zip(&settlements) {
                        leases.remove(&id, &settlement.token);
                        if settled == Settled::Refused {
                            counters.refused_acks.fetch_add(1, Ordering::Relaxed);
                            // The job was taken over after its lease expired; whoever holds it
                            // now settles it from the ledger, where this result is committed.
                            tracing::warn!(
                                queue = %queue.name(), job_id = %id,
                                "ack refused: this worker's lease was stale (the job was leased again)"
                            );
                        }
                    }
                    break;
                }
                Err(error) => {
                    let delay = redis_outage.failed(&error);
                    tokio::time::sleep(delay).await;
                }
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// Gives back every lease still in `leases` once the workers have stopped (jobs still running
/// when the grace period ran out, and verdict leases not yet settled). Unstarted leases go back
/// unused. A started attempt is recorded as `abandoned` and settled to what the ledger then
/// holds: normally given back with the attempt counted (dead on the last attempt), but done or
/// dead when a result of that attempt is committed. When the ledger cannot be reached within
/// `timeout`, started and verdict leases are left to expire, so that whoever takes them over
/// asks the ledger: releasing them blind could dead-letter a job whose success is committed.
/// Finally `worker_id` is removed from the live workers.
pub async fn release_leftovers(
    queue: &Queue,
    leases: &LeaseBook,
    worker_id: &str,
    ledger: &dyn Ledger,
    timeout: Duration,
) {
    let leftovers = leases.drain();
    let now = now_ms();
    let mut unstarted = Vec::new();
    let mut abandoned = Vec::new();
    for (id, entry) in leftovers {
        let settlement = |verdict: Verdict, error: &str| Settlement {
            id: id.clone(),
            token: entry.token.clone(),
            verdict,
            error: error.to_owned(),
        };
        match (entry.purpose, entry.started_at_ms) {
            (LeasePurpose::Run, None) => unstarted.push(settlement(Verdict::Unstarted, "")),
            (purpose, started_at_ms) => {
                let job = &entry.job;
                let error = if purpose == LeasePurpose::Run {
                    "worker shut down before the attempt finished (grace period over)"
                } else {
                    "lease expired before the attempt was acknowledged"
                };
                let attempt = Attempt {
                    job_id: job.id,
                    attempt: job.attempt,
                    kind: job.kind.clone(),
                    queue: queue.name().to_string(),
                    status: AttemptStatus::Abandoned,
                    schedule: job.schedule.clone(),
                    tick_ms: job.tick_ms,
                    enqueued_at_ms: job.enqueued_at_ms,
                    started_at_ms: started_at_ms.unwrap_or(now),
                    finished_at_ms: now,
                    worker: worker_id.to_owned(),
                    args: job.args.clone(),
                    outcome: None,
                    error: Some(error.to_owned()),
                    next_state: Some(if job.attempt >= job.max_attempts {
                        NextState::Dead
                    } else {
                        NextState::Retrying
                    }),
                };
                abandoned.push((attempt, settlement(Verdict::Release, error)));
            }
        }
    }
    let mut settlements = unstarted;
    if !abandoned.is_empty() {
        let attempts: Vec<Attempt> = abandoned.iter().map(|(a, _)| a.clone()).collect();
        match tokio::time::timeout(timeout, ledger.record(attempts)).await {
            Ok(Ok(recorded)) => {
                settlements.extend(abandoned.into_iter().zip(recorded).map(
                    |((attempt, settlement), row)| {
                        settle_as_recorded(queue.name().as_str(), &attempt, &row, settlement)
                    },
                ));
            }
            Ok(Err(error)) => {
                tracing::warn!(queue = %queue.name(), error = %error, n_leases = abandoned.len(),
                    "could not record abandoned attempts; their leases will expire and be settled from the ledger");
            }
            Err(_) => {
                tracing::warn!(queue = %queue.name(), n_leases = abandoned.len(),
                    "recording abandoned attempts timed out; their leases will expire and be settled from the ledger");
            }
        }
    }
    let settled = async {
        let results = queue.settle(&settlements).await?;
        queue.release(worker_id, true, &[]).await?;
        Ok::<_, crate::queue::Error>(results)
    };
    match tokio::time::timeout(timeout, settled).await {
        Ok(Ok(results)) => {
            let n_given_back = results
                .iter()
                .filter(|(_, settled)| *settled != Settled::Refused)
                .count();
            if n_given_back > 0 {
                tracing::warn!(queue = %queue.name(), n_released = n_given_back, "released jobs still held after the grace period");
            }
        }
        Ok(Err(error)) => {
            tracing::warn!(queue = %queue.name(), error = %error, "could not release leases; they will expire");
        }
        Err(_) => {
            tracing::warn!(queue = %queue.name(), "releasing leases timed out; they will expire");
        }
    }
}
