//! The maintenance checklist as data: task items, their period windows, and the status each
//! item has in a window given its evidence (pure, no IO).
//!
//! A [`TaskItem`] is satisfied either by a job kind's runs (`backup.run`, `db.bloat`) or by an
//! operator's acknowledgement alone (a manual item such as "security audit"). For a [`Period`]
//! and a date, [`Window`] is the UTC day, ISO week or calendar month that contains the date, in
//! the checklist's time zone. `store::tasks` gathers the [`Evidence`] of every item in a window
//! with a few index probes per kind (never a scan of history), and [`evaluate`] turns it into a
//! [`TaskStatus`] as DESIGN.md defines the statuses. The API, `upkeepctl tasks` and the
//! dashboard all read the checklist through this module, so they cannot disagree.

mod settings;

use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

pub use settings::{TaskItemSettings, TasksSettings};

use crate::job::{CATALOG, Severity};

/// How often an item is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    /// Every local day.
    Daily,
    /// Every ISO week (Monday to Sunday).
    Weekly,
    /// Every calendar month.
    Monthly,
}

impl Period {
    /// The period's name as the API and CLI spell it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Daily => "daily",
            Self::Weekly => "weekly",
            Self::Monthly => "monthly",
        }
    }

    /// Parses `daily`, `weekly` or `monthly`.
    ///
    /// # Errors
    /// Names the bad value and what is allowed.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "daily" => Ok(Self::Daily),
            "weekly" => Ok(Self::Weekly),
            "monthly" => Ok(Self::Monthly),
            other => Err(format!(
                "unknown period {other:?} (expected daily, weekly or monthly)"
            )),
        }
    }
}

/// One period's window: `[start, end)` in UTC, and the local date that names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The period.
    pub period: Period,
    /// The first local day of the window (a Monday for weekly, the 1st for monthly).
    pub first_day: NaiveDate,
    /// The window's first instant.
    pub start: DateTime<Utc>,
    /// The first instant after the window.
    pub end: DateTime<Utc>,
}

impl Window {
    /// The window of `period` that contains the local date `date` in `zone`.
    #[must_use]
    pub fn containing(period: Period, date: NaiveDate, zone: Tz) -> Self {
        let first_day = match period {
            Period::Daily => date,
            Period::Weekly => {
                date - Duration::days(i64::from(date.weekday().num_days_from_monday()))
            }
            Period::Monthly => date.with_day(1).unwrap_or(date),
        };
        let next_first_day = match period {
            Period::Daily => first_day + Duration::days(1),
            Period::Weekly => first_day + Duration::days(7),
            Period::Monthly => first_day
                .checked_add_months(chrono::Months::new(1))
                .unwrap_or(first_day + Duration::days(31)),
        };
        Self {
            period,
            first_day,
            start: local_midnight(first_day, zone),
            end: local_midnight(next_first_day, zone),
        }
    }

    /// The window's name in ids: the first day (`2026-11-30`).
    #[must_use]
    pub fn key(&self) -> String {
        self.first_day.format("%Y-%m-%d").to_string()
    }

    /// Whether the window has closed at `now`.
    #[must_use]
    pub fn is_closed(&self, now: DateTime<Utc>) -> bool {
        now >= self.end
    }
}

/// The first instant of `day` in `zone`. A midnight that a DST change skips (a few zones move
/// their clocks at 00:00) is the first instant after the gap; a repeated one is its first
/// occurrence.
fn local_midnight(day: NaiveDate, zone: Tz) -> DateTime<Utc> {
    let midnight = day.and_hms_opt(0, 0, 0).unwrap_or_default();
    match zone.from_local_datetime(&midnight) {
        chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => {
            t.with_timezone(&Utc)
        }
        chrono::LocalResult::None => {
            // Walk forward a minute at a time to the end of the gap (at most a few hours).
            let mut probe = midnight;
            for _ in 0..(24 * 60) {
                probe += Duration::minutes(1);
                if let Some(t) = zone.from_local_datetime(&probe).earliest() {
                    return t.with_timezone(&Utc);
                }
            }
            Utc.from_utc_datetime(&midnight)
        }
    }
}

/// What satisfies an item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", content = "value", rename_all = "snake_case")]
pub enum Satisfier {
    /// A succeeded run of this job kind inside the window, optionally only runs whose args
    /// contain `args` (`{"mode": "restore"}`).
    Kind {
        /// The job kind.
        kind: String,
        /// A JSON object the run's args must contain; `null` for any args.
        args: serde_json::Value,
    },
    /// An operator's acknowledgement with a note, and nothing else.
    Manual,
}

/// One item of the checklist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskItem {
    /// Stable name (`backups`, `security_audit`): with the period and window, the item's id.
    pub name: String,
    /// How often it is due.
    pub period: Period,
    /// What the checklist says.
    pub description: String,
    /// What satisfies it.
    pub satisfied_by: Satisfier,
}

