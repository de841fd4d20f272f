//! The `[[schedules]]` entries of the configuration: [`ScheduleEntry`] is one entry as written
//! (serde-derived, unknown keys refused), [`ScheduleSettings`] the checked, typed schedule the
//! scheduler runs. [`resolve`] turns the first into the second, collecting every problem.
//!
//! Owned here beside the cron and policy types it uses; `config` only deserializes the array and
//! calls [`resolve`]. Pure: no IO.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{CatchUp, CronExpr, Overlap, parse_time_zone};
use crate::job::{JobKind, QueueName};
use crate::settings::Problems;

/// One `[[schedules]]` entry: a cron definition that produces jobs, checked and typed.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleSettings {
    /// Unique name, 1 to 64 characters of `[a-z0-9_.-]`.
    pub name: String,
    /// Cron expression (crontab(5) syntax, optionally with a leading seconds field), see [`CronExpr`].
    pub cron: CronExpr,
    /// IANA time zone the expression is read in. Defaults to UTC.
    pub timezone: chrono_tz::Tz,
    /// The job kind to enqueue; must have a handler in this build.
    pub kind: JobKind,
    /// Job arguments, validated against the kind. Defaults to `{}`.
    pub args: serde_json::Value,
    /// The queue its jobs go to; must be configured. Defaults to the kind's default queue.
    pub queue: QueueName,
    /// What to do with ticks missed while no scheduler ran. Defaults to `latest`.
    pub catch_up: CatchUp,
    /// Only ticks this recent are caught up. Defaults to 1h.
    pub catch_up_window: Duration,
    /// At most this many ticks are caught up at once (with `all`), 1 to 10000. Defaults to 100.
    pub catch_up_max: u32,
    /// What to do when the previous job of this schedule is still unfinished. Defaults to
    /// `allow`, or `skip` for `backup.*` kinds (see [`default_overlap`]).
    pub overlap: Overlap,
    /// Random delay added to each enqueue, at most 1h. Defaults to 0.
    pub jitter: Duration,
    /// Whether the schedule fires at all. Defaults to true.
    pub enabled: bool,
    /// Heartbeat URL (healthchecks.io convention): GET after each successful run of the
    /// schedule's job, GET `ping_url + "/fail"` when it goes dead. Defaults to none.
    pub ping_url: Option<String>,
}

/// One `[[schedules]]` table as written. Optional keys have their defaults in
/// [`ScheduleEntry::default`]; `name`, `cron` and `kind` are required.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleEntry {
    /// See [`ScheduleSettings::name`].
    pub name: String,
    /// See [`ScheduleSettings::cron`].
    pub cron: String,
    /// See [`ScheduleSettings::timezone`].
    #[serde(default = "defaults::timezone")]
    pub timezone: String,
    /// See [`ScheduleSettings::kind`].
    pub kind: String,
    /// See [`ScheduleSettings::args`].
    #[serde(default = "defaults::args")]
    pub args: serde_json::Value,
    /// See [`ScheduleSettings::queue`]; `None` is the kind's default queue.
    #[serde(default)]
    pub queue: Option<String>,
    /// See [`ScheduleSettings::catch_up`].
    #[serde(default)]
    pub catch_up: CatchUp,
    /// See [`ScheduleSettings::catch_up_window`].
    #[serde(
        default = "defaults::catch_up_window",
        with = "crate::settings::duration"
    )]
    pub catch_up_window: Duration,
    /// See [`ScheduleSettings::catch_up_max`].
    #[serde(default = "defaults::catch_up_max")]
    pub catch_up_max: u32,
    /// See [`ScheduleSettings::overlap`]; `None` is [`default_overlap`] of the kind.
    #[serde(default)]
    pub overlap: Option<Overlap>,
    /// See [`ScheduleSettings::jitter`].
    #[serde(default, with = "crate::settings::duration")]
    pub jitter: Duration,
    /// See [`ScheduleSettings::enabled`].
    #[serde(default = "defaults::enabled")]
    pub enabled: bool,
    /// See [`ScheduleSettings::ping_url`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ping_url: Option<String>,
}

/// The defaults of the optional keys, written once (serde needs them as functions).
mod defaults {
    use std::time::Duration;

    pub(super) fn timezone() -> String {
        "UTC".to_owned()
    }

    pub(super) fn args() -> serde_json::Value {
        serde_json::Value::Object(serde_json::Map::new())
    }

    pub(super) fn catch_up_window() -> Duration {
        Duration::from_secs(3600)
    }

    pub(super) fn catch_up_max() -> u32 {
        100
    }

    pub(super) fn enabled() -> bool {
        true
    }
}

impl Default for ScheduleEntry {
    /// An entry with every optional key at its default and the required ones empty; the key
    /// set documents what a `[[schedules]]` table accepts.
    fn default() -> Self {
        Self {
            name: String::new(),
            cron: String::new(),
            timezone: defaults::timezone(),
            kind: String::new(),
            args: defaults::args(),
            queue: None,
            catch_up: CatchUp::default(),
            catch_up_window: defaults::catch_up_window(),
            catch_up_max: defaults::catch_up_max(),
            overlap: None,
            jitter: Duration::ZERO,
            enabled: defaults::enabled(),
            ping_url: None,
        }
    }
}

