//! `upkeepctl doctor` against a healthy deployment (exit 0, every check ok) and a broken one
//! (an evicting Redis without persistence, unreachable targets, a report database without
//! `pg_stat_statements`): exit 1, each problem named on its own line with a fix hint.

use std::process::{Command, Output};

use sqlx::{Connection as _, PgConnection};
use upkeep_tests::{
    PrivatePostgres, PrivateRedis, RedisOptions, cargo_bin, free_port, fresh_migrated_database,
    shared_database_url,
};

fn doctor(config: &str, database_url: &str, redis_url: &str) -> (Output, String) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("upkeep.toml");
    std::fs::write(&path, config).expect("writing upkeep.toml");
    let mut command = Command::new(cargo_bin("upkeepctl"));
    for (key, _) in std::env::vars() {
        if key.starts_with("UPKEEP") || key == "RUST_LOG" {
            command.env_remove(key);
        }
    }
    let output = command
        .arg("doctor")
        .env("UPKEEP_CONFIG", &path)
        .env("DATABASE_URL", database_url)
        .env("REDIS_URL", redis_url)
        .output()
        .expect("running upkeepctl doctor");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output, text)
}

async fn execute(url: &str, sql: &str) {
    let mut conn = PgConnection::connect(url).await.expect("connecting");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut conn)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"));
    conn.close().await.expect("closing");
}

/// The line of check `name`, asserting its verdict.
fn assert_line(text: &str, verdict: &str, name: &str) {
    assert!(
        text.lines()
            .any(|line| line.starts_with(verdict) && line.split_whitespace().nth(1) == Some(name)),
        "no {verdict:?} line for {name} in:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_passes_a_healthy_deployment_with_every_check_ok() {
    let database_url = fresh_migrated_database(&shared_database_url()).await;
    let redis = PrivateRedis::start_with(RedisOptions::default().appendonly(true))
        .expect("a private Redis with AOF");
    let mut postgres = PrivatePostgres::start().expect("a private Postgres");
    execute(
        &postgres.url(),
        "ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'",
    )
    .await;
    postgres
        .restart()
        .expect("restarting with pg_stat_statements");
    execute(&postgres.url(), "CREATE EXTENSION pg_stat_statements").await;
    let endpoint = std::net::TcpListener::bind("127.0.0.1:0").expect("a token endpoint");
    let backups = tempfile::tempdir().expect("a backup directory");
    let config = format!(
        r#"
[backups]
directory = "{backups}"
[[backups.databases]]
name = "ledger"
url = "{database_url}"
[[reports.databases]]
name = "app"
url = "{reports}"
[[tokens.providers]]
name = "idp"
token_url = "http://127.0.0.1:{port}/token"
client_id = "upkeep"
client_secret = "s"
"#,
        backups = backups.path().display(),
        reports = postgres.url(),
        port = endpoint.local_addr().expect("an address").port(),
    );

    let (output, text) = doctor(&config, &database_url, &redis.url());

    assert_eq!(output.status.code(), Some(0), "{text}");
    for name in [
        "redis.reachable",
        "redis.eviction_policy",
        "redis.persistence",
        "postgres.reachable",
        "postgres.schema",
        "backups.target[ledger]",
        "reports.target[app]",
        "reports.pg_stat_statements[app]",
        "tokens.endpoint[idp]",
        "clock.skew",
    ] {
        assert_line(&text, "ok", name);
    }
    // Writable either way; a warning when this machine's disk is nearly full (a warning does
    // not fail the doctor).
    assert!(
        text.lines()
            .any(|l| l.contains("backups.directory") && l.contains("is writable")),
        "{text}"
    );
    assert!(!text.contains("FAIL"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn doctor_fails_a_broken_deployment_naming_each_problem_with_a_hint() {
    let database_url = fresh_migrated_database(&shared_database_url()).await;
    // Evicting, and no persistence at all.
    let redis = PrivateRedis::start_with(
        RedisOptions::default()
            .arg("--maxmemory-policy")
            .arg("allkeys-lru")
            .arg("--maxmemory")
            .arg("100mb"),
    )
    .expect("a private Redis");
    // A fresh database has no pg_stat_statements extension.
    let unmonitored = fresh_migrated_database(&shared_database_url()).await;
    let nothing_listens = free_port();
    let config = format!(
        r#"
[backups]
directory = "/nonexistent/upkeep-backups"
[[backups.databases]]
name = "gone"
url = "postgres://postgres@127.0.0.1:{nothing_listens}/app"
[[reports.databases]]
name = "plain"
url = "{unmonitored}"
[[tokens.providers]]
name = "idp"
token_url = "http://127.0.0.1:{nothing_listens}/token"
client_id = "upkeep"
client_secret = "s"
"#
    );

    let (output, text) = doctor(&config, &database_url, &redis.url());

    assert_eq!(output.status.code(), Some(1), "{text}");
    for name in [
        "redis.eviction_policy",
        "redis.persistence",
        "backups.target[gone]",
        "reports.pg_stat_statements[plain]",
        "backups.directory",
        "tokens.endpoint[idp]",
    ] {
        assert_line(&text, "FAIL", name);
    }
    assert!(text.contains("allkeys-lru"), "{text}");
    assert!(
        text.contains("-> CONFIG SET maxmemory-policy noeviction"),
        "{text}"
    );
    // What works is still said to work.
    assert_line(&text, "ok", "postgres.schema");
    assert!(text.contains("check(s) failed"), "{text}");
}
