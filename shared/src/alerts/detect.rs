//! The conditions the rules watch, read from the ledger, Redis' dead sets and `backups`.
//!
//! Each source is read only when a rule needs its event. A source that cannot be read is
//! reported as unknown (`None`), so the incidents of its event are neither opened nor resolved
//! on a guess.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use sqlx::PgPool;

use super::Event;
use crate::config::Settings;
use crate::job::Severity;
use crate::queue::RedisConn;
use crate::schedule::{ScheduleSettings, ScheduleSpec};
use crate::store::{alerts, backups, findings};

/// One observed condition that may become an incident.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Condition {
    pub(super) event: Event,
    /// The incident's subject within its rule and event.
    pub(super) subject: String,
    /// `warn` or `critical`.
    pub(super) severity: &'static str,
    pub(super) summary: String,
    pub(super) details: serde_json::Value,
    /// The finding code (findings only), for `codes` filters.
    pub(super) code: Option<String>,
    /// The queue (dead letters only), for `queues` filters.
    pub(super) queue: Option<String>,
    /// The schedule or database (missed ticks, silent schedules, stale backups), for
    /// `subjects` filters.
    pub(super) name: Option<String>,
}

/// Dead letters read per queue and pass; older ones are not alerted on until newer ones leave.
const DEAD_LETTERS_PER_QUEUE: usize = 200;
/// Missed ticks older than this are not alerted on.
const MISSED_LOOKBACK: TimeDelta = TimeDelta::days(7);

/// The conditions of `event` now; `None` when its source could not be read.
pub(super) async fn conditions(
    pool: &PgPool,
    conn: Option<&RedisConn>,
    settings: &Settings,
    event: Event,
    now: DateTime<Utc>,
) -> Option<Vec<Condition>> {
    let result = match event {
        Event::FindingCritical => open_findings(pool, Severity::Critical).await,
        Event::FindingWarn => open_findings(pool, Severity::Warn).await,
        Event::DeadLetter => match conn {
            Some(conn) => dead_letters(conn, settings).await,
            None => return None,
        },
        Event::MissedTick => missed_ticks(pool, now).await,
        Event::StaleBackup => stale_backups(pool, settings, now).await,
        Event::ScheduleSilent => silent_schedules(pool, settings, now).await,
    };
    match result {
        Ok(conditions) => Some(conditions),
        Err(error) => {
            tracing::warn!(%event, error = %error, "cannot read the condition source; its incidents are left as they are");
            None
        }
    }
}

async fn open_findings(pool: &PgPool, severity: Severity) -> anyhow::Result<Vec<Condition>> {
    let codes = alerts::finding_codes(pool).await?;
    let codes: Vec<&str> = codes.iter().map(String::as_str).collect();
    let open = findings::open(pool, &codes).await?;
    let event = match severity {
        Severity::Critical => Event::FindingCritical,
        _ => Event::FindingWarn,
    };
    Ok(open
        .into_iter()
        .filter(|finding| finding.severity == severity)
        .map(|finding| {
            let subject = match &finding.subject {
                Some(subject) => format!("{}/{subject}", finding.code),
                None => finding.code.clone(),
            };
            Condition {
                event,
                severity: severity_str(severity),
                summary: format!("{}: {}", subject, finding.message),
                details: serde_json::json!({
                    "code": finding.code,
                    "finding_subject": finding.subject,
                    "message": finding.message,
                    "kind": finding.kind,
                    "job_id": finding.job_id,
                    "observed_at": finding.created_at,
                }),
                code: Some(finding.code),
                queue: None,
                name: None,
                subject,
            }
        })
        .collect())
}

fn severity_str(severity: Severity) -> &'static str {
    match severity {
        Severity::Critical => "critical",
        _ => "warn",
    }
}

async fn dead_letters(conn: &RedisConn, settings: &Settings) -> anyhow::Result<Vec<Condition>> {
    let mut out = Vec::new();
    for queue_name in settings.queues.keys() {
        let queue = settings.queue_on(conn.clone(), queue_name);
        for record in queue.dead_letters(DEAD_LETTERS_PER_QUEUE).await? {
            let field = |name: &str| record.fields.get(name).cloned().unwrap_or_default();
            let kind = field("kind");
            let error = field("err");
            out.push(Condition {
                event: Event::DeadLetter,
                subject: format!("{queue_name}/{}", record.id),
                severity: "critical",
                summary: format!(
                    "job {} ({kind}) is dead in queue {queue_name}: {error}",
                    record.id
                ),
                details: serde_json::json!({
                    "job_id": record.id,
                    "queue": queue_name.as_str(),
                    "kind": kind,
                    "error": error,
                    "attempt": field("attempt"),
                }),
                code: None,
                queue: Some(queue_name.as_str().to_owned()),
                name: None,
            });
        }
    }
    Ok(out)
}

