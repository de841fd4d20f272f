//! `upkeepctl up`: the scheduler and every worker in one process, stopped by one Ctrl-C.

use std::time::{Duration, Instant};

use crate::support::{Deployment, eventually, sigint, wait_for_log_entry, wait_for_worker};

/// deploy/demo.toml with its first schedule (the ping) firing every second instead of every
/// five, and that schedule's name. The demo's other schedules stay as they are.
fn demo_config_every_second() -> (String, String) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/demo.toml");
    let demo = std::fs::read_to_string(path).expect("reading deploy/demo.toml");
    let mut name = None;
    let mut n_crons = 0;
    let config: Vec<String> = demo
        .lines()
        .map(|line| {
            let key = line.split('=').next().unwrap_or("").trim();
            if key == "name" && name.is_none() {
                name = Some(line.split('"').nth(1).expect("a quoted name").to_owned());
            }
            if key == "cron" && line.contains("*/5 * * * * *") {
                n_crons += 1;
                if n_crons == 1 {
                    return r#"cron = "* * * * * *""#.to_owned();
                }
            }
            line.to_owned()
        })
        .collect();
    assert!(n_crons >= 1, "deploy/demo.toml has a schedule:\n{demo}");
    (
        config.join("\n"),
        name.expect("the demo schedule has a name"),
    )
}

#[tokio::test]
async fn upkeepctl_up_runs_the_scheduler_and_every_worker_until_one_sigint_stops_it_with_exit_0() {
    let deployment = Deployment::new().await;
    let (config, schedule) = demo_config_every_second();
    deployment.write_config(&config);

    let mut up = deployment.start("upkeepctl", ["up"]);
    for queue in ["backups", "logs", "tokens", "reports"] {
        wait_for_worker(&mut up, queue);
    }
    let mut ledger = deployment.ledger().await;
    eventually(
        "two succeeded runs of the demo schedule",
        Duration::from_secs(20),
        async || {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM job_runs r
                   JOIN schedule_ticks t ON t.job_id = r.job_id AND t.fire_at = r.tick_at
                  WHERE r.schedule = $1 AND r.status = 'succeeded'",
            )
            .bind(&schedule)
            .fetch_one(&mut ledger)
            .await
            .expect("counting runs");
            (n >= 2).then_some(())
        },
    )
    .await;

    let interrupted = Instant::now();
    sigint(&up);
    let status = up.wait_timeout(Duration::from_secs(15)).unwrap_or_else(|| {
        panic!(
            "upkeepctl up still runs 15 s after SIGINT; log:\n{}",
            up.log()
        )
    });

    assert_eq!(status.code(), Some(0), "exit status {status}");
    for message in ["scheduler stopped", "workers stopped"] {
        wait_for_log_entry(&mut up, message, Duration::ZERO, |entry| {
            entry["message"] == message
        });
    }
    let n_signals = up
        .log()
        .matches(r#""message":"shutdown requested""#)
        .count();
    assert_eq!(n_signals, 1, "one SIGINT was enough");
    eprintln!(
        "upkeepctl up stopped {:?} after SIGINT",
        interrupted.elapsed()
    );
}
