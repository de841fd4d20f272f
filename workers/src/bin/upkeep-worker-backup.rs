//! `upkeep-worker-backup`: the worker daemon of the `backups` queue.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    if std::env::args().skip(1).any(|arg| arg == "--check-config") {
        return upkeep_shared::config::check_and_report("upkeep-worker-backup", None);
    }
    match upkeep_workers::run_daemon("upkeep-worker-backup", &["backups"]).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("upkeep-worker-backup: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
