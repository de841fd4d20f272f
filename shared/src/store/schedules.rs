//! `schedules` and `schedule_events`: the schedules as last reconciled from the config (the
//! config is the source of truth), the operator's pause flag, and an audit trail of who changed
//! what.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::Error;
use crate::config::ScheduleSettings;

/// What reconciling the table with the config changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcilePlan {
    /// Schedules new in the config.
    pub added: Vec<String>,
    /// Schedules whose definition changed.
    pub changed: Vec<String>,
    /// Schedules no longer in the config (kept, disabled).
    pub removed: Vec<String>,
}

/// One row of `schedules`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct ScheduleRow {
    /// Name.
    pub name: String,
    /// Cron expression.
    pub cron: String,
    /// IANA zone.
    pub timezone: String,
    /// Job kind.
    pub kind: String,
    /// Queue.
    pub queue: String,
    /// Whether it fires.
    pub enabled: bool,
    /// Whether the current config has it.
    pub in_config: bool,
    /// Paused by an operator.
    pub paused: bool,
    /// Who paused it.
    pub paused_by: Option<String>,
    /// When it was paused.
    pub paused_at: Option<DateTime<Utc>>,
}

fn definition(schedule: &ScheduleSettings) -> serde_json::Value {
    serde_json::json!({
        "cron": schedule.cron.as_str(),
        "timezone": schedule.timezone.name(),
        "kind": schedule.kind.as_str(),
        "args": schedule.args,
        "queue": schedule.queue.as_str(),
        "catch_up": schedule.catch_up.as_str(),
        "catch_up_window_ms": schedule.catch_up_window.as_millis() as i64,
        "catch_up_max": schedule.catch_up_max,
        "overlap": schedule.overlap.as_str(),
        "jitter_ms": schedule.jitter.as_millis() as i64,
        "enabled": schedule.enabled,
    })
}

/// FNV-1a of the canonical definition: stable across processes and builds.
fn hash(definition: &serde_json::Value) -> String {
    let mut state: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in definition.to_string().bytes() {
        state ^= u64::from(byte);
        state = state.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{state:016x}")
}

/// Brings the table in line with the config: inserts new schedules, updates changed ones, and
/// marks the ones gone from the config as removed (kept for history, never fired). Pause flags
/// survive. Every change is recorded in `schedule_events` with actor `config`.
///
/// # Errors
/// On a database error (the whole reconciliation is one transaction).
pub async fn reconcile(
    pool: &PgPool,
    configured: &[ScheduleSettings],
) -> Result<ReconcilePlan, Error> {
    let mut tx = pool.begin().await?;
    // Replicas starting together reconcile one at a time.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('upkeep.schedules.reconcile'))")
        .execute(&mut *tx)
        .await?;
    let existing: HashMap<String, (String, bool)> = sqlx::query_as::<_, (String, String, bool)>(
        "SELECT name, config_hash, in_config FROM schedules",
    )
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|(name, config_hash, in_config)| (name, (config_hash, in_config)))
    .collect();
    let mut plan = ReconcilePlan::default();
    for schedule in configured {
        let definition = definition(schedule);
        let config_hash = hash(&definition);
        let action = match existing.get(&schedule.name) {
            None => "added",
            Some((old_hash, in_config)) if *old_hash != config_hash || !in_config => "changed",
            Some(_) => continue,
        };
        sqlx::query(
            "INSERT INTO schedules (name, cron, timezone, kind, args, queue, catch_up, catch_up_window_ms, \
             overlap, jitter_ms, enabled, in_config, config_hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, true, $12) \
             ON CONFLICT (name) DO UPDATE SET cron = EXCLUDED.cron, timezone = EXCLUDED.timezone, \
             kind = EXCLUDED.kind, args = EXCLUDED.args, queue = EXCLUDED.queue, \
             catch_up = EXCLUDED.catch_up, catch_up_window_ms = EXCLUDED.catch_up_window_ms, \
             overlap = EXCLUDED.overlap, jitter_ms = EXCLUDED.jitter_ms, enabled = EXCLUDED.enabled, \
             in_config = true, config_hash = EXCLUDED.config_hash, updated_at = now()",
        )
        .bind(&schedule.name)
        .bind(schedule.cron.as_str())
        .bind(schedule.timezone.name())
        .bind(schedule.kind.as_str())
        .bind(&schedule.args)
        .bind(schedule.queue.as_str())
        .bind(schedule.catch_up.as_str())
        .bind(schedule.catch_up_window.as_millis() as i64)
        .bind(schedule.overlap.as_str())
        .bind(schedule.jitter.as_millis() as i64)
        .bind(schedule.enabled)
        .bind(&config_hash)
        .execute(&mut *tx)
        .await?;
        record_event_in(&mut tx, &schedule.name, action, "config", definition).await?;
        if action == "added" {
            plan.added.push(schedule.name.clone());
        } else {
            plan.changed.push(schedule.name.clone());
        }
    }
    for (name, (_, in_config)) in &existing {
        if *in_config && !configured.iter().any(|s| &s.name == name) {
            sqlx::query("UPDATE schedules SET in_config = false, enabled = false, updated_at = now() WHERE name = $1")
                .bind(name)
                .execute(&mut *tx)
                .await?;
            record_event_in(&mut tx, name, "removed", "config", serde_json::json!({})).await?;
            plan.removed.push(name.clone());
        }
    }
    tx.commit().await?;
    plan.added.sort();
    plan.changed.sort();
    plan.removed.sort();
    Ok(plan)
}

/// Every schedule the table knows, by name.
///
/// # Errors
/// On a database error.
pub async fn list(pool: &PgPool) -> Result<Vec<ScheduleRow>, Error> {
    Ok(sqlx::query_as::<_, ScheduleRow>(
        "SELECT name, cron, timezone, kind, queue, enabled, in_config, paused, paused_by, paused_at \
         FROM schedules ORDER BY name",
    )
    .fetch_all(pool)
    .await?)
}

/// Pauses or resumes a schedule; returns false when no such schedule exists.
///
/// # Errors
/// On a database error.
pub async fn set_paused(
    pool: &PgPool,
    name: &str,
    paused: bool,
    actor: &str,
) -> Result<bool, Error> {
    let mut tx = pool.begin().await?;
    let updated = sqlx::query(
        "UPDATE schedules SET paused = $2, paused_by = CASE WHEN $2 THEN $3 END, \
         paused_at = CASE WHEN $2 THEN now() END, updated_at = now() WHERE name = $1",
    )
    .bind(name)
    .bind(paused)
    .bind(actor)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if updated == 1 {
        let action = if paused { "pause" } else { "resume" };
        record_event_in(&mut tx, name, action, actor, serde_json::json!({})).await?;
    }
    tx.commit().await?;
    Ok(updated == 1)
}

/// Records an operator action (trigger, backfill, ...) on a schedule.
///
/// # Errors
/// On a database error.
pub async fn record_event(
    pool: &PgPool,
    schedule: &str,
    action: &str,
    actor: &str,
    detail: serde_json::Value,
) -> Result<(), Error> {
    let mut tx = pool.begin().await?;
    record_event_in(&mut tx, schedule, action, actor, detail).await?;
    tx.commit().await?;
    Ok(())
}

async fn record_event_in(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    schedule: &str,
    action: &str,
    actor: &str,
    detail: serde_json::Value,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO schedule_events (schedule, action, actor, detail) VALUES ($1, $2, $3, $4)",
    )
    .bind(schedule)
    .bind(action)
    .bind(actor)
    .bind(detail)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
