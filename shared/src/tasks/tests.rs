use chrono::{NaiveDate, TimeZone, Utc};

use super::*;
use crate::settings::{Problems, Section};

fn day(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("valid date")
}

fn at(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, min, 0)
        .single()
        .expect("valid instant")
}

fn item(name: &str) -> TaskItem {
    builtin_items()
        .into_iter()
        .find(|item| item.name == name)
        .expect("a built-in item")
}

fn run(finished_at: DateTime<Utc>) -> RunEvidence {
    RunEvidence {
        run_id: 1,
        job_id: uuid::Uuid::nil(),
        attempt: 1,
        finished_at,
        error: None,
    }
}

/// An item whose kind has a handler in every build (`system.ping`), so its status depends only
/// on the evidence.
fn ping_item() -> TaskItem {
    TaskItem {
        name: "ping".to_owned(),
        period: Period::Daily,
        description: "ping".to_owned(),
        satisfied_by: Satisfier::Kind {
            kind: "system.ping".to_owned(),
            args: serde_json::Value::Null,
        },
    }
}

#[test]
fn windows_are_the_local_day_iso_week_and_calendar_month() {
    let berlin: Tz = "Europe/Berlin".parse().expect("zone");
    let daily = Window::containing(Period::Daily, day(2026, 11, 29), berlin);
    assert_eq!(daily.start, at(2026, 11, 28, 23, 0));
    assert_eq!(daily.end, at(2026, 11, 29, 23, 0));
    // Sunday 2026-11-29 is in the ISO week that began on Monday 2026-11-23.
    let weekly = Window::containing(Period::Weekly, day(2026, 11, 29), chrono_tz::UTC);
    assert_eq!(weekly.first_day, day(2026, 11, 23));
    assert_eq!(weekly.end, at(2026, 11, 30, 0, 0));
    let monthly = Window::containing(Period::Monthly, day(2026, 12, 31), chrono_tz::UTC);
    assert_eq!(
        (monthly.start, monthly.end),
        (at(2026, 12, 1, 0, 0), at(2027, 1, 1, 0, 0))
    );
}

#[test]
fn a_day_with_a_dst_change_is_23_or_25_hours_long() {
    let berlin: Tz = "Europe/Berlin".parse().expect("zone");
    let spring = Window::containing(Period::Daily, day(2026, 3, 29), berlin);
    assert_eq!(spring.end - spring.start, Duration::hours(23));
    let autumn = Window::containing(Period::Daily, day(2026, 10, 25), berlin);
    assert_eq!(autumn.end - autumn.start, Duration::hours(25));
}

#[test]
fn each_status_follows_from_its_evidence() {
    let window = Window::containing(Period::Daily, day(2026, 11, 29), chrono_tz::UTC);
    let during = at(2026, 11, 29, 12, 0);
    let after = at(2026, 11, 30, 0, 1);
    let ping = ping_item();
    let none = Evidence::default();
    assert_eq!(evaluate(&ping, &window, &none, during), TaskStatus::Pending);
    assert_eq!(evaluate(&ping, &window, &none, after), TaskStatus::Missed);

    let success = Evidence {
        last_success: Some(run(at(2026, 11, 29, 2, 0))),
        ..Evidence::default()
    };
    assert_eq!(evaluate(&ping, &window, &success, during), TaskStatus::Done);

    let failed_after_success = Evidence {
        last_failure: Some(run(at(2026, 11, 29, 3, 0))),
        ..success.clone()
    };
    assert_eq!(
        evaluate(&ping, &window, &failed_after_success, during),
        TaskStatus::Failed
    );
    let succeeded_after_failure = Evidence {
        last_failure: Some(run(at(2026, 11, 29, 1, 0))),
        ..success.clone()
    };
    assert_eq!(
        evaluate(&ping, &window, &succeeded_after_failure, during),
        TaskStatus::Done
    );

    let warned = Evidence {
        findings: vec![FindingEvidence {
            finding_id: 7,
            code: "disk.used_pct".to_owned(),
            severity: Severity::Warn,
            subject: Some("/".to_owned()),
            message: "85% used".to_owned(),
        }],
        ..success.clone()
    };
    assert_eq!(
        evaluate(&ping, &window, &warned, during),
        TaskStatus::Attention
    );
    let acknowledged = Evidence {
        acknowledgement: Some(Acknowledgement {
            actor: "ops".to_owned(),
            note: "cleanup scheduled".to_owned(),
            at: at(2026, 11, 29, 9, 0),
        }),
        ..warned.clone()
    };
    assert_eq!(
        evaluate(&ping, &window, &acknowledged, during),
        TaskStatus::Done
    );
    // An acknowledgement older than the run it would cover does not cover it.
    let stale_ack = Evidence {
        acknowledgement: Some(Acknowledgement {
            at: at(2026, 11, 29, 1, 0),
            ..acknowledged.acknowledgement.clone().expect("set above")
        }),
        ..warned
    };
    assert_eq!(
        evaluate(&ping, &window, &stale_ack, during),
        TaskStatus::Attention
    );
}

