//! [`Daemon`]: what every daemon's `main` does around its loop, so that each binary stays a
//! few lines and every daemon behaves the same under systemd, PM2 or compose.
//!
//! The life of a daemon:
//! 1. [`Daemon::start`]: `--help`, `--version` and `--check-config` answer and exit; the
//!    settings load (exit 2 naming every bad key); telemetry starts; SIGTERM/SIGINT are
//!    connected to the [`Shutdown`]; then the daemon waits, up to `[daemons] startup_timeout`,
//!    until Redis answers `PING`, Postgres answers, and the schema holds every migration this
//!    build embeds (applying them first when `database.migrate_on_start` is set). Past the
//!    timeout it exits 3, naming what did not answer.
//! 2. The binary builds its loop, then calls [`Daemon::ready`]: `READY=1` goes to systemd
//!    (when `NOTIFY_SOCKET` is set), and a supervisor task starts that sends `STATUS=` lines
//!    and, when `WATCHDOG_USEC` is set, `WATCHDOG=1` every half interval *only while the main
//!    loop's heartbeat ([`super::vitals`]) is younger than half the interval*. A loop stuck on
//!    a dependency that stopped answering stops the pings, and systemd restarts the process.
//! 3. On SIGTERM: `STOPPING=1`, the loop finishes its in-flight work within its grace period,
//!    and [`Daemon::finish`] exits 0 (1 when the loop failed).
//!
//! The scheduler runs its loop through [`Daemon::run_reloading`]: SIGHUP reloads the
//! configuration file and restarts the loop with it, which repeats the start-up reconcile of
//! schedules with the new file; a file with problems is refused and the running loop kept.
//!
//! Exit codes (also in `--help`, README and `docs/operations.md`): 0 a clean stop (or
//! `--help`/`--version`, or a stop requested while waiting for dependencies), 1 any other
//! failure, 2 a bad configuration or command line, 3 a dependency unavailable at start for
//! longer than `[daemons] startup_timeout`.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use sd_notify::NotifyState;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::vitals::vitals;
use crate::config::Settings;
use crate::outage::Outage;
use crate::queue::RedisConn;
use crate::shutdown::Shutdown;
use crate::store::schema::schema_state;

/// The commit this build was made from: the `UPKEEP_GIT_COMMIT` variable of the build, else
/// `git rev-parse --short HEAD` at build time in a release build (`unknown` without git), else
/// `dev` in a debug build.
pub const GIT_COMMIT: &str = env!("UPKEEP_GIT_COMMIT");

/// Exit code of a failure other than the ones below.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code of a bad configuration or command line.
pub const EXIT_BAD_CONFIG: u8 = 2;
/// Exit code when Redis, Postgres or the schema was not ready within
/// `[daemons] startup_timeout` of the start.
pub const EXIT_DEPENDENCY_UNAVAILABLE: u8 = 3;

/// How long one probe of a dependency may take at start.
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between two rounds of probes at start.
const PROBE_RETRY: Duration = Duration::from_millis(500);
/// How often `STATUS=` is refreshed when there is no watchdog to pace it.
const STATUS_PERIOD: Duration = Duration::from_secs(10);

/// A daemon between its start and its exit; see the module documentation.
#[derive(Debug)]
pub struct Daemon {
    service: &'static str,
    settings: Settings,
    /// Fired by SIGTERM/SIGINT; the binary's loop watches it.
    shutdown: Shutdown,
    /// The systemd watchdog interval (`WATCHDOG_USEC`), when one is armed for this process.
    watchdog: Option<Duration>,
    /// Set when the dependencies were not ready within `startup_timeout`: the daemon was
    /// stopped and exits 3.
    gave_up: Arc<AtomicBool>,
    /// The log writer; dropped last, when `finish` returns.
    _telemetry: crate::telemetry::TelemetryGuard,
}

