//! A scheduler started early in a minute enqueues every tick of that minute whose jittered due
//! time is after its start, although their fire times (the minute's first second) have passed
//! (issue #18: they used to be neither caught up nor enqueued, and left no row).

use std::time::Duration;

use chrono::DateTime;
use upkeep_shared::schedule::ScheduleSpec;

use crate::schedule_ledger::ticks_of;
use crate::support::{Deployment, eventually, unix_now};

const N_SCHEDULES: usize = 60;
const JITTER: Duration = Duration::from_secs(60);

/// Ticks due this soon after the process is spawned may fall before the scheduler's own start
/// (a new schedule owes nothing before that), so they are not counted.
const START_MARGIN_S: f64 = 1.0;

#[tokio::test]
async fn a_scheduler_started_early_in_a_minute_enqueues_every_tick_of_that_minute_due_after_its_start()
 {
    let deployment = Deployment::new().await;
    let names: Vec<String> = (0..N_SCHEDULES).map(|i| format!("spread-{i:02}")).collect();
    let mut config = String::new();
    for name in &names {
        config.push_str(&format!(
            "[[schedules]]\nname = \"{name}\"\ncron = \"0 * * * * *\"\nkind = \"system.ping\"\n\
             jitter = \"60s\"\ncatch_up = \"skip\"\n\n"
        ));
    }
    deployment.write_config(&config);
    // Start at second 3 of a minute: the minute's ticks have all fired, and 95% are not due.
    let into_minute = unix_now().rem_euclid(60.0);
    let wait = (63.0 - into_minute).rem_euclid(60.0);
    tokio::time::sleep(Duration::from_secs_f64(wait)).await;
    let started = unix_now();
    let minute = (started / 60.0).floor() * 60.0;
    let mut scheduler = deployment.start("upkeep-scheduler", [] as [&str; 0]);

    let fire_at = DateTime::from_timestamp(minute as i64, 0).expect("a valid instant");
    let expected: Vec<&String> = names
        .iter()
        .filter(|name| {
            let spec = ScheduleSpec::parse(name, "0 * * * * *", "UTC", JITTER).expect("valid");
            let due = spec.due_at(fire_at).timestamp_millis() as f64 / 1000.0;
            due >= started + START_MARGIN_S
        })
        .collect();
    assert!(
        expected.len() >= N_SCHEDULES / 2,
        "only {} of {N_SCHEDULES} ticks are due after the start",
        expected.len()
    );

    let mut ledger = deployment.ledger().await;
    let minute_tick = |ticks: &[crate::schedule_ledger::TickRow]| {
        ticks
            .iter()
            .find(|t| (t.fire_at - minute).abs() < 0.001)
            .cloned()
    };
    eventually(
        "a row for every tick of the minute due after the start",
        Duration::from_secs(90),
        async || {
            for name in &expected {
                minute_tick(&ticks_of(&mut ledger, name).await)?.job_id?;
            }
            Some(())
        },
    )
    .await;
    scheduler.sigterm().expect("SIGTERM");
    assert!(scheduler.wait_timeout(Duration::from_secs(10)).is_some());
    for name in &expected {
        let tick = minute_tick(&ticks_of(&mut ledger, name).await).expect("checked above");
        assert_eq!(tick.decision, "enqueued", "{name}: {tick:?}");
    }
}
