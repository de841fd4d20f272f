//! `store::ticks`: exactly-once claims between replicas, confirmation, and history lookups.

use std::sync::Arc;

use chrono::Duration;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::sync::Barrier;
use upkeep_shared::JobId;
use upkeep_shared::store::ticks::{self, Decision};

use crate::helpers::t0;

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn exactly_one_of_eight_concurrent_claimers_wins_each_tick(
    pool_options: PgPoolOptions,
    connect_options: PgConnectOptions,
) {
    // One connection per claimer, so the eight inserts really race in Postgres.
    let n_claimers = 8;
    let n_ticks = 25;
    let pool = pool_options
        .max_connections(n_claimers + 1)
        .connect_with(connect_options)
        .await
        .unwrap();
    let barrier = Arc::new(Barrier::new(n_claimers as usize));
    let mut tasks = Vec::new();
    for claimer_idx in 0..n_claimers {
        let pool = pool.clone();
        let barrier = Arc::clone(&barrier);
        tasks.push(tokio::spawn(async move {
            let claimer = format!("scheduler-{claimer_idx}");
            let mut won = Vec::new();
            for tick_idx in 0..n_ticks {
                barrier.wait().await;
                let fire_at = t0() + Duration::seconds(5 * i64::from(tick_idx));
                let claim = ticks::claim_tick(&pool, "ping", fire_at, "enqueued", &claimer, None)
                    .await
                    .unwrap();
                if let Some(row) = claim {
                    assert_eq!(row.claimed_by, claimer);
                    won.push(row.fire_at);
                }
            }
            won
        }));
    }

    let mut wins_per_tick = std::collections::BTreeMap::new();
    for task in tasks {
        for fire_at in task.await.unwrap() {
            *wins_per_tick.entry(fire_at).or_insert(0) += 1;
        }
    }

    assert_eq!(wins_per_tick.len(), n_ticks as usize, "every tick was won");
    assert!(
        wins_per_tick.values().all(|n_wins| *n_wins == 1),
        "each tick has exactly one winner: {wins_per_tick:?}"
    );
    let n_rows: i64 = sqlx::query_scalar("SELECT count(*) FROM schedule_ticks")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(n_rows, i64::from(n_ticks));
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn a_claim_returns_the_row_and_a_second_claim_returns_nothing(pool: PgPool) {
    let first = ticks::claim_tick(&pool, "ping", t0(), "skipped_overlap", "a", Some("busy"))
        .await
        .unwrap()
        .expect("the first claim wins");
    let second = ticks::claim_tick(&pool, "ping", t0(), "enqueued", "b", None)
        .await
        .unwrap();

    assert_eq!(second, None);
    assert_eq!(first.schedule, "ping");
    assert_eq!(first.fire_at, t0());
    assert_eq!(first.decision, Decision::SkippedOverlap);
    assert_eq!(first.note.as_deref(), Some("busy"));
    assert_eq!((first.job_id, first.enqueued_at), (None, None));
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn an_unknown_decision_is_refused_before_reaching_the_database(pool: PgPool) {
    let result = ticks::claim_tick(&pool, "ping", t0(), "ran", "a", None).await;

    let Err(error) = result else {
        panic!("expected an error, got {result:?}");
    };
    assert_eq!(error.to_string(), "unknown tick decision \"ran\"");
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn unconfirmed_ticks_are_enqueue_claims_older_than_the_cutoff_until_confirmed(pool: PgPool) {
    let mut claimed = Vec::new();
    for (idx, decision) in [
        "enqueued",
        "caught_up",
        "manual",
        "backfill",
        "missed",
        "skipped_paused",
    ]
    .into_iter()
    .enumerate()
    {
        let fire_at = t0() + Duration::minutes(i64::try_from(idx).unwrap());
        let row = ticks::claim_tick(&pool, "nightly", fire_at, decision, "a", None)
            .await
            .unwrap()
            .unwrap();
        claimed.push(row);
    }
    let cutoff = chrono::Utc::now() + Duration::seconds(1);

    let nightly = ["nightly".to_owned()];
    let before = ticks::unconfirmed_ticks(&pool, &nightly, cutoff, None, 100)
        .await
        .unwrap();
    let none_yet = ticks::unconfirmed_ticks(&pool, &nightly, claimed[0].claimed_at, None, 100)
        .await
        .unwrap();
    let job_id = JobId::new();
    let confirmed = ticks::confirm_tick(&pool, claimed[0].id, job_id)
        .await
        .unwrap();
    let after = ticks::unconfirmed_ticks(&pool, &nightly, cutoff, None, 100)
        .await
        .unwrap();
    let missing = ticks::confirm_tick(&pool, -1, job_id).await.unwrap();

    let decisions: Vec<Decision> = before.iter().map(|row| row.decision).collect();
    assert_eq!(
        decisions,
        [
            Decision::Enqueued,
            Decision::CaughtUp,
            Decision::Manual,
            Decision::Backfill
        ]
    );
    assert!(
        none_yet.is_empty(),
        "claims at or after the cutoff are not stale yet"
    );
    assert!(confirmed);
    assert!(!missing);
    assert_eq!(after.len(), 3);
    assert!(after.iter().all(|row| row.id != claimed[0].id));
    let last = ticks::last_enqueued_tick(&pool, "nightly")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(last.job_id, Some(job_id));
    assert!(last.enqueued_at.is_some());
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn last_tick_and_ticks_between_read_a_schedules_history(pool: PgPool) {
    for minute in 0..10 {
        let fire_at = t0() + Duration::minutes(minute);
        ticks::claim_tick(&pool, "nightly", fire_at, "enqueued", "a", None)
            .await
            .unwrap();
    }
    ticks::claim_tick(
        &pool,
        "other",
        t0() + Duration::hours(1),
        "missed",
        "a",
        None,
    )
    .await
    .unwrap();

    let last = ticks::last_tick(&pool, "nightly").await.unwrap().unwrap();
    let nothing = ticks::last_tick(&pool, "unknown").await.unwrap();
    let between = ticks::ticks_between(
        &pool,
        "nightly",
        t0() + Duration::minutes(2),
        t0() + Duration::minutes(5),
    )
    .await
    .unwrap();

    assert_eq!(last.fire_at, t0() + Duration::minutes(9));
    assert_eq!(nothing, None);
    let minutes: Vec<i64> = between
        .iter()
        .map(|row| (row.fire_at - t0()).num_minutes())
        .collect();
    assert_eq!(minutes, [3, 4, 5], "from is exclusive, to inclusive");
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn retention_deletes_old_ticks_in_batches_but_keeps_each_schedules_newest(pool: PgPool) {
    for name in ["hourly", "yearly", "fresh"] {
        sqlx::query(
            "INSERT INTO schedules (name, cron, timezone, kind, queue, catch_up, \
             catch_up_window_ms, catch_up_max, overlap, config_hash) \
             VALUES ($1, '0 0 * * * *', 'UTC', 'system.ping', 'reports', 'latest', 0, 1, \
             'allow', 'h')",
        )
        .bind(name)
        .execute(&pool)
        .await
        .unwrap();
    }
    // hourly: 48 ticks over two days; yearly: one tick long ago; fresh: ticks after the cutoff.
    let cutoff = t0() + Duration::hours(24);
    for hour in 0..48 {
        ticks::claim_tick(
            &pool,
            "hourly",
            t0() + Duration::hours(hour),
            "enqueued",
            "s",
            None,
        )
        .await
        .unwrap()
        .expect("claimed");
    }
    ticks::claim_tick(
        &pool,
        "yearly",
        t0() - Duration::days(300),
        "enqueued",
        "s",
        None,
    )
    .await
    .unwrap()
    .expect("claimed");
    for hour in 30..33 {
        ticks::claim_tick(
            &pool,
            "fresh",
            t0() + Duration::hours(hour),
            "missed",
            "s",
            None,
        )
        .await
        .unwrap()
        .expect("claimed");
    }

    // Batches of 5, so the loop has to go round several times.
    let n_deleted = ticks::delete_ticks_older_than(&pool, cutoff, 5)
        .await
        .unwrap();

    assert_eq!(n_deleted, 24, "the hourly ticks before the cutoff");
    let left: Vec<(String, i64)> = sqlx::query_as(
        "SELECT schedule, count(*) FROM schedule_ticks GROUP BY schedule ORDER BY schedule",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        left,
        vec![
            ("fresh".to_owned(), 3),
            ("hourly".to_owned(), 24),
            ("yearly".to_owned(), 1)
        ],
        "the yearly schedule keeps its only (newest) tick, old as it is"
    );
    let oldest_hourly = ticks::ticks_between(&pool, "hourly", t0() - Duration::days(1), cutoff)
        .await
        .unwrap();
    assert_eq!(oldest_hourly.len(), 1, "only the tick at the cutoff itself");
    assert_eq!(oldest_hourly[0].fire_at, cutoff);
    assert_eq!(
        ticks::delete_ticks_older_than(&pool, cutoff, 5)
            .await
            .unwrap(),
        0,
        "a second pass finds nothing"
    );
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn the_straggler_scan_pages_past_claims_it_cannot_act_on(pool: PgPool) {
    // 150 unconfirmed claims of a schedule no longer configured, then one of a configured one.
    for second in 0..150 {
        ticks::claim_tick(
            &pool,
            "removed",
            t0() + Duration::seconds(second),
            "enqueued",
            "a",
            None,
        )
        .await
        .unwrap()
        .unwrap();
    }
    let kept = ticks::claim_tick(&pool, "kept", t0(), "enqueued", "a", None)
        .await
        .unwrap()
        .unwrap();
    let cutoff = chrono::Utc::now() + Duration::seconds(1);
    let configured = ["kept".to_owned()];
    let first = ticks::unconfirmed_ticks(&pool, &configured, cutoff, None, 100)
        .await
        .unwrap();
    assert_eq!(first.iter().map(|r| r.id).collect::<Vec<_>>(), [kept.id]);

    let both = ["kept".to_owned(), "removed".to_owned()];
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = ticks::unconfirmed_ticks(&pool, &both, cutoff, after, 40)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some((last.claimed_at, last.id));
        seen.extend(page.iter().map(|r| r.id));
    }
    assert_eq!(seen.len(), 151, "every claim once, in pages");
    assert!(seen.contains(&kept.id));
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn catch_up_starts_after_the_newest_tick_a_scheduler_decided_not_an_operators(pool: PgPool) {
    ticks::claim_tick(&pool, "nightly", t0(), "enqueued", "scheduler", None)
        .await
        .unwrap();
    for (minutes, decision) in [(60, "manual"), (120, "backfill")] {
        ticks::claim_tick(
            &pool,
            "nightly",
            t0() + Duration::minutes(minutes),
            decision,
            "alice",
            None,
        )
        .await
        .unwrap();
    }
    let last = ticks::last_fire_times(&pool, &["nightly".to_owned()])
        .await
        .unwrap();
    assert_eq!(last.get("nightly"), Some(&t0()));

    // Retention keeps that tick even when an operator's tick is newer.
    sqlx::query(
        "INSERT INTO schedules (name, cron, timezone, kind, queue, catch_up, \
         catch_up_window_ms, catch_up_max, overlap, config_hash) \
         VALUES ('nightly', '0 0 * * * *', 'UTC', 'system.ping', 'reports', 'latest', 0, 1, \
         'allow', 'h')",
    )
    .execute(&pool)
    .await
    .unwrap();
    let deleted = ticks::delete_ticks_older_than(&pool, t0() + Duration::days(1), 100)
        .await
        .unwrap();
    assert_eq!(
        deleted, 1,
        "only the manual tick goes; the backfill is the newest"
    );
    let last = ticks::last_fire_times(&pool, &["nightly".to_owned()])
        .await
        .unwrap();
    assert_eq!(last.get("nightly"), Some(&t0()));
}
