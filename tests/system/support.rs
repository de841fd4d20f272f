//! What the system tests share: a [`Deployment`] (one test's own database, Redis key prefix
//! and config file), the real binaries started against it, short-lived commands run to
//! completion with their stdout and stderr apart, and ledger queries.
//!
//! Every process a test starts gets a clean environment for upkeep: inherited `UPKEEP*` and
//! `RUST_LOG` variables are removed, so a developer's shell cannot change what a test sees,
//! and logs are JSON so assertions on them do not depend on colours.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use redis::TypedCommands as _;
use sqlx::PgConnection;
use tempfile::TempDir;
use upkeep_tests::{
    ChildProcess, cargo_bin, connect_ledger, fresh_migrated_database, printed_job_ids,
    shared_database_url, shared_redis_url, unique_prefix,
};
/// One copy in `upkeep_tests`; re-exported so the tests keep importing from here.
pub(crate) use upkeep_tests::{eventually, unix_now};
use uuid::Uuid;

/// How often the polling helpers look again.
const POLL: Duration = Duration::from_millis(50);

/// How long a command run to completion ([`Deployment::run`]) may take before the test
/// fails. Generous: the machine may be busy with builds.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// One test's own upkeep installation: a fresh migrated database (on the shared Postgres
/// unless told otherwise), a unique Redis key prefix on the shared Redis, and a config file.
pub(crate) struct Deployment {
    database_url: String,
    redis_url: String,
    prefix: String,
    /// Extra environment for every process, applied after the defaults.
    env: BTreeMap<String, String>,
    /// Holds `upkeep.toml` and the output of commands run to completion.
    dir: TempDir,
}

impl Deployment {
    /// A deployment with a fresh migrated database on the shared Postgres and an empty
    /// config file (built-in defaults).
    pub(crate) async fn new() -> Self {
        let database_url = fresh_migrated_database(&shared_database_url()).await;
        Self::with_database_url(database_url)
    }

