//! Request coalescing for the read answers that cost queries: the checklists and the queue
//! stats.
//!
//! Concurrent callers asking for the same key share one computation, and every caller gets an
//! answer whose computation *started after the caller arrived*. So a read that follows an
//! acknowledgement, a retry or an enqueue sees it exactly as without coalescing, while fifty
//! dashboards and a Prometheus scrape asking at once cost one computation in flight per key and
//! one queued behind it, not fifty.
//!
//! Failures are not shared beyond the callers waiting on them: the next caller computes again.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// How many idle keys are kept before unused ones are forgotten (a key per period and date).
const MAX_IDLE_KEYS: usize = 64;

/// Shares computations of `V` per key `K` among concurrent callers.
pub struct Coalescer<K, V> {
    slots: Mutex<HashMap<K, Arc<Slot<V>>>>,
}

struct Slot<V> {
    /// How many computations have started on this key; the next one gets `started + 1`.
    started: AtomicU64,
    /// Held by the computation in flight; holds the newest answer and its computation's number.
    newest: tokio::sync::Mutex<Option<(u64, V)>>,
}

impl<K, V> Default for Coalescer<K, V> {
    fn default() -> Self {
        Self {
            slots: Mutex::new(HashMap::new()),
        }
    }
}

impl<K, V> std::fmt::Debug for Coalescer<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescer").finish_non_exhaustive()
    }
}

impl<K: Eq + Hash + Clone, V: Clone> Coalescer<K, V> {
    /// The answer for `key`: a copy of one computed by another caller if that computation
    /// started after this call, else the result of `compute` run now (one at a time per key).
    ///
    /// # Errors
    /// What `compute` returned, when this call ran it.
    pub async fn get<E, F, Fut>(&self, key: K, compute: F) -> Result<V, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let slot = self.slot(key);
        // Any computation numbered above what has started so far starts after this arrival.
        let wanted = slot.started.load(Ordering::SeqCst) + 1;
        let mut newest = slot.newest.lock().await;
        if let Some((number, value)) = newest.as_ref()
            && *number >= wanted
        {
            return Ok(value.clone());
        }
        let number = slot.started.fetch_add(1, Ordering::SeqCst) + 1;
        let result = compute().await;
        if let Ok(value) = &result {
            *newest = Some((number, value.clone()));
        }
        result
    }

    fn slot(&self, key: K) -> Arc<Slot<V>> {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !slots.contains_key(&key) && slots.len() >= MAX_IDLE_KEYS {
            // Forget the keys nobody is using (only the map holds them).
            slots.retain(|_, slot| Arc::strong_count(slot) > 1);
        }
        Arc::clone(slots.entry(key).or_insert_with(|| {
            Arc::new(Slot {
                started: AtomicU64::new(0),
                newest: tokio::sync::Mutex::new(None),
            })
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    /// A computation that counts its runs, takes 50 ms, and answers with its run number.
    async fn counted(runs: &AtomicUsize) -> Result<usize, String> {
        let run = runs.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok(run)
    }

    #[tokio::test(start_paused = true)]
    async fn callers_arriving_during_a_computation_share_the_next_one() {
        let coalescer = Arc::new(Coalescer::<&str, usize>::default());
        let runs = Arc::new(AtomicUsize::new(0));
        let first = {
            let (coalescer, runs) = (Arc::clone(&coalescer), Arc::clone(&runs));
            tokio::spawn(async move { coalescer.get("k", || counted(&runs)).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        // Twenty callers arrive while run 1 is in flight: none may take run 1's answer (it
        // started before them); all share run 2.
        let late: Vec<_> = (0..20)
            .map(|_| {
                let (coalescer, runs) = (Arc::clone(&coalescer), Arc::clone(&runs));
                tokio::spawn(async move { coalescer.get("k", || counted(&runs)).await })
            })
            .collect();
        assert_eq!(first.await.unwrap(), Ok(1));
        for caller in late {
            assert_eq!(caller.await.unwrap(), Ok(2));
        }
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        // A caller arriving after everything finished gets a fresh computation.
        assert_eq!(coalescer.get("k", || counted(&runs)).await, Ok(3));
    }

    #[tokio::test(start_paused = true)]
    async fn keys_do_not_share_and_failures_are_not_kept() {
        let coalescer = Coalescer::<u32, usize>::default();
        let runs = AtomicUsize::new(0);
        assert_eq!(coalescer.get(1, || counted(&runs)).await, Ok(1));
        assert_eq!(coalescer.get(2, || counted(&runs)).await, Ok(2));
        let failed: Result<usize, String> = coalescer.get(1, || async { Err("down".into()) }).await;
        assert_eq!(failed, Err("down".to_owned()));
        assert_eq!(coalescer.get(1, || counted(&runs)).await, Ok(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_cancelled_computation_leaves_the_key_usable() {
        let coalescer = Coalescer::<u8, usize>::default();
        let runs = AtomicUsize::new(0);
        let cancelled = tokio::time::timeout(
            Duration::from_millis(10),
            coalescer.get(0, || counted(&runs)),
        )
        .await;
        assert!(cancelled.is_err());
        assert_eq!(coalescer.get(0, || counted(&runs)).await, Ok(2));
    }

    #[test]
    fn idle_keys_are_forgotten_past_the_bound() {
        let coalescer = Coalescer::<usize, usize>::default();
        for key in 0..(MAX_IDLE_KEYS * 3) {
            drop(coalescer.slot(key));
        }
        assert!(coalescer.slots.lock().unwrap().len() <= MAX_IDLE_KEYS);
    }
}
