//! The typed `Settings` tree every binary loads at start: `upkeep.toml` plus environment overrides.
//!
//! Layers, lowest first: built-in defaults, the TOML file (`UPKEEP_CONFIG`, else `./upkeep.toml`
//! when it exists), generic `UPKEEP__SECTION__KEY` variables, then the named variables of the
//! public contract (`DATABASE_URL`, `REDIS_URL`, `UPKEEP_API_TOKEN`, `UPKEEP_SECRET_KEY`,
//! `UPKEEP_LOG_FORMAT`, `UPKEEP_API_ADDR`), which win over everything.
//!
//! Everything is validated once, here, at load; every problem is collected and reported with the
//! key it came from (a TOML path, or the environment variable that set it) and the bad value.
//! Secrets (database and Redis URLs, the API token, the secret key) are held as `secrecy` types,
//! so they never reach `Debug` output, errors or logs; URLs are shown with their userinfo
//! redacted. This is the only module that reads environment variables: library code receives
//! values from `Settings` and never looks them up.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use base64::Engine as _;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use toml::{Table, Value};

use crate::job::{self, JobKind, QueueName};
use crate::queue::SentinelUrl;
use crate::schedule::{self, CatchUp, CronExpr, Overlap};
use crate::settings::{Problems, Section};
use crate::tasks::TasksSettings;
use crate::telemetry::LogFormat;

/// Every setting of every binary. Each binary reads only the sections it needs.
///
/// Build it with [`Settings::load`] (the process environment) or [`Settings::from_toml_str`]
/// (tests); [`Settings::default`] gives the built-in defaults.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The Postgres ledger.
    pub database: DatabaseSettings,
    /// The Redis server (or cluster) holding the queues.
    pub redis: RedisSettings,
    /// Per-queue policies. Every queue of [`job::QUEUES`] is present, with defaults when the file
    /// does not mention it.
    pub queues: BTreeMap<QueueName, QueueSettings>,
    /// Per-kind overrides of the queue policy, keyed by catalog kind (`system.ping`).
    pub kinds: BTreeMap<String, KindSettings>,
    /// The cron schedules, in file order.
    pub schedules: Vec<ScheduleSettings>,
    /// Worker daemons.
    pub worker: WorkerSettings,
    /// The scheduler daemon.
    pub scheduler: SchedulerSettings,
    /// `[maintenance]`: the periodic reconciliation of the ledger with Redis.
    pub maintenance: MaintenanceSettings,
    /// The HTTP API.
    pub api: ApiSettings,
    /// `[backups]`: the backup worker's directory, databases and retention.
    pub backups: crate::backup::BackupSettings,
    /// Logging.
    pub telemetry: TelemetrySettings,
    /// `[tasks]`: the checklist's time zone and item overrides.
    pub tasks: TasksSettings,
    /// AES-256-GCM key for stored credentials. Defaults to none; only the token worker needs it.
    pub secret_key: Option<SecretKey>,
    /// The config file these settings came from; `None` for built-in defaults or a string.
    pub loaded_from: Option<PathBuf>,
}

/// The `[database]` section.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `postgres://` URL. Defaults to `postgres://postgres@127.0.0.1:5432/upkeep`; `DATABASE_URL`
    /// overrides it.
    pub url: SecretString,
    /// Pool size per process, 1 to 1000. Defaults to 10.
    pub max_connections: u32,
    /// Apply pending migrations when a daemon starts. Defaults to false (run `upkeepctl migrate`).
    pub migrate_on_start: bool,
    /// How long to wait for a connection (also the pool's acquire timeout). Defaults to 5s.
    pub connect_timeout: Duration,
}

/// The `[redis]` section.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://` or `rediss://` URL of one server, or `redis+sentinel://` URL of a
    /// Sentinel-managed master (format in [`SentinelUrl`]). Defaults to
    /// `redis://127.0.0.1:6379/`; `REDIS_URL` overrides it.
    pub url: SecretString,
    /// Initial nodes of a Redis Cluster. When non-empty, cluster mode is used and `url` is
    /// ignored. Defaults to empty.
    pub cluster_urls: Vec<SecretString>,
    /// Prefix of every Redis key. Defaults to `upkeep`.
    pub key_prefix: KeyPrefix,
    /// How long to wait for a Redis reply before the call fails. Defaults to 5s.
    pub response_timeout: Duration,
}

/// A validated Redis key prefix: 1 to 64 characters of `[A-Za-z0-9_.-]`.
///
/// It never contains `{`, `}` or `:`, so it cannot break the hash tags or key separators that
/// `queue` builds around it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyPrefix(String);

/// One queue's policy, the `[queues.NAME]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSettings {
    /// Jobs a worker process runs at once on this queue, 1 to 10000. Defaults to 16.
    pub concurrency: u32,
    /// How long a claimed job stays leased to its worker without renewal, at least 1s.
    /// Defaults to 30s.
    pub lease: Duration,
    /// How long finished jobs stay in Redis. Defaults to 1h.
    pub retention: Duration,
    /// How long dead letters stay in Redis. Defaults to 7d.
    pub dead_retention: Duration,
    /// Attempts before a job is dead, 1 to 100. Defaults to 3.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt. Defaults to 1s.
    pub backoff_base: Duration,
    /// Upper bound of the retry delay. Defaults to 5m.
    pub backoff_max: Duration,
    /// Jobs moved per Redis script call (claims, promotions, expiries), 1 to 1000.
    /// Defaults to 64.
    pub batch_size: u32,
    /// Per-attempt handler timeout. Defaults to 1h.
    pub timeout: Duration,
}

/// Per-kind overrides of the queue policy, the `[kinds."KIND"]` section. `None` keeps the
/// queue's value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KindSettings {
    /// Overrides [`QueueSettings::max_attempts`].
    pub max_attempts: Option<u32>,
    /// Overrides [`QueueSettings::timeout`].
    pub timeout: Option<Duration>,
    /// Overrides [`QueueSettings::backoff_base`].
    pub backoff_base: Option<Duration>,
    /// Overrides [`QueueSettings::backoff_max`].
    pub backoff_max: Option<Duration>,
}

/// The effective retry and timeout policy of one kind on one queue (see [`Settings::job_policy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobPolicy {
    /// Attempts before the job is dead.
    pub max_attempts: u32,
    /// Per-attempt handler timeout.
    pub timeout: Duration,
    /// First retry delay.
    pub backoff_base: Duration,
    /// Upper bound of the retry delay.
    pub backoff_max: Duration,
}

/// One `[[schedules]]` entry: a cron definition that produces jobs.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleSettings {
    /// Unique name, 1 to 64 characters of `[a-z0-9_.-]`.
    pub name: String,
    /// Cron expression (crontab(5) syntax, optionally with a leading seconds field), see [`CronExpr`].
    pub cron: CronExpr,
    /// IANA time zone the expression is read in. Defaults to UTC.
    pub timezone: chrono_tz::Tz,
    /// The job kind to enqueue; must have a handler in this build.
    pub kind: JobKind,
    /// Job arguments, validated against the kind. Defaults to `{}`.
    pub args: serde_json::Value,
    /// The queue its jobs go to; must be configured. Defaults to the kind's default queue.
    pub queue: QueueName,
    /// What to do with ticks missed while no scheduler ran. Defaults to `latest`.
    pub catch_up: CatchUp,
    /// Only ticks this recent are caught up. Defaults to 1h.
    pub catch_up_window: Duration,
    /// At most this many ticks are caught up at once (with `all`), 1 to 10000. Defaults to 100.
    pub catch_up_max: u32,
    /// What to do when the previous job of this schedule is still unfinished. Defaults to
    /// `allow`, or `skip` for `backup.*` kinds (see [`default_overlap`]).
    pub overlap: Overlap,
    /// Random delay added to each enqueue, at most 1h. Defaults to 0.
    pub jitter: Duration,
    /// Whether the schedule fires at all. Defaults to true.
    pub enabled: bool,
}

/// The `[worker]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerSettings {
    /// How long running jobs get to finish after a shutdown signal. Defaults to 30s.
    pub grace_period: Duration,
    /// The worker's identity in leases and the ledger. Defaults to none, in which case the
    /// worker picks `hostname-pid` at start.
    pub identity: Option<String>,
}

/// The `[scheduler]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerSettings {
    /// The longest the scheduler sleeps between passes: it wakes at the next due tick, and at
    /// least this often to read pause flags and re-enqueue unconfirmed ticks. Defaults to 250ms.
    pub tick_interval: Duration,
    /// A claimed tick whose enqueue is unconfirmed after this long is re-enqueued by any
    /// replica. Defaults to 10s.
    pub confirm_timeout: Duration,
}

/// The `[maintenance]` section: reconciliation of the ledger with Redis (see
/// `upkeep_shared::reconcile`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceSettings {
    /// What to do with a job the ledger says never finished but Redis no longer knows.
    /// Defaults to [`ReconcileAction::Requeue`].
    pub reconcile_action: ReconcileAction,
    /// How often each worker process reconciles the queues it serves (with up to 10% jitter).
    /// Defaults to 5m.
    pub reconcile_interval: Duration,
    /// Only jobs whose last ledger entry is older than this are judged. Defaults to 10m; at
    /// least 1s.
    pub reconcile_grace: Duration,
    /// How long finished `job_runs` rows (with their findings) and `schedule_ticks` rows are
    /// kept; workers delete older ones in bounded batches every `ledger_prune_interval`. The
    /// newest tick of each schedule is always kept (catch-up starts from it). Defaults to 90d;
    /// at least 1h and longer than `reconcile_grace`.
    pub ledger_retention: Duration,
    /// How often each worker process prunes the ledger (with up to 10% jitter). Defaults to 1h.
    pub ledger_prune_interval: Duration,
}

/// `maintenance.reconcile_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// The `[api]` section.
#[derive(Debug, Clone)]
pub struct ApiSettings {
    /// Listen address. Defaults to `127.0.0.1:8080`; `UPKEEP_API_ADDR` overrides it.
    pub addr: SocketAddr,
    /// Bearer token required by every route except health and metrics. Defaults to none
    /// (no auth); `UPKEEP_API_TOKEN` sets it.
    pub token: Option<SecretString>,
}

/// The `[telemetry]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetrySettings {
    /// Log line format. Defaults to `pretty`; `UPKEEP_LOG_FORMAT` overrides it.
    pub format: LogFormat,
    /// Default `tracing` filter when `RUST_LOG` is unset. Defaults to `info`.
    pub filter: String,
}

/// The 32-byte AES-256-GCM key for stored credentials, given as base64.
pub struct SecretKey(SecretBox<[u8; 32]>);

/// Why the configuration could not be loaded. Messages never contain secrets.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config file could not be read.
    #[error("cannot read config file {}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The config file is not valid TOML.
    #[error("{origin}: line {line}, column {column}: {message}")]
    Syntax {
        /// The file (or `<string>`).
        origin: String,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// The parser's message (it never echoes the line, which may hold a secret).
        message: String,
    },
    /// One or more settings are invalid.
    #[error("invalid configuration ({origin}): {}", join_problems(problems))]
    Invalid {
        /// The file (or `<string>`, or `built-in defaults`).
        origin: String,
        /// Every problem found, in order.
        problems: Vec<Problem>,
    },
}

pub use crate::settings::Problem;

fn join_problems(problems: &[Problem]) -> String {
    let parts: Vec<String> = problems.iter().map(Problem::to_string).collect();
    parts.join("; ")
}

impl Settings {
    /// Loads settings from the process environment: the file named by `UPKEEP_CONFIG` (or
    /// `./upkeep.toml` when it exists, else built-in defaults), then environment overrides.
    ///
    /// # Errors
    /// When the file cannot be read or parsed, or any setting is invalid; the error lists
    /// every problem with its key.
    pub fn load() -> Result<Self, Error> {
        let mut env = HashMap::new();
        let mut problems = Vec::new();
        // Every variable is kept, not only the config ones: a secret given as `KEY_env = "VAR"`
        // may name any variable.
        for (name, value) in std::env::vars_os() {
            let Some(name) = name.to_str() else { continue };
            match value.into_string() {
                Ok(value) => {
                    env.insert(name.to_owned(), value);
                }
                Err(_) if !is_config_variable(name) => {}
                Err(_) => problems.push(Problem {
                    key: name.to_owned(),
                    message: "value is not valid UTF-8".to_owned(),
                }),
            }
        }
        if !problems.is_empty() {
            return Err(Error::Invalid {
                origin: "environment".to_owned(),
                problems,
            });
        }
        Self::load_with_env(&env)
    }

    /// Like [`Settings::load`], with the environment given as a map instead of read from the
    /// process, so tests never touch the real environment.
    ///
    /// # Errors
    /// As [`Settings::load`].
    pub fn load_with_env(env: &HashMap<String, String>) -> Result<Self, Error> {
        let named = env.get("UPKEEP_CONFIG").filter(|path| !path.is_empty());
        let path = match named {
            Some(path) => Some(PathBuf::from(path)),
            None if Path::new(DEFAULT_CONFIG_FILE).is_file() => {
                Some(PathBuf::from(DEFAULT_CONFIG_FILE))
            }
            None => None,
        };
        let Some(path) = path else {
            return Self::parse("", "built-in defaults", None, env);
        };
        let text = std::fs::read_to_string(&path).map_err(|source| Error::ReadFile {
            path: path.clone(),
            source,
        })?;
        let origin = path.display().to_string();
        Self::parse(&text, &origin, Some(path), env)
    }