/// The default overlap policy of `kind`: `skip` for `backup.*` (two backups of one database at
/// once only compete for IO), `allow` otherwise.
#[must_use]
pub fn default_overlap(kind: JobKind) -> Overlap {
    if kind.as_str().starts_with("backup.") {
        Overlap::Skip
    } else {
        Overlap::Allow
    }
}

/// The path of entry `idx` in problems: `schedules[2] ("nightly")`.
#[must_use]
pub fn entry_path(path: &str, idx: usize, name: Option<&str>) -> String {
    match name {
        Some(name) => format!("{path}[{idx}] ({name:?})"),
        None => format!("{path}[{idx}]"),
    }
}

/// Checks every entry (`None` for one that did not deserialize; its problem is already
/// recorded) against the catalog and the configured queues, and returns the valid schedules in
/// file order. Every problem is recorded under `path[idx] ("name").key`.
#[must_use]
pub fn resolve(
    path: &str,
    entries: &[Option<ScheduleEntry>],
    configured_queues: &[QueueName],
    problems: &mut Problems,
) -> Vec<ScheduleSettings> {
    let mut schedules = Vec::new();
    let mut first_index_by_name: HashMap<&str, usize> = HashMap::new();
    for (idx, entry) in entries.iter().enumerate() {
        let Some(entry) = entry else { continue };
        let at = entry_path(path, idx, Some(&entry.name));
        let Some(schedule) = resolve_one(&at, entry, configured_queues, problems) else {
            continue;
        };
        if let Some(first) = first_index_by_name.get(entry.name.as_str()) {
            problems.push(
                format!("{at}.name"),
                format!(
                    "duplicate schedule name {:?} (also {path}[{first}])",
                    entry.name
                ),
            );
            continue;
        }
        first_index_by_name.insert(&entry.name, idx);
        schedules.push(schedule);
    }
    schedules
}

fn resolve_one(
    at: &str,
    entry: &ScheduleEntry,
    configured_queues: &[QueueName],
    problems: &mut Problems,
) -> Option<ScheduleSettings> {
    let n_before = problems.as_slice().len();
    let key = |name: &str| format!("{at}.{name}");

    let name_ok = !entry.name.is_empty()
        && entry.name.len() <= 64
        && entry.name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        });
    if !name_ok {
        problems.push(
            key("name"),
            format!(
                "must be 1-64 characters of [a-z0-9_.-], got {:?}",
                entry.name
            ),
        );
    }
    let cron = CronExpr::parse(&entry.cron)
        .map_err(|e| problems.push(key("cron"), e.to_string()))
        .ok();
    let timezone = parse_time_zone(&entry.timezone)
        .map_err(|e| problems.push(key("timezone"), e.to_string()))
        .ok();
    let kind = JobKind::parse_runnable(&entry.kind)
        .map_err(|e| problems.push(key("kind"), e.to_string()))
        .ok();
    if !entry.args.is_object() {
        problems.push(key("args"), "expected a table");
    } else if let Some(kind) = kind
        && let Err(e) = kind.validate_args(&entry.args)
    {
        problems.push(key("args"), e.to_string());
    }
    let queue = match &entry.queue {
        None => kind.map(JobKind::default_queue),
        Some(text) => match QueueName::parse(text) {
            Ok(queue) if configured_queues.contains(&queue) => Some(queue),
            Ok(_) => {
                let configured: Vec<&str> =
                    configured_queues.iter().map(QueueName::as_str).collect();
                problems.push(
                    key("queue"),
                    format!(
                        "queue {text:?} is not configured (configured: {})",
                        configured.join(", ")
                    ),
                );
                None
            }
            Err(e) => {
                problems.push(key("queue"), e.to_string());
                None
            }
        },
    };
    problems.check_range(key("catch_up_max"), entry.catch_up_max, 1, 10_000);
    if entry.jitter > Duration::from_secs(3600) {
        problems.push(
            key("jitter"),
            format!(
                "must be at most 1h, got {}",
                crate::settings::duration::format(entry.jitter)
            ),
        );
    }
    if let Some(url) = &entry.ping_url {
        match url::Url::parse(url) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => {}
            _ => problems.push(
                key("ping_url"),
                "must be an http:// or https:// URL (value not shown)",
            ),
        }
    }
    if problems.as_slice().len() != n_before {
        return None;
    }
    let kind = kind?;
    Some(ScheduleSettings {
        name: entry.name.clone(),
        cron: cron?,
        timezone: timezone?,
        kind,
        args: entry.args.clone(),
        queue: queue?,
        catch_up: entry.catch_up,
        catch_up_window: entry.catch_up_window,
        catch_up_max: entry.catch_up_max,
        overlap: entry.overlap.unwrap_or_else(|| default_overlap(kind)),
        jitter: entry.jitter,
        enabled: entry.enabled,
        ping_url: entry.ping_url.clone(),
    })
}