impl Daemon {
    /// Step 1 of the module documentation: arguments, settings, telemetry, signals.
    /// `summary` is the one-line description `--help` prints.
    ///
    /// # Errors
    /// The exit code to return from `main` when the process must not go on: 0 after `--help`,
    /// `--version` or `--check-config` with a good file, 2 for a bad configuration or
    /// argument, 1 when the signal handlers could not be installed.
    pub async fn start(service: &'static str, summary: &str) -> Result<Self, ExitCode> {
        if let Some(code) = answer_arguments(service, summary, std::env::args().skip(1)) {
            return Err(code);
        }
        let settings = match Settings::load() {
            Ok(settings) => settings,
            Err(error) => {
                eprintln!("{service}: {error}");
                return Err(ExitCode::from(EXIT_BAD_CONFIG));
            }
        };
        // Held by the daemon until it exits: dropping it flushes the non-blocking writer.
        let telemetry = match crate::telemetry::init_daemon(service, &settings.telemetry) {
            Ok(guard) => guard,
            Err(error) => {
                eprintln!("{service}: telemetry.file: {error}");
                return Err(ExitCode::from(EXIT_BAD_CONFIG));
            }
        };
        tracing::info!(
            service,
            version = env!("CARGO_PKG_VERSION"),
            commit = GIT_COMMIT,
            settings = %settings.redacted_summary(),
            "starting"
        );
        let shutdown = Shutdown::new();
        if let Err(error) = shutdown.on_signals() {
            tracing::error!(error = %error, "cannot install signal handlers");
            return Err(ExitCode::from(EXIT_FAILURE));
        }
        // Also on stops requested before READY: systemd then knows the stop is under way.
        tokio::spawn(announce_stopping(shutdown.clone()));
        let mut watchdog_usec = 0;
        let watchdog = sd_notify::watchdog_enabled(false, &mut watchdog_usec)
            .then(|| Duration::from_micros(watchdog_usec))
            .filter(|interval| !interval.is_zero());
        Ok(Self {
            service,
            settings,
            shutdown,
            watchdog,
            gave_up: Arc::new(AtomicBool::new(false)),
            _telemetry: telemetry,
        })
    }

    /// The loaded settings.
    #[must_use]
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The shutdown latch SIGTERM and SIGINT fire.
    #[must_use]
    pub fn shutdown(&self) -> Shutdown {
        self.shutdown.clone()
    }

    /// Step 2, called once the loop is built and about to run: a task waits, up to
    /// `[daemons] startup_timeout`, until Redis answers `PING`, Postgres answers and the schema
    /// is current, then tells systemd `READY=1` and starts the supervisor (`STATUS=` lines
    /// prefixed by `doing`, and the watchdog). The loop runs meanwhile, waiting out outages as
    /// it always does; past the timeout the task logs what did not answer and stops the
    /// daemon, which then exits 3.
    pub fn ready(&self, doing: impl Into<String>) {
        let doing = doing.into();
        let settings = self.settings.clone();
        let shutdown = self.shutdown.clone();
        let watchdog = self.watchdog;
        let gave_up = self.gave_up.clone();
        let service = self.service;
        notify(&[NotifyState::Status(
            "starting: waiting for redis, postgres and the schema",
        )]);
        tokio::spawn(async move {
            match wait_for_dependencies(&settings, &shutdown).await {
                Ok(()) => {
                    // The loop's own beats follow; readiness counts as the first sign of life,
                    // so a loop that never makes progress stops the pings half an interval on.
                    vitals().beat();
                    notify(&[NotifyState::Ready, NotifyState::Status(&doing)]);
                    tracing::info!(
                        watchdog = ?watchdog,
                        "ready (dependencies answered, schema current)"
                    );
                    supervise(doing, watchdog, shutdown).await;
                }
                Err(Unready::Stopped) => {}
                Err(Unready::TimedOut(what)) => {
                    let timeout =
                        crate::settings::duration::format(settings.daemons.startup_timeout);
                    tracing::error!(
                        waited = %timeout, problem = %what,
                        "dependencies unavailable at start; stopping (exit 3)"
                    );
                    eprintln!(
                        "{service}: not ready after {timeout} ([daemons] startup_timeout): {what}"
                    );
                    notify(&[NotifyState::Status(&format!("failed to start: {what}"))]);
                    gave_up.store(true, Ordering::Release);
                    shutdown.trigger();
                }
            }
        });
    }

