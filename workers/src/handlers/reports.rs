//! The `reports` family: `db.slow_queries`, `db.bloat` and `db.index_usage` over every
//! `[[reports.databases]]` target (or the one named by `{"database": name}`), plus
//! `queues.snapshot` and `jobs.failed_review`.
//!
//! Each database is reported on independently: its reports are snapshotted into
//! `report_snapshots` and turned into findings (`reports::findings`), and the conditions of
//! that database the kind reported earlier and no longer sees are resolved
//! (`store::findings::open` + `job::resolutions`). A database that cannot be reached or
//! queried fails only its own part: the outcome's `databases` metric lists each database's
//! result, and the failure is a critical `reports.target_failed` finding naming it (resolved
//! once a later run reaches it). The job fails (retryable) only when every database failed, or
//! when upkeep's own database cannot record the snapshots; so a partial failure shows as
//! `attention` on the task list rather than as a failed run that would hide the databases that
//! did report.
//!
//! Handlers never touch Redis keys or the ledger's run rows: queue numbers come from the queue
//! client's O(1) `Queue::stats` and `Queue::dead_letters`, and everything else goes through
//! `store`.

use std::collections::BTreeMap;
use std::error::Error as StdError;

use chrono::Utc;
use serde_json::{Value, json};
use sqlx::PgPool;
use upkeep_shared::job::{ReportArgs, resolutions};
use upkeep_shared::reports::findings::{self, subject_of};
use upkeep_shared::reports::{ReportDatabase, ReportsSettings, SlowQueries};
use upkeep_shared::store::reports::{self as store, Snapshot, Timeouts};
use upkeep_shared::{Finding, Job, JobError, Outcome, Severity};

use crate::registry::HandlerContext;

/// Which per-database report a job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `db.slow_queries`: `slow_queries` and `connection_stats` (daily).
    SlowQueries,
    /// `db.bloat`: `table_bloat_stats` and transaction-ID wraparound (weekly).
    Bloat,
    /// `db.index_usage`: `index_usage_stats`, duplicates, invalid, bloated indexes and
    /// sequential-scan-heavy tables (weekly).
    IndexUsage,
}

impl Family {
    /// The job kind.
    #[must_use]
    pub fn kind(self) -> &'static str {
        match self {
            Self::SlowQueries => "db.slow_queries",
            Self::Bloat => "db.bloat",
            Self::IndexUsage => "db.index_usage",
        }
    }

    fn codes(self) -> &'static [&'static str] {
        match self {
            Self::SlowQueries => findings::SLOW_QUERY_CODES,
            Self::Bloat => findings::BLOAT_CODES,
            Self::IndexUsage => findings::INDEX_CODES,
        }
    }
}

/// Runs one of the per-database reports over its targets.
///
/// # Errors
/// `Permanent` for bad args, an unknown database or none configured; `Retryable` when every
/// target failed or upkeep's database cannot record the results.
pub async fn run(ctx: &HandlerContext, job: Job, family: Family) -> Result<Outcome, JobError> {
    let kind = family.kind();
    let args = ReportArgs::from_value(kind, &job.args)
        .map_err(|error| JobError::Permanent(error.to_string()))?;
    let settings = &ctx.settings.reports;
    let targets = targets(settings, args.database.as_deref())?;
    let open: Vec<_> = upkeep_shared::store::findings::open(&ctx.db, family.codes())
        .await
        .map_err(|error| JobError::retryable(format!("reading open findings: {}", chain(&error))))?
        .into_iter()
        .filter(|finding| finding.kind == kind)
        .collect();

    let mut all_findings = Vec::new();
    let mut results = serde_json::Map::new();
    let mut failures = Vec::new();
    for target in &targets {
        match report_one(ctx, &job, family, target).await {
            Ok(Reported { findings, metrics }) => {
                let open_pairs: Vec<_> = open
                    .iter()
                    .filter(|finding| subject_of(&target.name, finding.subject.as_deref()))
                    .map(upkeep_shared::store::findings::OpenFinding::pair)
                    .collect();
                let resolved = resolutions(&open_pairs, &findings);
                let n_raised = findings
                    .iter()
                    .filter(|f| f.severity != Severity::Ok)
                    .count();
                tracing::info!(database = %target.name, n_findings = n_raised, "database reported");
                let mut result =
                    json!({"status": "ok", "findings": n_raised, "resolved": resolved.len()});
                if let (Some(result), Value::Object(metrics)) = (result.as_object_mut(), metrics) {
                    result.extend(metrics);
                }
                results.insert(target.name.clone(), result);
                all_findings.extend(findings);
                all_findings.extend(resolved);
            }
            Err(ReportError::Ledger(message)) => return Err(JobError::retryable(message)),
            Err(ReportError::Target(message)) => {
                let message = format!("database {}: {message}", target.name);
                tracing::warn!(database = %target.name, error = %message, "database report failed");
                all_findings.push(findings::target_failed(&target.name, kind, &message));
                results.insert(
                    target.name.clone(),
                    json!({"status": "error", "error": message}),
                );
                failures.push(message);
            }
        }
    }
    if failures.len() == targets.len() {
        return Err(JobError::retryable(format!(
            "{kind} failed for every database: {}",
            failures.join("; ")
        )));
    }
    let n_raised = all_findings
        .iter()
        .filter(|f| f.severity != Severity::Ok)
        .count();
    let mut outcome = Outcome {
        summary: format!(
            "{} of {} databases reported, {} failed; {n_raised} findings",
            targets.len() - failures.len(),
            targets.len(),
            failures.len()
        ),
        ..Outcome::default()
    };
    outcome
        .metrics
        .insert("databases".to_owned(), Value::Object(results));
    outcome
        .metrics
        .insert("n_failed".to_owned(), failures.len().into());
    outcome.findings = all_findings;
    Ok(outcome)
}

