//! The API against a real Postgres (a fresh database per test, from `#[sqlx::test]`) and the
//! Redis of `REDIS_URL` under a key prefix of its own, served on 127.0.0.1 and called over HTTP.

mod metrics;
mod tasks;

use std::collections::HashMap;

use reqwest::{Client, Response, StatusCode};
use sqlx::PgPool;
use upkeep_api::AppState;
use upkeep_shared::config::Settings;

/// The operate token of every test server.
pub(crate) const TOKEN: &str = "test-operate-token";

/// A running API over `pool`, with extra TOML appended to its configuration.
pub(crate) struct Api {
    pub(crate) base: String,
    pub(crate) client: Client,
    _server: tokio::task::JoinHandle<()>,
}

impl Api {
    pub(crate) async fn start(pool: PgPool, extra_toml: &str) -> Self {
        let redis_url =
            std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned());
        let prefix = format!("test-api-{}", uuid::Uuid::new_v4().simple());
        let toml = format!("[redis]\nkey_prefix = \"{prefix}\"\n{extra_toml}");
        let env = HashMap::from([
            ("REDIS_URL".to_owned(), redis_url),
            ("UPKEEP_API_TOKEN".to_owned(), TOKEN.to_owned()),
        ]);
        let settings = Settings::from_toml_str(&toml, &env).expect("test settings are valid");
        let mut state = AppState::connect_lazy(settings).expect("state");
        state.db = pool;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let server = tokio::spawn(async move {
            upkeep_api::run(listener, state, std::future::pending())
                .await
                .expect("server runs");
        });
        Self {
            base,
            client: Client::new(),
            _server: server,
        }
    }

    pub(crate) async fn get(&self, path: &str, token: Option<&str>) -> Response {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("request sent")
    }

    pub(crate) async fn post(&self, path: &str, body: serde_json::Value) -> Response {
        self.client
            .post(format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .expect("request sent")
    }
}

/// Asserts the JSON error shape and returns the body.
pub(crate) async fn error_body(response: Response, status: StatusCode) -> serde_json::Value {
    assert_eq!(response.status(), status);
    let body: serde_json::Value = response.json().await.expect("a JSON error body");
    assert!(body["error"].is_string(), "{body}");
    body
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn health_needs_no_token_and_says_both_dependencies_are_up(pool: PgPool) {
    let api = Api::start(pool, "").await;
    let response = api.get("/api/v1/health", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(
        body,
        serde_json::json!({"status": "ok", "redis": "ok", "postgres": "ok"})
    );
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn routes_refuse_a_missing_or_wrong_token_with_401(pool: PgPool) {
    let api = Api::start(pool, "").await;
    for path in ["/api/v1/tasks", "/api/v1/queues/stats"] {
        error_body(api.get(path, None).await, StatusCode::UNAUTHORIZED).await;
        error_body(api.get(path, Some("wrong")).await, StatusCode::UNAUTHORIZED).await;
    }
    let response = api
        .client
        .post(format!("{}/api/v1/tasks/daily.x.2026-11-29/ack", api.base))
        .json(&serde_json::json!({"note": "n"}))
        .send()
        .await
        .expect("sent");
    error_body(response, StatusCode::UNAUTHORIZED).await;
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn queue_stats_list_every_queue(pool: PgPool) {
    let api = Api::start(pool, "").await;
    let response = api.get("/api/v1/queues/stats", Some(TOKEN)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value = response.json().await.expect("json");
    let names: Vec<&str> = body["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .map(|q| q["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, vec!["backups", "logs", "reports", "tokens"]);
    assert_eq!(body["queues"][0]["pending"], 0);
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn an_unknown_route_is_a_json_404(pool: PgPool) {
    let api = Api::start(pool, "").await;
    error_body(
        api.get("/api/v1/nothing", Some(TOKEN)).await,
        StatusCode::NOT_FOUND,
    )
    .await;
}
