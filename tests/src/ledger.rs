//! The ledger side of system and chaos tests: a connection, a job's runs, and the job ids
//! `upkeepctl enqueue` prints.

use sqlx::{Connection, PgConnection};
use uuid::Uuid;

/// A new connection to the ledger at `url`.
///
/// # Panics
/// When Postgres cannot be reached; the message names the URL.
pub async fn connect_ledger(url: &str) -> PgConnection {
    PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("connecting to the ledger {url}: {e}"))
}

/// The job ids `upkeepctl enqueue` printed, one per line.
///
/// # Panics
/// When a line is not a job id.
#[must_use]
pub fn printed_job_ids(stdout: &str) -> Vec<Uuid> {
    stdout
        .lines()
        .map(|line| {
            Uuid::parse_str(line.trim())
                .unwrap_or_else(|e| panic!("enqueue printed {line:?}, not a job id: {e}"))
        })
        .collect()
}