    /// Parses `toml` as a config file, then applies the overrides found in `env` (the same
    /// variables [`Settings::load`] reads, except `UPKEEP_CONFIG`).
    ///
    /// # Errors
    /// When `toml` is not valid TOML or any setting is invalid.
    pub fn from_toml_str(toml: &str, env: &HashMap<String, String>) -> Result<Self, Error> {
        Self::parse(toml, "<string>", None, env)
    }

    /// The policy of `queue`, or the defaults when it is not configured.
    #[must_use]
    pub fn queue(&self, queue: &QueueName) -> QueueSettings {
        self.queues.get(queue).cloned().unwrap_or_default()
    }

    /// The effective retry and timeout policy of jobs of `kind` on `queue`: the kind's overrides
    /// over the queue's policy.
    #[must_use]
    pub fn job_policy(&self, queue: &QueueName, kind: &str) -> JobPolicy {
        let queue = self.queue(queue);
        let overrides = self.kinds.get(kind).cloned().unwrap_or_default();
        JobPolicy {
            max_attempts: overrides.max_attempts.unwrap_or(queue.max_attempts),
            timeout: overrides.timeout.unwrap_or(queue.timeout),
            backoff_base: overrides.backoff_base.unwrap_or(queue.backoff_base),
            backoff_max: overrides.backoff_max.unwrap_or(queue.backoff_max),
        }
    }

    /// One line describing the settings for start-up logs, with secrets redacted (URLs lose
    /// their userinfo; tokens and keys show only whether they are set).
    #[must_use]
    pub fn redacted_summary(&self) -> String {
        let loaded_from = self.loaded_from.as_ref().map_or_else(
            || "built-in defaults".to_owned(),
            |p| p.display().to_string(),
        );
        let redis = if self.redis.cluster_urls.is_empty() {
            redact_url(self.redis.url.expose_secret())
        } else {
            let nodes: Vec<String> = self
                .redis
                .cluster_urls
                .iter()
                .map(|url| redact_url(url.expose_secret()))
                .collect();
            format!("cluster[{}]", nodes.join(","))
        };
        let queues: Vec<String> = self
            .queues
            .iter()
            .map(|(name, queue)| format!("{name}:{}", queue.concurrency))
            .collect();
        let n_enabled = self.schedules.iter().filter(|s| s.enabled).count();
        let set = |present: bool| if present { "set" } else { "unset" };
        format!(
            "config={loaded_from} database={} max_connections={} migrate_on_start={} redis={redis} \
             key_prefix={} queues={} schedules={} enabled_schedules={n_enabled} api_addr={} \
             api_token={} secret_key={} log_format={} log_filter={}",
            redact_url(self.database.url.expose_secret()),
            self.database.max_connections,
            self.database.migrate_on_start,
            self.redis.key_prefix,
            queues.join(","),
            self.schedules.len(),
            self.api.addr,
            set(self.api.token.is_some()),
            set(self.secret_key.is_some()),
            match self.telemetry.format {
                LogFormat::Json => "json",
                LogFormat::Pretty => "pretty",
            },
            self.telemetry.filter,
        )
    }

    fn parse(
        text: &str,
        origin: &str,
        loaded_from: Option<PathBuf>,
        env: &HashMap<String, String>,
    ) -> Result<Self, Error> {
        let mut doc: Table = text.parse().map_err(|e: toml::de::Error| {
            let (line, column) = e
                .span()
                .map_or((1, 1), |span| line_and_column(text, span.start));
            Error::Syntax {
                origin: origin.to_owned(),
                line,
                column,
                message: e.message().trim_end().to_owned(),
            }
        })?;
        let mut ctx = Ctx::default();
        apply_generic_overrides(&mut doc, env, &mut ctx);
        apply_named_overrides(&mut doc, env, &mut ctx);
        let settings = validate(&doc, &mut ctx, loaded_from, env);
        if ctx.problems.is_empty() {
            Ok(settings)
        } else {
            Err(Error::Invalid {
                origin: origin.to_owned(),
                problems: ctx.problems,
            })
        }
    }
}

impl Default for Settings {
    /// The built-in defaults: every queue of [`job::QUEUES`], no schedules, no secrets.
    fn default() -> Self {
        Self {
            database: DatabaseSettings::default(),
            redis: RedisSettings::default(),
            queues: default_queues(),
            kinds: BTreeMap::new(),
            schedules: Vec::new(),
            worker: WorkerSettings::default(),
            scheduler: SchedulerSettings::default(),
            maintenance: MaintenanceSettings::default(),
            backups: crate::backup::BackupSettings::default(),
            api: ApiSettings::default(),
            telemetry: TelemetrySettings::default(),
            tasks: TasksSettings::default(),
            secret_key: None,
            loaded_from: None,
        }
    }
}

impl DatabaseSettings {
    /// Connection options parsed from `url`.
    ///
    /// # Errors
    /// When `url` is not a valid postgres URL (never the case after [`Settings::load`]).
    pub fn connect_options(&self) -> Result<PgConnectOptions, sqlx::Error> {
        PgConnectOptions::from_str(self.url.expose_secret())
    }

    /// Pool options: `max_connections`, and `connect_timeout` as the acquire timeout.
    #[must_use]
    pub fn pool_options(&self) -> PgPoolOptions {
        PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(self.connect_timeout)
    }

    /// Opens a pool and checks one connection.
    ///
    /// # Errors
    /// When the URL is invalid or the server cannot be reached within `connect_timeout`.
    pub async fn connect(&self) -> Result<PgPool, sqlx::Error> {
        let options = self.connect_options()?;
        match self.pool_options().connect_with(options.clone()).await {
            // The pool retries until its timeout and then says only that; one direct attempt
            // tells why (connection refused, unknown host, authentication, missing database).
            Err(sqlx::Error::PoolTimedOut) => {
                use sqlx::Connection as _;
                match tokio::time::timeout(
                    self.connect_timeout,
                    sqlx::PgConnection::connect_with(&options),
                )
                .await
                {
                    Ok(Err(cause)) => Err(cause),
                    _ => Err(sqlx::Error::PoolTimedOut),
                }
            }
            other => other,
        }
    }

    /// The URL with its password and secret parameters hidden, for messages.
    #[must_use]
    pub fn redacted_url(&self) -> String {
        redact_url(self.url.expose_secret())
    }

    /// A pool that connects on first use.
    ///
    /// # Errors
    /// When the URL is invalid.
    pub fn connect_lazy(&self) -> Result<PgPool, sqlx::Error> {
        Ok(self
            .pool_options()
            .connect_lazy_with(self.connect_options()?))
    }
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: SecretString::from(DEFAULT_DATABASE_URL),
            max_connections: 10,
            migrate_on_start: false,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl RedisSettings {
    /// Whether Redis Cluster mode is configured (`cluster_urls` is non-empty).
    #[must_use]
    pub fn is_cluster(&self) -> bool {
        !self.cluster_urls.is_empty()
    }

    /// A client for the single server at `url`. Queue code connects through
    /// [`RedisSettings::target`] instead, which also understands `redis+sentinel://`.
    ///
    /// # Errors
    /// When the URL is invalid (never the case after [`Settings::load`]) or a
    /// `redis+sentinel://` URL.
    pub fn client(&self) -> redis::RedisResult<redis::Client> {
        redis::Client::open(self.url.expose_secret())
    }

    /// A cluster client for `cluster_urls`, with `response_timeout` applied.
    ///
    /// # Errors
    /// When a URL is invalid or the list is empty.
    pub fn cluster_client(&self) -> redis::RedisResult<redis::cluster::ClusterClient> {
        let nodes: Vec<&str> = self
            .cluster_urls
            .iter()
            .map(ExposeSecret::expose_secret)
            .collect();
        redis::cluster::ClusterClient::builder(nodes)
            .response_timeout(self.response_timeout)
            .build()
    }

    /// Async connection options with `response_timeout` applied.
    #[must_use]
    pub fn connection_config(&self) -> redis::AsyncConnectionConfig {
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(self.response_timeout))
    }
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: SecretString::from(DEFAULT_REDIS_URL),
            cluster_urls: Vec::new(),
            key_prefix: KeyPrefix(DEFAULT_KEY_PREFIX.to_owned()),
            response_timeout: Duration::from_secs(5),
        }
    }
}

impl KeyPrefix {
    /// Validates a key prefix.
    ///
    /// # Errors
    /// When it is empty, longer than 64 characters, or has a character outside
    /// `[A-Za-z0-9_.-]`; the message names the value.
    pub fn parse(prefix: &str) -> Result<Self, String> {
        let valid = !prefix.is_empty()
            && prefix.len() <= 64
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if valid {
            Ok(Self(prefix.to_owned()))
        } else {
            Err(format!(
                "must be 1-64 characters of [A-Za-z0-9_.-] (no braces or colons), got {prefix:?}"
            ))
        }
    }

    /// The prefix as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            concurrency: 16,
            lease: Duration::from_secs(30),
            retention: Duration::from_secs(3600),
            dead_retention: Duration::from_secs(7 * 24 * 3600),
            max_attempts: 3,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            batch_size: 64,
            timeout: Duration::from_secs(3600),
        }
    }
}

/// The default overlap policy of `kind`: `skip` for `backup.*` (two backups of one database at
/// once only compete for IO), `allow` otherwise.
#[must_use]
pub fn default_overlap(kind: JobKind) -> Overlap {
    if kind.as_str().starts_with("backup.") {
        Overlap::Skip
    } else {
        Overlap::Allow
    }
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            grace_period: Duration::from_secs(30),
            identity: None,
        }
    }
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        Self {
            tick_interval: Duration::from_millis(250),
            confirm_timeout: Duration::from_secs(10),
        }
    }
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            token: None,
        }
    }
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            filter: "info".to_owned(),
        }
    }
}

impl SecretKey {
    /// Decodes a base64 (standard alphabet, padded) key of exactly 32 bytes.
    ///
    /// # Errors
    /// When the text is not base64 or does not decode to 32 bytes. The message never contains
    /// the text.
    pub fn parse(base64_text: &str) -> Result<Self, String> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(base64_text.trim())
            .map_err(|_| "not valid base64 (standard alphabet, padded)".to_owned())?;
        let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
            format!(
                "must be base64 of exactly 32 bytes, got {} bytes",
                bytes.len()
            )
        })?;
        Ok(Self(SecretBox::new(Box::new(key))))
    }

    /// The raw key bytes. Keep them out of logs.
    #[must_use]
    pub fn expose_bytes(&self) -> &[u8; 32] {
        self.0.expose_secret()
    }
}

impl Clone for SecretKey {
    fn clone(&self) -> Self {
        Self(SecretBox::new(Box::new(*self.0.expose_secret())))
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey([REDACTED])")
    }
}

/// `url` with its userinfo replaced by `***` and secret query parameters (`password`,
/// `sslpassword`, `sentinel_password`) masked, for logs and error messages. A URL with several
/// hosts (`redis+sentinel://:pw@a:26379,b:26379/m`) is redacted the same way. Text that does
/// not parse as a URL but might hold a secret is replaced by its length.
#[must_use]
pub fn redact_url(url: &str) -> String {
    let opaque = || format!("<{} characters, not shown>", url.chars().count());
    let Ok(mut parsed) = url::Url::parse(url) else {
        if let Some(redacted) = redact_host_list_url(url) {
            return redacted;
        }
        let suspicious = url.contains('@') || url.to_ascii_lowercase().contains("password");
        return if suspicious { opaque() } else { url.to_owned() };
    };
    if parsed.cannot_be_a_base() {
        return if url.contains('@') {
            opaque()
        } else {
            url.to_owned()
        };
    }
    let mut changed = false;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        if parsed.set_password(None).is_err() || parsed.set_username("***").is_err() {
            return opaque();
        }
        changed = true;
    }
    let secret_params = parsed.query_pairs().any(|(name, _)| is_secret_param(&name));
    if secret_params {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(name, value)| {
                let value = if is_secret_param(&name) {
                    "***".to_owned()
                } else {
                    value.into_owned()
                };
                (name.into_owned(), value)
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
        changed = true;
    }
    if parsed.fragment().is_some() {
        parsed.set_fragment(None);
        changed = true;
    }
    if changed {
        parsed.to_string()
    } else {
        url.to_owned()
    }
}

