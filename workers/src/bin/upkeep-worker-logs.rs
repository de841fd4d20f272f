//! `upkeep-worker-logs`: the worker daemon of the `logs` queue.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    upkeep_workers::run_daemon("upkeep-worker-logs", &["logs"]).await
}
