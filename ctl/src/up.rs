//! `upkeepctl up`: the scheduler, a worker for every queue and the HTTP API (on `[api] addr`,
//! `UPKEEP_API_ADDR`, default 127.0.0.1:8080) in this process, until Ctrl-C or SIGTERM;
//! whichever component stops first is reported and brings the others down.

use anyhow::Context as _;
use upkeep_shared::QueueName;
use upkeep_shared::config::Settings;
use upkeep_shared::shutdown::Shutdown;

/// Runs everything until a signal.
pub(crate) async fn run(settings: Settings) -> anyhow::Result<()> {
    tracing::info!(settings = %settings.redacted_summary(), "upkeepctl up: scheduler, all workers and the API");
    let shutdown = Shutdown::new();
    shutdown
        .on_signals()
        .context("installing signal handlers")?;
    let queues: Vec<QueueName> = upkeep_shared::job::QUEUES
        .iter()
        .map(|q| QueueName::parse(q))
        .collect::<Result<_, _>>()?;
    // Bind first: a port already in use is an error before anything starts.
    let addr = settings.api.addr;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the API to {addr} (set UPKEEP_API_ADDR)"))?;
    let api_state = upkeep_api::AppState::connect_lazy(settings.clone())?;
    if api_state.access.is_closed() {
        tracing::warn!(
            "no API token is configured (UPKEEP_API_TOKEN or [[api.tokens]]): every route but /api/v1/health answers 401"
        );
    }
    tracing::info!(addr = %listener.local_addr()?, "API listening");
    let ctx = upkeep_workers::HandlerContext::connect_lazy(settings.clone())
        .context("building the Postgres pool")?;
    let registry = upkeep_workers::Registry::standard(&ctx);
    let workers =
        upkeep_workers::WorkerRuntime::build_with_pool(settings.clone(), queues, registry, ctx.db)
            .await?;
    let scheduler = upkeep_scheduler::Scheduler::build(settings).await?;
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn({
        let shutdown = shutdown.clone();
        async move { ("workers", workers.run_until_stopped(shutdown).await) }
    });
    tasks.spawn({
        let shutdown = shutdown.clone();
        async move { ("scheduler", scheduler.run_until_stopped(shutdown).await) }
    });
    tasks.spawn({
        let stopped = shutdown.clone();
        async move {
            let result =
                upkeep_api::run(listener, api_state, async move { stopped.wait().await }).await;
            ("api", result)
        }
    });
    // Whichever ends first (normally all, after the signal) is reported; a component that
    // ends on its own brings the rest down instead of vanishing silently.
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let (name, result) = joined.context("a component panicked")?;
        if !shutdown.is_triggered() {
            tracing::error!(
                component = name,
                "component stopped on its own; stopping everything"
            );
            shutdown.trigger();
        }
        if let Err(error) = result
            && first_error.is_none()
        {
            first_error = Some(error.context(format!("{name} failed")));
        }
    }
    first_error.map_or(Ok(()), Err)
}
