//! `upkeepctl logs targets` and `upkeepctl disk`: what `logs.rotate` would see for each target
//! (files, sizes, generations, next rotation) and each checked filesystem's usage, read
//! directly from the file system (no job is enqueued).

use anyhow::Context as _;
use chrono::Utc;
use clap::{Args, Subcommand};
use serde_json::json;
use upkeep_shared::config::Settings;
use upkeep_shared::disk;
use upkeep_shared::logs::rotate;
use upkeep_shared::logs::settings::RotateMode;

/// Arguments of `upkeepctl logs`.
#[derive(Debug, Args)]
pub(crate) struct LogsArgs {
    #[command(subcommand)]
    action: LogsAction,
}

#[derive(Debug, Subcommand)]
enum LogsAction {
    /// Each `[[logs.targets]]` entry: its files, sizes, generations and next rotation.
    Targets {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Arguments of `upkeepctl disk`.
#[derive(Debug, Args)]
pub(crate) struct DiskArgs {
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs `upkeepctl logs …`.
pub(crate) async fn run(settings: &Settings, args: LogsArgs) -> anyhow::Result<()> {
    let LogsAction::Targets { json } = args.action;
    let now = Utc::now();
    let mut protected = Vec::new();
    if settings
        .logs
        .targets
        .iter()
        .any(|t| t.mode == RotateMode::Postgres)
    {
        let pool = upkeep_shared::store::connect(&settings.database).await?;
        protected = upkeep_shared::store::disk_samples::current_logfiles(&pool)
            .await
            .context("asking PostgreSQL for its current log files")?;
    }
    let mut listing = Vec::new();
    for target in &settings.logs.targets {
        let files = rotate::plan(target, &protected, now)
            .with_context(|| format!("listing target {:?}", target.name))?;
        listing.push((target, files));
    }
    if json {
        let targets: Vec<serde_json::Value> = listing
            .iter()
            .map(|(target, files)| {
                json!({
                    "name": target.name,
                    "directory": target.directory,
                    "pattern": target.pattern,
                    "mode": target.mode,
                    "files": files,
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "targets": targets }))?
        );
        return Ok(());
    }
    if listing.is_empty() {
        println!("no [[logs.targets]] configured");
    }
    for (target, files) in listing {
        println!(
            "{} ({:?}, {}/{})",
            target.name,
            target.mode,
            target.directory.display(),
            target.pattern
        );
        if files.is_empty() {
            println!("  no live file");
        }
        for file in files {
            let next = match (file.due, file.next_by_age) {
                (Some(reason), _) => format!("due now ({reason:?})"),
                (None, Some(at)) => format!("by age at {}", at.format("%Y-%m-%d %H:%M UTC")),
                (None, None) => match target.rotate_size {
                    Some(size) => format!("at {size}"),
                    None => "by PostgreSQL".to_owned(),
                },
            };
            let generation_bytes: u64 = file.generations.iter().map(|g| g.size).sum();
            println!(
                "  {}  {} bytes  {} generation(s), {} bytes  next rotation: {next}",
                file.path.display(),
                file.size,
                file.generations.len(),
                generation_bytes
            );
        }
    }
    Ok(())
}

/// Runs `upkeepctl disk`.
pub(crate) fn disk(settings: &Settings, args: &DiskArgs) -> anyhow::Result<()> {
    let paths = upkeep_workers::handlers::disk::configured_paths(settings);
    let (usages, errors) = disk::measure(&paths);
    let thresholds = &settings.disk;
    let level =
        |pct: f64| disk::level(pct, None, thresholds.warn_pct, thresholds.critical_pct, 0.0);
    if args.json {
        let filesystems: Vec<serde_json::Value> = usages
            .iter()
            .map(|usage| {
                let mut value = serde_json::to_value(usage).unwrap_or_default();
                value["df_pct"] = disk::df_pct(usage.used_pct).into();
                value["level"] = serde_json::to_value(level(usage.used_pct)).unwrap_or_default();
                value
            })
            .collect();
        let errors: Vec<serde_json::Value> = errors
            .iter()
            .map(|e| json!({"path": e.path, "error": e.source.to_string()}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({"filesystems": filesystems, "errors": errors}))?
        );
        return Ok(());
    }
    if paths.is_empty() {
        println!("no paths: set [disk] paths, [[logs.targets]] or [[logs.sources]]");
    }
    for usage in &usages {
        let inodes = usage
            .inodes_used_pct
            .map_or_else(|| "-".to_owned(), |pct| format!("{}%", disk::df_pct(pct)));
        println!(
            "{:<30} {:>4}% used  {:>16} avail  {:>16} total  inodes {:>4}  {:?}",
            usage.mount_point.display(),
            disk::df_pct(usage.used_pct),
            usage.avail_bytes,
            usage.total_bytes,
            inodes,
            level(usage.used_pct)
        );
    }
    for error in &errors {
        println!("{error}");
    }
    Ok(())
}
