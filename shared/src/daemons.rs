//! The long-running processes: their settings sections (`[worker]`, `[scheduler]`,
//! `[maintenance]` (the periodic passes every worker runs), `[api]`, `[daemons]`) and the life
//! every daemon shares under a supervisor (systemd, PM2, compose).
//!
//! The daemons live in their own crates, which depend on `shared`; their sections live here so
//! `config` can compose them without depending on a binary crate. Nothing here imports `config`
//! except [`lifecycle`], which loads the settings for a daemon's `main`.
//!
//! - [`lifecycle`]: [`Daemon`], what every daemon's `main` does around its loop: `--help`,
//!   `--version`, `--check-config`, exit codes, waiting for Redis, Postgres and the schema
//!   before `READY=1`, `STATUS=`, the watchdog, `STOPPING=1`, and the scheduler's SIGHUP reload.
//! - [`vitals`]: the process-wide heartbeat the main loops feed and the watchdog reads, and
//!   what `STATUS=` lines say.

pub mod lifecycle;
pub mod vitals;

pub use lifecycle::{
    Daemon, EXIT_BAD_CONFIG, EXIT_DEPENDENCY_UNAVAILABLE, EXIT_FAILURE, GIT_COMMIT,
};
pub use vitals::{Vitals, vitals};

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::settings::{Problems, Section, check_min_duration};

/// The `[worker]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerSettings {
    /// How long running jobs get to finish after a shutdown signal. Defaults to 30s.
    #[serde(with = "crate::settings::duration")]
    pub grace_period: Duration,
    /// The worker's identity in leases and the ledger. Defaults to none, in which case the
    /// worker picks `hostname-pid` at start.
    pub identity: Option<String>,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            grace_period: Duration::from_secs(30),
            identity: None,
        }
    }
}

impl Section for WorkerSettings {
    fn validate(&self, path: &str, problems: &mut Problems) {
        if let Some(identity) = &self.identity {
            let valid = !identity.is_empty()
                && identity.len() <= 128
                && !identity
                    .chars()
                    .any(|c| c.is_control() || c.is_whitespace());
            if !valid {
                problems.push(
                    format!("{path}.identity"),
                    format!(
                        "must be 1-128 characters without spaces or control characters, got {identity:?}"
                    ),
                );
            }
        }
    }
}

/// The `[scheduler]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerSettings {
    /// The longest the scheduler sleeps between passes: it wakes at the next due tick, and at
    /// least this often to read pause flags and re-enqueue unconfirmed ticks. Defaults to 250ms;
    /// at least 10ms.
    #[serde(with = "crate::settings::duration")]
    pub tick_interval: Duration,
    /// A claimed tick whose enqueue is unconfirmed after this long is re-enqueued by any
    /// replica. Defaults to 10s; at least 100ms.
    #[serde(with = "crate::settings::duration")]
    pub confirm_timeout: Duration,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        Self {
            tick_interval: Duration::from_millis(250),
            confirm_timeout: Duration::from_secs(10),
        }
    }
}

impl Section for SchedulerSettings {
    fn validate(&self, path: &str, problems: &mut Problems) {
        check_min_duration(
            problems,
            format!("{path}.tick_interval"),
            self.tick_interval,
            Duration::from_millis(10),
        );
        check_min_duration(
            problems,
            format!("{path}.confirm_timeout"),
            self.confirm_timeout,
            Duration::from_millis(100),
        );
    }
}

/// The `[maintenance]` section: reconciliation of the ledger with Redis (see
/// `upkeep_shared::reconcile`) and pruning of the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaintenanceSettings {
    /// What to do with a job the ledger says never finished but Redis no longer knows.
    /// Defaults to [`ReconcileAction::Requeue`].
    pub reconcile_action: ReconcileAction,
    /// How often each worker process reconciles the queues it serves (with up to 10% jitter).
    /// Defaults to 5m; at least 100ms.
    #[serde(with = "crate::settings::duration")]
    pub reconcile_interval: Duration,
    /// Only jobs whose last ledger entry is older than this are judged. Defaults to 10m; at
    /// least 1s.
    #[serde(with = "crate::settings::duration")]
    pub reconcile_grace: Duration,
    /// How long finished `job_runs` rows (with their findings) and `schedule_ticks` rows are
    /// kept; workers delete older ones in bounded batches every `ledger_prune_interval`. The
    /// newest tick of each schedule is always kept (catch-up starts from it). Defaults to 90d;
    /// at least 1h and longer than `reconcile_grace`.
    #[serde(with = "crate::settings::duration")]
    pub ledger_retention: Duration,
    /// How often each worker process prunes the ledger (with up to 10% jitter). Defaults to 1h;
    /// at least 1s.
    #[serde(with = "crate::settings::duration")]
    pub ledger_prune_interval: Duration,
}

/// `maintenance.reconcile_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReconcileAction {
    /// Put the job back in its queue (same id, arguments from the ledger) with a warn finding.
    Requeue,
    /// Record it as lost: an `abandoned` run with `next_state = 'dead'` and a critical finding.
    Record,
    /// Do not reconcile periodically (`upkeepctl reconcile` still works).
    Off,
}