/// `queues.snapshot`: every configured queue's depths and counters into the outcome (and so
/// into the ledger), with a warn `queues.stalled` for a queue whose oldest ready job has waited
/// over 15 minutes.
///
/// # Errors
/// `Retryable` when Redis cannot be read.
pub async fn queues_snapshot(ctx: &HandlerContext, job: Job) -> Result<Outcome, JobError> {
    let _ = job;
    let mut all = serde_json::Map::new();
    let mut current = Vec::new();
    for name in ctx.settings.queues.keys() {
        let stats = read_queue(ctx, name, |queue| async move { queue.stats().await }).await?;
        if let Some(age) = stats.oldest_pending_age_seconds
            && age > 900.0
        {
            current.push(
                Finding::new(
                    "queues.stalled",
                    Severity::Warn,
                    format!(
                        "oldest ready job of {name} has waited {age:.0}s ({} pending, {} workers)",
                        stats.pending, stats.workers
                    ),
                )
                .with_subject(name.as_str()),
            );
        }
        all.insert(
            name.to_string(),
            serde_json::to_value(&stats).unwrap_or(Value::Null),
        );
    }
    let findings =
        with_resolutions(&ctx.db, "queues.snapshot", &["queues.stalled"], current).await?;
    let mut outcome = Outcome {
        summary: format!("{} queues snapshotted", all.len()),
        ..Outcome::default()
    };
    outcome
        .metrics
        .insert("queues".to_owned(), Value::Object(all));
    outcome.findings = findings;
    Ok(outcome)
}

/// `jobs.failed_review`: the dead letters of every queue and the last week's failed attempts
/// grouped by kind and error signature; a warn `jobs.failures` per kind that failed and a warn
/// `queues.dead_letters` per queue holding dead letters.
///
/// # Errors
/// `Retryable` when Redis or upkeep's database cannot be read.
pub async fn failed_review(ctx: &HandlerContext, job: Job) -> Result<Outcome, JobError> {
    let _ = job;
    let since = Utc::now() - chrono::Duration::days(7);
    let signatures = store::failure_signatures(&ctx.db, since, 100)
        .await
        .map_err(|error| JobError::retryable(format!("reading failed runs: {}", chain(&error))))?;
    let mut current = Vec::new();
    let mut by_kind: BTreeMap<&str, (i64, i64, &str)> = BTreeMap::new();
    for signature in &signatures {
        let entry = by_kind
            .entry(&signature.kind)
            .or_insert((0, 0, signature.signature.as_str()));
        entry.0 += signature.n_failures;
        entry.1 += signature.n_dead;
    }
    for (kind, (n_failures, n_dead, top)) in &by_kind {
        current.push(
            Finding::new(
                "jobs.failures",
                Severity::Warn,
                format!("{n_failures} failed attempts of {kind} in 7 days ({n_dead} left the job dead); most common: {top}"),
            )
            .with_subject(*kind),
        );
    }
    let mut dead = serde_json::Map::new();
    for name in ctx.settings.queues.keys() {
        let letters = read_queue(
            ctx,
            name,
            |queue| async move { queue.dead_letters(20).await },
        )
        .await?;
        let stats = read_queue(ctx, name, |queue| async move { queue.stats().await }).await?;
        if stats.dead > 0 {
            current.push(
                Finding::new(
                    "queues.dead_letters",
                    Severity::Warn,
                    format!(
                        "{} dead letters in {name} (upkeepctl dead list; upkeepctl dead retry ID)",
                        stats.dead
                    ),
                )
                .with_subject(name.as_str()),
            );
        }
        let listed: Vec<Value> = letters
            .iter()
            .map(|record| {
                json!({
                    "id": record.id,
                    "kind": record.fields.get("kind"),
                    "error": record.fields.get("err"),
                })
            })
            .collect();
        dead.insert(
            name.to_string(),
            json!({"count": stats.dead, "newest": listed}),
        );
    }
    let findings = with_resolutions(
        &ctx.db,
        "jobs.failed_review",
        &["jobs.failures", "queues.dead_letters"],
        current,
    )
    .await?;
    let n_failures: i64 = signatures.iter().map(|s| s.n_failures).sum();
    let mut outcome = Outcome {
        summary: format!(
            "{n_failures} failed attempts in 7 days over {} kinds; dead letters reviewed",
            by_kind.len()
        ),
        ..Outcome::default()
    };
    outcome.metrics.insert(
        "failure_signatures".to_owned(),
        serde_json::to_value(&signatures).unwrap_or(Value::Null),
    );
    outcome
        .metrics
        .insert("dead_letters".to_owned(), Value::Object(dead));
    outcome.findings = findings;
    Ok(outcome)
}

