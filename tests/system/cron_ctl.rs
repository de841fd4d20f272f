//! `upkeepctl cron next` and `upkeepctl schedules next --from`: checking a cron line before and
//! after deploying it, across DST changes, with the real binary (issue #20).
//!
//! Neither command touches Redis or Postgres, so these tests start no daemon; the database URL
//! they are given does not exist.

use crate::support::Deployment;

/// A deployment whose database is never reached.
fn offline() -> Deployment {
    Deployment::with_database_url("postgres://nobody@127.0.0.1:1/never_used".to_owned())
}

fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"))
}

/// `fire_at` of every previewed fire time.
fn fire_times(preview: &serde_json::Value) -> Vec<&str> {
    preview["fires"]
        .as_array()
        .unwrap_or_else(|| panic!("fires is an array: {preview:#}"))
        .iter()
        .map(|fire| fire["fire_at"].as_str().expect("fire_at is a string"))
        .collect()
}

#[test]
fn cron_next_previews_a_crontab_line_across_the_berlin_spring_gap_without_any_configuration() {
    let deployment = offline();
    // A broken config file does not matter: the line is not configured yet.
    deployment.write_config("this is [not toml");
    let preview = json(&deployment.ctl_ok([
        "cron",
        "next",
        "30 2 * * *",
        "--tz",
        "Europe/Berlin",
        "--from",
        "2026-03-27T12:00:00Z",
        "-n",
        "3",
        "--json",
    ]));
    assert_eq!(preview["expression"], "30 2 * * *");
    assert_eq!(preview["timezone"], "Europe/Berlin");
    assert_eq!(preview["dst_rule"], "wall_clock");
    assert_eq!(
        fire_times(&preview),
        [
            "2026-03-28T01:30:00Z", // 02:30 CET
            "2026-03-29T01:00:00Z", // 02:30 does not exist: 03:00 CEST, the end of the gap
            "2026-03-30T00:30:00Z", // 02:30 CEST
        ]
    );
    assert_eq!(
        preview["fires"][1]["dst"], "skipped_time_fires_at_gap_end",
        "{preview:#}"
    );
    assert_eq!(preview["fires"][1]["local"], "2026-03-29T03:00:00+02:00");

    let text = deployment.ctl_ok([
        "cron",
        "next",
        "30 2 * * *",
        "--tz",
        "Europe/Berlin",
        "--from",
        "2026-03-27 12:00:00",
        "-n",
        "3",
    ]);
    assert!(
        text.contains("2026-03-29T03:00:00+02:00 CEST   DST gap"),
        "the moved fire time is marked:\n{text}"
    );
}

#[test]
fn cron_next_shows_a_cadence_firing_on_both_passes_of_the_new_york_fold() {
    let deployment = offline();
    let preview = json(&deployment.ctl_ok([
        "cron",
        "next",
        "0 30 * * * *",
        "--tz",
        "America/New_York",
        "--from",
        "2026-11-01T04:00:00Z",
        "-n",
        "4",
        "--json",
    ]));
    assert_eq!(preview["dst_rule"], "cadence");
    assert_eq!(
        fire_times(&preview),
        [
            "2026-11-01T04:30:00Z", // 00:30 EDT
            "2026-11-01T05:30:00Z", // 01:30 EDT
            "2026-11-01T06:30:00Z", // 01:30 EST, the second pass
            "2026-11-01T07:30:00Z", // 02:30 EST
        ]
    );
    assert_eq!(preview["fires"][1]["dst"], "repeated_time_first_pass");
    assert_eq!(preview["fires"][2]["dst"], "repeated_time_second_pass");
}

