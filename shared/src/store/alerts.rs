//! `alert_incidents` and `alert_outbox`, and the reads the alert conditions need from the
//! ledger (finding codes, missed ticks, schedules' last successes).
//!
//! `alerts` decides what to open, repeat, resolve and send; this module only runs its
//! statements. The evaluation statements take the evaluator's transaction, which holds the
//! evaluation lock ([`try_lock_evaluation`]), so a message is inserted in the transaction that
//! changes its incident. The delivery statements are fenced by the claiming worker's name and
//! the `sending` state: a worker settles only a message it still holds.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use super::Error;
use crate::alerts::AlertPayload;

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

/// A condition observed by an evaluation, as its incident records it.
#[derive(Debug, Clone, Copy)]
pub struct ObservedIncident<'a> {
    /// The rule that matched.
    pub rule: &'a str,
    /// The event.
    pub event: &'a str,
    /// What it is about, unique within the rule and event.
    pub subject: &'a str,
    /// `warn` or `critical`.
    pub severity: &'a str,
    /// One line for humans.
    pub summary: &'a str,
    /// Event-specific facts.
    pub details: &'a serde_json::Value,
}

/// The open incident of an [`ObservedIncident`] after [`upsert_incident`].
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct UpsertedIncident {
    /// Row id.
    pub id: i64,
    /// True when the incident was opened by this upsert, false when it was open already.
    pub inserted: bool,
    /// When the incident was first seen.
    pub first_seen: DateTime<Utc>,
    /// When its newest firing message was queued.
    pub last_notified_at: DateTime<Utc>,
    /// Firing messages queued so far (1 + repeats), before this evaluation.
    pub n_notified: i32,
}

/// An incident closed by [`resolve_cleared`].
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct ResolvedIncident {
    /// Row id.
    pub id: i64,
    /// What it was about.
    pub subject: String,
    /// `warn` or `critical`.
    pub severity: String,
    /// Its last summary.
    pub summary: String,
    /// Its last details.
    pub details: serde_json::Value,
    /// When it was first seen.
    pub first_seen: DateTime<Utc>,
}

/// A message to queue in the outbox.
#[derive(Debug, Clone, Copy)]
pub struct NewMessage<'a> {
    /// `alert` or `ping`.
    pub kind: &'a str,
    /// The sink's name (a schedule's name for a ping).
    pub sink: &'a str,
    /// The incident the message is about, if any.
    pub incident_id: Option<i64>,
    /// The message; its `id` is the message id.
    pub payload: &'a AlertPayload,
    /// Unique per message: a second insert with the same key is a no-op.
    pub dedup_key: &'a str,
}

/// A message whose lease expired while `sending`, found by [`sweep_expired`].
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ExpiredMessage {
    /// Row id.
    pub id: i64,
    /// The message id.
    pub message_id: uuid::Uuid,
    /// The worker that held the lease.
    pub claimed_by: Option<String>,
}

/// A message claimed for delivery by [`claim`].
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedMessage {
    /// Row id.
    pub id: i64,
    /// The message id (the same on every delivery attempt).
    pub message_id: uuid::Uuid,
    /// `alert` or `ping`.
    pub kind: String,
    /// The sink's name (a schedule's name for a ping).
    pub sink: String,
    /// The message body.
    pub payload: serde_json::Value,
    /// Delivery attempts so far, this one included.
    pub attempts: i32,
    /// When the message was queued.
    pub created_at: DateTime<Utc>,
}

/// A schedule's `missed` ticks since its last success, as [`missed_ticks`] counts them.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct MissedTicks {
    /// The schedule.
    pub schedule: String,
    /// How many ticks were missed.
    pub n_missed: i64,
    /// The oldest missed tick's fire time.
    pub first_missed: DateTime<Utc>,
    /// The newest missed tick's fire time.
    pub last_missed: DateTime<Utc>,
}

/// What [`schedule_successes`] knows of a schedule.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ScheduleSuccess {
    /// The schedule.
    pub name: String,
    /// Whether an operator paused it (false for a schedule without a row).
    pub paused: bool,
    /// When its newest successful run finished.
    pub last_success: Option<DateTime<Utc>>,
    /// Its oldest tick's fire time (the reference of a schedule that never succeeded).
    pub first_tick: Option<DateTime<Utc>>,
}

/// Takes the evaluation lock for the rest of `tx`'s transaction: one evaluator at a time.
/// Returns the transaction's `now()`, the instant the evaluation observes, or `None` when another
/// evaluator holds the lock.
///
/// # Errors
/// When a query fails.
pub async fn try_lock_evaluation(tx: &mut PgConnection) -> Result<Option<DateTime<Utc>>, Error> {
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
        .bind(EVALUATE_LOCK)
        .fetch_one(&mut *tx)
        .await?;
    if !locked {
        return Ok(None);
    }
    let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()").fetch_one(tx).await?;
    Ok(Some(now))
}

