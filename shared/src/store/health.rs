//! Schedule health: for each schedule its last tick, last success, next fire, lag and counts
//! of ticks that did not run, in one query ([`schedule_health`]), and the Prometheus text the
//! API's `/metrics` serves for them ([`render_metrics`]).
//!
//! Lags are measured from a tick's *due* time (its fire time plus the schedule's jitter
//! offset, see [`crate::schedule::ScheduleSpec::jitter_offset`]), because the jitter delay is
//! intended: `enqueue` is due → `schedule_ticks.enqueued_at` of the newest on-time
//! (`enqueued`) tick, `start` is due → first attempt's `job_runs.started_at` of the newest
//! on-time tick that has a run. Catch-up, manual and backfill ticks are left out: their lag is
//! deliberate.

use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};

use super::Error;
use crate::job::JobId;
use crate::schedule::ScheduleSpec;

/// One schedule's health, ready to serialise for the API or render as metrics.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ScheduleHealth {
    /// The schedule's name.
    pub name: String,
    /// Cron expression.
    pub cron: String,
    /// IANA time zone.
    pub timezone: String,
    /// Job kind.
    pub kind: String,
    /// Queue its jobs go to.
    pub queue: String,
    /// Whether the config enables it.
    pub enabled: bool,
    /// Whether the current config still has it.
    pub in_config: bool,
    /// Paused by an operator.
    pub paused: bool,
    /// Who paused it.
    pub paused_by: Option<String>,
    /// The newest tick in the ledger, whatever its decision.
    pub last_tick: Option<LastTick>,
    /// When the newest succeeded run of the schedule finished.
    pub last_success_at: Option<DateTime<Utc>>,
    /// The fire time of the tick of that run.
    pub last_success_tick: Option<DateTime<Utc>>,
    /// The next nominal fire time after the later of now and the last tick; `None` for a
    /// disabled or removed schedule, or one whose expression has no more matches.
    pub next_fire_at: Option<DateTime<Utc>>,
    /// When that tick is due (fire time plus jitter offset).
    pub next_due_at: Option<DateTime<Utc>>,
    /// Due → enqueued, in seconds, of the newest on-time tick.
    pub enqueue_lag_seconds: Option<f64>,
    /// Due → first attempt started, in seconds, of the newest on-time tick that has a run.
    pub start_lag_seconds: Option<f64>,
    /// Ticks recorded `missed` (downtime, catch-up policy).
    pub n_missed: i64,
    /// Ticks recorded `skipped_overlap`.
    pub n_skipped_overlap: i64,
    /// Ticks recorded `skipped_paused`.
    pub n_skipped_paused: i64,
}

/// The newest tick of a schedule.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LastTick {
    /// Its nominal fire time.
    pub fire_at: DateTime<Utc>,
    /// Its decision (`schedule_ticks.decision`).
    pub decision: String,
    /// Its job, once enqueued.
    pub job_id: Option<JobId>,
}

const HEALTH_SQL: &str = "\
SELECT s.name, s.cron, s.timezone, s.kind, s.queue, s.jitter_ms, s.enabled, s.in_config,
       s.paused, s.paused_by,
       lt.fire_at, lt.decision, lt.job_id,
       ls.finished_at, ls.tick_at,
       le.fire_at, le.enqueued_at,
       lr.fire_at, lr.started_at,
       c.n_missed, c.n_skipped_overlap, c.n_skipped_paused
  FROM schedules s
  LEFT JOIN LATERAL (SELECT fire_at, decision, job_id FROM schedule_ticks
                      WHERE schedule = s.name ORDER BY fire_at DESC LIMIT 1) lt ON true
  LEFT JOIN LATERAL (SELECT finished_at, tick_at FROM job_runs
                      WHERE schedule = s.name AND status = 'succeeded'
                      ORDER BY finished_at DESC LIMIT 1) ls ON true
  LEFT JOIN LATERAL (SELECT fire_at, enqueued_at FROM schedule_ticks
                      WHERE schedule = s.name AND decision = 'enqueued'
                        AND enqueued_at IS NOT NULL
                      ORDER BY fire_at DESC LIMIT 1) le ON true
  LEFT JOIN LATERAL (SELECT t.fire_at, r.started_at FROM schedule_ticks t
                       JOIN LATERAL (SELECT started_at FROM job_runs
                                      WHERE job_id = t.job_id ORDER BY attempt LIMIT 1) r
                         ON true
                      WHERE t.schedule = s.name AND t.decision = 'enqueued'
                        AND t.job_id IS NOT NULL
                      ORDER BY t.fire_at DESC LIMIT 1) lr ON true
  CROSS JOIN LATERAL (SELECT count(*) FILTER (WHERE decision = 'missed') AS n_missed,
                             count(*) FILTER (WHERE decision = 'skipped_overlap')
                               AS n_skipped_overlap,
                             count(*) FILTER (WHERE decision = 'skipped_paused')
                               AS n_skipped_paused
                        FROM schedule_ticks
                       WHERE schedule = s.name
                         AND decision IN ('missed', 'skipped_overlap', 'skipped_paused')) c
 WHERE $1::text IS NULL OR s.name = $1
 ORDER BY s.name";

