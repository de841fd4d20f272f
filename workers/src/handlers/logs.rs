//! `logs.rotate` and `logs.scan_errors`: the handlers over `shared::logs`.
//!
//! Rotation and reading are blocking file work and run on the blocking pool. The scan commits
//! each source's cursors and counts in one transaction (`store::log_cursors::commit`) and builds
//! its outcome from what the job has committed (`job_report`), not from what it read in memory:
//! an attempt killed after its commit left a batch that the retry reports with its own, and an
//! attempt killed before it left nothing, so every line is counted once.

use chrono::Utc;
use serde_json::json;
use upkeep_shared::logs::reader::{self, Cursor};
use upkeep_shared::logs::rotate;
use upkeep_shared::logs::settings::{RotateMode, SourceSettings, TargetSettings};
use upkeep_shared::logs::signature::LineSeverity;
use upkeep_shared::logs::{RotateArgs, ScanArgs, decode_args};
use upkeep_shared::store::{self, log_cursors};
use upkeep_shared::{Finding, Job, JobError, Outcome, Severity};

use crate::registry::HandlerContext;

/// Finding codes `logs.rotate` reports as conditions (resolved when they go away).
const ROTATE_CODES: &[&str] = &["logs.rotate_failed", "logs.reopen_failed"];
/// At most this many findings of one kind per source, so a flood stays readable.
const MAX_FINDINGS_PER_KIND: usize = 50;

/// Runs `logs.rotate`.
///
/// # Errors
/// `Permanent` for bad args or an unknown target, `Retryable` when the findings cannot be read.
pub async fn rotate(ctx: &HandlerContext, job: Job) -> Result<Outcome, JobError> {
    let args: RotateArgs = decode_args("logs.rotate", &job.args).map_err(permanent)?;
    let settings = &ctx.settings.logs;
    let targets: Vec<TargetSettings> = match &args.target {
        Some(name) => vec![settings.target(name).cloned().ok_or_else(|| {
            JobError::Permanent(format!(
                "logs.rotate: no target named {name:?} in [[logs.targets]]"
            ))
        })?],
        None => settings.targets.clone(),
    };
    let mut outcome = Outcome::default();
    let mut totals = [0_u64; 4];
    for target in &targets {
        let subject = target.name.clone();
        let protected = if target.mode == RotateMode::Postgres {
            match store::disk_samples::current_logfiles(&ctx.db).await {
                Ok(files) if !files.is_empty() => files,
                Ok(_) => {
                    outcome.findings.push(
                        Finding::new(
                            "logs.rotate_failed",
                            Severity::Warn,
                            "PostgreSQL names no current log file (logging_collector is off?): nothing was compressed or pruned",
                        )
                        .with_subject(subject),
                    );
                    continue;
                }
                Err(error) => {
                    outcome.findings.push(
                        Finding::new(
                            "logs.rotate_failed",
                            Severity::Critical,
                            format!(
                                "cannot ask PostgreSQL for its current log files: {}",
                                chain(&error)
                            ),
                        )
                        .with_subject(subject),
                    );
                    continue;
                }
            }
        } else {
            Vec::new()
        };
        let owned = target.clone();
        let now = Utc::now();
        let result = tokio::task::spawn_blocking(move || rotate::run(&owned, &protected, now))
            .await
            .map_err(|e| JobError::retryable(format!("rotation task failed: {e}")))?;
        match result {
            Ok(report) => {
                totals[0] += report.rotated.len() as u64;
                totals[1] += report.compressed.len() as u64;
                totals[2] += report.pruned.len() as u64;
                totals[3] += report.pruned_bytes;
                for warning in &report.warnings {
                    outcome.findings.push(
                        Finding::new("logs.reopen_failed", Severity::Warn, warning.clone())
                            .with_subject(subject.clone()),
                    );
                }
                let detail = serde_json::to_value(&report).unwrap_or_default();
                outcome.findings.push(
                    Finding::new(
                        "logs.rotation",
                        Severity::Ok,
                        format!(
                            "{}: {} rotated, {} compressed, {} pruned, {} symlink(s) left alone",
                            target.name,
                            report.rotated.len(),
                            report.compressed.len(),
                            report.pruned.len(),
                            report.skipped_symlinks.len()
                        ),
                    )
                    .with_subject(subject)
                    .with_detail(detail),
                );
            }
            Err(error) => outcome.findings.push(
                Finding::new("logs.rotate_failed", Severity::Critical, chain(&error))
                    .with_subject(subject),
            ),
        }
    }
    let open = store::findings::open(&ctx.db, ROTATE_CODES)
        .await
        .map_err(|e| JobError::retryable(format!("reading open findings: {}", chain(&e))))?;
    let checked: Vec<(String, Option<String>)> = open
        .iter()
        .map(|finding| finding.pair())
        .filter(|(_, subject)| {
            subject
                .as_deref()
                .is_some_and(|s| targets.iter().any(|t| t.name == s))
        })
        .collect();
    let resolved = upkeep_shared::job::resolutions(&checked, &outcome.findings);
    outcome.findings.extend(resolved);
    let [rotated, compressed, pruned, pruned_bytes] = totals;
    outcome.summary = format!(
        "{} target(s): {rotated} file(s) rotated, {compressed} compressed, {pruned} pruned ({pruned_bytes} bytes)",
        targets.len()
    );
    for (key, value) in [
        ("targets", targets.len() as u64),
        ("rotated", rotated),
        ("compressed", compressed),
        ("pruned", pruned),
        ("pruned_bytes", pruned_bytes),
    ] {
        outcome.metrics.insert(key.to_owned(), value.into());
    }
    Ok(outcome)
}