/// Redacts `scheme://[userinfo@]authority[/path][?query]` by hand, for URLs the `url` crate
/// refuses because their authority is a host list. `None` when the text is not shaped like
/// that, or when an `@` after the authority leaves unclear where the userinfo ends.
fn redact_host_list_url(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return None;
    }
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    if tail.contains('@') {
        return None;
    }
    let hosts = match authority.rfind('@') {
        Some(at) => format!("***@{}", &authority[at + 1..]),
        None => authority.to_owned(),
    };
    let tail = tail.split('#').next().unwrap_or("");
    let redacted_tail = match tail.split_once('?') {
        None => tail.to_owned(),
        Some((path, query)) => {
            let pairs: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) if is_secret_param(name) => format!("{name}=***"),
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", pairs.join("&"))
        }
    };
    Some(format!("{scheme}://{hosts}{redacted_tail}"))
}

fn is_secret_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    // "pass" also covers `passwd` and misspellings such as `sentinel_pass`.
    name.contains("pass") || name.contains("secret") || name.contains("token")
}

const DEFAULT_CONFIG_FILE: &str = "upkeep.toml";
const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/upkeep";
const DEFAULT_REDIS_URL: &str = "redis://127.0.0.1:6379/";
const DEFAULT_KEY_PREFIX: &str = "upkeep";
const GENERIC_PREFIX: &str = "UPKEEP__";

const TOP_KEYS: &[&str] = &[
    "database",
    "redis",
    "queues",
    "kinds",
    "schedules",
    "worker",
    "scheduler",
    "maintenance",
    "backups",
    "api",
    "telemetry",
    "tasks",
    "secret_key",
];
const DATABASE_KEYS: &[&str] = &[
    "url",
    "max_connections",
    "migrate_on_start",
    "connect_timeout",
];
const REDIS_KEYS: &[&str] = &["url", "cluster_urls", "key_prefix", "response_timeout"];
const QUEUE_KEYS: &[&str] = &[
    "concurrency",
    "lease",
    "retention",
    "dead_retention",
    "max_attempts",
    "backoff_base",
    "backoff_max",
    "batch_size",
    "timeout",
];
const KIND_KEYS: &[&str] = &["max_attempts", "timeout", "backoff_base", "backoff_max"];
const SCHEDULE_KEYS: &[&str] = &[
    "name",
    "cron",
    "timezone",
    "kind",
    "args",
    "queue",
    "catch_up",
    "catch_up_window",
    "catch_up_max",
    "overlap",
    "jitter",
    "enabled",
];
const WORKER_KEYS: &[&str] = &["grace_period", "identity"];
const SCHEDULER_KEYS: &[&str] = &["tick_interval", "confirm_timeout"];
const MAINTENANCE_KEYS: &[&str] = &[
    "reconcile_action",
    "reconcile_interval",
    "reconcile_grace",
    "ledger_retention",
    "ledger_prune_interval",
];
const API_KEYS: &[&str] = &["addr", "token"];
const TELEMETRY_KEYS: &[&str] = &["format", "filter"];

/// The simple sections: name and their keys. `queues`, `kinds` and `schedules` are maps or
/// arrays and handled apart.
const SIMPLE_SECTIONS: &[(&str, &[&str])] = &[
    ("database", DATABASE_KEYS),
    ("redis", REDIS_KEYS),
    ("worker", WORKER_KEYS),
    ("scheduler", SCHEDULER_KEYS),
    ("maintenance", MAINTENANCE_KEYS),
    ("api", API_KEYS),
    ("telemetry", TELEMETRY_KEYS),
];

/// The named variables of the public contract and the TOML path each one sets.
const NAMED_VARIABLES: &[(&str, &str, &str)] = &[
    ("DATABASE_URL", "database", "url"),
    ("REDIS_URL", "redis", "url"),
    ("UPKEEP_API_TOKEN", "api", "token"),
    ("UPKEEP_API_ADDR", "api", "addr"),
    ("UPKEEP_LOG_FORMAT", "telemetry", "format"),
    ("UPKEEP_SECRET_KEY", "", "secret_key"),
];

fn is_config_variable(name: &str) -> bool {
    name == "UPKEEP_CONFIG"
        || name.starts_with(GENERIC_PREFIX)
        || NAMED_VARIABLES.iter().any(|(var, _, _)| *var == name)
}

fn default_queues() -> BTreeMap<QueueName, QueueSettings> {
    job::QUEUES
        .iter()
        .map(|name| {
            // The built-in queue names are constants that satisfy `QueueName::parse`; a unit
            // test checks it.
            let name = QueueName::parse(name).expect("built-in queue names are valid");
            (name, QueueSettings::default())
        })
        .collect()
}

/// Where an overridden setting came from, so problems name the variable the operator set.
#[derive(Debug, Clone)]
enum Origin {
    /// A contract variable such as `DATABASE_URL`: problems are reported under its name.
    Named(&'static str),
    /// A `UPKEEP__...` variable: problems name the TOML path and the variable.
    Generic(String),
}

/// Validation state: the problems found so far and the origins of overridden values.
#[derive(Debug, Default)]
struct Ctx {
    problems: Vec<Problem>,
    origins: HashMap<String, Origin>,
}

impl Ctx {
    fn label(&self, path: &str) -> String {
        match self.origins.get(path) {
            Some(Origin::Named(var)) => (*var).to_owned(),
            Some(Origin::Generic(var)) => format!("{path} (from {var})"),
            None => path.to_owned(),
        }
    }

    fn problem(&mut self, path: &str, message: impl Into<String>) {
        let key = self.label(path);
        self.problems.push(Problem {
            key,
            message: message.into(),
        });
    }

    fn env_problem(&mut self, var: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            key: var.to_owned(),
            message: message.into(),
        });
    }
}

fn apply_generic_overrides(doc: &mut Table, env: &HashMap<String, String>, ctx: &mut Ctx) {
    let mut vars: Vec<(&String, &String)> = env
        .iter()
        .filter(|(name, _)| name.starts_with(GENERIC_PREFIX))
        .collect();
    vars.sort();
    for (var, value) in vars {
        let segments: Vec<String> = var[GENERIC_PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        let segments: Vec<&str> = segments.iter().map(String::as_str).collect();
        match segments.as_slice() {
            ["secret_key"] => {
                doc.insert("secret_key".to_owned(), Value::String(value.clone()));
                ctx.origins
                    .insert("secret_key".to_owned(), Origin::Generic(var.clone()));
            }
            [section, key] if SIMPLE_SECTIONS.iter().any(|(name, _)| name == section) => {
                let keys = SIMPLE_SECTIONS
                    .iter()
                    .find(|(name, _)| name == section)
                    .map_or(&[][..], |(_, keys)| *keys);
                if !keys.contains(key) {
                    ctx.env_problem(
                        var,
                        format!(
                            "unknown setting {section}.{key} (expected one of {})",
                            keys.join(", ")
                        ),
                    );
                    continue;
                }
                let value = if *key == "cluster_urls" {
                    Value::Array(
                        value
                            .split(',')
                            .map(str::trim)
                            .filter(|url| !url.is_empty())
                            .map(|url| Value::String(url.to_owned()))
                            .collect(),
                    )
                } else {
                    Value::String(value.clone())
                };
                if insert_at(doc, &[section], key, value) {
                    ctx.origins
                        .insert(format!("{section}.{key}"), Origin::Generic(var.clone()));
                }
            }
            ["queues", queue, key] => {
                if !QUEUE_KEYS.contains(key) {
                    ctx.env_problem(
                        var,
                        format!(
                            "unknown queue setting {key} (expected one of {})",
                            QUEUE_KEYS.join(", ")
                        ),
                    );
                    continue;
                }
                if insert_at(doc, &["queues", queue], key, Value::String(value.clone())) {
                    let path = format!("queues.{}.{key}", key_segment(queue));
                    ctx.origins.insert(path, Origin::Generic(var.clone()));
                }
            }
            ["kinds", kind, key] => {
                // Environment variable names cannot hold dots, so `SYSTEM_PING` names `system.ping`.
                let Some(spec) = job::CATALOG
                    .iter()
                    .find(|spec| spec.name == *kind || spec.name.replace('.', "_") == *kind)
                else {
                    ctx.env_problem(var, format!("unknown job kind {kind:?}"));
                    continue;
                };
                if !KIND_KEYS.contains(key) {
                    ctx.env_problem(
                        var,
                        format!(
                            "unknown kind setting {key} (expected one of {})",
                            KIND_KEYS.join(", ")
                        ),
                    );
                    continue;
                }
                if insert_at(
                    doc,
                    &["kinds", spec.name],
                    key,
                    Value::String(value.clone()),
                ) {
                    let path = format!("kinds.{}.{key}", key_segment(spec.name));
                    ctx.origins.insert(path, Origin::Generic(var.clone()));
                }
            }
            ["schedules", ..] => ctx.env_problem(
                var,
                "schedules cannot be set from the environment; edit the config file",
            ),
            _ => ctx.env_problem(
                var,
                format!(
                    "unknown setting (expected UPKEEP__SECTION__KEY with a section of {})",
                    TOP_KEYS.join(", ")
                ),
            ),
        }
    }
}

fn apply_named_overrides(doc: &mut Table, env: &HashMap<String, String>, ctx: &mut Ctx) {
    for (var, section, key) in NAMED_VARIABLES {
        // An empty variable counts as unset: compose files often pass `${VAR:-}`.
        let Some(value) = env.get(*var).filter(|value| !value.is_empty()) else {
            continue;
        };
        let (inserted, path) = if section.is_empty() {
            doc.insert((*key).to_owned(), Value::String(value.clone()));
            (true, (*key).to_owned())
        } else {
            (
                insert_at(doc, &[section], key, Value::String(value.clone())),
                format!("{section}.{key}"),
            )
        };
        if inserted {
            ctx.origins.insert(path, Origin::Named(var));
        }
    }
}

/// Sets `tables[..].key = value`, creating missing tables. Returns false (and leaves the
/// document alone) when a step is not a table; validation reports that.
fn insert_at(doc: &mut Table, tables: &[&str], key: &str, value: Value) -> bool {
    let mut table = doc;
    for name in tables {
        let entry = table
            .entry((*name).to_owned())
            .or_insert_with(|| Value::Table(Table::new()));
        match entry {
            Value::Table(inner) => table = inner,
            _ => return false,
        }
    }
    table.insert(key.to_owned(), value);
    true
}

/// A TOML key as written in a dotted path: bare when it can be, quoted otherwise.
fn key_segment(key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    if bare {
        key.to_owned()
    } else {
        format!("{key:?}")
    }
}

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(0, |tail| tail.chars().count())
        + 1;
    (line, column)
}

/// A view of one TOML table at a path, with typed getters that record problems and fall back
/// to the default, so one load reports every problem at once.
struct Fields<'t> {
    path: String,
    table: Option<&'t Table>,
}

impl<'t> Fields<'t> {
    /// The table at `doc[key]`; reports a problem when it exists but is not a table.
    fn section(ctx: &mut Ctx, doc: &'t Table, key: &str, path: String) -> Self {
        let table = match doc.get(key) {
            None => None,
            Some(Value::Table(table)) => Some(table),
            Some(other) => {
                ctx.problem(
                    &path,
                    format!("expected a table, got {}", describe(other, false)),
                );
                None
            }
        };
        Self { path, table }
    }

    fn check_keys(&self, ctx: &mut Ctx, allowed: &[&str]) {
        let Some(table) = self.table else { return };
        for key in table.keys() {
            if !allowed.contains(&key.as_str()) {
                let path = self.key_path(key);
                ctx.problem(
                    &path,
                    format!("unknown key (expected one of {})", allowed.join(", ")),
                );
            }
        }
    }

