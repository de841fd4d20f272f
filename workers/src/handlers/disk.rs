//! `system.disk`: used space and inodes of every filesystem upkeep cares about, with
//! hysteresis, and the "full within 24 h" trend from the samples kept in `disk_samples`.
//!
//! Paths: `[disk] paths`, every log target's directory and source's directory, and the
//! PostgreSQL data directory when this host can see it (the database is local and the role may
//! read `data_directory`). Each is resolved to its filesystem and de-duplicated by device id;
//! findings are about the filesystem's mount point (the subject), so the same filesystem reached
//! through two paths is reported once.

use std::path::PathBuf;

use chrono::Utc;
use serde_json::json;
use upkeep_shared::disk::{self, Sample};
use upkeep_shared::logs::{DiskArgs, decode_args};
use upkeep_shared::store;
use upkeep_shared::{Finding, Job, JobError, Outcome, Severity};

use crate::handlers::logs::chain;
use crate::registry::HandlerContext;

/// Used space, as `df` shows it.
pub const USED_CODE: &str = "disk.used_pct";
/// Inodes in use.
pub const INODES_CODE: &str = "disk.inodes_used_pct";
/// Predicted to fill within `[disk] full_within`.
pub const TREND_CODE: &str = "disk.full_soon";
/// A configured path could not be measured.
pub const UNREADABLE_CODE: &str = "disk.unreadable";
/// The backup volume has less free space than [`BACKUP_HEADROOM`] × the last good backups.
pub const BACKUP_HEADROOM_CODE: &str = "disk.backup_headroom";
/// Free space the backup volume needs, as a multiple of the last good backups' size: the next
/// dump is written before retention deletes an old one, and a database grows.
pub const BACKUP_HEADROOM: f64 = 1.5;

/// The path whose filesystem holds the backups, when backups are configured: `[backups]
/// directory`, or its nearest existing ancestor before the first backup creates it.
#[must_use]
pub fn backup_volume_path(settings: &upkeep_shared::config::Settings) -> Option<PathBuf> {
    if settings.backups.databases.is_empty() {
        return None;
    }
    settings
        .backups
        .directory
        .ancestors()
        .find(|dir| dir.exists())
        .map(std::path::Path::to_path_buf)
}

/// The paths `system.disk` checks for these settings, automatic ones included (the data
/// directory is added by the handler, which needs the database for it).
#[must_use]
pub fn configured_paths(settings: &upkeep_shared::config::Settings) -> Vec<PathBuf> {
    let mut paths = settings.disk.paths.clone();
    paths.extend(settings.logs.targets.iter().map(|t| t.directory.clone()));
    paths.extend(settings.logs.sources.iter().map(|s| s.split().0));
    paths.extend(backup_volume_path(settings));
    paths.extend(settings.disk.redis_dir.clone());
    paths
}

