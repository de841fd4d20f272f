//! The test harness itself: private Redis and Postgres instances survive what the system
//! tests put them through, child processes are observable and stoppable, and the shared
//! services are reachable.

use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection};
use upkeep_tests::{
    AppendFsync, ChildProcess, PrivatePostgres, PrivateRedis, RedisOptions, fresh_database,
    shared_database_url, shared_redis_url, unique_prefix,
};

#[test]
fn a_private_redis_with_appendfsync_always_keeps_a_key_across_kill9_and_restart() {
    let mut redis = PrivateRedis::start_with(
        RedisOptions::default()
            .appendonly(true)
            .appendfsync(AppendFsync::Always),
    )
    .expect("private redis starts");
    let port = redis.port();
    let mut connection = redis.client().get_connection().expect("connect");
    redis::cmd("SET")
        .arg("survivor")
        .arg("still here")
        .query::<()>(&mut connection)
        .expect("SET");
    drop(connection);

    redis.kill9().expect("kill -9");
    assert!(!redis.is_up(), "the server is gone after kill -9");
    redis.restart().expect("restart");

    assert_eq!(redis.port(), port, "a restart keeps the port");
    let mut connection = redis.client().get_connection().expect("reconnect");
    let value: Option<String> = redis::cmd("GET")
        .arg("survivor")
        .query(&mut connection)
        .expect("GET");
    assert_eq!(value.as_deref(), Some("still here"));
}

#[test]
fn a_private_redis_without_persistence_forgets_keys_on_restart() {
    let mut redis = PrivateRedis::start().expect("private redis starts");
    let mut connection = redis.client().get_connection().expect("connect");
    redis::cmd("SET")
        .arg("ephemeral")
        .arg("1")
        .query::<()>(&mut connection)
        .expect("SET");
    drop(connection);

    redis.restart().expect("restart");

    let mut connection = redis.client().get_connection().expect("reconnect");
    let value: Option<String> = redis::cmd("GET")
        .arg("ephemeral")
        .query(&mut connection)
        .expect("GET");
    assert_eq!(value, None);
}

