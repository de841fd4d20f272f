//! Contract tests of the routes beside the task list: status codes, JSON shapes, 400s naming
//! the field, 404/409, and the audit rows of mutating calls.

use std::collections::HashMap;

use chrono::{Duration, Utc};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::PgPool;
use upkeep_shared::config::Settings;
use upkeep_shared::queue::{Queue, Settlement, Verdict};
use upkeep_shared::store::backups::{self, NewBackup};
use upkeep_shared::store::runs::{self, RunRecord, RunStatus};
use upkeep_shared::{Finding, JobId, Outcome, Severity};

use crate::{Api, READ_TOKEN, TOKEN, error_body};

/// A finished attempt of `kind` that ended `minutes_ago`, with `findings`.
pub(crate) fn attempt(
    kind: &str,
    status: RunStatus,
    minutes_ago: i64,
    findings: Vec<Finding>,
) -> RunRecord {
    let finished = Utc::now() - Duration::minutes(minutes_ago);
    RunRecord {
        job_id: JobId::new(),
        attempt: 1,
        kind: kind.to_owned(),
        queue: "reports".to_owned(),
        status,
        schedule: None,
        tick_at: None,
        enqueued_at: finished - Duration::seconds(2),
        started_at: finished - Duration::seconds(1),
        finished_at: Some(finished),
        worker: "w".to_owned(),
        args: json!({}),
        outcome: Some(Outcome {
            summary: "done".to_owned(),
            findings,
            ..Outcome::default()
        }),
        error: matches!(status, RunStatus::Failed).then(|| "boom".to_owned()),
        next_state: Some("done".to_owned()),
    }
}

/// The audit rows of `action`, oldest first: (actor, target, result, client_addr).
async fn audit_rows(pool: &PgPool, action: &str) -> Vec<(String, String, String, Option<String>)> {
    sqlx::query_as(
        "SELECT actor, target, result, client_addr FROM audit_log WHERE action = $1 ORDER BY id",
    )
    .bind(action)
    .fetch_all(pool)
    .await
    .expect("audit rows")
}

