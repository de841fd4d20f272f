//! The scheduler never stops silently: through a Redis restart it logs the outage once,
//! keeps going, and every tick of the outage still gets its job.

use std::time::Duration;

use upkeep_tests::{AppendFsync, PrivateRedis, RedisOptions};

use crate::schedule_ledger::{
    assert_each_job_ran_exactly_once, assert_every_second_has_a_row, ticks_of,
};
use crate::support::{Deployment, eventually, unix_now, wait_for_log_entry, wait_for_worker};

const SCHEDULE: &str = "watchdog-every-second";
const OUTAGE_MESSAGE: &str = "dependency unavailable; retrying with backoff";

#[tokio::test]
async fn the_scheduler_keeps_firing_after_a_redis_restart() {
    let mut redis = PrivateRedis::start_with(
        RedisOptions::default()
            .appendonly(true)
            .appendfsync(AppendFsync::Always),
    )
    .expect("private redis starts");
    let mut deployment = Deployment::new().await;
    deployment.set_env("REDIS_URL", &redis.url());
    deployment.set_env("UPKEEP__REDIS__RESPONSE_TIMEOUT", "1s");
    deployment.set_env("UPKEEP__SCHEDULER__CONFIRM_TIMEOUT", "2s");
    deployment.write_config(&format!(
        "[[schedules]]\nname = \"{SCHEDULE}\"\ncron = \"* * * * * *\"\nkind = \"system.ping\"\n"
    ));
    let mut worker = deployment.start("upkeep-worker-reports", [] as [&str; 0]);
    wait_for_worker(&mut worker, "reports");
    let mut scheduler = deployment.start("upkeep-scheduler", [] as [&str; 0]);
    let mut ledger = deployment.ledger().await;
    eventually("three ticks", Duration::from_secs(20), async || {
        (ticks_of(&mut ledger, SCHEDULE).await.len() >= 3).then_some(())
    })
    .await;

    redis.kill9().expect("kill -9 redis");
    wait_for_log_entry(
        &mut scheduler,
        "the Redis outage",
        Duration::from_secs(15),
        |entry| entry["message"] == OUTAGE_MESSAGE,
    );
    std::thread::sleep(Duration::from_secs(3));
    redis.restart().expect("restart redis");
    let back = unix_now();

    eventually(
        "ticks enqueued after the restart",
        Duration::from_secs(30),
        async || {
            let ticks = ticks_of(&mut ledger, SCHEDULE).await;
            let n_after = ticks
                .iter()
                .filter(|t| t.fire_at > back + 1.0 && t.job_id.is_some())
                .count();
            (n_after >= 3).then_some(())
        },
    )
    .await;
    assert!(
        scheduler.is_running(),
        "the scheduler exited:\n{}",
        scheduler.log()
    );
    scheduler.sigterm().expect("SIGTERM");
    assert!(scheduler.wait_timeout(Duration::from_secs(10)).is_some());

    let (ticks, _) =
        assert_each_job_ran_exactly_once(&mut ledger, SCHEDULE, Duration::from_secs(30)).await;
    let first = ticks[0].fire_at;
    let last = ticks.last().expect("ticks").fire_at;
    let span = assert_every_second_has_a_row(&ticks, first, last);
    assert!(
        span.iter().all(|t| t.decision == "enqueued"),
        "no tick of the outage was dropped: {span:#?}"
    );
    let n_outage_logs = scheduler
        .log()
        .lines()
        .filter(|line| line.contains(OUTAGE_MESSAGE))
        .count();
    assert_eq!(
        n_outage_logs,
        1,
        "the outage is logged once:\n{}",
        scheduler.log()
    );
    assert!(
        scheduler.log().contains("dependency available again"),
        "the recovery is logged"
    );
}
