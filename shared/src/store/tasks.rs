//! The evidence of checklist items (`tasks`), their acknowledgements (`task_acks`), and the
//! operators' audit trail (`audit_log`).
//!
//! Gathering a window's evidence costs a few index probes per item, whatever the size of
//! `job_runs`: the newest succeeded and the newest failed run of each kind inside the window
//! come from `job_runs_task_evidence_idx` (newest first, stopping at the first match). Its key
//! is `finished_at AT TIME ZONE 'UTC'`, and the query filters and orders on that expression,
//! so no other index can serve it (on the plain `finished_at` index the planner used to walk a
//! whole window for a kind with no run in it). The findings of that one run come from
//! `findings (job_id, attempt, ordinal)`, and the newest acknowledgement from
//! `task_acks_item_window_idx`.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::PgPool;

use super::Error;
use crate::job::Severity;
use crate::tasks::{Acknowledgement, Evidence, FindingEvidence, RunEvidence, TaskItem, Window};

/// The evidence of each of `items` in `window`, in the same order.
///
/// # Errors
/// When a query fails.
pub async fn evidence(
    pool: &PgPool,
    items: &[TaskItem],
    window: &Window,
) -> Result<Vec<Evidence>, Error> {
    let params = EvidenceParams::new(items);
    let rows: Vec<EvidenceRow> = params
        .bind(sqlx::query_as(EVIDENCE_SQL), window)
        .fetch_all(pool)
        .await?;
    let mut evidence = vec![Evidence::default(); items.len()];
    for row in rows {
        let Some(slot) = usize::try_from(row.idx - 1)
            .ok()
            .and_then(|i| evidence.get_mut(i))
        else {
            continue;
        };
        slot.last_success = row.success_id.map(|run_id| RunEvidence {
            run_id,
            job_id: row.success_job_id.unwrap_or_default(),
            attempt: row.success_attempt.unwrap_or_default(),
            finished_at: row.success_finished_at.unwrap_or(window.start),
            error: None,
        });
        slot.last_failure = row.failure_id.map(|run_id| RunEvidence {
            run_id,
            job_id: row.failure_job_id.unwrap_or_default(),
            attempt: row.failure_attempt.unwrap_or_default(),
            finished_at: row.failure_finished_at.unwrap_or(window.start),
            error: row.failure_error.clone(),
        });
        slot.acknowledgement = match (row.ack_actor, row.ack_note, row.ack_at) {
            (Some(actor), Some(note), Some(at)) => Some(Acknowledgement { actor, note, at }),
            _ => None,
        };
        if let Some(findings) = row.findings {
            slot.findings = serde_json::from_value::<Vec<RawFinding>>(findings)
                .map_err(|source| Error::Encode {
                    what: "task findings",
                    source,
                })?
                .into_iter()
                .map(|raw| FindingEvidence {
                    finding_id: raw.id,
                    code: raw.code,
                    severity: raw.severity,
                    subject: raw.subject,
                    message: raw.message,
                })
                .collect();
        }
    }
    Ok(evidence)
}

/// The plan Postgres chooses for [`evidence`]'s query (`EXPLAIN`), so a test can pin that it
/// probes `job_runs_task_evidence_idx` and never walks a window.
///
/// # Errors
/// When the query fails.
#[doc(hidden)]
pub async fn explain_evidence(
    pool: &PgPool,
    items: &[TaskItem],
    window: &Window,
) -> Result<String, Error> {
    let params = EvidenceParams::new(items);
    let explain = sqlx::AssertSqlSafe(format!("EXPLAIN {EVIDENCE_SQL}"));
    let lines: Vec<(String,)> = params
        .bind(sqlx::query_as(explain), window)
        .fetch_all(pool)
        .await?;
    let lines: Vec<String> = lines.into_iter().map(|(line,)| line).collect();
    Ok(lines.join("\n"))
}

/// The per-item arrays the evidence query unnests.
struct EvidenceParams {
    names: Vec<String>,
    kinds: Vec<Option<String>>,
    args: Vec<Option<serde_json::Value>>,
}

