//! [`Clock`]: where the scheduler gets "now", so that tests can choose it.
//!
//! The scheduler never calls `Utc::now()` directly: it holds a `Clock`. [`SystemClock`] reads the
//! system clock (the only place in this module that does); [`ManualClock`] is set by tests.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::spec::add_saturating;

/// A source of the current instant.
pub trait Clock: Send + Sync {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

/// A clock that only moves when told to; clones share the same time.
///
/// Give one clone to the code under test and keep another to `set` or `advance` it.
#[derive(Debug, Clone)]
pub struct ManualClock {
    // A std mutex: it is held only to copy or replace a `DateTime`, never across an `.await`.
    now: Arc<Mutex<DateTime<Utc>>>,
}

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

impl ManualClock {
    /// A clock that reads `start` until moved.
    #[must_use]
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            now: Arc::new(Mutex::new(start)),
        }
    }

    /// Moves the clock (and every clone) to `instant`, forwards or backwards.
    pub fn set(&self, instant: DateTime<Utc>) {
        *self.lock() = instant;
    }

    /// Moves the clock (and every clone) forward by `by`, stopping at the largest instant.
    pub fn advance(&self, by: Duration) {
        let mut now = self.lock();
        *now = add_saturating(*now, by);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DateTime<Utc>> {
        // A poisoned lock still holds a whole `DateTime` (assignment cannot be half done), so
        // the value is safe to keep using.
        self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.lock()
    }
}

impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now(&self) -> DateTime<Utc> {
        (**self).now()
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn a_manual_clock_reads_what_it_was_set_to() {
        let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let clock = ManualClock::new(start);
        assert_eq!(clock.now(), start);
        let later = Utc.with_ymd_and_hms(2026, 6, 1, 12, 0, 0).unwrap();
        clock.set(later);
        assert_eq!(clock.now(), later);
    }

    #[test]
    fn clones_of_a_manual_clock_share_its_time() {
        let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let clock = ManualClock::new(start);
        let held_by_the_scheduler: Arc<dyn Clock> = Arc::new(clock.clone());
        clock.advance(Duration::from_secs(90));
        assert_eq!(
            held_by_the_scheduler.now(),
            Utc.with_ymd_and_hms(2026, 1, 1, 0, 1, 30).unwrap()
        );
    }

    #[test]
    fn advancing_past_the_end_of_time_saturates() {
        let clock = ManualClock::new(DateTime::<Utc>::MAX_UTC);
        clock.advance(Duration::from_secs(1));
        assert_eq!(clock.now(), DateTime::<Utc>::MAX_UTC);
    }

    #[test]
    fn the_system_clock_moves_forward() {
        let first = SystemClock.now();
        let second = SystemClock.now();
        assert!(second >= first);
    }
}
