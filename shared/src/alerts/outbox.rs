//! `alert_incidents` and `alert_outbox`: incidents opened, repeated and resolved in one
//! transaction with the messages they call for, and the outbox's claim/settle statements.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use sqlx::{PgPool, Postgres, Transaction};

use super::detect::{self, Condition};
use super::{AlertPayload, EvaluateReport, Event, RuleSettings};
use crate::config::Settings;
use crate::queue::RedisConn;
use crate::store::Error;

/// The evaluation lock's key (`pg_try_advisory_xact_lock`): one evaluator at a time.
const EVALUATE_LOCK: i64 = 0x7570_6b65_6570_0016; // "upkeep" + issue 16

/// One open incident, as `upkeepctl alerts list` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
pub struct IncidentRow {
    /// Row id.
    pub id: i64,
    /// The rule.
    pub rule: String,
    /// The event.
    pub event: String,
    /// What it is about.
    pub subject: String,
    /// `warn` or `critical`.
    pub severity: String,
    /// One line for humans.
    pub summary: String,
    /// First seen.
    pub first_seen: DateTime<Utc>,
    /// Last seen by an evaluation.
    pub last_seen: DateTime<Utc>,
    /// When the newest firing message was queued.
    pub last_notified_at: DateTime<Utc>,
    /// Firing messages queued so far (1 + repeats).
    pub n_notified: i32,
}

/// How many outbox messages are in each state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OutboxCounts {
    /// Waiting for delivery (or for a retry).
    pub pending: i64,
    /// Being delivered now.
    pub sending: i64,
    /// Delivered.
    pub sent: i64,
    /// Given up.
    pub failed: i64,
    /// Their worker died mid-delivery; not re-sent.
    pub in_doubt: i64,
}

/// One evaluation pass (see [`super::Alerter::evaluate_once`]).
pub(super) async fn evaluate(
    pool: &PgPool,
    conn: Option<&RedisConn>,
    settings: &Settings,
) -> Result<EvaluateReport, Error> {
    let mut tx = pool.begin().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(EVALUATE_LOCK)
        .fetch_one(&mut *tx)
        .await?;
    if !locked {
        tx.rollback().await?;
        return Ok(EvaluateReport::default());
    }
    let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&mut *tx)
        .await?;
    // Read under the lock, so no other evaluator acts on an older view in between.
    let mut observed: BTreeMap<Event, Vec<Condition>> = BTreeMap::new();
    for event in detect::watched_events(settings) {
        if let Some(conditions) = detect::conditions(pool, conn, settings, event, now).await {
            observed.insert(event, conditions);
        }
    }
    let mut report = EvaluateReport {
        evaluated: true,
        ..EvaluateReport::default()
    };
    for rule in &settings.alerts.rules {
        for event in &rule.events {
            let Some(conditions) = observed.get(event) else {
                continue; // Source unknown this pass: leave its incidents alone.
            };
            let matching: Vec<&Condition> = conditions
                .iter()
                .filter(|condition| rule_matches(rule, condition))
                .collect();
            for condition in &matching {
                apply_condition(&mut tx, rule, condition, now, &mut report).await?;
            }
            let open: Vec<&str> = matching.iter().map(|c| c.subject.as_str()).collect();
            report.resolved += resolve_cleared(&mut tx, rule, *event, &open, now).await?;
        }
    }
    // Incidents of rules (or events) no longer configured close without a message: there is
    // no rule left to say where it would go.
    let pairs: Vec<String> = settings
        .alerts
        .rules
        .iter()
        .flat_map(|rule| {
            rule.events
                .iter()
                .map(|e| format!("{}\u{1f}{e}", rule.name))
        })
        .collect();
    sqlx::query(
        "UPDATE alert_incidents SET resolved_at = $2 \
         WHERE resolved_at IS NULL AND NOT (rule || chr(31) || event = ANY($1))",
    )
    .bind(&pairs)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(report)
}

fn rule_matches(rule: &RuleSettings, condition: &Condition) -> bool {
    condition
        .code
        .as_deref()
        .is_none_or(|c| rule.matches_code(c))
        && condition
            .queue
            .as_deref()
            .is_none_or(|q| rule.matches_queue(q))
        && condition
            .name
            .as_deref()
            .is_none_or(|n| rule.matches_subject(n))
}

