//! Incidents opened, repeated and resolved in one transaction with the messages they call
//! for: the evaluation pass, the heartbeat pings and the outbox's pruning. The statements are
//! `store::alerts`'.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::{PgConnection, PgPool};

use super::detect::{self, Condition};
use super::{AlertPayload, EvaluateReport, Event, RuleSettings};
use crate::config::Settings;
use crate::queue::RedisConn;
use crate::store::Error;
use crate::store::alerts::{self as store, NewMessage, ObservedIncident};

/// One evaluation pass (see [`super::Alerter::evaluate_once`]).
pub(super) async fn evaluate(
    pool: &PgPool,
    conn: Option<&RedisConn>,
    settings: &Settings,
) -> Result<EvaluateReport, Error> {
    let mut tx = pool.begin().await?;
    let Some(now) = store::try_lock_evaluation(&mut tx).await? else {
        tx.rollback().await?;
        return Ok(EvaluateReport::default());
    };
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
    let configured: Vec<(&str, &str)> = settings
        .alerts
        .rules
        .iter()
        .flat_map(|rule| {
            rule.events
                .iter()
                .map(|event| (rule.name.as_str(), event.as_str()))
        })
        .collect();
    store::resolve_unconfigured(&mut tx, &configured, now).await?;
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

/// Opens the incident of `condition` (queuing its firing messages), or refreshes the open one
/// and queues a repeat once `repeat_interval` has passed since the last firing message.
async fn apply_condition(
    tx: &mut PgConnection,
    rule: &RuleSettings,
    condition: &Condition,
    now: DateTime<Utc>,
    report: &mut EvaluateReport,
) -> Result<(), Error> {
    let observed = ObservedIncident {
        rule: &rule.name,
        event: condition.event.as_str(),
        subject: &condition.subject,
        severity: condition.severity,
        summary: &condition.summary,
        details: &condition.details,
    };
    let row = store::upsert_incident(tx, &observed, now).await?;
    let repeat = if row.inserted {
        report.opened += 1;
        0
    } else {
        let repeat_after = TimeDelta::from_std(rule.repeat_interval).unwrap_or(TimeDelta::MAX);
        if now - row.last_notified_at < repeat_after {
            return Ok(());
        }
        // The row is locked by the upsert above: this update cannot race another evaluator.
        store::mark_renotified(tx, row.id, now).await?;
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
        let dedup_key = format!("incident:{}:firing:{repeat}:{sink}", row.id);
        let message = NewMessage {
            kind: "alert",
            sink,
            incident_id: Some(row.id),
            payload: &payload,
            dedup_key: &dedup_key,
        };
        store::insert_message(tx, &message).await?;
    }
    Ok(())
}

/// Resolves the open incidents of `rule` and `event` whose subject is not in `open`, queuing a
/// resolve message per sink.
async fn resolve_cleared(
    tx: &mut PgConnection,
    rule: &RuleSettings,
    event: Event,
    open: &[&str],
    now: DateTime<Utc>,
) -> Result<u64, Error> {
    let resolved = store::resolve_cleared(tx, &rule.name, event.as_str(), open, now).await?;
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
            let dedup_key = format!("incident:{}:resolved:{sink}", incident.id);
            let message = NewMessage {
                kind: "alert",
                sink,
                incident_id: Some(incident.id),
                payload: &payload,
                dedup_key: &dedup_key,
            };
            store::insert_message(tx, &message).await?;
        }
    }
    Ok(resolved.len() as u64)
}

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
    store::queue_pings(pool, &schedules, lookback).await
}

/// Deletes settled messages and resolved incidents older than `alerts.outbox_retention`.
pub(super) async fn prune(pool: &PgPool, alerts: &super::AlertsSettings) -> Result<(), Error> {
    let cutoff =
        Utc::now() - TimeDelta::from_std(alerts.outbox_retention).unwrap_or(TimeDelta::MAX);
    store::prune(pool, cutoff).await
}
