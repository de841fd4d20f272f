//! Tokens and roles, the rate limit of mutating calls, CORS, and what needs no token.

use reqwest::{Method, StatusCode};
use serde_json::json;
use sqlx::PgPool;

use crate::{Api, KEEPER_TOKEN, READ_TOKEN, TOKEN, error_body};

/// Every read route, with a path that exists.
const READ_ROUTES: &[&str] = &[
    "/api/v1/queues/stats",
    "/api/v1/runs",
    "/api/v1/dead",
    "/api/v1/schedules",
    "/api/v1/tasks",
    "/api/v1/findings",
    "/api/v1/backups",
    "/api/v1/jobs/0190b9a4-7c3e-7000-8000-000000000000",
];

/// Every mutating route.
const MUTATING_ROUTES: &[&str] = &[
    "/api/v1/jobs",
    "/api/v1/dead/0190b9a4-7c3e-7000-8000-000000000000/retry",
    "/api/v1/schedules/x/pause",
    "/api/v1/schedules/x/resume",
    "/api/v1/schedules/x/trigger",
    "/api/v1/tasks/daily.x.2026-11-29/ack",
];

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn every_route_but_health_and_the_document_needs_a_known_token(pool: PgPool) {
    let api = Api::start(pool.clone(), "").await;
    for path in READ_ROUTES {
        error_body(api.get(path, None).await, StatusCode::UNAUTHORIZED).await;
        error_body(api.get(path, Some("wrong")).await, StatusCode::UNAUTHORIZED).await;
        let digest_is_not_a_token = api
            .call(Method::GET, path, Some(&"0".repeat(64)), None)
            .await;
        error_body(digest_is_not_a_token, StatusCode::UNAUTHORIZED).await;
    }
    for path in MUTATING_ROUTES {
        let response = api.call(Method::POST, path, None, Some(json!({}))).await;
        let body = error_body(response, StatusCode::UNAUTHORIZED).await;
        assert!(body.get("field").is_none(), "{body}");
    }
    // Each refusal is audited under the same actor as a refused dashboard sign-in.
    let audited: Vec<(String, String)> =
        sqlx::query_as("SELECT actor, left(result, 3) FROM audit_log ORDER BY id")
            .fetch_all(&pool)
            .await
            .expect("audit rows");
    assert_eq!(
        audited,
        vec![("anonymous".to_owned(), "401".to_owned()); MUTATING_ROUTES.len()]
    );
    for path in ["/api/v1/health", "/api/v1/openapi.json"] {
        assert_eq!(api.get(path, None).await.status(), StatusCode::OK, "{path}");
    }
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn a_read_token_reads_everything_and_is_refused_every_mutation_with_403(pool: PgPool) {
    let api = Api::start(pool.clone(), "").await;
    for path in READ_ROUTES {
        let status = api.get(path, Some(READ_TOKEN)).await.status();
        // The job does not exist: 404 is what an authorized read of it answers.
        assert!(
            status == StatusCode::OK || (status == StatusCode::NOT_FOUND && path.contains("jobs")),
            "{path}: {status}"
        );
    }
    for path in MUTATING_ROUTES {
        let response = api
            .call(Method::POST, path, Some(READ_TOKEN), Some(json!({})))
            .await;
        let body = error_body(response, StatusCode::FORBIDDEN).await;
        assert!(
            body["error"]
                .as_str()
                .expect("msg")
                .contains("needs operate"),
            "{body}"
        );
    }
    let refused: Vec<(String, String)> =
        sqlx::query_as("SELECT actor, left(result, 3) FROM audit_log ORDER BY id")
            .fetch_all(&pool)
            .await
            .expect("audit");
    assert_eq!(
        refused.len(),
        MUTATING_ROUTES.len(),
        "every refusal is audited"
    );
    assert!(
        refused
            .iter()
            .all(|(actor, status)| actor == "reader" && status == "403"),
        "{refused:?}"
    );
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn the_tokens_role_includes_operate(pool: PgPool) {
    let api = Api::start(pool.clone(), "").await;
    let response = api
        .call(
            Method::POST,
            "/api/v1/jobs",
            Some(KEEPER_TOKEN),
            Some(json!({"kind": "system.ping"})),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let actor: String = sqlx::query_scalar("SELECT actor FROM audit_log")
        .fetch_one(&pool)
        .await
        .expect("audited");
    assert_eq!(actor, "keeper");
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn mutating_calls_past_the_per_token_rate_are_429_with_retry_after(pool: PgPool) {
    let api = Api::start_with(pool.clone(), "mutating_rate_per_minute = 2", "").await;
    let ping = json!({"kind": "system.ping"});
    for _ in 0..2 {
        assert_eq!(
            api.post("/api/v1/jobs", ping.clone()).await.status(),
            StatusCode::ACCEPTED
        );
    }
    let limited = api.post("/api/v1/jobs", ping.clone()).await;
    let retry_after: u64 = limited
        .headers()
        .get("retry-after")
        .expect("Retry-After")
        .to_str()
        .expect("ascii")
        .parse()
        .expect("seconds");
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    let body = error_body(limited, StatusCode::TOO_MANY_REQUESTS).await;
    assert!(
        body["error"].as_str().expect("msg").contains("\"env\""),
        "{body}"
    );
    // Another token has its own bucket; reads are not limited.
    let keeper = api
        .call(Method::POST, "/api/v1/jobs", Some(KEEPER_TOKEN), Some(ping))
        .await;
    assert_eq!(keeper.status(), StatusCode::ACCEPTED);
    for _ in 0..5 {
        assert_eq!(
            api.get("/api/v1/runs", Some(TOKEN)).await.status(),
            StatusCode::OK
        );
    }
    let results: Vec<String> =
        sqlx::query_scalar("SELECT left(result, 3) FROM audit_log WHERE actor = 'env' ORDER BY id")
            .fetch_all(&pool)
            .await
            .expect("audit");
    assert_eq!(results, vec!["ok", "ok", "429"]);
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn cors_headers_appear_only_for_configured_origins(pool: PgPool) {
    let closed = Api::start(pool.clone(), "").await;
    let preflight = |api: &Api| {
        api.client
            .request(Method::OPTIONS, format!("{}/api/v1/runs", api.base))
            .header("origin", "https://ops.example.com")
            .header("access-control-request-method", "GET")
            .send()
    };
    let response = preflight(&closed).await.expect("sent");
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none(),
        "CORS is off by default"
    );
    let open = Api::start_with(pool, "cors_origins = [\"https://ops.example.com\"]", "").await;
    let response = preflight(&open).await.expect("sent");
    assert_eq!(
        response
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.to_str().expect("ascii")),
        Some("https://ops.example.com")
    );
}
