//! A Postgres cluster of a test's own, for tests that stop, start or crash Postgres.
//!
//! The shared Postgres (`DATABASE_URL`) must never be disturbed, because tests run in
//! parallel. A [`PrivatePostgres`] is a fresh cluster (`initdb`) in a temporary directory,
//! served on a free port on 127.0.0.1 with trust authentication and `fsync=off`.
//!
//! Postgres refuses to run as root. When the tests run as root, the directory is created
//! under /tmp, handed to the `postgres` user, and `initdb`/`pg_ctl` run through
//! `runuser -u postgres`; otherwise they run as the current user.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::Context;
use tempfile::TempDir;

use crate::ports::{free_port, log_reports_port_in_use};
use crate::process::{print_log_tail, read_lossy};

/// How many fresh ports a first start tries when the chosen one was taken meanwhile.
const PORT_ATTEMPTS: usize = 5;

/// How long `pg_ctl` waits for the server to start or stop.
const PG_CTL_TIMEOUT: Duration = Duration::from_secs(60);

/// A Postgres server on 127.0.0.1 with its cluster in a temporary directory.
///
/// Dropping it stops the server (`-m immediate`) and removes the directory. When the
/// drop happens during a panic, the end of the server's log is printed.
pub struct PrivatePostgres {
    port: u16,
    /// Holds the cluster root: `data/`, `postgres.log` and the server's unix socket.
    dir: TempDir,
    /// Where `initdb`, `pg_ctl` and `postgres` live.
    bin_dir: PathBuf,
    /// Whether the server programs run through `runuser -u postgres` (we are root).
    as_postgres_user: bool,
    /// Whether the server was started and not stopped since.
    running: bool,
}

impl PrivatePostgres {
    /// Creates a cluster, starts it and waits until it accepts connections.
    ///
    /// # Errors
    /// Fails when the server programs are missing (scripts/test.sh installs the Debian
    /// package postgresql), the `postgres` user is missing while running as root, or
    /// `initdb` or `pg_ctl start` fails.
    pub fn start() -> anyhow::Result<Self> {
        let bin_dir = find_pg_bin_dir()?;
        let as_postgres_user = running_as_root();
        let dir = create_cluster_dir(as_postgres_user)?;
        let mut postgres = Self {
            port: 0,
            dir,
            bin_dir,
            as_postgres_user,
            running: false,
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

    /// Stops the server with `pg_ctl stop -m fast`: sessions are disconnected and the
    /// server shuts down cleanly.
    ///
    /// # Errors
    /// Fails when `pg_ctl stop` fails.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        self.pg_ctl_stop("fast")
    }

    /// Stops the server with `pg_ctl stop -m immediate`: no checkpoint, so the next start
    /// runs crash recovery, as after a crash of the server.
    ///
    /// # Errors
    /// Fails when `pg_ctl stop` fails.
    pub fn stop_immediate(&mut self) -> anyhow::Result<()> {
        self.pg_ctl_stop("immediate")
    }

    /// Starts the server again on the same port with the same cluster, stopping it first
    /// (`-m fast`) if it is running, and waits until it accepts connections.
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
        let data_dir = self.data_dir();
        let log_path = self.log_path();
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let timeout = PG_CTL_TIMEOUT.as_secs().to_string();
        let output = self.run_server_program(
            "pg_ctl",
            [
                OsStr::new("-D"),
                data_dir.as_os_str(),
                OsStr::new("-l"),
                log_path.as_os_str(),
                OsStr::new("-o"),
                OsStr::new(&options),
                OsStr::new("-w"),
                OsStr::new("-t"),
                OsStr::new(&timeout),
                OsStr::new("start"),
            ],
        )?;
        check_output("pg_ctl start", &output).with_context(|| {
            format!(
                "starting the private Postgres on port {}; log:\n{}",
                self.port,
                self.log()
            )
        })?;
        self.running = true;
        Ok(())
    }

    fn pg_ctl_stop(&mut self, mode: &str) -> anyhow::Result<()> {
        let data_dir = self.data_dir();
        // A start that timed out may have left a server running without `running` set.
        if !self.running && !data_dir.join("postmaster.pid").exists() {
            return Ok(());
        }
        let timeout = PG_CTL_TIMEOUT.as_secs().to_string();
        let output = self.run_server_program(
            "pg_ctl",
            [
                OsStr::new("-D"),
                data_dir.as_os_str(),
                OsStr::new("-m"),
                OsStr::new(mode),
                OsStr::new("-w"),
                OsStr::new("-t"),
                OsStr::new(&timeout),
                OsStr::new("stop"),
            ],
        )?;
        check_output("pg_ctl stop", &output)?;
        self.running = false;
        Ok(())
    }

    /// Runs `initdb` or `pg_ctl` from the server's bin directory, as the `postgres` user
    /// when we are root. The working directory is the cluster root, which that user owns.
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

/// Finds the directory holding `initdb`, `pg_ctl` and `postgres`: `UPKEEP_PG_BIN` (set by
/// scripts/dev-services.sh), else the newest `/usr/lib/postgresql/<version>/bin` (where
/// Debian keeps them, off `PATH`), else the directory of `initdb` on `PATH`.
fn find_pg_bin_dir() -> anyhow::Result<PathBuf> {
    let has_programs = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres"]
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
        "initdb, pg_ctl and postgres not found (looked at UPKEEP_PG_BIN, \
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
