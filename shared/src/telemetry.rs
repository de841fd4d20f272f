//! Builds and installs the process-wide tracing subscriber.
//!
//! CLIs call [`init`] (blocking, stderr: their stdout is their output). Daemons call
//! [`init_daemon`] first thing in `main` and keep the [`TelemetryGuard`] it returns for the
//! life of the process: lines go through a non-blocking writer (`tracing_appender::non_blocking`)
//! to stdout, or to `[telemetry] file` (see [`file`]: rotated in-process by size and UTC
//! period, reopened on SIGHUP, compressed and pruned like `logs.rotate` targets). Output is JSON
//! when `UPKEEP_LOG_FORMAT=json` (production) and human-readable otherwise; `RUST_LOG` filters.
//! The format is passed in by the caller: only `config` reads the environment.
//!
//! The non-blocking writer is lossy: a formatting thread never waits for the sink. Lines queue
//! in a bounded buffer ([`BUFFERED_LINES`]); when a slow sink (a stalled pipe, a journald rate
//! limit, a slow disk) lets it fill, further lines are dropped and counted
//! ([`dropped_lines`]), and the count is logged as a warning once the sink catches up. A job
//! worker therefore never stalls on its own logging, which the throughput work relies on; a
//! sink that keeps up loses nothing (the rotation tests count every line).

pub mod attempt;
pub mod file;

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};

use crate::logs::settings::Compression;
use crate::settings::ByteSize;
use attempt::WithAttempt;

pub use file::LogFile;

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON when the lines go to a file or a pipe (journald, a supervisor, a log shipper),
    /// human-readable lines on a terminal. The default.
    #[default]
    Auto,
    /// One JSON object per line, for log shippers.
    Json,
    /// Human-readable lines.
    Pretty,
}

impl LogFormat {
    /// Parses `auto`, `json` or `pretty`.
    ///
    /// # Errors
    /// Names the bad value.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value {
            "auto" => Ok(Self::Auto),
            "json" => Ok(Self::Json),
            "pretty" => Ok(Self::Pretty),
            other => Err(format!(
                "UPKEEP_LOG_FORMAT must be auto, json or pretty, got {other:?}"
            )),
        }
    }

    /// The name as written in the configuration.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::Json => "json",
            Self::Pretty => "pretty",
        }
    }

    /// Whether lines are JSON for a destination that is (or is not) a terminal.
    #[must_use]
    pub fn is_json(self, to_terminal: bool) -> bool {
        match self {
            Self::Auto => !to_terminal,
            Self::Json => true,
            Self::Pretty => false,
        }
    }
}

/// Installs the subscriber. `default_filter` applies when `RUST_LOG` is unset.
/// A second call in the same process is a no-op, so tests can call it freely.
pub fn init(service: &str, default_filter: &str, format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // upkeepctl's stderr is for the person at the prompt: `auto` stays human-readable there.
    let result = if format == LogFormat::Json {
        builder
            .json()
            .flatten_event(true)
            .map_event_format(WithAttempt::json)
            .try_init()
    } else {
        builder
            .compact()
            .map_event_format(WithAttempt::text)
            .try_init()
    };
    if result.is_ok() {
        tracing::debug!(service, "telemetry initialised");
    }
}

/// Lines the non-blocking writer holds before it drops (and counts) new ones.
pub const BUFFERED_LINES: usize = 64 * 1024;

/// How often the telemetry task looks for dropped lines and an idle file due for rotation.
const TICK: Duration = Duration::from_secs(10);

/// How often the log file's generations are compressed and pruned even without a rotation, so
/// `max_age` holds on a quiet daemon.
const MAINTAIN_EVERY: Duration = Duration::from_secs(3600);

static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Log lines dropped so far because the sink was slower than the log rate (0 for [`init`]).
#[must_use]
pub fn dropped_lines() -> u64 {
    DROPPED
        .get()
        .map_or(0, |counter| counter.dropped_lines() as u64)
}

