//! `schedules` and `schedule_events`: the schedules as last reconciled from the config, the
//! operator's pause flag, and the audit trail of who changed what.
//!
//! The config is the source of truth for definitions: [`reconcile`] brings the table in line
//! with it at scheduler start (adding, updating, and disabling what the config dropped, never
//! deleting), using a stable hash of each definition to tell what changed. Pausing is the
//! operator's and survives reconciliation. Every change is one `schedule_events` row.

use std::collections::{HashMap, HashSet};
use std::fmt;

use chrono::{DateTime, Utc};
use sqlx::{PgExecutor, PgPool};

use super::Error;
use crate::schedule::ScheduleSettings;

/// What [`reconcile`] changed, by schedule name (each list sorted).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReconcilePlan {
    /// Schedules new to the table.
    pub added: Vec<String>,
    /// Schedules whose definition changed, or that came back to the config.
    pub changed: Vec<String>,
    /// Schedules no longer in the config: kept, disabled, marked `in_config = false`.
    pub removed: Vec<String>,
}

/// One row of `schedules`.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Serialize)]
pub struct ScheduleRow {
    /// The schedule's name.
    pub name: String,
    /// Cron expression as configured.
    pub cron: String,
    /// IANA time zone.
    pub timezone: String,
    /// Job kind.
    pub kind: String,
    /// Job arguments.
    pub args: serde_json::Value,
    /// Queue its jobs go to.
    pub queue: String,
    /// Catch-up policy: `skip`, `latest` or `all`.
    pub catch_up: String,
    /// Catch-up window in milliseconds.
    pub catch_up_window_ms: i64,
    /// Most ticks caught up at once.
    pub catch_up_max: i32,
    /// Overlap policy: `allow`, `skip` or `queue_one`.
    pub overlap: String,
    /// Jitter in milliseconds.
    pub jitter_ms: i64,
    /// Whether the config enables it (false once removed from the config).
    pub enabled: bool,
    /// Whether the current config still has it.
    pub in_config: bool,
    /// Paused by an operator.
    pub paused: bool,
    /// Who paused it.
    pub paused_by: Option<String>,
    /// When it was paused.
    pub paused_at: Option<DateTime<Utc>>,
    /// Stable hash of the definition, see [`config_hash`].
    pub config_hash: String,
    /// When the table first saw it.
    pub created_at: DateTime<Utc>,
    /// When the row last changed.
    pub updated_at: DateTime<Utc>,
}

/// What happened to a schedule: the `schedule_events.action` vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventAction {
    /// An operator paused it.
    Pause,
    /// An operator resumed it.
    Resume,
    /// An operator fired it now.
    Trigger,
    /// An operator enqueued past ticks.
    Backfill,
    /// Reconciliation found it new in the config.
    Added,
    /// Reconciliation found its definition changed.
    Changed,
    /// Reconciliation found it gone from the config.
    Removed,
}

