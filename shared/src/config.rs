//! Composes every subsystem's settings section into the `Settings` tree and layers the sources:
//! `upkeep.toml`, then `UPKEEP__SECTION__KEY` variables, then the named variables.
//!
//! Layers, lowest first: built-in defaults (each section's `Default`), the TOML file
//! (`UPKEEP_CONFIG`, else `./upkeep.toml` when it exists), generic `UPKEEP__SECTION__KEY`
//! variables, then the named variables of the public contract (`DATABASE_URL`, `REDIS_URL`,
//! `UPKEEP_API_TOKEN`, `UPKEEP_SECRET_KEY`, `UPKEEP_LOG_FORMAT`, `UPKEEP_API_ADDR`), which win
//! over everything.
//!
//! This module owns no section: each is a serde-derived type beside its subsystem
//! (`store::DatabaseSettings`, `queue::settings`, `schedule::settings`, `daemons`,
//! `telemetry::TelemetrySettings`, ...) implementing [`Section`]. Here the merged document is
//! split into sections, indirect secrets (`KEY_env`, `KEY_file`) are resolved, each section is
//! deserialized and validated, and every problem is collected with the key it came from (a TOML
//! path, or the environment variable that set it). Secrets are `secrecy` types and never reach
//! `Debug` output, errors or logs. This is the only module that reads environment variables.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use secrecy::{ExposeSecret, SecretBox};
use toml::{Table, Value};

use crate::job::QueueName;
use crate::queue::{Error as QueueError, Queue, RedisConn};
use crate::settings::{Problems, key_segment};
use crate::tasks::TasksSettings;

mod keys;
mod layers;
mod sections;
mod show;

use sections::{deserialize_at, normalize_indexes, serde_section};

pub use keys::{accepted_keys, documented_keys, map_keys};
pub use layers::Source;
use layers::{GENERIC_PREFIX, NAMED_VARIABLES};
pub use show::{ShownSetting, check_and_report};

pub use crate::daemons::{
    ApiSettings, DaemonsSettings, MaintenanceSettings, ReconcileAction, SchedulerSettings,
    WorkerSettings,
};
pub use crate::queue::settings::{
    JobPolicy, KeyPrefix, KindSettings, QueueSettings, RedisSettings,
};
pub use crate::schedule::settings::{ScheduleEntry, ScheduleSettings, default_overlap};
pub use crate::settings::{Problem, redact_url};
pub use crate::store::DatabaseSettings;
pub use crate::telemetry::TelemetrySettings;

