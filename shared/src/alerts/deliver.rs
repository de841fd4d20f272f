//! Delivery: claiming due outbox messages, sending each to its sink (webhook, Slack, email) or
//! ping URL within `alerts.delivery_timeout`, and settling it (sent, retried with backoff and
//! jitter, given up).

use std::time::Duration;

use chrono::Utc;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;
use sqlx::PgPool;

use super::{AlertPayload, AlertsSettings, DeliverReport, SinkKind, SinkSettings, SmtpTls};
use crate::config::Settings;
use crate::store::alerts::{self as store, ClaimedMessage, ExpiredMessage};

/// Messages claimed per pass and worker (sent concurrently).
const CLAIM_BATCH: i64 = 16;

/// Why a message could not be delivered. Never contains a secret (URLs are not shown).
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// No sink of that name is configured.
    #[error("no sink named {0:?} in [[alerts.sinks]]")]
    UnknownSink(String),
    /// The schedule has no `ping_url` (any more).
    #[error("schedule {0:?} has no ping_url")]
    NoPingUrl(String),
    /// A sink's settings are incomplete (validated at load, so only on a hand-built config).
    #[error("sink {sink:?}: {message}")]
    Misconfigured {
        /// The sink.
        sink: String,
        /// What is missing.
        message: String,
    },
    /// The HTTP request failed (connect, timeout, TLS).
    #[error("{what}: request failed: {message}")]
    Http {
        /// The sink or ping.
        what: String,
        /// The error without the URL.
        message: String,
    },
    /// The receiver answered with a non-success status.
    #[error("{what}: HTTP {status}: {body}")]
    Status {
        /// The sink or ping.
        what: String,
        /// The status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The SMTP exchange failed.
    #[error("{what}: SMTP: {message}")]
    Smtp {
        /// The sink.
        what: String,
        /// The transport's error.
        message: String,
    },
    /// The whole delivery took longer than `alerts.delivery_timeout`.
    #[error("{0}: timed out")]
    Timeout(String),
    /// The stored message does not decode.
    #[error("message {0} is malformed: {1}")]
    Malformed(i64, String),
}

/// The HTTP client of every webhook, Slack message and ping.
pub(super) fn http_client(alerts: &AlertsSettings) -> Result<reqwest::Client, DeliveryError> {
    reqwest::Client::builder()
        .timeout(alerts.delivery_timeout)
        .connect_timeout(alerts.delivery_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("upkeep/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| DeliveryError::Http {
            what: "http client".to_owned(),
            message: e.to_string(),
        })
}

/// One delivery pass (see [`super::Alerter::deliver_once`]).
pub(super) async fn deliver_once(
    pool: &PgPool,
    client: &reqwest::Client,
    settings: &Settings,
    worker: &str,
) -> Result<DeliverReport, crate::store::Error> {
    let alerts = &settings.alerts;
    let mut report = DeliverReport::default();
    for ExpiredMessage {
        id,
        message_id,
        claimed_by,
    } in store::sweep_expired(pool, alerts.redeliver_in_doubt).await?
    {
        report.in_doubt += 1;
        tracing::warn!(
            id,
            %message_id,
            claimed_by = claimed_by.as_deref().unwrap_or(""),
            redeliver = alerts.redeliver_in_doubt,
            "an alert message's worker stopped mid-delivery; it may or may not have arrived"
        );
    }
    let claimed = store::claim(pool, worker, alerts.lease, CLAIM_BATCH).await?;
    // Each message is settled as soon as its own send ends, so a slow receiver never holds
    // another message's `sent` back (a kill then would leave it in doubt for nothing).
    let deliveries = claimed
        .iter()
        .map(|message| deliver_one(pool, client, settings, worker, message));
    for settled in futures::future::join_all(deliveries).await {
        match settled? {
            Settled::Sent => report.sent += 1,
            Settled::Retried => report.retried += 1,
            Settled::Failed => report.failed += 1,
            Settled::Lost => {}
        }
    }
    Ok(report)
}

/// What became of one claimed message.
enum Settled {
    Sent,
    Retried,
    Failed,
    /// This worker no longer held the lease when it settled (it expired meanwhile).
    Lost,
}

