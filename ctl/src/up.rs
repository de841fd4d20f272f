//! `upkeepctl up`: the scheduler and a worker for every queue in this process, until Ctrl-C or
//! SIGTERM; whichever component stops first is reported and brings the other down.

use anyhow::Context as _;
use upkeep_shared::QueueName;
use upkeep_shared::config::Settings;
use upkeep_shared::shutdown::Shutdown;

/// Runs everything until a signal.
pub(crate) async fn run(settings: Settings) -> anyhow::Result<()> {
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
