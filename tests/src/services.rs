//! The Redis and Postgres that `scripts/test.sh` provides, shared by every test.
//!
//! Tests run in parallel against the same servers, so each one isolates itself: a unique
//! Redis key prefix from [`unique_prefix`] (never `FLUSHDB`), and, when it needs a clean
//! ledger, a database of its own from [`fresh_database`] or [`fresh_migrated_database`].
//! A test that cannot reach a service fails with a message naming the command that
//! provides it; it never skips silently.

use std::net::{TcpStream, ToSocketAddrs};
use std::sync::OnceLock;
use std::time::Duration;

use sqlx::{AssertSqlSafe, Connection, PgConnection};
use url::Url;

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

/// Creates an empty database with a unique name (`upkeep_test_<uuid>`) on the server
/// `admin_url` points at, and returns its URL. The database is left behind; its name
/// marks it as disposable.
///
/// # Panics
/// Panics when the server cannot be reached or refuses `CREATE DATABASE`.
pub async fn fresh_database(admin_url: &str) -> String {
    let name = format!("upkeep_test_{}", uuid::Uuid::new_v4().simple());
    let mut connection = PgConnection::connect(admin_url)
        .await
        .unwrap_or_else(|error| panic!("cannot connect to {admin_url}: {error}; {HOW_TO_RUN}"));
    // The name is ours: lowercase letters, digits and underscores only.
    sqlx::raw_sql(AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
        .execute(&mut connection)
        .await
        .unwrap_or_else(|error| panic!("cannot create database {name} via {admin_url}: {error}"));
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
