//! `GET /api/v1/tasks` and `POST /api/v1/tasks/{id}/ack` over seeded runs and findings.

use chrono::{Duration, Utc};
use reqwest::StatusCode;
use sqlx::PgPool;
use upkeep_shared::store::runs::{self, RunRecord, RunStatus};
use upkeep_shared::{Finding, JobId, Outcome, Severity};

use crate::{Api, TOKEN, error_body};

/// Items satisfied by `system.ping`, which has a handler in every build, so their status
/// depends only on the seeded evidence.
const CHECKLIST: &str = r#"
[[tasks.items]]
name = "ping_check"
period = "daily"
kind = "system.ping"
description = "pinged"

[[tasks.items]]
name = "ping_restore"
period = "daily"
kind = "system.ping"
args = { mode = "restore" }
"#;

fn run(
    status: RunStatus,
    minutes_ago: i64,
    args: serde_json::Value,
    findings: Vec<Finding>,
) -> RunRecord {
    let finished = Utc::now() - Duration::minutes(minutes_ago);
    RunRecord {
        job_id: JobId::new(),
        attempt: 1,
        kind: "system.ping".to_owned(),
        queue: "reports".to_owned(),
        status,
        schedule: None,
        tick_at: None,
        enqueued_at: finished - Duration::seconds(2),
        started_at: finished - Duration::seconds(1),
        finished_at: Some(finished),
        worker: "w".to_owned(),
        args,
        outcome: Some(Outcome {
            summary: "pong".to_owned(),
            findings,
            ..Outcome::default()
        }),
        error: matches!(status, RunStatus::Failed).then(|| "boom".to_owned()),
        next_state: Some(
            if matches!(status, RunStatus::Failed) {
                "retrying"
            } else {
                "done"
            }
            .to_owned(),
        ),
    }
}

async fn daily(api: &Api, date: Option<&str>) -> serde_json::Value {
    let path = match date {
        Some(date) => format!("/api/v1/tasks?period=daily&date={date}"),
        None => "/api/v1/tasks?period=daily".to_owned(),
    };
    let response = api.get(&path, Some(TOKEN)).await;
    assert_eq!(response.status(), StatusCode::OK);
    response.json().await.expect("json")
}