/// Brings `schedules` in line with `configured`: inserts new schedules, updates changed ones
/// (or ones back in the config), and disables the ones gone from the config (kept for history).
/// Pause flags survive. Every change is a `schedule_events` row with actor `config`.
///
/// Safe with several replicas starting at once: the whole reconciliation is one transaction
/// under an advisory lock, so the first replica applies the changes and the others find none.
///
/// # Errors
/// [`Error::Database`] on a database error; nothing is changed then.
pub async fn reconcile(
    pool: &PgPool,
    configured: &[ScheduleSettings],
) -> Result<ReconcilePlan, Error> {
    let mut tx = pool.begin().await?;
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
    // One statement for all upserts and one for all events, so a config with thousands of
    // schedules reconciles in a few round trips.
    let mut upserts = Vec::new();
    let mut events: Vec<(String, EventAction, serde_json::Value)> = Vec::new();
    for schedule in configured {
        let definition = definition(schedule);
        let config_hash = hash_definition(&definition);
        let action = match existing.get(&schedule.name) {
            None => EventAction::Added,
            Some((old_hash, in_config)) if *old_hash != config_hash || !in_config => {
                EventAction::Changed
            }
            Some(_) => continue,
        };
        upserts.push((schedule, config_hash));
        events.push((schedule.name.clone(), action, definition));
        match action {
            EventAction::Added => plan.added.push(schedule.name.clone()),
            _ => plan.changed.push(schedule.name.clone()),
        }
    }
    if !upserts.is_empty() {
        let column = |f: &dyn Fn(&ScheduleSettings) -> String| -> Vec<String> {
            upserts.iter().map(|(s, _)| f(s)).collect()
        };
        sqlx::query(
            "INSERT INTO schedules (name, cron, timezone, kind, args, queue, catch_up, \
             catch_up_window_ms, catch_up_max, overlap, jitter_ms, enabled, in_config, \
             config_hash) \
             SELECT u.name, u.cron, u.timezone, u.kind, u.args, u.queue, u.catch_up, \
                    u.catch_up_window_ms, u.catch_up_max, u.overlap, u.jitter_ms, u.enabled, \
                    true, u.config_hash \
               FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[], \
                           $6::text[], $7::text[], $8::bigint[], $9::int[], $10::text[], \
                           $11::bigint[], $12::bool[], $13::text[]) \
                    AS u(name, cron, timezone, kind, args, queue, catch_up, catch_up_window_ms, \
                         catch_up_max, overlap, jitter_ms, enabled, config_hash) \
             ON CONFLICT (name) DO UPDATE SET cron = EXCLUDED.cron, \
             timezone = EXCLUDED.timezone, kind = EXCLUDED.kind, args = EXCLUDED.args, \
             queue = EXCLUDED.queue, catch_up = EXCLUDED.catch_up, \
             catch_up_window_ms = EXCLUDED.catch_up_window_ms, \
             catch_up_max = EXCLUDED.catch_up_max, overlap = EXCLUDED.overlap, \
             jitter_ms = EXCLUDED.jitter_ms, enabled = EXCLUDED.enabled, in_config = true, \
             config_hash = EXCLUDED.config_hash, updated_at = now()",
        )
        .bind(column(&|s| s.name.clone()))
        .bind(column(&|s| s.cron.as_str().to_owned()))
        .bind(column(&|s| s.timezone.name().to_owned()))
        .bind(column(&|s| s.kind.as_str().to_owned()))
        .bind(
            upserts
                .iter()
                .map(|(s, _)| s.args.clone())
                .collect::<Vec<_>>(),
        )
        .bind(column(&|s| s.queue.as_str().to_owned()))
        .bind(column(&|s| s.catch_up.as_str().to_owned()))
        .bind(
            upserts
                .iter()
                .map(|(s, _)| millis(s.catch_up_window))
                .collect::<Vec<_>>(),
        )
        .bind(
            upserts
                .iter()
                .map(|(s, _)| i32::try_from(s.catch_up_max).unwrap_or(i32::MAX))
                .collect::<Vec<_>>(),
        )
        .bind(column(&|s| s.overlap.as_str().to_owned()))
        .bind(
            upserts
                .iter()
                .map(|(s, _)| millis(s.jitter))
                .collect::<Vec<_>>(),
        )
        .bind(upserts.iter().map(|(s, _)| s.enabled).collect::<Vec<_>>())
        .bind(upserts.iter().map(|(_, h)| h.clone()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }
    let configured_names: HashSet<&str> = configured.iter().map(|s| s.name.as_str()).collect();
    let removed: Vec<String> = existing
        .iter()
        .filter(|(name, (_, in_config))| *in_config && !configured_names.contains(name.as_str()))
        .map(|(name, _)| name.clone())
        .collect();
    if !removed.is_empty() {
        sqlx::query(
            "UPDATE schedules SET in_config = false, enabled = false, updated_at = now() \
             WHERE name = ANY($1)",
        )
        .bind(&removed)
        .execute(&mut *tx)
        .await?;
        for name in &removed {
            events.push((name.clone(), EventAction::Removed, serde_json::json!({})));
        }
        plan.removed = removed;
    }
    record_events(&mut *tx, &events, "config").await?;
    tx.commit().await?;
    plan.added.sort();
    plan.changed.sort();
    plan.removed.sort();
    Ok(plan)
}

/// Every schedule the table knows, removed ones included, by name.
///
/// # Errors
/// [`Error::Database`] on a database error.
pub async fn list(pool: &PgPool) -> Result<Vec<ScheduleRow>, Error> {
    Ok(sqlx::query_as::<_, ScheduleRow>(
        "SELECT name, cron, timezone, kind, args, queue, catch_up, catch_up_window_ms, \
         catch_up_max, overlap, jitter_ms, enabled, in_config, paused, paused_by, paused_at, \
         config_hash, created_at, updated_at \
         FROM schedules ORDER BY name",
    )
    .fetch_all(pool)
    .await?)
}

/// Pauses (`paused = true`) or resumes a schedule on behalf of `actor`, recording a `pause` or
/// `resume` event. Returns false, and records nothing, when it already was in that state.
///
/// # Errors
/// [`Error::ScheduleNotFound`] when the table has no such schedule; [`Error::Database`] on a
/// database error.
pub async fn set_paused(
    pool: &PgPool,
    name: &str,
    paused: bool,
    actor: &str,
) -> Result<bool, Error> {
    let mut tx = pool.begin().await?;
    let current: Option<bool> =
        sqlx::query_scalar("SELECT paused FROM schedules WHERE name = $1 FOR UPDATE")
            .bind(name)
            .fetch_optional(&mut *tx)
            .await?;
    match current {
        None => return Err(Error::ScheduleNotFound(name.to_owned())),
        Some(current) if current == paused => return Ok(false),
        Some(_) => {}
    }
    sqlx::query(
        "UPDATE schedules SET paused = $2, paused_by = CASE WHEN $2 THEN $3 END, \
         paused_at = CASE WHEN $2 THEN now() END, updated_at = now() WHERE name = $1",
    )
    .bind(name)
    .bind(paused)
    .bind(actor)
    .execute(&mut *tx)
    .await?;
    let action = if paused {
        EventAction::Pause
    } else {
        EventAction::Resume
    };
    record_event(&mut *tx, name, action, actor, serde_json::json!({})).await?;
    tx.commit().await?;
    Ok(true)
}

/// The names of the schedules an operator paused.
///
/// # Errors
/// [`Error::Database`] on a database error.
pub async fn paused_names(pool: &PgPool) -> Result<HashSet<String>, Error> {
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM schedules WHERE paused")
        .fetch_all(pool)
        .await?;
    Ok(names.into_iter().collect())
}

/// One schedule by name.
///
/// # Errors
/// [`Error::ScheduleNotFound`] when the table has no such schedule; [`Error::Database`] on a
/// database error.
pub async fn get(pool: &PgPool, name: &str) -> Result<ScheduleRow, Error> {
    sqlx::query_as::<_, ScheduleRow>(
        "SELECT name, cron, timezone, kind, args, queue, catch_up, catch_up_window_ms, \
         catch_up_max, overlap, jitter_ms, enabled, in_config, paused, paused_by, paused_at, \
         config_hash, created_at, updated_at \
         FROM schedules WHERE name = $1",
    )
    .bind(name)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| Error::ScheduleNotFound(name.to_owned()))
}

/// Appends many `schedule_events` rows by one `actor` in one statement.
async fn record_events<'e>(
    db: impl PgExecutor<'e>,
    events: &[(String, EventAction, serde_json::Value)],
    actor: &str,
) -> Result<(), Error> {
    if events.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = events.iter().map(|(name, _, _)| name.as_str()).collect();
    let actions: Vec<&str> = events
        .iter()
        .map(|(_, action, _)| action.as_str())
        .collect();
    let details: Vec<serde_json::Value> =
        events.iter().map(|(_, _, detail)| detail.clone()).collect();
    sqlx::query(
        "INSERT INTO schedule_events (schedule, action, actor, detail) \
         SELECT e.schedule, e.action, $4, e.detail \
           FROM unnest($1::text[], $2::text[], $3::jsonb[]) AS e(schedule, action, detail)",
    )
    .bind(names)
    .bind(actions)
    .bind(details)
    .bind(actor)
    .execute(db)
    .await?;
    Ok(())
}

