//! Each daemon under a fake systemd, started the way its unit starts it: `READY=1` only after
//! Redis, Postgres and the schema answered; `WATCHDOG=1` at half the interval while the main
//! loop makes progress and not while it is stuck on Redis; `STOPPING=1` and exit 0 on SIGTERM
//! within the unit's `TimeoutStopSec`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use upkeep_tests::{
    PrivateRedis, ProxyMode, TcpProxy, fresh_migrated_database, shared_database_url,
    shared_redis_url, unique_prefix,
};

use crate::support::{Files, Launch, NotifySocket, Unit, start_as_unit};

/// The fake systemd's `WatchdogSec`: pings are due every 1.5s, and withheld once the main
/// loop's last progress is 1.5s old. The units say 30s; the pace scales with it.
const WATCHDOG: Duration = Duration::from_secs(3);

/// Generous bounds for a loaded machine.
const READY_WITHIN: Duration = Duration::from_secs(20);

fn shared_redis_addr() -> SocketAddr {
    let url = url::Url::parse(&shared_redis_url()).expect("REDIS_URL parses");
    let host = url.host_str().unwrap_or("127.0.0.1");
    let host = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    format!("{host}:{}", url.port().unwrap_or(6379))
        .parse()
        .expect("REDIS_URL names an IP address and port")
}

/// Asserts that SIGTERM gives `STOPPING=1` and an exit with code 0 within `unit`'s
/// `TimeoutStopSec`.
fn assert_stops_cleanly(
    daemon: &mut upkeep_tests::ChildProcess,
    notify: &NotifySocket,
    unit: &str,
) {
    let timeout = Unit::read(unit).timeout_stop;
    let asked = Instant::now();
    daemon.sigterm().expect("sending SIGTERM");
    let status = daemon
        .wait_timeout(timeout)
        .unwrap_or_else(|| panic!("{unit} did not exit within TimeoutStopSec={timeout:?}"));
    assert_eq!(status.code(), Some(0), "{unit} exit status {status}");
    let stopping = notify.wait_for("STOPPING=1", Duration::from_secs(1));
    assert!(stopping >= asked, "STOPPING=1 before SIGTERM");
}

