//! The dashboard against a real Postgres (a fresh database per test, from `#[sqlx::test]`) and
//! the Redis of `REDIS_URL` under a key prefix of its own, served on 127.0.0.1: over plain HTTP
//! (`http`) and in a real headless Chromium driven through WebDriver (`browser`).

mod browser;
mod http;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::{Client, Response, StatusCode};
use sqlx::PgPool;
use upkeep_api::AppState;
use upkeep_shared::QueueName;
use upkeep_shared::config::Settings;
use upkeep_shared::queue::{NewJob, Queue, Settlement, Verdict};

/// The operate token of every test server.
pub(crate) const TOKEN: &str = "dashboard-test-operate-token";

/// A running API (with its dashboard) over `pool`.
pub(crate) struct Server {
    pub(crate) base: String,
    pub(crate) state: AppState,
    pub(crate) pool: PgPool,
    /// Follows no redirect, so tests see each 303 and its cookies.
    pub(crate) client: Client,
    _server: tokio::task::JoinHandle<()>,
}

impl Server {
    pub(crate) async fn start(pool: PgPool) -> Self {
        let redis_url =
            std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned());
        let prefix = format!("test-dash-{}", uuid::Uuid::new_v4().simple());
        let toml = format!("[redis]\nkey_prefix = \"{prefix}\"\n");
        let env = HashMap::from([
            ("REDIS_URL".to_owned(), redis_url),
            ("UPKEEP_API_TOKEN".to_owned(), TOKEN.to_owned()),
        ]);
        let settings = Settings::from_toml_str(&toml, &env).expect("test settings are valid");
        let mut state = AppState::connect_lazy(settings).expect("state");
        state.db = pool.clone();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let served = state.clone();
        let server = tokio::spawn(async move {
            upkeep_api::run(listener, served, std::future::pending())
                .await
                .expect("server runs");
        });
        Self {
            base,
            state,
            pool,
            client: Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            _server: server,
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) async fn get(&self, path: &str, cookie: Option<&str>) -> Response {
        let mut request = self.client.get(self.url(path));
        if let Some(cookie) = cookie {
            request = request.header(COOKIE, cookie);
        }
        request.send().await.expect("request sent")
    }

    pub(crate) async fn post_form(
        &self,
        path: &str,
        cookie: Option<&str>,
        form: &[(&str, &str)],
    ) -> Response {
        let mut request = self.client.post(self.url(path)).form(form);
        if let Some(cookie) = cookie {
            request = request.header(COOKIE, cookie);
        }
        request.send().await.expect("request sent")
    }

    /// Signs in with `token` over HTTP; returns the session cookie (`name=value`) and the
    /// page's CSRF token.
    pub(crate) async fn sign_in(&self, token: &str) -> (String, String) {
        let (login_cookie, login_csrf) = self.login_form().await;
        let response = self
            .post_form(
                "/login",
                Some(&login_cookie),
                &[("token", token), ("csrf", &login_csrf)],
            )
            .await;
        assert_eq!(
            response.status(),
            StatusCode::SEE_OTHER,
            "sign-in redirects"
        );
        assert_eq!(response.headers()[LOCATION], "/");
        let session = set_cookie(&response, "upkeep_session").expect("a session cookie");
        let cookie = cookie_pair(&session);
        let page = self.get("/", Some(&cookie)).await;
        assert_eq!(page.status(), StatusCode::OK);
        let csrf = hidden_csrf(&page.text().await.expect("body")).expect("a csrf field");
        (cookie, csrf)
    }

    /// Loads the login form: its CSRF cookie (`name=value`) and hidden field.
    pub(crate) async fn login_form(&self) -> (String, String) {
        let response = self.get("/login", None).await;
        assert_eq!(response.status(), StatusCode::OK);
        let cookie = cookie_pair(&set_cookie(&response, "upkeep_login_csrf").expect("csrf cookie"));
        let csrf = hidden_csrf(&response.text().await.expect("body")).expect("csrf field");
        (cookie, csrf)
    }

    /// The `reports` queue of this server.
    pub(crate) fn reports_queue(&self) -> &Queue {
        let name = QueueName::parse("reports").expect("a valid name");
        self.state
            .queues
            .iter()
            .find(|queue| *queue.name() == name)
            .expect("the reports queue is configured")
    }

    /// A `system.ping` job that failed its only attempt: a dead letter of `reports`.
    pub(crate) async fn dead_letter(&self) -> String {
        let queue = self.reports_queue();
        let job = NewJob::new("system.ping", serde_json::json!({}), 1);
        let id = queue.enqueue(&[job]).await.expect("enqueue")[0]
            .id()
            .to_string();
        let fetched = queue.fetch("dashboard-test", 1).await.expect("fetch");
        let leased = &fetched.jobs[0];
        assert_eq!(leased.id, id);
        queue
            .settle(&[Settlement {
                id: leased.id.clone(),
                token: leased.token.clone(),
                verdict: Verdict::Dead,
                error: "seeded failure: the test made this job dead".to_owned(),
            }])
            .await
            .expect("settle");
        let dead = queue.dead_letters(10).await.expect("dead letters");
        assert!(dead.iter().any(|record| record.id == id), "{dead:?}");
        id
    }
}

/// The full `Set-Cookie` line of the cookie `name`.
pub(crate) fn set_cookie(response: &Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .find(|line| line.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

/// `name=value` of a `Set-Cookie` line.
pub(crate) fn cookie_pair(set_cookie: &str) -> String {
    set_cookie
        .split(';')
        .next()
        .expect("a cookie line has a pair")
        .to_owned()
}

/// The value of the first hidden `csrf` field of a page.
pub(crate) fn hidden_csrf(page: &str) -> Option<String> {
    let marker = "name=\"csrf\" value=\"";
    let start = page.find(marker)? + marker.len();
    let end = page[start..].find('"')? + start;
    Some(page[start..end].to_owned())
}

/// Writes a finished attempt into the ledger, as a worker's settle path would.
pub(crate) async fn seed_run(
    pool: &PgPool,
    kind: &str,
    status: &str,
    finished_at: DateTime<Utc>,
    error: Option<&str>,
) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO job_runs (job_id, attempt, kind, queue, status, enqueued_at, started_at, \
         finished_at, duration_ms, worker, args, outcome, error, next_state) \
         VALUES ($1, 1, $2, 'reports', $3, $4 - interval '2 seconds', $4 - interval '1 second', \
         $4, 1000, 'seed', '{}', \
         CASE WHEN $3 = 'succeeded' THEN jsonb_build_object('summary', 'seeded', 'metrics', \
           '{}'::jsonb, 'findings', '[]'::jsonb) END, $5, \
         CASE WHEN $3 = 'succeeded' THEN 'done' ELSE 'dead' END) RETURNING id",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(kind)
    .bind(status)
    .bind(finished_at)
    .bind(error)
    .fetch_one(pool)
    .await
    .expect("seed a run")
}

/// The audit entries with `action`, oldest first: (actor, result).
pub(crate) async fn audit_entries(pool: &PgPool, action: &str) -> Vec<(String, String)> {
    sqlx::query_as("SELECT actor, result FROM audit_log WHERE action = $1 ORDER BY id")
        .bind(action)
        .fetch_all(pool)
        .await
        .expect("read the audit log")
}
