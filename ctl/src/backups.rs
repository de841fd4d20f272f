//! `upkeepctl backups`: the catalog beside the disk, verification of one backup, restores with
//! a progress bar, and the retention plan. The work is `upkeep_shared::backup::BackupService`.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use upkeep_shared::backup::BackupService;
use upkeep_shared::config::Settings;
use upkeep_shared::store;

/// Arguments of `upkeepctl backups`.
#[derive(Debug, Args)]
pub(crate) struct BackupsArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Catalog rows and files on disk side by side; disagreements are flagged.
    List {
        /// Only this configured database.
        #[arg(long)]
        database: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Re-read one backup (checksum and pg_restore -f /dev/null), or restore-test it.
    Verify {
        /// The catalog id.
        id: i64,
        /// Restore it into a scratch database and compare the counts instead.
        #[arg(long)]
        restore: bool,
    },
    /// Restore a backup into a new database on the same server.
    Restore {
        /// The catalog id.
        id: i64,
        /// The database to create and restore into.
        #[arg(long)]
        into: String,
        /// Drop DBNAME first if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Show the retention plan: what is kept (and by which rule) and what would be deleted.
    Prune {
        /// Only this configured database.
        #[arg(long)]
        database: Option<String>,
        /// Only show the plan (required: retention deletes only after a committed backup).
        #[arg(long)]
        dry_run: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs one `backups` action.
pub(crate) async fn run(settings: &Settings, args: BackupsArgs) -> anyhow::Result<()> {
    let pool = store::connect(&settings.database).await?;
    let service = BackupService::new(settings.backups.clone(), pool.clone());
    match args.action {
        Action::List { database, json } => {
            let entries = service.inventory(database.as_deref()).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&entries)?);
                return Ok(());
            }
            println!(
                "{:>6}  {:<12} {:<25} {:>12}  {:<10} {:<18} stem",
                "id", "database", "finished", "size", "verified", "disk"
            );
            for entry in &entries {
                let (id, finished, size, level) = entry.row.as_ref().map_or_else(
                    || {
                        (
                            "-".to_owned(),
                            "-".to_owned(),
                            "-".to_owned(),
                            "-".to_owned(),
                        )
                    },
                    |row| {
                        (
                            row.id.to_string(),
                            row.finished_at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                            row.size_bytes.to_string(),
                            row.verification.clone(),
                        )
                    },
                );
                let flag = if entry.agreement == "ok" {
                    "ok".to_owned()
                } else {
                    format!("!! {}", entry.agreement)
                };
                println!(
                    "{id:>6}  {:<12} {finished:<25} {size:>12}  {level:<10} {flag:<18} {}",
                    entry.database,
                    entry.stem.as_deref().unwrap_or("-")
                );
            }
            Ok(())
        }
        Action::Verify { id, restore } => {
            let row = store::backups::get(&pool, id)
                .await?
                .filter(|r| r.deleted_at.is_none())
                .with_context(|| format!("no live backup with id {id}"))?;
            if restore {
                let target = service.targets(Some(&row.database))?[0];
                service.restore_test(target, &row).await?;
                println!(
                    "backup {id}: restore test passed ({} tables, row counts match)",
                    row.table_count
                );
            } else {
                service.full_read(&row).await?;
                println!(
                    "backup {id}: full read passed (checksum {} matches, pg_restore reads every entry)",
                    row.sha256
                );
            }
            Ok(())
        }
        Action::Restore { id, into, force } => {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} archive entries",
                )
                .expect("valid template"),
            );
            let progress = {
                let bar = bar.clone();
                move |done: u64, total: u64| {
                    bar.set_length(total);
                    bar.set_position(done);
                }
            };
            let row = service.restore_into(id, &into, force, &progress).await;
            bar.finish_and_clear();
            let row = row?;
            println!(
                "restored backup {id} of {} into {into:?}: {} tables, row counts of {} tables match",
                row.database,
                row.table_count,
                row.row_counts.as_object().map_or(0, serde_json::Map::len)
            );
            Ok(())
        }
        Action::Prune {
            database,
            dry_run,
            json,
        } => {
            anyhow::ensure!(
                dry_run,
                "backups prune only shows the plan (--dry-run): retention deletes only after backup.run committed a good backup"
            );
            let now = chrono::Utc::now();
            let mut plans = Vec::new();
            for target in service.targets(database.as_deref())? {
                let (plan, _) = service.prune(&target.name, now, true).await?;
                plans.push(serde_json::json!({"database": target.name, "plan": plan}));
                if !json {
                    println!(
                        "{}{}",
                        target.name,
                        if plan.frozen {
                            " (frozen: no good backup within max_staleness; nothing is deleted)"
                        } else {
                            ""
                        }
                    );
                    for decision in &plan.decisions {
                        let rules: Vec<String> = decision
                            .keep
                            .iter()
                            .map(|r| {
                                serde_json::to_value(r)
                                    .map(|v| v.as_str().unwrap_or("").to_owned())
                                    .unwrap_or_default()
                            })
                            .collect();
                        println!(
                            "  {:>6}  {}  {:<5} {}",
                            decision.id,
                            decision.finished_at.format("%Y-%m-%d %H:%M:%S UTC"),
                            if decision.good { "good" } else { "bad" },
                            if decision.delete() {
                                "delete".to_owned()
                            } else {
                                format!("keep ({})", rules.join(", "))
                            }
                        );
                    }
                }
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&plans)?);
            }
            Ok(())
        }
    }
}
