//! `GET /metrics`: Prometheus text (format 0.0.4), unauthenticated, computed on scrape.
//!
//! Every number comes from a bounded read: one stats script per configured queue (Redis
//! counters and the per-minute rollups), the schedule health query (`store::health`, one row
//! per schedule), the newest good backup per database, the open conditions by severity (a skip
//! scan, one probe per condition), the three current checklists, and the runs recorded since
//! the previous scrape (a keyset range of `job_runs_id_idx`, at most [`RUNS_PER_SCRAPE`]).
//! Labels come from bounded sets only: queues from the config, kinds from the catalog (any
//! other kind is `other`), run statuses, severities, task periods and statuses, and database
//! names from `[[backups.databases]]`. No job arguments, errors or secrets are exposed.
//!
//! The job duration histograms are cumulative since this process started (like any Prometheus
//! client's): each scrape observes the runs recorded since the last one. A run is observed once
//! its row is 5 s old, so a batch that commits after rows with higher ids is still counted.
//! Several API replicas each count every run (aggregate with `max by`, not `sum`).

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use prometheus::{
    Encoder as _, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use tokio::sync::Mutex;
use upkeep_shared::job::CATALOG;
use upkeep_shared::store;
use upkeep_shared::tasks::Period;

use crate::AppState;
use crate::checklist;

/// At most this many runs are read per scrape; the rest wait for the next one.
pub(crate) const RUNS_PER_SCRAPE: i64 = 20_000;

/// How old a run row must be before the histograms count it.
const SETTLE_LAG: chrono::TimeDelta = chrono::TimeDelta::seconds(5);

/// Upper bounds of the duration buckets, in seconds.
const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 120.0, 600.0, 3600.0,
];

const TASK_STATUSES: [&str; 6] = [
    "done",
    "attention",
    "failed",
    "missed",
    "pending",
    "not_available",
];

const RUN_STATUSES: [&str; 5] = ["running", "succeeded", "failed", "abandoned", "skipped"];

/// The state kept between scrapes: the duration histograms and their cursor.
struct Collector {
    registry: Registry,
    durations: HistogramVec,
    /// The highest run id observed; `None` until the first scrape reads the newest one.
    cursor: Mutex<Option<i64>>,
}

impl Collector {
    fn new() -> Self {
        let registry = Registry::new();
        let durations = HistogramVec::new(
            HistogramOpts::new(
                "upkeep_job_duration_seconds",
                "How long attempts took, by job kind and outcome, counted since this API process \
                 started.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["kind", "status"],
        )
        .expect("a valid histogram");
        registry
            .register(Box::new(durations.clone()))
            .expect("registered once");
        Self {
            registry,
            durations,
            cursor: Mutex::new(None),
        }
    }

    /// Observes the runs recorded since the last scrape. A concurrent scrape that holds the
    /// cursor makes this one skip (it will be counted by the next).
    async fn observe_new_runs(&self, db: &sqlx::PgPool) -> Result<(), store::Error> {
        let Ok(mut cursor) = self.cursor.try_lock() else {
            return Ok(());
        };
        let Some(after) = *cursor else {
            *cursor = Some(store::metrics::newest_run_id(db).await?);
            return Ok(());
        };
        let runs = store::metrics::runs_after(db, after, RUNS_PER_SCRAPE).await?;
        let settled_before = Utc::now() - SETTLE_LAG;
        let mut last = after;
        for run in runs {
            if run.recorded_at > settled_before {
                break;
            }
            last = run.id;
            let (Some(ms), Some(status)) = (
                run.duration_ms,
                RUN_STATUSES.iter().find(|s| **s == run.status),
            ) else {
                continue;
            };
            self.durations
                .with_label_values(&[bounded_kind(&run.kind), status])
                .observe(ms.max(0) as f64 / 1000.0);
        }
        *cursor = Some(last);
        Ok(())
    }
}

/// The kind as a label: a catalog kind, else `other`.
fn bounded_kind(kind: &str) -> &'static str {
    CATALOG
        .iter()
        .find(|spec| spec.name == kind)
        .map_or("other", |spec| spec.name)
}

