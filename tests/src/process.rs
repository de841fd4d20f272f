//! Workspace binaries as child processes, with their output in a log file.
//!
//! A [`ChildProcess`] writes stdout and stderr to one file in a temporary directory, so a
//! test can wait for a line or assert on the output, and a failing test shows the end of
//! the log (and keeps the file) instead of losing it. Each child runs in its own process
//! group, so killing it also kills anything it started.
//!
//! Every process the helpers start (binaries, `redis-server`, `postgres`) is tied to the
//! test process with a parent-death signal (`setpriv --pdeathsig KILL`), so a test that
//! is killed (by the runner's timeout, say) before its `Drop`s run leaves no servers or
//! workers behind. The signal fires when the *thread* that spawned the child exits, so
//! the children are spawned from one thread that lives as long as the test process
//! ([`spawn_tied`]).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

/// How often the wait loops in this crate look again.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// How many bytes of a log a failing test prints.
const LOG_TAIL_BYTES: u64 = 8 * 1024;

/// Returns the path of a binary of this workspace in the target directory.
///
/// Cargo sets `CARGO_BIN_EXE_<name>` only for binaries of the test's own package, so this
/// looks next to the running test executable (`<target>/<profile>/deps/..`), which follows
/// `CARGO_TARGET_DIR` and the build profile. Outside a test executable it falls back to
/// `$CARGO_TARGET_DIR/debug` or `<workspace>/target/debug`.
///
/// # Panics
/// Panics when the binary does not exist: build it first with
/// `cargo build --workspace --bins` (scripts/test.sh does).
pub fn cargo_bin(name: &str) -> PathBuf {
    let path = target_profile_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "binary {name} not found at {}: build the binaries first with \
         `cargo build --workspace --bins` (scripts/test.sh does this before running the tests)",
        path.display()
    );
    path
}

/// A running child process whose stdout and stderr go to a log file.
///
/// Dropping it kills the process group with SIGKILL. When the drop happens during a
/// panic (a failed assertion), the end of the log is printed and the file is kept.
pub struct ChildProcess {
    /// Names the process in messages and in the log file's name.
    label: String,
    child: Child,
    /// Set once the process has been reaped. After that its pid may belong to another
    /// process, so no signal is sent to it (or its group) any more.
    exit_status: Option<ExitStatus>,
    log_path: PathBuf,
    /// Holds the log file; `None` once it has been kept for debugging.
    log_dir: Option<TempDir>,
}