impl TaskItem {
    /// The job kind that satisfies it, if any.
    #[must_use]
    pub fn kind(&self) -> Option<&str> {
        match &self.satisfied_by {
            Satisfier::Kind { kind, .. } => Some(kind),
            Satisfier::Manual => None,
        }
    }

    /// The item's id in `window`: `daily.backups.2026-11-29`. The API and `upkeepctl tasks ack`
    /// take it.
    #[must_use]
    pub fn id(&self, window: &Window) -> String {
        format!("{}.{}.{}", self.period.as_str(), self.name, window.key())
    }
}

/// Parses a task item id into its period, name and window's first day.
///
/// # Errors
/// Says what part is malformed.
pub fn parse_item_id(id: &str) -> Result<(Period, String, NaiveDate), String> {
    let mut parts = id.splitn(3, '.');
    let (Some(period), Some(name), Some(day)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!(
            "task id {id:?} is not PERIOD.NAME.YYYY-MM-DD (e.g. daily.backups.2026-11-29)"
        ));
    };
    let period = Period::parse(period)?;
    let day = NaiveDate::parse_from_str(day, "%Y-%m-%d")
        .map_err(|_| format!("task id {id:?}: {day:?} is not a date (YYYY-MM-DD)"))?;
    if name.is_empty() {
        return Err(format!("task id {id:?} has no item name"));
    }
    Ok((period, name.to_owned(), day))
}

/// The built-in checklist of DESIGN.md ("The checklist as data").
#[must_use]
pub fn builtin_items() -> Vec<TaskItem> {
    let kind = |kind: &str| Satisfier::Kind {
        kind: kind.to_owned(),
        args: serde_json::Value::Null,
    };
    let item = |name: &str, period, description: &str, satisfied_by| TaskItem {
        name: name.to_owned(),
        period,
        description: description.to_owned(),
        satisfied_by,
    };
    use Period::{Daily, Monthly, Weekly};
    vec![
        item(
            "backups",
            Daily,
            "backups succeeded and verified",
            kind("backup.run"),
        ),
        item(
            "backups_verified",
            Daily,
            "backups verified by a full read",
            Satisfier::Kind {
                kind: "backup.verify".to_owned(),
                args: serde_json::json!({"mode": "full_read"}),
            },
        ),
        item(
            "error_logs",
            Daily,
            "error logs checked",
            kind("logs.scan_errors"),
        ),
        item(
            "log_rotation",
            Daily,
            "logs rotated and pruned",
            kind("logs.rotate"),
        ),
        item(
            "disk_space",
            Daily,
            "disk space checked",
            kind("system.disk"),
        ),
        item(
            "queue_stats",
            Daily,
            "job queue stats checked",
            kind("queues.snapshot"),
        ),
        item(
            "slow_queries",
            Daily,
            "slow queries reviewed",
            kind("db.slow_queries"),
        ),
        item(
            "credentials",
            Daily,
            "credentials healthy",
            kind("tokens.refresh"),
        ),
        item("bloat", Weekly, "database bloat checked", kind("db.bloat")),
        item(
            "index_usage",
            Weekly,
            "index usage reviewed",
            kind("db.index_usage"),
        ),
        item(
            "failed_jobs",
            Weekly,
            "failed jobs reviewed",
            kind("jobs.failed_review"),
        ),
        item(
            "application_performance",
            Weekly,
            "application performance reviewed",
            Satisfier::Manual,
        ),
        item(
            "security_logs",
            Weekly,
            "security logs reviewed",
            Satisfier::Manual,
        ),
        item(
            "dependency_updates",
            Weekly,
            "dependency updates reviewed",
            Satisfier::Manual,
        ),
        item(
            "restore_test",
            Monthly,
            "full backup verification, restore tested",
            Satisfier::Kind {
                kind: "backup.verify".to_owned(),
                args: serde_json::json!({"mode": "restore"}),
            },
        ),
        item(
            "performance_review",
            Monthly,
            "performance review",
            Satisfier::Manual,
        ),
        item(
            "security_audit",
            Monthly,
            "security audit",
            Satisfier::Manual,
        ),
        item(
            "capacity_planning",
            Monthly,
            "capacity planning",
            Satisfier::Manual,
        ),
        item(
            "documentation",
            Monthly,
            "documentation reviewed",
            Satisfier::Manual,
        ),
    ]
}