async fn deliver_one(
    pool: &PgPool,
    client: &reqwest::Client,
    settings: &Settings,
    worker: &str,
    message: &ClaimedMessage,
) -> Result<Settled, crate::store::Error> {
    let alerts = &settings.alerts;
    let result = tokio::time::timeout(
        alerts.delivery_timeout,
        send_claimed(client, settings, message),
    )
    .await
    .unwrap_or_else(|_| Err(DeliveryError::Timeout(message.sink.clone())));
    match result {
        Ok(()) => {
            if !store::mark_sent(pool, message.id, worker).await? {
                return Ok(Settled::Lost);
            }
            tracing::info!(id = message.id, message_id = %message.message_id, kind = %message.kind, sink = %message.sink, "alert message sent");
            Ok(Settled::Sent)
        }
        Err(error) => {
            let age = (Utc::now() - message.created_at)
                .to_std()
                .unwrap_or_default();
            let give_up = age >= alerts.give_up_after
                || matches!(
                    error,
                    DeliveryError::UnknownSink(_)
                        | DeliveryError::NoPingUrl(_)
                        | DeliveryError::Malformed(..)
                );
            let retry_in = backoff(alerts, message.attempts);
            if !store::mark_failed(
                pool,
                message.id,
                worker,
                &error.to_string(),
                retry_in,
                give_up,
            )
            .await?
            {
                return Ok(Settled::Lost);
            }
            if give_up {
                tracing::error!(id = message.id, message_id = %message.message_id, error = %error, "alert message given up");
                Ok(Settled::Failed)
            } else {
                tracing::warn!(id = message.id, message_id = %message.message_id, error = %error, retry_in_ms = u64::try_from(retry_in.as_millis()).unwrap_or(u64::MAX), "alert delivery failed; will retry");
                Ok(Settled::Retried)
            }
        }
    }
}

/// `retry_base · 2^(attempts-1)`, capped at `retry_max`, then scaled by a random factor in
/// [0.5, 1] so workers retrying the same receiver spread out.
fn backoff(alerts: &AlertsSettings, attempts: i32) -> Duration {
    let exponent = u32::try_from(attempts.saturating_sub(1))
        .unwrap_or(0)
        .min(30);
    let raw = alerts
        .retry_base
        .saturating_mul(1 << exponent)
        .min(alerts.retry_max);
    raw.mul_f64(rand::random_range(0.5..=1.0))
}

async fn send_claimed(
    client: &reqwest::Client,
    settings: &Settings,
    message: &ClaimedMessage,
) -> Result<(), DeliveryError> {
    match message.kind.as_str() {
        "ping" => {
            let schedule = &message.sink;
            let url = settings
                .schedules
                .iter()
                .find(|s| &s.name == schedule)
                .and_then(|s| s.ping_url.clone())
                .ok_or_else(|| DeliveryError::NoPingUrl(schedule.clone()))?;
            let fail = message.payload.get("result").and_then(|r| r.as_str()) == Some("fail");
            send_ping(client, schedule, &url, fail, message.message_id).await
        }
        _ => {
            let sink = settings
                .alerts
                .sink(&message.sink)
                .ok_or_else(|| DeliveryError::UnknownSink(message.sink.clone()))?;
            let payload: AlertPayload = serde_json::from_value(message.payload.clone())
                .map_err(|e| DeliveryError::Malformed(message.id, e.to_string()))?;
            send_alert(client, &settings.alerts, sink, &payload).await
        }
    }
}

/// GETs `url` (or `url/fail`), the healthchecks.io convention.
async fn send_ping(
    client: &reqwest::Client,
    schedule: &str,
    url: &str,
    fail: bool,
    message_id: uuid::Uuid,
) -> Result<(), DeliveryError> {
    let url = if fail {
        format!("{}/fail", url.trim_end_matches('/'))
    } else {
        url.to_owned()
    };
    let what = format!("ping of schedule {schedule}");
    let response = client
        .get(url)
        .header("Idempotency-Key", message_id.to_string())
        .send()
        .await
        .map_err(|e| http_error(&what, e))?;
    check_status(&what, response).await
}