impl EvidenceParams {
    /// Binds `$1`..`$7` of the evidence query (see [`EVIDENCE_SQL`]) to `query`.
    fn bind<'q, O>(
        &'q self,
        query: sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments>,
        window: &'q Window,
    ) -> sqlx::query::QueryAs<'q, sqlx::Postgres, O, sqlx::postgres::PgArguments> {
        query
            .bind(&self.names)
            .bind(&self.kinds)
            .bind(&self.args)
            .bind(window.start)
            .bind(window.end)
            .bind(window.period.as_str())
            .bind(window.first_day)
    }

    fn new(items: &[TaskItem]) -> Self {
        Self {
            names: items.iter().map(|item| item.name.clone()).collect(),
            kinds: items
                .iter()
                .map(|item| item.kind().map(str::to_owned))
                .collect(),
            args: items
                .iter()
                .map(|item| match &item.satisfied_by {
                    crate::tasks::Satisfier::Kind { args, .. } if !args.is_null() => {
                        Some(args.clone())
                    }
                    _ => None,
                })
                .collect(),
        }
    }
}

/// Records an acknowledgement of `item` in the window starting on `window_start`.
///
/// # Errors
/// When the insert fails.
pub async fn acknowledge(
    pool: &PgPool,
    period: &str,
    item: &str,
    window_start: NaiveDate,
    note: &str,
    actor: &str,
) -> Result<DateTime<Utc>, Error> {
    let at: DateTime<Utc> = sqlx::query_scalar(
        "INSERT INTO task_acks (period, item, window_start, note, actor) \
         VALUES ($1, $2, $3, $4, $5) RETURNING created_at",
    )
    .bind(period)
    .bind(item)
    .bind(window_start)
    .bind(note)
    .bind(actor)
    .fetch_one(pool)
    .await?;
    Ok(at)
}

/// One operator action for the audit trail.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AuditEntry {
    /// Who: an API token's name, or `$USER@host` from the CLI.
    pub actor: String,
    /// What (`tasks.ack`, `dead.retry`, `schedules.pause`).
    pub action: String,
    /// On what (an item id, a job id, a schedule name).
    pub target: String,
    /// The client's address, for API calls.
    pub client_addr: Option<String>,
    /// `ok`, or the error.
    pub result: String,
    /// Anything else worth keeping (the note of an acknowledgement).
    pub detail: Option<serde_json::Value>,
}

