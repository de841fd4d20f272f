//! `upkeep-worker-tokens`: the worker daemon of the `tokens` queue.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    upkeep_workers::run_daemon("upkeep-worker-tokens", &["tokens"]).await
}
