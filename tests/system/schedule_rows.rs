//! Every expected tick keeps its row (issue #10, scheduler items 9, 10 and 13): a catch-up
//! whose enqueue fails, an operator's tick during a downtime, and unconfirmed claims of a
//! schedule that is gone must not leave a tick without a row or an unconfirmed claim behind.

use std::time::Duration;

use sqlx::Connection as _;

use crate::schedule_ledger::{TickRow, assert_every_second_has_a_row, ticks_of};
use crate::support::{Deployment, eventually, unix_now};

fn every_second(name: &str, catch_up: &str) -> String {
    format!(
        "[[schedules]]\nname = \"{name}\"\ncron = \"* * * * * *\"\nkind = \"system.ping\"\n\
         catch_up = \"{catch_up}\"\n"
    )
}

/// Starts a scheduler, waits for two ticks of `name`, kills it with SIGKILL; returns the newest
/// fire time it recorded.
async fn run_then_kill(deployment: &Deployment, name: &str) -> f64 {
    let mut scheduler = deployment.start("upkeep-scheduler", [] as [&str; 0]);
    let mut ledger = deployment.ledger().await;
    eventually("two ticks", Duration::from_secs(20), async || {
        (ticks_of(&mut ledger, name).await.len() >= 2).then_some(())
    })
    .await;
    scheduler.kill9().expect("kill -9 the scheduler");
    let ticks = ticks_of(&mut ledger, name).await;
    ticks.last().expect("two ticks").fire_at
}

/// Item 9: fails on the code before it (the caught-up tick was claimed first; its failed
/// enqueue made the retry start after it, and the missed ticks never got a row).
#[tokio::test]
async fn a_catch_up_whose_enqueue_fails_still_records_every_missed_tick() {
    let name = "catch-up-redis-down";
    let deployment = Deployment::new().await;
    deployment.write_config(&every_second(name, "latest"));
    let last_before_kill = run_then_kill(&deployment, name).await;
    std::thread::sleep(Duration::from_secs(8));
    // Back, but Redis is unreachable: every enqueue fails.
    let dead_redis = format!("redis://127.0.0.1:{}/", upkeep_tests::free_port());
    let mut command = deployment.command("upkeep-scheduler", [] as [&str; 0]);
    command.env("REDIS_URL", &dead_redis);
    let restarted = unix_now();
    let _scheduler = deployment.start_with("upkeep-scheduler", command);
    let mut ledger = deployment.ledger().await;
    let downtime_end = restarted - 3.0;
    let ticks: Vec<TickRow> = eventually(
        "a row for every tick of the downtime",
        Duration::from_secs(20),
        async || {
            let ticks = ticks_of(&mut ledger, name).await;
            let covered = ticks
                .iter()
                .filter(|t| t.fire_at > last_before_kill && t.fire_at <= downtime_end)
                .count();
            (covered as f64 >= (downtime_end.floor() - last_before_kill)).then_some(ticks)
        },
    )
    .await;
    let downtime = assert_every_second_has_a_row(&ticks, last_before_kill + 0.5, downtime_end);
    assert!(downtime.len() >= 4, "{downtime:#?}");
    assert!(
        downtime.iter().any(|t| t.decision == "missed"),
        "latest records all but the newest as missed: {downtime:#?}"
    );
}

/// Item 10: fails on the code before it (catch-up started after the manual tick, so the
/// downtime before it had no row).
#[tokio::test]
async fn a_manual_trigger_during_a_downtime_does_not_hide_the_missed_ticks() {
    let name = "trigger-while-down";
    let deployment = Deployment::new().await;
    deployment.write_config(&every_second(name, "skip"));
    let last_before_kill = run_then_kill(&deployment, name).await;
    std::thread::sleep(Duration::from_secs(3));
    deployment.ctl_ok(["schedules", "trigger", name]);
    std::thread::sleep(Duration::from_secs(3));
    let restarted = unix_now();
    let mut scheduler = deployment.start("upkeep-scheduler", [] as [&str; 0]);
    let mut ledger = deployment.ledger().await;
    eventually(
        "ticks after the restart",
        Duration::from_secs(20),
        async || {
            let ticks = ticks_of(&mut ledger, name).await;
            ticks
                .last()
                .is_some_and(|t| t.fire_at > restarted + 2.0)
                .then_some(())
        },
    )
    .await;
    scheduler.sigterm().expect("SIGTERM");
    assert!(scheduler.wait_timeout(Duration::from_secs(10)).is_some());
    let ticks = ticks_of(&mut ledger, name).await;
    let manual: Vec<&TickRow> = ticks.iter().filter(|t| t.decision == "manual").collect();
    assert_eq!(manual.len(), 1, "{ticks:#?}");
    let scheduled: Vec<TickRow> = ticks
        .iter()
        .filter(|t| t.decision != "manual")
        .cloned()
        .collect();
    let downtime = assert_every_second_has_a_row(
        &scheduled,
        last_before_kill,
        scheduled.last().expect("ticks").fire_at,
    );
    let n_missed = downtime.iter().filter(|t| t.decision == "missed").count();
    assert!(
        n_missed >= 4,
        "the downtime is recorded as missed: {downtime:#?}"
    );
}

/// Item 13: fails on the code before it (the scan read the 100 oldest unconfirmed claims,
/// all of a removed schedule, and skipped them at every pass).
#[tokio::test]
async fn unconfirmed_claims_of_a_removed_schedule_do_not_starve_the_straggler_scan() {
    let mut deployment = Deployment::new().await;
    deployment.write_config(
        "[[schedules]]\nname = \"yearly\"\ncron = \"0 0 0 1 1 *\"\nkind = \"system.ping\"\n",
    );
    deployment.set_env("UPKEEP__SCHEDULER__CONFIRM_TIMEOUT", "1s");
    let mut ledger = deployment.ledger().await;
    // 150 claims of a schedule no longer configured, older than the configured one's.
    sqlx::query(
        "INSERT INTO schedule_ticks (schedule, fire_at, decision, claimed_by, claimed_at) \
         SELECT 'removed', now() - make_interval(mins => g), 'enqueued', 'dead-replica', \
                now() - interval '1 hour' + make_interval(secs => g) \
           FROM generate_series(1, 150) AS g",
    )
    .execute(&mut ledger)
    .await
    .expect("inserting stale claims");
    sqlx::query(
        "INSERT INTO schedule_ticks (schedule, fire_at, decision, claimed_by, claimed_at) \
         VALUES ('yearly', date_trunc('year', now()), 'enqueued', 'dead-replica', \
                 now() - interval '1 minute')",
    )
    .execute(&mut ledger)
    .await
    .expect("inserting the configured schedule's claim");
    let mut scheduler = deployment.start("upkeep-scheduler", [] as [&str; 0]);
    let ticks = eventually(
        "the configured schedule's claim enqueued",
        Duration::from_secs(20),
        async || {
            let ticks = ticks_of(&mut ledger, "yearly").await;
            ticks.iter().all(|t| t.job_id.is_some()).then_some(ticks)
        },
    )
    .await;
    assert_eq!(ticks.len(), 1);
    scheduler.sigterm().expect("SIGTERM");
    assert!(scheduler.wait_timeout(Duration::from_secs(10)).is_some());
    ledger.close().await.expect("closing");
}
