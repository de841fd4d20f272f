//! Redis's memory policy: upkeep needs `maxmemory-policy noeviction`.
//!
//! Under any other policy a Redis at its `maxmemory` deletes keys to make room, and a deleted
//! job hash is a lost job (reconciliation may find it later, see [`crate::reconcile`], but only
//! if the ledger knew it). Under `noeviction` Redis refuses writes instead, and an enqueue fails
//! with [`Error::OutOfMemory`](super::Error::OutOfMemory): the producer learns that nothing was
//! enqueued. Every binary calls [`check_eviction_policy`] at start and logs the result.

use super::{Error, RedisConn};

/// What Redis said about its memory policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvictionPolicy {
    /// `noeviction`: writes fail when memory is full; nothing is deleted.
    Safe {
        /// `maxmemory` in bytes (0: no limit).
        maxmemory: u64,
    },
    /// Another policy with a memory limit: Redis will delete keys (jobs) when it is full.
    WouldEvict {
        /// The policy, e.g. `allkeys-lru`.
        policy: String,
        /// `maxmemory` in bytes.
        maxmemory: u64,
    },
    /// Another policy without a limit (`maxmemory 0`): nothing is evicted until someone sets a
    /// limit (managed services often do).
    EvictsOnceLimited {
        /// The policy.
        policy: String,
    },
    /// Neither `CONFIG GET` nor `INFO memory` answered (CONFIG is often renamed or denied on
    /// managed services).
    Unknown(String),
}

/// Asks Redis for `maxmemory-policy` and `maxmemory`: `CONFIG GET` first, `INFO memory` when
/// CONFIG is disabled. Never fails: an unanswerable question is [`EvictionPolicy::Unknown`].
pub async fn check_eviction_policy(conn: &RedisConn) -> EvictionPolicy {
    let (policy, maxmemory) = match config_get(conn).await {
        Ok(found) => found,
        Err(config_error) => match info_memory(conn).await {
            Ok(found) => found,
            Err(info_error) => {
                return EvictionPolicy::Unknown(format!(
                    "CONFIG GET failed ({config_error}) and INFO memory failed ({info_error})"
                ));
            }
        },
    };
    classify(&policy, maxmemory)
}

impl EvictionPolicy {
    /// Logs the policy at start: a loud warning when Redis may delete jobs.
    pub fn log(&self) {
        match self {
            Self::Safe { maxmemory } => {
                tracing::info!(maxmemory, "redis maxmemory-policy is noeviction");
            }
            Self::WouldEvict { policy, maxmemory } => tracing::warn!(
                policy = %policy, maxmemory,
                "REDIS WILL EVICT JOBS when it reaches maxmemory: set maxmemory-policy noeviction \
                 (an evicted job is lost; with noeviction an enqueue fails instead)"
            ),
            Self::EvictsOnceLimited { policy } => tracing::warn!(
                policy = %policy,
                "redis maxmemory-policy is not noeviction: it has no maxmemory now, but would \
                 evict jobs once one is set; set maxmemory-policy noeviction"
            ),
            Self::Unknown(reason) => tracing::warn!(
                reason = %reason,
                "cannot read redis maxmemory-policy; make sure it is noeviction"
            ),
        }
    }
}

fn classify(policy: &str, maxmemory: u64) -> EvictionPolicy {
    match (policy, maxmemory) {
        ("noeviction", _) => EvictionPolicy::Safe { maxmemory },
        (_, 0) => EvictionPolicy::EvictsOnceLimited {
            policy: policy.to_owned(),
        },
        _ => EvictionPolicy::WouldEvict {
            policy: policy.to_owned(),
            maxmemory,
        },
    }
}

async fn config_get(conn: &RedisConn) -> Result<(String, u64), Error> {
    let pairs: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory-policy")
        .arg("maxmemory")
        .query_async(&mut conn.clone())
        .await?;
    let value = |name: &str| {
        pairs
            .chunks(2)
            .find(|pair| pair.first().is_some_and(|key| key == name))
            .and_then(|pair| pair.get(1).cloned())
    };
    let policy =
        value("maxmemory-policy").ok_or_else(|| Error::Protocol("no maxmemory-policy".into()))?;
    let maxmemory = value("maxmemory")
        .and_then(|text| text.parse().ok())
        .unwrap_or(0);
    Ok((policy, maxmemory))
}

async fn info_memory(conn: &RedisConn) -> Result<(String, u64), Error> {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn.clone())
        .await?;
    let field = |name: &str| {
        info.lines()
            .find_map(|line| line.trim().strip_prefix(name)?.strip_prefix(':'))
            .map(str::to_owned)
    };
    let policy =
        field("maxmemory_policy").ok_or_else(|| Error::Protocol("no maxmemory_policy".into()))?;
    let maxmemory = field("maxmemory")
        .and_then(|text| text.parse().ok())
        .unwrap_or(0);
    Ok((policy, maxmemory))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_noeviction_is_safe_and_a_policy_without_a_limit_is_flagged_apart() {
        assert_eq!(
            classify("noeviction", 1 << 20),
            EvictionPolicy::Safe { maxmemory: 1 << 20 }
        );
        assert_eq!(
            classify("allkeys-lru", 1 << 20),
            EvictionPolicy::WouldEvict {
                policy: "allkeys-lru".to_owned(),
                maxmemory: 1 << 20
            }
        );
        assert_eq!(
            classify("volatile-ttl", 0),
            EvictionPolicy::EvictsOnceLimited {
                policy: "volatile-ttl".to_owned()
            }
        );
    }
}