impl ChildProcess {
    /// Starts a workspace binary (see [`cargo_bin`]) with arguments and extra
    /// environment variables; the rest of the environment is inherited.
    ///
    /// # Errors
    /// Fails when the log file cannot be created or the process cannot be started.
    ///
    /// # Panics
    /// Panics when the binary has not been built (see [`cargo_bin`]).
    pub fn start<I, S, K, V>(name: &str, args: I, envs: &[(K, V)]) -> anyhow::Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        let mut command = Command::new(cargo_bin(name));
        command.args(args);
        for (key, value) in envs {
            command.env(key, value);
        }
        Self::spawn(name, command)
    }

    /// Starts a prepared command. Its program, arguments, environment changes and working
    /// directory are kept; stdin reads nothing, output goes to the log file, and the
    /// process gets a group of its own and is tied to the test process (see the module
    /// docs). `Command::env_clear` is not carried over.
    ///
    /// # Errors
    /// Fails when the log file cannot be created or the process cannot be started.
    pub fn spawn(label: &str, command: Command) -> anyhow::Result<Self> {
        let log_dir = tempfile::Builder::new()
            .prefix(&if label.starts_with("upkeep") {
                format!("{label}-")
            } else {
                format!("upkeep-{label}-")
            })
            .tempdir()
            .context("creating a directory for the child's log")?;
        let log_path = log_dir.path().join(format!("{label}.log"));
        let stdout =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let stderr = stdout
            .try_clone()
            .context("duplicating the log file handle")?;
        let mut tied = tie_to_test_process(&command, None);
        // A group of its own lets Drop kill whatever the child started as well, and keeps
        // a Ctrl-C meant for the test runner away from it (the parent-death signal still
        // ends it when the test process goes).
        tied.stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .process_group(0);
        let child = spawn_tied(tied)
            .with_context(|| format!("starting {label} ({:?})", command.get_program()))?;
        Ok(Self {
            label: label.to_owned(),
            child,
            exit_status: None,
            log_path,
            log_dir: Some(log_dir),
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Where stdout and stderr go.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything the process has written so far (invalid UTF-8 replaced).
    pub fn log(&self) -> String {
        read_lossy(&self.log_path)
    }

    /// Waits until the log contains `needle`. Returns `false` when the timeout passes or
    /// the process exits without writing it.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if !self.is_running() {
                // The process may have written the line just before exiting.
                return self.log().contains(needle);
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Whether the process has not exited yet.
    pub fn is_running(&mut self) -> bool {
        self.try_exit_status().is_none()
    }

    /// Sends SIGTERM to the process (not its group): the graceful shutdown request.
    ///
    /// # Errors
    /// Fails when the process has already exited or the signal cannot be sent.
    pub fn sigterm(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.try_exit_status() {
            anyhow::bail!(
                "{} already exited ({status}); not sending SIGTERM",
                self.label
            );
        }
        signal::kill(self.nix_pid(), Signal::SIGTERM)
            .with_context(|| format!("sending SIGTERM to {} (pid {})", self.label, self.pid()))
    }

    /// Freezes the process with SIGSTOP (a long GC pause, a swapped-out host, a stalled VM):
    /// it keeps its sockets and its state, and does nothing until [`ChildProcess::sigcont`].
    ///
    /// # Errors
    /// Fails when the signal cannot be sent.
    pub fn sigstop(&mut self) -> anyhow::Result<()> {
        signal::kill(self.nix_pid(), Signal::SIGSTOP)
            .with_context(|| format!("sending SIGSTOP to {} (pid {})", self.label, self.pid()))
    }

    /// Resumes a process frozen by [`ChildProcess::sigstop`].
    ///
    /// # Errors
    /// Fails when the signal cannot be sent.
    pub fn sigcont(&mut self) -> anyhow::Result<()> {
        signal::kill(self.nix_pid(), Signal::SIGCONT)
            .with_context(|| format!("sending SIGCONT to {} (pid {})", self.label, self.pid()))
    }

    /// Kills the process group with SIGKILL and waits for the process to exit. Returns
    /// the exit status, which is the earlier one when the process had already exited.
    ///
    /// # Errors
    /// Fails when waiting for the process fails.
    pub fn kill9(&mut self) -> anyhow::Result<ExitStatus> {
        if let Some(status) = self.exit_status {
            return Ok(status);
        }
        // Until we reap the leader its pid, and so the group id, cannot be reused.
        kill_group(self.nix_pid());
        // Also the process itself, in case it left its group.
        let _ = self.child.kill();
        let status = self
            .child
            .wait()
            .with_context(|| format!("waiting for {} after SIGKILL", self.label))?;
        self.exit_status = Some(status);
        Ok(status)
    }

    /// Waits up to `timeout` for the process to exit and returns its status, or `None`
    /// when it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit_status() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    fn try_exit_status(&mut self) -> Option<ExitStatus> {
        if self.exit_status.is_none()
            && let Ok(Some(status)) = self.child.try_wait()
        {
            self.exit_status = Some(status);
        }
        self.exit_status
    }

    fn nix_pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).expect("Linux process ids fit in an i32"))
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.kill9();
        if std::thread::panicking()
            && let Some(log_dir) = self.log_dir.take()
        {
            let kept = log_dir.keep();
            print_log_tail(&self.label, &kept.join(format!("{}.log", self.label)));
        }
    }
}

/// Prints the end of a log file to stderr, which the test runner shows for a failed
/// test. Used by the helpers' `Drop` during a panic.
pub(crate) fn print_log_tail(label: &str, path: &Path) {
    let tail = read_tail(path, LOG_TAIL_BYTES);
    eprintln!(
        "----- {label}: last {} bytes of {} -----\n{tail}\n----- end of {label} log -----",
        tail.len(),
        path.display()
    );
}

