//! The scheduler's loop against real Postgres and Redis with a manual clock: after a clock
//! jump it applies the catch-up policy like a restarted replica would (issue #10 item 11),
//! and a starting replica leaves to a live, lagging one the ticks that one has not decided
//! yet (item 12).
//!
//! Needs `DATABASE_URL` and `REDIS_URL` (`source scripts/dev-services.sh`); each test has a
//! database and a Redis key prefix of its own.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::PgPool;
use upkeep_scheduler::Scheduler;
use upkeep_shared::config::Settings;
use upkeep_shared::queue::RedisConn;
use upkeep_shared::schedule::{Clock as _, ManualClock};
use upkeep_shared::shutdown::Shutdown;
use upkeep_shared::store::replicas;
use upkeep_shared::store::ticks::{self, Decision, TickRow};

const SCHEDULE: &str = "every-second";

/// A scheduler over a fresh database with one every-second schedule (`catch_up = "skip"`),
/// driven by `clock`; not started yet.
async fn scheduler(clock: &ManualClock) -> (Scheduler, PgPool) {
    let database_url =
        upkeep_tests::fresh_migrated_database(&upkeep_tests::shared_database_url()).await;
    let env = HashMap::from([
        ("DATABASE_URL".to_owned(), database_url),
        ("REDIS_URL".to_owned(), upkeep_tests::shared_redis_url()),
        (
            "UPKEEP__REDIS__KEY_PREFIX".to_owned(),
            upkeep_tests::unique_prefix(),
        ),
    ]);
    let settings = Settings::from_toml_str(
        &format!(
            "[scheduler]\ntick_interval = \"50ms\"\n\n[[schedules]]\nname = \"{SCHEDULE}\"\n\
             cron = \"* * * * * *\"\nkind = \"system.ping\"\ncatch_up = \"skip\"\n"
        ),
        &env,
    )
    .expect("valid config");
    let pool = settings.database.connect().await.expect("Postgres");
    let conn = RedisConn::open(&settings.redis.target()).expect("Redis");
    let scheduler = Scheduler::with_parts(settings, pool.clone(), conn, Arc::new(clock.clone()));
    (scheduler, pool)
}

/// A whole second, a little in the past.
fn start_instant() -> DateTime<Utc> {
    DateTime::from_timestamp(Utc::now().timestamp() - 3600, 0).expect("valid")
}

/// The schedule's ticks with `from < fire_at <= to`.
async fn ticks(pool: &PgPool, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<TickRow> {
    ticks::ticks_between(pool, SCHEDULE, from, to)
        .await
        .expect("reading ticks")
}

/// Waits until the tick at `fire_at` has a row.
async fn wait_for_tick(pool: &PgPool, fire_at: DateTime<Utc>) {
    for _ in 0..200 {
        if !ticks(pool, fire_at - TimeDelta::milliseconds(1), fire_at)
            .await
            .is_empty()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no row for the tick at {fire_at}");
}

fn decisions(rows: &[TickRow]) -> Vec<(i64, Decision)> {
    rows.iter()
        .map(|row| (row.fire_at.timestamp(), row.decision))
        .collect()
}

#[tokio::test]
async fn after_a_clock_jump_the_live_loop_applies_the_catch_up_policy_instead_of_enqueueing_a_burst()
 {
    let t0 = start_instant();
    let clock = ManualClock::new(t0);
    let (scheduler, pool) = scheduler(&clock).await;
    let shutdown = Shutdown::new();
    let task = tokio::spawn(scheduler.run_until_stopped(shutdown.clone()));
    for _ in 0..3 {
        clock.advance(Duration::from_secs(1));
        wait_for_tick(&pool, clock.now()).await;
    }
    let before_jump = clock.now();
    clock.advance(Duration::from_secs(30));
    let after_jump = clock.now();
    wait_for_tick(&pool, after_jump).await;
    shutdown.trigger();
    task.await.expect("joined").expect("stopped cleanly");

    let normal = ticks(&pool, t0, before_jump).await;
    assert!(
        normal.iter().all(|row| row.decision == Decision::Enqueued),
        "{:?}",
        decisions(&normal)
    );
    // Ticks jumped over and due more than the grace before the new now are late: skip
    // records them as missed, as a restarted scheduler would, rather than enqueueing 30 jobs.
    let late_until = after_jump - TimeDelta::seconds(2);
    let jumped = ticks(&pool, before_jump, late_until).await;
    assert_eq!(
        jumped.len(),
        28,
        "every jumped-over second has a row: {:?}",
        decisions(&jumped)
    );
    assert!(
        jumped.iter().all(|row| row.decision == Decision::Missed),
        "{:?}",
        decisions(&jumped)
    );
    let recent = ticks(&pool, late_until, after_jump).await;
    assert!(
        recent.iter().all(|row| row.decision == Decision::Enqueued),
        "ticks within the grace are still enqueued: {:?}",
        decisions(&recent)
    );
}

#[tokio::test]
async fn a_starting_replica_leaves_to_a_live_lagging_replica_the_ticks_it_has_not_decided() {
    let t0 = start_instant();
    let clock = ManualClock::new(t0);
    let (scheduler, pool) = scheduler(&clock).await;
    // The ledger knows the schedule up to t0 - 30 s; another replica, alive now, has
    // decided every tick due up to t0 - 20 s and is still working through the rest.
    let last_seen = t0 - TimeDelta::seconds(30);
    ticks::claim_tick(&pool, SCHEDULE, last_seen, "enqueued", "earlier", None)
        .await
        .expect("claim");
    let decided_until = t0 - TimeDelta::seconds(20);
    replicas::heartbeat(&pool, "scheduler@lagging-1", decided_until, t0)
        .await
        .expect("heartbeat");

    let shutdown = Shutdown::new();
    let task = tokio::spawn(scheduler.run_until_stopped(shutdown.clone()));
    wait_for_tick(&pool, t0).await;
    shutdown.trigger();
    task.await.expect("joined").expect("stopped cleanly");

    let decided_by_the_other = ticks(&pool, last_seen, decided_until).await;
    assert_eq!(decided_by_the_other.len(), 10);
    assert!(
        decided_by_the_other
            .iter()
            .all(|row| row.decision == Decision::Missed),
        "ticks before the live replica's horizon are this replica's catch-up: {:?}",
        decisions(&decided_by_the_other)
    );
    let left_to_the_loop = ticks(&pool, decided_until, t0).await;
    assert_eq!(left_to_the_loop.len(), 20);
    assert!(
        left_to_the_loop
            .iter()
            .all(|row| row.decision == Decision::Enqueued),
        "no tick the live replica is about to enqueue is recorded as missed: {:?}",
        decisions(&left_to_the_loop)
    );
}