#[derive(sqlx::FromRow)]
struct Upserted {
    id: i64,
    inserted: bool,
    first_seen: DateTime<Utc>,
    last_notified_at: DateTime<Utc>,
    n_notified: i32,
}

/// Opens the incident of `condition` (queuing its firing messages), or refreshes the open one
/// and queues a repeat once `repeat_interval` has passed since the last firing message.
async fn apply_condition(
    tx: &mut Transaction<'_, Postgres>,
    rule: &RuleSettings,
    condition: &Condition,
    now: DateTime<Utc>,
    report: &mut EvaluateReport,
) -> Result<(), Error> {
    let row: Upserted = sqlx::query_as(
        "INSERT INTO alert_incidents \
             (rule, event, subject, severity, summary, details, first_seen, last_seen, \
              last_notified_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $7) \
         ON CONFLICT (rule, event, subject) WHERE resolved_at IS NULL DO UPDATE \
            SET last_seen = EXCLUDED.last_seen, summary = EXCLUDED.summary, \
                severity = EXCLUDED.severity, details = EXCLUDED.details \
         RETURNING id, (xmax = 0) AS inserted, first_seen, last_notified_at, n_notified",
    )
    .bind(&rule.name)
    .bind(condition.event.as_str())
    .bind(&condition.subject)
    .bind(condition.severity)
    .bind(&condition.summary)
    .bind(&condition.details)
    .bind(now)
    .fetch_one(&mut **tx)
    .await?;
    let repeat = if row.inserted {
        report.opened += 1;
        0
    } else {
        let repeat_after = TimeDelta::from_std(rule.repeat_interval).unwrap_or(TimeDelta::MAX);
        if now - row.last_notified_at < repeat_after {
            return Ok(());
        }
        // The row is locked by the upsert above: this update cannot race another evaluator.
        sqlx::query(
            "UPDATE alert_incidents SET last_notified_at = $2, n_notified = n_notified + 1 \
             WHERE id = $1",
        )
        .bind(row.id)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        report.repeated += 1;
        row.n_notified
    };
    for sink in &rule.sinks {
        let payload = AlertPayload {
            id: uuid::Uuid::now_v7(),
            event: condition.event.as_str().to_owned(),
            status: "firing".to_owned(),
            rule: rule.name.clone(),
            subject: condition.subject.clone(),
            severity: condition.severity.to_owned(),
            summary: condition.summary.clone(),
            first_seen: row.first_seen,
            resolved_at: None,
            incident_id: Some(row.id),
            repeat,
            details: condition.details.clone(),
        };
        let dedup = format!("incident:{}:firing:{repeat}:{sink}", row.id);
        insert_message(tx, "alert", sink, Some(row.id), &payload, &dedup).await?;
    }
    Ok(())
}

#[derive(sqlx::FromRow)]
struct Resolved {
    id: i64,
    subject: String,
    severity: String,
    summary: String,
    details: serde_json::Value,
    first_seen: DateTime<Utc>,
}

/// Resolves the open incidents of `rule` and `event` whose subject is not in `open`, queuing a
/// resolve message per sink.
async fn resolve_cleared(
    tx: &mut Transaction<'_, Postgres>,
    rule: &RuleSettings,
    event: Event,
    open: &[&str],
    now: DateTime<Utc>,
) -> Result<u64, Error> {
    let resolved: Vec<Resolved> = sqlx::query_as(
        "UPDATE alert_incidents SET resolved_at = $4 \
         WHERE rule = $1 AND event = $2 AND resolved_at IS NULL AND NOT (subject = ANY($3)) \
         RETURNING id, subject, severity, summary, details, first_seen",
    )
    .bind(&rule.name)
    .bind(event.as_str())
    .bind(open)
    .bind(now)
    .fetch_all(&mut **tx)
    .await?;
    for incident in &resolved {
        for sink in &rule.sinks {
            let payload = AlertPayload {
                id: uuid::Uuid::now_v7(),
                event: event.as_str().to_owned(),
                status: "resolved".to_owned(),
                rule: rule.name.clone(),
                subject: incident.subject.clone(),
                severity: incident.severity.clone(),
                summary: format!("resolved: {}", incident.summary),
                first_seen: incident.first_seen,
                resolved_at: Some(now),
                incident_id: Some(incident.id),
                repeat: 0,
                details: incident.details.clone(),
            };
            let dedup = format!("incident:{}:resolved:{sink}", incident.id);
            insert_message(tx, "alert", sink, Some(incident.id), &payload, &dedup).await?;
        }
    }
    Ok(resolved.len() as u64)
}