/// The reports queue of `api`'s Redis prefix, to act as a worker would.
fn reports_queue(api: &Api) -> Queue {
    let settings = Settings::from_toml_str(
        &format!("[redis]\nkey_prefix = \"{}\"\n", api.prefix),
        &HashMap::from([(
            "REDIS_URL".to_owned(),
            std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned()),
        )]),
    )
    .expect("settings");
    settings
        .open_queue(&upkeep_shared::QueueName::parse("reports").expect("name"))
        .expect("queue")
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn an_enqueued_job_is_202_with_its_id_and_queue_and_shows_as_available(pool: PgPool) {
    let api = Api::start(pool.clone(), "").await;
    let response = api
        .post(
            "/api/v1/jobs",
            json!({"kind": "system.ping", "args": {"sleep_ms": 1}}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["queue"], "reports");
    let id = body["job_id"].as_str().expect("job_id").to_owned();

    let job = api.get_ok(&format!("/api/v1/jobs/{id}")).await;
    assert_eq!(job["state"], "available", "{job}");
    assert_eq!(job["kind"], "system.ping");
    assert_eq!(job["queue"], "reports");
    assert_eq!(job["attempts"], json!([]));

    // The same idempotency key twice: one job.
    let keyed = json!({"kind": "system.ping", "idempotency_key": "k-1", "delay_seconds": 60});
    let first: Value = api
        .post("/api/v1/jobs", keyed.clone())
        .await
        .json()
        .await
        .expect("json");
    let second: Value = api
        .post("/api/v1/jobs", keyed)
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(first["job_id"], second["job_id"]);
    let delayed = api
        .get_ok(&format!(
            "/api/v1/jobs/{}",
            first["job_id"].as_str().expect("id")
        ))
        .await;
    assert_eq!(delayed["state"], "scheduled", "{delayed}");

    let audited = audit_rows(&pool, "jobs.enqueue").await;
    assert_eq!(audited.len(), 3);
    assert!(
        audited
            .iter()
            .all(|(actor, target, result, client)| actor == "env"
                && target == "system.ping"
                && result == "ok"
                && client.as_deref() == Some("127.0.0.1")),
        "{audited:?}"
    );
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn a_bad_enqueue_is_400_naming_the_field_and_is_audited(pool: PgPool) {
    let api = Api::start(pool.clone(), "").await;
    let cases = [
        (json!({"args": {}}), "kind"),
        (json!({"kind": 5}), "kind"),
        (json!({"kind": "system.nope"}), "kind"),
        (
            json!({"kind": "system.ping", "args": {"sleep_ms": "x"}}),
            "args",
        ),
        (json!({"kind": "system.ping", "args": [5000]}), "args"),
        (
            json!({"kind": "system.ping", "delay_seconds": -1}),
            "delay_seconds",
        ),
        (
            json!({"kind": "system.ping", "delay_seconds": 1.5}),
            "delay_seconds",
        ),
        (
            json!({"kind": "system.ping", "idempotency_key": ""}),
            "idempotency_key",
        ),
        (json!({"kind": "system.ping", "queue": "logs"}), "queue"),
        (json!(["system.ping"]), "body"),
    ];
    for (body, field) in &cases {
        let error = error_body(
            api.post("/api/v1/jobs", body.clone()).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert_eq!(error["field"], *field, "{body} -> {error}");
    }
    // Not JSON at all: still a JSON error naming the body.
    let response = api
        .client
        .post(format!("{}/api/v1/jobs", api.base))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body("{kind")
        .send()
        .await
        .expect("sent");
    let error = error_body(response, StatusCode::BAD_REQUEST).await;
    assert_eq!(error["field"], "body");
    let response = api
        .client
        .post(format!("{}/api/v1/jobs", api.base))
        .bearer_auth(TOKEN)
        .body("kind=system.ping")
        .send()
        .await
        .expect("sent");
    error_body(response, StatusCode::UNSUPPORTED_MEDIA_TYPE).await;

    let audited = audit_rows(&pool, "jobs.enqueue").await;
    assert_eq!(audited.len(), cases.len() + 2, "{audited:?}");
    assert!(
        audited
            .iter()
            .all(|(_, _, result, _)| result.starts_with("4"))
    );
    assert_eq!(
        api.get_ok("/api/v1/queues/stats").await["queues"][2]["pending"],
        0,
        "nothing was enqueued"
    );
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn a_job_id_that_is_not_a_uuid_is_400_and_an_unknown_one_404(pool: PgPool) {
    let api = Api::start(pool, "").await;
    let error = error_body(
        api.get("/api/v1/jobs/not-a-uuid", Some(TOKEN)).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(error["field"], "id");
    error_body(
        api.get(&format!("/api/v1/jobs/{}", JobId::new()), Some(TOKEN))
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn a_job_known_only_to_the_ledger_lists_its_attempts_as_gone(pool: PgPool) {
    let first = attempt("system.ping", RunStatus::Failed, 3, vec![]);
    let mut second = first.clone();
    second.attempt = 2;
    second.status = RunStatus::Succeeded;
    second.error = None;
    runs::record_runs(&pool, &[first.clone(), second])
        .await
        .expect("seeded");
    let api = Api::start(pool, "").await;
    let job = api.get_ok(&format!("/api/v1/jobs/{}", first.job_id)).await;
    assert_eq!(job["state"], "gone");
    let attempts: Vec<(i64, &str)> = job["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| {
            (
                a["attempt"].as_i64().expect("n"),
                a["status"].as_str().expect("s"),
            )
        })
        .collect();
    assert_eq!(attempts, vec![(1, "failed"), (2, "succeeded")]);
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn a_dead_letter_is_listed_retried_once_then_409_and_an_unknown_id_is_404(pool: PgPool) {
    let api = Api::start(pool.clone(), "").await;
    let body: Value = api
        .post("/api/v1/jobs", json!({"kind": "system.ping"}))
        .await
        .json()
        .await
        .expect("json");
    let id = body["job_id"].as_str().expect("id").to_owned();
    // Act as a worker whose handler gave up on the job.
    let queue = reports_queue(&api);
    let fetched = queue.fetch("test-worker", 1).await.expect("fetch");
    let leased = &fetched.jobs[0];
    assert_eq!(leased.id, id);
    queue
        .settle(&[Settlement {
            id: id.clone(),
            token: leased.token.clone(),
            verdict: Verdict::Dead,
            error: "gave up".to_owned(),
        }])
        .await
        .expect("settled");

    let dead = api.get_ok("/api/v1/dead").await;
    let letters = dead["dead"].as_array().expect("dead");
    assert_eq!(letters.len(), 1, "{dead}");
    assert_eq!(letters[0]["id"], id.as_str());
    assert_eq!(letters[0]["error"], "gave up");
    assert_eq!(letters[0]["queue"], "reports");

    let read_only = api
        .call(
            Method::POST,
            &format!("/api/v1/dead/{id}/retry"),
            Some(READ_TOKEN),
            None,
        )
        .await;
    error_body(read_only, StatusCode::FORBIDDEN).await;

    let retried = api
        .post(&format!("/api/v1/dead/{id}/retry"), json!({}))
        .await;
    assert_eq!(retried.status(), StatusCode::OK);
    let retried: Value = retried.json().await.expect("json");
    assert_eq!(retried, json!({"id": id, "queue": "reports"}));
    assert_eq!(api.get_ok("/api/v1/dead").await["dead"], json!([]));

    let again = api
        .post(&format!("/api/v1/dead/{id}/retry"), json!({}))
        .await;
    let error = error_body(again, StatusCode::CONFLICT).await;
    assert!(
        error["error"].as_str().expect("msg").contains("available"),
        "{error}"
    );
    error_body(
        api.post(&format!("/api/v1/dead/{}/retry", JobId::new()), json!({}))
            .await,
        StatusCode::NOT_FOUND,
    )
    .await;

    let audited: Vec<(String, String)> = audit_rows(&pool, "dead.retry")
        .await
        .into_iter()
        .map(|(actor, _, result, _)| (actor, result.chars().take(3).collect()))
        .collect();
    let expected: Vec<(String, String)> = [
        ("reader", "403"),
        ("env", "ok"),
        ("env", "409"),
        ("env", "404"),
    ]
    .iter()
    .map(|(a, r)| ((*a).to_owned(), (*r).to_owned()))
    .collect();
    assert_eq!(audited, expected);
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn runs_filter_by_kind_and_status_and_refuse_bad_parameters_by_name(pool: PgPool) {
    // One batch each, so row ids follow the order written (within a batch they need not).
    for record in [
        attempt("system.ping", RunStatus::Succeeded, 5, vec![]),
        attempt("system.ping", RunStatus::Failed, 4, vec![]),
        attempt("system.disk", RunStatus::Succeeded, 3, vec![]),
    ] {
        runs::record_runs(&pool, &[record]).await.expect("seeded");
    }
    let api = Api::start(pool, "").await;
    let all = api.get_ok("/api/v1/runs").await;
    let kinds: Vec<&str> = all["runs"]
        .as_array()
        .expect("runs")
        .iter()
        .map(|r| r["kind"].as_str().expect("kind"))
        .collect();
    assert_eq!(
        kinds,
        vec!["system.disk", "system.ping", "system.ping"],
        "newest first"
    );
    assert_eq!(all["next"], Value::Null);

    let failed = api
        .get_ok("/api/v1/runs?kind=system.ping&status=failed")
        .await;
    assert_eq!(failed["runs"].as_array().expect("runs").len(), 1);
    assert_eq!(failed["runs"][0]["error"], "boom");

    for (query, field) in [
        ("status=sleeping", "status"),
        ("kind=system.nope", "kind"),
        ("limit=0", "limit"),
        ("limit=abc", "limit"),
        ("limit=1001", "limit"),
        ("before=-3", "before"),
        ("limit=1&limit=2", "limit"),
        ("colour=red", "colour"),
    ] {
        let error = error_body(
            api.get(&format!("/api/v1/runs?{query}"), Some(TOKEN)).await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert_eq!(error["field"], field, "{query}: {error}");
    }
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn findings_filter_by_severity_code_and_openness(pool: PgPool) {
    let disk = |severity, subject: &str| {
        Finding::new("disk.used_pct", severity, "usage").with_subject(subject)
    };
    // One batch each, so row ids follow the order written (within a batch they need not).
    for record in [
        attempt(
            "system.disk",
            RunStatus::Succeeded,
            30,
            vec![disk(Severity::Warn, "/")],
        ),
        attempt(
            "system.disk",
            RunStatus::Succeeded,
            20,
            vec![disk(Severity::Critical, "/data"), disk(Severity::Ok, "/")],
        ),
        attempt(
            "db.bloat",
            RunStatus::Succeeded,
            10,
            vec![Finding::new(
                "table.dead_tuples_pct",
                Severity::Warn,
                "bloat",
            )],
        ),
    ] {
        runs::record_runs(&pool, &[record]).await.expect("seeded");
    }
    let api = Api::start(pool, "").await;
    let codes = |page: &Value| -> Vec<(String, String, bool)> {
        page["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .map(|f| {
                (
                    f["code"].as_str().expect("code").to_owned(),
                    f["severity"].as_str().expect("severity").to_owned(),
                    f["open"].as_bool().expect("open"),
                )
            })
            .collect()
    };
    let all = api.get_ok("/api/v1/findings").await;
    assert_eq!(codes(&all).len(), 4);
    assert_eq!(codes(&all)[0].0, "table.dead_tuples_pct", "newest first");

    let open = api.get_ok("/api/v1/findings?open=true").await;
    let mut open = codes(&open);
    open.sort();
    assert_eq!(
        open,
        vec![
            ("disk.used_pct".to_owned(), "critical".to_owned(), true),
            ("table.dead_tuples_pct".to_owned(), "warn".to_owned(), true),
        ],
        "the warn on / was resolved by a later ok"
    );
    let warn_disk = api
        .get_ok("/api/v1/findings?severity=warn&code=disk.used_pct")
        .await;
    assert_eq!(
        codes(&warn_disk),
        vec![("disk.used_pct".to_owned(), "warn".to_owned(), false)]
    );
    for (query, field) in [
        ("severity=bad", "severity"),
        ("open=yes", "open"),
        ("limit=0", "limit"),
        ("code=", "code"),
    ] {
        let error = error_body(
            api.get(&format!("/api/v1/findings?{query}"), Some(TOKEN))
                .await,
            StatusCode::BAD_REQUEST,
        )
        .await;
        assert_eq!(error["field"], field, "{query}: {error}");
    }
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn backups_list_the_live_catalog(pool: PgPool) {
    let now = Utc::now();
    let backup = |database: &str, path: &str| NewBackup {
        database: database.to_owned(),
        format: "custom".to_owned(),
        path: path.to_owned(),
        manifest_path: format!("{path}.manifest"),
        globals_path: None,
        size_bytes: 1234,
        sha256: "ab".repeat(32),
        server_version: "16".to_owned(),
        pg_dump_version: "16".to_owned(),
        started_at: now - Duration::minutes(2),
        finished_at: now - Duration::minutes(1),
        verification: "full_read".to_owned(),
        table_count: 3,
        row_counts: json!({}),
        copies: json!([]),
        job_id: None,
    };
    let kept = backups::insert(&pool, &backup("app", "/b/app-1"))
        .await
        .expect("insert");
    let gone = backups::insert(&pool, &backup("app", "/b/app-0"))
        .await
        .expect("insert");
    backups::mark_deleted(&pool, gone).await.expect("deleted");
    backups::insert(&pool, &backup("billing", "/b/billing-1"))
        .await
        .expect("insert");
    let api = Api::start(pool, "").await;
    let all = api.get_ok("/api/v1/backups").await;
    assert_eq!(all["backups"].as_array().expect("backups").len(), 2);
    let app = api.get_ok("/api/v1/backups?database=app").await;
    assert_eq!(app["backups"].as_array().expect("backups").len(), 1);
    assert_eq!(app["backups"][0]["id"], kept);
    assert_eq!(app["backups"][0]["verification"], "full_read");
}

const SCHEDULE: &str =
    "[[schedules]]\nname = \"nightly-ping\"\ncron = \"0 0 3 * * *\"\nkind = \"system.ping\"\n";

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn schedules_show_next_fire_times_and_pause_resume_trigger_are_audited(pool: PgPool) {
    let api = Api::start(pool.clone(), SCHEDULE).await;
    // Configured but not reconciled by a scheduler yet: 409 for pause, 404 for an unknown name.
    error_body(
        api.post("/api/v1/schedules/nightly-ping/pause", json!({}))
            .await,
        StatusCode::CONFLICT,
    )
    .await;
    error_body(
        api.post("/api/v1/schedules/nope/pause", json!({})).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let settings = Settings::from_toml_str(SCHEDULE, &HashMap::new()).expect("settings");
    upkeep_shared::store::schedules::reconcile(&pool, &settings.schedules)
        .await
        .expect("reconciled");

    let list = api.get_ok("/api/v1/schedules").await;
    let schedule = &list["schedules"][0];
    assert_eq!(schedule["name"], "nightly-ping");
    assert_eq!(schedule["paused"], false);
    let next: chrono::DateTime<Utc> =
        serde_json::from_value(schedule["next_fire_at"].clone()).expect("a next fire time");
    assert!(
        next > Utc::now() && next <= Utc::now() + Duration::days(1),
        "{next}"
    );

    let paused: Value = api
        .post("/api/v1/schedules/nightly-ping/pause", json!({}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(paused["changed"], true);
    assert_eq!(
        api.get_ok("/api/v1/schedules").await["schedules"][0]["paused"],
        true
    );
    let again: Value = api
        .post("/api/v1/schedules/nightly-ping/pause", json!({}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(again["changed"], false);
    let resumed: Value = api
        .post("/api/v1/schedules/nightly-ping/resume", json!({}))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        (resumed["action"].as_str(), resumed["changed"].as_bool()),
        (Some("resumed"), Some(true))
    );

    let triggered = api
        .post("/api/v1/schedules/nightly-ping/trigger", json!({}))
        .await;
    assert_eq!(triggered.status(), StatusCode::ACCEPTED);
    let triggered: Value = triggered.json().await.expect("json");
    let job = api
        .get_ok(&format!(
            "/api/v1/jobs/{}",
            triggered["job_id"].as_str().expect("job")
        ))
        .await;
    assert_eq!(job["state"], "available");

    let actions: Vec<(String, String)> = sqlx::query_as(
        "SELECT action, result FROM audit_log WHERE action LIKE 'schedules.%' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .expect("audit");
    let actions: Vec<(&str, String)> = actions
        .iter()
        .map(|(a, r)| (a.as_str(), r.chars().take(3).collect()))
        .collect();
    assert_eq!(
        actions,
        vec![
            ("schedules.pause", "409".to_owned()),
            ("schedules.pause", "404".to_owned()),
            ("schedules.pause", "ok".to_owned()),
            ("schedules.pause", "ok".to_owned()),
            ("schedules.resume", "ok".to_owned()),
            ("schedules.trigger", "ok".to_owned()),
        ]
    );
    let actor: String =
        sqlx::query_scalar("SELECT actor FROM schedule_events WHERE action = 'trigger'")
            .fetch_one(&pool)
            .await
            .expect("event");
    assert_eq!(actor, "api:env");
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn a_wrong_method_is_a_json_405(pool: PgPool) {
    let api = Api::start(pool, "").await;
    let response = api
        .call(Method::DELETE, "/api/v1/runs", Some(TOKEN), None)
        .await;
    error_body(response, StatusCode::METHOD_NOT_ALLOWED).await;
}
