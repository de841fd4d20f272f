//! Every Redis key name of a queue, in one place.
//!
//! Layout: `<prefix>:{<queue>}:<suffix>`. The braces make `<queue>` the Redis Cluster hash tag,
//! so every key of one queue lives in one slot and every script touches only that slot. No key
//! is global: two queues never share a key, and two prefixes never see each other's data.
//! Only this module spells key names; scripts receive them as `KEYS` or build per-job keys from
//! [`QueueKeys::base`].

use crate::job::QueueName;

/// The key names of one queue under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueKeys {
    /// `<prefix>:{<queue>}:`; per-job keys are `base + "job:" + id` and `base + "idem:" + key`.
    pub base: String,
    /// List of ready job ids: LPUSH on enqueue, RPOP on fetch (FIFO).
    pub ready: String,
    /// Zset of delayed job ids scored by run-at (unix ms).
    pub delayed: String,
    /// Zset of retrying job ids scored by retry-at (unix ms).
    pub retry: String,
    /// Zset of leased job ids scored by lease deadline (unix ms).
    pub leases: String,
    /// Zset of dead job ids scored by time of death (unix ms).
    pub dead: String,
    /// Hash of monotonic counters: enqueued, succeeded, failed, retried, dead, reclaimed.
    pub stats: String,
    /// Counter that issues fencing tokens.
    pub fence: String,
    /// Zset of worker ids scored by last sign of life (unix ms).
    pub workers: String,
    /// List of wake-up tokens that idle workers block on.
    pub wake: String,
    /// Hash job id → fencing token of its current lease (only while leased).
    pub tokens: String,
    /// Hash job id → `worker|leased_at_ms` of its current lease (only while leased).
    pub holders: String,
    /// Hash job id → attempts so far (from first lease until dead, or deleted after retention).
    pub attempts: String,
    /// Zset of completed job ids scored by completion time (unix ms), deleted after retention.
    pub done: String,
}

impl QueueKeys {
    /// Builds the key names. `prefix` is validated by the config (no `{`, `}` or `:`), and
    /// `QueueName` cannot contain them either, so the hash tag is always exactly the queue.
    #[must_use]
    pub fn new(prefix: &str, queue: &QueueName) -> Self {
        let base = format!("{prefix}:{{{queue}}}:");
        let key = |suffix: &str| format!("{base}{suffix}");
        Self {
            ready: key("ready"),
            delayed: key("delayed"),
            retry: key("retry"),
            leases: key("leases"),
            dead: key("dead"),
            stats: key("stats"),
            fence: key("fence"),
            workers: key("workers"),
            wake: key("wake"),
            tokens: key("tokens"),
            holders: key("holders"),
            attempts: key("attempts"),
            done: key("done"),
            base,
        }
    }

    /// The hash of one job.
    #[must_use]
    pub fn job(&self, id: &str) -> String {
        format!("{}job:{id}", self.base)
    }

    /// The idempotency key record.
    #[must_use]
    pub fn idempotency(&self, key: &str) -> String {
        format!("{}idem:{key}", self.base)
    }

    /// A pattern matching every key of this queue (for tests and operator clean-up only).
    #[must_use]
    pub fn pattern(&self) -> String {
        format!("{}*", self.base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_of_a_queue_shares_the_queue_hash_tag() {
        let keys = QueueKeys::new("upkeep", &QueueName::parse("reports").unwrap());
        for key in [
            &keys.ready,
            &keys.delayed,
            &keys.retry,
            &keys.leases,
            &keys.dead,
            &keys.stats,
            &keys.fence,
            &keys.workers,
            &keys.wake,
            &keys.tokens,
            &keys.holders,
            &keys.attempts,
            &keys.done,
        ] {
            assert!(key.starts_with("upkeep:{reports}:"), "{key}");
        }
        assert_eq!(keys.job("abc"), "upkeep:{reports}:job:abc");
        assert_eq!(keys.idempotency("k"), "upkeep:{reports}:idem:k");
    }
}
