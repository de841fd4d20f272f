//! [`Outage`]: how every retrying loop reports a dependency that stopped answering.
//!
//! One type for every loop that retries a dependency (the worker's fetch, settle, renew and
//! ledger loops, the reconciler, the ledger pruner, migrations at start, and the scheduler's
//! loop): it logs once when an outage starts and once when it ends, never per failure, and
//! paces retries with capped exponential backoff and jitter, so operators can grep one
//! wording (`dependency unavailable`, `dependency available again`) across every binary, with
//! the `dependency` and `action` fields saying which loop.

use std::time::{Duration, Instant};

/// A dependency outage as one loop sees it. Call [`Outage::failed`] on every failure (it
/// returns how long to wait before the next try) and [`Outage::recovered`] on every success.
#[derive(Debug)]
pub struct Outage {
    dependency: &'static str,
    action: &'static str,
    since: Option<Instant>,
    failures: u32,
    floor: Duration,
    ceiling: Duration,
}

impl Outage {
    /// An outage tracker for `action` (what the loop does, e.g. `"record attempts"`) on
    /// `dependency` (`"redis"`, `"postgres"`), retrying after 50 ms to 5 s.
    #[must_use]
    pub fn new(dependency: &'static str, action: &'static str) -> Self {
        Self {
            dependency,
            action,
            since: None,
            failures: 0,
            floor: Duration::from_millis(50),
            ceiling: Duration::from_secs(5),
        }
    }

    /// The same with another cap on the delay between tries (a loop that already paces itself
    /// with an interval passes that interval).
    #[must_use]
    pub fn with_max_delay(mut self, ceiling: Duration) -> Self {
        self.ceiling = ceiling.max(self.floor);
        self
    }

    /// Whether an outage is running (a failure since the last success).
    #[must_use]
    pub fn is_down(&self) -> bool {
        self.since.is_some()
    }

    /// Records a failure; returns how long to wait before the next try: a draw from the
    /// upper half of a ceiling that doubles from 100 ms up to the cap.
    pub fn failed(&mut self, error: &dyn std::error::Error) -> Duration {
        if self.since.is_none() {
            self.since = Some(Instant::now());
            tracing::warn!(
                dependency = self.dependency, action = self.action, error = %error,
                error.chain = ?ErrorChain(error), "dependency unavailable; retrying with backoff"
            );
        }
        self.failures = self.failures.saturating_add(1);
        let ceiling = self
            .floor
            .saturating_mul(1 << self.failures.min(16))
            .min(self.ceiling);
        let half = ceiling / 2;
        let millis = u64::try_from(half.as_millis()).unwrap_or(u64::MAX);
        half + Duration::from_millis(rand::random_range(0..=millis))
    }

    /// Records a success, logging the end of an outage if one was running.
    pub fn recovered(&mut self) {
        if let Some(since) = self.since.take() {
            tracing::info!(
                dependency = self.dependency,
                action = self.action,
                outage_ms = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX),
                failures = self.failures,
                "dependency available again"
            );
            self.failures = 0;
        }
    }
}

/// Formats an error and its sources as a list, for the `error.chain` field.
struct ErrorChain<'a>(&'a dyn std::error::Error);

impl std::fmt::Debug for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut list = f.debug_list();
        let mut current: Option<&dyn std::error::Error> = Some(self.0);
        while let Some(error) = current {
            list.entry(&format_args!("{error}"));
            current = error.source();
        }
        list.finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Captures what the `tracing` macros write while `run` runs.
    fn logs_of(run: impl FnOnce()) -> String {
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().expect("buffer").extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, run);
        let bytes = buffer.0.lock().expect("buffer").clone();
        String::from_utf8(bytes).expect("utf-8 logs")
    }

    fn refused() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused")
    }

    #[test]
    fn an_outage_is_logged_once_when_it_starts_and_once_when_it_ends() {
        let mut outage = Outage::new("redis", "fetch");
        let logs = logs_of(|| {
            for _ in 0..50 {
                outage.failed(&refused());
            }
            outage.recovered();
            outage.recovered();
        });
        assert_eq!(
            logs.matches("dependency unavailable").count(),
            1,
            "one warning for 50 failures:\n{logs}"
        );
        assert_eq!(
            logs.matches("dependency available again").count(),
            1,
            "{logs}"
        );
        assert!(logs.contains("failures=50"), "{logs}");
        assert!(
            logs.contains("connection refused"),
            "the cause is logged:\n{logs}"
        );
    }

    #[test]
    fn outage_retries_back_off_exponentially_up_to_5_s_and_start_over_after_recovery() {
        let mut outage = Outage::new("postgres", "record attempts");
        let delays: Vec<Duration> = (0..12).map(|_| outage.failed(&refused())).collect();
        for (i, delay) in delays.iter().enumerate() {
            // The ceiling doubles from 100 ms and stops at 5 s; the delay is in its upper half.
            let ceiling = Duration::from_millis(50 << (i + 1).min(7)).min(Duration::from_secs(5));
            assert!(
                *delay >= ceiling / 2 && *delay <= ceiling,
                "failure {}: {delay:?} not within {:?}..={ceiling:?}",
                i + 1,
                ceiling / 2
            );
        }
        assert!(delays[11] >= Duration::from_millis(2500), "{delays:?}");

        outage.recovered();
        let first_again = outage.failed(&refused());
        assert!(
            first_again <= Duration::from_millis(100),
            "a new outage starts from the bottom: {first_again:?}"
        );
    }
}