/// The `/metrics` route (merged into the API's router; no authentication).
pub(crate) fn router() -> Router<AppState> {
    let collector = Arc::new(Collector::new());
    Router::new().route(
        "/metrics",
        get(move |State(state): State<AppState>| {
            let collector = collector.clone();
            async move { scrape(&state, &collector).await }
        }),
    )
}

async fn scrape(state: &AppState, collector: &Collector) -> Response {
    let body = render(state, collector).await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// Per-scrape families (their values are read fresh each time).
struct Families {
    registry: Registry,
    up: IntGaugeVec,
    jobs: IntGaugeVec,
    workers: IntGaugeVec,
    oldest: GaugeVec,
    throughput: GaugeVec,
    last_hour: IntGaugeVec,
    processed: IntCounterVec,
    failed: IntCounterVec,
    backup_age: GaugeVec,
    findings: IntGaugeVec,
    tasks: IntGaugeVec,
}

fn int_gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let family = IntGaugeVec::new(Opts::new(name, help), labels).expect("a valid gauge");
    registry
        .register(Box::new(family.clone()))
        .expect("registered once");
    family
}

fn gauge(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let family = GaugeVec::new(Opts::new(name, help), labels).expect("a valid gauge");
    registry
        .register(Box::new(family.clone()))
        .expect("registered once");
    family
}

fn counter(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let family = IntCounterVec::new(Opts::new(name, help), labels).expect("a valid counter");
    registry
        .register(Box::new(family.clone()))
        .expect("registered once");
    family
}

impl Families {
    fn new() -> Self {
        let r = Registry::new();
        Self {
            up: int_gauge(
                &r,
                "upkeep_metrics_source_up",
                "1 when this scrape could read the source (redis, postgres), else 0.",
                &["source"],
            ),
            jobs: int_gauge(
                &r,
                "upkeep_queue_jobs",
                "Jobs in the queue by state: pending (ready now), scheduled (delayed), running \
                 (leased), retrying (waiting for a retry), dead.",
                &["queue", "state"],
            ),
            workers: int_gauge(
                &r,
                "upkeep_queue_workers",
                "Workers of the queue seen in the last 30 s.",
                &["queue"],
            ),
            oldest: gauge(
                &r,
                "upkeep_queue_oldest_pending_age_seconds",
                "How long the job next in line has been ready (the queue's latency); 0 when none \
                 is pending.",
                &["queue"],
            ),
            throughput: gauge(
                &r,
                "upkeep_queue_throughput_per_minute",
                "Attempts settled per minute over the last 5 minutes.",
                &["queue"],
            ),
            last_hour: int_gauge(
                &r,
                "upkeep_queue_attempts_last_hour",
                "Attempts settled in the last hour, by outcome (succeeded, failed).",
                &["queue", "outcome"],
            ),
            processed: counter(
                &r,
                "upkeep_queue_processed_total",
                "Attempts settled by the queue (succeeded + failed) since its counters began.",
                &["queue"],
            ),
            failed: counter(
                &r,
                "upkeep_queue_failed_total",
                "Attempts that failed (retried, dead or lost) since the queue's counters began.",
                &["queue"],
            ),
            backup_age: gauge(
                &r,
                "upkeep_backup_newest_good_age_seconds",
                "Age of the newest verified, good backup of each configured database.",
                &["database"],
            ),
            findings: int_gauge(
                &r,
                "upkeep_findings_open",
                "Open conditions (code, subject) whose newest finding has this severity.",
                &["severity"],
            ),
            tasks: int_gauge(
                &r,
                "upkeep_task_items",
                "Checklist items of the current window of each period, by status.",
                &["period", "status"],
            ),
            registry: r,
        }
    }
}