/// Opens the incident of `observed` as seen at `now`, or refreshes the open one (its last
/// sighting, summary, severity and details), and locks its row for the rest of the transaction.
///
/// # Errors
/// When the query fails.
pub async fn upsert_incident(
    tx: &mut PgConnection,
    observed: &ObservedIncident<'_>,
    now: DateTime<Utc>,
) -> Result<UpsertedIncident, Error> {
    Ok(sqlx::query_as(
        "INSERT INTO alert_incidents \
             (rule, event, subject, severity, summary, details, first_seen, last_seen, \
              last_notified_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $7) \
         ON CONFLICT (rule, event, subject) WHERE resolved_at IS NULL DO UPDATE \
            SET last_seen = EXCLUDED.last_seen, summary = EXCLUDED.summary, \
                severity = EXCLUDED.severity, details = EXCLUDED.details \
         RETURNING id, (xmax = 0) AS inserted, first_seen, last_notified_at, n_notified",
    )
    .bind(observed.rule)
    .bind(observed.event)
    .bind(observed.subject)
    .bind(observed.severity)
    .bind(observed.summary)
    .bind(observed.details)
    .bind(now)
    .fetch_one(tx)
    .await?)
}

/// Records that a repeat firing message of incident `id` was queued at `now`. Call it only on a
/// row [`upsert_incident`] locked in this transaction, so no other evaluator races it.
///
/// # Errors
/// When the query fails.
pub async fn mark_renotified(
    tx: &mut PgConnection,
    id: i64,
    now: DateTime<Utc>,
) -> Result<(), Error> {
    sqlx::query(
        "UPDATE alert_incidents SET last_notified_at = $2, n_notified = n_notified + 1 \
         WHERE id = $1",
    )
    .bind(id)
    .bind(now)
    .execute(tx)
    .await?;
    Ok(())
}

/// Resolves, at `now`, the open incidents of `rule` and `event` whose subject is not in `open`,
/// and returns them.
///
/// # Errors
/// When the query fails.
pub async fn resolve_cleared(
    tx: &mut PgConnection,
    rule: &str,
    event: &str,
    open: &[&str],
    now: DateTime<Utc>,
) -> Result<Vec<ResolvedIncident>, Error> {
    Ok(sqlx::query_as(
        "UPDATE alert_incidents SET resolved_at = $4 \
         WHERE rule = $1 AND event = $2 AND resolved_at IS NULL AND NOT (subject = ANY($3)) \
         RETURNING id, subject, severity, summary, details, first_seen",
    )
    .bind(rule)
    .bind(event)
    .bind(open)
    .bind(now)
    .fetch_all(tx)
    .await?)
}

/// Resolves, at `now` and without a message, the open incidents whose `(rule, event)` pair is
/// not in `configured`.
///
/// # Errors
/// When the query fails.
pub async fn resolve_unconfigured(
    tx: &mut PgConnection,
    configured: &[(&str, &str)],
    now: DateTime<Utc>,
) -> Result<(), Error> {
    // The pairs are joined with the unit separator, which neither names nor events contain.
    let pairs: Vec<String> = configured
        .iter()
        .map(|(rule, event)| format!("{rule}\u{1f}{event}"))
        .collect();
    sqlx::query(
        "UPDATE alert_incidents SET resolved_at = $2 \
         WHERE resolved_at IS NULL AND NOT (rule || chr(31) || event = ANY($1))",
    )
    .bind(&pairs)
    .bind(now)
    .execute(tx)
    .await?;
    Ok(())
}

