//! OAuth2 token refresh end to end: real `upkeep-worker-tokens` processes (and the scheduler
//! where a job stream is needed) against a real OAuth2 token endpoint the test starts on
//! 127.0.0.1 (axum), with a real Postgres and Redis.
//!
//! The endpoint models a rotating provider with replay detection the way Okta and Auth0 do it:
//! the current refresh token is accepted; the previous one is accepted only while its
//! successor has never been presented (the response may have been lost with a killed
//! worker); any other reuse revokes the grant. A non-rotating endpoint accepts one fixed
//! refresh token and never returns a new one.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt as _;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use upkeep_tests::ChildProcess;

use crate::support::{Deployment, eventually, wait_for_worker};

/// What the endpoint answers to the next request, before normal processing.
#[derive(Debug, Clone, Copy)]
enum Scripted {
    /// 503 with a non-JSON body.
    Unavailable,
    /// 400 `invalid_grant`.
    InvalidGrant,
}

/// One credential's grant at the endpoint.
#[derive(Debug, Default)]
struct Grant {
    rotating: bool,
    /// Refresh tokens issued, oldest first; the last is current.
    chain: Vec<String>,
    /// Indexes of `chain` the client has presented.
    presented: HashSet<usize>,
    revoked: bool,
    n_requests: u32,
    /// Accepted presentations of the previous token (a lost response).
    n_grace_reuses: u32,
    access_tokens: Vec<String>,
    /// Unix ms of each accepted request, with the expiry of the access token it replaced.
    refreshes: Vec<(u128, Option<u128>)>,
    script: VecDeque<Scripted>,
}

#[derive(Debug, Default)]
struct EndpointState {
    client_secret: String,
    expires_in: u64,
    /// Upper bound of a random delay before answering, ms.
    max_delay_ms: u64,
    grants: HashMap<String, Grant>,
}

/// The token endpoint: `POST /token/{credential}`.
struct Endpoint {
    addr: SocketAddr,
    state: Arc<Mutex<EndpointState>>,
}

