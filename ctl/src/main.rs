//! `upkeepctl`: the operator CLI. Parsing lives here; the work is done by the library crates.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use upkeep_shared::config::Settings;
use upkeep_shared::operator;

mod alerts;
mod backups;
mod config_cmd;
mod cron;
mod doctor;
mod logs;
mod reconcile;
mod reports;
mod up;

mod schedules;
mod tasks;

mod tokens;

/// Operate upkeep: migrate the ledger, enqueue jobs, read queue stats, run everything at once.
#[derive(Debug, Parser)]
#[command(name = "upkeepctl", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply pending database migrations.
    Migrate,
    /// Run the scheduler and every worker in this process until Ctrl-C / SIGTERM.
    Up,
    /// Enqueue a job (prints the job id; with --count, one id per line).
    Enqueue {
        /// Job kind, e.g. system.ping.
        kind: String,
        /// JSON arguments.
        #[arg(long, default_value = "{}")]
        args: String,
        /// Run after this delay (e.g. 30s, 5m).
        #[arg(long, value_parser = parse_duration)]
        delay: Option<Duration>,
        /// Queue to use instead of the kind's default.
        #[arg(long)]
        queue: Option<String>,
        /// Enqueue this many identical jobs, in batches.
        #[arg(long, default_value_t = 1)]
        count: usize,
        /// A second enqueue with the same key returns the first job's id and enqueues nothing.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Queue depths and counters.
    Stats {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Recent attempts from the ledger, newest first (running ones first of all).
    Runs {
        /// Only this job kind, e.g. system.ping.
        #[arg(long)]
        kind: Option<String>,
        /// Only this status: running, succeeded, failed, abandoned or skipped.
        #[arg(long)]
        status: Option<String>,
        /// At most this many attempts (1 to 10000).
        #[arg(long, default_value_t = 20)]
        limit: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Dead letters.
    Dead {
        #[command(subcommand)]
        action: Option<DeadAction>,
        /// Print JSON.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Measure throughput and latency end to end against the configured Redis and Postgres.
    Bench(upkeep_workers::bench::BenchArgs),
    /// Find jobs Redis lost although the ledger says they never finished; requeue or record them.
    Reconcile(reconcile::ReconcileArgs),
    /// Schedules: health, next fire times, pause, resume, trigger, backfill.
    Schedules(schedules::SchedulesArgs),
    /// Postgres health reports: show slow queries, bloat, index usage, connections; install views.
    Reports(reports::ReportsArgs),
    /// Check the configuration, or show the effective one with each value's source.
    Config(config_cmd::ConfigArgs),
    /// Backups: list (catalog beside disk), verify, restore, prune --dry-run.
    Backups(backups::BackupsArgs),
    /// Check a cron expression before deploying it: `cron next "30 2 * * 1-5" --tz Europe/Berlin`.
    Cron(cron::CronArgs),
    /// The daily, weekly and monthly checklists with each item's status and evidence; ack.
    Tasks(tasks::TasksArgs),
    /// OAuth2 credentials: add, list, get, revoke, rotate-key.
    Tokens(tokens::TokensArgs),
    /// Log rotation targets: files, sizes, next rotation.
    Logs(logs::LogsArgs),
    /// Disk usage of every checked filesystem, as `df` computes it.
    Disk(logs::DiskArgs),
    /// Alerts: open incidents and the outbox (list), a test message through a sink (test SINK).
    Alerts(alerts::AlertsArgs),
    /// Check the deployment: Redis, Postgres, targets, backup directory, token endpoints,
    /// clocks; one line per check, exit 1 when one fails.
    Doctor(doctor::DoctorArgs),
}

#[derive(Debug, Subcommand)]
enum DeadAction {
    /// List dead letters of every queue (default).
    List {
        /// Most entries per queue.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Move a dead job back to its queue with a fresh attempt budget.
    Retry {
        /// The job id.
        id: String,
    },
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("{text:?} is not a duration like 30s or 5m: {e}"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Checking or showing the configuration must work when it is invalid, and touches no server.
    if let Command::Config(args) = cli.command {
        return config_cmd::run(args).unwrap_or_else(|error| {
            eprintln!("upkeepctl: {error:#}");
            ExitCode::FAILURE
        });
    }
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("upkeepctl: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    // Checking a line that is not configured yet needs no configuration at all.
    if let Command::Cron(args) = &cli.command {
        return cron::run(args);
    }
    let settings = Settings::load().map_err(|e| anyhow::anyhow!("{e}"))?;
    let (default_filter, log_format) = match &cli.command {
        Command::Up => (settings.telemetry.filter.clone(), settings.telemetry.format),
        // The benchmark logs like a deployed worker unless told otherwise.
        Command::Bench(args) => args.logging(&settings.telemetry),
        _ => ("warn".to_owned(), settings.telemetry.format),
    };
    upkeep_shared::telemetry::init("upkeepctl", &default_filter, log_format);
    match cli.command {
        Command::Migrate => {
            upkeep_shared::store::connect_and_migrate(&settings.database).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Up => up::run(settings).await,
        Command::Enqueue {
            kind,
            args,
            delay,
            queue,
            count,
            idempotency_key,
        } => {
            let request = operator::EnqueueRequest {
                kind,
                args,
                delay,
                queue,
                count,
                idempotency_key,
            };
            Ok(operator::enqueue(&settings, &request, |id| println!("{id}")).await?)
        }
        Command::Stats { json } => {
            let all = operator::stats(&settings).await?;
            print_json_or(json, &serde_json::json!({ "queues": all }), || {
                operator::render_stats(&all)
            })
        }
        Command::Runs {
            kind,
            status,
            limit,
            json,
        } => {
            let runs =
                operator::recent_runs(&settings, kind.as_deref(), status.as_deref(), limit).await?;
            print_json_or(json, &runs, || operator::render_runs(&runs))
        }
        Command::Dead { action, json } => match action.unwrap_or(DeadAction::List { limit: 50 }) {
            DeadAction::List { limit } => {
                let rows = operator::dead_letters(&settings, limit).await?;
                print_json_or(json, &rows, || operator::render_dead_letters(&rows))
            }
            DeadAction::Retry { id } => {
                let queue = operator::retry_dead(&settings, &id).await?;
                println!("requeued {id} on {queue}");
                Ok(())
            }
        },
        Command::Bench(args) => upkeep_workers::bench::run(settings, args).await,
        Command::Reconcile(args) => reconcile::run(&settings, args).await,
        Command::Schedules(args) => schedules::run(settings, args).await,
        Command::Reports(args) => reports::run(&settings, args).await,
        Command::Config(_) => unreachable!("handled before the configuration is loaded"),
        Command::Backups(args) => backups::run(&settings, args).await,
        Command::Cron(args) => cron::run(&args),
        Command::Tasks(args) => tasks::run(settings, args).await,
        Command::Tokens(args) => tokens::run(&settings, args).await,
        Command::Logs(args) => logs::run(&settings, args).await,
        Command::Disk(args) => logs::disk(&settings, &args),
        Command::Alerts(args) => alerts::run(&settings, args).await,
        Command::Doctor(args) => doctor::run(&settings, &args).await,
    }
}

fn print_json_or(
    json: bool,
    value: &impl serde::Serialize,
    text: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        print!("{}", text());
    }
    Ok(())
}
