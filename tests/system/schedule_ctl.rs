//! `upkeepctl schedules` end to end: next, pause and resume, trigger, backfill, list and
//! metrics, against a running scheduler and worker.

use std::time::Duration;

use crate::schedule_ledger::{assert_each_job_ran_exactly_once, ticks_of};
use crate::support::{Deployment, eventually, unix_now, wait_for_worker};

const CONFIG: &str = r#"
[[schedules]]
name = "ctl-every-second"
cron = "* * * * * *"
kind = "system.ping"

[[schedules]]
name = "ctl-nightly"
cron = "0 30 2 * * *"
timezone = "Europe/Berlin"
kind = "system.ping"
"#;

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"))
}

#[tokio::test]
async fn operators_pause_resume_trigger_backfill_and_preview_schedules_with_upkeepctl() {
    let deployment = Deployment::new().await;
    deployment.write_config(CONFIG);
    let mut worker = deployment.start("upkeep-worker-reports", [] as [&str; 0]);
    wait_for_worker(&mut worker, "reports");
    let mut scheduler = deployment.start("upkeep-scheduler", [] as [&str; 0]);
    let mut ledger = deployment.ledger().await;
    eventually("a first tick", Duration::from_secs(20), async || {
        (!ticks_of(&mut ledger, "ctl-every-second").await.is_empty()).then_some(())
    })
    .await;

    // next: ten fire times at 02:30 Berlin time, in UTC and local time.
    let preview =
        json(&deployment.ctl_ok(["schedules", "next", "ctl-nightly", "-n", "10", "--json"]));
    let rows = preview.as_array().expect("an array");
    assert_eq!(rows.len(), 10, "{preview:#}");
    for row in rows {
        let local = row["local"].as_str().expect("local");
        assert!(
            local.contains("T02:30:00+0") || local.contains("T03:00:00+02"),
            "{row}"
        );
        assert!(
            row["fire_at"]
                .as_str()
                .is_some_and(|utc| utc.ends_with('Z')),
            "{row}"
        );
    }
    let text = deployment.ctl_ok(["schedules", "next", "ctl-nightly", "-n", "10"]);
    assert_eq!(text.lines().count(), 11, "a header and ten rows:\n{text}");

    // pause: ticks are recorded as skipped_paused; resume: enqueued again.
    deployment.ctl_ok([
        "schedules",
        "pause",
        "ctl-every-second",
        "--actor",
        "alice@test",
    ]);
    let paused_at = unix_now();
    std::thread::sleep(Duration::from_secs(4));
    deployment.ctl_ok([
        "schedules",
        "resume",
        "ctl-every-second",
        "--actor",
        "bob@test",
    ]);
    let resumed_at = unix_now();
    eventually(
        "an enqueued tick after resume",
        Duration::from_secs(10),
        async || {
            let ticks = ticks_of(&mut ledger, "ctl-every-second").await;
            ticks
                .iter()
                .any(|t| t.fire_at > resumed_at + 1.0 && t.decision == "enqueued")
                .then_some(())
        },
    )
    .await;
    let ticks = ticks_of(&mut ledger, "ctl-every-second").await;
    let paused: Vec<_> = ticks
        .iter()
        .filter(|t| t.fire_at > paused_at + 1.0 && t.fire_at < resumed_at - 0.5)
        .collect();
    assert!(paused.len() >= 2, "{ticks:#?}");
    assert!(
        paused
            .iter()
            .all(|t| t.decision == "skipped_paused" && t.job_id.is_none()),
        "{paused:#?}"
    );

    // trigger: a manual tick and its run.
    let triggered = json(&deployment.ctl_ok([
        "schedules",
        "trigger",
        "ctl-nightly",
        "--actor",
        "carol@test",
        "--json",
    ]));
    let job_id = triggered["job_id"].as_str().expect("a job id").to_owned();

    // backfill: the last three nights, as backfill ticks; a reversed range is refused.
    let (from, to): (String, String) = sqlx::query_as(
        "SELECT to_char((now() - interval '3 days') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),
                to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')",
    )
    .fetch_one(&mut ledger)
    .await
    .expect("formatting the range");
    let backfilled = json(&deployment.ctl_ok([
        "schedules",
        "backfill",
        "ctl-nightly",
        "--from",
        &from,
        "--to",
        &to,
        "--actor",
        "dave@test",
        "--json",
    ]));
    let n_backfilled = backfilled["enqueued"].as_array().expect("enqueued").len();
    assert!((2..=3).contains(&n_backfilled), "{backfilled:#}");
    let reversed = deployment.run(
        "upkeepctl",
        [
            "schedules",
            "backfill",
            "ctl-nightly",
            "--from",
            &to,
            "--to",
            &from,
        ],
    );
    reversed.assert_failure_naming(&["reversed"]);
    let unknown = deployment.run("upkeepctl", ["schedules", "trigger", "no-such-schedule"]);
    unknown.assert_failure_naming(&["\"no-such-schedule\""]);

    let (nightly, _) =
        assert_each_job_ran_exactly_once(&mut ledger, "ctl-nightly", Duration::from_secs(20)).await;
    let decisions: Vec<&str> = nightly.iter().map(|t| t.decision.as_str()).collect();
    assert_eq!(
        decisions.iter().filter(|d| **d == "manual").count(),
        1,
        "{nightly:#?}"
    );
    assert_eq!(
        decisions.iter().filter(|d| **d == "backfill").count(),
        n_backfilled,
        "{nightly:#?}"
    );
    let manual = nightly
        .iter()
        .find(|t| t.decision == "manual")
        .expect("one");
    assert_eq!(manual.job_id.map(|id| id.to_string()), Some(job_id));
    assert_eq!(manual.claimed_by, "carol@test");

    // Every action is in the audit trail with its actor.
    let events: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT schedule, action, actor FROM schedule_events
          WHERE actor <> 'config' ORDER BY id",
    )
    .fetch_all(&mut ledger)
    .await
    .expect("reading schedule_events");
    let expected = [
        ("ctl-every-second", "pause", "alice@test"),
        ("ctl-every-second", "resume", "bob@test"),
        ("ctl-nightly", "trigger", "carol@test"),
        ("ctl-nightly", "backfill", "dave@test"),
    ];
    let events: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|(s, a, w)| (s.as_str(), a.as_str(), w.as_str()))
        .collect();
    assert_eq!(events, expected);

    // list and metrics show the health.
    let list = json(&deployment.ctl_ok(["schedules", "list", "--json"]));
    let every_second = list
        .as_array()
        .expect("an array")
        .iter()
        .find(|h| h["name"] == "ctl-every-second")
        .expect("listed");
    assert!(
        every_second["n_skipped_paused"].as_i64() >= Some(2),
        "{every_second:#}"
    );
    assert!(every_second["next_fire_at"].is_string(), "{every_second:#}");
    assert!(
        every_second["last_success_at"].is_string(),
        "{every_second:#}"
    );
    assert!(
        every_second["enqueue_lag_seconds"]
            .as_f64()
            .is_some_and(|lag| lag < 1.0)
    );
    let metrics = deployment.ctl_ok(["schedules", "metrics"]);
    let paused_line = metrics
        .lines()
        .find(|l| {
            l.starts_with(
                "upkeep_schedule_skipped_total{schedule=\"ctl-every-second\",reason=\"paused\"}",
            )
        })
        .unwrap_or_else(|| panic!("no paused counter:\n{metrics}"));
    let n: f64 = paused_line
        .rsplit(' ')
        .next()
        .and_then(|v| v.parse().ok())
        .expect("a value");
    assert!(n >= 2.0, "{paused_line}");
    assert!(
        metrics
            .contains("upkeep_schedule_last_success_timestamp_seconds{schedule=\"ctl-nightly\"}"),
        "{metrics}"
    );
    assert!(scheduler.is_running());
}