impl ReconcileAction {
    /// The config spelling.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requeue => "requeue",
            Self::Record => "record",
            Self::Off => "off",
        }
    }

    /// Parses the config spelling.
    ///
    /// # Errors
    /// A message naming the expected values.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "requeue" => Ok(Self::Requeue),
            "record" => Ok(Self::Record),
            "off" => Ok(Self::Off),
            other => Err(format!(
                "expected \"requeue\", \"record\" or \"off\", got {other:?}"
            )),
        }
    }
}

impl Default for MaintenanceSettings {
    fn default() -> Self {
        Self {
            reconcile_action: ReconcileAction::Requeue,
            reconcile_interval: Duration::from_secs(300),
            reconcile_grace: Duration::from_secs(600),
            ledger_retention: Duration::from_secs(90 * 24 * 3600),
            ledger_prune_interval: Duration::from_secs(3600),
        }
    }
}

impl Section for MaintenanceSettings {
    fn validate(&self, path: &str, problems: &mut Problems) {
        check_min_duration(
            problems,
            format!("{path}.reconcile_interval"),
            self.reconcile_interval,
            Duration::from_millis(100),
        );
        check_min_duration(
            problems,
            format!("{path}.reconcile_grace"),
            self.reconcile_grace,
            Duration::from_secs(1),
        );
        let hour = Duration::from_secs(3600);
        check_min_duration(
            problems,
            format!("{path}.ledger_retention"),
            self.ledger_retention,
            hour,
        );
        if self.ledger_retention >= hour && self.ledger_retention <= self.reconcile_grace {
            // Reconciliation reads the ledger rows of jobs that never finished; pruning them
            // first would make a lost job untraceable.
            problems.push(
                format!("{path}.ledger_retention"),
                format!(
                    "must be longer than {path}.reconcile_grace ({}), got {}",
                    crate::settings::duration::format(self.reconcile_grace),
                    crate::settings::duration::format(self.ledger_retention)
                ),
            );
        }
        check_min_duration(
            problems,
            format!("{path}.ledger_prune_interval"),
            self.ledger_prune_interval,
            Duration::from_secs(1),
        );
    }
}

/// The `[api]` section.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSettings {
    /// Listen address. Defaults to `127.0.0.1:8080`; `UPKEEP_API_ADDR` overrides it.
    #[serde(deserialize_with = "socket_addr")]
    pub addr: SocketAddr,
    /// Bearer token required by every route except health and metrics. Defaults to none
    /// (no auth); `UPKEEP_API_TOKEN` sets it. Also `token_env = "VAR"` or `token_file = "…"`.
    #[serde(serialize_with = "crate::settings::redacted")]
    pub token: Option<SecretString>,
    /// `[[api.tokens]]`: named tokens with a role each (see [`crate::api_access`]).
    pub tokens: Vec<crate::api_access::ApiToken>,
    /// Mutating calls each token may make per minute (a token bucket of this size, refilled
    /// evenly). Defaults to 60.
    pub mutating_rate_per_minute: u32,
    /// Origins allowed to call the API from a browser. Defaults to none: no CORS headers.
    pub cors_origins: Vec<String>,
    /// Marks the dashboard's session cookie `Secure` on every response, for a server behind
    /// a TLS-terminating proxy that does not send `X-Forwarded-Proto: https`. Defaults to
    /// false (the cookie is `Secure` when that header says the request came over TLS).
    pub secure_cookies: bool,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token: None,
            tokens: Vec::new(),
            mutating_rate_per_minute: 60,
            cors_origins: Vec::new(),
            secure_cookies: false,
        }
    }
}

/// Reads a socket address, naming the bad value (serde's own message does not).
fn socket_addr<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.trim().parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "not a socket address such as 127.0.0.1:8080: {text:?}"
        ))
    })
}

impl Section for ApiSettings {
    const SECRET_KEYS: &'static [&'static str] = &["token", "tokens[].token"];

    fn validate(&self, path: &str, problems: &mut Problems) {
        if let Some(token) = &self.token
            && token.expose_secret().trim().is_empty()
        {
            problems.push(format!("{path}.token"), "must not be blank");
        }
        crate::api_access::validate(
            &self.tokens,
            self.mutating_rate_per_minute,
            &self.cors_origins,
            path,
            problems,
        );
    }
}

/// The `[daemons]` section: what every daemon's start-up and supervision share.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonsSettings {
    /// How long a daemon waits at start for Redis and Postgres to answer and for the schema to
    /// be current before it gives up with exit code 3. Defaults to 60s; at least 1s. Keep it
    /// below the supervisor's start timeout (`TimeoutStartSec=` in the systemd units).
    #[serde(with = "crate::settings::duration")]
    pub startup_timeout: Duration,
}

impl Default for DaemonsSettings {
    fn default() -> Self {
        Self {
            startup_timeout: Duration::from_secs(60),
        }
    }
}

impl Section for DaemonsSettings {
    fn validate(&self, path: &str, problems: &mut Problems) {
        check_min_duration(
            problems,
            format!("{path}.startup_timeout"),
            self.startup_timeout,
            Duration::from_secs(1),
        );
    }
}