    /// Makes the API's heartbeat: every quarter of the watchdog interval (at most every 5s),
    /// a `GET /api/v1/health` to `addr` (the loopback address when `addr` is a wildcard) goes
    /// through the accept loop and the router; any HTTP answer within the probe's time is a
    /// beat. Nothing is sent without a watchdog.
    pub fn probe_http(&self, addr: SocketAddr) {
        let Some(interval) = self.watchdog else {
            return;
        };
        let target = SocketAddr::new(
            match addr.ip() {
                IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
                ip => ip,
            },
            addr.port(),
        );
        let period = (interval / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            while !shutdown.is_triggered() {
                if tokio::time::timeout(period * 2, http_answers(target))
                    .await
                    .is_ok_and(|answered| answered)
                {
                    vitals().beat();
                }
                tokio::select! {
                    () = tokio::time::sleep(period) => {}
                    () = shutdown.wait() => return,
                }
            }
        });
    }

    /// Runs `run(settings, stop)` until SIGTERM; on SIGHUP reloads the configuration and, when
    /// it has no problems, stops the running loop (its own `stop` fires) and runs a new one
    /// with the new settings, which repeats the loop's start-up (for the scheduler: the
    /// reconcile of schedules with the file). A file with problems is logged and ignored.
    ///
    /// # Errors
    /// When the loop fails, or SIGHUP cannot be listened to.
    pub async fn run_reloading<F, Fut>(&self, mut run: F) -> anyhow::Result<()>
    where
        F: FnMut(Settings, Shutdown) -> Fut,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hangup = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
        let mut settings = self.settings.clone();
        loop {
            let stop = Shutdown::new();
            let mut running = std::pin::pin!(run(settings.clone(), stop.clone()));
            let mut reload = None;
            let result = loop {
                tokio::select! {
                    result = &mut running => break result,
                    () = self.shutdown.wait(), if !stop.is_triggered() => stop.trigger(),
                    _ = hangup.recv(), if !stop.is_triggered() => match Settings::load() {
                        Ok(new_settings) => {
                            tracing::info!(
                                settings = %new_settings.redacted_summary(),
                                "SIGHUP: configuration reloaded; restarting the loop with it"
                            );
                            notify(&[NotifyState::Status("reloading the configuration")]);
                            reload = Some(new_settings);
                            stop.trigger();
                        }
                        Err(error) => tracing::error!(
                            error = %error,
                            "SIGHUP: the configuration file has problems; keeping the running configuration"
                        ),
                    },
                }
            };
            match reload {
                Some(new_settings) if !self.shutdown.is_triggered() => {
                    result?;
                    settings = new_settings;
                }
                _ => return result,
            }
        }
    }

    /// Step 3: logs how the loop ended and gives the exit code: 3 when the dependencies were
    /// not ready in time, else 0 or 1.
    #[must_use]
    pub fn finish(self, result: anyhow::Result<()>) -> ExitCode {
        if self.gave_up.load(Ordering::Acquire) {
            return ExitCode::from(EXIT_DEPENDENCY_UNAVAILABLE);
        }
        match result {
            Ok(()) => {
                tracing::info!(service = self.service, "stopped cleanly");
                ExitCode::SUCCESS
            }
            Err(error) => {
                tracing::error!(
                    error = %error, error.chain = ?error, "stopped on an error"
                );
                eprintln!("{}: {error:#}", self.service);
                notify(&[NotifyState::Status(&format!("failed: {error}"))]);
                ExitCode::from(EXIT_FAILURE)
            }
        }
    }
}

/// `--help`, `--version`, `--check-config`: the exit code when an argument answers (or is
/// unknown), `None` when the daemon should run.
fn answer_arguments(
    service: &str,
    summary: &str,
    mut args: impl Iterator<Item = String>,
) -> Option<ExitCode> {
    // The first argument decides; daemons take no other.
    let arg = args.next()?;
    match arg.as_str() {
        "--help" | "-h" => {
            print!("{}", help(service, summary));
            Some(ExitCode::SUCCESS)
        }
        "--version" | "-V" => {
            println!("{}", version(service));
            Some(ExitCode::SUCCESS)
        }
        "--check-config" => Some(crate::config::check_and_report(service, None)),
        other => {
            eprintln!(
                "{service}: unknown argument {other:?}\nUsage: {service} [--check-config | --version | --help]"
            );
            Some(ExitCode::from(EXIT_BAD_CONFIG))
        }
    }
}

/// `upkeep-api 0.1.0 (commit 1a2b3c4)`.
fn version(service: &str) -> String {
    format!(
        "{service} {} (commit {GIT_COMMIT})",
        env!("CARGO_PKG_VERSION")
    )
}

