//! [`AttemptStats`]: what a worker did on its queue since the last summary line, kept in
//! lock-free counters and a small log-scale histogram, and logged at info every
//! `summary_interval` ([`run_summarizer`]).
//!
//! This is what lets a successful attempt be logged at debug only: an operator running at
//! `info` still sees every queue's throughput, failures and latency, one line per interval and
//! worker instead of one per job. The ledger (`job_runs`) stays the complete record of every
//! attempt; nothing here is persisted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Buckets of the duration histogram: four per power of two of microseconds, which covers up
/// to 2^33 µs (about 2.4 hours) with a relative error under 25%.
const N_BUCKETS: usize = 4 * 33;

/// Counters of one worker's attempts on one queue. Every method is a few relaxed atomic
/// operations, so the settle path pays nothing measurable for them.
#[derive(Debug)]
pub(super) struct AttemptStats {
    succeeded: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    dead: AtomicU64,
    skipped: AtomicU64,
    max_us: AtomicU64,
    buckets: [AtomicU64; N_BUCKETS],
    fetches: AtomicU64,
    leased: AtomicU64,
    fetch_wait_us: AtomicU64,
    /// When the counters were created, and the µs since then at which they were last taken:
    /// the interval a line covers (the last one, at shutdown, is shorter).
    created: Instant,
    taken_at_us: AtomicU64,
}

/// How an attempt ended, as the summary counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ended {
    /// The handler succeeded.
    Succeeded,
    /// The handler failed and the job will be retried.
    Retried,
    /// The handler failed and the job is a dead letter.
    Dead,
    /// Not run: the ledger already had its success, or the handler skipped it.
    Skipped,
}

/// One interval's figures, taken (and reset) by [`AttemptStats::take`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Summary {
    pub(super) succeeded: u64,
    pub(super) failed: u64,
    pub(super) retried: u64,
    pub(super) dead: u64,
    pub(super) skipped: u64,
    /// Median attempt duration (the upper bound of its histogram bucket), ms.
    pub(super) p50_ms: f64,
    /// 99th percentile, likewise, ms.
    pub(super) p99_ms: f64,
    /// Longest attempt, ms.
    pub(super) max_ms: f64,
    /// Fetches that came back (lease script calls, drained ones included).
    pub(super) fetches: u64,
    /// Jobs those fetches leased.
    pub(super) leased: u64,
    /// How long the worker had nothing to hand out while a fetch was on its way, s: the time
    /// its free slots waited on Redis. Near the interval's length, the worker is bound by its
    /// fetches (Redis, the network); near zero, by its handlers or by an empty queue.
    pub(super) fetch_wait_s: f64,
}

impl Summary {
    /// Attempts that ended in the interval, whatever their result.
    pub(super) fn processed(&self) -> u64 {
        self.succeeded + self.failed + self.skipped
    }
}

impl Default for AttemptStats {
    fn default() -> Self {
        Self {
            succeeded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            dead: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            fetches: AtomicU64::new(0),
            leased: AtomicU64::new(0),
            fetch_wait_us: AtomicU64::new(0),
            created: Instant::now(),
            taken_at_us: AtomicU64::new(0),
        }
    }
}

impl AttemptStats {
    /// Counts one attempt that ran for `elapsed` (`None` for a job skipped before it ran,
    /// which has no duration to count).
    pub(super) fn record(&self, ended: Ended, elapsed: Option<Duration>) {
        let counter = match ended {
            Ended::Succeeded => &self.succeeded,
            Ended::Retried => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                &self.retried
            }
            Ended::Dead => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                &self.dead
            }
            Ended::Skipped => &self.skipped,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let Some(elapsed) = elapsed else { return };
        let us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    /// Counts one fetch that came back with `leased` jobs.
    pub(super) fn record_fetch(&self, leased: usize) {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        self.leased.fetch_add(leased as u64, Ordering::Relaxed);
    }

    /// Counts `waited` during which the worker had nothing to hand out while a fetch was on
    /// its way.
    pub(super) fn record_fetch_wait(&self, waited: Duration) {
        let us = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
        self.fetch_wait_us.fetch_add(us, Ordering::Relaxed);
    }

