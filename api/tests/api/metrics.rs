//! `GET /metrics`: scraped over HTTP without a token, parsed as Prometheus text, and checked
//! against jobs, runs, findings and a backup seeded in real Redis and Postgres.

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use reqwest::StatusCode;
use sqlx::PgPool;
use upkeep_api::AppState;
use upkeep_shared::config::Settings;
use upkeep_shared::queue::{NewJob, Settlement, Verdict};
use upkeep_shared::store::backups::{self, NewBackup};
use upkeep_shared::store::runs::{self, RunRecord, RunStatus};
use upkeep_shared::{Finding, JobId, Outcome, Severity};

/// One sample: its metric name and labels.
type Key = (String, Vec<(String, String)>);

/// Parses the text format: `# TYPE` lines into a map, samples into name + sorted labels → value.
/// Panics on a line that is neither a comment nor a well-formed sample.
fn parse(text: &str) -> (HashMap<String, String>, HashMap<Key, f64>) {
    let mut types = HashMap::new();
    let mut samples = HashMap::new();
    for line in text.lines() {
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
            types.insert(name.to_owned(), kind.to_owned());
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), Vec::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("labels close");
                let mut labels: Vec<(String, String)> = body
                    .split("\",")
                    .filter(|pair| !pair.is_empty())
                    .map(|pair| {
                        let (k, v) = pair.split_once("=\"").expect("label=\"value\"");
                        (k.to_owned(), v.trim_end_matches('"').to_owned())
                    })
                    .collect();
                labels.sort();
                (name.to_owned(), labels)
            }
        };
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "metric name {name:?}"
        );
        samples.insert((name, labels), value);
    }
    (types, samples)
}

fn key(name: &str, labels: &[(&str, &str)]) -> Key {
    let mut labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    labels.sort();
    (name.to_owned(), labels)
}

struct Server {
    base: String,
    settings: Settings,
    _server: tokio::task::JoinHandle<()>,
}

async fn start(pool: PgPool) -> Server {
    let redis_url =
        std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".to_owned());
    let prefix = format!("test-metrics-{}", uuid::Uuid::new_v4().simple());
    let toml = format!(
        "[redis]\nkey_prefix = \"{prefix}\"\n\
         [[backups.databases]]\nname = \"app\"\nurl_env = \"APP_URL\"\n"
    );
    let env = HashMap::from([
        ("REDIS_URL".to_owned(), redis_url),
        ("UPKEEP_API_TOKEN".to_owned(), crate::TOKEN.to_owned()),
        (
            "APP_URL".to_owned(),
            "postgres://secret-user:secret-pw@127.0.0.1/app".to_owned(),
        ),
    ]);
    let settings = Settings::from_toml_str(&toml, &env).expect("test settings are valid");
    let mut state = AppState::connect_lazy(settings.clone()).expect("state");
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
    Server {
        base,
        settings,
        _server: server,
    }
}

