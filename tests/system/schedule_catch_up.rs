//! Catch-up after downtime: a scheduler killed for 10 s, three every-second schedules with
//! the three policies. `skip` runs none of the missed ticks, `latest` exactly one, `all`
//! every one; every tick has a row either way.

use std::time::Duration;

use crate::schedule_ledger::{
    TickRow, assert_each_job_ran_exactly_once, assert_every_second_has_a_row, ticks_of,
};
use crate::support::{Deployment, eventually, unix_now, wait_for_worker};

const DOWNTIME: Duration = Duration::from_secs(10);

/// Ticks due less than this before a scheduler starts are enqueued by its loop, not
/// planned as catch-up (`upkeep_scheduler::CATCH_UP_GRACE` is 2 s; one more for slack).
const GRACE_S: f64 = 3.0;

#[tokio::test]
async fn after_10s_down_skip_runs_no_missed_tick_latest_one_and_all_every_one() {
    let deployment = Deployment::new().await;
    let mut config = String::new();
    for policy in ["skip", "latest", "all"] {
        config.push_str(&format!(
            "[[schedules]]\nname = \"catch-up-{policy}\"\ncron = \"* * * * * *\"\n\
             kind = \"system.ping\"\ncatch_up = \"{policy}\"\n\n"
        ));
    }
    deployment.write_config(&config);
    let mut worker = deployment.start("upkeep-worker-reports", [] as [&str; 0]);
    wait_for_worker(&mut worker, "reports");
    let mut scheduler = deployment.start("upkeep-scheduler", [] as [&str; 0]);
    let mut ledger = deployment.ledger().await;
    eventually(
        "two ticks of each schedule",
        Duration::from_secs(20),
        async || {
            for policy in ["skip", "latest", "all"] {
                if ticks_of(&mut ledger, &format!("catch-up-{policy}"))
                    .await
                    .len()
                    < 2
                {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;

    scheduler.kill9().expect("kill -9 the scheduler");
    let killed = unix_now();
    std::thread::sleep(DOWNTIME);
    let restarted = unix_now();
    let mut scheduler = deployment.start("upkeep-scheduler", [] as [&str; 0]);
    eventually(
        "ticks after the restart",
        Duration::from_secs(20),
        async || {
            for policy in ["skip", "latest", "all"] {
                let ticks = ticks_of(&mut ledger, &format!("catch-up-{policy}")).await;
                if ticks.last().is_none_or(|t| t.fire_at < restarted + 2.0) {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
    scheduler.sigterm().expect("SIGTERM");
    assert!(scheduler.wait_timeout(Duration::from_secs(10)).is_some());

    let mut by_policy = Vec::new();
    for policy in ["skip", "latest", "all"] {
        let name = format!("catch-up-{policy}");
        let (ticks, _) =
            assert_each_job_ran_exactly_once(&mut ledger, &name, Duration::from_secs(30)).await;
        let first = ticks[0].fire_at;
        let last = ticks.last().expect("ticks").fire_at;
        assert_every_second_has_a_row(&ticks, first, last);
        let last_before_kill = ticks
            .iter()
            .filter(|t| t.decision == "enqueued" && t.fire_at <= killed)
            .map(|t| t.fire_at)
            .fold(f64::MIN, f64::max);
        // Ticks that fell due while no scheduler ran, too old for the new one's loop.
        let downtime: Vec<TickRow> = ticks
            .iter()
            .filter(|t| t.fire_at > last_before_kill + 0.5 && t.fire_at < restarted - GRACE_S)
            .cloned()
            .collect();
        assert!(
            downtime.len() >= 6,
            "{name}: {} ticks in the downtime: {ticks:#?}",
            downtime.len()
        );
        let caught_up: Vec<&TickRow> = ticks.iter().filter(|t| t.decision == "caught_up").collect();
        by_policy.push((policy, ticks.clone(), downtime, caught_up.len()));
    }
    for (policy, ticks, downtime, n_caught_up) in &by_policy {
        let decisions: Vec<&str> = downtime.iter().map(|t| t.decision.as_str()).collect();
        match *policy {
            "skip" => {
                assert_eq!(*n_caught_up, 0, "skip runs no missed tick: {ticks:#?}");
                assert!(decisions.iter().all(|d| *d == "missed"), "{decisions:?}");
                assert!(downtime.iter().all(|t| t.job_id.is_none()));
            }
            "latest" => {
                assert_eq!(*n_caught_up, 1, "latest runs exactly one: {ticks:#?}");
                let n_missed = decisions.iter().filter(|d| **d == "missed").count();
                assert!(
                    n_missed + 1 >= decisions.len(),
                    "latest records the others as missed: {decisions:?}"
                );
                let caught_up = ticks
                    .iter()
                    .find(|t| t.decision == "caught_up")
                    .expect("one");
                assert!(
                    caught_up.fire_at > killed && caught_up.fire_at < restarted,
                    "the caught-up tick is from the downtime: {caught_up:?}"
                );
                assert!(caught_up.job_id.is_some());
            }
            "all" => {
                assert!(
                    decisions.iter().all(|d| *d == "caught_up"),
                    "all runs every missed tick: {decisions:?}"
                );
                assert!(downtime.iter().all(|t| t.job_id.is_some()));
                assert!(!ticks.iter().any(|t| t.decision == "missed"));
            }
            _ => unreachable!(),
        }
    }
}
