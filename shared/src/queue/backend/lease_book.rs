//! [`LeaseBook`]: the leases one worker holds, and when it last knew each was still its own.
//!
//! Shared by the backend (which adds what it fetches), the renewer (which extends and drops),
//! the completer (which fences results and removes what it settled) and the runtime (which
//! gives back what is left at shutdown). Every entry is keyed by job id *and* checked against
//! its fencing token on removal: a late reply about an old lease never drops a newer lease of
//! the same job.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::job::Job;

/// The leases one worker holds.
#[derive(Debug, Default)]
pub struct LeaseBook {
    // A std mutex: it is never held across an await, and every critical section is a map
    // operation.
    entries: Mutex<HashMap<String, LeaseEntry>>,
}

/// What a lease is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeasePurpose {
    /// Running an attempt of the job.
    Run,
    /// Settling an expired lease taken over from another worker to what the ledger holds for
    /// its attempt (see `fetch.lua`); no handler runs.
    Verdict,
}

/// One held lease.
#[derive(Debug, Clone)]
pub struct LeaseEntry {
    /// The fencing token.
    pub token: String,
    /// What the lease is for.
    pub purpose: LeasePurpose,
    /// Unix ms when the handler started, `None` while the job waits in the buffer (or, for a
    /// verdict lease, when the lost attempt started, if known).
    pub started_at_ms: Option<i64>,
    /// The job, for recording an abandoned attempt.
    pub job: Arc<Job>,
    /// Until when this worker knows the lease is still its own: the local monotonic instant
    /// at which the fetch or the last successful renewal was *sent*, plus the lease length.
    /// Redis measured the real deadline from a later instant, so this is conservative
    /// whatever the wall clocks say. A result is recorded in the ledger only while this is
    /// comfortably in the future (see [`LeaseBook::is_confirmed`]): that is the ledger's fence.
    pub confirmed_until: Instant,
}

impl LeaseBook {
    pub(super) fn insert(&self, id: String, entry: LeaseEntry) {
        self.lock().insert(id, entry);
    }

    /// Marks the attempt of lease `(id, token)` as started at `at_ms`.
    pub(super) fn mark_started(&self, id: &str, token: &str, at_ms: i64) {
        if let Some(entry) = self.lock().get_mut(id)
            && entry.token == token
        {
            entry.started_at_ms = Some(at_ms);
        }
    }

    /// Removes lease `(id, token)`; a newer lease of the same job is left alone.
    pub(super) fn remove(&self, id: &str, token: &str) -> Option<LeaseEntry> {
        let mut entries = self.lock();
        if entries.get(id).is_some_and(|entry| entry.token == token) {
            entries.remove(id)
        } else {
            None
        }
    }

    /// Extends the confirmed lifetime of the leases `(id, token)` (a renewal Redis accepted).
    pub(super) fn confirm(&self, leases: &[(String, String)], until: Instant) {
        let mut entries = self.lock();
        for (id, token) in leases {
            if let Some(entry) = entries.get_mut(id)
                && entry.token == *token
            {
                entry.confirmed_until = entry.confirmed_until.max(until);
            }
        }
    }

    /// Whether lease `(id, token)` is still held and confirmed for at least `margin` more:
    /// only then may an attempt start, or its result be written to the ledger. Past that point
    /// another worker may already own the job (a partition, a Redis outage, a long pause), and
    /// this worker behaves as if it had crashed: its result is dropped, and whoever takes over
    /// the lease settles the attempt from the ledger.
    #[must_use]
    pub fn is_confirmed(&self, id: &str, token: &str, margin: Duration) -> bool {
        self.lock().get(id).is_some_and(|entry| {
            entry.token == token && entry.confirmed_until > Instant::now() + margin
        })
    }

    pub(super) fn tokens(&self) -> Vec<(String, String)> {
        self.lock()
            .iter()
            .map(|(id, entry)| (id.clone(), entry.token.clone()))
            .collect()
    }

    /// Takes every lease still held (for release at shutdown).
    pub fn drain(&self) -> Vec<(String, LeaseEntry)> {
        self.lock().drain().collect()
    }

    /// How many leases are held.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no lease is held.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, LeaseEntry>> {
        // A poisoned lock means a panic while holding it; the map is still consistent because
        // every critical section is a single map call.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