/// Runs `logs.scan_errors`.
///
/// # Errors
/// `Permanent` for bad args or an unknown source; `Retryable` when the database fails or
/// another scan of the same source moved its cursor meanwhile.
pub async fn scan_errors(ctx: &HandlerContext, job: Job) -> Result<Outcome, JobError> {
    let args: ScanArgs = decode_args("logs.scan_errors", &job.args).map_err(permanent)?;
    let settings = &ctx.settings.logs;
    let sources: Vec<SourceSettings> = match &args.source {
        Some(name) => vec![settings.source(name).cloned().ok_or_else(|| {
            JobError::Permanent(format!(
                "logs.scan_errors: no source named {name:?} in [[logs.sources]]"
            ))
        })?],
        None => settings.sources.clone(),
    };
    let mut outcome = Outcome::default();
    let (mut n_lines, mut n_bytes, mut n_backlog, mut n_errors, mut n_fatal, mut n_new) =
        (0, 0, 0, 0, 0, 0);
    for source in &sources {
        let (previous, previous_scan_at) = log_cursors::load(&ctx.db, &source.name)
            .await
            .map_err(|e| JobError::retryable(format!("loading cursors: {}", chain(&e))))?;
        let budget = settings.scan_budget.bytes();
        let owned = source.clone();
        let from: Vec<Cursor> = previous.clone();
        let read = tokio::task::spawn_blocking(move || reader::read_source(&owned, &from, budget))
            .await
            .map_err(|e| JobError::retryable(format!("scan task failed: {e}")))?;
        let batch = match read {
            Ok(batch) => batch,
            Err(error) => {
                outcome.findings.push(
                    Finding::new(
                        "logs.scan_failed",
                        Severity::Warn,
                        format!("cannot read {}: {error}", source.path.display()),
                    )
                    .with_subject(source.name.clone()),
                );
                continue;
            }
        };
        let committed = if !batch.changes(&previous) {
            log_cursors::Commit::Committed
        } else {
            log_cursors::commit(
                &ctx.db,
                job.id.0,
                &source.name,
                &previous,
                previous_scan_at,
                &batch,
            )
            .await
            .map_err(|e| JobError::retryable(format!("committing the scan: {}", chain(&e))))?
        };
        if committed == log_cursors::Commit::CursorMoved {
            return Err(JobError::retryable(format!(
                "another scan of source {:?} moved its cursor meanwhile; this attempt's reading was discarded",
                source.name
            )));
        }
        let report = log_cursors::job_report(&ctx.db, job.id.0, &source.name)
            .await
            .map_err(|e| JobError::retryable(format!("reading the scan report: {}", chain(&e))))?;
        let digest = source_findings(source, &report, settings, &mut outcome.findings);
        n_lines += report.lines_read;
        n_bytes += report.bytes_read;
        n_backlog += report.backlog_bytes;
        n_errors += digest.0;
        n_fatal += digest.1;
        n_new += report.new_signatures.len() as u64;
    }
    outcome.summary = format!(
        "{} source(s): {n_lines} line(s) read ({n_bytes} bytes), {n_errors} error(s), {n_fatal} fatal/panic, {n_new} new signature(s){}",
        sources.len(),
        if n_backlog > 0 {
            format!("; {n_backlog} bytes left for the next run (budget reached)")
        } else {
            String::new()
        }
    );
    for (key, value) in [
        ("sources", sources.len() as u64),
        ("lines_read", n_lines),
        ("bytes_read", n_bytes),
        ("backlog_bytes", n_backlog),
        ("errors", n_errors),
        ("fatal", n_fatal),
        ("new_signatures", n_new),
    ] {
        outcome.metrics.insert(key.to_owned(), value.into());
    }
    Ok(outcome)
}

