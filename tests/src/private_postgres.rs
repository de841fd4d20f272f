//! A Postgres cluster of a test's own, for tests that stop, start or crash Postgres.
//!
//! The shared Postgres (`DATABASE_URL`) must never be disturbed, because tests run in
//! parallel. A [`PrivatePostgres`] is a fresh cluster (`initdb`) in a temporary directory,
//! served on a free port on 127.0.0.1 with trust authentication and `fsync=off`.
//!
//! Postgres refuses to run as root. When the tests run as root, the directory is created
//! under /tmp, handed to the `postgres` user, and `initdb` and `postgres` run as that user;
//! otherwise they run as the current user.
//!
//! The server is the `postgres` program itself as a child of the test, not a daemon
//! started by `pg_ctl`: `pg_ctl` detaches the server into a session of its own, which
//! would survive a test killed by the runner's timeout. As a child it is tied to the test
//! process like every other helper process (see `process`), and stopping it is a signal:
//! SIGINT for a fast shutdown, SIGQUIT for an immediate one.

use std::ffi::OsStr;
use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::ports::{free_port, log_reports_port_in_use};
use crate::process::{POLL_INTERVAL, print_log_tail, read_lossy, spawn_tied, tie_to_test_process};

/// How many fresh ports a first start tries when the chosen one was taken meanwhile.
const PORT_ATTEMPTS: usize = 5;

/// How long the server gets to start (including crash recovery) or to stop.
const SERVER_TIMEOUT: Duration = Duration::from_secs(60);

/// What the server logs once it accepts connections (messages are in English: the
/// cluster is created with `--no-locale`).
const READY_LINE: &str = "database system is ready to accept connections";

/// A Postgres server on 127.0.0.1 with its cluster in a temporary directory.
///
/// Dropping it stops the server (immediate shutdown) and removes the directory. When
/// the drop happens during a panic, the end of the server's log is printed.
pub struct PrivatePostgres {
    port: u16,
    /// Holds the cluster root: `data/`, `postgres.log` and the server's unix socket.
    dir: TempDir,
    /// Where `initdb` and `postgres` live.
    bin_dir: PathBuf,
    /// Whether the server programs run as the `postgres` user (we are root).
    as_postgres_user: bool,
    /// The postmaster; `None` while stopped.
    server: Option<Child>,
    /// Extra `-c name=value` settings of every start ([`PrivatePostgres::start_with_settings`]).
    settings: Vec<(String, String)>,
}

