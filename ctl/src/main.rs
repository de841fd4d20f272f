//! `upkeepctl`: the operator CLI. Parsing lives here; the work is done by the library crates.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use upkeep_shared::config::Settings;
use upkeep_shared::queue::NewJob;
use upkeep_shared::shutdown::Shutdown;
use upkeep_shared::{JobKind, QueueName};

mod backups;
mod cron;
mod reconcile;

mod schedules;
mod tasks;

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
    /// Backups: list (catalog beside disk), verify, restore, prune --dry-run.
    Backups(backups::BackupsArgs),
    /// Check a cron expression before deploying it: `cron next "30 2 * * 1-5" --tz Europe/Berlin`.
    Cron(cron::CronArgs),
    /// The daily, weekly and monthly checklists with each item's status and evidence; ack.
    Tasks(tasks::TasksArgs),
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
    let default_filter = match cli.command {
        Command::Up => settings.telemetry.filter.clone(),
        _ => "warn".to_owned(),
    };
    upkeep_shared::telemetry::init("upkeepctl", &default_filter, settings.telemetry.format);
    match cli.command {
        Command::Migrate => {
            upkeep_shared::store::connect_and_migrate(&settings.database).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Up => up(settings).await,
        Command::Enqueue {
            kind,
            args,
            delay,
            queue,
            count,
            idempotency_key,
        } => {
            enqueue(
                &settings,
                &kind,
                &args,
                delay,
                queue.as_deref(),
                count,
                idempotency_key,
            )
            .await
        }
        Command::Stats { json } => stats(&settings, json).await,
        Command::Dead { action, json } => match action.unwrap_or(DeadAction::List { limit: 50 }) {
            DeadAction::List { limit } => dead_list(&settings, limit, json).await,
            DeadAction::Retry { id } => dead_retry(&settings, &id).await,
        },
        Command::Bench(args) => upkeep_workers::bench::run(settings, args).await,
        Command::Reconcile(args) => reconcile::run(&settings, args).await,
        Command::Schedules(args) => schedules::run(settings, args).await,
        Command::Backups(args) => backups::run(&settings, args).await,
        Command::Cron(args) => cron::run(&args),
        Command::Tasks(args) => tasks::run(settings, args).await,
    }
}

async fn up(settings: Settings) -> anyhow::Result<()> {
    tracing::info!(settings = %settings.redacted_summary(), "upkeepctl up: scheduler and all workers");
    let shutdown = Shutdown::new();
    shutdown
        .on_signals()
        .context("installing signal handlers")?;
    let queues: Vec<QueueName> = upkeep_shared::job::QUEUES
        .iter()
        .map(|q| QueueName::parse(q))
        .collect::<Result<_, _>>()?;
    let ctx = upkeep_workers::HandlerContext::connect_lazy(settings.clone())
        .context("building the Postgres pool")?;
    let registry = upkeep_workers::Registry::standard(&ctx);
    let workers =
        upkeep_workers::WorkerRuntime::build_with_pool(settings.clone(), queues, registry, ctx.db)
            .await?;
    let scheduler = upkeep_scheduler::Scheduler::build(settings).await?;
    let mut workers_task = tokio::spawn(workers.run_until_stopped(shutdown.clone()));
    let mut scheduler_task = tokio::spawn(scheduler.run_until_stopped(shutdown.clone()));
    // Whichever ends first (normally both, after the signal) is reported; a component that
    // ends on its own brings the rest down instead of vanishing silently.
    let (first, name, other_name) = tokio::select! {
        result = &mut workers_task => (result, "workers", "scheduler"),
        result = &mut scheduler_task => (result, "scheduler", "workers"),
    };
    if !shutdown.is_triggered() {
        tracing::error!(
            component = name,
            "component stopped on its own; stopping everything"
        );
        shutdown.trigger();
    }
    let second = if name == "workers" {
        scheduler_task.await
    } else {
        workers_task.await
    };
    first
        .with_context(|| format!("{name} task"))?
        .with_context(|| format!("{name} failed"))?;
    second
        .with_context(|| format!("{other_name} task"))?
        .with_context(|| format!("{other_name} failed"))?;
    Ok(())
}