/// Every setting of every binary. Each binary reads only the sections it needs.
///
/// Build it with [`Settings::load`] (the process environment) or [`Settings::from_toml_str`]
/// (tests); [`Settings::default`] gives the built-in defaults. Adding a section is one field
/// here, its name in `TOP_KEYS` and one `serde_section` line in `validate`.
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
    /// `[daemons]`: what every daemon's start-up and supervision share.
    pub daemons: DaemonsSettings,
    /// Logging.
    pub telemetry: TelemetrySettings,
    /// `[tasks]`: the checklist's time zone and item overrides.
    pub tasks: TasksSettings,
    /// `[backups]`: where dumps go, which databases, and the retention policy.
    pub backups: crate::backup::BackupSettings,
    /// `[reports]`: the Postgres health reports' target databases and thresholds.
    pub reports: crate::reports::ReportsSettings,
    /// `[logs]`: rotation targets and error-scan sources.
    pub logs: crate::logs::LogsSettings,
    /// `[disk]`: the disk check's extra paths and thresholds.
    pub disk: crate::disk::DiskSettings,
    /// `[tokens]`: OAuth2 providers whose credentials `tokens.refresh` keeps fresh.
    pub tokens: crate::tokens::TokenSettings,
    /// `[alerts]`: sinks, rules and the outbox's timings.
    pub alerts: crate::alerts::AlertsSettings,
    /// AES-256-GCM key for stored credentials. Defaults to none; only the token worker needs it.
    pub secret_key: Option<SecretKey>,
    /// The previous key, accepted for reading until `upkeepctl tokens rotate-key` has
    /// re-encrypted every row (`UPKEEP_SECRET_KEY_PREVIOUS`). Defaults to none.
    pub secret_key_previous: Option<SecretKey>,
    /// The config file these settings came from; `None` for built-in defaults or a string.
    pub loaded_from: Option<PathBuf>,
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
        Self::load_with_env(&process_env()?)
    }

    /// Like [`Settings::load`], with the environment given as a map instead of read from the
    /// process, so tests never touch the real environment.
    ///
    /// # Errors
    /// As [`Settings::load`].
    pub fn load_with_env(env: &HashMap<String, String>) -> Result<Self, Error> {
        let path = config_path(env);
        Self::load_file(path.as_deref(), env)
    }

    /// Loads `path` (or only the built-in defaults when `None`) with the overrides found in
    /// `env`, ignoring `UPKEEP_CONFIG` (for `upkeepctl config check FILE`).
    ///
    /// # Errors
    /// As [`Settings::load`].
    pub fn load_file(path: Option<&Path>, env: &HashMap<String, String>) -> Result<Self, Error> {
        let Some(path) = path else {
            return Self::parse("", "built-in defaults", None, env);
        };
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
            path: path.to_owned(),
            source,
        })?;
        let origin = path.display().to_string();
        Self::parse(&text, &origin, Some(path.to_owned()), env)
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

    /// A handle on `queue` over `conn`, with the queue's configured options.
    #[must_use]
    pub fn queue_on(&self, conn: RedisConn, queue: &QueueName) -> Queue {
        let options = self.queue(queue).queue_options();
        Queue::new(conn, self.redis.key_prefix.as_str(), queue.clone(), options)
    }

    /// A handle on `queue` over a new connection.
    ///
    /// # Errors
    /// When the Redis URL does not parse.
    pub fn open_queue(&self, queue: &QueueName) -> Result<Queue, QueueError> {
        Ok(self.queue_on(RedisConn::open(&self.redis.target())?, queue))
    }

    /// One line describing the settings for start-up logs, with secrets redacted (URLs lose
    /// their userinfo; tokens and keys show only whether they are set).
    #[must_use]
    pub fn redacted_summary(&self) -> String {
        let loaded_from = self.loaded_from.as_ref().map_or_else(
            || "built-in defaults".to_owned(),
            |p| p.display().to_string(),
        );
        let queues: Vec<String> = self
            .queues
            .iter()
            .map(|(name, queue)| format!("{name}:{}", queue.concurrency))
            .collect();
        let n_enabled = self.schedules.iter().filter(|s| s.enabled).count();
        let set = |present: bool| if present { "set" } else { "unset" };
        format!(
            "config={loaded_from} database={} max_connections={} migrate_on_start={} redis={} \
             key_prefix={} queues={} schedules={} enabled_schedules={n_enabled} api_addr={} \
             api_token={} secret_key={} log_format={} log_filter={}",
            self.database.redacted_url(),
            self.database.max_connections,
            self.database.migrate_on_start,
            self.redis.redacted(),
            self.redis.key_prefix,
            queues.join(","),
            self.schedules.len(),
            self.api.addr,
            set(self.api.token.is_some()),
            set(self.secret_key.is_some()),
            self.telemetry.format.as_str(),
            self.telemetry.filter,
        )
    }

    fn parse(
        text: &str,
        origin: &str,
        loaded_from: Option<PathBuf>,
        env: &HashMap<String, String>,
    ) -> Result<Self, Error> {
        Self::resolve(text, origin, loaded_from, env).map(|resolved| resolved.0)
    }

    /// Parses, layers and validates; also returns the merged document and the validation
    /// state (sources, secret keys), which `config show` needs.
    fn resolve(
        text: &str,
        origin: &str,
        loaded_from: Option<PathBuf>,
        env: &HashMap<String, String>,
    ) -> Result<(Self, Table, Ctx), Error> {
        let file = parse_toml(text, origin)?;
        let layered = layers::layer(text, file, origin, env, TOP_KEYS);
        let mut ctx = Ctx {
            origins: layered.origins,
            lines: layered.lines,
            file: origin.to_owned(),
            ..Ctx::default()
        };
        for (var, message) in layered.env_problems {
            ctx.env_problem(&var, message);
        }
        let settings = validate(&layered.doc, &mut ctx, loaded_from, env);
        if ctx.problems.is_empty() {
            Ok((settings, layered.doc, ctx))
        } else {
            Err(Error::Invalid {
                origin: origin.to_owned(),
                problems: std::mem::take(&mut ctx.problems),
            })
        }
    }
}