/// Runs `system.disk`.
///
/// # Errors
/// `Permanent` for bad args, `Retryable` when the database fails.
pub async fn run(ctx: &HandlerContext, job: Job) -> Result<Outcome, JobError> {
    let _: DiskArgs =
        decode_args("system.disk", &job.args).map_err(|e| JobError::Permanent(e.to_string()))?;
    let settings = &ctx.settings.disk;
    let mut paths = configured_paths(&ctx.settings);
    // Cheap and optional: a role without the privilege, or a remote server, adds nothing.
    if let Ok(Some(data_directory)) = store::disk_samples::data_directory(&ctx.db).await {
        let data_directory = PathBuf::from(data_directory);
        if data_directory.exists() {
            paths.push(data_directory);
        }
    }
    let measured = tokio::task::spawn_blocking(move || disk::measure(&paths))
        .await
        .map_err(|e| JobError::retryable(format!("disk task failed: {e}")))?;
    let (usages, errors) = measured;
    let open = store::findings::open(
        &ctx.db,
        &[
            USED_CODE,
            INODES_CODE,
            TREND_CODE,
            UNREADABLE_CODE,
            BACKUP_HEADROOM_CODE,
        ],
    )
    .await
    .map_err(|e| JobError::retryable(format!("reading open findings: {}", chain(&e))))?;
    let previous = |code: &str, subject: &str| {
        open.iter()
            .find(|f| f.code == code && f.subject.as_deref() == Some(subject))
            .map(|f| f.severity)
    };
    let now = Utc::now();
    let mut outcome = Outcome::default();
    let mut worst_pct: f64 = 0.0;
    for usage in &usages {
        let subject = usage.mount_point.to_string_lossy().into_owned();
        worst_pct = worst_pct.max(usage.used_pct);
        let detail = serde_json::to_value(usage).unwrap_or_default();
        let level = disk::level(
            usage.used_pct,
            previous(USED_CODE, &subject),
            settings.warn_pct,
            settings.critical_pct,
            settings.hysteresis_pct,
        );
        if level != Severity::Ok {
            outcome.findings.push(
                Finding::new(
                    USED_CODE,
                    level,
                    format!(
                        "{subject} is {}% used ({} of {} bytes available; warn at {}%, critical at {}%)",
                        disk::df_pct(usage.used_pct),
                        usage.avail_bytes,
                        usage.total_bytes,
                        settings.warn_pct,
                        settings.critical_pct
                    ),
                )
                .with_subject(subject.clone())
                .with_detail(detail.clone()),
            );
        }
        if let Some(inodes_pct) = usage.inodes_used_pct {
            let level = disk::level(
                inodes_pct,
                previous(INODES_CODE, &subject),
                settings.warn_pct,
                settings.critical_pct,
                settings.hysteresis_pct,
            );
            if level != Severity::Ok {
                outcome.findings.push(
                    Finding::new(
                        INODES_CODE,
                        level,
                        format!(
                            "{subject} has {}% of its inodes in use",
                            disk::df_pct(inodes_pct)
                        ),
                    )
                    .with_subject(subject.clone())
                    .with_detail(detail.clone()),
                );
            }
        }
        let sample = Sample {
            sampled_at: now,
            used_bytes: usage.used_bytes,
            avail_bytes: usage.avail_bytes,
        };
        store::disk_samples::insert(&ctx.db, &subject, &sample, usage.total_bytes)
            .await
            .map_err(|e| JobError::retryable(format!("storing a disk sample: {}", chain(&e))))?;
        let window = chrono::Duration::from_std(settings.trend_window).unwrap_or_default();
        let samples = store::disk_samples::since(&ctx.db, &subject, now - window)
            .await
            .map_err(|e| JobError::retryable(format!("reading disk samples: {}", chain(&e))))?;
        let horizon = chrono::Duration::from_std(settings.full_within).unwrap_or_default();
        if let Some(full_at) = disk::predicted_full_at(&samples)
            && full_at <= now + horizon
        {
            outcome.findings.push(
                Finding::new(
                    TREND_CODE,
                    Severity::Warn,
                    format!(
                        "{subject} fills up around {} at the rate of the last {} ({} sample(s))",
                        full_at.format("%Y-%m-%d %H:%M UTC"),
                        humantime::format_duration(settings.trend_window),
                        samples.len()
                    ),
                )
                .with_subject(subject.clone())
                .with_detail(json!({"full_at": full_at, "samples": samples.len()})),
            );
        }
    }
    if let Some(finding) = backup_headroom(ctx, &usages).await? {
        outcome.findings.push(finding);
    }
    for error in &errors {
        outcome.findings.push(
            Finding::new(UNREADABLE_CODE, Severity::Warn, error.to_string())
                .with_subject(error.path.to_string_lossy().into_owned()),
        );
    }
    let pairs: Vec<(String, Option<String>)> = open.iter().map(|f| f.pair()).collect();
    let resolved = upkeep_shared::job::resolutions(&pairs, &outcome.findings);
    outcome.findings.extend(resolved);
    let retention = chrono::Duration::from_std(settings.sample_retention).unwrap_or_default();
    if let Err(error) = store::disk_samples::prune(&ctx.db, now - retention).await {
        tracing::warn!(error = %error, "pruning disk samples failed");
    }
    outcome.summary = format!(
        "{} filesystem(s) checked, fullest {}% used{}",
        usages.len(),
        disk::df_pct(worst_pct),
        if errors.is_empty() {
            String::new()
        } else {
            format!(", {} path(s) unreadable", errors.len())
        }
    );
    outcome
        .metrics
        .insert("filesystems".to_owned(), usages.len().into());
    outcome
        .metrics
        .insert("max_used_pct".to_owned(), json!(worst_pct));
    Ok(outcome)
}

/// The critical finding when the backup volume's free space is below [`BACKUP_HEADROOM`] × the
/// size of the last good backup of every configured database (the next `backup.run` writes
/// them all). Its subject is `[backups] directory`, so it resolves once there is room again.
async fn backup_headroom(
    ctx: &HandlerContext,
    usages: &[disk::Usage],
) -> Result<Option<Finding>, JobError> {
    let Some(volume_path) = backup_volume_path(&ctx.settings) else {
        return Ok(None);
    };
    let Some(usage) = usages.iter().find(|u| u.paths.contains(&volume_path)) else {
        return Ok(None);
    };
    let configured: Vec<&str> = ctx
        .settings
        .backups
        .databases
        .iter()
        .map(|d| d.name.as_str())
        .collect();
    let newest = store::backups::newest_good(&ctx.db)
        .await
        .map_err(|e| JobError::retryable(format!("reading the backup catalog: {}", chain(&e))))?;
    let last_bytes: u64 = newest
        .iter()
        .filter(|(database, _, _)| configured.contains(&database.as_str()))
        .map(|(_, _, size)| u64::try_from(*size).unwrap_or(0))
        .sum();
    if last_bytes == 0 {
        return Ok(None);
    }
    let needed = (last_bytes as f64 * BACKUP_HEADROOM).ceil() as u64;
    if usage.avail_bytes >= needed {
        return Ok(None);
    }
    let subject = ctx
        .settings
        .backups
        .directory
        .to_string_lossy()
        .into_owned();
    Ok(Some(
        Finding::new(
            BACKUP_HEADROOM_CODE,
            Severity::Critical,
            format!(
                "the backup volume {} has {} bytes free, less than {BACKUP_HEADROOM} x the last \
                 good backups ({last_bytes} bytes): the next backup may not fit",
                usage.mount_point.display(),
                usage.avail_bytes
            ),
        )
        .with_subject(subject)
        .with_detail(json!({
            "mount_point": usage.mount_point,
            "avail_bytes": usage.avail_bytes,
            "last_backup_bytes": last_bytes,
            "needed_bytes": needed,
        })),
    ))
}
