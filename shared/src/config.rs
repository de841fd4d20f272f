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
use crate::settings::{Problems, Section, key_segment};
use crate::telemetry::LogFormat;

mod keys;
mod layers;
mod show;

pub use keys::{accepted_keys, documented_keys, map_keys};
pub use layers::Source;
use layers::{GENERIC_PREFIX, NAMED_VARIABLES};
pub use show::{ShownSetting, check_and_report};

pub use crate::daemons::{
    ApiSettings, MaintenanceSettings, ReconcileAction, SchedulerSettings, WorkerSettings,
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
    /// Logging.
    pub telemetry: TelemetrySettings,
    /// AES-256-GCM key for stored credentials. Defaults to none; only the token worker needs it.
    pub secret_key: Option<SecretKey>,
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
    "telemetry",
    "secret_key",
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
        telemetry: serde_section(ctx, doc, "telemetry", env),
        secret_key: secret_key(ctx, doc),
        loaded_from,
    }
}

fn secret_key(ctx: &mut Ctx, doc: &Table) -> Option<SecretKey> {
    match doc.get("secret_key")? {
        Value::String(text) => match SecretKey::parse(text) {
            Ok(key) => Some(key),
            Err(message) => {
                ctx.problem("secret_key", message);
                None
            }
        },
        other => {
            ctx.problem(
                "secret_key",
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

/// Deserializes `value` (a table) into `T`, recording a type error (or unknown key) under
/// `path` and its nested key. A problem at a secret key never shows the value.
fn deserialize_at<T: serde::de::DeserializeOwned>(
    ctx: &mut Ctx,
    value: &Value,
    path: &str,
    secret_keys: &[&str],
) -> Option<T> {
    if !value.is_table() {
        ctx.problem(
            path,
            format!("expected a table, got {}", describe(value, false)),
        );
        return None;
    }
    match serde_path_to_error::deserialize::<_, T>(value.clone()) {
        Ok(section) => Some(section),
        Err(error) => {
            let at = format_path(error.path());
            let key = format!("{path}{at}");
            let at = at.trim_start_matches('.');
            let normalized = normalize_indexes(at);
            let secret = secret_keys.iter().any(|pattern| {
                normalized == *pattern
                    || normalized
                        .strip_prefix(pattern)
                        .is_some_and(|rest| rest.starts_with(['.', '[']))
            });
            let message = if secret {
                let got = value_at(value, error.path())
                    .map_or_else(|| "a value (not shown)".to_owned(), |v| describe(v, true));
                format!("expected a string, got {got}")
            } else {
                error.inner().message().trim_end().to_owned()
            };
            ctx.problem(&key, message);
            None
        }
    }
}

/// A deserialization path as written in problems: `.targets[0].url`, `."system.ping".timeout`.
fn format_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Map { key } => {
                out.push('.');
                out.push_str(&key_segment(key));
            }
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    out
}

/// `targets[3].url` as `targets[].url`, to compare with [`Section::SECRET_KEYS`] patterns.
fn normalize_indexes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push('[');
            }
            ']' => {
                in_index = false;
                out.push(']');
            }
            _ if in_index => {}
            _ => out.push(c),
        }
    }
    out
}

