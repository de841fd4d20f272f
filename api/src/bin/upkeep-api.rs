//! `upkeep-api`: the HTTP API daemon. Listens on `[api] addr` (`UPKEEP_API_ADDR`, default
//! `127.0.0.1:8080`) until SIGTERM or SIGINT.

use anyhow::Context as _;
use upkeep_shared::config::Settings;
use upkeep_shared::shutdown::Shutdown;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // `--check-config`: validate, print the problems, exit 0 or 2; connect to nothing.
    if std::env::args().skip(1).any(|arg| arg == "--check-config") {
        return upkeep_shared::config::check_and_report("upkeep-api", None);
    }
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("upkeep-api: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let settings = Settings::load().map_err(|e| anyhow::anyhow!("{e}"))?;
    let _telemetry = upkeep_shared::telemetry::init_daemon("upkeep-api", &settings.telemetry)?;
    tracing::info!(settings = %settings.redacted_summary(), "starting");
    if settings.api.token.is_none() {
        tracing::warn!(
            "no API token is configured (UPKEEP_API_TOKEN): every route but /api/v1/health answers 401"
        );
    }
    let addr = settings.api.addr;
    let state = upkeep_api::AppState::connect_lazy(settings)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    tracing::info!(addr = %listener.local_addr()?, "listening");
    let shutdown = Shutdown::new();
    shutdown
        .on_signals()
        .context("installing signal handlers")?;
    let stopped = shutdown.clone();
    upkeep_api::run(listener, state, async move { stopped.wait().await }).await?;
    tracing::info!("stopped");
    Ok(())
}