impl Default for Settings {
    /// The built-in defaults: every section's `Default`, every queue of [`crate::job::QUEUES`],
    /// no schedules, no secrets. Composed by the same `validate` as a loaded file (of an empty
    /// document), so a new section needs no line here.
    fn default() -> Self {
        let mut ctx = Ctx::default();
        let settings = validate(&Table::new(), &mut ctx, None, &HashMap::new());
        debug_assert!(ctx.problems.is_empty(), "{:?}", ctx.problems);
        settings
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

/// The process environment as a map. Every variable is kept, not only the config ones: a
/// secret given as `KEY_env = "VAR"` may name any variable.
///
/// # Errors
/// When a config variable is not valid UTF-8.
pub fn process_env() -> Result<HashMap<String, String>, Error> {
    let mut env = HashMap::new();
    let mut problems = Vec::new();
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
    if problems.is_empty() {
        Ok(env)
    } else {
        Err(Error::Invalid {
            origin: "environment".to_owned(),
            problems,
        })
    }
}

/// The config file `env` selects: `UPKEEP_CONFIG`, else `./upkeep.toml` when it exists.
#[must_use]
pub fn config_path(env: &HashMap<String, String>) -> Option<PathBuf> {
    match env.get("UPKEEP_CONFIG").filter(|path| !path.is_empty()) {
        Some(path) => Some(PathBuf::from(path)),
        None if Path::new(DEFAULT_CONFIG_FILE).is_file() => {
            Some(PathBuf::from(DEFAULT_CONFIG_FILE))
        }
        None => None,
    }
}

fn parse_toml(text: &str, origin: &str) -> Result<Table, Error> {
    text.parse().map_err(|e: toml::de::Error| {
        let (line, column) = e
            .span()
            .map_or((1, 1), |span| line_and_column(text, span.start));
        Error::Syntax {
            origin: origin.to_owned(),
            line,
            column,
            message: e.message().trim_end().to_owned(),
        }
    })
}

const DEFAULT_CONFIG_FILE: &str = "upkeep.toml";

/// The top-level keys: one per section, plus `secret_key`.
const TOP_KEYS: &[&str] = &[
    "database",
    "redis",
    "queues",
    "kinds",
    "schedules",
    "worker",
    "scheduler",
    "maintenance",
    "api",
    "daemons",
    "telemetry",
    "tasks",
    "backups",
    "reports",
    "logs",
    "disk",
    "tokens",
    "alerts",
    "secret_key",
    "secret_key_previous",
    "secret_key_file",
    "secret_key_previous_file",
];

fn is_config_variable(name: &str) -> bool {
    name == "UPKEEP_CONFIG"
        || name.starts_with(GENERIC_PREFIX)
        || NAMED_VARIABLES.iter().any(|(var, _)| *var == name)
}

/// Validation state: the problems found so far, where overridden values came from and the
/// line of each key of the file, so every problem names its source.
#[derive(Debug, Default)]
struct Ctx {
    problems: Vec<Problem>,
    origins: HashMap<String, Source>,
    lines: HashMap<String, usize>,
    file: String,
    /// Every section's secret keys, with the section (`api.token`, `backups.databases[].url`).
    secret_keys: Vec<String>,
}

/// A problem path without the entry names it shows: `schedules[2] ("nightly").cron` is the key
/// `schedules[2].cron`.
fn plain_path(path: &str) -> String {
    match (path.find(" (\""), path.find("\")")) {
        (Some(start), Some(end)) if end > start => {
            format!("{}{}", &path[..start], &path[end + 2..])
        }
        _ => path.to_owned(),
    }
}

impl Ctx {
    /// The origin of the value at `path`, or of one under it (a problem about the table
    /// `kinds.nope` set by a variable for one of its keys).
    fn origin(&self, path: &str) -> Option<(&Source, bool)> {
        let path = plain_path(path);
        let path = path.as_str();
        if let Some(source) = self.origins.get(path) {
            return Some((source, true));
        }
        self.origins
            .iter()
            .filter(|(key, _)| {
                key.strip_prefix(path)
                    .is_some_and(|rest| rest.starts_with(['.', '[']))
            })
            .map(|(_, source)| (source, false))
            .next()
    }

    /// The line of `path` (or of its nearest written ancestor) in the file.
    fn line(&self, path: &str) -> Option<usize> {
        let mut path = plain_path(path);
        loop {
            if let Some(line) = self.lines.get(&path) {
                return Some(*line);
            }
            let cut = path.rfind(['.', '['])?;
            path.truncate(cut);
        }
    }

    fn problem(&mut self, path: &str, message: impl Into<String>) {
        let mut message = message.into();
        let key = match self.origin(path) {
            Some((Source::Named(var), true)) => (*var).to_owned(),
            Some((Source::Named(var), false)) => format!("{path} (from {var})"),
            Some((Source::Generic(var), _)) => format!("{path} (from {var})"),
            _ => {
                if let Some(line) = self.line(path) {
                    message = format!("{message} (at {}:{line})", self.file);
                }
                path.to_owned()
            }
        };
        self.problems.push(Problem { key, message });
    }

    fn env_problem(&mut self, var: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            key: var.to_owned(),
            message: message.into(),
        });
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

/// A value for an error message: strings quoted, scalars as TOML, containers by kind only;
/// a secret only by its type.
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
    for key in doc.keys() {
        if !TOP_KEYS.contains(&key.as_str()) {
            ctx.problem(
                &key_segment(key),
                format!("unknown key (expected one of {})", TOP_KEYS.join(", ")),
            );
        }
    }
    let database = serde_section(ctx, doc, "database", env);
    let redis = serde_section(ctx, doc, "redis", env);
    let queues =
        crate::queue::settings::with_builtin_queues(serde_section(ctx, doc, "queues", env));
    let kinds = serde_section(ctx, doc, "kinds", env);
    let schedules = schedules(ctx, doc, &queues);
    Settings {
        database,
        redis,
        queues,
        kinds,
        schedules,
        worker: serde_section(ctx, doc, "worker", env),
        scheduler: serde_section(ctx, doc, "scheduler", env),
        maintenance: serde_section(ctx, doc, "maintenance", env),
        api: serde_section(ctx, doc, "api", env),
        daemons: serde_section(ctx, doc, "daemons", env),
        telemetry: serde_section(ctx, doc, "telemetry", env),
        tasks: serde_section(ctx, doc, "tasks", env),
        backups: serde_section(ctx, doc, "backups", env),
        reports: serde_section(ctx, doc, "reports", env),
        logs: serde_section(ctx, doc, "logs", env),
        disk: serde_section(ctx, doc, "disk", env),
        tokens: serde_section(ctx, doc, "tokens", env),
        alerts: serde_section(ctx, doc, "alerts", env),
        secret_key: secret_key(ctx, doc, "secret_key"),
        secret_key_previous: secret_key(ctx, doc, "secret_key_previous"),
        loaded_from,
    }
}

fn secret_key(ctx: &mut Ctx, doc: &Table, key: &str) -> Option<SecretKey> {
    // `KEY_file`: the key read from a file (a systemd credential, a compose secret).
    let file_key = format!("{key}_file");
    if let Some(file) = doc.get(&file_key) {
        if doc.contains_key(key) {
            ctx.problem(key, format!("give only one of {key} and {file_key}"));
            return None;
        }
        let Some(file) = file.as_str() else {
            ctx.problem(&file_key, "expected a file path");
            return None;
        };
        return match std::fs::read_to_string(file) {
            Ok(text) => SecretKey::parse(text.trim_end())
                .map_err(|message| ctx.problem(&file_key, format!("{file}: {message}")))
                .ok(),
            Err(error) => {
                ctx.problem(&file_key, format!("cannot read {file}: {error}"));
                None
            }
        };
    }
    match doc.get(key)? {
        Value::String(text) => match SecretKey::parse(text) {
            Ok(key) => Some(key),
            Err(message) => {
                ctx.problem(key, message);
                None
            }
        },
        other => {
            ctx.problem(
                key,
                format!("expected a string, got {}", describe(other, true)),
            );
            None
        }
    }
}

/// Deserializes `[[schedules]]` entry by entry (so one bad entry does not hide the others'
/// problems), then checks them against the catalog and the configured queues.
fn schedules(
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
    let mut entries = Vec::with_capacity(items.len());
    for (idx, item) in items.iter().enumerate() {
        let name = item.get("name").and_then(Value::as_str);
        let at = crate::schedule::settings::entry_path("schedules", idx, name);
        entries.push(deserialize_at::<ScheduleEntry>(ctx, item, &at, &[]));
    }
    let configured: Vec<QueueName> = queues.keys().cloned().collect();
    let mut problems = Problems::default();
    let schedules =
        crate::schedule::settings::resolve("schedules", &entries, &configured, &mut problems);
    for problem in problems.into_vec() {
        ctx.problem(&problem.key, problem.message);
    }
    schedules
}

#[cfg(test)]
mod tests;