    fn key_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key_segment(key)
        } else {
            format!("{}.{}", self.path, key_segment(key))
        }
    }

    fn get(&self, key: &str) -> Option<&'t Value> {
        self.table.and_then(|table| table.get(key))
    }

    fn opt_u32(&self, ctx: &mut Ctx, key: &str, range: RangeInclusive<u32>) -> Option<u32> {
        let value = self.get(key)?;
        let path = self.key_path(key);
        let number = match value {
            Value::Integer(n) => Some(*n),
            Value::String(text) => text.trim().parse::<i64>().ok(),
            _ => None,
        };
        let Some(number) = number else {
            ctx.problem(
                &path,
                format!("expected an integer, got {}", describe(value, false)),
            );
            return None;
        };
        match u32::try_from(number) {
            Ok(n) if range.contains(&n) => Some(n),
            _ => {
                ctx.problem(
                    &path,
                    format!(
                        "must be between {} and {}, got {number}",
                        range.start(),
                        range.end()
                    ),
                );
                None
            }
        }
    }

    fn u32(&self, ctx: &mut Ctx, key: &str, default: u32, range: RangeInclusive<u32>) -> u32 {
        self.opt_u32(ctx, key, range).unwrap_or(default)
    }

    fn bool(&self, ctx: &mut Ctx, key: &str, default: bool) -> bool {
        match self.get(key) {
            None => default,
            Some(Value::Boolean(b)) => *b,
            Some(Value::String(text)) if text.trim() == "true" => true,
            Some(Value::String(text)) if text.trim() == "false" => false,
            Some(other) => {
                ctx.problem(
                    &self.key_path(key),
                    format!("expected true or false, got {}", describe(other, false)),
                );
                default
            }
        }
    }

    /// A duration such as `"30s"`, at least `min` (and at most `max` when given).
    fn opt_duration(
        &self,
        ctx: &mut Ctx,
        key: &str,
        min: Duration,
        max: Option<Duration>,
    ) -> Option<Duration> {
        let value = self.get(key)?;
        let path = self.key_path(key);
        let parsed = match value {
            Value::String(text) => humantime::parse_duration(text.trim()).ok(),
            _ => None,
        };
        let Some(duration) = parsed else {
            ctx.problem(
                &path,
                format!(
                    "expected a duration such as \"250ms\", \"30s\", \"5m\" or \"7d\", got {}",
                    describe(value, false)
                ),
            );
            return None;
        };
        if duration < min {
            ctx.problem(
                &path,
                format!(
                    "must be at least {}, got {}",
                    humantime::format_duration(min),
                    describe(value, false)
                ),
            );
            return None;
        }
        if let Some(max) = max.filter(|max| duration > *max) {
            ctx.problem(
                &path,
                format!(
                    "must be at most {}, got {}",
                    humantime::format_duration(max),
                    describe(value, false)
                ),
            );
            return None;
        }
        Some(duration)
    }

    fn duration(&self, ctx: &mut Ctx, key: &str, default: Duration, min: Duration) -> Duration {
        self.opt_duration(ctx, key, min, None).unwrap_or(default)
    }

    /// A string; `secret` keeps a wrongly typed value out of the message.
    fn opt_string(&self, ctx: &mut Ctx, key: &str, secret: bool) -> Option<&'t str> {
        match self.get(key)? {
            Value::String(text) => Some(text),
            other => {
                ctx.problem(
                    &self.key_path(key),
                    format!("expected a string, got {}", describe(other, secret)),
                );
                None
            }
        }
    }
}

/// A value for an error message: strings quoted, scalars as TOML, containers by kind only.
fn describe(value: &Value, secret: bool) -> String {
    if secret {
        let article = if value.type_str().starts_with(['a', 'i']) {
            "an"
        } else {
            "a"
        };
        return format!("{article} {} (not shown)", value.type_str());
    }
    match value {
        Value::String(text) => format!("{text:?}"),
        Value::Integer(_) | Value::Float(_) | Value::Boolean(_) | Value::Datetime(_) => {
            value.to_string()
        }
        Value::Array(_) => "an array".to_owned(),
        Value::Table(_) => "a table".to_owned(),
    }
}

fn validate(
    doc: &Table,
    ctx: &mut Ctx,
    loaded_from: Option<PathBuf>,
    env: &HashMap<String, String>,
) -> Settings {
    let root = Fields {
        path: String::new(),
        table: Some(doc),
    };
    root.check_keys(ctx, TOP_KEYS);
    let database = validate_database(ctx, doc);
    let redis = validate_redis(ctx, doc);
    let queues = validate_queues(ctx, doc);
    let kinds = validate_kinds(ctx, doc);
    let schedules = validate_schedules(ctx, doc, &queues);
    let worker = validate_worker(ctx, doc);
    let scheduler = validate_scheduler(ctx, doc);
    let maintenance = validate_maintenance(ctx, doc);
    let api = validate_api(ctx, doc);
    let backups = serde_section(ctx, doc, "backups", env);
    let telemetry = validate_telemetry(ctx, doc);
    let tasks = serde_section(ctx, doc, "tasks", env);
    let secret_key =
        root.opt_string(ctx, "secret_key", true)
            .and_then(|text| match SecretKey::parse(text) {
                Ok(key) => Some(key),
                Err(message) => {
                    ctx.problem("secret_key", message);
                    None
                }
            });
    Settings {
        database,
        redis,
        queues,
        kinds,
        schedules,
        worker,
        scheduler,
        maintenance,
        backups,
        api,
        telemetry,
        tasks,
        secret_key,
        loaded_from,
    }
}

/// Deserializes the optional table `doc[name]` into a subsystem's [`Section`] (its defaults
/// when absent), after resolving the indirect forms of its secret keys, then runs its
/// `validate`. Every problem lands in `ctx` with its full key path; on a type error the
/// section's defaults stand in so the other sections are still checked.
fn serde_section<T: Section>(
    ctx: &mut Ctx,
    doc: &Table,
    name: &str,
    env: &HashMap<String, String>,
) -> T {
    let section = match doc.get(name) {
        None => T::default(),
        Some(value) => {
            let mut value = value.clone();
            for pattern in T::SECRET_KEYS {
                let segments: Vec<&str> = pattern.split('.').collect();
                resolve_secret(ctx, &mut value, name, &segments, env);
            }
            match serde_path_to_error::deserialize::<_, T>(value) {
                Ok(section) => section,
                Err(error) => {
                    let at = error.path().to_string();
                    let key = if at == "." || at.is_empty() {
                        name.to_owned()
                    } else {
                        format!("{name}.{at}")
                    };
                    ctx.problem(&key, error.inner().message().trim_end().to_owned());
                    return T::default();
                }
            }
        }
    };
    let mut problems = Problems::default();
    section.validate(name, &mut problems);
    for problem in problems.into_vec() {
        ctx.problem(&problem.key, problem.message);
    }
    section
}

/// Replaces `KEY_env = "VAR"` and `KEY_file = "PATH"` by `KEY = <the secret>` at the key that
/// `segments` (a [`Section::SECRET_KEYS`] entry, split on `.`) names under `value`. Problems
/// name the key and the variable or file, never the secret.
fn resolve_secret(
    ctx: &mut Ctx,
    value: &mut Value,
    path: &str,
    segments: &[&str],
    env: &HashMap<String, String>,
) {
    let Some(table) = value.as_table_mut() else {
        return;
    };
    let [segment, rest @ ..] = segments else {
        return;
    };
    if !rest.is_empty() {
        if let Some(array_key) = segment.strip_suffix("[]") {
            if let Some(Value::Array(items)) = table.get_mut(array_key) {
                for (idx, item) in items.iter_mut().enumerate() {
                    resolve_secret(ctx, item, &format!("{path}.{array_key}[{idx}]"), rest, env);
                }
            }
        } else if let Some(inner) = table.get_mut(*segment) {
            resolve_secret(ctx, inner, &format!("{path}.{segment}"), rest, env);
        }
        return;
    }
    let key = *segment;
    let env_key = format!("{key}_env");
    let file_key = format!("{key}_file");
    let n_given = [key, env_key.as_str(), file_key.as_str()]
        .iter()
        .filter(|k| table.contains_key(**k))
        .count();
    if n_given > 1 {
        ctx.problem(
            &format!("{path}.{key}"),
            format!("give only one of {key}, {env_key} and {file_key}"),
        );
        table.remove(&env_key);
        table.remove(&file_key);
        return;
    }
    if let Some(var) = table.remove(&env_key) {
        let at = format!("{path}.{env_key}");
        let Some(var) = var.as_str() else {
            ctx.problem(&at, "expected the name of an environment variable");
            return;
        };
        match env.get(var) {
            Some(secret) => {
                table.insert(key.to_owned(), Value::String(secret.clone()));
            }
            None => ctx.problem(&at, format!("environment variable {var} is not set")),
        }
    } else if let Some(file) = table.remove(&file_key) {
        let at = format!("{path}.{file_key}");
        let Some(file) = file.as_str() else {
            ctx.problem(&at, "expected a file path");
            return;
        };
        match std::fs::read_to_string(file) {
            Ok(text) => {
                // Credential files usually end with a newline that is not part of the secret.
                let secret = text
                    .strip_suffix('\n')
                    .map_or(text.as_str(), |t| t.strip_suffix('\r').unwrap_or(t));
                table.insert(key.to_owned(), Value::String(secret.to_owned()));
            }
            Err(error) => ctx.problem(&at, format!("cannot read {file}: {error}")),
        }
    }
}

fn validate_database(ctx: &mut Ctx, doc: &Table) -> DatabaseSettings {
    let fields = Fields::section(ctx, doc, "database", "database".to_owned());
    fields.check_keys(ctx, DATABASE_KEYS);
    let defaults = DatabaseSettings::default();
    let url = match fields.opt_string(ctx, "url", true) {
        None => defaults.url,
        Some(url) => match check_postgres_url(url) {
            Ok(()) => SecretString::from(url),
            Err(message) => {
                ctx.problem("database.url", message);
                defaults.url
            }
        },
    };
    DatabaseSettings {
        url,
        max_connections: fields.u32(ctx, "max_connections", defaults.max_connections, 1..=1000),
        migrate_on_start: fields.bool(ctx, "migrate_on_start", defaults.migrate_on_start),
        connect_timeout: fields.duration(
            ctx,
            "connect_timeout",
            defaults.connect_timeout,
            Duration::from_millis(1),
        ),
    }
}

fn check_postgres_url(url: &str) -> Result<(), String> {
    let shown = redact_url(url);
    let parsed = url::Url::parse(url).map_err(|e| format!("not a postgres URL: {shown:?}: {e}"))?;
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        return Err(format!(
            "not a postgres URL (expected postgres:// or postgresql://): {shown:?}"
        ));
    }
    // The sqlx parser's messages name parameters, never their values.
    PgConnectOptions::from_str(url).map(|_| ()).map_err(|e| {
        // sqlx nests configuration errors; the innermost one says what is wrong.
        let mut innermost: &dyn std::error::Error = &e;
        while let Some(source) = innermost.source() {
            innermost = source;
        }
        format!("not a usable postgres URL: {shown:?}: {innermost}")
    })
}

/// Checks a Redis URL; `redis+sentinel://` is accepted only where `sentinel_allowed` (the
/// `redis.url` key, not cluster seed nodes).
fn check_redis_url(url: &str, sentinel_allowed: bool) -> Result<(), String> {
    let shown = redact_url(url);
    if sentinel_allowed && SentinelUrl::has_scheme(url) {
        // The parser's messages never contain credentials.
        return SentinelUrl::parse(url)
            .map(|_| ())
            .map_err(|e| format!("not a usable redis+sentinel:// URL: {shown:?}: {e}"));
    }
    match url::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "redis" | "rediss") && parsed.has_host() => Ok(()),
        _ if sentinel_allowed => Err(format!(
            "not a redis://, rediss:// or redis+sentinel:// URL: {shown:?}"
        )),
        _ => Err(format!("not a redis:// or rediss:// URL: {shown:?}")),
    }
}

fn validate_redis(ctx: &mut Ctx, doc: &Table) -> RedisSettings {
    let fields = Fields::section(ctx, doc, "redis", "redis".to_owned());
    fields.check_keys(ctx, REDIS_KEYS);
    let defaults = RedisSettings::default();
    let url = match fields.opt_string(ctx, "url", true) {
        None => defaults.url,
        Some(url) => match check_redis_url(url, true) {
            Ok(()) => SecretString::from(url),
            Err(message) => {
                ctx.problem("redis.url", message);
                defaults.url
            }
        },
    };
    let mut cluster_urls = Vec::new();
    match fields.get("cluster_urls") {
        None => {}
        Some(Value::Array(items)) => {
            for (idx, item) in items.iter().enumerate() {
                let path = format!("redis.cluster_urls[{idx}]");
                match item {
                    Value::String(url) => match check_redis_url(url, false) {
                        Ok(()) => cluster_urls.push(SecretString::from(url.as_str())),
                        Err(message) => ctx.problem(&path, message),
                    },
                    other => ctx.problem(
                        &path,
                        format!("expected a string, got {}", describe(other, true)),
                    ),
                }
            }
        }
        Some(other) => ctx.problem(
            "redis.cluster_urls",
            format!("expected an array of URLs, got {}", describe(other, true)),
        ),
    }
    let key_prefix = match fields.opt_string(ctx, "key_prefix", false) {
        None => defaults.key_prefix,
        Some(text) => KeyPrefix::parse(text).unwrap_or_else(|message| {
            ctx.problem("redis.key_prefix", message);
            defaults.key_prefix
        }),
    };
    RedisSettings {
        url,
        cluster_urls,
        key_prefix,
        response_timeout: fields.duration(
            ctx,
            "response_timeout",
            defaults.response_timeout,
            Duration::from_millis(1),
        ),
    }
}

