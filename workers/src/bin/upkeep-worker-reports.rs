//! `upkeep-worker-reports`: the worker daemon of the `reports` queue.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    if std::env::args().skip(1).any(|arg| arg == "--check-config") {
        return upkeep_shared::config::check_and_report("upkeep-worker-reports", None);
    }
    match upkeep_workers::run_daemon("upkeep-worker-reports", &["reports"]).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("upkeep-worker-reports: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
