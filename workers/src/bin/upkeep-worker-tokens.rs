//! `upkeep-worker-tokens`: the worker daemon of the `tokens` queue.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    if std::env::args().skip(1).any(|arg| arg == "--check-config") {
        return upkeep_shared::config::check_and_report("upkeep-worker-tokens", None);
    }
    match upkeep_workers::run_daemon("upkeep-worker-tokens", &["tokens"]).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("upkeep-worker-tokens: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
