//! A `redis-server` of a test's own, for tests that kill, restart or pause Redis.
//!
//! The shared Redis (`REDIS_URL`) must never be disturbed, because tests run in parallel.
//! A [`PrivateRedis`] runs on a free port on 127.0.0.1 with its data in a temporary
//! directory; a restart keeps the port and the directory, so an append-only file written
//! before a `kill -9` is replayed.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

use crate::ports::{free_port, log_reports_port_in_use};
use crate::process::{POLL_INTERVAL, print_log_tail, read_lossy, spawn_tied, tie_to_test_process};

/// How long a server gets to answer PING after it was started (an append-only file is
/// replayed before it answers).
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a server gets to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How many fresh ports a first start tries when the chosen one was taken meanwhile.
const PORT_ATTEMPTS: usize = 5;

/// Redis's `appendfsync` setting: when the append-only file is flushed to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendFsync {
    /// After every write: nothing acknowledged is lost, even on power loss.
    Always,
    /// Once a second: Redis's default.
    EverySec,
    /// When the operating system decides.
    No,
}

/// How a [`PrivateRedis`] is configured. Defaults to no persistence at all (no
/// append-only file, no snapshots).
#[derive(Debug, Clone)]
pub struct RedisOptions {
    appendonly: bool,
    appendfsync: AppendFsync,
    extra_args: Vec<String>,
}

/// A `redis-server` child process on 127.0.0.1 with its data in a temporary directory.
///
/// Dropping it kills the server with SIGKILL and removes the directory. When the drop
/// happens during a panic, the end of the server's log is printed.
pub struct PrivateRedis {
    port: u16,
    options: RedisOptions,
    /// Holds the working directory: the append-only file and `redis.log`.
    dir: TempDir,
    /// The running server; `None` after `kill9` or `stop` until `restart`.
    child: Option<Child>,
}

impl AppendFsync {
    fn as_arg(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::EverySec => "everysec",
            Self::No => "no",
        }
    }
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            appendonly: false,
            appendfsync: AppendFsync::EverySec,
            extra_args: Vec::new(),
        }
    }
}

impl RedisOptions {
    /// Turns the append-only file on or off. Defaults to off.
    pub fn appendonly(mut self, on: bool) -> Self {
        self.appendonly = on;
        self
    }

    /// Sets when the append-only file is flushed. Defaults to [`AppendFsync::EverySec`].
    pub fn appendfsync(mut self, appendfsync: AppendFsync) -> Self {
        self.appendfsync = appendfsync;
        self
    }

    /// Adds a raw `redis-server` argument, for example `"--maxmemory"`, `"10mb"`.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }
}

