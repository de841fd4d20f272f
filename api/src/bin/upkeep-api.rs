//! `upkeep-api`: the HTTP API daemon. Listens on `[api] addr` (`UPKEEP_API_ADDR`, default
//! `127.0.0.1:8080`) until SIGTERM or SIGINT.
//!
//! Its life under a supervisor (readiness, watchdog, exit codes) is
//! `upkeep_shared::daemons::Daemon`'s; its heartbeat is its own health route answering.

use anyhow::Context as _;
use upkeep_shared::daemons::Daemon;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let daemon = match Daemon::start(
        "upkeep-api",
        "The HTTP API, dashboard and /metrics over the ledger and the queues.",
    )
    .await
    {
        Ok(daemon) => daemon,
        Err(code) => return code,
    };
    let result = run(&daemon).await;
    daemon.finish(result)
}

async fn run(daemon: &Daemon) -> anyhow::Result<()> {
    let settings = daemon.settings().clone();
    if settings.api.token.is_none() && settings.api.tokens.is_empty() {
        tracing::warn!(
            "no API token is configured (UPKEEP_API_TOKEN or [[api.tokens]]): every route but /api/v1/health answers 401"
        );
    }
    let addr = settings.api.addr;
    let state = upkeep_api::AppState::connect_lazy(settings)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local_addr = listener.local_addr()?;
    tracing::info!(addr = %local_addr, "listening");
    daemon.ready(format!("serving HTTP on {local_addr}"));
    daemon.probe_http(local_addr);
    let stopped = daemon.shutdown();
    upkeep_api::run(listener, state, async move { stopped.wait().await }).await
}