/// The health of every schedule the table knows (removed ones included), by name, as of
/// `now`; with `only`, of that schedule alone.
///
/// # Errors
/// [`Error::Database`] on a database error.
pub async fn schedule_health(
    pool: &PgPool,
    now: DateTime<Utc>,
    only: Option<&str>,
) -> Result<Vec<ScheduleHealth>, Error> {
    let rows = sqlx::query(HEALTH_SQL).bind(only).fetch_all(pool).await?;
    rows.iter()
        .map(|row| health_of(row, now).map_err(Error::from))
        .collect()
}

fn health_of(row: &PgRow, now: DateTime<Utc>) -> Result<ScheduleHealth, sqlx::Error> {
    let name: String = row.try_get(0)?;
    let cron: String = row.try_get(1)?;
    let timezone: String = row.try_get(2)?;
    let kind: String = row.try_get(3)?;
    let queue: String = row.try_get(4)?;
    let jitter_ms: i64 = row.try_get(5)?;
    let enabled: bool = row.try_get(6)?;
    let in_config: bool = row.try_get(7)?;
    let paused: bool = row.try_get(8)?;
    let paused_by: Option<String> = row.try_get(9)?;
    let last_fire_at: Option<DateTime<Utc>> = row.try_get(10)?;
    let last_decision: Option<String> = row.try_get(11)?;
    let last_job_id: Option<uuid::Uuid> = row.try_get(12)?;
    let last_success_at: Option<DateTime<Utc>> = row.try_get(13)?;
    let last_success_tick: Option<DateTime<Utc>> = row.try_get(14)?;
    let enqueued_fire_at: Option<DateTime<Utc>> = row.try_get(15)?;
    let enqueued_at: Option<DateTime<Utc>> = row.try_get(16)?;
    let started_fire_at: Option<DateTime<Utc>> = row.try_get(17)?;
    let started_at: Option<DateTime<Utc>> = row.try_get(18)?;
    let n_missed: i64 = row.try_get(19)?;
    let n_skipped_overlap: i64 = row.try_get(20)?;
    let n_skipped_paused: i64 = row.try_get(21)?;
    let jitter = Duration::from_millis(u64::try_from(jitter_ms).unwrap_or(0));
    let spec = ScheduleSpec::parse(&name, &cron, &timezone, jitter).ok();
    let next_fire_at = spec
        .as_ref()
        .filter(|_| enabled && in_config)
        .and_then(|spec| spec.next_fire_after(last_fire_at.map_or(now, |last| last.max(now))));
    let due = |fire_at: DateTime<Utc>| spec.as_ref().map_or(fire_at, |spec| spec.due_at(fire_at));
    let lag = |fire_at: Option<DateTime<Utc>>, at: Option<DateTime<Utc>>| {
        let (fire_at, at) = (fire_at?, at?);
        (at - due(fire_at))
            .to_std()
            .map_or(Some(0.0), |lag| Some(lag.as_secs_f64()))
    };
    Ok(ScheduleHealth {
        last_tick: last_fire_at
            .zip(last_decision)
            .map(|(fire_at, decision)| LastTick {
                fire_at,
                decision,
                job_id: last_job_id.map(JobId),
            }),
        last_success_at,
        last_success_tick,
        next_due_at: next_fire_at.map(due),
        next_fire_at,
        enqueue_lag_seconds: lag(enqueued_fire_at, enqueued_at),
        start_lag_seconds: lag(started_fire_at, started_at),
        n_missed,
        n_skipped_overlap,
        n_skipped_paused,
        name,
        cron,
        timezone,
        kind,
        queue,
        enabled,
        in_config,
        paused,
        paused_by,
    })
}

