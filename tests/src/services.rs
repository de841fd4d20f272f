//! The Redis and Postgres that `scripts/test.sh` provides, shared by every test.
//!
//! Tests run in parallel against the same servers, so each one isolates itself: a unique
//! Redis key prefix from [`unique_prefix`] (never `FLUSHDB`), and, when it needs a clean
//! ledger, a database of its own from [`fresh_database`] or [`fresh_migrated_database`].
//! A test that cannot reach a service fails with a message naming the command that
//! provides it; it never skips silently.

use std::net::{TcpStream, ToSocketAddrs};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::{AssertSqlSafe, Connection, PgConnection};
use url::Url;

/// Every database [`fresh_database`] creates starts with this.
const FRESH_DATABASE_PREFIX: &str = "upkeep_test_";

/// A fresh database older than this belongs to a run that is long over, so the next
/// [`fresh_database`] drops it. Far longer than any test run, so a database still in
/// use by a concurrent run on the same server is never touched.
const STALE_DATABASE_AGE: Duration = Duration::from_secs(6 * 60 * 60);

/// How to get the services, for panic messages.
const HOW_TO_RUN: &str = "run the tests with scripts/test.sh, which starts or reuses Redis \
                          and Postgres and exports REDIS_URL and DATABASE_URL";

/// The shared Redis: `REDIS_URL`, checked once to accept TCP connections.
///
/// # Panics
/// Panics when `REDIS_URL` is unset, malformed or unreachable, saying to run the tests
/// with scripts/test.sh.
pub fn shared_redis_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| checked_service_url("REDIS_URL", "Redis", 6379))
        .clone()
}

/// The shared Postgres: `DATABASE_URL`, checked once to accept TCP connections.
///
/// # Panics
/// Panics when `DATABASE_URL` is unset, malformed or unreachable, saying to run the
/// tests with scripts/test.sh.
pub fn shared_database_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| checked_service_url("DATABASE_URL", "Postgres", 5432))
        .clone()
}

/// A Redis key prefix no other test uses: `t-` and 12 hex digits of a random UUID.
pub fn unique_prefix() -> String {
    let uuid = uuid::Uuid::new_v4().simple().to_string();
    format!("t-{}", &uuid[..12])
}

/// Creates an empty database with a unique name (`upkeep_test_<unix seconds>_<random>`)
/// on the server `admin_url` points at, and returns its URL.
///
/// The database is not dropped when the test ends (that would need an async drop).
/// Instead each call drops the fresh databases that are more than six hours old.
///
/// # Panics
/// Panics when the server cannot be reached or refuses `CREATE DATABASE`.
pub async fn fresh_database(admin_url: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs();
    let random = uuid::Uuid::new_v4().simple().to_string();
    let name = format!("{FRESH_DATABASE_PREFIX}{now}_{}", &random[..12]);
    let mut connection = PgConnection::connect(admin_url)
        .await
        .unwrap_or_else(|error| panic!("cannot connect to {admin_url}: {error}; {HOW_TO_RUN}"));
    // The name is ours: lowercase letters, digits and underscores only.
    sqlx::raw_sql(AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
        .execute(&mut connection)
        .await
        .unwrap_or_else(|error| panic!("cannot create database {name} via {admin_url}: {error}"));
    drop_stale_fresh_databases(&mut connection, now).await;
    let _ = connection.close().await;
    let mut url = Url::parse(admin_url)
        .unwrap_or_else(|error| panic!("cannot parse database URL {admin_url}: {error}"));
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// Like [`fresh_database`], then applies upkeep's migrations (`upkeep_shared::MIGRATOR`).
///
/// # Panics
/// Panics when the database cannot be created or a migration fails.
pub async fn fresh_migrated_database(admin_url: &str) -> String {
    let url = fresh_database(admin_url).await;
    let mut connection = PgConnection::connect(&url)
        .await
        .unwrap_or_else(|error| panic!("cannot connect to the fresh database {url}: {error}"));
    upkeep_shared::MIGRATOR
        .run(&mut connection)
        .await
        .unwrap_or_else(|error| panic!("migrating the fresh database {url}: {error}"));
    let _ = connection.close().await;
    url
}

/// Drops the databases [`fresh_database`] created more than [`STALE_DATABASE_AGE`] ago.
/// Best effort: a failure here must not fail the test that asked for a database.
async fn drop_stale_fresh_databases(connection: &mut PgConnection, now: u64) {
    let Ok(names) = sqlx::query_scalar::<_, String>(
        "SELECT datname FROM pg_database WHERE starts_with(datname, 'upkeep_test_')",
    )
    .fetch_all(&mut *connection)
    .await
    else {
        return;
    };
    for name in names {
        let created_at = name
            .strip_prefix(FRESH_DATABASE_PREFIX)
            .and_then(|rest| rest.split('_').next())
            .and_then(|seconds| seconds.parse::<u64>().ok());
        let Some(created_at) = created_at else {
            continue;
        };
        if now.saturating_sub(created_at) < STALE_DATABASE_AGE.as_secs() {
            continue;
        }
        // Names come from pg_database but match our own pattern: digits, letters, '_'.
        if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            let _ = sqlx::raw_sql(AssertSqlSafe(format!(
                r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#
            )))
            .execute(&mut *connection)
            .await;
        }
    }
}

fn checked_service_url(variable: &str, service: &str, default_port: u16) -> String {
    let raw = std::env::var(variable).unwrap_or_else(|_| {
        panic!("{variable} is not set, so the tests have no {service}: {HOW_TO_RUN}")
    });
    let url = Url::parse(&raw)
        .unwrap_or_else(|error| panic!("{variable}={raw} is not a URL ({error}): {HOW_TO_RUN}"));
    let host = url
        .host_str()
        .unwrap_or_else(|| panic!("{variable}={raw} names no host: {HOW_TO_RUN}"));
    let port = url.port().unwrap_or(default_port);
    let reachable = (host, port)
        .to_socket_addrs()
        .into_iter()
        .flatten()
        .any(|address| TcpStream::connect_timeout(&address, Duration::from_secs(2)).is_ok());
    assert!(
        reachable,
        "cannot reach {service} at {variable}={raw}: {HOW_TO_RUN}"
    );
    raw
}
