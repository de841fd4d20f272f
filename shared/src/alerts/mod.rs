//! Alerts and heartbeat pings: an evaluator that turns conditions (open findings, dead letters,
//! missed ticks, stale backups, silent schedules) into incidents keyed by (rule, event,
//! subject), and a durable outbox in Postgres that worker daemons deliver to sinks (a JSON
//! webhook, a Slack-compatible webhook, email over SMTP) and to schedules' `ping_url`s.
//!
//! Every worker daemon runs one [`Alerter`] beside its queues ([`Alerter::run_until_stopped`]).
//! Nothing here touches a job: the alerter reads the ledger, Redis' dead sets and `backups`,
//! and writes only `alert_incidents` and `alert_outbox`. Its SQL is in `store::alerts`.
//!
//! # Invariants
//! - One open incident per (rule, event, subject): a partial unique index, written with
//!   `INSERT … ON CONFLICT`, and one evaluator at a time (`pg_try_advisory_xact_lock`), so any
//!   number of workers evaluating at once queue one firing message per incident and sink.
//! - A message is queued in the same transaction as the incident change that calls for it
//!   (open, repeat, resolve): no incident change without its message, and no message twice.
//! - A message is sent only by the worker holding its lease (`state = 'sending'`,
//!   `claimed_until`); it becomes `sent` only by that worker. A lease that expires while
//!   `sending` means the worker died mid-delivery: the message is `in_doubt`, never re-sent
//!   unless `alerts.redeliver_in_doubt` (then with the same id, for receivers that dedup).
//! - Every send is bounded by `alerts.delivery_timeout`; a failure is retried with exponential
//!   backoff and jitter up to `alerts.retry_max`, given up after `alerts.give_up_after`.

mod deliver;
mod detect;
mod outbox;
pub mod settings;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::config::Settings;
use crate::outage::Outage;
use crate::queue::RedisConn;

pub use crate::store::alerts::{IncidentRow, OutboxCounts};
pub use deliver::DeliveryError;
pub use settings::{AlertsSettings, RuleSettings, SinkKind, SinkSettings, SmtpTls};

/// What an alert rule can watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// An open finding whose newest severity is `critical`.
    FindingCritical,
    /// An open finding whose newest severity is `warn`.
    FindingWarn,
    /// A job in a queue's dead letters.
    DeadLetter,
    /// Ticks of a schedule recorded `missed` since its last successful run.
    MissedTick,
    /// A database's newest good backup is older than its backup schedule's interval plus
    /// `alerts.grace`.
    StaleBackup,
    /// A schedule has not succeeded for longer than its interval plus `alerts.grace` (the dead
    /// man's switch).
    ScheduleSilent,
}

impl Event {
    /// Every event, in documentation order.
    pub const ALL: [Self; 6] = [
        Self::FindingCritical,
        Self::FindingWarn,
        Self::DeadLetter,
        Self::MissedTick,
        Self::StaleBackup,
        Self::ScheduleSilent,
    ];

    /// The names, for messages.
    pub const ALL_NAMES: &'static str =
        "finding_critical, finding_warn, dead_letter, missed_tick, stale_backup, schedule_silent";

    /// The config and payload spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::FindingCritical => "finding_critical",
            Self::FindingWarn => "finding_warn",
            Self::DeadLetter => "dead_letter",
            Self::MissedTick => "missed_tick",
            Self::StaleBackup => "stale_backup",
            Self::ScheduleSilent => "schedule_silent",
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON body of a generic webhook message (also stored in the outbox). Documented in the
/// README; receivers rely on these names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertPayload {
    /// The message id: unique per message, the same on every delivery attempt of it (also the
    /// `Idempotency-Key` header and the email's `Message-ID`).
    pub id: uuid::Uuid,
    /// The event (`finding_critical`, …, or `test`).
    pub event: String,
    /// `firing` or `resolved`.
    pub status: String,
    /// The rule that matched.
    pub rule: String,
    /// What the incident is about (`disk.used_pct//var`, `reports/<job id>`, a schedule name).
    pub subject: String,
    /// `warn` or `critical`.
    pub severity: String,
    /// One line for humans.
    pub summary: String,
    /// When the incident was first seen.
    pub first_seen: DateTime<Utc>,
    /// When it was resolved (resolve messages only).
    pub resolved_at: Option<DateTime<Utc>>,
    /// The incident's id in `alert_incidents` (absent for a test message).
    pub incident_id: Option<i64>,
    /// 0 for the first firing message, then 1, 2, … for repeats.
    pub repeat: i32,
    /// Event-specific facts (finding code and message, job id and error, counts).
    pub details: serde_json::Value,
}

/// What one evaluation pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EvaluateReport {
    /// False when another worker held the evaluation lock (nothing was done).
    pub evaluated: bool,
    /// Incidents opened.
    pub opened: u64,
    /// Repeat messages queued.
    pub repeated: u64,
    /// Incidents resolved.
    pub resolved: u64,
    /// Heartbeat pings queued.
    pub pings: u64,
}

/// What one delivery pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeliverReport {
    /// Messages sent.
    pub sent: u64,
    /// Messages that failed and will be retried.
    pub retried: u64,
    /// Messages given up.
    pub failed: u64,
    /// Messages found in doubt (their worker died mid-delivery).
    pub in_doubt: u64,
}

/// The evaluator and the outbox deliverer of one worker daemon.
#[derive(Debug, Clone)]
pub struct Alerter {
    pool: PgPool,
    conn: Option<RedisConn>,
    settings: Arc<Settings>,
    identity: String,
    client: reqwest::Client,
}