    /// A deployment whose ledger is `database_url` (migrate it yourself, e.g. with
    /// `upkeepctl migrate`).
    pub(crate) fn with_database_url(database_url: String) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("upkeep-system-")
            .tempdir()
            .expect("creating a temporary directory");
        let deployment = Self {
            database_url,
            redis_url: shared_redis_url(),
            prefix: unique_prefix(),
            env: BTreeMap::new(),
            dir,
        };
        deployment.write_config("");
        deployment
    }

    /// Replaces the config file every process reads (`UPKEEP_CONFIG`).
    pub(crate) fn write_config(&self, toml: &str) {
        std::fs::write(self.config_path(), toml).expect("writing upkeep.toml");
    }

    /// Sets an environment variable for every process started from now on.
    pub(crate) fn set_env(&mut self, key: &str, value: &str) {
        self.env.insert(key.to_owned(), value.to_owned());
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("upkeep.toml")
    }

    /// A command for workspace binary `binary` with this deployment's environment.
    pub(crate) fn command<I, S>(&self, binary: &str, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut command = Command::new(cargo_bin(binary));
        command.args(args);
        for (key, _) in std::env::vars_os() {
            let inherited_setting = key
                .to_str()
                .is_some_and(|key| key.starts_with("UPKEEP") || key == "RUST_LOG");
            if inherited_setting {
                command.env_remove(&key);
            }
        }
        command
            .env("DATABASE_URL", &self.database_url)
            .env("REDIS_URL", &self.redis_url)
            .env("UPKEEP_CONFIG", self.config_path())
            .env("UPKEEP__REDIS__KEY_PREFIX", &self.prefix)
            .env("UPKEEP_LOG_FORMAT", "json");
        for (key, value) in &self.env {
            command.env(key, value);
        }
        command
    }

    /// Starts a long-running binary (a daemon, `upkeepctl up`); it is killed on drop.
    pub(crate) fn start<I, S>(&self, binary: &str, args: I) -> ChildProcess
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.start_with(binary, self.command(binary, args))
    }

    /// Starts a prepared command (see [`Deployment::command`]); it is killed on drop.
    pub(crate) fn start_with(&self, label: &str, command: Command) -> ChildProcess {
        ChildProcess::spawn(label, command).unwrap_or_else(|e| panic!("starting {label}: {e:#}"))
    }

    /// Runs a binary to completion (at most 30 s) and returns what it did.
    pub(crate) fn run<I, S>(&self, binary: &str, args: I) -> Finished
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.run_command(binary, self.command(binary, args), COMMAND_TIMEOUT)
    }

    /// Runs a prepared command to completion, killing it and failing the test when it
    /// takes longer than `timeout`.
    pub(crate) fn run_command(
        &self,
        label: &str,
        mut command: Command,
        timeout: Duration,
    ) -> Finished {
        let id = Uuid::new_v4().simple().to_string();
        let stdout_path = self.dir.path().join(format!("{label}-{id}.stdout"));
        let stderr_path = self.dir.path().join(format!("{label}-{id}.stderr"));
        command
            .stdin(Stdio::null())
            .stdout(File::create(&stdout_path).expect("creating the stdout file"))
            .stderr(File::create(&stderr_path).expect("creating the stderr file"));
        let started = Instant::now();
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {label}: {e}"));
        let status = loop {
            if let Some(status) = child.try_wait().expect("polling a child process") {
                break status;
            }
            if started.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{label} did not finish within {timeout:?}\nstdout:\n{}\nstderr:\n{}",
                    read(&stdout_path),
                    read(&stderr_path)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Finished {
            label: label.to_owned(),
            status,
            elapsed: started.elapsed(),
            stdout: read(&stdout_path),
            stderr: read(&stderr_path),
        }
    }

    /// `upkeepctl ARGS`, which must succeed; returns its stdout.
    pub(crate) fn ctl_ok<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let finished = self.run("upkeepctl", args);
        finished.assert_success();
        finished.stdout
    }

    /// `upkeepctl enqueue KIND --args ARGS [EXTRA...]`: the job ids it printed.
    pub(crate) fn enqueue(&self, kind: &str, args: &str, extra: &[&str]) -> Vec<Uuid> {
        let mut argv = vec!["enqueue", kind, "--args", args];
        argv.extend_from_slice(extra);
        printed_job_ids(&self.ctl_ok(&argv))
    }

    /// `upkeepctl stats --json`, by queue name.
    pub(crate) fn stats(&self) -> BTreeMap<String, serde_json::Value> {
        let stdout = self.ctl_ok(["stats", "--json"]);
        let json: serde_json::Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("stats --json printed invalid JSON ({e}):\n{stdout}"));
        json["queues"]
            .as_array()
            .unwrap_or_else(|| panic!("stats --json has no queues array:\n{stdout}"))
            .iter()
            .map(|queue| {
                let name = queue["name"].as_str().expect("every queue has a name");
                (name.to_owned(), queue.clone())
            })
            .collect()
    }

    /// Waits until `upkeepctl stats` shows `n_running` leased jobs on `queue`.
    pub(crate) async fn wait_for_running(&self, queue: &str, n_running: u64, timeout: Duration) {
        eventually(
            &format!("{n_running} running job(s) on {queue}"),
            timeout,
            async || {
                let running = self.stats()[queue]["running"].as_u64();
                (running == Some(n_running)).then_some(())
            },
        )
        .await;
    }

    /// A new connection to the ledger.
    pub(crate) async fn ledger(&self) -> PgConnection {
        connect_ledger(&self.database_url).await
    }
}

impl Drop for Deployment {
    /// Deletes this deployment's Redis keys (best effort): the shared Redis outlives the
    /// run. Its database stays; `fresh_database` drops old ones.
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(self.redis_url.as_str()) else {
            return;
        };
        let Ok(mut connection) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
            return;
        };
        let keys: Vec<String> = match connection.scan_match(format!("{}:*", self.prefix)) {
            Ok(keys) => keys.filter_map(Result::ok).collect(),
            Err(_) => return,
        };
        for chunk in keys.chunks(500) {
            let _ = redis::cmd("UNLINK").arg(chunk).query::<()>(&mut connection);
        }
    }
}

/// A command that ran to completion.
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) label: String,
    pub(crate) status: ExitStatus,
    pub(crate) elapsed: Duration,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Finished {
    /// Fails the test, showing the output, unless the command exited 0.
    pub(crate) fn assert_success(&self) {
        assert!(
            self.status.success(),
            "{} failed ({})\nstdout:\n{}\nstderr:\n{}",
            self.label,
            self.status,
            self.stdout,
            self.stderr
        );
    }

    /// Fails the test unless the command exited non-zero (not killed by a signal) with
    /// every one of `needles` in its stderr.
    pub(crate) fn assert_failure_naming(&self, needles: &[&str]) {
        assert!(
            matches!(self.status.code(), Some(code) if code != 0),
            "{} should exit non-zero, got {}\nstdout:\n{}\nstderr:\n{}",
            self.label,
            self.status,
            self.stdout,
            self.stderr
        );
        for needle in needles {
            assert!(
                self.stderr.contains(needle),
                "{}: stderr should contain {needle:?}\nstderr:\n{}",
                self.label,
                self.stderr
            );
        }
    }
}