fn help(service: &str, summary: &str) -> String {
    format!(
        "{version}
{summary}

Usage: {service} [--check-config | --version | --help]

Options:
  --check-config  Validate the configuration, print every problem, exit 0 or 2; connects to nothing
  --version, -V   Print the version and the git commit it was built from
  --help, -h      Print this help

Configuration: the file UPKEEP_CONFIG (default ./upkeep.toml), then UPKEEP__SECTION__KEY variables,
then DATABASE_URL, REDIS_URL, UPKEEP_API_TOKEN, UPKEEP_SECRET_KEY, UPKEEP_LOG_FORMAT (json|pretty).
See upkeep.example.toml and docs/operations.md.

Signals: SIGTERM/SIGINT stop gracefully (running jobs get [worker] grace_period);
SIGHUP reloads what can be reloaded (upkeep-scheduler: the schedules, with the start-up reconcile).

systemd: Type=notify. READY=1 after Redis and Postgres answered and the schema is current;
WATCHDOG=1 while the main loop makes progress; STATUS= lines; STOPPING=1 on SIGTERM.

Exit codes:
  0  stopped cleanly (SIGTERM/SIGINT), or --help/--version/--check-config succeeded
  1  any other failure
  2  bad configuration or command line
  3  Redis, Postgres or the schema not ready within [daemons] startup_timeout of the start
",
        version = version(service)
    )
}

/// Sends states to systemd when `NOTIFY_SOCKET` is set; a failure is logged at debug and
/// otherwise ignored (the daemon works the same without a service manager).
fn notify(states: &[NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(false, states) {
        tracing::debug!(error = %error, "cannot notify the service manager");
    }
}

/// Why the daemon is not ready.
enum Unready {
    /// A shutdown was requested while waiting.
    Stopped,
    /// `startup_timeout` passed; what was still missing.
    TimedOut(String),
}

/// Waits until Redis answers `PING`, Postgres answers and the schema is current (after
/// applying the migrations when `database.migrate_on_start` is set), or until the startup
/// timeout or a shutdown. Each outage is logged once (through [`Outage`]).
async fn wait_for_dependencies(settings: &Settings, shutdown: &Shutdown) -> Result<(), Unready> {
    let deadline = tokio::time::Instant::now() + settings.daemons.startup_timeout;
    // Both constructors only parse, which `Settings::load` already did.
    let pool = settings
        .database
        .connect_lazy()
        .map_err(|e| Unready::TimedOut(format!("bad database URL: {e}")))?;
    let redis = RedisConn::open(&settings.redis.target())
        .map_err(|e| Unready::TimedOut(format!("bad redis URL: {e}")))?;
    let mut redis_outage = Outage::new("redis", "wait until ready");
    let mut postgres_outage = Outage::new("postgres", "wait until ready");
    let mut schema_warned = None::<String>;
    let result = loop {
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let probe_timeout = PROBE_TIMEOUT.min(remaining.max(Duration::from_millis(100)));
        let mut conn = redis.clone();
        let ping = redis::cmd("PING");
        let redis_probe =
            tokio::time::timeout(probe_timeout, ping.query_async::<String>(&mut conn)).await;
        let problem = match redis_probe {
            Ok(Ok(_)) => {
                redis_outage.recovered();
                check_postgres(settings, &pool, probe_timeout, &mut postgres_outage).await
            }
            Ok(Err(error)) => {
                redis_outage.failed(&error);
                Some(format!("redis does not answer: {error}"))
            }
            Err(_) => {
                let message = format!("redis did not answer PING within {probe_timeout:?}");
                redis_outage.failed(&std::io::Error::other(message.clone()));
                Some(message)
            }
        };
        let Some(problem) = problem else { break Ok(()) };
        if problem.starts_with("schema:") && schema_warned.as_ref() != Some(&problem) {
            tracing::warn!(problem = %problem, "waiting for the schema before becoming ready");
            schema_warned = Some(problem.clone());
        }
        if tokio::time::Instant::now() >= deadline {
            break Err(Unready::TimedOut(problem));
        }
        notify(&[NotifyState::Status(&format!("starting: {problem}"))]);
        tokio::select! {
            () = tokio::time::sleep(PROBE_RETRY.min(remaining)) => {}
            () = shutdown.wait() => break Err(Unready::Stopped),
        }
    };
    pool.close().await;
    result
}

/// Postgres answers and its schema is current (migrating first when configured): `None`, or
/// what is wrong (`schema: …` for the schema).
async fn check_postgres(
    settings: &Settings,
    pool: &sqlx::PgPool,
    timeout: Duration,
    outage: &mut Outage,
) -> Option<String> {
    if settings.database.migrate_on_start {
        match tokio::time::timeout(
            timeout.max(Duration::from_secs(30)),
            crate::MIGRATOR.run(pool),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                outage.failed(&error);
                return Some(format!("cannot apply migrations: {error}"));
            }
            Err(_) => return Some("applying migrations took too long".to_owned()),
        }
    }
    match tokio::time::timeout(timeout, schema_state(pool)).await {
        Ok(Ok(state)) => {
            outage.recovered();
            if !state.unknown.is_empty() {
                tracing::info!(
                    versions = ?state.unknown,
                    "the database has migrations this build does not know (a newer release's); \
                     they are compatible with this one by policy"
                );
            }
            state.problem().map(|problem| format!("schema: {problem}"))
        }
        Ok(Err(error)) => {
            outage.failed(&error);
            Some(format!("postgres does not answer: {error}"))
        }
        Err(_) => Some(format!("postgres did not answer within {timeout:?}")),
    }
}

