//! `backup.run` and `backup.verify`: thin adapters from a job to
//! `upkeep_shared::backup::BackupService`, turning its per-database reports into an `Outcome`
//! (or a `JobError::Reported` that keeps the findings and the tool's stderr).
//!
//! Conditions are per database (`Finding::subject`): a run reports what it observes and
//! resolves, with `job::resolutions`, the open conditions of its codes it no longer sees, so a
//! `backup.stale` closes when a good backup lands.

use upkeep_shared::backup::service::{FULL_READ_CODES, RESTORE_CODES, RUN_CODES};
use upkeep_shared::backup::{BackupService, DatabaseReport, VerifyMode};
use upkeep_shared::job::{BackupRunArgs, BackupVerifyArgs, resolutions};
use upkeep_shared::store;
use upkeep_shared::{Job, JobError, Outcome};

use crate::registry::HandlerContext;

/// Runs `backup.run`: each named (or every configured) database, one runner per database.
///
/// # Errors
/// `Permanent` for bad args or an unknown database; `Reported` (with findings) when a dump
/// failed.
pub async fn run(ctx: &HandlerContext, job: Job) -> Result<Outcome, JobError> {
    let args =
        BackupRunArgs::from_value(&job.args).map_err(|e| JobError::Permanent(e.to_string()))?;
    let service = BackupService::new(ctx.settings.backups.clone(), ctx.db.clone());
    let targets = service
        .targets(args.database.as_deref())
        .map_err(|e| JobError::Permanent(e.to_string()))?;
    if targets.is_empty() {
        return Err(JobError::Permanent(
            "no database to back up: [[backups.databases]] is empty".to_owned(),
        ));
    }
    let mut reports = Vec::with_capacity(targets.len());
    for target in targets {
        reports.push(service.run_one(target, Some(job.id.0)).await);
    }
    finish(ctx, reports, RUN_CODES).await
}

/// Runs `backup.verify` in `full_read` or `restore` mode.
///
/// # Errors
/// `Permanent` for bad args or an unknown database; `Reported` when a backup is damaged or a
/// restore test failed.
pub async fn verify(ctx: &HandlerContext, job: Job) -> Result<Outcome, JobError> {
    let args =
        BackupVerifyArgs::from_value(&job.args).map_err(|e| JobError::Permanent(e.to_string()))?;
    let service = BackupService::new(ctx.settings.backups.clone(), ctx.db.clone());
    let reports = service
        .verify(args.mode, args.database.as_deref())
        .await
        .map_err(|e| JobError::Permanent(e.to_string()))?;
    let codes = match args.mode {
        VerifyMode::FullRead => FULL_READ_CODES,
        VerifyMode::Restore => RESTORE_CODES,
    };
    finish(ctx, reports, codes).await
}

async fn finish(
    ctx: &HandlerContext,
    reports: Vec<DatabaseReport>,
    codes: &[&str],
) -> Result<Outcome, JobError> {
    let mut outcome = Outcome::default();
    let mut lines = Vec::new();
    let mut failures = Vec::new();
    let (mut n_committed, mut n_skipped, mut n_failed, mut bytes) = (0u64, 0u64, 0u64, 0u64);
    for report in &reports {
        outcome.findings.extend(report.findings.iter().cloned());
        match report.status {
            "skipped" => {
                n_skipped += 1;
                lines.push(format!(
                    "{}: skipped (another runner holds it)",
                    report.database
                ));
            }
            "failed" => {
                n_failed += 1;
                let error = report.error.clone().unwrap_or_default();
                lines.push(format!("{}: failed: {error}", report.database));
                failures.push(format!("{}: {error}", report.database));
            }
            status => {
                n_committed += 1;
                bytes += report.size_bytes.unwrap_or(0);
                let id = report
                    .backup_id
                    .map_or_else(String::new, |id| format!(" backup {id}"));
                let deleted = if report.deleted.is_empty() {
                    String::new()
                } else {
                    format!(", retention deleted {:?}", report.deleted)
                };
                lines.push(format!(
                    "{}: {status}{id} in {:.1}s{deleted}",
                    report.database, report.seconds
                ));
            }
        }
    }
    // Resolve the open conditions of this job's codes for the databases it looked at; a
    // skipped database was not looked at, so its conditions stay as they are.
    let looked_at: Vec<&str> = reports
        .iter()
        .filter(|r| r.status != "skipped")
        .map(|r| r.database.as_str())
        .collect();
    match store::findings::open(&ctx.db, codes).await {
        Ok(open) => {
            let pairs: Vec<(String, Option<String>)> = open
                .iter()
                .filter(|f| f.subject.as_deref().is_some_and(|s| looked_at.contains(&s)))
                .map(|f| f.pair())
                .collect();
            let resolved = resolutions(&pairs, &outcome.findings);
            outcome.findings.extend(resolved);
        }
        Err(error) => {
            tracing::warn!(error = %error, "cannot read open backup findings; none resolved this time")
        }
    }
    // Nothing was done here because other runners hold every database: the attempt is
    // recorded as `skipped`, which no task list counts as a backup.
    outcome.skipped = n_skipped > 0 && n_committed == 0 && n_failed == 0;
    outcome.summary = if outcome.skipped {
        format!("skipped: {}", lines.join("; "))
    } else {
        lines.join("; ")
    };
    for (key, value) in [
        ("databases_ok", n_committed),
        ("databases_skipped", n_skipped),
        ("databases_failed", n_failed),
        ("bytes", bytes),
    ] {
        outcome.metrics.insert(key.to_owned(), value.into());
    }
    outcome.metrics.insert(
        "reports".to_owned(),
        serde_json::to_value(&reports).unwrap_or_default(),
    );
    if failures.is_empty() {
        Ok(outcome)
    } else {
        Err(JobError::reported(failures.join("; "), outcome))
    }
}
