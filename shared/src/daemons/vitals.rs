//! The process-wide heartbeat and the facts a daemon's `STATUS=` line reports.
//!
//! The main loops feed it where they make progress: the scheduler after every pass that
//! reached Postgres and Redis, a worker after every fetch round trip and lease renewal that
//! Redis answered, the API after answering its own health probe. The watchdog in
//! [`super::lifecycle`] pings systemd only while the last beat is recent, so a loop stuck on a
//! dependency that stopped answering (a paused Redis, a half-open socket) stops the pings and
//! systemd restarts the process.
//!
//! It is one static rather than a handle passed down because the loops that feed it live three
//! crates and several layers below `main` (the queue backend's fetch path runs inside
//! apalis-core's worker), and because it is the process's health, of which there is one. In a
//! process running several daemons (`upkeepctl up`) any loop's beat counts; that process has
//! no watchdog unit. Feeding it costs an atomic store.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};

/// The heartbeat and status facts of this process; see [`vitals`].
#[derive(Debug)]
pub struct Vitals {
    /// Milliseconds from [`epoch`] to the last beat, plus one (0 = never beaten).
    last_beat_ms: AtomicU64,
    /// Jobs each queue's worker holds leased, by queue name.
    leased: Mutex<BTreeMap<String, usize>>,
    /// The scheduler's last good pass and how many schedules it serves.
    last_pass: Mutex<Option<(DateTime<Utc>, usize)>>,
}

/// This process's [`Vitals`].
#[must_use]
pub fn vitals() -> &'static Vitals {
    static VITALS: Vitals = Vitals {
        last_beat_ms: AtomicU64::new(0),
        leased: Mutex::new(BTreeMap::new()),
        last_pass: Mutex::new(None),
    };
    &VITALS
}

/// The instant the heartbeat counts from (the first use).
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Vitals {
    /// Records that the main loop made progress just now.
    pub fn beat(&self) {
        let since_epoch = u64::try_from(epoch().elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.last_beat_ms.store(since_epoch + 1, Ordering::Relaxed);
    }

    /// How long ago the last beat was; `None` before the first.
    #[must_use]
    pub fn since_beat(&self) -> Option<Duration> {
        let stored = self.last_beat_ms.load(Ordering::Relaxed);
        let at = Duration::from_millis(stored.checked_sub(1)?);
        Some(epoch().elapsed().saturating_sub(at))
    }

    /// A worker's fetch or renewal round trip on `queue` succeeded and it now holds `n_leased`
    /// jobs: a beat, and the count for `STATUS=`.
    pub fn worker_round_trip(&self, queue: &str, n_leased: usize) {
        self.beat();
        // A poisoned lock only means another thread panicked mid-insert; the map is still a map.
        let mut leased = self.leased.lock().unwrap_or_else(|e| e.into_inner());
        if leased.get(queue) != Some(&n_leased) {
            leased.insert(queue.to_owned(), n_leased);
        }
    }

    /// The scheduler finished a good pass at `at` over `n_schedules` enabled schedules: a
    /// beat, and the time for `STATUS=`.
    pub fn scheduler_pass(&self, at: DateTime<Utc>, n_schedules: usize) {
        self.beat();
        *self.last_pass.lock().unwrap_or_else(|e| e.into_inner()) = Some((at, n_schedules));
    }

    /// What the loops report, for a `STATUS=` line: jobs leased per queue and the scheduler's
    /// last pass, whichever this process has.
    #[must_use]
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        let leased = self.leased.lock().unwrap_or_else(|e| e.into_inner());
        if !leased.is_empty() {
            let per_queue: Vec<String> = leased.iter().map(|(q, n)| format!("{q}={n}")).collect();
            parts.push(format!("jobs leased: {}", per_queue.join(" ")));
        }
        drop(leased);
        if let Some((at, n_schedules)) = *self.last_pass.lock().unwrap_or_else(|e| e.into_inner()) {
            parts.push(format!(
                "{n_schedules} schedules, last tick pass {}",
                at.to_rfc3339_opts(SecondsFormat::Secs, true)
            ));
        }
        parts.join("; ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_beat_resets_the_age_and_the_summary_names_queues_and_passes() {
        let vitals = Vitals {
            last_beat_ms: AtomicU64::new(0),
            leased: Mutex::new(BTreeMap::new()),
            last_pass: Mutex::new(None),
        };
        assert_eq!(vitals.since_beat(), None);
        vitals.worker_round_trip("backups", 2);
        assert!(
            vitals
                .since_beat()
                .is_some_and(|age| age < Duration::from_secs(1))
        );
        let at = DateTime::parse_from_rfc3339("2026-11-30T02:00:00Z")
            .expect("a valid time")
            .with_timezone(&Utc);
        vitals.scheduler_pass(at, 12);
        assert_eq!(
            vitals.summary(),
            "jobs leased: backups=2; 12 schedules, last tick pass 2026-11-30T02:00:00Z"
        );
    }
}