/// Appends `entry` to `audit_log`.
///
/// # Errors
/// When the insert fails.
pub async fn audit(pool: &PgPool, entry: &AuditEntry) -> Result<(), Error> {
    // Postgres text and jsonb cannot hold NUL; a refused request may well carry one, and its
    // audit row must still be written.
    let clean = |text: &str| text.replace('\0', "\u{fffd}");
    let detail = entry.detail.as_ref().map(|detail| {
        let text = detail.to_string();
        if text.contains("\\u0000") {
            serde_json::from_str(&text.replace("\\u0000", "\\ufffd"))
                .unwrap_or(serde_json::Value::Null)
        } else {
            detail.clone()
        }
    });
    sqlx::query(
        "INSERT INTO audit_log (actor, action, target, client_addr, result, detail) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(clean(&entry.actor))
    .bind(clean(&entry.action))
    .bind(clean(&entry.target))
    .bind(entry.client_addr.as_deref().map(clean))
    .bind(clean(&entry.result))
    .bind(&detail)
    .execute(pool)
    .await?;
    Ok(())
}

/// A recorded audit entry.
#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow)]
pub struct AuditRecord {
    /// Row id; pages go `before` it.
    pub id: i64,
    /// When.
    pub created_at: DateTime<Utc>,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// On what.
    pub target: String,
    /// From where.
    pub client_addr: Option<String>,
    /// How it ended.
    pub result: String,
    /// Anything else.
    pub detail: Option<serde_json::Value>,
}

/// The newest audit entries, `limit` at most, older than the entry `before` when given.
///
/// # Errors
/// When the query fails.
pub async fn audit_trail(
    pool: &PgPool,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<AuditRecord>, Error> {
    Ok(sqlx::query_as(
        "SELECT id, created_at, actor, action, target, client_addr, result, detail \
         FROM audit_log WHERE ($1::bigint IS NULL OR id < $1) ORDER BY id DESC LIMIT $2",
    )
    .bind(before)
    .bind(limit.clamp(1, 1000))
    .fetch_all(pool)
    .await?)
}

#[derive(serde::Deserialize)]
struct RawFinding {
    id: i64,
    code: String,
    severity: Severity,
    subject: Option<String>,
    message: String,
}

#[derive(sqlx::FromRow)]
struct EvidenceRow {
    idx: i64,
    success_id: Option<i64>,
    success_job_id: Option<uuid::Uuid>,
    success_attempt: Option<i32>,
    success_finished_at: Option<DateTime<Utc>>,
    failure_id: Option<i64>,
    failure_job_id: Option<uuid::Uuid>,
    failure_attempt: Option<i32>,
    failure_finished_at: Option<DateTime<Utc>>,
    failure_error: Option<String>,
    findings: Option<serde_json::Value>,
    ack_actor: Option<String>,
    ack_note: Option<String>,
    ack_at: Option<DateTime<Utc>>,
}

/// One row per item: `$1` names, `$2` kinds (NULL for manual items), `$3` the args each
/// satisfying run must contain (NULL for any), `$4`/`$5` the window, `$6`/`$7` the period and
/// first day that key acknowledgements.
const EVIDENCE_SQL: &str = "\
SELECT i.idx, s.id AS success_id, s.job_id AS success_job_id, s.attempt AS success_attempt,
       s.finished_at AS success_finished_at,
       f.id AS failure_id, f.job_id AS failure_job_id, f.attempt AS failure_attempt,
       f.finished_at AS failure_finished_at, f.error AS failure_error,
       (SELECT jsonb_agg(jsonb_build_object('id', fd.id, 'code', fd.code,
                         'severity', fd.severity, 'subject', fd.subject, 'message', fd.message)
                         ORDER BY fd.ordinal)
        FROM findings fd
        WHERE fd.job_id = s.job_id AND fd.attempt = s.attempt AND fd.severity <> 'ok') AS findings,
       a.actor AS ack_actor, a.note AS ack_note, a.created_at AS ack_at
FROM unnest($1::text[], $2::text[], $3::jsonb[]) WITH ORDINALITY AS i(name, kind, args, idx)
LEFT JOIN LATERAL (
    SELECT r.id, r.job_id, r.attempt, r.finished_at FROM job_runs r
    WHERE r.kind = i.kind AND r.status = 'succeeded'
      AND (r.finished_at AT TIME ZONE 'UTC') >= ($4 AT TIME ZONE 'UTC')
      AND (r.finished_at AT TIME ZONE 'UTC') < ($5 AT TIME ZONE 'UTC')
      AND (i.args IS NULL OR r.args @> i.args)
    ORDER BY (r.finished_at AT TIME ZONE 'UTC') DESC LIMIT 1
) s ON i.kind IS NOT NULL
LEFT JOIN LATERAL (
    SELECT r.id, r.job_id, r.attempt, r.finished_at, r.error FROM job_runs r
    WHERE r.kind = i.kind AND r.status = 'failed'
      AND (r.finished_at AT TIME ZONE 'UTC') >= ($4 AT TIME ZONE 'UTC')
      AND (r.finished_at AT TIME ZONE 'UTC') < ($5 AT TIME ZONE 'UTC')
      AND (i.args IS NULL OR r.args @> i.args)
    ORDER BY (r.finished_at AT TIME ZONE 'UTC') DESC LIMIT 1
) f ON i.kind IS NOT NULL
LEFT JOIN LATERAL (
    SELECT t.actor, t.note, t.created_at FROM task_acks t
    WHERE t.period = $6 AND t.item = i.name AND t.window_start = $7
    ORDER BY t.created_at DESC LIMIT 1
) a ON true
ORDER BY i.idx";
