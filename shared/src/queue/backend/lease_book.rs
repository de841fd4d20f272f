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
    entries: Mutex<Entries>,
}

/// Keyed by job id. foldhash, randomly seeded per process like std's SipHash: a job is looked
/// up about seven times between its fetch and its settle, and SipHash over a 36-byte id was
/// 4 % of a worker's instructions (callgrind, `upkeepctl bench`).
type Entries = HashMap<String, LeaseEntry, foldhash::quality::RandomState>;

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
    /// Set once the attempt's settlement is on its way to Redis (its result, if any, is
    /// committed). From then on the settle reply says whether the lease was still this
    /// worker's: a renewal that runs after the ack landed finds the lease gone either way.
    pub(super) settling: bool,
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

    /// Marks the leases `(id, token)` as being settled (see `LeaseEntry::settling`).
    pub(super) fn mark_settling<'a>(&self, leases: impl IntoIterator<Item = (&'a str, &'a str)>) {
        let mut entries = self.lock();
        for (id, token) in leases {
            if let Some(entry) = entries.get_mut(id)
                && entry.token == token
            {
                entry.settling = true;
            }
        }
    }

    /// Removes lease `(id, token)`, which a renewal found lost, unless it is being settled: then
    /// the renewal may have run after this worker's own ack, and the settle reply decides
    /// (a refused ack is counted there, an applied one is no loss).
    pub(super) fn remove_lost(&self, id: &str, token: &str) -> Option<LeaseEntry> {
        let mut entries = self.lock();
        if entries
            .get(id)
            .is_some_and(|entry| entry.token == token && !entry.settling)
        {
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A poisoned lock means a panic while holding it; the map is still consistent because
        // every critical section is a single map call.
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::{JobId, QueueName};

    fn entry(token: &str) -> LeaseEntry {
        LeaseEntry {
            token: token.to_owned(),
            purpose: LeasePurpose::Run,
            started_at_ms: Some(0),
            job: Arc::new(Job {
                id: JobId::new(),
                kind: "test.noop".to_owned(),
                queue: QueueName::parse("q").expect("a valid queue name"),
                args: serde_json::Value::Null,
                payload_error: None,
                attempt: 1,
                max_attempts: 3,
                enqueued_at_ms: 0,
                schedule: None,
                tick_ms: None,
            }),
            confirmed_until: Instant::now(),
            settling: false,
        }
    }

    #[test]
    fn a_lease_found_lost_by_a_renewal_is_dropped_unless_its_settlement_is_on_its_way() {
        let book = LeaseBook::default();
        book.insert("running".to_owned(), entry("t1"));
        book.insert("acked".to_owned(), entry("t2"));
        book.mark_settling([("acked", "t2"), ("running", "stale")]);

        assert!(book.remove_lost("running", "t1").is_some(), "really lost");
        assert!(
            book.remove_lost("acked", "t2").is_none(),
            "the settle reply decides"
        );
        assert!(
            book.remove("acked", "t2").is_some(),
            "the settler removes it"
        );
        assert!(book.is_empty());
    }
}