async fn scrape(server: &Server) -> (String, HashMap<String, String>, HashMap<Key, f64>) {
    let response = reqwest::get(format!("{}/metrics", server.base))
        .await
        .expect("scraped");
    assert_eq!(response.status(), StatusCode::OK, "no token needed");
    let content_type = response.headers()[reqwest::header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response.text().await.expect("body");
    let (types, samples) = parse(&text);
    (text, types, samples)
}

fn run(kind: &str, status: RunStatus, seconds: f64, findings: Vec<Finding>) -> RunRecord {
    let finished = Utc::now() - chrono::TimeDelta::minutes(1);
    let started = finished - chrono::TimeDelta::milliseconds((seconds * 1000.0) as i64);
    RunRecord {
        job_id: JobId::new(),
        attempt: 1,
        kind: kind.to_owned(),
        queue: "reports".to_owned(),
        status,
        schedule: None,
        tick_at: None,
        enqueued_at: started,
        started_at: started,
        finished_at: Some(finished),
        worker: "w".to_owned(),
        args: serde_json::json!({"secret_arg": "do-not-expose"}),
        outcome: Some(Outcome {
            summary: "s".to_owned(),
            metrics: serde_json::Map::new(),
            findings,
            skipped: false,
        }),
        error: matches!(status, RunStatus::Failed).then(|| "secret error text".to_owned()),
        next_state: Some(
            if status == RunStatus::Failed {
                "dead"
            } else {
                "done"
            }
            .to_owned(),
        ),
    }
}

fn finding(code: &str, severity: Severity, subject: Option<&str>) -> Finding {
    Finding {
        code: code.to_owned(),
        severity,
        message: "m".to_owned(),
        detail: serde_json::Value::Null,
        subject: subject.map(str::to_owned),
    }
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn metrics_report_seeded_queues_runs_findings_backups_and_tasks(pool: PgPool) {
    // Arrange: the first scrape sets the duration cursor; everything after it is counted.
    let server = start(pool.clone()).await;
    let (_, _, first) = scrape(&server).await;
    assert_eq!(
        first.get(&key("upkeep_metrics_source_up", &[("source", "postgres")])),
        Some(&1.0)
    );
    // Redis: 4 jobs on `reports`; one succeeds, one fails for good, two stay pending.
    let queue = server
        .settings
        .open_queue(&upkeep_shared::QueueName::parse("reports").unwrap())
        .expect("queue");
    let jobs: Vec<NewJob> = (0..4)
        .map(|_| NewJob::new("system.ping", serde_json::json!({}), 1))
        .collect();
    queue.enqueue(&jobs).await.expect("enqueued");
    let leased = queue.fetch("w1", 2).await.expect("fetched").jobs;
    let settlements: Vec<Settlement> = leased
        .into_iter()
        .zip([Verdict::Done, Verdict::Dead])
        .map(|(job, verdict)| Settlement {
            id: job.id,
            token: job.token,
            verdict,
            error: "e".to_owned(),
        })
        .collect();
    queue.settle(&settlements).await.expect("settled");
    // Postgres: runs of 0.2 s, 3 s and 40 s; open conditions: 2 warn (one per subject), 1
    // critical; one condition resolved (its newest finding is ok).
    let resolved_earlier = run(
        "system.disk",
        RunStatus::Succeeded,
        0.2,
        vec![finding("disk.used_pct", Severity::Critical, Some("/var"))],
    );
    runs::record_runs(&pool, &[resolved_earlier]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let batch = vec![
        run(
            "system.disk",
            RunStatus::Succeeded,
            3.0,
            vec![
                finding("disk.used_pct", Severity::Ok, Some("/var")),
                finding("disk.used_pct", Severity::Warn, Some("/")),
                finding("disk.used_pct", Severity::Warn, Some("/home")),
                finding("backup.stale", Severity::Critical, None),
            ],
        ),
        run("system.ping", RunStatus::Failed, 40.0, vec![]),
        run("made.up.kind", RunStatus::Succeeded, 0.2, vec![]),
    ];
    runs::record_runs(&pool, &batch).await.unwrap();
    sqlx::query("UPDATE job_runs SET recorded_at = now() - interval '1 minute'")
        .execute(&pool)
        .await
        .unwrap();
    let finished_at = Utc::now() - chrono::TimeDelta::hours(2);
    backups::insert(
        &pool,
        &NewBackup {
            database: "app".to_owned(),
            format: "custom".to_owned(),
            path: "/b/app/1.dump".to_owned(),
            manifest_path: "/b/app/1.json".to_owned(),
            globals_path: None,
            size_bytes: 1,
            sha256: "00".to_owned(),
            server_version: "15".to_owned(),
            pg_dump_version: "15".to_owned(),
            started_at: finished_at,
            finished_at,
            verification: "full_read".to_owned(),
            table_count: 1,
            row_counts: serde_json::json!({}),
            copies: serde_json::json!([]),
            job_id: None,
        },
    )
    .await
    .expect("backup");

    // Act
    let (text, types, m) = scrape(&server).await;

    // Assert: queues.
    let get = |name: &str, labels: &[(&str, &str)]| {
        *m.get(&key(name, labels))
            .unwrap_or_else(|| panic!("{name}{labels:?} missing in\n{text}"))
    };
    let reports = [("queue", "reports")];
    assert_eq!(
        get(
            "upkeep_queue_jobs",
            &[("queue", "reports"), ("state", "pending")]
        ),
        2.0
    );
    assert_eq!(
        get(
            "upkeep_queue_jobs",
            &[("queue", "reports"), ("state", "dead")]
        ),
        1.0
    );
    assert_eq!(
        get(
            "upkeep_queue_jobs",
            &[("queue", "reports"), ("state", "running")]
        ),
        0.0
    );
    assert_eq!(
        get(
            "upkeep_queue_jobs",
            &[("queue", "backups"), ("state", "pending")]
        ),
        0.0
    );
    assert_eq!(get("upkeep_queue_processed_total", &reports), 2.0);
    assert_eq!(get("upkeep_queue_failed_total", &reports), 1.0);
    assert_eq!(get("upkeep_queue_workers", &reports), 1.0);
    assert!(get("upkeep_queue_throughput_per_minute", &reports) > 0.0);
    assert_eq!(
        get(
            "upkeep_queue_attempts_last_hour",
            &[("queue", "reports"), ("outcome", "succeeded")]
        ),
        1.0
    );
    assert!(get("upkeep_queue_oldest_pending_age_seconds", &reports) >= 0.0);
    assert_eq!(types["upkeep_queue_processed_total"], "counter");
    assert_eq!(types["upkeep_queue_jobs"], "gauge");
    // Durations: the 3 s disk run is in the le=10 bucket, not le=2.5; unknown kinds are `other`.
    let disk = [("kind", "system.disk"), ("status", "succeeded")];
    let bucket = |labels: &[(&str, &str)], le: &str| {
        let mut all = labels.to_vec();
        all.push(("le", le));
        get("upkeep_job_duration_seconds_bucket", &all)
    };
    assert_eq!(types["upkeep_job_duration_seconds"], "histogram");
    assert_eq!(get("upkeep_job_duration_seconds_count", &disk), 2.0);
    assert_eq!(bucket(&disk, "0.25"), 1.0);
    assert_eq!(bucket(&disk, "2.5"), 1.0);
    assert_eq!(bucket(&disk, "10"), 2.0);
    assert!((get("upkeep_job_duration_seconds_sum", &disk) - 3.2).abs() < 0.01);
    let ping = [("kind", "system.ping"), ("status", "failed")];
    assert_eq!(bucket(&ping, "30"), 0.0);
    assert_eq!(bucket(&ping, "120"), 1.0);
    assert_eq!(
        get(
            "upkeep_job_duration_seconds_count",
            &[("kind", "other"), ("status", "succeeded")]
        ),
        1.0
    );
    // Findings, backups, tasks.
    assert_eq!(get("upkeep_findings_open", &[("severity", "warn")]), 2.0);
    assert_eq!(
        get("upkeep_findings_open", &[("severity", "critical")]),
        1.0
    );
    let age = get(
        "upkeep_backup_newest_good_age_seconds",
        &[("database", "app")],
    );
    assert!((7190.0..7300.0).contains(&age), "{age}");
    let tasks: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/api/v1/tasks?period=weekly", server.base))
        .bearer_auth(crate::TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let summary = tasks["summary"].as_object().expect("a summary");
    assert!(!summary.is_empty());
    for status in [
        "done",
        "attention",
        "failed",
        "missed",
        "pending",
        "not_available",
    ] {
        let expected = summary.get(status).and_then(|n| n.as_f64()).unwrap_or(0.0);
        assert_eq!(
            get(
                "upkeep_task_items",
                &[("period", "weekly"), ("status", status)]
            ),
            expected,
            "weekly {status}"
        );
    }
    // Nothing secret or job-specific leaks.
    for secret in ["secret", "do-not-expose", "postgres://", crate::TOKEN] {
        assert!(!text.contains(secret), "{secret} in the exposition");
    }
}