#[test]
fn a_paused_private_redis_answers_only_after_the_pause() {
    let redis = PrivateRedis::start().expect("private redis starts");
    let mut connection = redis.client().get_connection().expect("connect");

    redis.pause(400).expect("CLIENT PAUSE");
    let started = Instant::now();
    let pong: String = redis::cmd("PING").query(&mut connection).expect("PING");

    assert_eq!(pong, "PONG");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "PING answered after {:?}, inside the pause",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_private_postgres_keeps_a_table_across_stop_and_restart() {
    let mut postgres = PrivatePostgres::start().expect("private postgres starts");
    let mut connection = PgConnection::connect(&postgres.url())
        .await
        .expect("connect");
    sqlx::raw_sql("CREATE TABLE survivors (name text); INSERT INTO survivors VALUES ('ledger')")
        .execute(&mut connection)
        .await
        .expect("create and fill a table");
    connection.close().await.expect("close");

    postgres.stop().expect("stop");
    assert!(
        PgConnection::connect(&postgres.url()).await.is_err(),
        "a stopped server refuses connections"
    );
    postgres.restart().expect("start again");

    let mut connection = PgConnection::connect(&postgres.url())
        .await
        .expect("reconnect");
    let names: Vec<String> = sqlx::query_scalar("SELECT name FROM survivors")
        .fetch_all(&mut connection)
        .await
        .expect("read the table");
    assert_eq!(names, ["ledger"]);
}

#[tokio::test]
async fn a_private_postgres_recovers_committed_rows_after_an_immediate_stop() {
    let mut postgres = PrivatePostgres::start().expect("private postgres starts");
    let mut connection = PgConnection::connect(&postgres.url())
        .await
        .expect("connect");
    sqlx::raw_sql("CREATE TABLE runs (id int); INSERT INTO runs SELECT generate_series(1, 100)")
        .execute(&mut connection)
        .await
        .expect("create and fill a table");
    drop(connection);

    postgres.stop_immediate().expect("immediate stop");
    postgres.restart().expect("start again with crash recovery");

    let mut connection = PgConnection::connect(&postgres.url())
        .await
        .expect("reconnect");
    let n_runs: i64 = sqlx::query_scalar("SELECT count(*) FROM runs")
        .fetch_one(&mut connection)
        .await
        .expect("count");
    assert_eq!(n_runs, 100);
}

#[test]
fn a_child_process_log_is_readable_and_sigterm_ends_it() {
    let mut command = Command::new("sh");
    command.args([
        "-c",
        "echo ready; echo oops >&2; trap 'echo stopping; exit 3' TERM; \
         while :; do sleep 0.05; done",
    ]);
    let mut child = ChildProcess::spawn("sh-loop", command).expect("spawn");

    assert!(
        child.wait_for_log("ready", Duration::from_secs(10)),
        "log: {}",
        child.log()
    );
    assert!(child.log().contains("oops"), "stderr goes to the same log");
    assert!(child.is_running());
    assert_eq!(child.wait_timeout(Duration::from_millis(100)), None);

    child.sigterm().expect("SIGTERM");
    let status = child
        .wait_timeout(Duration::from_secs(10))
        .expect("exits after SIGTERM");

    assert_eq!(status.code(), Some(3));
    assert!(child.log().contains("stopping"));
    assert!(
        child.sigterm().is_err(),
        "an exited process is not signalled again"
    );
}

#[test]
fn kill9_ends_a_child_process_that_ignores_sigterm() {
    let mut command = Command::new("sh");
    command.args([
        "-c",
        "trap '' TERM; echo ready; while :; do sleep 0.05; done",
    ]);
    let mut child = ChildProcess::spawn("stubborn", command).expect("spawn");
    assert!(child.wait_for_log("ready", Duration::from_secs(10)));

    child.sigterm().expect("SIGTERM");
    assert_eq!(
        child.wait_timeout(Duration::from_millis(300)),
        None,
        "SIGTERM is ignored"
    );
    let status = child.kill9().expect("kill -9");

    assert_eq!(status.signal(), Some(9));
}

#[tokio::test]
async fn fresh_databases_are_distinct_and_reachable() {
    let admin_url = shared_database_url();

    let first = fresh_database(&admin_url).await;
    let second = fresh_database(&admin_url).await;

    assert_ne!(first, second);
    for url in [first, second] {
        let mut connection = PgConnection::connect(&url).await.expect("connect");
        let current: String = sqlx::query_scalar("SELECT current_database()")
            .fetch_one(&mut connection)
            .await
            .expect("query");
        assert!(url.ends_with(&current), "{url} names database {current}");
    }
}

#[test]
fn the_shared_redis_answers_and_prefixes_are_unique() {
    let client = redis::Client::open(shared_redis_url()).expect("valid REDIS_URL");
    let mut connection = client.get_connection().expect("connect to REDIS_URL");
    let prefix = unique_prefix();
    let key = format!("{prefix}:harness");

    redis::cmd("SET")
        .arg(&key)
        .arg("1")
        .arg("EX")
        .arg(60)
        .query::<()>(&mut connection)
        .expect("SET");
    let deleted: i64 = redis::cmd("DEL")
        .arg(&key)
        .query(&mut connection)
        .expect("DEL");

    assert_eq!(deleted, 1);
    assert!(prefix.starts_with("t-") && prefix.len() == 14, "{prefix}");
    assert_ne!(prefix, unique_prefix());
}

#[test]
fn cargo_bin_finds_the_built_operator_cli() {
    let path = upkeep_tests::cargo_bin("upkeepctl");

    assert!(path.is_file(), "{}", path.display());
    assert!(path.ends_with("upkeepctl"));
}

/// Set in the copy of the test binary that the next test starts and kills.
const VICTIM_ENV: &str = "UPKEEP_HARNESS_VICTIM";

#[test]
fn private_servers_die_with_a_test_process_killed_before_its_drops_run() {
    if std::env::var_os(VICTIM_ENV).is_some() {
        // The victim: start both servers, say where they are, wait to be killed.
        let redis = PrivateRedis::start().expect("private redis starts");
        let postgres = PrivatePostgres::start().expect("private postgres starts");
        println!(
            "victim redis={} {} postgres={} {}",
            redis.port(),
            redis.dir().display(),
            postgres.port(),
            postgres.dir().display()
        );
        std::thread::sleep(Duration::from_secs(120));
        return;
    }
    let mut command = Command::new(std::env::current_exe().expect("test binary path"));
    command
        .args([
            "--exact",
            "harness::private_servers_die_with_a_test_process_killed_before_its_drops_run",
            "--nocapture",
        ])
        .env(VICTIM_ENV, "1");
    let mut victim = ChildProcess::spawn("victim", command).expect("start the victim");
    assert!(
        victim.wait_for_log("victim redis=", Duration::from_secs(60)),
        "the victim did not start its servers:\n{}",
        victim.log()
    );
    let log = victim.log();
    let line = log
        .lines()
        .find(|line| line.starts_with("victim redis="))
        .expect("the line waited for");
    let fields: Vec<&str> = line.split([' ', '=']).collect();
    let (redis_port, redis_dir) = (fields[2].parse::<u16>().expect("port"), fields[3]);
    let (postgres_port, postgres_dir) = (fields[5].parse::<u16>().expect("port"), fields[6]);
    assert!(accepts_tcp(redis_port) && accepts_tcp(postgres_port));

    // Only the victim itself, not its process group: the servers must go because their
    // parent did, not because they were signalled too.
    let victim_pid = nix::unistd::Pid::from_raw(victim.pid().try_into().expect("pid"));
    nix::sys::signal::kill(victim_pid, nix::sys::signal::Signal::SIGKILL).expect("kill -9");
    assert!(victim.wait_timeout(Duration::from_secs(10)).is_some());

    let deadline = Instant::now() + Duration::from_secs(10);
    while (accepts_tcp(redis_port) || accepts_tcp(postgres_port)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let redis_gone = !accepts_tcp(redis_port);
    let postgres_gone = !accepts_tcp(postgres_port);
    // The victim's Drops never ran, so its directories are ours to remove.
    let _ = std::fs::remove_dir_all(redis_dir);
    let _ = std::fs::remove_dir_all(postgres_dir);
    assert!(
        redis_gone,
        "redis-server on {redis_port} outlived the killed test"
    );
    assert!(
        postgres_gone,
        "postgres on {postgres_port} outlived the killed test"
    );
}

fn accepts_tcp(port: u16) -> bool {
    let address = std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port));
    std::net::TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok()
}
