//! What the deploy tests share: a fake service manager ([`NotifySocket`], the datagram socket
//! a daemon's `sd_notify` writes to), the systemd unit files read as data ([`Unit`]), and the
//! daemon started the way its unit starts it ([`start_as_unit`]).

use std::collections::BTreeMap;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use upkeep_tests::{ChildProcess, cargo_bin};

/// The repository root.
pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_owned()
}

/// One datagram received from a daemon, with when it arrived.
#[derive(Debug, Clone)]
pub(crate) struct Notice {
    pub(crate) at: Instant,
    /// The `KEY=value` lines of the datagram.
    pub(crate) lines: Vec<String>,
}

impl Notice {
    pub(crate) fn has(&self, line: &str) -> bool {
        self.lines.iter().any(|l| l == line)
    }

    pub(crate) fn status(&self) -> Option<&str> {
        self.lines.iter().find_map(|l| l.strip_prefix("STATUS="))
    }
}

/// A unix datagram socket standing in for systemd's notify socket: a thread records every
/// datagram until the socket is dropped.
pub(crate) struct NotifySocket {
    path: PathBuf,
    notices: Arc<Mutex<Vec<Notice>>>,
    _dir: TempDir,
}

impl NotifySocket {
    pub(crate) fn bind() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("upkeep-notify-")
            .tempdir()
            .expect("a temporary directory");
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).expect("binding the notify socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("a read timeout");
        let notices = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::downgrade(&notices);
        std::thread::spawn(move || {
            let mut buffer = vec![0_u8; 64 * 1024];
            // Ends when the test drops the socket's owner (the weak reference dies).
            while let Some(notices) = recorded.upgrade() {
                if let Ok(n) = socket.recv(&mut buffer) {
                    let text = String::from_utf8_lossy(&buffer[..n]).into_owned();
                    let lines = text.lines().map(str::to_owned).collect();
                    notices
                        .lock()
                        .expect("the lock is never poisoned")
                        .push(Notice {
                            at: Instant::now(),
                            lines,
                        });
                }
            }
        });
        Self {
            path,
            notices,
            _dir: dir,
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn notices(&self) -> Vec<Notice> {
        self.notices
            .lock()
            .expect("the lock is never poisoned")
            .clone()
    }

    /// When `line` (e.g. `READY=1`) first arrived, if it has.
    pub(crate) fn first(&self, line: &str) -> Option<Instant> {
        self.notices().iter().find(|n| n.has(line)).map(|n| n.at)
    }

    /// Waits up to `timeout` for `line`; returns when it arrived.
    pub(crate) fn wait_for(&self, line: &str, timeout: Duration) -> Instant {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(at) = self.first(line) {
                return at;
            }
            assert!(
                Instant::now() < deadline,
                "no {line} within {timeout:?}; received: {:?}",
                self.notices()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The arrival times of `WATCHDOG=1` pings between `from` and `to`.
    pub(crate) fn pings_between(&self, from: Instant, to: Instant) -> Vec<Instant> {
        self.notices()
            .iter()
            .filter(|n| n.has("WATCHDOG=1") && n.at >= from && n.at <= to)
            .map(|n| n.at)
            .collect()
    }
}

/// A systemd unit of `deploy/systemd`, read as data: what the tests start and how long they
/// give it.
#[derive(Debug)]
pub(crate) struct Unit {
    /// The binary's file name (`ExecStart=` without its directory).
    pub(crate) binary: String,
    /// `ExecStart=` arguments after the binary.
    pub(crate) args: Vec<String>,
    /// `Environment=` assignments, in order (with `%d` unexpanded).
    pub(crate) environment: Vec<(String, String)>,
    /// `TimeoutStopSec=`.
    pub(crate) timeout_stop: Duration,
    /// `WatchdogSec=`.
    pub(crate) watchdog: Duration,
}

impl Unit {
    pub(crate) fn read(name: &str) -> Self {
        let path = repo_root().join("deploy/systemd").join(name);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let mut values: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for line in text.lines().map(str::trim) {
            if line.starts_with('#') || line.starts_with('[') {
                continue;
            }
            if let Some((key, value)) = line.split_once('=') {
                values.entry(key).or_default().push(value);
            }
        }
        let one = |key: &str| -> &str {
            match values.get(key).map(Vec::as_slice) {
                Some([value]) => value,
                other => panic!("{name}: expected one {key}=, got {other:?}"),
            }
        };
        let mut exec = one("ExecStart").split_whitespace();
        let binary = Path::new(exec.next().expect("ExecStart= names a binary"))
            .file_name()
            .expect("a file name")
            .to_string_lossy()
            .into_owned();
        let environment = values
            .get("Environment")
            .into_iter()
            .flatten()
            .flat_map(|assignments| assignments.split_whitespace())
            .map(|assignment| {
                let (key, value) = assignment
                    .split_once('=')
                    .unwrap_or_else(|| panic!("{name}: Environment= entry {assignment:?}"));
                (key.to_owned(), value.to_owned())
            })
            .collect();
        Self {
            binary,
            args: exec.map(str::to_owned).collect(),
            environment,
            timeout_stop: seconds(one("TimeoutStopSec")),
            watchdog: seconds(one("WatchdogSec")),
        }
    }
}

/// `45s` or `45` as a duration (the units use seconds only).
fn seconds(value: &str) -> Duration {
    Duration::from_secs(
        value
            .trim_end_matches('s')
            .parse()
            .unwrap_or_else(|_| panic!("a duration in seconds, got {value:?}")),
    )
}

/// How one test runs a daemon: its config file and credentials directory, the services it
/// reaches, and the fake systemd's watchdog interval.
pub(crate) struct Launch<'a> {
    pub(crate) config: &'a Path,
    /// What `%d` (the unit's credentials directory) stands for.
    pub(crate) credentials: &'a Path,
    pub(crate) database_url: &'a str,
    pub(crate) redis_url: &'a str,
    pub(crate) notify: &'a NotifySocket,
    pub(crate) watchdog: Duration,
}

/// Starts `unit`'s binary with its arguments and `Environment=` (with `%d` expanded and
/// `UPKEEP_CONFIG` pointing at the test's file), `DATABASE_URL` and `REDIS_URL` as its
/// `EnvironmentFile=` would give them, and `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`
/// as systemd sets them. Inherited `UPKEEP*` and `RUST_LOG` variables are removed.
pub(crate) fn start_as_unit(name: &str, launch: &Launch<'_>) -> ChildProcess {
    let unit = Unit::read(name);
    let binary = cargo_bin(&unit.binary);
    // systemd sets WATCHDOG_PID to the main process; `exec` keeps the shell's pid.
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg("WATCHDOG_PID=$$; export WATCHDOG_PID; exec \"$0\" \"$@\"")
        .arg(&binary)
        .args(&unit.args);
    for (key, _) in std::env::vars() {
        if key.starts_with("UPKEEP") || key == "RUST_LOG" || key.starts_with("WATCHDOG_") {
            command.env_remove(key);
        }
    }
    for (key, value) in &unit.environment {
        let value = if key == "UPKEEP_CONFIG" {
            launch.config.display().to_string()
        } else {
            value.replace("%d", &launch.credentials.display().to_string())
        };
        command.env(key, value);
    }
    command
        .env("DATABASE_URL", launch.database_url)
        .env("REDIS_URL", launch.redis_url)
        .env("NOTIFY_SOCKET", launch.notify.path())
        .env("WATCHDOG_USEC", launch.watchdog.as_micros().to_string());
    ChildProcess::spawn(&unit.binary, command).expect("starting the daemon")
}

/// A config file and a credentials directory (the secret key and the API token the units
/// load) in a temporary directory.
pub(crate) struct Files {
    pub(crate) dir: TempDir,
}

impl Files {
    pub(crate) fn new(config: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("upkeep-deploy-")
            .tempdir()
            .expect("a temporary directory");
        std::fs::write(dir.path().join("upkeep.toml"), config).expect("writing upkeep.toml");
        let credentials = dir.path().join("credentials");
        std::fs::create_dir(&credentials).expect("creating the credentials directory");
        // base64 of 32 bytes, as `head -c 32 /dev/urandom | base64` writes it (with a newline).
        std::fs::write(
            credentials.join("secret_key"),
            "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=\n",
        )
        .expect("writing the secret key");
        std::fs::write(credentials.join("api_token"), "deploy-test-token\n")
            .expect("writing the API token");
        Self { dir }
    }

    pub(crate) fn config(&self) -> PathBuf {
        self.dir.path().join("upkeep.toml")
    }

    pub(crate) fn credentials(&self) -> PathBuf {
        self.dir.path().join("credentials")
    }
}
