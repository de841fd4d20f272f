//! The API against a real Postgres (a fresh database per test, from `#[sqlx::test]`) and the
//! Redis of `REDIS_URL` under a key prefix of its own, served on 127.0.0.1 and called over HTTP.

mod access;
mod metrics;
mod openapi;
mod pagination;
mod routes;
mod tasks;
mod tokens;

use std::collections::HashMap;

use reqwest::{Client, Method, Response, StatusCode};
use sha2::Digest as _;
use sqlx::PgPool;
use upkeep_api::AppState;
use upkeep_shared::config::Settings;

/// The operate token of every test server (`UPKEEP_API_TOKEN`, named `env`).
pub(crate) const TOKEN: &str = "test-operate-token";
/// A `read` token named `reader`, configured by its SHA-256 digest.
pub(crate) const READ_TOKEN: &str = "test-read-token";
/// Every byte of the servers' `UPKEEP_SECRET_KEY` (the OAuth2 credentials' key).
pub(crate) const SECRET_KEY_BYTE: u8 = 7;
/// A `tokens` token named `keeper`, configured through `token_env`.
pub(crate) const KEEPER_TOKEN: &str = "test-keeper-token";

fn tokens_toml(api_keys: &str) -> String {
    let digest: String = sha2::Sha256::digest(READ_TOKEN.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        "[api]\n{api_keys}\n\
         [[api.tokens]]\nname = \"reader\"\nrole = \"read\"\nsha256 = \"{digest}\"\n\
         [[api.tokens]]\nname = \"keeper\"\nrole = \"tokens\"\ntoken_env = \"KEEPER_TOKEN\"\n"
    )
}

/// A running API over `pool`, with extra TOML appended to its configuration.
pub(crate) struct Api {
    pub(crate) base: String,
    pub(crate) client: Client,
    _server: tokio::task::JoinHandle<()>,
    /// The server's Redis key prefix.
    pub(crate) prefix: String,
}

impl Api {
    pub(crate) async fn start(pool: PgPool, extra_toml: &str) -> Self {
        Self::start_with(pool, "", extra_toml).await
    }

    /// A server whose `[api]` section also holds `api_keys` (`mutating_rate_per_minute = 2`).
    pub(crate) async fn start_with(pool: PgPool, api_keys: &str, extra_toml: &str) -> Self {
        let redis_url =
            std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned());
        let prefix = format!("test-api-{}", uuid::Uuid::new_v4().simple());
        let toml = format!(
            "[redis]\nkey_prefix = \"{prefix}\"\n{extra_toml}\n{}",
            tokens_toml(api_keys)
        );
        let env = HashMap::from([
            ("REDIS_URL".to_owned(), redis_url),
            ("UPKEEP_API_TOKEN".to_owned(), TOKEN.to_owned()),
            ("KEEPER_TOKEN".to_owned(), KEEPER_TOKEN.to_owned()),
            (
                "UPKEEP_SECRET_KEY".to_owned(),
                // base64 of 32 bytes of SECRET_KEY_BYTE
                "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=".to_owned(),
            ),
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
            prefix,
        }
    }

    /// A call with any method, token and JSON body.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> Response {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("request sent")
    }

    /// A GET with the operate token, expecting 200; its JSON body.
    pub(crate) async fn get_ok(&self, path: &str) -> serde_json::Value {
        let response = self.get(path, Some(TOKEN)).await;
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().await.expect("json")
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
    assert_eq!(response.status(), status, "{}", response.url());
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
