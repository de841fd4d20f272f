//! `upkeep-scheduler`: the scheduler daemon. Run as many replicas as you like.

use std::process::ExitCode;

use anyhow::Context as _;
use upkeep_shared::config::Settings;
use upkeep_shared::shutdown::Shutdown;

#[tokio::main]
async fn main() -> ExitCode {
    // `--check-config`: validate, print the problems, exit 0 or 2; connect to nothing.
    if std::env::args().skip(1).any(|arg| arg == "--check-config") {
        return upkeep_shared::config::check_and_report("upkeep-scheduler", None);
    }
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("upkeep-scheduler: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let settings = Settings::load().map_err(|e| anyhow::anyhow!("{e}"))?;
    let _telemetry =
        upkeep_shared::telemetry::init_daemon("upkeep-scheduler", &settings.telemetry)?;
    tracing::info!(settings = %settings.redacted_summary(), "starting");
    let scheduler = upkeep_scheduler::Scheduler::build(settings).await?;
    let shutdown = Shutdown::new();
    shutdown
        .on_signals()
        .context("installing signal handlers")?;
    scheduler.run_until_stopped(shutdown).await
}