#[test]
fn cron_next_reads_the_four_lines_of_issue_20_as_crontab_does() {
    let deployment = offline();
    // 2026-11-29 is a Sunday.
    let next = |expr: &str, n: &str| {
        let preview = json(&deployment.ctl_ok([
            "cron",
            "next",
            expr,
            "--from",
            "2026-11-29T00:00:00Z",
            "-n",
            n,
            "--json",
        ]));
        fire_times(&preview)
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    // 1-5 is Monday to Friday: never Sunday, and Friday included.
    assert_eq!(
        next("0 30 2 * * 1-5", "6"),
        [
            "2026-11-30T02:30:00Z",
            "2026-12-01T02:30:00Z",
            "2026-12-02T02:30:00Z",
            "2026-12-03T02:30:00Z",
            "2026-12-04T02:30:00Z",
            "2026-12-07T02:30:00Z",
        ]
    );
    // 7 and 0 are Sunday.
    for expr in ["0 0 4 * * 7", "0 0 4 * * 0"] {
        assert_eq!(
            next(expr, "2"),
            ["2026-11-29T04:00:00Z", "2026-12-06T04:00:00Z"],
            "{expr}"
        );
    }
    // The 1st and every Monday.
    assert_eq!(
        next("0 0 0 1 * Mon", "3"),
        [
            "2026-11-30T00:00:00Z",
            "2026-12-01T00:00:00Z",
            "2026-12-07T00:00:00Z"
        ]
    );
    // A five-field crontab line.
    assert_eq!(
        next("0 2 * * *", "2"),
        ["2026-11-29T02:00:00Z", "2026-11-30T02:00:00Z"]
    );
}

#[test]
fn cron_next_refuses_a_bad_line_naming_the_field_and_its_range() {
    let deployment = offline();
    for (expr, needles) in [
        (
            "0 0 * * 8",
            &[
                "invalid cron expression \"0 0 * * 8\"",
                "day-of-week field \"8\": 8 is out of range 0-7",
            ][..],
        ),
        (
            "0 0 30 2 *",
            &["invalid cron expression \"0 0 30 2 *\": can never fire"][..],
        ),
        ("0 2 * *", &["expected 5 fields", "found 4"][..]),
    ] {
        deployment
            .run("upkeepctl", ["cron", "next", expr])
            .assert_failure_naming(needles);
    }
    deployment
        .run(
            "upkeepctl",
            ["cron", "next", "@daily", "--tz", "Europe/Berln"],
        )
        .assert_failure_naming(&["unknown time zone \"Europe/Berln\""]);
}

#[test]
fn schedules_next_from_previews_a_configured_schedule_from_a_given_instant() {
    let deployment = offline();
    deployment.write_config(
        r#"
[[schedules]]
name = "nightly-weekdays"
cron = "30 2 * * Mon-Fri"
timezone = "Europe/Berlin"
kind = "system.ping"
"#,
    );
    let rows = json(&deployment.ctl_ok([
        "schedules",
        "next",
        "nightly-weekdays",
        "--from",
        "2026-03-27T00:00:00Z",
        "-n",
        "3",
        "--json",
    ]));
    let fire_at: Vec<&str> = rows
        .as_array()
        .unwrap_or_else(|| panic!("an array: {rows:#}"))
        .iter()
        .map(|row| row["fire_at"].as_str().expect("fire_at"))
        .collect();
    // Friday 02:30 CET, then Monday and Tuesday 02:30 CEST: the weekend (and its gap) skipped.
    assert_eq!(
        fire_at,
        [
            "2026-03-27T01:30:00Z",
            "2026-03-30T00:30:00Z",
            "2026-03-31T00:30:00Z"
        ]
    );
}

#[test]
fn a_configured_line_that_can_never_fire_stops_the_command_naming_the_schedule() {
    let deployment = offline();
    deployment.write_config(
        r#"
[[schedules]]
name = "leap-day-typo"
cron = "0 0 30 2 *"
kind = "system.ping"
"#,
    );
    deployment
        .run("upkeepctl", ["schedules", "next", "leap-day-typo"])
        .assert_failure_naming(&[
            "schedules[0] (\"leap-day-typo\").cron",
            "invalid cron expression \"0 0 30 2 *\": can never fire",
        ]);
}
