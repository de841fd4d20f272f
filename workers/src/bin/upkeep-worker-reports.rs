//! `upkeep-worker-reports`: the worker daemon of the `reports` queue.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    upkeep_workers::run_daemon("upkeep-worker-reports", &["reports"]).await
}
