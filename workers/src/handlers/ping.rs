//! `system.ping`: the smoke-test and benchmark job. It can sleep, fail, fail transiently, or
//! panic, so tests can drive every path of the worker with one kind.

use std::time::Duration;

use upkeep_shared::job::PingArgs;
use upkeep_shared::{Job, JobError, Outcome};

/// Runs one ping.
///
/// # Errors
/// `Permanent` for bad args, `Retryable` when asked to fail.
///
/// # Panics
/// When the args say `panic: true` (on purpose: it models a poison job).
pub async fn run(job: Job) -> Result<Outcome, JobError> {
    let args = PingArgs::from_value(&job.args).map_err(|e| JobError::Permanent(e.to_string()))?;
    if let Some(sleep_ms) = args.sleep_ms {
        tokio::time::sleep(Duration::from_millis(sleep_ms)).await;
    }
    if args.panic == Some(true) {
        panic!("system.ping asked to panic");
    }
    if args.fail == Some(true) {
        return Err(JobError::retryable("system.ping asked to fail"));
    }
    if let Some(n_failures) = args.fail_attempts
        && job.attempt <= n_failures
    {
        return Err(JobError::retryable(format!(
            "system.ping asked to fail attempts 1..={n_failures}"
        )));
    }
    let mut outcome = Outcome {
        summary: "pong".to_owned(),
        ..Outcome::default()
    };
    outcome
        .metrics
        .insert("attempt".to_owned(), job.attempt.into());
    Ok(outcome)
}