impl PrivateRedis {
    /// Starts a server without persistence and waits until it answers PING.
    ///
    /// # Errors
    /// See [`PrivateRedis::start_with`].
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(RedisOptions::default())
    }

    /// Starts a server with `options` and waits until it answers PING.
    ///
    /// # Errors
    /// Fails when `redis-server` is missing (scripts/test.sh installs it), exits during
    /// start-up, or does not answer within 20 seconds.
    pub fn start_with(options: RedisOptions) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("upkeep-redis-")
            .tempdir()
            .context("creating a directory for a private Redis")?;
        let mut redis = Self {
            port: 0,
            options,
            dir,
            child: None,
        };
        for attempt in 1..=PORT_ATTEMPTS {
            redis.port = free_port();
            match redis.spawn_and_wait() {
                Ok(()) => return Ok(redis),
                Err(error) if attempt < PORT_ATTEMPTS && log_reports_port_in_use(&redis.log()) => {
                    eprintln!(
                        "private redis: port {} was taken, retrying: {error:#}",
                        redis.port
                    );
                }
                Err(error) => return Err(error),
            }
        }
        unreachable!("the last attempt returns its error")
    }

    /// `redis://127.0.0.1:<port>/`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The port the server listens on; it stays the same across restarts.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's working directory (append-only file, `redis.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A client for this server.
    ///
    /// # Panics
    /// Never in practice: the URL is well formed by construction.
    pub fn client(&self) -> redis::Client {
        redis::Client::open(self.url()).expect("a redis://127.0.0.1:<port>/ URL is valid")
    }

    /// Everything the server has logged so far.
    pub fn log(&self) -> String {
        read_lossy(&self.log_path())
    }

    /// Whether the server process is running and answers PING.
    pub fn is_up(&mut self) -> bool {
        let running = match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        };
        running && ping(self.port)
    }

    /// Kills the server with SIGKILL, as a crash would: nothing is flushed.
    ///
    /// # Errors
    /// Fails when waiting for the killed process fails.
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            // Child::kill does nothing if the process was already reaped.
            let _ = child.kill();
            child
                .wait()
                .context("waiting for redis-server after SIGKILL")?;
        }
        Ok(())
    }

    /// Stops the server with SIGTERM, which flushes the append-only file, and waits up to
    /// 10 seconds for it to exit.
    ///
    /// # Errors
    /// Fails when the server does not exit in time (it is then killed).
    pub fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Ok(None) = child.try_wait() {
            let pid = Pid::from_raw(i32::try_from(child.id()).expect("pids fit in an i32"));
            // The process is not reaped yet, so the pid is still ours.
            let _ = signal::kill(pid, Signal::SIGTERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return Ok(());
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        let _ = child.kill();
        let _ = child.wait();
        anyhow::bail!(
            "redis-server on port {} did not exit within {STOP_TIMEOUT:?} of SIGTERM; killed it",
            self.port
        )
    }

    /// Starts the server again on the same port with the same directory, stopping it
    /// first if it is running, and waits until it answers PING (after replaying the
    /// append-only file, if any).
    ///
    /// # Errors
    /// Fails when the old server does not stop, or the new one does not start (for
    /// example because another process took the port meanwhile).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        self.spawn_and_wait()
    }

    /// Sends `CLIENT PAUSE <ms>`: the server stops answering every client for that long.
    ///
    /// # Errors
    /// Fails when the server cannot be reached or refuses the command.
    pub fn pause(&self, ms: u64) -> anyhow::Result<()> {
        let mut connection = self
            .client()
            .get_connection_with_timeout(Duration::from_secs(2))
            .context("connecting to the private Redis")?;
        redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(ms)
            .query::<()>(&mut connection)
            .context("CLIENT PAUSE")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn spawn_and_wait(&mut self) -> anyhow::Result<()> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .context("opening redis.log")?;
        let log_for_stderr = log.try_clone().context("duplicating the log handle")?;
        let mut command = Command::new("redis-server");
        command
            .args(["--bind", "127.0.0.1", "--port"])
            .arg(self.port.to_string())
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--daemonize", "no", "--logfile", "", "--save", ""])
            .args([
                "--appendonly",
                if self.options.appendonly { "yes" } else { "no" },
            ])
            .args(["--appendfsync", self.options.appendfsync.as_arg()])
            .args(&self.options.extra_args)
            .current_dir(self.dir.path());
        let mut tied = tie_to_test_process(&command, None);
        tied.stdin(Stdio::null()).stdout(log).stderr(log_for_stderr);
        let child = spawn_tied(tied).context(
            "starting redis-server (is it installed? scripts/test.sh installs the Debian package redis-server)",
        )?;
        self.child = Some(child);

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let child = self.child.as_mut().expect("set just above");
            if let Some(status) = child.try_wait().context("polling redis-server")? {
                self.child = None;
                anyhow::bail!(
                    "redis-server on port {} exited during start-up ({status}); log:\n{}",
                    self.port,
                    self.log()
                );
            }
            if ping(self.port) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = self.kill9();
                anyhow::bail!(
                    "redis-server on port {} did not answer PING within {START_TIMEOUT:?}; log:\n{}",
                    self.port,
                    self.log()
                );
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.kill9();
        if std::thread::panicking() {
            print_log_tail(&format!("private redis :{}", self.port), &self.log_path());
        }
    }
}

/// Whether a server on 127.0.0.1:`port` answers PING with PONG. A server still loading
/// its data answers `-LOADING`, which counts as not ready.
fn ping(port: u16) -> bool {
    let address = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).is_ok() && line.starts_with("+PONG")
}
