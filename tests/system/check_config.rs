//! `--check-config` on every daemon and `upkeepctl config check|show`: they validate the real
//! configuration, exit 0 or 2 naming every bad key, and connect to nothing (the database and
//! Redis URLs point at a listener of this test, which must see no connection).

use std::net::TcpListener;
use std::process::{Command, Output};

use upkeep_tests::cargo_bin;

/// Every daemon binary.
const DAEMONS: [&str; 6] = [
    "upkeep-api",
    "upkeep-scheduler",
    "upkeep-worker-backup",
    "upkeep-worker-logs",
    "upkeep-worker-tokens",
    "upkeep-worker-reports",
];

const GOOD: &str = r#"
[queues.reports]
concurrency = 2

[[schedules]]
name = "ping"
cron = "*/5 * * * * *"
kind = "system.ping"
"#;

/// Two problems in two sections (reported at once), one of them from the environment.
const BAD: &str = r#"
[queues.reports]
concurrency = 0

[worker]
grace_period = "soon"
"#;

/// A listener standing in for Postgres and Redis: anything that connects shows up here.
struct Trap {
    listener: TcpListener,
    url_port: u16,
}

impl Trap {
    fn new() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a trap listener");
        listener.set_nonblocking(true).expect("non-blocking");
        let url_port = listener.local_addr().expect("local address").port();
        Self { listener, url_port }
    }

    fn assert_untouched(&self, what: &str) {
        match self.listener.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Ok((_, peer)) => panic!("{what} connected to a server (from {peer})"),
            Err(e) => panic!("accept failed: {e}"),
        }
    }
}

fn run(
    binary: &str,
    args: &[&str],
    config: &std::path::Path,
    trap: &Trap,
    extra: &[(&str, &str)],
) -> Output {
    let mut command = Command::new(cargo_bin(binary));
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("UPKEEP_CONFIG", config)
        .env(
            "DATABASE_URL",
            format!(
                "postgres://upkeep:s3cr3t-pw@127.0.0.1:{}/upkeep",
                trap.url_port
            ),
        )
        .env(
            "REDIS_URL",
            format!("redis://:s3cr3t-pw@127.0.0.1:{}/", trap.url_port),
        )
        .env("UPKEEP_API_TOKEN", "s3cr3t-token");
    for (name, value) in extra {
        command.env(name, value);
    }
    command.output().expect("run the binary")
}

fn text(output: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn check_config_on_every_daemon_exits_0_or_2_naming_every_bad_key_and_connects_to_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = dir.path().join("good.toml");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&good, GOOD).unwrap();
    std::fs::write(&bad, BAD).unwrap();
    let trap = Trap::new();

    for binary in DAEMONS {
        let ok = run(binary, &["--check-config"], &good, &trap, &[]);
        assert_eq!(
            ok.status.code(),
            Some(0),
            "{binary} good config: {}",
            text(&ok)
        );
        assert!(
            String::from_utf8_lossy(&ok.stdout).contains("configuration OK"),
            "{binary}: {}",
            text(&ok)
        );

        let failed = run(
            binary,
            &["--check-config"],
            &bad,
            &trap,
            &[("UPKEEP__MAINTENANCE__RECONCILE_GRACE", "10ms")],
        );
        let output = text(&failed);
        assert_eq!(
            failed.status.code(),
            Some(2),
            "{binary} bad config: {output}"
        );
        for expected in [
            "3 problems",
            "queues.reports.concurrency: must be between 1 and 10000, got 0 (at",
            "bad.toml:3)",
            "worker.grace_period: expected a duration",
            "\"soon\"",
            "maintenance.reconcile_grace (from UPKEEP__MAINTENANCE__RECONCILE_GRACE): must be at least 1s",
        ] {
            assert!(
                output.contains(expected),
                "{binary} lacks {expected:?}: {output}"
            );
        }
        assert!(
            !output.contains("s3cr3t"),
            "{binary} shows a secret: {output}"
        );
        trap.assert_untouched(binary);
    }
}

#[test]
fn upkeepctl_config_check_takes_a_file_and_config_show_redacts_every_secret() {
    let dir = tempfile::tempdir().expect("temp dir");
    let good = dir.path().join("good.toml");
    let bad = dir.path().join("bad.toml");
    std::fs::write(&good, GOOD).unwrap();
    std::fs::write(&bad, BAD).unwrap();
    let trap = Trap::new();
    let key = "CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQk=";

    // The file argument wins over UPKEEP_CONFIG.
    let checked = run(
        "upkeepctl",
        &["config", "check", bad.to_str().unwrap()],
        &good,
        &trap,
        &[],
    );
    assert_eq!(checked.status.code(), Some(2), "{}", text(&checked));
    assert!(
        text(&checked).contains("queues.reports.concurrency"),
        "{}",
        text(&checked)
    );
    let checked = run("upkeepctl", &["config", "check"], &good, &trap, &[]);
    assert_eq!(checked.status.code(), Some(0), "{}", text(&checked));

    let shown = run(
        "upkeepctl",
        &["config", "show", "--json"],
        &good,
        &trap,
        &[("UPKEEP_SECRET_KEY", key)],
    );
    let output = text(&shown);
    assert_eq!(shown.status.code(), Some(0), "{output}");
    assert!(
        !output.contains("s3cr3t"),
        "config show leaks a secret: {output}"
    );
    assert!(
        !output.contains(key),
        "config show leaks the secret key: {output}"
    );
    let settings: serde_json::Value =
        serde_json::from_slice(&shown.stdout).expect("config show --json prints JSON");
    let find = |key: &str| {
        settings
            .as_array()
            .and_then(|all| all.iter().find(|s| s["key"] == key))
            .cloned()
            .unwrap_or_else(|| panic!("{key} missing: {output}"))
    };
    let port = trap.url_port;
    assert_eq!(
        find("database.url")["value"],
        format!("postgres://***@127.0.0.1:{port}/upkeep")
    );
    assert_eq!(find("database.url")["source"], "env DATABASE_URL");
    assert_eq!(
        find("redis.url")["value"],
        format!("redis://***@127.0.0.1:{port}/")
    );
    assert_eq!(find("api.token")["value"], "***");
    assert_eq!(find("secret_key")["value"], "***");
    assert_eq!(find("queues.reports.concurrency")["value"], 2);
    assert_eq!(
        find("queues.reports.concurrency")["source"],
        format!("{}:3", good.display())
    );
    assert_eq!(find("schedules[0].cron")["value"], "*/5 * * * * *");

    let plain = run("upkeepctl", &["config", "show"], &good, &trap, &[]);
    assert_eq!(plain.status.code(), Some(0), "{}", text(&plain));
    assert!(
        String::from_utf8_lossy(&plain.stdout).contains("worker.grace_period"),
        "{}",
        text(&plain)
    );
    assert!(!text(&plain).contains("s3cr3t"), "{}", text(&plain));
    trap.assert_untouched("upkeepctl config");
}
