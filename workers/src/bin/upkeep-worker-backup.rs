//! `upkeep-worker-backup`: the worker daemon of the `backups` queue.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    upkeep_workers::run_daemon("upkeep-worker-backup", &["backups"]).await
}