/// The value at a deserialization error's path, to describe it without showing it.
fn value_at<'v>(value: &'v Value, path: &serde_path_to_error::Path) -> Option<&'v Value> {
    use serde_path_to_error::Segment;
    let mut current = value;
    for segment in path {
        current = match segment {
            Segment::Map { key } => current.get(key.as_str())?,
            Segment::Seq { index } => current.get(*index)?,
            Segment::Enum { .. } | Segment::Unknown => return Some(current),
        };
    }
    Some(current)
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
                ctx.secret_keys.push(format!("{name}.{pattern}"));
                let segments: Vec<&str> = pattern.split('.').collect();
                resolve_secret(ctx, &mut value, name, &segments, env);
            }
            match deserialize_at::<T>(ctx, &value, name, T::SECRET_KEYS) {
                Some(section) => section,
                None => return T::default(),
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use secrecy::SecretString;

    use super::*;
    use crate::job::{self, JobKind};
    use crate::schedule::{CatchUp, Overlap};

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
        // A bad choice is a type error, which stops its section; the range check is separate.
        let text = error_text("[maintenance]\nreconcile_action = \"delete\"\n", &[]);
        assert!(
            text.contains("maintenance.reconcile_action: unknown variant `delete`, expected one of `requeue`, `record`, `off`"),
            "{text}"
        );

        let text = error_text("[maintenance]\nreconcile_grace = \"10ms\"\n", &[]);
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
                "queues.reports.concurrency: invalid type: string \"many\", expected u32",
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
                "queues.logs.lease: must be at least 1s, got 500ms",
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
                "database.max_conections: unknown field `max_conections`, expected one of `url`, `max_connections`",
            ),
            (
                "[database]\nmigrate_on_start = \"yes\"".into(),
                "database.migrate_on_start: invalid type: string \"yes\", expected a boolean",
            ),
            ("[databse]\nurl = \"x\"".into(), "databse: unknown key"),
            (
                "[api]\naddr = \"localhost\"".into(),
                "api.addr: not a socket address such as 127.0.0.1:8080: \"localhost\"",
            ),
            (
                "[telemetry]\nformat = \"xml\"".into(),
                "telemetry.format: unknown variant `xml`, expected `json` or `pretty`",
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
                "scheduler.tick_interval: must be at least 10ms, got 1ms",
            ),
            ("database = 5".into(), "database: expected a table, got 5"),
            (
                schedule("cron = \"61 * * * * *\"").replace("cron = \"0 0 2 * * *\"\n", ""),
                "schedules[2] (\"nightly\").cron: invalid cron expression \"61 * * * * *\": second field \"61\": 61 is out of range 0-59",
            ),
            (
                schedule("").replace("cron = \"0 0 2 * * *\"", "cron = \"0 2 * * *\""),
                "schedules[2] (\"nightly\").cron: invalid cron expression \"0 2 * * *\": expected 6 fields",
            ),
            (
                schedule("timezone = \"Mars/Olympus\""),
                "schedules[2] (\"nightly\").timezone: unknown time zone \"Mars/Olympus\"",
            ),
            (
                schedule("").replace("kind = \"system.ping\"\n\n", "kind = \"backup.run\"\n"),
                "schedules[2] (\"nightly\").kind: job kind \"backup.run\" has no handler",
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
                "schedules[2] (\"nightly\").catch_up: unknown variant `sometimes`, expected one of `skip`, `latest`, `all`",
            ),
            (
                schedule("overlap = \"never\""),
                "schedules[2] (\"nightly\").overlap: unknown variant `never`, expected one of `allow`, `skip`, `queue_one`",
            ),
            (
                schedule("jitter = \"2h\""),
                "schedules[2] (\"nightly\").jitter: must be at most 1h, got 2h",
            ),
            (
                schedule("catch_up_max = 0"),
                "schedules[2] (\"nightly\").catch_up_max: must be between 1 and 10000, got 0",
            ),
            (
                schedule("retries = 3"),
                "schedules[2] (\"nightly\").retries: unknown field `retries`, expected one of `name`",
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
                "schedules[2]: missing field `name`",
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
                "queues.reports.concurency (from UPKEEP__QUEUES__REPORTS__CONCURENCY): unknown field `concurency`, expected one of `concurrency`",
            ),
            (
                ("UPKEEP__DATABASE__PORT", "5433"),
                "database.port (from UPKEEP__DATABASE__PORT): unknown field `port`",
            ),
            (
                ("UPKEEP__KINDS__NOPE__TIMEOUT", "1s"),
                "kinds.nope (from UPKEEP__KINDS__NOPE__TIMEOUT): unknown job kind \"nope\"",
            ),
            (
                ("UPKEEP__SCHEDULES__0__CRON", "x"),
                "UPKEEP__SCHEDULES__0__CRON: schedules[0] does not exist in the file (0 entries)",
            ),
            (("UPKEEP__NOPE", "x"), "UPKEEP__NOPE: unknown setting"),
            (
                ("UPKEEP_API_ADDR", "nope"),
                "UPKEEP_API_ADDR: not a socket address such as 127.0.0.1:8080: \"nope\"",
            ),
            (
                ("UPKEEP_LOG_FORMAT", "xml"),
                "UPKEEP_LOG_FORMAT: unknown variant `xml`, expected `json` or `pretty`",
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
    fn an_array_entry_is_reached_by_its_index_from_the_environment() {
        let settings = load(PING, &[("UPKEEP__SCHEDULES__0__ENABLED", "false")]).unwrap();
        assert!(!settings.schedules[0].enabled);

        let text = error_text(PING, &[("UPKEEP__SCHEDULES__0__CRON", "61 * * * * *")]);
        assert!(
            text.contains(
                "schedules[0] (\"ping\").cron (from UPKEEP__SCHEDULES__0__CRON): invalid cron expression"
            ),
            "{text}"
        );
        let text = error_text(PING, &[("UPKEEP__SCHEDULES__3__ENABLED", "false")]);
        assert!(
            text.contains(
                "UPKEEP__SCHEDULES__3__ENABLED: schedules[3] does not exist in the file (1 entries)"
            ),
            "{text}"
        );
        let text = error_text(PING, &[("UPKEEP__SCHEDULES__ENABLED", "false")]);
        assert!(
            text.contains("schedules (from UPKEEP__SCHEDULES__ENABLED): expected an array of tables ([[schedules]])"),
            "{text}"
        );
    }

    #[test]
    fn an_unknown_key_is_refused_with_its_path() {
        let text = error_text("[queues.reports]\nconcurrency = 2\ncolour = \"red\"\n", &[]);
        assert!(
            text.contains(
                "queues.reports.colour: unknown field `colour`, expected one of `concurrency`"
            ),
            "{text}"
        );
        let text = error_text(&format!("{PING}retries = 3\n"), &[]);
        assert!(
            text.contains("schedules[0] (\"ping\").retries: unknown field `retries`"),
            "{text}"
        );
        let text = error_text("[kinds.\"system.ping\"]\nretries = 3\n", &[]);
        assert!(
            text.contains("kinds.\"system.ping\".retries: unknown field `retries`"),
            "{text}"
        );
    }

    #[test]
    fn a_problem_in_the_file_names_its_line_and_one_from_a_variable_names_the_variable() {
        let text = error_text(
            "[database]\nmax_connections = 5\n\n[queues.reports]\nconcurrency = 0\n",
            &[("UPKEEP__QUEUES__LOGS__MAX_ATTEMPTS", "0")],
        );

        assert!(
            text.contains(
                "queues.reports.concurrency: must be between 1 and 10000, got 0 (at <string>:5)"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "queues.logs.max_attempts (from UPKEEP__QUEUES__LOGS__MAX_ATTEMPTS): must be between 1 and 100, got 0;"
            ) || text.ends_with("must be between 1 and 100, got 0"),
            "{text}"
        );
    }

    #[test]
    fn config_show_redacts_every_secret_and_names_each_source() {
        let dir = std::env::temp_dir().join(format!("upkeep-show-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("upkeep.toml");
        std::fs::write(
            &path,
            "[database]\nurl = \"postgres://app:hunter2-db@db:5432/app\"\n\n\
             [redis]\ncluster_urls = [\"redis://:hunter2-cluster@c:7000\"]\n\
             [api]\ntoken_env = \"MY_TOKEN\"\n",
        )
        .unwrap();
        let key = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);

        let shown = Settings::show(
            Some(&path),
            &env(&[
                ("MY_TOKEN", "hunter2-token"),
                ("UPKEEP_SECRET_KEY", &key),
                ("UPKEEP__QUEUES__REPORTS__CONCURRENCY", "7"),
            ]),
        )
        .expect("valid");
        std::fs::remove_dir_all(dir).ok();

        let text = serde_json::to_string(&shown).unwrap();
        assert!(!text.contains("hunter2"), "secret shown: {text}");
        assert!(!text.contains(&key), "secret key shown: {text}");
        let get = |key: &str| {
            shown
                .iter()
                .find(|s| s.key == key)
                .unwrap_or_else(|| panic!("{key} not shown in {text}"))
        };
        let file = path.display().to_string();
        assert_eq!(get("database.url").value, "postgres://***@db:5432/app");
        assert_eq!(get("database.url").source, format!("{file}:2"));
        assert_eq!(
            get("redis.cluster_urls").value,
            serde_json::json!(["redis://***@c:7000"])
        );
        assert_eq!(get("api.token").value, "***");
        assert_eq!(get("secret_key").value, "***");
        assert_eq!(get("secret_key").source, "env UPKEEP_SECRET_KEY");
        assert_eq!(get("queues.reports.concurrency").value, 7);
        assert_eq!(
            get("queues.reports.concurrency").source,
            "env UPKEEP__QUEUES__REPORTS__CONCURRENCY"
        );
        assert_eq!(get("queues.logs.lease").value, "30s");
        assert_eq!(get("queues.logs.lease").source, "default");
        assert_eq!(get("redis.url").value, "redis://127.0.0.1:6379/");
    }

    #[test]
    fn the_accepted_keys_come_from_the_types() {
        let keys = accepted_keys();

        for key in [
            "database.url",
            "redis.cluster_urls",
            "queues.*.lease",
            "kinds.*.backoff_max",
            "schedules[].cron",
            "schedules[].args",
            "api.token",
            "secret_key",
        ] {
            assert!(keys.contains(key), "{key} missing from {keys:?}");
        }
        assert!(!keys.contains("queues.*"), "{keys:?}");
        assert!(
            !keys.iter().any(|k| k.starts_with("schedules[].args.")),
            "{keys:?}"
        );
        assert_eq!(
            map_keys(&keys),
            ["kinds", "queues"].map(str::to_owned).into_iter().collect()
        );
    }

    #[test]
    fn the_example_config_documents_exactly_the_keys_the_settings_accept() {
        let accepted = accepted_keys();
        let documented = documented_keys(
            include_str!("../../upkeep.example.toml"),
            &map_keys(&accepted),
            &accepted,
        )
        .expect("the example parses");

        // A secret may be documented in its indirect form (`url_env`, `url_file`) instead.
        let plain = |key: &String| {
            key.strip_suffix("_env")
                .or_else(|| key.strip_suffix("_file"))
                .filter(|plain| accepted.contains(*plain))
                .map_or_else(|| key.clone(), str::to_owned)
        };
        let documented: std::collections::BTreeSet<String> = documented.iter().map(plain).collect();
        let undocumented: Vec<&String> = accepted.difference(&documented).collect();
        let unknown: Vec<&String> = documented.difference(&accepted).collect();
        assert!(
            undocumented.is_empty() && unknown.is_empty(),
            "upkeep.example.toml lacks {undocumented:?} and documents keys the settings do not \
             accept: {unknown:?}"
        );
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
        let demo = load(include_str!("../../deploy/demo.toml"), &[])
            .unwrap_or_else(|e| panic!("deploy/demo.toml: {e}"));

        assert_eq!(example.schedules.len(), 1);
        assert_eq!(demo.schedules.len(), 1);
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
