//! `upkeepctl tasks`: the daily, weekly and monthly checklists, and acknowledgements, read from
//! and written to Postgres directly (it works while the API is down).

use anyhow::Context as _;
use chrono::{NaiveDate, Utc};
use clap::{Args, Subcommand};
use upkeep_api::checklist::{self, Checklist};
use upkeep_shared::config::Settings;
use upkeep_shared::tasks::Period;

/// `upkeepctl tasks [daily|weekly|monthly|ack]`.
#[derive(Debug, Args)]
pub(crate) struct TasksArgs {
    #[command(subcommand)]
    action: Option<TasksAction>,
    /// A date in the window to show (YYYY-MM-DD, in the checklist's zone); default today.
    #[arg(long, global = true)]
    date: Option<NaiveDate>,
    /// Print JSON.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum TasksAction {
    /// Today's checklist (the default).
    Daily,
    /// This ISO week's checklist.
    Weekly,
    /// This month's checklist.
    Monthly,
    /// Acknowledge an item (an `attention` item becomes done; a manual item is done by it).
    Ack {
        /// The item's id, as listed: `weekly.security_logs.2026-11-23`.
        id: String,
        /// Why it is acceptable, or what was done.
        #[arg(long)]
        note: String,
        /// Who acknowledges; default `$USER@host`.
        #[arg(long)]
        actor: Option<String>,
    },
}

pub(crate) async fn run(settings: Settings, args: TasksArgs) -> anyhow::Result<()> {
    let db = upkeep_shared::store::connect(&settings.database).await?;
    let period = match args.action {
        None | Some(TasksAction::Daily) => Period::Daily,
        Some(TasksAction::Weekly) => Period::Weekly,
        Some(TasksAction::Monthly) => Period::Monthly,
        Some(TasksAction::Ack { id, note, actor }) => {
            let actor = actor.unwrap_or_else(crate::schedules::default_actor);
            let at =
                checklist::acknowledge(&db, &settings.tasks, &id, &note, &actor, None, Utc::now())
                    .await
                    .with_context(|| format!("acknowledging {id}"))?;
            if args.json {
                println!(
                    "{}",
                    serde_json::json!({ "id": id, "acknowledged_at": at, "actor": actor })
                );
            } else {
                println!("acknowledged {id} as {actor} at {at}");
            }
            return Ok(());
        }
    };
    let now = Utc::now();
    let date = args
        .date
        .unwrap_or_else(|| checklist::today(&settings.tasks, now));
    let list = checklist::checklist(&db, &settings.tasks, period, date, now).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        print_table(&list);
    }
    Ok(())
}

fn print_table(list: &Checklist) {
    println!(
        "{} checklist from {} ({}, {} to {})",
        list.period.as_str(),
        list.date,
        list.timezone,
        list.window_start.format("%Y-%m-%d %H:%M UTC"),
        list.window_end.format("%Y-%m-%d %H:%M UTC"),
    );
    println!("{:<14} {:<38} evidence", "status", "item");
    for item in &list.items {
        let mut evidence = Vec::new();
        if let Some(run) = &item.evidence.last_success {
            evidence.push(format!(
                "run {} at {}",
                run.run_id,
                run.finished_at.format("%H:%M")
            ));
        }
        if let Some(run) = &item.evidence.last_failure {
            evidence.push(format!("failed run {}", run.run_id));
        }
        for finding in &item.evidence.findings {
            let severity = serde_json::to_value(finding.severity)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            evidence.push(format!("{severity} {}", finding.code));
        }
        if let Some(ack) = &item.evidence.acknowledgement {
            evidence.push(format!("acked by {}: {}", ack.actor, ack.note));
        }
        println!(
            "{:<14} {:<38} {}",
            item.status.as_str(),
            item.description,
            evidence.join("; ")
        );
        println!("{:<14} {:<38}", "", format!("id {}", item.id));
    }
    let summary: Vec<String> = list
        .summary
        .iter()
        .map(|(status, n)| format!("{n} {status}"))
        .collect();
    println!("{}", summary.join(", "));
}