fn validate_queues(ctx: &mut Ctx, doc: &Table) -> BTreeMap<QueueName, QueueSettings> {
    let section = Fields::section(ctx, doc, "queues", "queues".to_owned());
    let mut queues = default_queues();
    let Some(table) = section.table else {
        return queues;
    };
    for (name, value) in table {
        let path = format!("queues.{}", key_segment(name));
        let queue_name = match QueueName::parse(name) {
            Ok(queue_name) => queue_name,
            Err(e) => {
                ctx.problem(&path, e.to_string());
                continue;
            }
        };
        let fields = Fields::section(ctx, table, name, path);
        if fields.table.is_none() && !matches!(value, Value::Table(_)) {
            continue;
        }
        fields.check_keys(ctx, QUEUE_KEYS);
        let defaults = QueueSettings::default();
        let backoff_base = fields.duration(
            ctx,
            "backoff_base",
            defaults.backoff_base,
            Duration::from_millis(1),
        );
        let backoff_max = fields.duration(
            ctx,
            "backoff_max",
            defaults.backoff_max,
            Duration::from_millis(1),
        );
        if backoff_max < backoff_base {
            ctx.problem(
                &fields.key_path("backoff_max"),
                format!(
                    "must be at least backoff_base ({}), got {}",
                    humantime::format_duration(backoff_base),
                    humantime::format_duration(backoff_max)
                ),
            );
        }
        let settings = QueueSettings {
            concurrency: fields.u32(ctx, "concurrency", defaults.concurrency, 1..=10_000),
            lease: fields.duration(ctx, "lease", defaults.lease, Duration::from_secs(1)),
            retention: fields.duration(ctx, "retention", defaults.retention, Duration::ZERO),
            dead_retention: fields.duration(
                ctx,
                "dead_retention",
                defaults.dead_retention,
                Duration::ZERO,
            ),
            max_attempts: fields.u32(ctx, "max_attempts", defaults.max_attempts, 1..=100),
            backoff_base,
            backoff_max,
            batch_size: fields.u32(ctx, "batch_size", defaults.batch_size, 1..=1000),
            timeout: fields.duration(ctx, "timeout", defaults.timeout, Duration::from_millis(1)),
        };
        queues.insert(queue_name, settings);
    }
    queues
}

fn validate_kinds(ctx: &mut Ctx, doc: &Table) -> BTreeMap<String, KindSettings> {
    let section = Fields::section(ctx, doc, "kinds", "kinds".to_owned());
    let mut kinds = BTreeMap::new();
    let Some(table) = section.table else {
        return kinds;
    };
    for (name, value) in table {
        let path = format!("kinds.{}", key_segment(name));
        if let Err(e) = JobKind::parse(name) {
            ctx.problem(&path, e.to_string());
            continue;
        }
        let fields = Fields::section(ctx, table, name, path);
        if fields.table.is_none() && !matches!(value, Value::Table(_)) {
            continue;
        }
        fields.check_keys(ctx, KIND_KEYS);
        let settings = KindSettings {
            max_attempts: fields.opt_u32(ctx, "max_attempts", 1..=100),
            timeout: fields.opt_duration(ctx, "timeout", Duration::from_millis(1), None),
            backoff_base: fields.opt_duration(ctx, "backoff_base", Duration::from_millis(1), None),
            backoff_max: fields.opt_duration(ctx, "backoff_max", Duration::from_millis(1), None),
        };
        kinds.insert(name.clone(), settings);
    }
    kinds
}

fn validate_schedules(
    ctx: &mut Ctx,
    doc: &Table,
    queues: &BTreeMap<QueueName, QueueSettings>,
) -> Vec<ScheduleSettings> {
    let items = match doc.get("schedules") {
        None => return Vec::new(),
        Some(Value::Array(items)) => items,
        Some(other) => {
            ctx.problem(
                "schedules",
                format!(
                    "expected an array of tables ([[schedules]]), got {}",
                    describe(other, false)
                ),
            );
            return Vec::new();
        }
    };
    let mut schedules = Vec::new();
    let mut first_index_by_name: HashMap<String, usize> = HashMap::new();
    for (idx, item) in items.iter().enumerate() {
        let Value::Table(table) = item else {
            ctx.problem(
                &format!("schedules[{idx}]"),
                format!("expected a table, got {}", describe(item, false)),
            );
            continue;
        };
        let name = table.get("name").and_then(Value::as_str);
        let path = match name {
            Some(name) => format!("schedules[{idx}] ({name:?})"),
            None => format!("schedules[{idx}]"),
        };
        let fields = Fields {
            path,
            table: Some(table),
        };
        if let Some(schedule) = validate_schedule(ctx, &fields, queues) {
            if let Some(first) = first_index_by_name.get(&schedule.name) {
                ctx.problem(
                    &fields.key_path("name"),
                    format!(
                        "duplicate schedule name {:?} (also schedules[{first}])",
                        schedule.name
                    ),
                );
                continue;
            }
            first_index_by_name.insert(schedule.name.clone(), idx);
            schedules.push(schedule);
        }
    }
    schedules
}

/// Validates one schedule; `None` when a required field is missing or invalid (the problem
/// is recorded).
fn validate_schedule(
    ctx: &mut Ctx,
    fields: &Fields<'_>,
    queues: &BTreeMap<QueueName, QueueSettings>,
) -> Option<ScheduleSettings> {
    fields.check_keys(ctx, SCHEDULE_KEYS);
    let n_problems = ctx.problems.len();

    let name = required_string(ctx, fields, "name").and_then(|name| {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| {
                b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
            });
        if valid {
            Some(name.to_owned())
        } else {
            ctx.problem(
                &fields.key_path("name"),
                format!("must be 1-64 characters of [a-z0-9_.-], got {name:?}"),
            );
            None
        }
    });

    let cron = required_string(ctx, fields, "cron").and_then(|cron| {
        CronExpr::parse(cron)
            .map_err(|e| ctx.problem(&fields.key_path("cron"), e.to_string()))
            .ok()
    });

    let timezone = match fields.opt_string(ctx, "timezone", false) {
        None => Some(chrono_tz::Tz::UTC),
        Some(text) => schedule::parse_time_zone(text)
            .map_err(|e| ctx.problem(&fields.key_path("timezone"), e.to_string()))
            .ok(),
    };

    let kind = required_string(ctx, fields, "kind").and_then(|text| {
        JobKind::parse_runnable(text)
            .map_err(|e| ctx.problem(&fields.key_path("kind"), e.to_string()))
            .ok()
    });

    let args = match fields.get("args") {
        None => Some(serde_json::Value::Object(serde_json::Map::new())),
        Some(value @ Value::Table(_)) => match toml_to_json(value) {
            Ok(json) => Some(json),
            Err(message) => {
                ctx.problem(&fields.key_path("args"), message);
                None
            }
        },
        Some(other) => {
            ctx.problem(
                &fields.key_path("args"),
                format!("expected a table, got {}", describe(other, false)),
            );
            None
        }
    };
    if let (Some(kind), Some(args)) = (kind, args.as_ref())
        && let Err(e) = kind.validate_args(args)
    {
        ctx.problem(&fields.key_path("args"), e.to_string());
    }

    let queue = match fields.opt_string(ctx, "queue", false) {
        None => kind.map(JobKind::default_queue),
        Some(text) => match QueueName::parse(text) {
            Ok(queue) if queues.contains_key(&queue) => Some(queue),
            Ok(_) => {
                let configured: Vec<&str> = queues.keys().map(QueueName::as_str).collect();
                ctx.problem(
                    &fields.key_path("queue"),
                    format!(
                        "queue {text:?} is not configured (configured: {})",
                        configured.join(", ")
                    ),
                );
                None
            }
            Err(e) => {
                ctx.problem(&fields.key_path("queue"), e.to_string());
                None
            }
        },
    };

    let catch_up = match fields.opt_string(ctx, "catch_up", false) {
        None => Some(CatchUp::Latest),
        Some(text) => CatchUp::parse(text)
            .map_err(|e| ctx.problem(&fields.key_path("catch_up"), e.to_string()))
            .ok(),
    };
    let overlap = match fields.opt_string(ctx, "overlap", false) {
        None => kind.map(default_overlap),
        Some(text) => Overlap::parse(text)
            .map_err(|e| ctx.problem(&fields.key_path("overlap"), e.to_string()))
            .ok(),
    };
    let catch_up_window = fields.duration(
        ctx,
        "catch_up_window",
        Duration::from_secs(3600),
        Duration::ZERO,
    );
    let catch_up_max = fields.u32(ctx, "catch_up_max", 100, 1..=10_000);
    let jitter = fields
        .opt_duration(
            ctx,
            "jitter",
            Duration::ZERO,
            Some(Duration::from_secs(3600)),
        )
        .unwrap_or(Duration::ZERO);
    let enabled = fields.bool(ctx, "enabled", true);

    if ctx.problems.len() != n_problems {
        return None;
    }
    Some(ScheduleSettings {
        name: name?,
        cron: cron?,
        timezone: timezone?,
        kind: kind?,
        args: args?,
        queue: queue?,
        catch_up: catch_up?,
        catch_up_window,
        catch_up_max,
        overlap: overlap?,
        jitter,
        enabled,
    })
}

fn required_string<'t>(ctx: &mut Ctx, fields: &Fields<'t>, key: &str) -> Option<&'t str> {
    if fields.get(key).is_none() {
        ctx.problem(&fields.key_path(key), "is required");
        return None;
    }
    fields.opt_string(ctx, key, false)
}