    /// The figures since the last call, resetting them. Each attempt is counted in exactly one
    /// interval (every counter is swapped, not read then cleared), though an attempt recorded
    /// during the call may have its count in one interval and its duration in the next.
    pub(super) fn take(&self) -> Summary {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|bucket| bucket.swap(0, Ordering::Relaxed))
            .collect();
        let n_timed: u64 = counts.iter().sum();
        let quantile = |q: f64| {
            if n_timed == 0 {
                return 0.0;
            }
            // The rank of the q-quantile, 1-based: the smallest bucket whose cumulative count
            // reaches it.
            let rank = ((n_timed as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (idx, count) in counts.iter().enumerate() {
                seen += count;
                if seen >= rank {
                    return bucket_upper_us(idx) as f64 / 1000.0;
                }
            }
            bucket_upper_us(N_BUCKETS - 1) as f64 / 1000.0
        };
        let max_ms = self.max_us.swap(0, Ordering::Relaxed) as f64 / 1000.0;
        Summary {
            succeeded: self.succeeded.swap(0, Ordering::Relaxed),
            failed: self.failed.swap(0, Ordering::Relaxed),
            retried: self.retried.swap(0, Ordering::Relaxed),
            dead: self.dead.swap(0, Ordering::Relaxed),
            skipped: self.skipped.swap(0, Ordering::Relaxed),
            // A quantile never exceeds the maximum actually seen.
            p50_ms: quantile(0.50).min(max_ms),
            p99_ms: quantile(0.99).min(max_ms),
            max_ms,
            fetches: self.fetches.swap(0, Ordering::Relaxed),
            leased: self.leased.swap(0, Ordering::Relaxed),
            fetch_wait_s: self.fetch_wait_us.swap(0, Ordering::Relaxed) as f64 / 1e6,
        }
    }

    /// Logs the figures since the last call at info, unless nothing ran and nothing was leased.
    pub(super) fn log(&self, queue: &str, worker_id: &str) {
        let now_us = u64::try_from(self.created.elapsed().as_micros()).unwrap_or(u64::MAX);
        let since_us = self.taken_at_us.swap(now_us, Ordering::Relaxed);
        let summary = self.take();
        if summary.processed() == 0 && summary.leased == 0 {
            return;
        }
        tracing::info!(
            queue,
            worker_id,
            interval_s = Duration::from_micros(now_us.saturating_sub(since_us)).as_secs_f64(),
            processed = summary.processed(),
            succeeded = summary.succeeded,
            failed = summary.failed,
            retried = summary.retried,
            dead = summary.dead,
            skipped = summary.skipped,
            p50_ms = summary.p50_ms,
            p99_ms = summary.p99_ms,
            max_ms = summary.max_ms,
            fetches = summary.fetches,
            leased = summary.leased,
            fetch_wait_s = summary.fetch_wait_s,
            "queue summary"
        );
    }
}

/// Logs `stats` every `interval` until the task is aborted (the backend aborts it when it is
/// dropped, after logging the last partial interval itself).
pub(super) async fn run_summarizer(
    stats: std::sync::Arc<AttemptStats>,
    queue: String,
    worker_id: String,
    interval: Duration,
) {
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        stats.log(&queue, &worker_id);
    }
}

/// The histogram bucket of a duration in µs: values 0-3 have a bucket each, then four buckets
/// per power of two.
fn bucket_of(us: u64) -> usize {
    if us < 4 {
        return us as usize;
    }
    let exponent = 63 - us.leading_zeros() as usize; // floor(log2(us)), at least 2
    let sub = ((us >> (exponent - 2)) & 3) as usize;
    (4 * (exponent - 1) + sub).min(N_BUCKETS - 1)
}

/// The largest duration (µs) that falls in bucket `idx`.
fn bucket_upper_us(idx: usize) -> u64 {
    if idx < 4 {
        return idx as u64;
    }
    let exponent = idx / 4 + 1;
    let sub = (idx % 4) as u64;
    ((4 + sub) << (exponent - 2)) + (1 << (exponent - 2)) - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_duration_falls_in_a_bucket_whose_bounds_hold_it() {
        let mut previous_upper = None;
        for idx in 0..N_BUCKETS {
            let upper = bucket_upper_us(idx);
            assert_eq!(bucket_of(upper), idx, "upper bound of bucket {idx}");
            if let Some(previous) = previous_upper {
                assert_eq!(bucket_of(previous + 1), idx, "lower bound of bucket {idx}");
            }
            previous_upper = Some(upper);
        }
        for us in [0, 1, 5, 17, 999, 1_000, 123_456, 3_600_000_000] {
            let idx = bucket_of(us);
            assert!(bucket_upper_us(idx) >= us);
            // Within 25% above the value once past the exact buckets.
            assert!(
                bucket_upper_us(idx) as f64 <= (us as f64 * 1.25).max(3.0),
                "{us}"
            );
        }
    }

    #[test]
    fn a_summary_counts_each_attempt_once_and_reads_quantiles_from_the_histogram() {
        let stats = AttemptStats::default();
        for _ in 0..98 {
            stats.record(Ended::Succeeded, Some(Duration::from_micros(1_000)));
        }
        stats.record(Ended::Retried, Some(Duration::from_millis(200)));
        stats.record(Ended::Dead, Some(Duration::from_millis(400)));
        stats.record(Ended::Skipped, None);
        stats.record_fetch(64);
        stats.record_fetch(0);
        stats.record_fetch_wait(Duration::from_millis(1_500));
        stats.record_fetch_wait(Duration::from_micros(250));
        let summary = stats.take();
        assert_eq!((summary.fetches, summary.leased), (2, 64));
        assert!((summary.fetch_wait_s - 1.50025).abs() < 1e-9, "{summary:?}");
        assert_eq!(
            (
                summary.processed(),
                summary.succeeded,
                summary.failed,
                summary.retried,
                summary.dead,
                summary.skipped
            ),
            (101, 98, 2, 1, 1, 1)
        );
        assert!((1.0..=1.25).contains(&summary.p50_ms), "{summary:?}");
        assert!((200.0..=250.0).contains(&summary.p99_ms), "{summary:?}");
        assert!((summary.max_ms - 400.0).abs() < f64::EPSILON, "{summary:?}");
        let next = stats.take();
        assert_eq!(
            (
                next.processed(),
                next.fetches,
                next.leased,
                next.fetch_wait_s
            ),
            (0, 0, 0, 0.0),
            "take resets the counters"
        );
    }
}