/// Sends `STOPPING=1` when the shutdown latch fires.
async fn announce_stopping(shutdown: Shutdown) {
    shutdown.wait().await;
    notify(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: finishing the work in flight"),
    ]);
}

/// The supervisor task: `STATUS=` every period, and `WATCHDOG=1` every half interval while the
/// main loop's last beat is younger than half the interval. Ends at shutdown.
async fn supervise(doing: String, watchdog: Option<Duration>, shutdown: Shutdown) {
    let period = watchdog.map_or(STATUS_PERIOD, |interval| interval / 2);
    let mut stalled = false;
    loop {
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            () = shutdown.wait() => return,
        }
        let summary = vitals().summary();
        let status = if summary.is_empty() {
            doing.clone()
        } else {
            format!("{doing}; {summary}")
        };
        let Some(interval) = watchdog else {
            notify(&[NotifyState::Status(&status)]);
            continue;
        };
        let age = vitals().since_beat().unwrap_or(Duration::MAX);
        if age <= interval / 2 {
            if stalled {
                tracing::info!("the main loop makes progress again; watchdog pings resumed");
                stalled = false;
            }
            notify(&[NotifyState::Watchdog, NotifyState::Status(&status)]);
        } else {
            if !stalled {
                tracing::warn!(
                    since_progress = ?age,
                    "the main loop has made no progress for half the watchdog interval; \
                     withholding watchdog pings"
                );
                stalled = true;
            }
            notify(&[NotifyState::Status(&format!(
                "stalled: no progress for {}s; {status}",
                age.as_secs()
            ))]);
        }
    }
}

/// Whether an HTTP server at `target` answers a health request with a status line.
async fn http_answers(target: SocketAddr) -> bool {
    let Ok(mut stream) = tokio::net::TcpStream::connect(target).await else {
        return false;
    };
    let request = "GET /api/v1/health HTTP/1.1\r\nHost: localhost\r\nUser-Agent: upkeep-watchdog\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = [0_u8; 12];
    stream.read_exact(&mut head).await.is_ok() && head.starts_with(b"HTTP/1.")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(args: &[&str]) -> Option<ExitCode> {
        answer_arguments(
            "upkeep-test",
            "a test daemon",
            args.iter().map(|a| (*a).to_owned()),
        )
    }

    #[test]
    fn no_argument_runs_and_an_unknown_one_is_a_usage_error() {
        assert_eq!(answer(&[]), None);
        assert_eq!(
            answer(&["--frobnicate"]),
            Some(ExitCode::from(EXIT_BAD_CONFIG))
        );
        assert_eq!(answer(&["--version"]), Some(ExitCode::SUCCESS));
    }

    #[test]
    fn help_documents_every_exit_code_and_the_version_names_the_commit() {
        let text = help("upkeep-test", "a test daemon");
        for line in ["  0  stopped", "  1  any", "  2  bad", "  3  Redis"] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
        assert!(version("upkeep-test").ends_with(&format!("(commit {GIT_COMMIT})")));
        assert!(!GIT_COMMIT.is_empty());
    }
}