/// What one database reported.
struct Reported {
    findings: Vec<Finding>,
    metrics: Value,
}

/// Why one database's part failed: the target (its own part fails) or upkeep's database
/// (the whole job retries).
enum ReportError {
    Target(String),
    Ledger(String),
}

fn targets<'a>(
    settings: &'a ReportsSettings,
    name: Option<&str>,
) -> Result<Vec<&'a ReportDatabase>, JobError> {
    let configured = || {
        settings
            .databases
            .iter()
            .map(|database| database.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match name {
        Some(name) => settings
            .database(name)
            .map(|database| vec![database])
            .ok_or_else(|| {
                JobError::Permanent(format!(
                    "unknown report database {name:?} (configured: {})",
                    configured()
                ))
            }),
        None if settings.databases.is_empty() => Err(JobError::Permanent(
            "no report databases configured: add [[reports.databases]] entries".to_owned(),
        )),
        None => Ok(settings.databases.iter().collect()),
    }
}

async fn report_one(
    ctx: &HandlerContext,
    job: &Job,
    family: Family,
    target: &ReportDatabase,
) -> Result<Reported, ReportError> {
    let settings = &ctx.settings.reports;
    let timeouts = Timeouts {
        statement: settings.statement_timeout,
        lock: settings.lock_timeout,
    };
    let limit = i64::from(settings.top_n);
    let pool = store::connect_target(&target.url, settings.connect_timeout)
        .await
        .map_err(|error| ReportError::Target(chain(&error)))?;
    let result = collect(ctx, job, family, target, &pool, timeouts, limit).await;
    pool.close().await;
    result
}

#[expect(clippy::too_many_lines, reason = "one arm per family, each short")]
async fn collect(
    ctx: &HandlerContext,
    job: &Job,
    family: Family,
    target: &ReportDatabase,
    pool: &PgPool,
    timeouts: Timeouts,
    limit: i64,
) -> Result<Reported, ReportError> {
    let db = target.name.as_str();
    let t = &ctx.settings.reports.thresholds;
    let on_target = |error: upkeep_shared::store::Error| ReportError::Target(chain(&error));
    let mut snapshots = Vec::new();
    let snapshot = |report: &str, stats_reset, total_count, rows: Value| Snapshot {
        job_id: job.id.0,
        database: db.to_owned(),
        report: report.to_owned(),
        status: "ok".to_owned(),
        stats_reset,
        total_count,
        rows,
        note: None,
    };
    let (found, metrics) = match family {
        Family::SlowQueries => {
            let slow = store::slow_queries(pool, timeouts, limit)
                .await
                .map_err(on_target)?;
            let connections = store::connections(pool, timeouts)
                .await
                .map_err(on_target)?;
            let mut found = findings::slow_queries(db, &slow, t);
            found.extend(findings::connections(db, &connections));
            let metrics = match &slow {
                SlowQueries::Available {
                    report,
                    stats_reset,
                } => {
                    snapshots.push(snapshot(
                        "slow_queries",
                        *stats_reset,
                        report.total_count,
                        to_json(&report.rows),
                    ));
                    json!({"slow_queries": report.total_count})
                }
                SlowQueries::Unavailable { reason } => {
                    let mut unavailable = snapshot("slow_queries", None, 0, json!([]));
                    unavailable.status = "unavailable".to_owned();
                    unavailable.note = Some(reason.clone());
                    snapshots.push(unavailable);
                    json!({"slow_queries": "unavailable"})
                }
            };
            let stats_reset = store::stats_reset(pool, timeouts)
                .await
                .map_err(on_target)?;
            snapshots.push(snapshot(
                "connection_stats",
                stats_reset,
                1,
                json!([to_json(&connections)]),
            ));
            (found, metrics)
        }
        Family::Bloat => {
            let tables = store::table_bloat(pool, timeouts, limit)
                .await
                .map_err(on_target)?;
            let xid = store::xid_wraparound(pool, timeouts, limit)
                .await
                .map_err(on_target)?;
            let stats_reset = store::stats_reset(pool, timeouts)
                .await
                .map_err(on_target)?;
            let mut found = findings::tables(db, &tables.rows, t);
            found.extend(findings::xid(db, &xid.rows));
            snapshots.push(snapshot(
                "table_bloat_stats",
                stats_reset,
                tables.total_count,
                to_json(&tables.rows),
            ));
            snapshots.push(snapshot(
                "xid_wraparound",
                stats_reset,
                xid.total_count,
                to_json(&xid.rows),
            ));
            (found, json!({"tables": tables.total_count}))
        }
        Family::IndexUsage => {
            let usage = store::index_usage(pool, timeouts, limit)
                .await
                .map_err(on_target)?;
            let health = store::index_health(pool, timeouts, limit)
                .await
                .map_err(on_target)?;
            let seen: Vec<(i64, String)> = usage
                .rows
                .iter()
                .map(|row| {
                    (
                        row.index_oid,
                        format!("{}.{}", row.schemaname, row.indexrelname),
                    )
                })
                .collect();
            let first_seen = store::indexes_first_seen(&ctx.db, db, &seen)
                .await
                .map_err(|error| {
                    ReportError::Ledger(format!("recording index sightings: {}", chain(&error)))
                })?;
            let mut found = findings::unused_indexes(db, &usage.rows, &first_seen, t, Utc::now());
            found.extend(findings::duplicates(db, &health.definitions));
            found.extend(findings::invalid_indexes(db, &health.invalid.rows));
            found.extend(findings::index_bloat(db, &health.bloat.rows, t));
            found.extend(findings::seq_scan_heavy(db, &health.seq_scan_heavy.rows));
            let stats_reset = match usage.rows.first() {
                Some(row) => row.stats_reset,
                None => store::stats_reset(pool, timeouts)
                    .await
                    .map_err(on_target)?,
            };
            snapshots.push(snapshot(
                "index_usage_stats",
                stats_reset,
                usage.total_count,
                to_json(&usage.rows),
            ));
            let pairs: Vec<Value> = findings::duplicate_pairs(&health.definitions)
                .iter()
                .map(|pair| {
                    json!({
                        "redundant": health.definitions[pair.redundant].definition,
                        "covering": health.definitions[pair.keeper].definition,
                        "exact": pair.exact,
                    })
                })
                .collect();
            snapshots.push(snapshot(
                "index_checks",
                stats_reset,
                i64::try_from(pairs.len()).unwrap_or(i64::MAX)
                    + health.invalid.total_count
                    + health.bloat.total_count
                    + health.seq_scan_heavy.total_count,
                json!({
                    "duplicates": pairs,
                    "invalid": health.invalid,
                    "bloat": health.bloat,
                    "seq_scan_heavy": health.seq_scan_heavy,
                }),
            ));
            (found, json!({"indexes": usage.total_count}))
        }
    };
    for snapshot in &snapshots {
        store::record_snapshot(&ctx.db, snapshot)
            .await
            .map_err(|error| {
                ReportError::Ledger(format!(
                    "recording the {} snapshot of {db}: {}",
                    snapshot.report,
                    chain(&error)
                ))
            })?;
    }
    Ok(Reported {
        findings: found,
        metrics,
    })
}

/// Appends to `current` the resolutions of the open `codes` conditions `kind` raised earlier.
async fn with_resolutions(
    db: &PgPool,
    kind: &str,
    codes: &[&str],
    mut current: Vec<Finding>,
) -> Result<Vec<Finding>, JobError> {
    let open: Vec<_> = upkeep_shared::store::findings::open(db, codes)
        .await
        .map_err(|error| JobError::retryable(format!("reading open findings: {}", chain(&error))))?
        .into_iter()
        .filter(|finding| finding.kind == kind)
        .map(|finding| finding.pair())
        .collect();
    let resolved = resolutions(&open, &current);
    current.extend(resolved);
    Ok(current)
}

async fn read_queue<T, F, Fut>(
    ctx: &HandlerContext,
    name: &upkeep_shared::QueueName,
    read: F,
) -> Result<T, JobError>
where
    F: FnOnce(upkeep_shared::queue::Queue) -> Fut,
    Fut: Future<Output = Result<T, upkeep_shared::queue::Error>>,
{
    let queue = ctx
        .settings
        .open_queue(name)
        .map_err(|error| JobError::retryable(format!("opening queue {name}: {}", chain(&error))))?;
    read(queue)
        .await
        .map_err(|error| JobError::retryable(format!("reading queue {name}: {}", chain(&error))))
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// An error and its sources, `: `-separated, for messages that must say why.
fn chain(error: &(dyn StdError + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