/// Sends `payload` to `sink` once.
pub(super) async fn send_alert(
    client: &reqwest::Client,
    alerts: &AlertsSettings,
    sink: &SinkSettings,
    payload: &AlertPayload,
) -> Result<(), DeliveryError> {
    let what = format!("sink {}", sink.name);
    match sink.kind {
        SinkKind::Webhook | SinkKind::Slack => {
            let url = sink
                .url
                .as_ref()
                .ok_or_else(|| DeliveryError::Misconfigured {
                    sink: sink.name.clone(),
                    message: "no url".to_owned(),
                })?;
            let body = if sink.kind == SinkKind::Webhook {
                serde_json::to_vec(payload)
            } else {
                serde_json::to_vec(&slack_body(payload))
            }
            .map_err(|e| DeliveryError::Malformed(0, e.to_string()))?;
            let response = client
                .post(url.expose_secret())
                .header("Content-Type", "application/json")
                .header("Idempotency-Key", payload.id.to_string())
                .body(body)
                .send()
                .await
                .map_err(|e| http_error(&what, e))?;
            check_status(&what, response).await
        }
        SinkKind::Email => send_email(alerts, sink, payload, &what).await,
    }
}

fn http_error(what: &str, error: reqwest::Error) -> DeliveryError {
    // Without the URL: it may hold a token.
    let error = error.without_url();
    let mut message = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(inner) = source {
        message.push_str(": ");
        message.push_str(&inner.to_string());
        source = inner.source();
    }
    DeliveryError::Http {
        what: what.to_owned(),
        message,
    }
}

async fn check_status(what: &str, response: reqwest::Response) -> Result<(), DeliveryError> {
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response.text().await.unwrap_or_default();
    Err(DeliveryError::Status {
        what: what.to_owned(),
        status: status.as_u16(),
        body: body.chars().take(200).collect(),
    })
}

/// The one line every human-facing sink starts with.
fn headline(payload: &AlertPayload) -> String {
    let status = if payload.status == "resolved" {
        "RESOLVED"
    } else {
        "FIRING"
    };
    format!(
        "[{status}] {} {}: {}",
        payload.severity, payload.event, payload.summary
    )
}

/// A Slack incoming-webhook body: `text` (the fallback every client shows) and one section
/// block with the details.
fn slack_body(payload: &AlertPayload) -> serde_json::Value {
    let text = headline(payload);
    let fields = format!(
        "*rule* {}  *subject* {}\n*first seen* {}  *id* {}",
        payload.rule, payload.subject, payload.first_seen, payload.id
    );
    serde_json::json!({
        "text": text,
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": fields}]},
        ],
    })
}

async fn send_email(
    alerts: &AlertsSettings,
    sink: &SinkSettings,
    payload: &AlertPayload,
    what: &str,
) -> Result<(), DeliveryError> {
    let misconfigured = |message: &str| DeliveryError::Misconfigured {
        sink: sink.name.clone(),
        message: message.to_owned(),
    };
    let smtp = |e: &dyn std::fmt::Display| DeliveryError::Smtp {
        what: what.to_owned(),
        message: e.to_string(),
    };
    let host = sink
        .smtp_host
        .as_deref()
        .ok_or_else(|| misconfigured("no smtp_host"))?;
    let from = sink
        .from
        .as_deref()
        .ok_or_else(|| misconfigured("no from"))?;
    let mut builder = Message::builder()
        .from(from.parse().map_err(|e| smtp(&e))?)
        .subject(format!("[upkeep] {}", headline(payload)))
        .message_id(Some(format!("<{}@upkeep>", payload.id)));
    for to in &sink.to {
        builder = builder.to(to.parse().map_err(|e| smtp(&e))?);
    }
    let body = format!(
        "{}\n\nevent: {}\nstatus: {}\nrule: {}\nsubject: {}\nseverity: {}\nfirst seen: {}\n{}id: {}\n\ndetails:\n{}\n",
        headline(payload),
        payload.event,
        payload.status,
        payload.rule,
        payload.subject,
        payload.severity,
        payload.first_seen,
        payload
            .resolved_at
            .map(|at| format!("resolved at: {at}\n"))
            .unwrap_or_default(),
        payload.id,
        serde_json::to_string_pretty(&payload.details).unwrap_or_default(),
    );
    let message = builder
        .header(ContentType::TEXT_PLAIN)
        .body(body)
        .map_err(|e| smtp(&e))?;
    let mut transport = match sink.tls {
        SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
        SmtpTls::Starttls => {
            AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host).map_err(|e| smtp(&e))?
        }
        SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host).map_err(|e| smtp(&e))?,
    }
    .port(sink.port())
    .timeout(Some(alerts.delivery_timeout));
    if let (Some(user), Some(password)) = (&sink.username, &sink.password) {
        transport = transport.credentials(Credentials::new(
            user.clone(),
            password.expose_secret().to_owned(),
        ));
    }
    transport
        .build()
        .send(message)
        .await
        .map_err(|e| smtp(&e))?;
    Ok(())
}
