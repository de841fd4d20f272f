//! `upkeepctl reconcile`: one reconciliation pass of the ledger with Redis, on demand (the
//! workers run the same pass periodically; see `upkeep_shared::reconcile`).

use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use upkeep_shared::QueueName;
use upkeep_shared::config::{ReconcileAction, Settings};
use upkeep_shared::queue::RedisConn;
use upkeep_shared::reconcile::{self, Options, Taken};

/// Arguments of `upkeepctl reconcile`.
#[derive(Debug, Args)]
pub(crate) struct ReconcileArgs {
    /// What to do with lost jobs: requeue or record (default: maintenance.reconcile_action;
    /// `off` there means requeue here).
    #[arg(long, value_parser = parse_action)]
    action: Option<ReconcileAction>,
    /// Only report what is lost; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Only judge ledger entries older than this (default: maintenance.reconcile_grace).
    #[arg(long, value_parser = parse_duration)]
    grace: Option<Duration>,
    /// Only this queue (repeatable; default: every configured queue).
    #[arg(long)]
    queue: Vec<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Runs one pass and prints what it found.
pub(crate) async fn run(settings: &Settings, args: ReconcileArgs) -> anyhow::Result<()> {
    let pool = upkeep_shared::store::connect(&settings.database).await?;
    let conn = RedisConn::open(&settings.redis.target()).context("opening the Redis connection")?;
    upkeep_shared::queue::check_eviction_policy(&conn)
        .await
        .log();
    let configured = match settings.maintenance.reconcile_action {
        ReconcileAction::Off => ReconcileAction::Requeue,
        action => action,
    };
    let queues = if args.queue.is_empty() {
        None
    } else {
        Some(
            args.queue
                .iter()
                .map(|name| QueueName::parse(name))
                .collect::<Result<Vec<_>, _>>()?,
        )
    };
    let options = Options {
        action: if args.dry_run {
            ReconcileAction::Off
        } else {
            args.action.unwrap_or(configured)
        },
        grace: args.grace.unwrap_or(settings.maintenance.reconcile_grace),
        queues,
    };
    let report = reconcile::reconcile_once(&pool, &conn, settings, &options)
        .await
        .context("reconciling the ledger with redis")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "examined {} unfinished job(s) in the ledger; {} lost from redis",
        report.n_examined,
        report.lost.len()
    );
    for lost in &report.lost {
        let action = match lost.action {
            Taken::Requeued => "requeued",
            Taken::Recorded => "recorded as lost",
            Taken::Reported => "not changed (dry run)",
            Taken::Reappeared => "back in redis meanwhile; left alone",
        };
        println!(
            "{}  {}  {}  after attempt {} ({}): {action}",
            lost.job_id, lost.queue, lost.kind, lost.last_attempt, lost.source
        );
    }
    Ok(())
}

fn parse_action(text: &str) -> Result<ReconcileAction, String> {
    match ReconcileAction::parse(text)? {
        ReconcileAction::Off => Err("use --dry-run to change nothing".to_owned()),
        action => Ok(action),
    }
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration like 30s or 5m: {e}"))
}