/// Converts a TOML value to JSON; datetimes and non-finite floats have no JSON form.
fn toml_to_json(value: &Value) -> Result<serde_json::Value, String> {
    Ok(match value {
        Value::String(text) => serde_json::Value::String(text.clone()),
        Value::Integer(n) => serde_json::Value::from(*n),
        Value::Float(x) => serde_json::Number::from_f64(*x)
            .map(serde_json::Value::Number)
            .ok_or_else(|| format!("{x} has no JSON form"))?,
        Value::Boolean(b) => serde_json::Value::Bool(*b),
        Value::Datetime(dt) => {
            return Err(format!(
                "datetime {dt} has no JSON form; write it as a string"
            ));
        }
        Value::Array(items) => serde_json::Value::Array(
            items
                .iter()
                .map(toml_to_json)
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Value::Table(table) => serde_json::Value::Object(
            table
                .iter()
                .map(|(key, value)| Ok((key.clone(), toml_to_json(value)?)))
                .collect::<Result<serde_json::Map<_, _>, String>>()?,
        ),
    })
}

fn validate_worker(ctx: &mut Ctx, doc: &Table) -> WorkerSettings {
    let fields = Fields::section(ctx, doc, "worker", "worker".to_owned());
    fields.check_keys(ctx, WORKER_KEYS);
    let defaults = WorkerSettings::default();
    let identity = fields
        .opt_string(ctx, "identity", false)
        .and_then(|identity| {
            let valid = !identity.is_empty()
                && identity.len() <= 128
                && !identity.chars().any(|c| c.is_control() || c.is_whitespace());
            if valid {
                Some(identity.to_owned())
            } else {
                ctx.problem(
                    "worker.identity",
                    format!(
                        "must be 1-128 characters without spaces or control characters, got {identity:?}"
                    ),
                );
                None
            }
        });
    WorkerSettings {
        grace_period: fields.duration(ctx, "grace_period", defaults.grace_period, Duration::ZERO),
        identity,
    }
}

fn validate_maintenance(ctx: &mut Ctx, doc: &Table) -> MaintenanceSettings {
    let fields = Fields::section(ctx, doc, "maintenance", "maintenance".to_owned());
    fields.check_keys(ctx, MAINTENANCE_KEYS);
    let defaults = MaintenanceSettings::default();
    let reconcile_action = match fields.opt_string(ctx, "reconcile_action", false) {
        None => defaults.reconcile_action,
        Some(text) => ReconcileAction::parse(text).unwrap_or_else(|message| {
            ctx.problem("maintenance.reconcile_action", message);
            defaults.reconcile_action
        }),
    };
    let reconcile_grace = fields.duration(
        ctx,
        "reconcile_grace",
        defaults.reconcile_grace,
        Duration::from_secs(1),
    );
    let ledger_retention = fields.duration(
        ctx,
        "ledger_retention",
        defaults.ledger_retention,
        Duration::from_secs(3600),
    );
    if ledger_retention <= reconcile_grace {
        // Reconciliation reads the ledger rows of jobs that never finished; pruning them
        // first would make a lost job untraceable.
        ctx.problem(
            "maintenance.ledger_retention",
            format!(
                "must be longer than maintenance.reconcile_grace ({}), got {}",
                humantime::format_duration(reconcile_grace),
                humantime::format_duration(ledger_retention)
            ),
        );
    }
    MaintenanceSettings {
        reconcile_action,
        reconcile_interval: fields.duration(
            ctx,
            "reconcile_interval",
            defaults.reconcile_interval,
            Duration::from_millis(100),
        ),
        reconcile_grace,
        ledger_retention,
        ledger_prune_interval: fields.duration(
            ctx,
            "ledger_prune_interval",
            defaults.ledger_prune_interval,
            Duration::from_secs(1),
        ),
    }
}

fn validate_scheduler(ctx: &mut Ctx, doc: &Table) -> SchedulerSettings {
    let fields = Fields::section(ctx, doc, "scheduler", "scheduler".to_owned());
    fields.check_keys(ctx, SCHEDULER_KEYS);
    let defaults = SchedulerSettings::default();
    SchedulerSettings {
        tick_interval: fields.duration(
            ctx,
            "tick_interval",
            defaults.tick_interval,
            Duration::from_millis(10),
        ),
        confirm_timeout: fields.duration(
            ctx,
            "confirm_timeout",
            defaults.confirm_timeout,
            Duration::from_millis(100),
        ),
    }
}

fn validate_api(ctx: &mut Ctx, doc: &Table) -> ApiSettings {
    let fields = Fields::section(ctx, doc, "api", "api".to_owned());
    fields.check_keys(ctx, API_KEYS);
    let defaults = ApiSettings::default();
    let addr = match fields.opt_string(ctx, "addr", false) {
        None => defaults.addr,
        Some(text) => text.trim().parse().unwrap_or_else(|_| {
            ctx.problem(
                "api.addr",
                format!("not a socket address such as 127.0.0.1:8080: {text:?}"),
            );
            defaults.addr
        }),
    };
    let token = fields.opt_string(ctx, "token", true).and_then(|token| {
        if token.trim().is_empty() {
            ctx.problem("api.token", "must not be blank");
            None
        } else {
            Some(SecretString::from(token))
        }
    });
    ApiSettings { addr, token }
}

fn validate_telemetry(ctx: &mut Ctx, doc: &Table) -> TelemetrySettings {
    let fields = Fields::section(ctx, doc, "telemetry", "telemetry".to_owned());
    fields.check_keys(ctx, TELEMETRY_KEYS);
    let defaults = TelemetrySettings::default();
    let format = match fields.opt_string(ctx, "format", false) {
        None => defaults.format,
        Some("json") => LogFormat::Json,
        Some("pretty") => LogFormat::Pretty,
        Some(other) => {
            ctx.problem(
                "telemetry.format",
                format!("must be json or pretty, got {other:?}"),
            );
            defaults.format
        }
    };
    let filter = match fields.opt_string(ctx, "filter", false) {
        None => defaults.filter,
        Some(text) => match tracing_subscriber::EnvFilter::try_new(text) {
            Ok(_) => text.to_owned(),
            Err(e) => {
                ctx.problem(
                    "telemetry.filter",
                    format!("invalid tracing filter {text:?}: {e}"),
                );
                defaults.filter
            }
        },
    };
    TelemetrySettings { format, filter }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> HashMap<String, String> {
        vars.iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect()
    }

    fn load(toml: &str, vars: &[(&str, &str)]) -> Result<Settings, Error> {
        Settings::from_toml_str(toml, &env(vars))
    }

    /// A section shaped like the feature sections: an array of tables with a secret each.
    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(deny_unknown_fields, default)]
    struct Targets {
        targets: Vec<Target>,
        #[serde(with = "humantime_serde")]
        every: Duration,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Target {
        name: String,
        url: SecretString,
    }

    impl Section for Targets {
        const SECRET_KEYS: &'static [&'static str] = &["targets[].url"];

        fn validate(&self, path: &str, problems: &mut Problems) {
            for (idx, target) in self.targets.iter().enumerate() {
                problems.check_not_empty(format!("{path}.targets[{idx}].name"), &target.name);
            }
        }
    }

    fn section(toml: &str, vars: &[(&str, &str)]) -> Result<Targets, Vec<Problem>> {
        let doc: Table = toml.parse().expect("test TOML parses");
        let mut ctx = Ctx::default();
        let targets = serde_section::<Targets>(&mut ctx, &doc, "t", &env(vars));
        if ctx.problems.is_empty() {
            Ok(targets)
        } else {
            Err(ctx.problems)
        }
    }

    #[test]
    fn a_secret_in_an_array_entry_is_read_from_its_env_variable() {
        let targets = section(
            "[[t.targets]]\nname = \"a\"\nurl_env = \"A_URL\"\n",
            &[("A_URL", "postgres://u:pw@db/a")],
        )
        .expect("valid");
        assert_eq!(
            targets.targets[0].url.expose_secret(),
            "postgres://u:pw@db/a"
        );
    }

    #[test]
    fn a_secret_in_an_array_entry_is_read_from_its_file_without_the_newline() {
        let dir = std::env::temp_dir().join(format!("upkeep-cfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("url");
        std::fs::write(&file, "postgres://u:pw@db/b\n").expect("write credential");
        let toml = format!(
            "[[t.targets]]\nname = \"b\"\nurl_file = {:?}\n",
            file.display().to_string()
        );
        let targets = section(&toml, &[]).expect("valid");
        assert_eq!(
            targets.targets[0].url.expose_secret(),
            "postgres://u:pw@db/b"
        );
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn indirect_secret_problems_name_the_key_and_never_the_secret() {
        let problems = section(
            "[[t.targets]]\nname = \"\"\nurl_env = \"MISSING_VAR\"\n\
             [[t.targets]]\nname = \"c\"\nurl = \"postgres://u:hunter2@db/c\"\nurl_env = \"X\"\n\
             [[t.targets]]\nname = \"d\"\nurl_file = \"/nonexistent/upkeep-cred\"\n",
            &[],
        )
        .expect_err("invalid");
        let text: Vec<String> = problems.iter().map(Problem::to_string).collect();
        assert!(
            text[0]
                .starts_with("t.targets[0].url_env: environment variable MISSING_VAR is not set"),
            "{text:?}"
        );
        assert!(
            text[1].starts_with("t.targets[1].url: give only one of url, url_env and url_file"),
            "{text:?}"
        );
        assert!(
            text[2].starts_with("t.targets[2].url_file: cannot read /nonexistent/upkeep-cred"),
            "{text:?}"
        );
        assert!(!text.join(" ").contains("hunter2"), "{text:?}");
    }

    #[test]
    fn a_section_type_error_names_the_nested_key() {
        let problems = section(
            "[t]\nevery = \"soon\"\n[[t.targets]]\nname = \"e\"\nurl = \"x\"\n",
            &[],
        )
        .expect_err("invalid");
        assert_eq!(problems[0].key, "t.every", "{problems:?}");
        let problems = section(
            "[[t.targets]]\nname = \"e\"\nurl = \"x\"\ncolour = 1\n",
            &[],
        )
        .expect_err("invalid");
        assert_eq!(problems[0].key, "t.targets[0].colour", "{problems:?}");
        assert!(
            problems[0].message.contains("unknown field"),
            "{problems:?}"
        );
    }

    fn error_text(toml: &str, vars: &[(&str, &str)]) -> String {
        match load(toml, vars) {
            Ok(_) => panic!("expected an error for {toml:?} with {vars:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn queue(name: &str) -> QueueName {
        QueueName::parse(name).expect("test queue names are valid")
    }

    const PING: &str = r#"
        [[schedules]]
        name = "ping"
        cron = "*/5 * * * * *"
        kind = "system.ping"
    "#;

    #[test]
    fn an_empty_file_gives_the_documented_defaults() {
        let settings = load("", &[]).expect("defaults are valid");

        assert_eq!(
            settings.database.url.expose_secret(),
            "postgres://postgres@127.0.0.1:5432/upkeep"
        );
        assert_eq!(settings.database.max_connections, 10);
        assert!(!settings.database.migrate_on_start);
        assert_eq!(
            settings.redis.url.expose_secret(),
            "redis://127.0.0.1:6379/"
        );
        assert!(!settings.redis.is_cluster());
        assert_eq!(settings.redis.key_prefix.as_str(), "upkeep");
        assert_eq!(settings.redis.response_timeout, Duration::from_secs(5));
        assert_eq!(settings.worker.grace_period, Duration::from_secs(30));
        assert_eq!(settings.worker.identity, None);
        assert_eq!(settings.scheduler.tick_interval, Duration::from_millis(250));
        assert_eq!(settings.scheduler.confirm_timeout, Duration::from_secs(10));
        assert_eq!(settings.api.addr, "127.0.0.1:8080".parse().unwrap());
        assert!(settings.api.token.is_none());
        assert_eq!(settings.telemetry.format, LogFormat::Pretty);
        assert_eq!(settings.telemetry.filter, "info");
        assert!(settings.secret_key.is_none());
        assert!(settings.schedules.is_empty());
    }

    #[test]
    fn maintenance_defaults_to_requeueing_lost_jobs_every_5m_after_a_10m_grace() {
        let settings = load("", &[]).expect("defaults are valid");

        assert_eq!(
            settings.maintenance,
            MaintenanceSettings {
                reconcile_action: ReconcileAction::Requeue,
                reconcile_interval: Duration::from_secs(300),
                reconcile_grace: Duration::from_secs(600),
                ledger_retention: Duration::from_secs(90 * 24 * 3600),
                ledger_prune_interval: Duration::from_secs(3600),
            }
        );
    }

    #[test]
    fn a_ledger_retention_under_an_hour_or_within_the_reconcile_grace_is_named() {
        let text = error_text("[maintenance]\nledger_retention = \"10m\"\n", &[]);
        assert!(
            text.contains("maintenance.ledger_retention: must be at least 1h"),
            "{text}"
        );

        let text = error_text(
            "[maintenance]\nledger_retention = \"2h\"\nreconcile_grace = \"3h\"\n",
            &[],
        );
        assert!(
            text.contains("maintenance.ledger_retention: must be longer than maintenance.reconcile_grace (3h), got 2h"),
            "{text}"
        );

        let settings =
            load("", &[("UPKEEP__MAINTENANCE__LEDGER_RETENTION", "30d")]).expect("valid");
        assert_eq!(
            settings.maintenance.ledger_retention,
            Duration::from_secs(30 * 24 * 3600)
        );
    }

    #[test]
    fn maintenance_settings_come_from_the_file_and_the_environment() {
        let settings = load(
            "[maintenance]\nreconcile_action = \"record\"\nreconcile_grace = \"30s\"\n",
            &[("UPKEEP__MAINTENANCE__RECONCILE_INTERVAL", "1m")],
        )
        .expect("valid");

        assert_eq!(
            settings.maintenance.reconcile_action,
            ReconcileAction::Record
        );
        assert_eq!(
            settings.maintenance.reconcile_grace,
            Duration::from_secs(30)
        );
        assert_eq!(
            settings.maintenance.reconcile_interval,
            Duration::from_secs(60)
        );
    }

    #[test]
    fn a_bad_reconcile_action_or_a_grace_under_a_second_is_named() {
        let text = error_text(
            "[maintenance]\nreconcile_action = \"delete\"\nreconcile_grace = \"10ms\"\n",
            &[],
        );

        assert!(text.contains("maintenance.reconcile_action"), "{text}");
        assert!(text.contains("\"delete\""), "{text}");
        assert!(
            text.contains("maintenance.reconcile_grace: must be at least 1s"),
            "{text}"
        );
    }

    #[test]
    fn every_builtin_queue_exists_with_defaults_even_when_the_file_names_none() {
        let settings = load("", &[]).unwrap();

        for name in job::QUEUES {
            let queue_settings = settings.queues.get(&queue(name)).expect("queue present");
            assert_eq!(queue_settings, &QueueSettings::default(), "queue {name}");
        }
        let defaults = QueueSettings::default();
        assert_eq!(defaults.concurrency, 16);
        assert_eq!(defaults.lease, Duration::from_secs(30));
        assert_eq!(defaults.retention, Duration::from_secs(3600));
        assert_eq!(defaults.dead_retention, Duration::from_secs(7 * 86_400));
        assert_eq!(defaults.max_attempts, 3);
        assert_eq!(defaults.backoff_base, Duration::from_secs(1));
        assert_eq!(defaults.backoff_max, Duration::from_secs(300));
        assert_eq!(defaults.batch_size, 64);
        assert_eq!(defaults.timeout, Duration::from_secs(3600));
    }

    #[test]
    fn a_queue_section_changes_only_the_keys_it_names() {
        let settings = load(
            "[queues.reports]\nconcurrency = 4\nlease = \"1m\"\n[queues.bench]\nbatch_size = 500\n",
            &[],
        )
        .unwrap();

        let reports = &settings.queues[&queue("reports")];
        assert_eq!(reports.concurrency, 4);
        assert_eq!(reports.lease, Duration::from_secs(60));
        assert_eq!(reports.max_attempts, 3);
        assert_eq!(settings.queues[&queue("bench")].batch_size, 500);
        assert_eq!(settings.queues[&queue("logs")], QueueSettings::default());
    }

    #[test]
    fn a_kind_override_wins_over_its_queue_policy() {
        let settings = load(
            "[queues.reports]\nmax_attempts = 7\n[kinds.\"system.ping\"]\ntimeout = \"2s\"\n",
            &[],
        )
        .unwrap();

        let policy = settings.job_policy(&queue("reports"), "system.ping");
        assert_eq!(policy.timeout, Duration::from_secs(2));
        assert_eq!(policy.max_attempts, 7);
        let other = settings.job_policy(&queue("reports"), "db.bloat");
        assert_eq!(other.timeout, Duration::from_secs(3600));
    }

    #[test]
    fn a_schedule_gets_its_documented_defaults() {
        let settings = load(PING, &[]).unwrap();

        let schedule = &settings.schedules[0];
        assert_eq!(schedule.name, "ping");
        assert_eq!(schedule.timezone, chrono_tz::Tz::UTC);
        assert_eq!(schedule.kind.as_str(), "system.ping");
        assert_eq!(schedule.args, serde_json::json!({}));
        assert_eq!(schedule.queue, queue("reports"));
        assert_eq!(schedule.catch_up, CatchUp::Latest);
        assert_eq!(schedule.catch_up_window, Duration::from_secs(3600));
        assert_eq!(schedule.catch_up_max, 100);
        assert_eq!(schedule.overlap, Overlap::Allow);
        assert_eq!(schedule.jitter, Duration::ZERO);
        assert!(schedule.enabled);
    }

    #[test]
    fn backup_kinds_default_to_skipping_overlaps() {
        let backup = JobKind::parse("backup.run").unwrap();
        let ping = JobKind::parse("system.ping").unwrap();

        assert_eq!(default_overlap(backup), Overlap::Skip);
        assert_eq!(default_overlap(ping), Overlap::Allow);
    }

    #[test]
    fn schedule_args_become_json() {
        let settings = load(
            r#"
            [[schedules]]
            name = "ping"
            cron = "0 * * * * *"
            timezone = "Europe/Paris"
            kind = "system.ping"
            args = { sleep_ms = 10, fail = false }
            queue = "logs"
            catch_up = "all"
            overlap = "queue_one"
            jitter = "3s"
            enabled = false
            "#,
            &[],
        )
        .unwrap();

        let schedule = &settings.schedules[0];
        assert_eq!(
            schedule.args,
            serde_json::json!({"sleep_ms": 10, "fail": false})
        );
        assert_eq!(schedule.timezone, chrono_tz::Tz::Europe__Paris);
        assert_eq!(schedule.queue, queue("logs"));
        assert_eq!(schedule.catch_up, CatchUp::All);
        assert_eq!(schedule.overlap, Overlap::QueueOne);
        assert_eq!(schedule.jitter, Duration::from_secs(3));
        assert!(!schedule.enabled);
    }

    #[test]
    fn each_validation_error_names_its_key_and_the_bad_value() {
        let schedule = |extra: &str| {
            format!(
                "[[schedules]]\nname = \"a\"\ncron = \"0 * * * * *\"\nkind = \"system.ping\"\n\
                 [[schedules]]\nname = \"b\"\ncron = \"0 * * * * *\"\nkind = \"system.ping\"\n\
                 [[schedules]]\nname = \"nightly\"\ncron = \"0 0 2 * * *\"\nkind = \"system.ping\"\n{extra}\n"
            )
        };
        let cases: Vec<(String, &str)> = vec![
            (
                "[queues.reports]\nconcurrency = 0".into(),
                "queues.reports.concurrency: must be between 1 and 10000, got 0",
            ),
            (
                "[queues.reports]\nconcurrency = \"many\"".into(),
                "queues.reports.concurrency: expected an integer, got \"many\"",
            ),
            (
                "[queues.reports]\nmax_attempts = 101".into(),
                "queues.reports.max_attempts: must be between 1 and 100, got 101",
            ),
            (
                "[queues.logs]\nbatch_size = 1001".into(),
                "queues.logs.batch_size: must be between 1 and 1000, got 1001",
            ),
            (
                "[queues.logs]\nlease = \"500ms\"".into(),
                "queues.logs.lease: must be at least 1s, got \"500ms\"",
            ),
            (
                "[queues.logs]\ntimeout = \"soon\"".into(),
                "queues.logs.timeout: expected a duration such as",
            ),
            (
                "[queues.logs]\nbackoff_base = \"10m\"".into(),
                "queues.logs.backoff_max: must be at least backoff_base (10m), got 5m",
            ),
            (
                "[queues.\"Bad Queue\"]\nconcurrency = 1".into(),
                "queues.\"Bad Queue\": queue name \"Bad Queue\"",
            ),
            (
                "[kinds.\"nope.kind\"]\ntimeout = \"1s\"".into(),
                "kinds.\"nope.kind\": unknown job kind \"nope.kind\"",
            ),
            (
                "[redis]\nurl = \"http://x\"".into(),
                "redis.url: not a redis://, rediss:// or redis+sentinel:// URL: \"http://x\"",
            ),
            (
                "[redis]\nkey_prefix = \"test:{1}\"".into(),
                "redis.key_prefix: must be 1-64 characters of [A-Za-z0-9_.-] (no braces or colons), got \"test:{1}\"",
            ),
            (
                "[redis]\ncluster_urls = [\"redis://a:7000\", \"tcp://b\"]".into(),
                "redis.cluster_urls[1]: not a redis:// or rediss:// URL: \"tcp://b\"",
            ),
            (
                "[database]\nurl = \"mysql://x/db\"".into(),
                "database.url: not a postgres URL (expected postgres:// or postgresql://): \"mysql://x/db\"",
            ),
            (
                "[database]\nmax_conections = 3".into(),
                "database.max_conections: unknown key (expected one of url, max_connections",
            ),
            (
                "[database]\nmigrate_on_start = \"yes\"".into(),
                "database.migrate_on_start: expected true or false, got \"yes\"",
            ),
            ("[databse]\nurl = \"x\"".into(), "databse: unknown key"),
            (
                "[api]\naddr = \"localhost\"".into(),
                "api.addr: not a socket address such as 127.0.0.1:8080: \"localhost\"",
            ),
            (
                "[telemetry]\nformat = \"xml\"".into(),
                "telemetry.format: must be json or pretty, got \"xml\"",
            ),
            (
                "[telemetry]\nfilter = \"info,[[[\"".into(),
                "telemetry.filter: invalid tracing filter \"info,[[[\"",
            ),
            (
                "[worker]\ngrace_period = 30".into(),
                "worker.grace_period: expected a duration such as \"250ms\", \"30s\", \"5m\" or \"7d\", got 30",
            ),
            (
                "[scheduler]\ntick_interval = \"1ms\"".into(),
                "scheduler.tick_interval: must be at least 10ms, got \"1ms\"",
            ),
            ("database = 5".into(), "database: expected a table, got 5"),
            (
                schedule("cron = \"61 * * * * *\"").replace("cron = \"0 0 2 * * *\"\n", ""),
                "schedules[2] (\"nightly\").cron: invalid cron expression \"61 * * * * *\": second field \"61\": 61 is out of range 0-59",
            ),
            (
                schedule("").replace("cron = \"0 0 2 * * *\"", "cron = \"2 * * *\""),
                "schedules[2] (\"nightly\").cron: invalid cron expression \"2 * * *\": expected 5 fields",
            ),
            (
                schedule("timezone = \"Mars/Olympus\""),
                "schedules[2] (\"nightly\").timezone: unknown time zone \"Mars/Olympus\"",
            ),
            (
                schedule("").replace(
                    "kind = \"system.ping\"\n\n",
                    "kind = \"jobs.failed_review\"\n",
                ),
                "schedules[2] (\"nightly\").kind: job kind \"jobs.failed_review\" has no handler",
            ),
            (
                schedule("").replace("kind = \"system.ping\"\n\n", "kind = \"backup.nope\"\n"),
                "schedules[2] (\"nightly\").kind: unknown job kind \"backup.nope\"",
            ),
            (
                schedule("args = { sleep = 5 }"),
                "schedules[2] (\"nightly\").args: bad args for system.ping: unknown field `sleep`",
            ),
            (
                schedule("queue = \"nowhere\""),
                "schedules[2] (\"nightly\").queue: queue \"nowhere\" is not configured",
            ),
            (
                schedule("catch_up = \"sometimes\""),
                "schedules[2] (\"nightly\").catch_up: unknown catch-up policy \"sometimes\"",
            ),
            (
                schedule("overlap = \"never\""),
                "schedules[2] (\"nightly\").overlap: unknown overlap policy \"never\"",
            ),
            (
                schedule("jitter = \"2h\""),
                "schedules[2] (\"nightly\").jitter: must be at most 1h, got \"2h\"",
            ),
            (
                schedule("catch_up_max = 0"),
                "schedules[2] (\"nightly\").catch_up_max: must be between 1 and 10000, got 0",
            ),
            (
                schedule("retries = 3"),
                "schedules[2] (\"nightly\").retries: unknown key",
            ),
            (
                schedule("").replace("name = \"nightly\"", "name = \"Nightly Backup\""),
                "schedules[2] (\"Nightly Backup\").name: must be 1-64 characters of [a-z0-9_.-], got \"Nightly Backup\"",
            ),
            (
                schedule("").replace("name = \"nightly\"", "name = \"a\""),
                "schedules[2] (\"a\").name: duplicate schedule name \"a\" (also schedules[0])",
            ),
            (
                schedule("").replace("name = \"nightly\"\n", ""),
                "schedules[2].name: is required",
            ),
        ];
        for (toml, expected) in cases {
            let text = error_text(&toml, &[]);
            assert!(
                text.contains(expected),
                "error for\n{toml}\nwas\n  {text}\nexpected it to contain\n  {expected}"
            );
        }
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let result = load(
            "[queues.reports]\nconcurrency = 0\nbatch_size = 0\n[redis]\nurl = \"http://x\"\n",
            &[],
        );

        let Err(Error::Invalid { problems, .. }) = result else {
            panic!("expected Error::Invalid, got {result:?}");
        };
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "redis.url",
                "queues.reports.concurrency",
                "queues.reports.batch_size"
            ]
        );
    }

    #[test]
    fn a_syntax_error_names_the_line_without_echoing_it() {
        let text = error_text(
            "[database]\nurl = \"postgres://u:hunter2@h/db\"\nmax_connections = = 3\n",
            &[],
        );

        assert!(text.starts_with("<string>: line 3, column"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn named_environment_variables_override_the_file() {
        let toml = "[redis]\nurl = \"redis://file:6379/\"\n[api]\naddr = \"127.0.0.1:1\"\n\
                    [telemetry]\nformat = \"pretty\"\n[database]\nurl = \"postgres://file/db\"\n";
        let settings = load(
            toml,
            &[
                ("DATABASE_URL", "postgres://env/db"),
                ("REDIS_URL", "redis://env:6379/"),
                ("UPKEEP_API_ADDR", "0.0.0.0:9000"),
                ("UPKEEP_LOG_FORMAT", "json"),
                ("UPKEEP_API_TOKEN", "t0ken"),
            ],
        )
        .unwrap();

        assert_eq!(settings.database.url.expose_secret(), "postgres://env/db");
        assert_eq!(settings.redis.url.expose_secret(), "redis://env:6379/");
        assert_eq!(settings.api.addr, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(settings.telemetry.format, LogFormat::Json);
        assert_eq!(
            settings.api.token.as_ref().map(|t| t.expose_secret()),
            Some("t0ken")
        );
    }

    #[test]
    fn named_variables_win_over_generic_ones_which_win_over_the_file() {
        let toml = "[redis]\nurl = \"redis://file:6379/\"\nkey_prefix = \"file\"\n";

        let generic_only = load(
            toml,
            &[
                ("UPKEEP__REDIS__URL", "redis://generic:6379/"),
                ("UPKEEP__REDIS__KEY_PREFIX", "generic"),
            ],
        )
        .unwrap();
        let both = load(
            toml,
            &[
                ("UPKEEP__REDIS__URL", "redis://generic:6379/"),
                ("REDIS_URL", "redis://named:6379/"),
            ],
        )
        .unwrap();

        assert_eq!(
            generic_only.redis.url.expose_secret(),
            "redis://generic:6379/"
        );
        assert_eq!(generic_only.redis.key_prefix.as_str(), "generic");
        assert_eq!(both.redis.url.expose_secret(), "redis://named:6379/");
    }

    #[test]
    fn an_empty_named_variable_counts_as_unset() {
        let settings = load(
            "[api]\naddr = \"127.0.0.1:7000\"\n",
            &[("UPKEEP_API_ADDR", ""), ("UPKEEP_API_TOKEN", "")],
        )
        .unwrap();

        assert_eq!(settings.api.addr, "127.0.0.1:7000".parse().unwrap());
        assert!(settings.api.token.is_none());
    }

    #[test]
    fn generic_variables_set_scalar_fields_of_any_section() {
        let settings = load(
            "",
            &[
                ("UPKEEP__QUEUES__REPORTS__CONCURRENCY", "32"),
                ("UPKEEP__QUEUES__BENCH__LEASE", "2m"),
                ("UPKEEP__WORKER__GRACE_PERIOD", "10s"),
                ("UPKEEP__WORKER__IDENTITY", "worker-a"),
                ("UPKEEP__DATABASE__MIGRATE_ON_START", "true"),
                ("UPKEEP__DATABASE__MAX_CONNECTIONS", "3"),
                ("UPKEEP__KINDS__SYSTEM_PING__MAX_ATTEMPTS", "5"),
                (
                    "UPKEEP__REDIS__CLUSTER_URLS",
                    "redis://a:7000, redis://b:7000",
                ),
                ("UPKEEP__TELEMETRY__FILTER", "debug"),
            ],
        )
        .unwrap();

        assert_eq!(settings.queues[&queue("reports")].concurrency, 32);
        assert_eq!(
            settings.queues[&queue("reports")].lease,
            Duration::from_secs(30)
        );
        assert_eq!(
            settings.queues[&queue("bench")].lease,
            Duration::from_secs(120)
        );
        assert_eq!(settings.worker.grace_period, Duration::from_secs(10));
        assert_eq!(settings.worker.identity.as_deref(), Some("worker-a"));
        assert!(settings.database.migrate_on_start);
        assert_eq!(settings.database.max_connections, 3);
        assert_eq!(settings.kinds["system.ping"].max_attempts, Some(5));
        assert!(settings.redis.is_cluster());
        assert_eq!(settings.redis.cluster_urls.len(), 2);
        assert_eq!(settings.telemetry.filter, "debug");
    }

    #[test]
    fn a_bad_environment_value_names_the_variable() {
        let cases = [
            (
                ("UPKEEP__QUEUES__REPORTS__CONCURRENCY", "0"),
                "queues.reports.concurrency (from UPKEEP__QUEUES__REPORTS__CONCURRENCY): must be between 1 and 10000, got 0",
            ),
            (
                ("UPKEEP__WORKER__GRACE_PERIOD", "ten"),
                "worker.grace_period (from UPKEEP__WORKER__GRACE_PERIOD): expected a duration",
            ),
            (
                ("UPKEEP__QUEUES__REPORTS__CONCURENCY", "3"),
                "UPKEEP__QUEUES__REPORTS__CONCURENCY: unknown queue setting concurency",
            ),
            (
                ("UPKEEP__DATABASE__PORT", "5433"),
                "UPKEEP__DATABASE__PORT: unknown setting database.port",
            ),
            (
                ("UPKEEP__KINDS__NOPE__TIMEOUT", "1s"),
                "UPKEEP__KINDS__NOPE__TIMEOUT: unknown job kind \"nope\"",
            ),
            (
                ("UPKEEP__SCHEDULES__0__CRON", "x"),
                "UPKEEP__SCHEDULES__0__CRON: schedules cannot be set from the environment",
            ),
            (("UPKEEP__NOPE", "x"), "UPKEEP__NOPE: unknown setting"),
            (
                ("UPKEEP_API_ADDR", "nope"),
                "UPKEEP_API_ADDR: not a socket address such as 127.0.0.1:8080: \"nope\"",
            ),
            (
                ("UPKEEP_LOG_FORMAT", "xml"),
                "UPKEEP_LOG_FORMAT: must be json or pretty, got \"xml\"",
            ),
            (
                ("REDIS_URL", "http://x"),
                "REDIS_URL: not a redis://, rediss:// or redis+sentinel:// URL: \"http://x\"",
            ),
            (
                ("DATABASE_URL", "mysql://root@db/app"),
                "DATABASE_URL: not a postgres URL",
            ),
            (
                ("UPKEEP_SECRET_KEY", "AAAAAAAAAAAAAAAAAAAAAA=="),
                "UPKEEP_SECRET_KEY: must be base64 of exactly 32 bytes, got 16 bytes",
            ),
            (
                ("UPKEEP_SECRET_KEY", "not base64!"),
                "UPKEEP_SECRET_KEY: not valid base64",
            ),
        ];
        for ((var, value), expected) in cases {
            let text = error_text("", &[(var, value)]);
            assert!(
                text.contains(expected),
                "error for {var}={value:?} was\n  {text}\nexpected it to contain\n  {expected}"
            );
        }
    }

    #[test]
    fn a_valid_secret_key_decodes_to_32_bytes() {
        let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);

        let settings = load("", &[("UPKEEP_SECRET_KEY", &key)]).unwrap();

        let secret_key = settings.secret_key.expect("key set");
        assert_eq!(secret_key.expose_bytes(), &[7u8; 32]);
    }

    #[test]
    fn secrets_never_appear_in_debug_output_or_the_summary() {
        let key = base64::engine::general_purpose::STANDARD.encode([42u8; 32]);
        let settings = load(
            "[redis]\ncluster_urls = [\"redis://:hunter2-cluster@c:7000\"]\n",
            &[
                ("DATABASE_URL", "postgres://app:hunter2-db@db:5432/app"),
                ("REDIS_URL", "rediss://:hunter2-redis@cache:6380/0"),
                ("UPKEEP_API_TOKEN", "hunter2-token"),
                ("UPKEEP_SECRET_KEY", &key),
            ],
        )
        .unwrap();

        let debug = format!("{settings:?}");
        let pretty = format!("{settings:#?}");
        let summary = settings.redacted_summary();
        for text in [&debug, &pretty, &summary] {
            assert!(!text.contains("hunter2"), "secret leaked: {text}");
            assert!(!text.contains(&key), "secret key leaked: {text}");
        }
        assert!(
            summary.contains("database=postgres://***@db:5432/app"),
            "{summary}"
        );
        assert!(summary.contains("api_token=set"), "{summary}");
        assert!(summary.contains("secret_key=set"), "{summary}");
        assert!(summary.contains("cluster[redis://***@c:7000]"), "{summary}");
    }

    #[test]
    fn a_bad_url_error_never_echoes_its_password() {
        let cases = [
            ("DATABASE_URL", "mysql://root:hunter2@db/app"),
            (
                "DATABASE_URL",
                "postgres://app:hunter2@db/app?sslmode=sometimes",
            ),
            ("DATABASE_URL", "postgres://app:hunter2@db:notaport/app"),
            ("DATABASE_URL", "app:hunter2@db/app"),
            (
                "DATABASE_URL",
                "postgres://db/app?password=hunter2&sslmode=bogus",
            ),
            ("REDIS_URL", "http://:hunter2@cache:6379"),
            ("REDIS_URL", "redis//:hunter2@cache"),
            ("REDIS_URL", "redis+sentinel://:hunter2@s1,s2:x/m"),
            (
                "REDIS_URL",
                "redis+sentinel://:hunter2@s1/m?sentinel_password=hunter2&x=1",
            ),
            ("REDIS_URL", "redis+sentinel://:hunter2/x@s1/m"),
            ("REDIS_URL", "redis+sentinel://u:hunter2@s1"),
        ];
        for (var, value) in cases {
            let error = load("", &[(var, value)]).expect_err(value);

            let text = error.to_string();
            let debug = format!("{error:?}");
            assert!(text.starts_with("invalid configuration"), "{text}");
            assert!(text.contains(var), "{text}");
            assert!(!text.contains("hunter2"), "password leaked: {text}");
            assert!(!debug.contains("hunter2"), "password leaked: {debug}");
        }
    }

    #[test]
    fn a_wrongly_typed_secret_is_not_echoed() {
        let text = error_text("[api]\ntoken = 123456789\n", &[]);

        assert!(
            text.contains("api.token: expected a string, got an integer (not shown)"),
            "{text}"
        );
        assert!(!text.contains("123456789"), "{text}");
    }

    #[test]
    fn redact_url_hides_userinfo_and_secret_parameters_only() {
        assert_eq!(redact_url("http://x"), "http://x");
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1:5432/upkeep"),
            "postgres://***@127.0.0.1:5432/upkeep"
        );
        assert_eq!(
            redact_url("redis://:pw@cache:6379/0"),
            "redis://***@cache:6379/0"
        );
        assert_eq!(
            redact_url("postgres://db/app?password=pw&sslmode=require"),
            "postgres://db/app?password=***&sslmode=require"
        );
        assert_eq!(redact_url("user:pw@db/app"), "<14 characters, not shown>");
    }

    #[test]
    fn redact_url_hides_the_credentials_of_a_url_with_a_host_list() {
        assert_eq!(
            redact_url("redis+sentinel://u:p%40w@s1:26379,s2/m/1?sentinel_password=pw#x"),
            "redis+sentinel://***@s1:26379,s2/m/1?sentinel_password=***"
        );
        assert_eq!(
            redact_url("redis+sentinel://s1,s2:26380/m"),
            "redis+sentinel://s1,s2:26380/m"
        );
        assert_eq!(
            redact_url("postgres://app:pw@db:notaport/app"),
            "postgres://***@db:notaport/app"
        );
        // Where the userinfo ends is unclear: nothing of it is shown.
        assert_eq!(
            redact_url("redis+sentinel://:p/w@s1,s2/m"),
            "<29 characters, not shown>"
        );
    }

    #[test]
    fn a_sentinel_url_is_accepted_as_the_redis_url_and_redacted_in_the_summary() {
        let url = "redis+sentinel://:hunter2@s1:26379,s2/upkeep/2?sentinel_password=hunter3";

        let from_env = load("", &[("REDIS_URL", url)]).expect("a valid sentinel URL");
        let from_file =
            load(&format!("[redis]\nurl = \"{url}\"\n"), &[]).expect("a valid sentinel URL");

        for settings in [&from_env, &from_file] {
            assert_eq!(settings.redis.url.expose_secret(), url);
            assert!(!settings.redis.is_cluster());
            let summary = settings.redacted_summary();
            let debug = format!("{settings:?}");
            assert!(
                summary.contains(
                    "redis=redis+sentinel://***@s1:26379,s2/upkeep/2?sentinel_password=***"
                ),
                "{summary}"
            );
            for text in [&summary, &debug] {
                assert!(!text.contains("hunter"), "secret leaked: {text}");
            }
        }
    }

    #[test]
    fn a_bad_sentinel_url_stops_start_up_naming_the_key_and_what_is_wrong() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: [Case<'_>; 4] = [
            (
                "",
                &[("REDIS_URL", "redis+sentinel://:pw@s1,s2:x/m")],
                "REDIS_URL: not a usable redis+sentinel:// URL: \"redis+sentinel://***@s1,s2:x/m\": \
                 bad port \"x\" in sentinel address \"s2:x\" (expected 1-65535)",
            ),
            (
                "[redis]\nurl = \"redis+sentinel://s1:26379\"\n",
                &[],
                "redis.url: not a usable redis+sentinel:// URL: \"redis+sentinel://s1:26379\": \
                 no master name: the path must be /<master-name>[/<db>]",
            ),
            (
                "[redis]\nurl = \"redis+sentinel://s1/m?sentinel_passwd=pw\"\n",
                &[],
                "redis.url: not a usable redis+sentinel:// URL: \
                 \"redis+sentinel://s1/m?sentinel_passwd=***\": unknown parameter \
                 \"sentinel_passwd\" (expected sentinel_username or sentinel_password)",
            ),
            (
                "[redis]\ncluster_urls = [\"redis+sentinel://s1/m\"]\n",
                &[],
                "redis.cluster_urls[0]: not a redis:// or rediss:// URL: \"redis+sentinel://s1/m\"",
            ),
        ];
        for (toml, vars, expected) in cases {
            let text = error_text(toml, vars);

            assert!(text.contains(expected), "{text}\nlacks\n{expected}");
            assert!(!text.contains(":pw@"), "password leaked: {text}");
        }
    }

    #[test]
    fn the_config_file_named_by_upkeep_config_is_read() {
        let path =
            std::env::temp_dir().join(format!("upkeep-config-{}.toml", uuid::Uuid::new_v4()));
        std::fs::write(&path, "[worker]\ngrace_period = \"3s\"\n").unwrap();

        let settings =
            Settings::load_with_env(&env(&[("UPKEEP_CONFIG", path.to_str().unwrap())])).unwrap();
        std::fs::remove_file(&path).unwrap();

        assert_eq!(settings.worker.grace_period, Duration::from_secs(3));
        assert_eq!(settings.loaded_from.as_deref(), Some(path.as_path()));
    }

    #[test]
    fn a_missing_config_file_named_by_upkeep_config_is_an_error() {
        let result =
            Settings::load_with_env(&env(&[("UPKEEP_CONFIG", "/nonexistent/upkeep.toml")]));

        let Err(Error::ReadFile { path, .. }) = result else {
            panic!("expected ReadFile, got {result:?}");
        };
        assert_eq!(path, Path::new("/nonexistent/upkeep.toml"));
    }

    #[test]
    fn the_example_and_demo_configs_are_valid() {
        let example = load(include_str!("../../upkeep.example.toml"), &[])
            .unwrap_or_else(|e| panic!("upkeep.example.toml: {e}"));
        // The demo backs up its own database, named by DATABASE_URL (url_env).
        let demo = load(
            include_str!("../../deploy/demo.toml"),
            &[("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/upkeep")],
        )
        .unwrap_or_else(|e| panic!("deploy/demo.toml: {e}"));

        assert_eq!(example.schedules.len(), 1);
        assert_eq!(demo.schedules.len(), 4);
        assert_eq!(demo.backups.databases[0].name, "upkeep");
        let kinds: Vec<&str> = demo.schedules.iter().map(|s| s.kind.as_str()).collect();
        assert_eq!(
            kinds,
            [
                "system.ping",
                "backup.run",
                "backup.verify",
                "backup.verify"
            ]
        );
        let ping = &demo.schedules[0];
        assert_eq!(ping.name, "ping-every-5s");
        assert_eq!(ping.cron.as_str(), "*/5 * * * * *");
        assert_eq!(ping.kind.as_str(), "system.ping");
        assert_eq!(ping.timezone, chrono_tz::Tz::UTC);
    }

    #[test]
    fn key_prefixes_refuse_hash_tag_and_separator_characters() {
        assert!(KeyPrefix::parse("upkeep-test_1.a").is_ok());
        for bad in ["", "a:b", "{a}", "a b", &"x".repeat(65)] {
            assert!(KeyPrefix::parse(bad).is_err(), "{bad:?}");
        }
    }
}