/// The checklist in effect: the built-in items, with the configured overrides, removals and
/// additions applied, in built-in order then configuration order.
#[must_use]
pub fn effective_items(settings: &TasksSettings) -> Vec<TaskItem> {
    let mut items = builtin_items();
    for configured in &settings.items {
        let position = items.iter().position(|item| item.name == configured.name);
        if !configured.enabled {
            if let Some(idx) = position {
                items.remove(idx);
            }
            continue;
        }
        let satisfied_by = match (&configured.kind, configured.manual) {
            (Some(kind), _) => Satisfier::Kind {
                kind: kind.clone(),
                args: configured.args.clone().unwrap_or(serde_json::Value::Null),
            },
            (None, true) => Satisfier::Manual,
            (None, false) => match position {
                Some(idx) => items[idx].satisfied_by.clone(),
                None => Satisfier::Manual,
            },
        };
        let period = configured
            .period
            .or_else(|| position.map(|idx| items[idx].period))
            .unwrap_or(Period::Daily);
        let description = configured
            .description
            .clone()
            .or_else(|| position.map(|idx| items[idx].description.clone()))
            .unwrap_or_else(|| configured.name.clone());
        let item = TaskItem {
            name: configured.name.clone(),
            period,
            description,
            satisfied_by,
        };
        match position {
            Some(idx) => items[idx] = item,
            None => items.push(item),
        }
    }
    items
}

/// The status of an item in a window, as DESIGN.md defines them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// Satisfied: the job succeeded in the window without warn or critical findings (or those
    /// were acknowledged), or a manual item was acknowledged.
    Done,
    /// The job succeeded but reported warn or critical findings that nobody acknowledged.
    Attention,
    /// The newest attempt in the window failed.
    Failed,
    /// The window closed without a success or an acknowledgement.
    Missed,
    /// The window is still open and nothing satisfied it yet.
    Pending,
    /// The job kind has no handler in this build.
    NotAvailable,
}

impl TaskStatus {
    /// The status as the API spells it.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Done => "done",
            Self::Attention => "attention",
            Self::Failed => "failed",
            Self::Missed => "missed",
            Self::Pending => "pending",
            Self::NotAvailable => "not_available",
        }
    }
}

/// A run that is evidence for an item.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunEvidence {
    /// The `job_runs` row id.
    pub run_id: i64,
    /// The job.
    pub job_id: uuid::Uuid,
    /// The attempt.
    pub attempt: i32,
    /// When it finished.
    pub finished_at: DateTime<Utc>,
    /// The error of a failed attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A finding that is evidence for an item.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FindingEvidence {
    /// The `findings` row id.
    pub finding_id: i64,
    /// Its stable code.
    pub code: String,
    /// How bad.
    pub severity: Severity,
    /// What it is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// Its message.
    pub message: String,
}

/// An operator's acknowledgement of an item in a window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Acknowledgement {
    /// Who (the API token's name, or `$USER@host` from the CLI).
    pub actor: String,
    /// Why.
    pub note: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// Everything known about an item in a window.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Evidence {
    /// The newest succeeded run in the window.
    pub last_success: Option<RunEvidence>,
    /// The warn and critical findings of that run (ok findings are not evidence of trouble).
    pub findings: Vec<FindingEvidence>,
    /// The newest failed attempt in the window.
    pub last_failure: Option<RunEvidence>,
    /// The newest acknowledgement in the window.
    pub acknowledgement: Option<Acknowledgement>,
}

/// The status of `item` in `window` at `now`, from its `evidence`.
#[must_use]
pub fn evaluate(
    item: &TaskItem,
    window: &Window,
    evidence: &Evidence,
    now: DateTime<Utc>,
) -> TaskStatus {
    if let Some(kind) = item.kind()
        && !CATALOG
            .iter()
            .any(|spec| spec.name == kind && spec.has_handler)
    {
        return TaskStatus::NotAvailable;
    }
    let unresolved = || {
        if window.is_closed(now) {
            TaskStatus::Missed
        } else {
            TaskStatus::Pending
        }
    };
    match &item.satisfied_by {
        Satisfier::Manual => {
            if evidence.acknowledgement.is_some() {
                TaskStatus::Done
            } else {
                unresolved()
            }
        }
        Satisfier::Kind { .. } => {
            let failed_last = match (&evidence.last_failure, &evidence.last_success) {
                (Some(failure), Some(success)) => failure.finished_at > success.finished_at,
                (Some(_), None) => true,
                (None, _) => false,
            };
            if failed_last {
                return TaskStatus::Failed;
            }
            if evidence.last_success.is_none() {
                return unresolved();
            }
            let troubled = evidence
                .findings
                .iter()
                .any(|finding| finding.severity != Severity::Ok);
            match (troubled, &evidence.acknowledgement) {
                (false, _) => TaskStatus::Done,
                (true, Some(ack))
                    if evidence
                        .last_success
                        .as_ref()
                        .is_some_and(|run| ack.at >= run.finished_at) =>
                {
                    TaskStatus::Done
                }
                (true, _) => TaskStatus::Attention,
            }
        }
    }
}

#[cfg(test)]
mod tests;