/// One row of `job_runs`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Run {
    pub(crate) job_id: Uuid,
    pub(crate) attempt: i32,
    pub(crate) kind: String,
    pub(crate) queue: String,
    pub(crate) status: String,
    pub(crate) worker: String,
    pub(crate) error: Option<String>,
    pub(crate) next_state: Option<String>,
    /// Unix seconds.
    pub(crate) started_at: f64,
    /// Unix seconds.
    pub(crate) finished_at: Option<f64>,
}

type RunRow = (
    Uuid,
    i32,
    String,
    String,
    String,
    String,
    Option<String>,
    Option<String>,
    f64,
    Option<f64>,
);

impl From<RunRow> for Run {
    fn from(row: RunRow) -> Self {
        let (job_id, attempt, kind, queue, status, worker, error, next_state, started, finished) =
            row;
        Self {
            job_id,
            attempt,
            kind,
            queue,
            status,
            worker,
            error,
            next_state,
            started_at: started,
            finished_at: finished,
        }
    }
}

const RUN_COLUMNS: &str = "job_id, attempt, kind, queue, status, worker, error, next_state, \
     extract(epoch FROM started_at)::float8, extract(epoch FROM finished_at)::float8";

/// Every attempt of `job_id`, oldest first.
pub(crate) async fn runs_of(ledger: &mut PgConnection, job_id: Uuid) -> Vec<Run> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM job_runs WHERE job_id = $1 ORDER BY attempt");
    sqlx::query_as::<_, RunRow>(sqlx::AssertSqlSafe(sql))
        .bind(job_id)
        .fetch_all(ledger)
        .await
        .expect("reading job_runs")
        .into_iter()
        .map(Run::from)
        .collect()
}

/// Every row of `job_runs`.
pub(crate) async fn all_runs(ledger: &mut PgConnection) -> Vec<Run> {
    let sql = format!("SELECT {RUN_COLUMNS} FROM job_runs ORDER BY job_id, attempt");
    sqlx::query_as::<_, RunRow>(sqlx::AssertSqlSafe(sql))
        .fetch_all(ledger)
        .await
        .expect("reading job_runs")
        .into_iter()
        .map(Run::from)
        .collect()
}

/// Waits until `job_id` has a row with `status`, and returns all its rows.
pub(crate) async fn wait_for_status(
    ledger: &mut PgConnection,
    job_id: Uuid,
    status: &str,
    timeout: Duration,
) -> Vec<Run> {
    let deadline = Instant::now() + timeout;
    loop {
        let runs = runs_of(ledger, job_id).await;
        if runs.iter().any(|run| run.status == status) {
            return runs;
        }
        assert!(
            Instant::now() < deadline,
            "job {job_id} has no {status} row after {timeout:?}; its rows: {runs:#?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until a process (logging JSON) writes an entry that `matches`, and returns it.
/// Fails the test when `timeout` passes or the process exits first.
pub(crate) fn wait_for_log_entry(
    process: &mut ChildProcess,
    what: &str,
    timeout: Duration,
    matches: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + timeout;
    loop {
        let running = process.is_running();
        let found = process
            .log()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|entry| matches(entry));
        if let Some(entry) = found {
            return entry;
        }
        assert!(running, "the process exited before logging {what}");
        assert!(
            Instant::now() < deadline,
            "nothing logged {what} within {timeout:?}"
        );
        std::thread::sleep(POLL);
    }
}

/// Waits until a daemon logged that its worker for `queue` started, and returns the
/// worker id it logged (`reports@host-pid-nonce`).
pub(crate) fn wait_for_worker(process: &mut ChildProcess, queue: &str) -> String {
    let entry = wait_for_log_entry(
        process,
        &format!("the start of a worker for {queue}"),
        Duration::from_secs(30),
        |entry| entry["message"] == "worker starting" && entry["queue"] == queue,
    );
    entry["worker_id"]
        .as_str()
        .unwrap_or_else(|| panic!("the worker starting entry has no worker_id: {entry}"))
        .to_owned()
}

/// Sends SIGINT (Ctrl-C) to a child process.
pub(crate) fn sigint(process: &ChildProcess) {
    let pid = Pid::from_raw(i32::try_from(process.pid()).expect("pids fit in an i32"));
    signal::kill(pid, Signal::SIGINT).expect("sending SIGINT");
}

fn read(path: &Path) -> String {
    std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}
