//! `upkeep-scheduler`: the scheduler daemon. Run as many replicas as you like.
//!
//! Its life under a supervisor (readiness, watchdog, exit codes, SIGHUP reload of the
//! schedules) is `upkeep_shared::daemons::Daemon`'s.

use std::process::ExitCode;

use upkeep_shared::daemons::Daemon;

#[tokio::main]
async fn main() -> ExitCode {
    let daemon = match Daemon::start(
        "upkeep-scheduler",
        "Turns cron schedules into jobs, once per tick, with any number of replicas.",
    )
    .await
    {
        Ok(daemon) => daemon,
        Err(code) => return code,
    };
    daemon.ready(format!(
        "ticking {} schedules",
        daemon.settings().schedules.len()
    ));
    // SIGHUP: a new Scheduler over the reloaded file, whose start-up reconciles the schedules.
    let result = daemon
        .run_reloading(|settings, stop| async move {
            let scheduler = upkeep_scheduler::Scheduler::build(settings).await?;
            scheduler.run_until_stopped(stop).await
        })
        .await;
    daemon.finish(result)
}
