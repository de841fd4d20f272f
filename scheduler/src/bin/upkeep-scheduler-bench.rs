//! `upkeep-scheduler-bench`: N schedules firing every minute, spread with jitter, run by one
//! real scheduler in scratch space; prints its CPU and due → enqueue lag (see
//! `upkeep_scheduler::bench`).

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use upkeep_scheduler::bench::{self, BenchOptions};
use upkeep_shared::config::Settings;

/// Benchmark the scheduler against the configured Postgres server and Redis, in a scratch
/// database and key prefix of its own.
#[derive(Debug, Parser)]
#[command(name = "upkeep-scheduler-bench")]
struct Cli {
    /// Schedules to run.
    #[arg(long, default_value_t = 10_000)]
    schedules: usize,
    /// Their cron expression.
    #[arg(long, default_value = "0 * * * * *")]
    cron: String,
    /// Jitter spreading their due times.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    jitter: Duration,
    /// How long the scheduler runs (at least two minutes of fire times by default).
    #[arg(long, default_value = "150s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Keep the scratch database.
    #[arg(long)]
    keep: bool,
    /// Start the scheduler at this second of a minute (0-59); default: at once.
    #[arg(long)]
    start_second: Option<u32>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load() {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("upkeep-scheduler-bench: {error}");
            return ExitCode::FAILURE;
        }
    };
    upkeep_shared::telemetry::init("upkeep-scheduler-bench", "warn", settings.telemetry.format);
    let options = BenchOptions {
        n_schedules: cli.schedules,
        cron: cli.cron,
        jitter: cli.jitter,
        duration: cli.duration,
        keep: cli.keep,
        start_second: cli.start_second,
    };
    match bench::run(settings, options).await {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("upkeep-scheduler-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}