async fn insert_message(
    tx: &mut Transaction<'_, Postgres>,
    kind: &str,
    sink: &str,
    incident_id: Option<i64>,
    payload: &AlertPayload,
    dedup: &str,
) -> Result<(), Error> {
    let body = serde_json::to_value(payload).map_err(|e| Error::Invalid(e.to_string()))?;
    sqlx::query(
        "INSERT INTO alert_outbox (message_id, dedup_key, kind, sink, incident_id, payload) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (dedup_key) DO NOTHING",
    )
    .bind(payload.id)
    .bind(dedup)
    .bind(kind)
    .bind(sink)
    .bind(incident_id)
    .bind(body)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Finished runs of schedules with a `ping_url`: succeeded attempts, and attempts after which
/// the job went dead (`job_runs_schedule_succeeded_idx` bounds the read to the lookback).
const PINGS_SQL: &str = "\
INSERT INTO alert_outbox (message_id, dedup_key, kind, sink, payload)
SELECT gen_random_uuid(), 'ping:' || r.job_id || ':' || r.attempt, 'ping', r.schedule,
       jsonb_build_object('schedule', r.schedule, 'job_id', r.job_id, 'attempt', r.attempt,
                          'result', CASE WHEN r.status = 'succeeded' THEN 'success'
                                         ELSE 'fail' END)
  FROM job_runs r
 WHERE r.schedule = ANY($1) AND r.finished_at > now() - make_interval(secs => $2)
   AND (r.status = 'succeeded' OR r.next_state = 'dead')
ON CONFLICT (dedup_key) DO NOTHING";

/// Queues one heartbeat ping per finished run of a schedule that has a `ping_url`; returns how
/// many were new. Any number of workers may run it: the dedup key makes each ping once.
pub(super) async fn queue_pings(pool: &PgPool, settings: &Settings) -> Result<u64, Error> {
    let schedules: Vec<String> = settings
        .schedules
        .iter()
        .filter(|s| s.ping_url.is_some())
        .map(|s| s.name.clone())
        .collect();
    if schedules.is_empty() {
        return Ok(0);
    }
    // Long enough to cover many missed passes, short enough to stay an index range; outbox
    // rows (the dedup keys) are kept longer than this (`alerts.outbox_retention` ≥ 1h).
    let lookback = settings
        .alerts
        .evaluate_interval
        .mul_f64(20.0)
        .max(std::time::Duration::from_secs(3600))
        .min(settings.alerts.outbox_retention);
    let result = sqlx::query(PINGS_SQL)
        .bind(&schedules)
        .bind(lookback.as_secs_f64())
        .execute(pool)
        .await?;
    Ok(result.rows_affected())
}

/// Deletes settled messages and resolved incidents older than `alerts.outbox_retention`.
pub(super) async fn prune(pool: &PgPool, alerts: &super::AlertsSettings) -> Result<(), Error> {
    let cutoff =
        Utc::now() - TimeDelta::from_std(alerts.outbox_retention).unwrap_or(TimeDelta::MAX);
    sqlx::query(
        "DELETE FROM alert_outbox WHERE id IN (SELECT id FROM alert_outbox \
          WHERE created_at < $1 AND state IN ('sent', 'failed', 'in_doubt') LIMIT 5000)",
    )
    .bind(cutoff)
    .execute(pool)
    .await?;
    sqlx::query(
        "DELETE FROM alert_incidents WHERE id IN (SELECT id FROM alert_incidents \
          WHERE resolved_at < $1 LIMIT 5000)",
    )
    .bind(cutoff)
    .execute(pool)
    .await?;
    Ok(())
}

/// One claimed message.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(super) struct Claimed {
    pub(super) id: i64,
    pub(super) message_id: uuid::Uuid,
    pub(super) kind: String,
    pub(super) sink: String,
    pub(super) payload: serde_json::Value,
    pub(super) attempts: i32,
    pub(super) created_at: DateTime<Utc>,
}

