//! Helpers for the system tests: the shared services, private Redis and Postgres
//! instances, and the workspace binaries run as child processes.
//!
//! The system tests (`tests/system/`) treat upkeep as a black box: they start the real
//! binaries against real Redis and Postgres and check behaviour end to end, including
//! `kill -9` and restarts. Everything they need to set that up lives here, so a change of
//! harness touches this crate rather than every test.
//!
//! # Layout
//! - [`services`]: the Redis and Postgres that `scripts/test.sh` provides (`REDIS_URL`,
//!   `DATABASE_URL`), unique key prefixes and fresh databases for isolation.
//! - [`private_redis`]: a `redis-server` of a test's own, for killing and restarting.
//! - [`private_postgres`]: a Postgres cluster of a test's own, for stopping and starting.
//! - [`process`]: workspace binaries as child processes with their output in a log file.
//! - [`ports`]: free TCP ports on 127.0.0.1.
//! - [`proxy`]: a TCP proxy the test can partition (blackhole, refuse, cut).
//! - [`receivers`]: an HTTP and an SMTP server that record what the alert tests send.
//! - [`wait`]: `eventually` (poll until a probe answers) and `unix_now`.
//! - [`ledger`]: a ledger connection and the job ids `upkeepctl enqueue` prints.
//!
//! # Requirements
//! - Run the suite with `scripts/test.sh`: it provides `REDIS_URL` and `DATABASE_URL`, and
//!   installs `redis-server`, `redis-cli` and the Postgres server programs (`initdb`,
//!   `pg_ctl`, `postgres`) that the private instances need.
//! - The binaries must be built first: `cargo build --workspace --bins` (scripts/test.sh
//!   does it). Cargo does not build another package's binaries for a test target, so
//!   [`cargo_bin`] finds them in the target directory instead.
//!
//! The helpers are blocking. That is fine inside `#[tokio::test]`: the services they
//! control run in other processes, so nothing waits on the test's own runtime meanwhile.

pub mod ledger;
pub mod ports;
pub mod private_postgres;
pub mod private_redis;
pub mod process;
pub mod proxy;
pub mod receivers;
pub mod services;
pub mod wait;

pub use ledger::{connect_ledger, printed_job_ids};
pub use ports::free_port;
pub use private_postgres::PrivatePostgres;
pub use private_redis::{AppendFsync, PrivateRedis, RedisOptions};
pub use process::{ChildProcess, cargo_bin};
pub use proxy::{ProxyMode, TcpProxy};
pub use services::{
    fresh_database, fresh_migrated_database, shared_database_url, shared_redis_url, unique_prefix,
};
pub use wait::{eventually, unix_now};