impl Endpoint {
    async fn start(client_secret: &str, expires_in: u64, max_delay_ms: u64) -> Self {
        let state = Arc::new(Mutex::new(EndpointState {
            client_secret: client_secret.to_owned(),
            expires_in,
            max_delay_ms,
            grants: HashMap::new(),
        }));
        let app = axum::Router::new()
            .route("/token/{credential}", axum::routing::post(token))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the token endpoint");
        let addr = listener.local_addr().expect("its address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { addr, state }
    }

    /// Creates a grant and returns its first refresh token.
    fn grant(&self, credential: &str, rotating: bool) -> String {
        let token = secret("rt");
        self.state.lock().unwrap().grants.insert(
            credential.to_owned(),
            Grant {
                rotating,
                chain: vec![token.clone()],
                ..Grant::default()
            },
        );
        token
    }

    fn url(&self, credential: &str) -> String {
        format!("http://{}/token/{credential}", self.addr)
    }

    fn with<T>(&self, credential: &str, f: impl FnOnce(&mut Grant) -> T) -> T {
        f(self
            .state
            .lock()
            .unwrap()
            .grants
            .get_mut(credential)
            .expect("a grant"))
    }

    /// Every token the endpoint ever issued or accepted.
    fn all_secrets(&self) -> Vec<String> {
        let state = self.state.lock().unwrap();
        let mut secrets = vec![state.client_secret.clone()];
        for grant in state.grants.values() {
            secrets.extend(grant.chain.iter().cloned());
            secrets.extend(grant.access_tokens.iter().cloned());
        }
        secrets
    }
}

fn secret(kind: &str) -> String {
    format!("{kind}-secret-{}", uuid::Uuid::new_v4().simple())
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

fn oauth_error(status: StatusCode, code: &str) -> Response {
    (
        status,
        [("content-type", "application/json")],
        format!("{{\"error\":\"{code}\"}}"),
    )
        .into_response()
}

/// Processes the request at once and answers after a random delay, so a client killed while
/// it waits loses a response whose tokens were already issued (the dangerous case).
async fn token(
    State(state): State<Arc<Mutex<EndpointState>>>,
    Path(credential): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let delay = {
        let state = state.lock().unwrap();
        if state.max_delay_ms == 0 {
            0
        } else {
            rand::random_range(0..=state.max_delay_ms)
        }
    };
    let response = answer(&state, &credential, &headers, &body);
    tokio::time::sleep(Duration::from_millis(delay)).await;
    response
}

fn answer(
    state: &Mutex<EndpointState>,
    credential: &str,
    headers: &HeaderMap,
    body: &str,
) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let mut state = state.lock().unwrap();
    let expected_auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("upkeep:{}", state.client_secret))
    );
    let authorised = headers
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        == Some(expected_auth.as_str());
    let expires_in = state.expires_in;
    let Some(grant) = state.grants.get_mut(credential) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
    };
    grant.n_requests += 1;
    if !authorised {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client");
    }
    if form.get("grant_type").map(String::as_str) != Some("refresh_token") {
        return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type");
    }
    match grant.script.pop_front() {
        Some(Scripted::Unavailable) => {
            return (StatusCode::SERVICE_UNAVAILABLE, "<html>down</html>").into_response();
        }
        Some(Scripted::InvalidGrant) => {
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
        }
        None => {}
    }
    if grant.revoked {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
    }
    let presented = form.get("refresh_token").cloned().unwrap_or_default();
    let last = grant.chain.len() - 1;
    let Some(index) = grant.chain.iter().position(|t| *t == presented) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
    };
    if grant.rotating && index != last {
        if index + 1 == last && !grant.presented.contains(&last) {
            grant.n_grace_reuses += 1;
        } else {
            // A replay: an old refresh token came back. Revoke the whole grant.
            grant.revoked = true;
            return oauth_error(StatusCode::BAD_REQUEST, "invalid_grant");
        }
    }
    grant.presented.insert(index);
    let now = now_ms();
    let replaced_expiry = grant
        .refreshes
        .last()
        .map(|(at, _)| at + u128::from(expires_in) * 1000);
    grant.refreshes.push((now, replaced_expiry));
    let access_token = secret("at");
    grant.access_tokens.push(access_token.clone());
    let mut body = serde_json::json!({
        "access_token": access_token,
        "token_type": "bearer",
        "expires_in": expires_in,
    });
    if grant.rotating {
        let next = secret("rt");
        grant.chain.push(next.clone());
        body["refresh_token"] = next.into();
    }
    (StatusCode::OK, axum::Json(body)).into_response()
}

/// A deployment with `[tokens]` for `credentials` (name, token URL) and the keys set.
struct TokenSetup {
    deployment: Deployment,
    secret_key: String,
    export_dir: tempfile::TempDir,
}

fn key_base64(byte: u8) -> String {
    let mut key = [byte; 32];
    key[0] = rand::random();
    key[31] = rand::random();
    base64::engine::general_purpose::STANDARD.encode(key)
}

async fn setup(endpoint: &Endpoint, credentials: &[&str], extra_tokens: &str) -> TokenSetup {
    let mut deployment = Deployment::new().await;
    let secret_key = key_base64(7);
    let export_dir = tempfile::tempdir().expect("an export directory");
    let mut toml = format!(
        "[queues.tokens]\nlease = \"3s\"\nbackoff_base = \"200ms\"\nbackoff_max = \"1s\"\n\n\
         [tokens]\nrequest_timeout = \"3s\"\nretry_base = \"1s\"\nretry_max = \"2s\"\n{extra_tokens}\n"
    );
    for name in credentials {
        toml.push_str(&format!(
            "[[tokens.providers]]\nname = \"{name}\"\ntoken_url = \"{}\"\nclient_id = \"upkeep\"\n\
             client_secret_env = \"TEST_CLIENT_SECRET\"\nexport_file = \"{}\"\n\n",
            endpoint.url(name),
            export_dir.path().join(name).display()
        ));
    }
    deployment.write_config(&toml);
    deployment.set_env("UPKEEP_SECRET_KEY", &secret_key);
    let client_secret = endpoint.state.lock().unwrap().client_secret.clone();
    deployment.set_env("TEST_CLIENT_SECRET", &client_secret);
    TokenSetup {
        deployment,
        secret_key,
        export_dir,
    }
}