/// Queues `message` in the outbox, unless a message with its dedup key is there already.
///
/// # Errors
/// [`Error::Invalid`] when the payload cannot be encoded, or when the query fails.
pub async fn insert_message(tx: &mut PgConnection, message: &NewMessage<'_>) -> Result<(), Error> {
    let body = serde_json::to_value(message.payload).map_err(|e| Error::Invalid(e.to_string()))?;
    sqlx::query(
        "INSERT INTO alert_outbox (message_id, dedup_key, kind, sink, incident_id, payload) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (dedup_key) DO NOTHING",
    )
    .bind(message.payload.id)
    .bind(message.dedup_key)
    .bind(message.kind)
    .bind(message.sink)
    .bind(message.incident_id)
    .bind(body)
    .execute(tx)
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

/// Queues one `ping` message per run of `schedules` that finished within `lookback` and
/// succeeded or sent its job to the dead letters; returns how many were new. The dedup key
/// (`ping:<job id>:<attempt>`) makes each ping once, whoever runs it.
///
/// # Errors
/// When the query fails.
pub async fn queue_pings(
    pool: &PgPool,
    schedules: &[String],
    lookback: Duration,
) -> Result<u64, Error> {
    let result = sqlx::query(PINGS_SQL)
        .bind(schedules)
        .bind(lookback.as_secs_f64())
        .execute(pool)
        .await?;
    Ok(result.rows_affected())
}

/// Deletes up to 5,000 settled messages (`sent`, `failed`, `in_doubt`) created before `cutoff`,
/// and up to 5,000 incidents resolved before it.
///
/// # Errors
/// When a query fails.
pub async fn prune(pool: &PgPool, cutoff: DateTime<Utc>) -> Result<(), Error> {
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

/// Marks up to 100 messages whose lease expired while `sending` as `in_doubt` (or `pending`
/// again with `redeliver`), and returns them.
///
/// # Errors
/// When the query fails.
pub async fn sweep_expired(pool: &PgPool, redeliver: bool) -> Result<Vec<ExpiredMessage>, Error> {
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

/// Claims up to `limit` due messages, oldest due first, for `worker` until `lease` from now.
///
/// # Errors
/// When the query fails.
pub async fn claim(
    pool: &PgPool,
    worker: &str,
    lease: Duration,
    limit: i64,
) -> Result<Vec<ClaimedMessage>, Error> {
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

/// Marks a claimed message sent; false when `worker` no longer holds it.
///
/// # Errors
/// When the query fails.
pub async fn mark_sent(pool: &PgPool, id: i64, worker: &str) -> Result<bool, Error> {
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

/// Records a failed delivery attempt with its `error`: `pending` again after `retry_in`, or
/// `failed` when `give_up`; false when `worker` no longer holds the message.
///
/// # Errors
/// When the query fails.
pub async fn mark_failed(
    pool: &PgPool,
    id: i64,
    worker: &str,
    error: &str,
    retry_in: Duration,
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
///
/// # Errors
/// When the query fails.
pub async fn open_incidents(pool: &PgPool) -> Result<Vec<IncidentRow>, Error> {
    Ok(sqlx::query_as(
        "SELECT id, rule, event, subject, severity, summary, first_seen, last_seen, \
                last_notified_at, n_notified \
           FROM alert_incidents WHERE resolved_at IS NULL ORDER BY first_seen, id",
    )
    .fetch_all(pool)
    .await?)
}

/// How many outbox messages are in each state.
///
/// # Errors
/// When the query fails.
pub async fn outbox_counts(pool: &PgPool) -> Result<OutboxCounts, Error> {
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

/// Every finding code in the table, by a skip scan of `findings_code_created_at_idx` (one
/// index probe per distinct code, whatever the history's size).
const CODES_SQL: &str = "\
WITH RECURSIVE codes AS (
    (SELECT code FROM findings ORDER BY code LIMIT 1)
    UNION ALL
    SELECT (SELECT f.code FROM findings f WHERE f.code > c.code ORDER BY f.code LIMIT 1)
      FROM codes c WHERE c.code IS NOT NULL
)
SELECT code FROM codes WHERE code IS NOT NULL";

/// Every finding code ever reported, in order.
///
/// # Errors
/// When the query fails.
pub async fn finding_codes(pool: &PgPool) -> Result<Vec<String>, Error> {
    Ok(sqlx::query_scalar(CODES_SQL).fetch_all(pool).await?)
}

/// Per schedule: its `missed` ticks newer than both the lookback and its newest successful
/// run's tick (`job_runs_schedule_tick_at_idx`, `schedule_ticks_schedule_unrun_idx`).
const MISSED_SQL: &str = "\
SELECT t.schedule, count(*) AS n_missed, min(t.fire_at) AS first_missed,
       max(t.fire_at) AS last_missed
  FROM schedule_ticks t
 WHERE t.decision = 'missed' AND t.fire_at > $1
   AND t.fire_at > COALESCE((SELECT max(r.tick_at) FROM job_runs r
                              WHERE r.schedule = t.schedule AND r.status = 'succeeded'),
                            '-infinity')
 GROUP BY t.schedule
 ORDER BY t.schedule";

/// Per schedule with any, its ticks recorded `missed` after `since` and after its newest
/// successful run's tick, by schedule name.
///
/// # Errors
/// When the query fails.
pub async fn missed_ticks(pool: &PgPool, since: DateTime<Utc>) -> Result<Vec<MissedTicks>, Error> {
    Ok(sqlx::query_as(MISSED_SQL)
        .bind(since)
        .fetch_all(pool)
        .await?)
}

/// Per schedule: its newest successful run and its oldest tick.
const SUCCESSES_SQL: &str = "\
SELECT n.name, COALESCE(s.paused, false) AS paused,
       (SELECT max(r.finished_at) FROM job_runs r
         WHERE r.schedule = n.name AND r.status = 'succeeded') AS last_success,
       (SELECT t.fire_at FROM schedule_ticks t WHERE t.schedule = n.name
         ORDER BY t.fire_at LIMIT 1) AS first_tick
  FROM unnest($1::text[]) AS n(name)
  LEFT JOIN schedules s ON s.name = n.name";

/// For each of `names`: whether it is paused, when it last succeeded and when it first ticked.
///
/// # Errors
/// When the query fails.
pub async fn schedule_successes(
    pool: &PgPool,
    names: &[String],
) -> Result<Vec<ScheduleSuccess>, Error> {
    Ok(sqlx::query_as(SUCCESSES_SQL)
        .bind(names)
        .fetch_all(pool)
        .await?)
}