fn item<'a>(list: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    list["items"]
        .as_array()
        .expect("items")
        .iter()
        .find(|item| item["name"] == name)
        .unwrap_or_else(|| panic!("no item {name} in {list}"))
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn a_run_today_is_done_with_its_evidence_and_a_kind_without_handler_is_not_available(
    pool: PgPool,
) {
    // The seeded runs finish a few minutes ago; right after midnight UTC they would fall in
    // yesterday's window, so the test asks for the window that contains them.
    let seeded = run(RunStatus::Succeeded, 2, serde_json::json!({}), vec![]);
    let date = seeded
        .finished_at
        .expect("finished")
        .date_naive()
        .to_string();
    runs::record_runs(&pool, std::slice::from_ref(&seeded))
        .await
        .expect("seeded");
    let api = Api::start(pool, CHECKLIST).await;

    let list = daily(&api, Some(&date)).await;
    let ping = item(&list, "ping_check");
    assert_eq!(ping["status"], "done", "{ping}");
    assert_eq!(ping["id"], format!("daily.ping_check.{date}"));
    assert_eq!(
        ping["evidence"]["last_success"]["job_id"],
        seeded.job_id.to_string()
    );
    // Only runs whose args contain {mode = "restore"} satisfy the second item.
    assert_eq!(item(&list, "ping_restore")["status"], "pending");
    // Every other item has no evidence: not_available exactly when its kind has no handler.
    for entry in list["items"].as_array().expect("items") {
        let Some(kind) = entry["kind"].as_str() else {
            continue;
        };
        if kind == "system.ping" {
            continue;
        }
        let handled = upkeep_shared::job::CATALOG
            .iter()
            .any(|spec| spec.name == kind && spec.has_handler);
        let expected = if handled { "pending" } else { "not_available" };
        assert_eq!(entry["status"], expected, "{entry}");
    }
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn findings_need_attention_until_acknowledged_and_the_ack_is_audited(pool: PgPool) {
    let warned = run(
        RunStatus::Succeeded,
        2,
        serde_json::json!({"mode": "restore"}),
        vec![Finding::new("disk.used_pct", Severity::Warn, "85% used").with_subject("/")],
    );
    let date = warned
        .finished_at
        .expect("finished")
        .date_naive()
        .to_string();
    runs::record_runs(&pool, &[warned]).await.expect("seeded");
    let api = Api::start(pool.clone(), CHECKLIST).await;

    let restore = item(&daily(&api, Some(&date)).await, "ping_restore").clone();
    assert_eq!(restore["status"], "attention", "{restore}");
    assert_eq!(restore["evidence"]["findings"][0]["code"], "disk.used_pct");

    let id = restore["id"].as_str().expect("id");
    let response = api
        .post(
            &format!("/api/v1/tasks/{id}/ack"),
            serde_json::json!({"note": "cleanup booked"}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let restore = item(&daily(&api, Some(&date)).await, "ping_restore").clone();
    assert_eq!(restore["status"], "done", "{restore}");
    assert_eq!(
        restore["evidence"]["acknowledgement"]["note"],
        "cleanup booked"
    );

    let audit: (String, String, String, String) = sqlx::query_as(
        "SELECT actor, action, target, result FROM audit_log ORDER BY id DESC LIMIT 1",
    )
    .fetch_one(&pool)
    .await
    .expect("audited");
    assert_eq!(
        audit,
        (
            "env".to_owned(),
            "tasks.ack".to_owned(),
            id.to_owned(),
            "ok".to_owned()
        )
    );
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn a_failure_after_the_last_success_is_failed_and_a_closed_window_without_runs_is_missed(
    pool: PgPool,
) {
    let success = run(RunStatus::Succeeded, 3, serde_json::json!({}), vec![]);
    let failure = run(RunStatus::Failed, 2, serde_json::json!({}), vec![]);
    let date = failure.finished_at.expect("finished").date_naive();
    runs::record_runs(&pool, &[success, failure])
        .await
        .expect("seeded");
    let api = Api::start(pool, CHECKLIST).await;

    let today = daily(&api, Some(&date.to_string())).await;
    assert_eq!(item(&today, "ping_check")["status"], "failed");
    assert_eq!(
        item(&today, "ping_check")["evidence"]["last_failure"]["error"],
        "boom"
    );

    let last_week = (date - Duration::days(7)).to_string();
    let past = daily(&api, Some(&last_week)).await;
    assert_eq!(item(&past, "ping_check")["status"], "missed");
    let weekly = api
        .get(
            &format!("/api/v1/tasks?period=weekly&date={last_week}"),
            Some(TOKEN),
        )
        .await;
    let weekly: serde_json::Value = weekly.json().await.expect("json");
    assert_eq!(item(&weekly, "security_logs")["status"], "missed");
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn a_non_utc_zone_moves_the_window_boundary(pool: PgPool) {
    // 23:30 UTC on 2026-11-28 is 00:30 on 2026-11-29 in Berlin.
    let mut late = run(RunStatus::Succeeded, 0, serde_json::json!({}), vec![]);
    let at = chrono::DateTime::parse_from_rfc3339("2026-11-28T23:30:00Z")
        .expect("instant")
        .to_utc();
    late.finished_at = Some(at);
    late.started_at = at - Duration::seconds(1);
    late.enqueued_at = at - Duration::seconds(2);
    runs::record_runs(&pool, &[late]).await.expect("seeded");
    let api = Api::start(
        pool,
        &format!("[tasks]\ntimezone = \"Europe/Berlin\"\n{CHECKLIST}"),
    )
    .await;

    let berlin_29th = daily(&api, Some("2026-11-29")).await;
    assert_eq!(berlin_29th["window_start"], "2026-11-28T23:00:00Z");
    assert_eq!(item(&berlin_29th, "ping_check")["status"], "done");
    let berlin_28th = daily(&api, Some("2026-11-28")).await;
    assert_eq!(item(&berlin_28th, "ping_check")["status"], "missed");
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn bad_input_gets_a_4xx_naming_the_field(pool: PgPool) {
    let api = Api::start(pool, CHECKLIST).await;
    let body = error_body(
        api.get("/api/v1/tasks?period=hourly", Some(TOKEN)).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(body["field"], "period");
    let body = error_body(
        api.get("/api/v1/tasks?date=tomorrow", Some(TOKEN)).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(body["field"], "date");

    let note = serde_json::json!({"note": "n"});
    let body = error_body(
        api.post("/api/v1/tasks/nonsense/ack", note.clone()).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(body["field"], "id");
    // 2026-11-24 is a Tuesday: not the first day of an ISO week.
    let body = error_body(
        api.post(
            "/api/v1/tasks/weekly.security_logs.2026-11-24/ack",
            note.clone(),
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(body["field"], "id");
    error_body(
        api.post(
            "/api/v1/tasks/daily.no_such_item.2026-11-24/ack",
            note.clone(),
        )
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let body = error_body(
        api.post(
            "/api/v1/tasks/weekly.security_logs.2026-11-23/ack",
            serde_json::json!({"note": "  "}),
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(body["field"], "note");
    let body = error_body(
        api.post(
            "/api/v1/tasks/weekly.security_logs.2026-11-23/ack",
            serde_json::json!({"nope": 1}),
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    // The unknown field is named; without it, the missing note is.
    assert_eq!(body["field"], "nope");
    let body = error_body(
        api.post(
            "/api/v1/tasks/weekly.security_logs.2026-11-23/ack",
            serde_json::json!({}),
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(body["field"], "note");
}