/// The whole exposition. A source that fails is reported through `upkeep_metrics_source_up`
/// and its families are left empty; the scrape still answers.
async fn render(state: &AppState, collector: &Collector) -> String {
    let f = Families::new();
    let mut redis_ok = true;
    for queue in state.queues.iter() {
        let Ok(stats) = queue.stats().await else {
            redis_ok = false;
            continue;
        };
        let name = stats.name.as_str();
        for (queue_state, n) in [
            ("pending", stats.pending),
            ("scheduled", stats.scheduled),
            ("running", stats.running),
            ("retrying", stats.retrying),
            ("dead", stats.dead),
        ] {
            f.jobs
                .with_label_values(&[name, queue_state])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        f.workers
            .with_label_values(&[name])
            .set(i64::try_from(stats.workers).unwrap_or(i64::MAX));
        f.oldest
            .with_label_values(&[name])
            .set(stats.oldest_pending_age_seconds.unwrap_or(0.0));
        f.throughput
            .with_label_values(&[name])
            .set(stats.throughput_per_min);
        for (outcome, n) in [
            ("succeeded", stats.succeeded_1h),
            ("failed", stats.failed_1h),
        ] {
            f.last_hour
                .with_label_values(&[name, outcome])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        let total = |k: &str| stats.totals.get(k).copied().unwrap_or(0);
        f.processed
            .with_label_values(&[name])
            .inc_by(total("succeeded") + total("failed"));
        f.failed.with_label_values(&[name]).inc_by(total("failed"));
    }
    f.up.with_label_values(&["redis"]).set(i64::from(redis_ok));

    let (pg_ok, health_text) = match postgres_families(state, collector, &f).await {
        Ok(text) => (true, text),
        Err(error) => {
            tracing::warn!(error = %error, "metrics: reading Postgres failed");
            (false, String::new())
        }
    };
    f.up.with_label_values(&["postgres"]).set(i64::from(pg_ok));

    let mut families = f.registry.gather();
    families.extend(collector.registry.gather());
    let mut out = Vec::new();
    if let Err(error) = TextEncoder::new().encode(&families, &mut out) {
        tracing::warn!(error = %error, "metrics: encoding failed");
    }
    let mut text = String::from_utf8(out).unwrap_or_default();
    text.push_str(&health_text);
    text
}

/// Fills the Postgres-backed families; returns the schedule health series as rendered by
/// `store::health`.
async fn postgres_families(
    state: &AppState,
    collector: &Collector,
    f: &Families,
) -> Result<String, store::Error> {
    let db = &state.db;
    let now = Utc::now();
    let health = store::health::schedule_health(db, now, None).await?;

    let configured: Vec<&str> = state
        .settings
        .backups
        .databases
        .iter()
        .map(|target| target.name.as_str())
        .collect();
    for (database, finished_at, _size) in store::backups::newest_good(db).await? {
        if let Some(name) = configured.iter().find(|name| **name == database) {
            let age = (now - finished_at).num_milliseconds().max(0) as f64 / 1000.0;
            f.backup_age.with_label_values(&[name]).set(age);
        }
    }

    for severity in ["warn", "critical"] {
        f.findings.with_label_values(&[severity]).set(0);
    }
    for (severity, n) in store::metrics::open_findings_by_severity(db).await? {
        if let Some(known) = ["warn", "critical"].into_iter().find(|s| *s == severity) {
            f.findings.with_label_values(&[known]).set(n);
        }
    }

    let tasks = &state.settings.tasks;
    let today = checklist::today(tasks, now);
    for period in [Period::Daily, Period::Weekly, Period::Monthly] {
        let list = state.checklist(period, today).await?;
        for status in TASK_STATUSES {
            let n = list.summary.get(status).copied().unwrap_or(0);
            f.tasks
                .with_label_values(&[period.as_str(), status])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    collector.observe_new_runs(db).await?;

    let mut text = store::health::render_metrics(&health);
    if !text.is_empty() && !text.ends_with('\n') {
        let _ = writeln!(text);
    }
    Ok(text)
}