impl TokenSetup {
    /// `upkeepctl tokens add NAME --refresh-token-stdin` with `token` on stdin.
    fn add(&self, name: &str, token: &str) {
        let mut command = self.deployment.command(
            "upkeepctl",
            ["tokens", "add", name, "--refresh-token-stdin"],
        );
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("starting upkeepctl tokens add");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(format!("{token}\n").as_bytes())
            .expect("writing the token");
        let output = child.wait_with_output().expect("upkeepctl tokens add");
        assert!(
            output.status.success(),
            "tokens add failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    fn worker(&self) -> ChildProcess {
        let mut worker = self
            .deployment
            .start("upkeep-worker-tokens", [] as [&str; 0]);
        wait_for_worker(&mut worker, "tokens");
        worker
    }

    fn enqueue(&self, args: &str, count: usize) -> Vec<uuid::Uuid> {
        self.deployment
            .enqueue("tokens.refresh", args, &["--count", &count.to_string()])
    }

    async fn row(&self, name: &str) -> (String, i64, i32, Option<String>) {
        let mut ledger = self.deployment.ledger().await;
        sqlx::query_as(
            "SELECT status, token_version, consecutive_failures, last_error FROM oauth_tokens \
             WHERE provider = $1",
        )
        .bind(name)
        .fetch_one(&mut ledger)
        .await
        .expect("the credential's row")
    }

    /// Waits until every job in `ids` has a succeeded run; returns their outcomes.
    async fn outcomes(&self, ids: &[uuid::Uuid], timeout: Duration) -> Vec<serde_json::Value> {
        let mut ledger = self.deployment.ledger().await;
        eventually("the refresh jobs to succeed", timeout, async || {
            let outcomes: Vec<serde_json::Value> = sqlx::query_scalar(
                "SELECT outcome FROM job_runs WHERE job_id = ANY($1) AND status = 'succeeded'",
            )
            .bind(ids)
            .fetch_all(&mut ledger)
            .await
            .ok()?;
            (outcomes.len() == ids.len()).then_some(outcomes)
        })
        .await
    }

    /// Everything upkeep recorded in the ledger, as text.
    async fn ledger_text(&self) -> String {
        let mut ledger = self.deployment.ledger().await;
        let runs: Option<String> = sqlx::query_scalar(
            "SELECT string_agg(concat_ws(' ', outcome::text, error, worker), E'\\n') FROM job_runs",
        )
        .fetch_one(&mut ledger)
        .await
        .expect("job_runs");
        let findings: Option<String> = sqlx::query_scalar(
            "SELECT string_agg(row_to_json(findings)::text, E'\\n') FROM findings",
        )
        .fetch_one(&mut ledger)
        .await
        .expect("findings");
        let tokens: Option<String> = sqlx::query_scalar(
            "SELECT string_agg(concat_ws(' ', provider, status, last_error, key_id), E'\\n') \
             FROM oauth_tokens",
        )
        .fetch_one(&mut ledger)
        .await
        .expect("oauth_tokens");
        format!(
            "{}\n{}\n{}",
            runs.unwrap_or_default(),
            findings.unwrap_or_default(),
            tokens.unwrap_or_default()
        )
    }

    /// Asserts that no secret appears in any of `texts` (logs, CLI output, the ledger).
    async fn assert_no_secret_in(&self, endpoint: &Endpoint, texts: &[(&str, String)]) {
        let ledger = self.ledger_text().await;
        let list = self.deployment.ctl_ok(["tokens", "list"]);
        let list_json = self.deployment.ctl_ok(["tokens", "list", "--json"]);
        let mut secrets = endpoint.all_secrets();
        secrets.push(self.secret_key.clone());
        let mut all: Vec<(&str, &str)> = vec![
            ("the ledger", ledger.as_str()),
            ("tokens list", list.as_str()),
            ("tokens list --json", list_json.as_str()),
        ];
        all.extend(texts.iter().map(|(what, text)| (*what, text.as_str())));
        assert!(secrets.len() > 2, "the run issued tokens to look for");
        for (what, text) in all {
            for secret in &secrets {
                assert!(
                    !text.contains(secret.as_str()),
                    "a secret leaked into {what}"
                );
            }
        }
    }
}

fn finding_codes(outcome: &serde_json::Value) -> Vec<(String, String, String)> {
    outcome["findings"]
        .as_array()
        .map(|findings| {
            findings
                .iter()
                .map(|f| {
                    (
                        f["code"].as_str().unwrap_or_default().to_owned(),
                        f["severity"].as_str().unwrap_or_default().to_owned(),
                        f["subject"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn rotating_and_non_rotating_credentials_are_refreshed_before_they_expire() {
    // Arrange: tokens live 4 s; refreshed at 75% (minus jitter), at the latest 1 s ahead.
    let endpoint = Endpoint::start(&secret("cs"), 4, 0).await;
    let rotating_rt = endpoint.grant("rotating", true);
    let static_rt = endpoint.grant("static", false);
    let setup = setup(&endpoint, &["rotating", "static"], "min_ahead = \"1s\"\n").await;
    setup.add("rotating", &rotating_rt);
    setup.add("static", &static_rt);
    let worker = setup.worker();

    // Act: a refresh job every 250 ms for 10 s, as a fast schedule would enqueue them.
    let started = Instant::now();
    let mut ids = Vec::new();
    while started.elapsed() < Duration::from_secs(10) {
        ids.extend(setup.enqueue("{}", 1));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    setup.outcomes(&ids, Duration::from_secs(30)).await;

    // Assert: both were refreshed several times, each time before the previous token expired,
    // and only as they came due (about every 3 s), not on every job.
    for name in ["rotating", "static"] {
        let refreshes = endpoint.with(name, |grant| grant.refreshes.clone());
        assert!(
            (3..=6).contains(&refreshes.len()),
            "{name}: {} refreshes in 10 s",
            refreshes.len()
        );
        for (at, replaced_expiry) in refreshes.iter().skip(1) {
            let expiry = replaced_expiry.expect("a replaced token");
            assert!(*at < expiry, "{name} refreshed after expiry");
        }
        assert!(!endpoint.with(name, |grant| grant.revoked));
        // The export file and `tokens get` give the newest access token.
        let newest = endpoint.with(name, |grant| grant.access_tokens.last().cloned().unwrap());
        let got = setup.deployment.ctl_ok(["tokens", "get", name]);
        assert_eq!(got.trim(), newest, "{name}: tokens get");
        let export = setup.export_dir.path().join(name);
        let exported = std::fs::read_to_string(&export).expect("the export file");
        let mode = std::fs::metadata(&export).unwrap().permissions().mode() & 0o777;
        assert!(
            exported.trim() == newest
                || endpoint.with(name, |g| g.access_tokens.len() > 1
                    && exported.trim() == g.access_tokens[g.access_tokens.len() - 2]),
            "{name}: the export file holds a current token"
        );
        assert_eq!(mode, 0o600);
    }
    let (status, version, failures, _) = setup.row("rotating").await;
    assert_eq!((status.as_str(), failures), ("active", 0));
    assert!(version >= 4);
    setup
        .assert_no_secret_in(&endpoint, &[("the worker's log", worker.log())])
        .await;
}

#[tokio::test]
async fn twenty_concurrent_refreshes_across_three_workers_send_one_request() {
    // Arrange: a slow endpoint (up to 300 ms) widens the race window.
    let endpoint = Endpoint::start(&secret("cs"), 3600, 300).await;
    let rt = endpoint.grant("crm", true);
    let mut setup = setup(&endpoint, &["crm"], "").await;
    setup
        .deployment
        .set_env("UPKEEP__QUEUES__TOKENS__CONCURRENCY", "8");
    setup.add("crm", &rt);
    let workers: Vec<ChildProcess> = (0..3).map(|_| setup.worker()).collect();

    // Act
    let ids = setup.enqueue("{\"provider\":\"crm\"}", 20);
    let outcomes = setup.outcomes(&ids, Duration::from_secs(60)).await;

    // Assert: one request reached the endpoint; every job saw version 2.
    assert_eq!(endpoint.with("crm", |grant| grant.n_requests), 1);
    for outcome in &outcomes {
        assert_eq!(outcome["metrics"]["token_versions"]["crm"], 2, "{outcome}");
    }
    let refreshed: u64 = outcomes
        .iter()
        .map(|o| o["metrics"]["refreshed"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(refreshed, 1);
    let mut ledger = setup.deployment.ledger().await;
    let n_workers: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT worker) FROM job_runs WHERE job_id = ANY($1)")
            .bind(&ids)
            .fetch_one(&mut ledger)
            .await
            .unwrap();
    assert!(n_workers >= 2, "the jobs ran on {n_workers} worker(s)");
    let logs: Vec<(&str, String)> = workers
        .iter()
        .map(|w| ("a worker's log", w.log()))
        .collect();
    setup.assert_no_secret_in(&endpoint, &logs).await;
}

#[tokio::test]
async fn invalid_grant_marks_the_credential_needs_reauth_after_one_request_without_retry() {
    let endpoint = Endpoint::start(&secret("cs"), 3600, 0).await;
    let rt = endpoint.grant("crm", true);
    endpoint.with("crm", |grant| {
        grant.script.push_back(Scripted::InvalidGrant)
    });
    let setup = setup(&endpoint, &["crm"], "").await;
    setup.add("crm", &rt);
    let worker = setup.worker();

    let first = setup.enqueue("{}", 1);
    let outcomes = setup.outcomes(&first, Duration::from_secs(30)).await;
    let later = setup.enqueue("{}", 3);
    let later_outcomes = setup.outcomes(&later, Duration::from_secs(30)).await;

    assert_eq!(endpoint.with("crm", |grant| grant.n_requests), 1);
    let (status, _, failures, last_error) = setup.row("crm").await;
    assert_eq!(status, "needs_reauth");
    assert_eq!(failures, 1);
    assert!(last_error.unwrap().contains("invalid_grant"));
    assert!(
        finding_codes(&outcomes[0]).contains(&(
            "tokens.needs_reauth".to_owned(),
            "critical".to_owned(),
            "crm".to_owned()
        )),
        "{}",
        outcomes[0]
    );
    for outcome in &later_outcomes {
        assert_eq!(outcome["metrics"]["requests"], 0, "{outcome}");
    }
    // Re-authorising makes it active again, and the next job refreshes it.
    let fresh = endpoint.grant("crm", true);
    setup.add("crm", &fresh);
    let ids = setup.enqueue("{}", 1);
    let outcomes = setup.outcomes(&ids, Duration::from_secs(30)).await;
    assert_eq!(setup.row("crm").await.0, "active");
    assert!(
        finding_codes(&outcomes[0]).contains(&(
            "tokens.needs_reauth".to_owned(),
            "ok".to_owned(),
            "crm".to_owned()
        )),
        "the condition is resolved: {}",
        outcomes[0]
    );
    setup
        .assert_no_secret_in(&endpoint, &[("the worker's log", worker.log())])
        .await;
}

#[tokio::test]
async fn a_503_keeps_the_old_tokens_and_the_refresh_recovers_after_a_backoff() {
    let endpoint = Endpoint::start(&secret("cs"), 3600, 0).await;
    let rt = endpoint.grant("crm", true);
    endpoint.with("crm", |grant| {
        grant.script.push_back(Scripted::Unavailable);
        grant.script.push_back(Scripted::Unavailable);
    });
    let setup = setup(&endpoint, &["crm"], "").await;
    setup.add("crm", &rt);
    let worker = setup.worker();

    let first = setup.enqueue("{}", 1);
    let outcomes = setup.outcomes(&first, Duration::from_secs(30)).await;
    let (status, version, failures, last_error) = setup.row("crm").await;
    assert_eq!((status.as_str(), version, failures), ("active", 1, 1));
    assert!(last_error.unwrap().contains("HTTP 503"));
    assert!(
        finding_codes(&outcomes[0])
            .iter()
            .any(|(code, _, _)| code == "tokens.refresh_failing")
    );

    // Jobs keep coming (as the every-minute schedule would); the backoff spaces the requests.
    let started = Instant::now();
    let mut ids = Vec::new();
    while setup.row("crm").await.1 < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "never recovered"
        );
        ids.extend(setup.enqueue("{}", 1));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let outcomes = setup.outcomes(&ids, Duration::from_secs(30)).await;

    let (status, version, failures, _) = setup.row("crm").await;
    assert_eq!((status.as_str(), version, failures), ("active", 2, 0));
    let n_requests = endpoint.with("crm", |grant| grant.n_requests);
    assert_eq!(n_requests, 3, "two 503s, then the success");
    assert!(
        ids.len() > 5,
        "jobs ran during the backoff without requests ({} jobs)",
        ids.len()
    );
    assert!(
        outcomes.iter().flat_map(finding_codes).any(|f| f
            == (
                "tokens.refresh_failing".to_owned(),
                "ok".to_owned(),
                "crm".to_owned()
            )),
        "the failing condition is resolved"
    );
    setup
        .assert_no_secret_in(&endpoint, &[("the worker's log", worker.log())])
        .await;
}

#[tokio::test]
async fn a_ciphertext_moved_to_another_row_or_column_is_refused_as_decrypt_error() {
    let endpoint = Endpoint::start(&secret("cs"), 3600, 0).await;
    let rts: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|name| endpoint.grant(name, true))
        .collect();
    let setup = setup(&endpoint, &["a", "b", "c"], "").await;
    for (name, rt) in ["a", "b", "c"].iter().zip(&rts) {
        setup.add(name, rt);
    }
    let worker = setup.worker();
    let ids = setup.enqueue("{}", 1);
    setup.outcomes(&ids, Duration::from_secs(30)).await;

    // Swap the refresh tokens of a and b; swap c's access and refresh columns.
    let mut ledger = setup.deployment.ledger().await;
    sqlx::raw_sql(
        "UPDATE oauth_tokens SET refresh_token = CASE provider
             WHEN 'a' THEN (SELECT refresh_token FROM oauth_tokens WHERE provider = 'b')
             ELSE (SELECT refresh_token FROM oauth_tokens WHERE provider = 'a') END,
             next_attempt_at = NULL, expires_at = now()
         WHERE provider IN ('a', 'b');
         UPDATE oauth_tokens SET access_token = refresh_token, refresh_token = access_token,
             expires_at = now() WHERE provider = 'c';",
    )
    .execute(&mut ledger)
    .await
    .expect("swapping ciphertexts");
    let n_requests_before: u32 = ["a", "b", "c"]
        .iter()
        .map(|name| endpoint.with(name, |grant| grant.n_requests))
        .sum();

    let ids = setup.enqueue("{}", 1);
    let outcomes = setup.outcomes(&ids, Duration::from_secs(30)).await;

    for name in ["a", "b", "c"] {
        let (status, _, _, last_error) = setup.row(name).await;
        assert_eq!(status, "decrypt_error", "{name}");
        assert!(last_error.unwrap().contains("does not decrypt"));
        assert!(finding_codes(&outcomes[0]).contains(&(
            "tokens.decrypt_error".to_owned(),
            "critical".to_owned(),
            name.to_owned()
        )));
        let get = setup.deployment.run("upkeepctl", ["tokens", "get", name]);
        assert!(!get.status.success());
    }
    let n_requests_after: u32 = ["a", "b", "c"]
        .iter()
        .map(|name| endpoint.with(name, |grant| grant.n_requests))
        .sum();
    assert_eq!(n_requests_before, n_requests_after, "nothing was sent");
    setup
        .assert_no_secret_in(&endpoint, &[("the worker's log", worker.log())])
        .await;
}

#[tokio::test]
async fn rotate_key_under_load_leaves_every_credential_readable_with_the_new_key_only() {
    // Arrange: five credentials refreshed continuously (tokens live 2 s) by two workers.
    let endpoint = Endpoint::start(&secret("cs"), 2, 50).await;
    let names = ["p1", "p2", "p3", "p4", "p5"];
    let rts: Vec<String> = names.iter().map(|n| endpoint.grant(n, true)).collect();
    let mut setup = setup(&endpoint, &names, "min_ahead = \"500ms\"\n").await;
    for (name, rt) in names.iter().zip(&rts) {
        setup.add(name, rt);
    }
    let old_key = setup.secret_key.clone();
    let new_key = key_base64(9);
    setup.deployment.set_env("UPKEEP_SECRET_KEY", &new_key);
    setup
        .deployment
        .set_env("UPKEEP_SECRET_KEY_PREVIOUS", &old_key);
    let workers: Vec<ChildProcess> = (0..2).map(|_| setup.worker()).collect();

    // Act: jobs keep flowing while rotate-key runs.
    let mut ids = setup.enqueue("{}", 1);
    let rotate = {
        let command = setup
            .deployment
            .command("upkeepctl", ["tokens", "rotate-key", "--batch", "2"]);
        setup
            .deployment
            .run_command("rotate-key", command, Duration::from_secs(60))
    };
    for _ in 0..10 {
        ids.extend(setup.enqueue("{}", 2));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    rotate.assert_success();
    setup.outcomes(&ids, Duration::from_secs(60)).await;
    drop(workers);

    // Assert: with the old key gone, every credential reads and refreshes.
    setup.deployment.set_env("UPKEEP_SECRET_KEY_PREVIOUS", "");
    let mut ledger = setup.deployment.ledger().await;
    let key_ids: Vec<String> = sqlx::query_scalar("SELECT DISTINCT key_id FROM oauth_tokens")
        .fetch_all(&mut ledger)
        .await
        .unwrap();
    assert_eq!(key_ids.len(), 1, "{key_ids:?}");
    let worker = setup.worker();
    sqlx::query("UPDATE oauth_tokens SET expires_at = now()")
        .execute(&mut ledger)
        .await
        .unwrap();
    let ids = setup.enqueue("{}", 1);
    let outcomes = setup.outcomes(&ids, Duration::from_secs(30)).await;
    assert_eq!(outcomes[0]["metrics"]["refreshed"], 5, "{}", outcomes[0]);
    for name in names {
        assert_eq!(setup.row(name).await.0, "active");
        let newest = endpoint.with(name, |grant| grant.access_tokens.last().cloned().unwrap());
        assert_eq!(
            setup.deployment.ctl_ok(["tokens", "get", name]).trim(),
            newest
        );
        assert!(!endpoint.with(name, |grant| grant.revoked));
    }
    setup
        .assert_no_secret_in(
            &endpoint,
            &[
                ("the worker's log", worker.log()),
                ("rotate-key", format!("{}{}", rotate.stdout, rotate.stderr)),
                ("new key", String::new()),
            ],
        )
        .await;
    for text in [worker.log(), setup.ledger_text().await] {
        assert!(!text.contains(&new_key) && !text.contains(&old_key));
    }
}

#[tokio::test]
async fn many_refresh_cycles_with_workers_killed_at_random_never_get_the_grant_revoked() {
    // Arrange: a rotating grant whose tokens are due almost at once (lifetime 1 s, refreshed
    // after 10%), three workers, and an endpoint that answers within 0-120 ms (a wide window for a kill mid-request).
    let endpoint = Endpoint::start(&secret("cs"), 1, 120).await;
    let rt = endpoint.grant("crm", true);
    let mut setup = setup(
        &endpoint,
        &["crm"],
        "refresh_at = 0.1\nmin_ahead = \"0s\"\n",
    )
    .await;
    setup
        .deployment
        .set_env("UPKEEP__QUEUES__TOKENS__CONCURRENCY", "4");
    setup.add("crm", &rt);
    let mut workers: Vec<ChildProcess> = (0..3).map(|_| setup.worker()).collect();

    // Act: for about 60 s, keep jobs queued and kill -9 a random worker every 0.3-1.5 s.
    let started = Instant::now();
    let mut n_kills = 0;
    let mut next_kill = Instant::now() + Duration::from_millis(500);
    while started.elapsed() < Duration::from_secs(60) {
        setup.enqueue("{}", 10);
        if Instant::now() >= next_kill {
            let victim = rand::random_range(0..workers.len());
            workers[victim].kill9().expect("kill -9");
            n_kills += 1;
            workers[victim] = setup
                .deployment
                .start("upkeep-worker-tokens", [] as [&str; 0]);
            next_kill = Instant::now() + Duration::from_millis(rand::random_range(300..1500));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for worker in &mut workers {
        worker.kill9().expect("kill -9");
    }
    let mut final_worker = setup.worker();
    let mut ledger = setup.deployment.ledger().await;
    // One more refresh by a worker nobody kills proves the stored refresh token is live. A
    // refresh may meet a transient failure on the loaded machine (it then keeps the old tokens
    // and succeeds with a finding), so force a refresh until the stored access token is the
    // newest the endpoint issued; a dead refresh token would instead end in needs_reauth.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        sqlx::query("UPDATE oauth_tokens SET expires_at = now(), next_attempt_at = NULL")
            .execute(&mut ledger)
            .await
            .unwrap();
        let ids = setup.enqueue("{}", 1);
        setup.outcomes(&ids, Duration::from_secs(30)).await;
        let newest = endpoint.with("crm", |grant| grant.access_tokens.last().cloned().unwrap());
        let stored = setup.deployment.ctl_ok(["tokens", "get", "crm"]);
        if stored.trim() == newest || Instant::now() > deadline {
            break;
        }
    }

    // Assert: never revoked, and the stored refresh token is still the live one.
    let (n_cycles, n_grace, revoked) =
        endpoint.with("crm", |g| (g.refreshes.len(), g.n_grace_reuses, g.revoked));
    eprintln!(
        "refresh cycles: {n_cycles}, kill -9: {n_kills}, lost responses re-presented: {n_grace}"
    );
    assert!(!revoked, "the grant was revoked");
    assert!(n_cycles >= 100, "only {n_cycles} refresh cycles");
    assert!(
        n_grace <= n_kills,
        "{n_grace} lost responses for {n_kills} kills"
    );
    let (status, _, _, _) = setup.row("crm").await;
    assert_eq!(status, "active");
    let newest = endpoint.with("crm", |grant| grant.access_tokens.last().cloned().unwrap());
    assert_eq!(
        setup.deployment.ctl_ok(["tokens", "get", "crm"]).trim(),
        newest
    );
    let _ = final_worker.sigterm();
}

#[tokio::test]
async fn without_providers_a_refresh_job_refreshes_nothing_and_says_so() {
    let deployment = Deployment::new().await;
    let mut worker = deployment.start("upkeep-worker-tokens", [] as [&str; 0]);
    wait_for_worker(&mut worker, "tokens");

    let ids = deployment.enqueue("tokens.refresh", "{}", &[]);
    let mut ledger = deployment.ledger().await;
    let summary: String = eventually("the job to succeed", Duration::from_secs(30), async || {
        sqlx::query_scalar(
            "SELECT outcome->>'summary' FROM job_runs WHERE job_id = $1 AND status = 'succeeded'",
        )
        .bind(ids[0])
        .fetch_optional(&mut ledger)
        .await
        .ok()
        .flatten()
    })
    .await;

    assert_eq!(summary, "no token providers configured: nothing to refresh");
}