/// Reads a whole file as text, replacing invalid UTF-8; an unreadable file reads as "".
pub(crate) fn read_lossy(path: &Path) -> String {
    std::fs::read(path)
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
        .unwrap_or_default()
}

/// Reads at most the last `max_bytes` of a file as text; an unreadable file reads as "".
pub(crate) fn read_tail(path: &Path, max_bytes: u64) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|meta| meta.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(max_bytes)));
    let mut bytes = Vec::new();
    let _ = file.read_to_end(&mut bytes);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Rewrites `command` to run through `setpriv --pdeathsig KILL`, and as `user` when one
/// is given (which needs root). Program, arguments, environment changes and working
/// directory are copied; stdio is left for the caller to set. Spawn the result with
/// [`spawn_tied`]. Without `setpriv` (util-linux), the command runs untied, through
/// `runuser` for another user.
pub(crate) fn tie_to_test_process(command: &Command, user: Option<&str>) -> Command {
    let setpriv = find_setpriv();
    let mut tied = match (setpriv, user) {
        (Some(setpriv), user) => {
            let mut tied = Command::new(setpriv);
            if let Some(user) = user {
                tied.arg(format!("--reuid={user}"))
                    .arg(format!("--regid={user}"))
                    .arg("--init-groups");
            }
            // Given after the identity options: setpriv applies it last, and a change
            // of user would otherwise clear it.
            tied.args(["--pdeathsig", "KILL", "--"]);
            tied
        }
        (None, Some(user)) => {
            let mut tied = Command::new("runuser");
            tied.args(["-u", user, "--"]);
            tied
        }
        (None, None) => return copy_command(command, Command::new(command.get_program())),
    };
    tied.arg(command.get_program());
    copy_command(command, tied)
}

/// Spawns `command` from a thread that lives as long as the test process, so a
/// parent-death signal set by [`tie_to_test_process`] fires when the process ends, not
/// when the test thread that asked for the child ends.
pub(crate) fn spawn_tied(command: Command) -> std::io::Result<Child> {
    type Request = (Command, mpsc::SyncSender<std::io::Result<Child>>);
    static SPAWNER: OnceLock<mpsc::Sender<Request>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (sender, receiver) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("upkeep-tests-spawner".to_owned())
            .spawn(move || {
                // The sender lives in a static, so this loop ends only with the process.
                for (mut command, reply) in receiver {
                    let _ = reply.send(command.spawn());
                }
            })
            .expect("the test process can start a thread");
        sender
    });
    let (reply_sender, reply_receiver) = mpsc::sync_channel(1);
    spawner
        .send((command, reply_sender))
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
    reply_receiver
        .recv()
        .map_err(|_| std::io::Error::other("the spawner thread dropped the request"))?
}

fn copy_command(from: &Command, mut to: Command) -> Command {
    to.args(from.get_args());
    for (key, value) in from.get_envs() {
        match value {
            Some(value) => to.env(key, value),
            None => to.env_remove(key),
        };
    }
    if let Some(dir) = from.get_current_dir() {
        to.current_dir(dir);
    }
    to
}

fn find_setpriv() -> Option<PathBuf> {
    static SETPRIV: OnceLock<Option<PathBuf>> = OnceLock::new();
    SETPRIV
        .get_or_init(|| {
            let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/bin:/bin"));
            std::env::split_paths(&path)
                .map(|dir| dir.join("setpriv"))
                .find(|candidate| candidate.is_file())
        })
        .clone()
}

fn kill_group(pid: Pid) {
    // Errors mean the group is already gone, which is the goal.
    let _ = signal::killpg(pid, Signal::SIGKILL);
}

fn target_profile_dir() -> PathBuf {
    // A test executable lives in <target>/<profile>/deps/.
    if let Ok(exe) = std::env::current_exe()
        && let Some(deps) = exe.parent()
        && deps.file_name() == Some(OsStr::new("deps"))
        && let Some(profile_dir) = deps.parent()
    {
        return profile_dir.to_path_buf();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("target")
        });
    target.join("debug")
}