/// Renders the health of the schedules still in the config in the Prometheus text format
/// (version 0.0.4): one family per metric, each with its `# HELP` and `# TYPE` lines.
///
/// - `upkeep_schedule_last_success_timestamp_seconds{schedule}` (gauge; absent before the
///   first success)
/// - `upkeep_schedule_missed_total{schedule}` (counter)
/// - `upkeep_schedule_skipped_total{schedule,reason="overlap"|"paused"}` (counter)
/// - `upkeep_schedule_next_fire_timestamp_seconds{schedule}` (gauge; absent when none)
/// - `upkeep_schedule_lag_seconds{schedule,stage="enqueue"|"start"}` (gauge; absent until
///   measured)
#[must_use]
pub fn render_metrics(health: &[ScheduleHealth]) -> String {
    let current: Vec<&ScheduleHealth> = health.iter().filter(|h| h.in_config).collect();
    let mut out = String::new();
    family(
        &mut out,
        "upkeep_schedule_last_success_timestamp_seconds",
        "gauge",
        "When the newest succeeded run of the schedule finished, in Unix seconds.",
    );
    for h in &current {
        if let Some(at) = h.last_success_at {
            sample(
                &mut out,
                "upkeep_schedule_last_success_timestamp_seconds",
                &[("schedule", &h.name)],
                unix(at),
            );
        }
    }
    family(
        &mut out,
        "upkeep_schedule_missed_total",
        "counter",
        "Ticks recorded as missed (no scheduler ran; not run per the catch-up policy).",
    );
    for h in &current {
        sample(
            &mut out,
            "upkeep_schedule_missed_total",
            &[("schedule", &h.name)],
            h.n_missed as f64,
        );
    }
    family(
        &mut out,
        "upkeep_schedule_skipped_total",
        "counter",
        "Ticks not run because the previous run was unfinished (overlap) or the schedule was paused.",
    );
    for h in &current {
        for (reason, n) in [
            ("overlap", h.n_skipped_overlap),
            ("paused", h.n_skipped_paused),
        ] {
            sample(
                &mut out,
                "upkeep_schedule_skipped_total",
                &[("schedule", &h.name), ("reason", reason)],
                n as f64,
            );
        }
    }
    family(
        &mut out,
        "upkeep_schedule_next_fire_timestamp_seconds",
        "gauge",
        "The schedule's next nominal fire time, in Unix seconds.",
    );
    for h in &current {
        if let Some(at) = h.next_fire_at {
            sample(
                &mut out,
                "upkeep_schedule_next_fire_timestamp_seconds",
                &[("schedule", &h.name)],
                unix(at),
            );
        }
    }
    family(
        &mut out,
        "upkeep_schedule_lag_seconds",
        "gauge",
        "Delay from the newest on-time tick's due time to its enqueue and to its run's start.",
    );
    for h in &current {
        for (stage, lag) in [
            ("enqueue", h.enqueue_lag_seconds),
            ("start", h.start_lag_seconds),
        ] {
            if let Some(lag) = lag {
                sample(
                    &mut out,
                    "upkeep_schedule_lag_seconds",
                    &[("schedule", &h.name), ("stage", stage)],
                    lag,
                );
            }
        }
    }
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    let labels: Vec<String> = labels
        .iter()
        .map(|(key, value)| format!("{key}=\"{}\"", escape_label(value)))
        .collect();
    let _ = writeln!(out, "{name}{{{}}} {value}", labels.join(","));
}

/// A label value with backslash, double quote and newline escaped, as the text format asks.
fn escape_label(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

fn unix(at: DateTime<Utc>) -> f64 {
    at.timestamp_millis() as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn health(name: &str) -> ScheduleHealth {
        ScheduleHealth {
            name: name.to_owned(),
            cron: "0 0 2 * * *".to_owned(),
            timezone: "UTC".to_owned(),
            kind: "system.ping".to_owned(),
            queue: "reports".to_owned(),
            enabled: true,
            in_config: true,
            paused: false,
            paused_by: None,
            last_tick: None,
            last_success_at: None,
            last_success_tick: None,
            next_fire_at: None,
            next_due_at: None,
            enqueue_lag_seconds: None,
            start_lag_seconds: None,
            n_missed: 0,
            n_skipped_overlap: 0,
            n_skipped_paused: 0,
        }
    }

    #[test]
    fn metrics_name_every_family_and_only_the_values_that_exist() {
        let mut backup = health("backup.nightly");
        backup.last_success_at = Utc.with_ymd_and_hms(2026, 11, 22, 2, 0, 5).single();
        backup.next_fire_at = Utc.with_ymd_and_hms(2026, 11, 23, 2, 0, 0).single();
        backup.n_missed = 2;
        backup.n_skipped_overlap = 3;
        backup.enqueue_lag_seconds = Some(0.012);
        let fresh = health("disk");
        let mut removed = health("gone");
        removed.in_config = false;

        let text = render_metrics(&[backup, fresh, removed]);

        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            samples,
            [
                "upkeep_schedule_last_success_timestamp_seconds{schedule=\"backup.nightly\"} 1795312805",
                "upkeep_schedule_missed_total{schedule=\"backup.nightly\"} 2",
                "upkeep_schedule_missed_total{schedule=\"disk\"} 0",
                "upkeep_schedule_skipped_total{schedule=\"backup.nightly\",reason=\"overlap\"} 3",
                "upkeep_schedule_skipped_total{schedule=\"backup.nightly\",reason=\"paused\"} 0",
                "upkeep_schedule_skipped_total{schedule=\"disk\",reason=\"overlap\"} 0",
                "upkeep_schedule_skipped_total{schedule=\"disk\",reason=\"paused\"} 0",
                "upkeep_schedule_next_fire_timestamp_seconds{schedule=\"backup.nightly\"} 1795399200",
                "upkeep_schedule_lag_seconds{schedule=\"backup.nightly\",stage=\"enqueue\"} 0.012",
            ]
        );
        for name in [
            "upkeep_schedule_last_success_timestamp_seconds gauge",
            "upkeep_schedule_missed_total counter",
            "upkeep_schedule_skipped_total counter",
            "upkeep_schedule_next_fire_timestamp_seconds gauge",
            "upkeep_schedule_lag_seconds gauge",
        ] {
            assert!(
                text.contains(&format!("# TYPE {name}\n")),
                "{name}:\n{text}"
            );
        }
        assert!(!text.contains("gone"), "removed schedules have no series");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
