//! Waiting in tests: [`eventually`] polls a probe until it answers, and [`unix_now`] reads
//! the clock the ledger's timestamps are compared with. One copy for the queue, system and
//! chaos tests.

use std::time::{Duration, Instant};

/// Calls `probe` until it returns `Some`, and returns that value: every 10 ms for the first
/// second (so latency tests see a change promptly), then every 50 ms (so probes that start a
/// process or open a connection do not load the machine).
///
/// # Panics
/// When `timeout` passes first; the message says what was awaited.
pub async fn eventually<T>(
    what: &str,
    timeout: Duration,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    let started = Instant::now();
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            started.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        let pause = if started.elapsed() < Duration::from_secs(1) {
            Duration::from_millis(10)
        } else {
            Duration::from_millis(50)
        };
        tokio::time::sleep(pause).await;
    }
}

/// Seconds since the Unix epoch, comparable with the ledger's timestamps (same machine).
///
/// # Panics
/// When the clock is before 1970.
#[must_use]
pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs_f64()
}
