//! `upkeep-worker-logs`: the worker daemon of the `logs` queue.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    if std::env::args().skip(1).any(|arg| arg == "--check-config") {
        return upkeep_shared::config::check_and_report("upkeep-worker-logs", None);
    }
    match upkeep_workers::run_daemon("upkeep-worker-logs", &["logs"]).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("upkeep-worker-logs: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