/// Asserts pings arrive about every half interval over `window` (at least 2, at most one
/// more than the interval allows).
fn assert_ping_pace(notify: &NotifySocket, window: Duration) {
    let from = Instant::now();
    std::thread::sleep(window);
    let pings = notify.pings_between(from, Instant::now());
    let expected = window.as_secs_f64() / (WATCHDOG.as_secs_f64() / 2.0);
    assert!(
        pings.len() >= 2 && (pings.len() as f64) <= expected + 1.0,
        "{} WATCHDOG=1 in {window:?} at a {WATCHDOG:?} interval (expected about {expected:.0})",
        pings.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_scheduler_is_ready_only_once_redis_answers_and_pings_only_while_its_loop_progresses() {
    let database_url = fresh_migrated_database(&shared_database_url()).await;
    // A tick every second, so each pass that fires one needs Redis.
    let files = Files::new(&format!(
        r#"
[redis]
key_prefix = "{}"
[[schedules]]
name = "every-second"
cron = "* * * * * *"
kind = "system.ping"
"#,
        unique_prefix()
    ));
    let proxy = TcpProxy::start(shared_redis_addr()).expect("starting the proxy");
    proxy.set_mode(ProxyMode::Refuse);
    let notify = NotifySocket::bind();
    let launch = Launch {
        config: &files.config(),
        credentials: &files.credentials(),
        database_url: &database_url,
        redis_url: &proxy.redis_url(),
        notify: &notify,
        watchdog: WATCHDOG,
    };
    let mut scheduler = start_as_unit("upkeep-scheduler@.service", &launch);

    // Redis refuses: the scheduler says what it waits for, and is not ready.
    std::thread::sleep(Duration::from_secs(3));
    assert!(notify.first("READY=1").is_none(), "{:?}", notify.notices());
    assert!(
        notify
            .notices()
            .iter()
            .any(|n| n.status().is_some_and(|s| s.contains("redis"))),
        "no STATUS= naming redis while waiting: {:?}",
        notify.notices()
    );
    let redis_back = Instant::now();
    proxy.set_mode(ProxyMode::Forward);
    let ready = notify.wait_for("READY=1", READY_WITHIN);
    assert!(ready > redis_back, "READY=1 before Redis answered");

    assert_ping_pace(&notify, Duration::from_secs(5));
    assert!(
        notify
            .notices()
            .iter()
            .any(|n| n.status().is_some_and(|s| s.contains("last tick pass"))),
        "no STATUS= with the last pass: {:?}",
        notify.notices()
    );

    // Redis stops answering (a partition): the tick's enqueue hangs, the loop makes no
    // progress, and the pings stop until Redis is back.
    let partition = Instant::now();
    proxy.set_mode(ProxyMode::Blackhole);
    std::thread::sleep(Duration::from_secs(7));
    let during = notify.pings_between(partition + Duration::from_secs(3), Instant::now());
    assert!(
        during.is_empty(),
        "{} WATCHDOG=1 while the loop was stuck on Redis",
        during.len()
    );
    let healed = Instant::now();
    proxy.set_mode(ProxyMode::Forward);
    std::thread::sleep(Duration::from_secs(8));
    assert!(
        !notify.pings_between(healed, Instant::now()).is_empty(),
        "the pings did not resume after Redis came back"
    );
    assert!(
        scheduler.log().contains("withholding watchdog pings"),
        "{}",
        scheduler.log()
    );

    assert_stops_cleanly(&mut scheduler, &notify, "upkeep-scheduler@.service");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_withholds_watchdog_pings_while_redis_is_paused_and_resumes_after() {
    let database_url = fresh_migrated_database(&shared_database_url()).await;
    let redis = PrivateRedis::start().expect("starting a private Redis");
    let files = Files::new(&format!("[redis]\nkey_prefix = \"{}\"\n", unique_prefix()));
    let notify = NotifySocket::bind();
    let launch = Launch {
        config: &files.config(),
        credentials: &files.credentials(),
        database_url: &database_url,
        redis_url: &redis.url(),
        notify: &notify,
        watchdog: WATCHDOG,
    };
    let mut worker = start_as_unit("upkeep-worker-reports.service", &launch);
    notify.wait_for("READY=1", READY_WITHIN);
    assert_ping_pace(&notify, Duration::from_secs(4));

    let paused = Instant::now();
    redis.pause(6_000).expect("CLIENT PAUSE");
    std::thread::sleep(Duration::from_secs(6));
    let during = notify.pings_between(paused + Duration::from_secs(3), Instant::now());
    assert!(
        during.is_empty(),
        "{} WATCHDOG=1 while Redis was paused",
        during.len()
    );
    let resumed = Instant::now();
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        !notify.pings_between(resumed, Instant::now()).is_empty(),
        "the pings did not resume after the pause: {:?}",
        notify.notices()
    );

    assert_stops_cleanly(&mut worker, &notify, "upkeep-worker-reports.service");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_other_unit_is_ready_pings_at_pace_and_stops_cleanly_on_sigterm() {
    let database_url = fresh_migrated_database(&shared_database_url()).await;
    let port = upkeep_tests::free_port();
    let files = Files::new(&format!(
        "[redis]\nkey_prefix = \"{}\"\n[api]\naddr = \"127.0.0.1:{port}\"\n",
        unique_prefix()
    ));
    let redis_url = shared_redis_url();
    let units = [
        "upkeep-worker-backup.service",
        "upkeep-worker-logs.service",
        "upkeep-worker-tokens.service",
        "upkeep-api.service",
    ];
    let sockets: Vec<NotifySocket> = units.iter().map(|_| NotifySocket::bind()).collect();
    let mut daemons: Vec<_> = units
        .iter()
        .zip(&sockets)
        .map(|(unit, notify)| {
            let launch = Launch {
                config: &files.config(),
                credentials: &files.credentials(),
                database_url: &database_url,
                redis_url: &redis_url,
                notify,
                watchdog: WATCHDOG,
            };
            start_as_unit(unit, &launch)
        })
        .collect();
    for (unit, notify) in units.iter().zip(&sockets) {
        let ready = notify.wait_for("READY=1", READY_WITHIN);
        let status = notify
            .notices()
            .iter()
            .filter(|n| n.at >= ready)
            .find_map(|n| n.status().map(str::to_owned));
        assert!(status.is_some(), "{unit}: no STATUS= with READY=1");
    }
    let from = Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    for (unit, notify) in units.iter().zip(&sockets) {
        let pings = notify.pings_between(from, Instant::now());
        assert!(
            (2..=5).contains(&pings.len()),
            "{unit}: {} WATCHDOG=1 in 5s at a {WATCHDOG:?} interval",
            pings.len()
        );
    }
    // The API's token came from its credential file (%d/api_token): a request with it works.
    assert_eq!(http_status(port, "not-the-token").await, 401);
    assert_eq!(
        http_status(port, "deploy-test-token").await,
        200,
        "the API did not accept the credential's token"
    );
    for ((unit, notify), daemon) in units.iter().zip(&sockets).zip(daemons.iter_mut()) {
        assert_stops_cleanly(daemon, notify, unit);
    }
}

/// The status code of `GET /api/v1/queues/stats` with `token`, over a plain socket.
async fn http_status(port: u16, token: &str) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connecting to the API");
    let request = format!(
        "GET /api/v1/queues/stats HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("sending");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("reading");
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_daemon_exits_3_when_redis_stays_away_past_the_startup_timeout_and_2_on_a_bad_config() {
    let database_url = fresh_migrated_database(&shared_database_url()).await;
    let files = Files::new("[daemons]\nstartup_timeout = \"2s\"\n");
    let notify = NotifySocket::bind();
    let launch = Launch {
        config: &files.config(),
        credentials: &files.credentials(),
        database_url: &database_url,
        // Nothing listens there.
        redis_url: &format!("redis://127.0.0.1:{}/", upkeep_tests::free_port()),
        notify: &notify,
        watchdog: WATCHDOG,
    };
    let mut worker = start_as_unit("upkeep-worker-logs.service", &launch);
    let status = worker
        .wait_timeout(Duration::from_secs(20))
        .expect("the worker gave up");
    assert_eq!(status.code(), Some(3), "{}", worker.log());
    assert!(worker.log().contains("redis"), "{}", worker.log());
    assert!(notify.first("READY=1").is_none());

    std::fs::write(files.config(), "[daemons]\nstartup_timeout = \"0s\"\n").expect("writing");
    let mut api = start_as_unit("upkeep-api.service", &launch);
    let status = api
        .wait_timeout(Duration::from_secs(10))
        .expect("the API refused its config");
    assert_eq!(status.code(), Some(2), "{}", api.log());
    assert!(
        api.log().contains("daemons.startup_timeout"),
        "{}",
        api.log()
    );
}

#[test]
fn every_daemon_prints_its_version_with_the_commit_and_documents_its_exit_codes() {
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    for binary in [
        "upkeep-scheduler",
        "upkeep-api",
        "upkeep-worker-backup",
        "upkeep-worker-logs",
        "upkeep-worker-tokens",
        "upkeep-worker-reports",
    ] {
        let version = std::process::Command::new(upkeep_tests::cargo_bin(binary))
            .arg("--version")
            .output()
            .expect("running --version");
        let text = String::from_utf8_lossy(&version.stdout);
        assert!(version.status.success(), "{binary}: {text}");
        assert!(text.starts_with(&format!("{binary} ")), "{text}");
        // A release build names a commit like HEAD's (it may predate the newest one) in a
        // checkout with git, and "unknown" only without one; a debug build, like this test's
        // binaries, says "dev" (shared/build.rs: it does not rebuild on every commit).
        let built_from = text
            .trim()
            .strip_suffix(')')
            .and_then(|t| t.rsplit_once("(commit "))
            .map(|(_, c)| c.to_owned())
            .unwrap_or_else(|| panic!("no (commit …) in {text:?}"));
        match &commit {
            _ if cfg!(debug_assertions) => assert_eq!(built_from, "dev", "{binary}: {text}"),
            Some(head) => assert!(
                built_from.len() >= 7 && built_from.chars().all(|c| c.is_ascii_hexdigit()),
                "{binary} names commit {built_from:?}; HEAD is {head}"
            ),
            None => assert_eq!(built_from, "unknown"),
        }
        let help = std::process::Command::new(upkeep_tests::cargo_bin(binary))
            .arg("--help")
            .output()
            .expect("running --help");
        let text = String::from_utf8_lossy(&help.stdout);
        for code in ["  0  ", "  1  ", "  2  ", "  3  "] {
            assert!(
                text.contains(code),
                "{binary} --help lacks exit code {code:?}:\n{text}"
            );
        }
        let bad = std::process::Command::new(upkeep_tests::cargo_bin(binary))
            .arg("--no-such-flag")
            .output()
            .expect("running with a bad flag");
        assert_eq!(bad.status.code(), Some(2), "{binary}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_makes_the_scheduler_reconcile_its_schedules_with_the_edited_file() {
    use sqlx::Connection as _;
    let database_url = fresh_migrated_database(&shared_database_url()).await;
    let prefix = unique_prefix();
    let schedule = |name: &str| {
        format!(
            "[redis]\nkey_prefix = \"{prefix}\"\n[[schedules]]\nname = \"{name}\"\ncron = \"0 0 3 * * *\"\nkind = \"system.ping\"\n"
        )
    };
    let files = Files::new(&schedule("before"));
    let notify = NotifySocket::bind();
    let launch = Launch {
        config: &files.config(),
        credentials: &files.credentials(),
        database_url: &database_url,
        redis_url: &shared_redis_url(),
        notify: &notify,
        watchdog: WATCHDOG,
    };
    let mut scheduler = start_as_unit("upkeep-scheduler@.service", &launch);
    notify.wait_for("READY=1", READY_WITHIN);
    let mut ledger = sqlx::PgConnection::connect(&database_url)
        .await
        .expect("connecting to the ledger");
    let in_config = async |ledger: &mut sqlx::PgConnection| -> Vec<String> {
        sqlx::query_scalar("SELECT name FROM schedules WHERE in_config ORDER BY name")
            .fetch_all(ledger)
            .await
            .expect("reading schedules")
    };
    upkeep_tests::eventually("the first reconcile", Duration::from_secs(10), async || {
        (in_config(&mut ledger).await == ["before"]).then_some(())
    })
    .await;

    // A file with a problem is refused and the running schedules kept.
    std::fs::write(files.config(), "[[schedules]]\nname = \"broken\"\n").expect("writing");
    let pid = nix::unistd::Pid::from_raw(i32::try_from(scheduler.pid()).expect("a pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
    assert!(
        scheduler.wait_for_log("keeping the running configuration", Duration::from_secs(10)),
        "{}",
        scheduler.log()
    );
    std::fs::write(files.config(), schedule("after")).expect("writing");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).expect("SIGHUP");
    upkeep_tests::eventually(
        "the reconcile after SIGHUP",
        Duration::from_secs(15),
        async || (in_config(&mut ledger).await == ["after"]).then_some(()),
    )
    .await;
    assert!(scheduler.is_running(), "{}", scheduler.log());
    assert_stops_cleanly(&mut scheduler, &notify, "upkeep-scheduler@.service");
}