impl Alerter {
    /// An alerter over `pool` (and `conn` for the dead letters; without it `dead_letter`
    /// rules see nothing and resolve nothing), claiming messages as `identity`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(
        pool: PgPool,
        conn: Option<RedisConn>,
        settings: Settings,
        identity: impl Into<String>,
    ) -> Result<Self, DeliveryError> {
        let client = deliver::http_client(&settings.alerts)?;
        Ok(Self {
            pool,
            conn,
            settings: Arc::new(settings),
            identity: identity.into(),
            client,
        })
    }

    /// Starts [`Alerter::run_until_stopped`] as a task when [`Alerter::is_needed`]; `None`
    /// otherwise (or, logged, when the HTTP client cannot be built).
    #[must_use]
    pub fn spawn_if_needed(
        pool: PgPool,
        conn: RedisConn,
        settings: &Settings,
        identity: &str,
    ) -> Option<tokio::task::JoinHandle<()>> {
        if !Self::is_needed(settings) {
            return None;
        }
        match Self::new(pool, Some(conn), settings.clone(), identity) {
            Ok(alerter) => Some(tokio::spawn(alerter.run_until_stopped())),
            Err(error) => {
                tracing::error!(error = %error, "alerts disabled: cannot build the HTTP client");
                None
            }
        }
    }

    /// Whether there is anything to do: a rule, or a schedule with a `ping_url`.
    #[must_use]
    pub fn is_needed(settings: &Settings) -> bool {
        settings.alerts.is_enabled() || settings.schedules.iter().any(|s| s.ping_url.is_some())
    }

    /// One evaluation pass: conditions → incidents → queued messages, then heartbeat pings of
    /// finished scheduled runs. Skipped (`evaluated == false`) while another worker evaluates.
    ///
    /// # Errors
    /// When Postgres fails; the transaction is rolled back, nothing half-done stays.
    pub async fn evaluate_once(&self) -> Result<EvaluateReport, crate::store::Error> {
        let mut report = if self.settings.alerts.is_enabled() {
            outbox::evaluate(&self.pool, self.conn.as_ref(), &self.settings).await?
        } else {
            EvaluateReport::default()
        };
        report.pings = outbox::queue_pings(&self.pool, &self.settings).await?;
        Ok(report)
    }

    /// One delivery pass: marks expired leases in doubt, claims due messages and sends them
    /// concurrently, each within `alerts.delivery_timeout`.
    ///
    /// # Errors
    /// When Postgres fails.
    pub async fn deliver_once(&self) -> Result<DeliverReport, crate::store::Error> {
        deliver::deliver_once(&self.pool, &self.client, &self.settings, &self.identity).await
    }

    /// Runs the evaluation and the delivery loops until the task is aborted. A failing pass is
    /// an outage, retried with backoff up to its interval.
    pub async fn run_until_stopped(self) {
        let evaluator = {
            let this = self.clone();
            async move {
                let interval = this.settings.alerts.evaluate_interval;
                let mut outage =
                    Outage::new("postgres", "evaluate alerts").with_max_delay(interval);
                loop {
                    let delay = match this.evaluate_once().await {
                        Ok(report) => {
                            outage.recovered();
                            if report.opened + report.resolved + report.repeated > 0 {
                                tracing::info!(
                                    opened = report.opened,
                                    repeated = report.repeated,
                                    resolved = report.resolved,
                                    "alert incidents changed"
                                );
                            }
                            if report.evaluated {
                                let _ = outbox::prune(&this.pool, &this.settings.alerts).await;
                            }
                            jittered(interval)
                        }
                        Err(error) => outage.failed(&error),
                    };
                    tokio::time::sleep(delay).await;
                }
            }
        };
        let deliverer = async move {
            let interval = self.settings.alerts.deliver_interval;
            let mut outage = Outage::new("postgres", "deliver alerts").with_max_delay(interval);
            loop {
                let delay = match self.deliver_once().await {
                    Ok(_) => {
                        outage.recovered();
                        jittered(interval)
                    }
                    Err(error) => outage.failed(&error),
                };
                tokio::time::sleep(delay).await;
            }
        };
        tokio::join!(evaluator, deliverer);
    }
}

/// Sends a test message through the sink named `sink` at once (not through the outbox), for
/// `upkeepctl alerts test`.
///
/// # Errors
/// [`DeliveryError`] naming why: unknown sink, refused connection, HTTP status, SMTP reply.
pub async fn send_test(settings: &Settings, sink: &str) -> Result<AlertPayload, DeliveryError> {
    let sink_settings = settings
        .alerts
        .sink(sink)
        .ok_or_else(|| DeliveryError::UnknownSink(sink.to_owned()))?;
    let client = deliver::http_client(&settings.alerts)?;
    let payload = AlertPayload {
        id: uuid::Uuid::now_v7(),
        event: "test".to_owned(),
        status: "firing".to_owned(),
        rule: "test".to_owned(),
        subject: sink.to_owned(),
        severity: "warn".to_owned(),
        summary: format!("test message from upkeepctl alerts test {sink}"),
        first_seen: Utc::now(),
        resolved_at: None,
        incident_id: None,
        repeat: 0,
        details: serde_json::json!({}),
    };
    deliver::send_alert(&client, &settings.alerts, sink_settings, &payload).await?;
    Ok(payload)
}

/// The open incidents, oldest first.
///
/// # Errors
/// When the query fails.
pub async fn open_incidents(pool: &PgPool) -> Result<Vec<IncidentRow>, crate::store::Error> {
    crate::store::alerts::open_incidents(pool).await
}

/// How many outbox messages are in each state.
///
/// # Errors
/// When the query fails.
pub async fn outbox_counts(pool: &PgPool) -> Result<OutboxCounts, crate::store::Error> {
    crate::store::alerts::outbox_counts(pool).await
}

/// `interval` give or take 10%, so workers spread out.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(rand::random_range(0.9..=1.1))
}