async fn enqueue(
    settings: &Settings,
    kind: &str,
    args: &str,
    delay: Option<Duration>,
    queue: Option<&str>,
    count: usize,
    idempotency_key: Option<String>,
) -> anyhow::Result<()> {
    let kind = JobKind::parse_runnable(kind)?;
    let args: serde_json::Value = serde_json::from_str(args)
        .with_context(|| format!("--args is not valid JSON: {args:?}"))?;
    kind.validate_args(&args)?;
    let queue = match queue {
        Some(name) => QueueName::parse(name).context("--queue")?,
        None => kind.default_queue(),
    };
    // Like a schedule's queue: a job on a queue nobody configured is never run, and neither
    // `stats` nor `dead` would ever show it.
    if !settings.queues.contains_key(&queue) {
        let configured: Vec<&str> = settings.queues.keys().map(QueueName::as_str).collect();
        bail!(
            "--queue: queue {:?} is not configured (configured: {}; add a [queues.{queue}] section)",
            queue.as_str(),
            configured.join(", ")
        );
    }
    if count == 0 {
        bail!("--count must be at least 1");
    }
    if count > 1 && idempotency_key.is_some() {
        bail!(
            "--idempotency-key and --count > 1 contradict each other: the key would keep one job"
        );
    }
    let policy = settings.job_policy(&queue, kind.as_str());
    let run_at_ms = delay.map(|d| chrono::Utc::now().timestamp_millis() + d.as_millis() as i64);
    let handle = settings.open_queue(&queue)?;
    upkeep_shared::queue::check_eviction_policy(&handle.conn())
        .await
        .log();
    let mut n_left = count;
    while n_left > 0 {
        let n_batch = n_left.min(upkeep_shared::queue::ENQUEUE_CHUNK);
        let batch: Vec<NewJob> = (0..n_batch)
            .map(|_| {
                let mut job = NewJob::new(kind.as_str(), args.clone(), policy.max_attempts);
                job.run_at_ms = run_at_ms;
                job.idempotency_key = idempotency_key.clone();
                job
            })
            .collect();
        let enqueued = handle.enqueue(&batch).await.with_context(|| {
            let n_done = count - n_left;
            if n_done == 0 {
                "enqueueing into Redis".to_owned()
            } else {
                format!(
                    "enqueueing into Redis; {n_done} of {count} jobs were enqueued before this                      failure (their ids are printed above), the other {n_left} were not"
                )
            }
        })?;
        for result in enqueued {
            println!("{}", result.id());
        }
        n_left -= n_batch;
    }
    Ok(())
}

async fn stats(settings: &Settings, json: bool) -> anyhow::Result<()> {
    let mut all = Vec::new();
    for name in settings.queues.keys() {
        let queue = settings.open_queue(name)?;
        all.push(
            queue
                .stats()
                .await
                .with_context(|| format!("reading stats of {name}"))?,
        );
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "queues": all }))?
        );
        return Ok(());
    }
    println!(
        "{:<10} {:>8} {:>9} {:>8} {:>8} {:>6} {:>7} {:>10} {:>8} {:>11}",
        "queue",
        "pending",
        "scheduled",
        "running",
        "retrying",
        "dead",
        "workers",
        "succeeded",
        "failed",
        "oldest_age"
    );
    for s in all {
        let total = |k: &str| s.totals.get(k).copied().unwrap_or(0);
        println!(
            "{:<10} {:>8} {:>9} {:>8} {:>8} {:>6} {:>7} {:>10} {:>8} {:>11}",
            s.name,
            s.pending,
            s.scheduled,
            s.running,
            s.retrying,
            s.dead,
            s.workers,
            total("succeeded"),
            total("failed"),
            s.oldest_pending_age_seconds
                .map_or("-".to_owned(), |a| format!("{a:.1}s")),
        );
    }
    Ok(())
}

async fn dead_list(settings: &Settings, limit: usize, json: bool) -> anyhow::Result<()> {
    let mut rows = Vec::new();
    for name in settings.queues.keys() {
        let queue = settings.open_queue(name)?;
        for record in queue.dead_letters(limit).await? {
            rows.push(serde_json::json!({
                "queue": name.as_str(),
                "id": record.id,
                "kind": record.fields.get("kind"),
                "attempt": record.fields.get("attempt"),
                "error": record.fields.get("err"),
            }));
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        for row in rows {
            println!(
                "{}  {}  {}  attempts={}  {}",
                row["queue"].as_str().unwrap_or(""),
                row["id"].as_str().unwrap_or(""),
                row["kind"].as_str().unwrap_or(""),
                row["attempt"].as_str().unwrap_or(""),
                row["error"].as_str().unwrap_or(""),
            );
        }
    }
    Ok(())
}

async fn dead_retry(settings: &Settings, id: &str) -> anyhow::Result<()> {
    for name in settings.queues.keys() {
        let queue = settings.open_queue(name)?;
        if queue.requeue_dead(id).await? {
            println!("requeued {id} on {name}");
            return Ok(());
        }
    }
    bail!("{id} is not a dead letter of any configured queue")
}