async fn missed_ticks(pool: &PgPool, now: DateTime<Utc>) -> anyhow::Result<Vec<Condition>> {
    let rows = alerts::missed_ticks(pool, now - MISSED_LOOKBACK).await?;
    Ok(rows
        .into_iter()
        .map(|missed| {
            let alerts::MissedTicks {
                schedule,
                n_missed: n,
                first_missed: first,
                last_missed: last,
            } = missed;
            Condition {
            event: Event::MissedTick,
            subject: schedule.clone(),
            severity: "warn",
            summary: format!(
                "schedule {schedule} missed {n} tick(s) since its last success (first {first}, last {last})"
            ),
            details: serde_json::json!({
                "schedule": schedule,
                "n_missed": n,
                "first_missed": first,
                "last_missed": last,
            }),
            code: None,
            queue: None,
            name: Some(schedule),
        }})
        .collect())
}

/// The schedule's nominal interval: the gap between its next two fire times after `now`.
fn interval_of(schedule: &ScheduleSettings, now: DateTime<Utc>) -> Option<Duration> {
    let spec = ScheduleSpec::new(
        schedule.name.clone(),
        schedule.cron.clone(),
        schedule.timezone,
        schedule.jitter,
    );
    let first = spec.next_fire_after(now)?;
    let second = spec.next_fire_after(first)?;
    (second - first).to_std().ok()
}

fn delta(duration: Duration) -> TimeDelta {
    TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX)
}

async fn stale_backups(
    pool: &PgPool,
    settings: &Settings,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<Condition>> {
    let backup_schedules: Vec<&ScheduleSettings> = settings
        .schedules
        .iter()
        .filter(|s| s.enabled && s.kind.as_str() == "backup.run")
        .collect();
    if backup_schedules.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for (database, finished_at, _size) in backups::newest_good(pool).await? {
        // The shortest interval among the schedules that back this database up.
        let interval = backup_schedules
            .iter()
            .filter(|s| {
                s.args
                    .get("database")
                    .and_then(serde_json::Value::as_str)
                    .is_none_or(|db| db == database)
            })
            .filter_map(|s| interval_of(s, now))
            .min();
        let Some(interval) = interval else { continue };
        let limit = interval + settings.alerts.grace;
        if now - finished_at > delta(limit) {
            let age = (now - finished_at).num_minutes();
            out.push(Condition {
                event: Event::StaleBackup,
                subject: database.clone(),
                severity: "critical",
                summary: format!(
                    "the newest good backup of {database} is {age} minutes old (expected within {})",
                    crate::settings::duration::format(limit)
                ),
                details: serde_json::json!({
                    "database": database,
                    "newest_good_backup_at": finished_at,
                    "max_age_seconds": limit.as_secs(),
                }),
                code: None,
                queue: None,
                name: Some(database),
            });
        }
    }
    Ok(out)
}

async fn silent_schedules(
    pool: &PgPool,
    settings: &Settings,
    now: DateTime<Utc>,
) -> anyhow::Result<Vec<Condition>> {
    let enabled: Vec<&ScheduleSettings> = settings.schedules.iter().filter(|s| s.enabled).collect();
    let names: Vec<String> = enabled.iter().map(|s| s.name.clone()).collect();
    let mut out = Vec::new();
    for alerts::ScheduleSuccess {
        name,
        paused,
        last_success,
        first_tick,
    } in alerts::schedule_successes(pool, &names).await?
    {
        if paused {
            continue;
        }
        let Some(schedule) = enabled.iter().find(|s| s.name == name) else {
            continue;
        };
        let Some(interval) = interval_of(schedule, now) else {
            continue;
        };
        let Some(reference) = last_success.or(first_tick) else {
            continue;
        };
        let limit = interval + settings.alerts.grace;
        if now - reference > delta(limit) {
            let summary = match last_success {
                Some(at) => format!(
                    "schedule {name} has not succeeded since {at} (expected every {})",
                    crate::settings::duration::format(interval)
                ),
                None => format!(
                    "schedule {name} has never succeeded since its first tick at {reference}"
                ),
            };
            out.push(Condition {
                event: Event::ScheduleSilent,
                subject: name.clone(),
                severity: "critical",
                summary,
                details: serde_json::json!({
                    "schedule": name,
                    "last_success_at": last_success,
                    "interval_seconds": interval.as_secs(),
                    "grace_seconds": settings.alerts.grace.as_secs(),
                }),
                code: None,
                queue: None,
                name: Some(name),
            });
        }
    }
    Ok(out)
}

/// The events any rule watches.
pub(super) fn watched_events(settings: &Settings) -> BTreeSet<Event> {
    settings
        .alerts
        .rules
        .iter()
        .flat_map(|rule| rule.events.iter().copied())
        .collect()
}