#[test]
fn a_manual_item_is_done_by_an_acknowledgement_alone() {
    let window = Window::containing(Period::Weekly, day(2026, 11, 29), chrono_tz::UTC);
    let audit = item("security_logs");
    let acked = Evidence {
        acknowledgement: Some(Acknowledgement {
            actor: "ops".to_owned(),
            note: "reviewed".to_owned(),
            at: at(2026, 11, 24, 9, 0),
        }),
        ..Evidence::default()
    };
    assert_eq!(
        evaluate(&audit, &window, &acked, at(2026, 11, 25, 0, 0)),
        TaskStatus::Done
    );
    assert_eq!(
        evaluate(&audit, &window, &Evidence::default(), at(2026, 12, 1, 0, 0)),
        TaskStatus::Missed
    );
}

#[test]
fn an_item_whose_kind_has_no_handler_is_not_available_rather_than_missed() {
    let window = Window::containing(Period::Daily, day(2026, 11, 29), chrono_tz::UTC);
    let unhandled: Vec<TaskItem> = builtin_items()
        .into_iter()
        .filter(|item| {
            item.kind()
                .is_some_and(|kind| !CATALOG.iter().any(|s| s.name == kind && s.has_handler))
        })
        .collect();
    for item in unhandled {
        assert_eq!(
            evaluate(&item, &window, &Evidence::default(), at(2026, 12, 1, 0, 0)),
            TaskStatus::NotAvailable,
            "{}",
            item.name
        );
    }
}

#[test]
fn configuration_overrides_removes_and_adds_items() {
    let settings = TasksSettings {
        timezone: "UTC".to_owned(),
        items: vec![
            TaskItemSettings {
                name: "documentation".to_owned(),
                period: None,
                kind: None,
                args: None,
                manual: false,
                description: None,
                enabled: false,
            },
            TaskItemSettings {
                name: "disk_space".to_owned(),
                period: Some(Period::Weekly),
                kind: None,
                args: None,
                manual: false,
                description: Some("disks looked at".to_owned()),
                enabled: true,
            },
            TaskItemSettings {
                name: "review_security_logs".to_owned(),
                period: Some(Period::Daily),
                kind: None,
                args: None,
                manual: true,
                description: None,
                enabled: true,
            },
        ],
    };
    let items = effective_items(&settings);
    assert!(!items.iter().any(|i| i.name == "documentation"));
    let disk = items.iter().find(|i| i.name == "disk_space").expect("kept");
    assert_eq!(
        (disk.period, disk.description.as_str()),
        (Period::Weekly, "disks looked at")
    );
    assert_eq!(disk.kind(), Some("system.disk"));
    let added = items.last().expect("added at the end");
    assert_eq!(
        (added.name.as_str(), &added.satisfied_by),
        ("review_security_logs", &Satisfier::Manual)
    );
}

#[test]
fn item_ids_round_trip_and_bad_ids_say_what_is_wrong() {
    let window = Window::containing(Period::Daily, day(2026, 11, 29), chrono_tz::UTC);
    let id = item("backups").id(&window);
    assert_eq!(id, "daily.backups.2026-11-29");
    assert_eq!(
        parse_item_id(&id),
        Ok((Period::Daily, "backups".to_owned(), day(2026, 11, 29)))
    );
    assert!(
        parse_item_id("hourly.x.2026-11-29")
            .unwrap_err()
            .contains("hourly")
    );
    assert!(
        parse_item_id("daily.x.yesterday")
            .unwrap_err()
            .contains("yesterday")
    );
    assert!(parse_item_id("daily").is_err());
}

#[test]
fn settings_problems_name_the_item_key() {
    let settings = TasksSettings {
        timezone: "Mars/Olympus".to_owned(),
        items: vec![TaskItemSettings {
            name: "New Item".to_owned(),
            period: None,
            kind: Some("backup.everything".to_owned()),
            args: None,
            manual: false,
            description: None,
            enabled: true,
        }],
    };
    let mut problems = Problems::default();
    settings.validate("tasks", &mut problems);
    let keys: Vec<String> = problems.into_vec().into_iter().map(|p| p.key).collect();
    assert_eq!(
        keys,
        vec![
            "tasks.timezone",
            "tasks.items[0].name",
            "tasks.items[0].kind",
            "tasks.items[0].period"
        ]
    );
}