/// Keeps the non-blocking writer alive; dropping it flushes the lines still buffered (waiting
/// at most a second) and stops the telemetry task. Hold it until the process exits.
#[must_use = "dropping the guard stops the log writer"]
pub struct TelemetryGuard {
    _worker: Option<WorkerGuard>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelemetryGuard").finish_non_exhaustive()
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Installs the subscriber of a daemon: non-blocking, to stdout or to `settings.file`.
/// `settings.filter` applies when `RUST_LOG` is unset. With a file, a task of the current tokio
/// runtime reopens it on SIGHUP, rotates it at the period boundary when idle, and compresses and
/// prunes its generations hourly; without a runtime those are skipped (size and period rotation
/// on write still happen).
///
/// A second call in the same process installs nothing and returns an empty guard.
///
/// # Errors
/// When the log file cannot be opened (naming it).
pub fn init_daemon(service: &str, settings: &TelemetrySettings) -> std::io::Result<TelemetryGuard> {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    let empty = TelemetryGuard {
        _worker: None,
        task: None,
    };
    if INSTALLED.get().is_some() {
        return Ok(empty);
    }
    let log_file = settings
        .file
        .as_ref()
        .map(|_| LogFile::open(settings))
        .transpose()?;
    let builder = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(BUFFERED_LINES)
        .thread_name("upkeep-log-writer");
    let (writer, guard, ansi) = match &log_file {
        Some(log_file) => {
            let (writer, guard) = builder.finish(log_file.clone());
            (writer, guard, false)
        }
        None => {
            let (writer, guard) = builder.finish(std::io::stdout());
            (writer, guard, std::io::stdout().is_terminal())
        }
    };
    let counter = writer.error_counter();
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    // `ansi` is true only for a terminal: a file or a pipe gets JSON under `auto`.
    let result = if settings.format.is_json(ansi) {
        builder
            .json()
            .flatten_event(true)
            .map_event_format(WithAttempt::json)
            .try_init()
    } else {
        builder
            .compact()
            .map_event_format(WithAttempt::text)
            .try_init()
    };
    if result.is_err() {
        return Ok(empty);
    }
    let _ = INSTALLED.set(());
    let _ = DROPPED.set(counter.clone());
    if let Some(log_file) = &log_file {
        log_file.maintain_in_background();
    }
    let task = tokio::runtime::Handle::try_current()
        .ok()
        .map(|runtime| runtime.spawn(watch(log_file.clone(), counter)));
    tracing::debug!(service, file = ?settings.file, "telemetry initialised");
    Ok(TelemetryGuard {
        _worker: Some(guard),
        task,
    })
}

/// The telemetry task: SIGHUP reopens the log file; every [`TICK`] dropped lines are reported
/// and an idle file whose period ended is rotated; every [`MAINTAIN_EVERY`] generations are
/// compressed and pruned.
async fn watch(log_file: Option<LogFile>, counter: ErrorCounter) {
    use tokio::signal::unix::{SignalKind, signal};
    // Only with a file: without one SIGHUP keeps whatever meaning the process gives it.
    let mut hangups = match &log_file {
        Some(_) => match signal(SignalKind::hangup()) {
            Ok(stream) => Some(stream),
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGHUP: the log file will not be reopened on it");
                None
            }
        },
        None => None,
    };
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_maintained = tokio::time::Instant::now();
    let mut reported: usize = 0;
    loop {
        let hangup = async {
            match hangups.as_mut() {
                Some(stream) => stream.recv().await.is_some(),
                None => std::future::pending().await,
            }
        };
        // Some(open): a SIGHUP (or the stream's end); None: a tick.
        let event = tokio::select! {
            open = hangup => Some(open),
            _ = tick.tick() => None,
        };
        match event {
            Some(false) => hangups = None,
            Some(true) => {
                if let Some(log_file) = log_file.clone() {
                    match tokio::task::spawn_blocking(move || log_file.reopen()).await {
                        Ok(Ok(())) => tracing::info!("log file reopened on SIGHUP"),
                        Ok(Err(error)) => {
                            eprintln!("upkeep: reopening the log file on SIGHUP: {error}");
                        }
                        Err(error) => {
                            eprintln!("upkeep: reopening the log file on SIGHUP: {error}")
                        }
                    }
                }
            }
            None => {
                let dropped = counter.dropped_lines();
                if dropped > reported {
                    tracing::warn!(
                        n_dropped = dropped - reported,
                        total_dropped = dropped,
                        "log lines dropped: the log output is slower than the log rate"
                    );
                    reported = dropped;
                }
                if let Some(log_file) = log_file.clone() {
                    let maintain = last_maintained.elapsed() >= MAINTAIN_EVERY;
                    if maintain {
                        last_maintained = tokio::time::Instant::now();
                    }
                    let _ = tokio::task::spawn_blocking(move || {
                        log_file.rotate_if_due();
                        if maintain {
                            log_file.maintain_in_background();
                        }
                    })
                    .await;
                }
            }
        }
    }
}

/// The `[telemetry]` section.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySettings {
    /// Log line format: `auto` (the default: JSON unless the lines go to a terminal), `json`
    /// or `pretty`; `UPKEEP_LOG_FORMAT` overrides it.
    pub format: LogFormat,
    /// Default `tracing` filter when `RUST_LOG` is unset. Defaults to `info`.
    pub filter: String,
    /// The daemons' log file (absolute). Unset (the default): stdout, which journald or pm2
    /// collects.
    pub file: Option<PathBuf>,
    /// Rotate the file before a line once it holds at least this much. Defaults to 100MiB.
    pub rotate_size: ByteSize,
    /// Rotate the file at each boundary of this period, counted in UTC from the epoch (`1d`:
    /// at midnight UTC). Defaults to 1d.
    #[serde(with = "humantime_serde")]
    pub rotate_age: Duration,
    /// Generations kept (0: no count limit). Defaults to 14.
    pub keep: u32,
    /// Generations older than this are deleted. Defaults to none.
    #[serde(with = "humantime_serde")]
    pub max_age: Option<Duration>,
    /// Compression of every generation but the newest. Defaults to `zstd`.
    pub compress: Compression,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Auto,
            filter: "info".to_owned(),
            file: None,
            rotate_size: ByteSize(100 << 20),
            rotate_age: Duration::from_secs(86_400),
            keep: 14,
            max_age: None,
            compress: Compression::Zstd,
        }
    }
}

impl crate::settings::Section for TelemetrySettings {
    fn validate(&self, path: &str, problems: &mut crate::settings::Problems) {
        if let Err(e) = EnvFilter::try_new(&self.filter) {
            problems.push(
                format!("{path}.filter"),
                format!("invalid tracing filter {:?}: {e}", self.filter),
            );
        }
        if let Some(file) = &self.file {
            let has_name = file.file_name().is_some_and(|name| !name.is_empty());
            if !file.is_absolute() || !has_name {
                problems.push(
                    format!("{path}.file"),
                    format!("must be an absolute path to a file, got {file:?}"),
                );
            }
        }
        if self.rotate_size.bytes() == 0 {
            problems.push(format!("{path}.rotate_size"), "must be more than 0 bytes");
        }
        if self.rotate_age < Duration::from_secs(1) {
            problems.push(format!("{path}.rotate_age"), "must be at least 1s");
        }
    }
}