impl PrivatePostgres {
    /// Creates a cluster, starts it and waits until it accepts connections.
    ///
    /// # Errors
    /// Fails when the server programs are missing (scripts/test.sh installs the Debian
    /// package postgresql), the `postgres` user is missing while running as root,
    /// `initdb` fails, or the server does not accept connections within 60 seconds.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with_settings(&[])
    }

    /// Like [`PrivatePostgres::start`], with extra server settings (`-c name=value`) on every
    /// start, e.g. `[("logging_collector", "on"), ("log_directory", "/tmp/x/log")]`. With the
    /// logging collector on, the server's own messages go to the collector's files, so
    /// readiness is asked with `pg_isready` instead of read from `postgres.log`.
    ///
    /// # Errors
    /// As [`PrivatePostgres::start`].
    pub fn start_with_settings(settings: &[(&str, &str)]) -> anyhow::Result<Self> {
        let bin_dir = find_pg_bin_dir()?;
        let as_postgres_user = running_as_root();
        let dir = create_cluster_dir(as_postgres_user)?;
        let mut postgres = Self {
            port: 0,
            dir,
            bin_dir,
            as_postgres_user,
            server: None,
            settings: settings
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
        };
        postgres.initdb()?;
        for attempt in 1..=PORT_ATTEMPTS {
            postgres.port = free_port();
            match postgres.start_server() {
                Ok(()) => return Ok(postgres),
                Err(error)
                    if attempt < PORT_ATTEMPTS && log_reports_port_in_use(&postgres.log()) =>
                {
                    eprintln!(
                        "private postgres: port {} was taken, retrying: {error:#}",
                        postgres.port
                    );
                }
                Err(error) => return Err(error),
            }
        }
        unreachable!("the last attempt returns its error")
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// The URL of database `database` on this server.
    pub fn url_for(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// The port the server listens on; it stays the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The cluster root (`data/`, `postgres.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the server has logged so far.
    pub fn log(&self) -> String {
        read_lossy(&self.log_path())
    }

    /// Stops the server with a fast shutdown (SIGINT, like `pg_ctl stop -m fast`):
    /// sessions are disconnected and the server shuts down cleanly.
    ///
    /// # Errors
    /// Fails when the server does not exit within 60 seconds (it is then killed).
    pub fn stop(&mut self) -> anyhow::Result<()> {
        self.stop_with(Signal::SIGINT)
    }

    /// Stops the server with an immediate shutdown (SIGQUIT, like `pg_ctl stop -m
    /// immediate`): no checkpoint, so the next start runs crash recovery, as after a
    /// crash of the server.
    ///
    /// # Errors
    /// Fails when the server does not exit within 60 seconds (it is then killed).
    pub fn stop_immediate(&mut self) -> anyhow::Result<()> {
        self.stop_with(Signal::SIGQUIT)
    }

    /// Starts the server again on the same port with the same cluster, stopping it first
    /// (fast shutdown) if it is running, and waits until it accepts connections.
    ///
    /// # Errors
    /// Fails when the old server does not stop or the new one does not start, for
    /// example because another process took the port meanwhile.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        self.start_server()
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    fn initdb(&self) -> anyhow::Result<()> {
        let data_dir = self.data_dir();
        let output = self.run_server_program(
            "initdb",
            [
                OsStr::new("-D"),
                data_dir.as_os_str(),
                OsStr::new("--username=postgres"),
                OsStr::new("--auth=trust"),
                OsStr::new("--encoding=UTF8"),
                OsStr::new("--no-locale"),
                OsStr::new("--no-sync"),
            ],
        )?;
        check_output("initdb", &output)
    }

    fn start_server(&mut self) -> anyhow::Result<()> {
        let log_path = self.log_path();
        let log = File::options()
            .create(true)
            .append(true)
            .open(&log_path)
            .context("opening postgres.log")?;
        let log_for_stderr = log.try_clone().context("duplicating the log handle")?;
        // Only what this start logs counts: an earlier start logged the ready line too.
        let log_offset = std::fs::metadata(&log_path)
            .map(|meta| meta.len())
            .unwrap_or(0);
        let mut command = Command::new(self.bin_dir.join("postgres"));
        command
            .arg("-D")
            .arg(self.data_dir())
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-k")
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .current_dir(self.dir.path());
        for (name, value) in &self.settings {
            command.arg("-c").arg(format!("{name}={value}"));
        }
        let collector = self
            .settings
            .iter()
            .any(|(name, value)| name == "logging_collector" && value == "on");
        let mut tied = tie_to_test_process(&command, self.as_postgres_user.then_some("postgres"));
        tied.stdin(Stdio::null()).stdout(log).stderr(log_for_stderr);
        self.server = Some(spawn_tied(tied).context("starting postgres")?);

        let deadline = Instant::now() + SERVER_TIMEOUT;
        loop {
            let server = self
                .server
                .as_mut()
                .expect("set above, cleared only before returning");
            if let Some(status) = server.try_wait().context("polling postgres")? {
                self.server = None;
                anyhow::bail!(
                    "postgres on port {} exited during start-up ({status}); log:\n{}",
                    self.port,
                    self.log()
                );
            }
            let ready = if collector {
                accepts_tcp(self.port) && self.pg_isready()
            } else {
                logged_since(&log_path, log_offset).contains(READY_LINE) && accepts_tcp(self.port)
            };
            if ready {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = self.stop_with(Signal::SIGKILL);
                anyhow::bail!(
                    "postgres on port {} did not accept connections within {SERVER_TIMEOUT:?}; log:\n{}",
                    self.port,
                    self.log()
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Whether `pg_isready` says the server accepts connections.
    fn pg_isready(&self) -> bool {
        Command::new(self.bin_dir.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    /// Sends `signal` to the postmaster and waits for it to exit.
    fn stop_with(&mut self, signal: Signal) -> anyhow::Result<()> {
        let Some(mut server) = self.server.take() else {
            return Ok(());
        };
        if let Ok(None) = server.try_wait() {
            // The process is not reaped yet, so the pid is still ours.
            let pid = Pid::from_raw(i32::try_from(server.id()).expect("pids fit in an i32"));
            let _ = signal::kill(pid, signal);
        }
        let deadline = Instant::now() + SERVER_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = server.try_wait() {
                return Ok(());
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        let _ = server.kill();
        let _ = server.wait();
        anyhow::bail!(
            "postgres on port {} did not exit within {SERVER_TIMEOUT:?} of {signal}; killed it",
            self.port
        )
    }

    /// Runs a program from the server's bin directory to completion, as the `postgres`
    /// user when we are root. The working directory is the cluster root, which that user
    /// owns.
    fn run_server_program<'a>(
        &self,
        program: &str,
        args: impl IntoIterator<Item = &'a OsStr>,
    ) -> anyhow::Result<Output> {
        let program_path = self.bin_dir.join(program);
        let mut command = if self.as_postgres_user {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(&program_path);
            command
        } else {
            Command::new(&program_path)
        };
        command
            .args(args)
            .current_dir(self.dir.path())
            .output()
            .with_context(|| format!("running {}", program_path.display()))
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self.stop_immediate();
        if std::thread::panicking() {
            print_log_tail(
                &format!("private postgres :{}", self.port),
                &self.log_path(),
            );
        }
    }
}

/// Finds the directory holding `initdb` and `postgres`: `UPKEEP_PG_BIN` (set by
/// scripts/dev-services.sh), else the newest `/usr/lib/postgresql/<version>/bin` (where
/// Debian keeps them, off `PATH`), else the directory of `initdb` on `PATH`.
fn find_pg_bin_dir() -> anyhow::Result<PathBuf> {
    let has_programs = |dir: &Path| {
        ["initdb", "postgres"]
            .iter()
            .all(|program| dir.join(program).is_file())
    };
    if let Some(dir) = std::env::var_os("UPKEEP_PG_BIN").map(PathBuf::from)
        && has_programs(&dir)
    {
        return Ok(dir);
    }
    let mut versioned: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, dir)| has_programs(dir))
        .collect();
    versioned.sort();
    if let Some((_, dir)) = versioned.pop() {
        return Ok(dir);
    }
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path.into_iter().find(|dir| has_programs(dir)).context(
        "initdb and postgres not found (looked at UPKEEP_PG_BIN, \
             /usr/lib/postgresql/*/bin and PATH): run the tests with scripts/test.sh, \
             which installs the Debian package postgresql",
    )
}

/// Creates the cluster root. As root it goes under /tmp (which every user can traverse,
/// unlike a TMPDIR under /root), is readable by others and owned by `postgres`.
fn create_cluster_dir(as_postgres_user: bool) -> anyhow::Result<TempDir> {
    let mut builder = tempfile::Builder::new();
    builder.prefix("upkeep-pg-");
    if !as_postgres_user {
        return builder
            .tempdir()
            .context("creating a directory for a private Postgres");
    }
    let dir = builder
        .tempdir_in("/tmp")
        .context("creating a directory for a private Postgres under /tmp")?;
    let (uid, gid) = postgres_user_ids()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .context("making the private Postgres directory traversable")?;
    std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))
        .context("handing the private Postgres directory to the postgres user")?;
    Ok(dir)
}

/// The uid and gid of the `postgres` user, which the Debian package postgresql creates.
fn postgres_user_ids() -> anyhow::Result<(u32, u32)> {
    let id = |flag: &str| -> anyhow::Result<u32> {
        let output = Command::new("id")
            .args([flag, "postgres"])
            .output()
            .context("running id")?;
        anyhow::ensure!(
            output.status.success(),
            "there is no postgres user, and Postgres refuses to run as root: install the \
             Debian package postgresql (scripts/test.sh does)"
        );
        String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse()
            .context("parsing the output of id")
    };
    Ok((id("-u")?, id("-g")?))
}

/// Whether this process runs with effective uid 0, read from /proc/self/status.
fn running_as_root() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .is_some_and(|effective| effective == "0")
}

/// What a log file gained after its first `offset` bytes, as text.
fn logged_since(path: &Path, offset: u64) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
fn accepts_tcp(port: u16) -> bool {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&address, Duration::from_millis(200)).is_ok()
}

fn check_output(what: &str, output: &Output) -> anyhow::Result<()> {
    anyhow::ensure!(
        output.status.success(),
        "{what} failed ({}):\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}
