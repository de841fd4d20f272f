//! The renewer: every third of the lease, extends every lease this worker holds in one script
//! call, confirms the ones Redis kept and drops the ones it lost.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::BackendCounters;
use super::lease_book::LeaseBook;
use crate::outage::Outage;
use crate::queue::Queue;

pub(super) async fn run_renewer(
    queue: Queue,
    worker_id: String,
    leases: Arc<LeaseBook>,
    counters: Arc<BackendCounters>,
) {
    let period = (queue.options().lease / 3).max(Duration::from_millis(100));
    let mut outage = Outage::new("redis", "renew leases");
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let held = leases.tokens();
        let sent_at = Instant::now();
        match queue.renew(&worker_id, &held).await {
            Ok(lost) => {
                outage.recovered();
                let lost: HashSet<String> = lost.into_iter().collect();
                let (gone, kept): (Vec<_>, Vec<_>) =
                    held.into_iter().partition(|(id, _)| lost.contains(id));
                leases.confirm(&kept, sent_at + queue.options().lease);
                // A worker whose slots are all busy does not fetch; its renewals are its beat.
                crate::daemons::vitals().worker_round_trip(queue.name().as_str(), kept.len());
                for (id, token) in gone {
                    // A renewal sent after this worker's own ack finds that lease gone too: one
                    // still in the book and not being settled is really lost.
                    if leases.remove_lost(&id, &token).is_some() {
                        counters.lost_leases.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(queue = %queue.name(), job_id = %id, worker_id = %worker_id, "lease lost; its ack will be refused");
                    }
                }
            }
            Err(error) => {
                outage.failed(&error);
            }
        }
    }
}