/// Appends one `schedule_events` row. Takes any executor, so it can join the caller's
/// transaction.
///
/// # Errors
/// [`Error::Database`] on a database error.
pub async fn record_event<'e>(
    db: impl PgExecutor<'e>,
    schedule: &str,
    action: EventAction,
    actor: &str,
    detail: serde_json::Value,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO schedule_events (schedule, action, actor, detail) VALUES ($1, $2, $3, $4)",
    )
    .bind(schedule)
    .bind(action.as_str())
    .bind(actor)
    .bind(detail)
    .execute(db)
    .await?;
    Ok(())
}

/// The stable hash of a schedule's definition that [`reconcile`] compares: 16 hex digits of
/// FNV-1a over its canonical JSON (keys sorted at every level), so it is the same in every
/// process and every build.
#[must_use]
pub fn config_hash(schedule: &ScheduleSettings) -> String {
    hash_definition(&definition(schedule))
}

impl EventAction {
    /// The SQL spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pause => "pause",
            Self::Resume => "resume",
            Self::Trigger => "trigger",
            Self::Backfill => "backfill",
            Self::Added => "added",
            Self::Changed => "changed",
            Self::Removed => "removed",
        }
    }
}

impl fmt::Display for EventAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The definition as stored, also the detail of `added` and `changed` events.
fn definition(schedule: &ScheduleSettings) -> serde_json::Value {
    serde_json::json!({
        "cron": schedule.cron.as_str(),
        "timezone": schedule.timezone.name(),
        "kind": schedule.kind.as_str(),
        "args": schedule.args,
        "queue": schedule.queue.as_str(),
        "catch_up": schedule.catch_up.as_str(),
        "catch_up_window_ms": millis(schedule.catch_up_window),
        "catch_up_max": schedule.catch_up_max,
        "overlap": schedule.overlap.as_str(),
        "jitter_ms": millis(schedule.jitter),
        "enabled": schedule.enabled,
    })
}

fn hash_definition(definition: &serde_json::Value) -> String {
    let mut state: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in canonical(definition).to_string().bytes() {
        state ^= u64::from(byte);
        state = state.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{state:016x}")
}

/// `value` with every object's keys in sorted order. serde_json keeps insertion order when some
/// crate in the build enables its `preserve_order` feature, so sorting here keeps the hash
/// independent of feature unification.
fn canonical(value: &serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => {
            let mut entries: Vec<(&String, &serde_json::Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            serde_json::Value::Object(
                entries
                    .into_iter()
                    .map(|(key, value)| (key.clone(), canonical(value)))
                    .collect(),
            )
        }
        serde_json::Value::Array(items) => {
            serde_json::Value::Array(items.iter().map(canonical).collect())
        }
        other => other.clone(),
    }
}

fn millis(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}
