//! Builders shared by the store tests: run records, outcomes and schedules from TOML.

use std::collections::HashMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use upkeep_shared::config::{ScheduleSettings, Settings};
use upkeep_shared::store::runs::{RunRecord, RunStatus};
use upkeep_shared::{Finding, JobId, Outcome, Severity};

/// A fixed instant, so tests read the same on any day.
pub(crate) fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 2, 0, 0)
        .single()
        .expect("a valid instant")
}

/// A finished record of `job_id`'s `attempt` with `status`, started at `t0` and lasting 1.5 s.
pub(crate) fn record(job_id: JobId, attempt: i32, status: RunStatus) -> RunRecord {
    let finished = !matches!(status, RunStatus::Running);
    RunRecord {
        job_id,
        attempt,
        kind: "system.ping".to_owned(),
        queue: "reports".to_owned(),
        status,
        schedule: None,
        tick_at: None,
        enqueued_at: t0() - Duration::seconds(1),
        started_at: t0(),
        finished_at: finished.then(|| t0() + Duration::milliseconds(1500)),
        worker: "worker-a".to_owned(),
        args: serde_json::json!({"sleep_ms": 0}),
        outcome: None,
        error: matches!(status, RunStatus::Failed).then(|| "boom".to_owned()),
        next_state: match status {
            RunStatus::Succeeded | RunStatus::Skipped => Some("done".to_owned()),
            RunStatus::Failed => Some("retrying".to_owned()),
            RunStatus::Running | RunStatus::Abandoned => None,
        },
    }
}

/// A succeeded record whose outcome carries `findings` (code, severity) pairs.
pub(crate) fn succeeded_with_findings(
    job_id: JobId,
    attempt: i32,
    findings: &[(&str, Severity)],
) -> RunRecord {
    let mut record = record(job_id, attempt, RunStatus::Succeeded);
    record.outcome = Some(Outcome {
        summary: "checked".to_owned(),
        metrics: serde_json::Map::new(),
        findings: findings
            .iter()
            .map(|(code, severity)| Finding {
                code: (*code).to_owned(),
                severity: *severity,
                message: format!("{code} observed"),
                detail: serde_json::json!({"value": 1}),
                subject: None,
            })
            .collect(),
        skipped: false,
    });
    record
}

/// The schedules of a config file (with built-in defaults for everything else).
pub(crate) fn schedules(toml: &str) -> Vec<ScheduleSettings> {
    Settings::from_toml_str(toml, &HashMap::new())
        .unwrap_or_else(|e| panic!("test config is invalid: {e}"))
        .schedules
}

/// A `[[schedules]]` entry pinging on `cron`.
pub(crate) fn ping_schedule(name: &str, cron: &str) -> String {
    format!("[[schedules]]\nname = \"{name}\"\ncron = \"{cron}\"\nkind = \"system.ping\"\n")
}