/// Marks messages whose lease expired while `sending` as `in_doubt` (or `pending` again with
/// `redeliver`); returns their ids and message ids.
pub(super) async fn sweep_expired(
    pool: &PgPool,
    redeliver: bool,
) -> Result<Vec<(i64, uuid::Uuid, Option<String>)>, Error> {
    Ok(sqlx::query_as(
        "UPDATE alert_outbox \
            SET state = CASE WHEN $1 THEN 'pending' ELSE 'in_doubt' END, \
                last_error = 'the delivering worker stopped mid-delivery (lease expired)', \
                next_attempt_at = now() \
          WHERE id IN (SELECT id FROM alert_outbox \
                        WHERE state = 'sending' AND claimed_until < now() \
                        FOR UPDATE SKIP LOCKED LIMIT 100) \
          RETURNING id, message_id, claimed_by",
    )
    .bind(redeliver)
    .fetch_all(pool)
    .await?)
}

/// Claims up to `limit` due messages for `worker` until `lease` from now.
pub(super) async fn claim(
    pool: &PgPool,
    worker: &str,
    lease: std::time::Duration,
    limit: i64,
) -> Result<Vec<Claimed>, Error> {
    Ok(sqlx::query_as(
        "UPDATE alert_outbox \
            SET state = 'sending', claimed_by = $1, \
                claimed_until = now() + make_interval(secs => $2), attempts = attempts + 1 \
          WHERE id IN (SELECT id FROM alert_outbox \
                        WHERE state = 'pending' AND next_attempt_at <= now() \
                        ORDER BY next_attempt_at LIMIT $3 FOR UPDATE SKIP LOCKED) \
          RETURNING id, message_id, kind, sink, payload, attempts, created_at",
    )
    .bind(worker)
    .bind(lease.as_secs_f64())
    .bind(limit)
    .fetch_all(pool)
    .await?)
}

/// Marks a claimed message sent; false when this worker no longer holds it.
pub(super) async fn mark_sent(pool: &PgPool, id: i64, worker: &str) -> Result<bool, Error> {
    let result = sqlx::query(
        "UPDATE alert_outbox SET state = 'sent', sent_at = now(), last_error = NULL, \
                claimed_until = NULL \
          WHERE id = $1 AND claimed_by = $2 AND state = 'sending'",
    )
    .bind(id)
    .bind(worker)
    .execute(pool)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Records a failed attempt: `pending` again after `retry_in`, or `failed` when `give_up`.
pub(super) async fn mark_failed(
    pool: &PgPool,
    id: i64,
    worker: &str,
    error: &str,
    retry_in: std::time::Duration,
    give_up: bool,
) -> Result<bool, Error> {
    let result = sqlx::query(
        "UPDATE alert_outbox \
            SET state = CASE WHEN $4 THEN 'failed' ELSE 'pending' END, last_error = $3, \
                next_attempt_at = now() + make_interval(secs => $5), claimed_until = NULL \
          WHERE id = $1 AND claimed_by = $2 AND state = 'sending'",
    )
    .bind(id)
    .bind(worker)
    .bind(error)
    .bind(give_up)
    .bind(retry_in.as_secs_f64())
    .execute(pool)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// The open incidents, oldest first.
pub(super) async fn open_incidents(pool: &PgPool) -> Result<Vec<IncidentRow>, Error> {
    Ok(sqlx::query_as(
        "SELECT id, rule, event, subject, severity, summary, first_seen, last_seen, \
                last_notified_at, n_notified \
           FROM alert_incidents WHERE resolved_at IS NULL ORDER BY first_seen, id",
    )
    .fetch_all(pool)
    .await?)
}

/// How many messages are in each state.
pub(super) async fn counts(pool: &PgPool) -> Result<OutboxCounts, Error> {
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, count(*) FROM alert_outbox GROUP BY state")
            .fetch_all(pool)
            .await?;
    let mut counts = OutboxCounts::default();
    for (state, n) in rows {
        match state.as_str() {
            "pending" => counts.pending = n,
            "sending" => counts.sending = n,
            "sent" => counts.sent = n,
            "failed" => counts.failed = n,
            "in_doubt" => counts.in_doubt = n,
            _ => {}
        }
    }
    Ok(counts)
}