/// Adds one source's findings (fatal/panic, new signatures, rates, gaps, the digest); returns
/// its error and fatal line counts.
fn source_findings(
    source: &SourceSettings,
    report: &log_cursors::JobReport,
    settings: &upkeep_shared::logs::LogsSettings,
    findings: &mut Vec<Finding>,
) -> (u64, u64) {
    let name = &source.name;
    let total = |severity: LineSeverity| {
        report
            .counts
            .get(&(severity, String::new()))
            .map_or(0, |(count, _)| *count)
    };
    let n_errors = total(LineSeverity::Error);
    let n_fatal = total(LineSeverity::Fatal) + total(LineSeverity::Panic);
    let subject = |signature: &str| format!("{name}: {signature}");
    let mut signatures: Vec<(&LineSeverity, &String, u64, &String)> = report
        .counts
        .iter()
        .filter(|((_, signature), _)| !signature.is_empty())
        .map(|((severity, signature), (count, example))| (severity, signature, *count, example))
        .collect();
    signatures.sort_by(|a, b| b.2.cmp(&a.2).then(b.0.cmp(a.0)).then(a.1.cmp(b.1)));
    for (severity, signature, count, example) in signatures
        .iter()
        .filter(|s| *s.0 >= LineSeverity::Fatal)
        .take(MAX_FINDINGS_PER_KIND)
    {
        findings.push(
            Finding::new(
                "logs.fatal",
                Severity::Critical,
                format!("{count} {} line(s) in {name}: {example}", severity.as_str()),
            )
            .with_subject(subject(signature))
            .with_detail(json!({"source": name, "severity": severity, "signature": signature, "count": count, "example": example})),
        );
    }
    for (severity, signature) in report
        .new_signatures
        .iter()
        .filter(|(severity, _)| *severity < LineSeverity::Fatal)
        .take(MAX_FINDINGS_PER_KIND)
    {
        let (count, example) = report
            .counts
            .get(&(*severity, signature.clone()))
            .cloned()
            .unwrap_or_default();
        let level = if *severity >= LineSeverity::Error {
            Severity::Warn
        } else {
            Severity::Ok
        };
        findings.push(
            Finding::new(
                "logs.new_signature",
                level,
                format!("new {} signature in {name} ({count} line(s)): {example}", severity.as_str()),
            )
            .with_subject(subject(signature))
            .with_detail(json!({"source": name, "severity": severity, "signature": signature, "count": count, "example": example})),
        );
    }
    // The rate is averaged over the time since the source's previous scan, at least an hour
    // (a first scan counts as a day: it reads whatever history the file holds).
    let hours = match (report.previous_scan_at, report.first_committed_at) {
        (Some(previous), Some(now)) => ((now - previous).num_seconds() as f64 / 3600.0).max(1.0),
        _ => 24.0,
    };
    let threshold = settings.rate_threshold_per_hour as f64;
    for (severity, signature, count, example) in signatures
        .iter()
        .filter(|s| *s.0 >= LineSeverity::Warning && *s.0 < LineSeverity::Fatal)
        .filter(|s| s.2 as f64 / hours > threshold)
        .take(MAX_FINDINGS_PER_KIND)
    {
        findings.push(
            Finding::new(
                "logs.error_rate",
                Severity::Warn,
                format!(
                    "{:.0}/h {} line(s) in {name} (threshold {threshold}/h): {example}",
                    *count as f64 / hours,
                    severity.as_str()
                ),
            )
            .with_subject(subject(signature))
            .with_detail(json!({"source": name, "count": count, "hours": hours})),
        );
    }
    for gap in report.gaps.iter().take(MAX_FINDINGS_PER_KIND) {
        findings.push(
            Finding::new(
                "logs.scan_gap",
                Severity::Warn,
                gap.get("reason")
                    .and_then(|r| r.as_str())
                    .unwrap_or("unread lines")
                    .to_owned(),
            )
            .with_subject(name.clone())
            .with_detail(gap.clone()),
        );
    }
    let by_severity: serde_json::Map<String, serde_json::Value> = report
        .counts
        .iter()
        .filter(|((_, signature), _)| signature.is_empty())
        .map(|((severity, _), (count, _))| (severity.as_str().to_owned(), (*count).into()))
        .collect();
    let top: Vec<serde_json::Value> = signatures
        .iter()
        .take(settings.digest_size)
        .map(|(severity, signature, count, example)| {
            json!({"severity": severity, "signature": signature, "count": count, "example": example})
        })
        .collect();
    let complete = report.backlog_bytes == 0;
    findings.push(
        Finding::new(
            "logs.digest",
            Severity::Ok,
            format!(
                "{name}: {} line(s), {n_errors} error(s), {n_fatal} fatal/panic, {} signature(s){}",
                report.lines_read,
                signatures.len(),
                if complete {
                    String::new()
                } else {
                    format!("; {} bytes not read yet (next run)", report.backlog_bytes)
                }
            ),
        )
        .with_subject(name.clone())
        .with_detail(json!({
            "source": name,
            "lines_read": report.lines_read,
            "bytes_read": report.bytes_read,
            "backlog_bytes": report.backlog_bytes,
            "complete": complete,
            "batches": report.n_batches,
            "by_severity": by_severity,
            "top": top,
        })),
    );
    (n_errors, n_fatal)
}

fn permanent(error: JobError) -> JobError {
    JobError::Permanent(error.to_string())
}

/// The error and its causes, joined with `: `.
pub(crate) fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
