//! The job vocabulary: ids, kinds, queue names, the job envelope, outcomes and handler errors.
//!
//! Everything that crosses a process boundary (Redis payloads, ledger rows, API bodies) is built
//! from these types. Validation happens once, in the `parse` constructors; the rest of the code
//! never re-checks a `JobKind` or a `QueueName`.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A job's id: a UUIDv7, so ids sort by creation time in both Redis and Postgres.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub Uuid);

impl JobId {
    /// A fresh, time-ordered id.
    #[must_use]
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// Parses the hyphenated text form.
    ///
    /// # Errors
    /// When `text` is not a UUID.
    pub fn parse(text: &str) -> Result<Self, JobError> {
        Uuid::parse_str(text)
            .map(Self)
            .map_err(|_| JobError::Invalid(format!("job id {text:?} is not a uuid")))
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A validated queue name: lowercase ASCII letters, digits, `_` and `-`, 1 to 64 characters.
///
/// The name goes inside a Redis hash tag, so it must never contain `{`, `}` or `:`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct QueueName(String);

impl QueueName {
    /// Validates a queue name.
    ///
    /// # Errors
    /// When the name is empty, too long, or has a character outside `[a-z0-9_-]`.
    pub fn parse(name: &str) -> Result<Self, JobError> {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        if valid {
            Ok(Self(name.to_owned()))
        } else {
            Err(JobError::Invalid(format!(
                "queue name {name:?} must be 1-64 characters of [a-z0-9_-]"
            )))
        }
    }

    /// The name as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for QueueName {
    type Error = JobError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<QueueName> for String {
    fn from(value: QueueName) -> Self {
        value.0
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One entry of the job catalog: a kind, the queue it runs on by default, and whether this build
/// has a handler for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KindSpec {
    /// The stable kind string, e.g. `backup.run`.
    pub name: &'static str,
    /// The queue that serves this kind unless the enqueuer picks another.
    pub default_queue: &'static str,
    /// Whether a worker of this build can run it. Kinds without a handler are refused at enqueue.
    pub has_handler: bool,
}

/// The job catalog from DESIGN.md. A kind is only enqueueable once its handler exists.
pub const CATALOG: &[KindSpec] = &[
    KindSpec {
        name: "backup.run",
        default_queue: "backups",
        has_handler: true,
    },
    KindSpec {
        name: "backup.verify",
        default_queue: "backups",
        has_handler: true,
    },
    KindSpec {
        name: "logs.rotate",
        default_queue: "logs",
        has_handler: true,
    },
    KindSpec {
        name: "logs.scan_errors",
        default_queue: "logs",
        has_handler: true,
    },
    KindSpec {
        name: "tokens.refresh",
        default_queue: "tokens",
        has_handler: true,
    },
    KindSpec {
        name: "db.slow_queries",
        default_queue: "reports",
        has_handler: true,
    },
    KindSpec {
        name: "db.bloat",
        default_queue: "reports",
        has_handler: true,
    },
    KindSpec {
        name: "db.index_usage",
        default_queue: "reports",
        has_handler: true,
    },
    KindSpec {
        name: "system.disk",
        default_queue: "reports",
        has_handler: true,
    },
    KindSpec {
        name: "queues.snapshot",
        default_queue: "reports",
        has_handler: true,
    },
    KindSpec {
        name: "jobs.failed_review",
        default_queue: "reports",
        has_handler: true,
    },
    KindSpec {
        name: "system.ping",
        default_queue: "reports",
        has_handler: true,
    },
];

/// The queues of DESIGN.md, in the order the all-in-one process starts them.
pub const QUEUES: &[&str] = &["backups", "logs", "tokens", "reports"];

/// A job kind from the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct JobKind(&'static KindSpec);

impl JobKind {
    /// Looks a kind up in the catalog (known kinds, with or without a handler).
    ///
    /// # Errors
    /// When the kind is not in the catalog.
    pub fn parse(name: &str) -> Result<Self, JobError> {
        CATALOG
            .iter()
            .find(|spec| spec.name == name)
            .map(Self)
            .ok_or_else(|| {
                let known: Vec<&str> = CATALOG.iter().map(|spec| spec.name).collect();
                JobError::Invalid(format!(
                    "unknown job kind {name:?} (known: {})",
                    known.join(", ")
                ))
            })
    }

    /// Looks a kind up and refuses it unless this build has a handler for it.
    ///
    /// # Errors
    /// When the kind is unknown or has no handler yet.
    pub fn parse_runnable(name: &str) -> Result<Self, JobError> {
        let kind = Self::parse(name)?;
        if kind.0.has_handler {
            Ok(kind)
        } else {
            Err(JobError::Invalid(format!(
                "job kind {name:?} has no handler in this build yet, so it cannot be enqueued"
            )))
        }
    }

    /// The kind string.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        self.0.name
    }

    /// The queue this kind runs on by default.
    #[must_use]
    pub fn default_queue(self) -> QueueName {
        QueueName(self.0.default_queue.to_owned())
    }

    /// Checks `args` against the kind's argument shape.
    ///
    /// # Errors
    /// A message naming the bad field when the shape is wrong.
    pub fn validate_args(self, args: &serde_json::Value) -> Result<(), JobError> {
        match self.0.name {
            "system.ping" => PingArgs::from_value(args).map(|_| ()),
            "backup.run" => BackupRunArgs::from_value(args).map(|_| ()),
            "backup.verify" => BackupVerifyArgs::from_value(args).map(|_| ()),
            "db.slow_queries" | "db.bloat" | "db.index_usage" => {
                ReportArgs::from_value(self.0.name, args).map(|_| ())
            }
            "logs.rotate" => {
                crate::logs::decode_args::<crate::logs::RotateArgs>(self.0.name, args).map(|_| ())
            }
            "logs.scan_errors" => {
                crate::logs::decode_args::<crate::logs::ScanArgs>(self.0.name, args).map(|_| ())
            }
            "system.disk" => {
                crate::logs::decode_args::<crate::logs::DiskArgs>(self.0.name, args).map(|_| ())
            }
            _ if args.is_object() || args.is_null() => Ok(()),
            name => Err(JobError::Invalid(format!(
                "args of {name} must be a JSON object"
            ))),
        }
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name)
    }
}

/// Arguments of `system.ping`, the smoke-test and benchmark job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PingArgs {
    /// Sleep this long before answering.
    #[serde(default)]
    pub sleep_ms: Option<u64>,
    /// Fail every attempt (`true`).
    #[serde(default)]
    pub fail: Option<bool>,
    /// Fail attempts 1..=N, then succeed: models a transient failure.
    #[serde(default)]
    pub fail_attempts: Option<u32>,
    /// Panic inside the handler: models a poison job.
    #[serde(default)]
    pub panic: Option<bool>,
}

impl PingArgs {
    /// Decodes and validates ping arguments; `null` means all defaults.
    ///
    /// # Errors
    /// A message naming the unexpected field or the wrongly typed one.
    pub fn from_value(args: &serde_json::Value) -> Result<Self, JobError> {
        if args.is_null() {
            return Ok(Self::default());
        }
        // serde reads a struct from an array too, by position ([5000] would mean
        // sleep_ms = 5000): only an object is an arguments table, as for every other kind.
        if !args.is_object() {
            return Err(JobError::Invalid(
                "bad args for system.ping: args of system.ping must be a JSON object".to_owned(),
            ));
        }
        serde_json::from_value(args.clone())
            .map_err(|e| JobError::Invalid(format!("bad args for system.ping: {e}")))
    }
}

/// Arguments of `db.slow_queries`, `db.bloat` and `db.index_usage`: one configured report
/// database by name, or every one when absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportArgs {
    /// A `[[reports.databases]]` name.
    #[serde(default)]
    pub database: Option<String>,
}

impl ReportArgs {
    /// Decodes report arguments of `kind`; `null` means every database.
    ///
    /// # Errors
    /// A message naming the kind and the unexpected or wrongly typed field.
    pub fn from_value(kind: &str, args: &serde_json::Value) -> Result<Self, JobError> {
        if args.is_null() {
            return Ok(Self::default());
        }
        if !args.is_object() {
            return Err(JobError::Invalid(format!(
                "bad args for {kind}: args must be a JSON object"
            )));
        }
        serde_json::from_value(args.clone())
            .map_err(|e| JobError::Invalid(format!("bad args for {kind}: {e}")))
    }
}

/// Arguments of `backup.run`: one configured database, or all of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupRunArgs {
    /// The `[[backups.databases]]` name; absent: every configured database.
    #[serde(default)]
    pub database: Option<String>,
}

impl BackupRunArgs {
    /// Decodes `backup.run` arguments; `null` means every database.
    ///
    /// # Errors
    /// A message naming the unexpected or wrongly typed field.
    pub fn from_value(args: &serde_json::Value) -> Result<Self, JobError> {
        if args.is_null() {
            return Ok(Self::default());
        }
        if !args.is_object() {
            return Err(JobError::Invalid(
                "bad args for backup.run: args must be a JSON object".to_owned(),
            ));
        }
        serde_json::from_value(args.clone())
            .map_err(|e| JobError::Invalid(format!("bad args for backup.run: {e}")))
    }
}

/// Arguments of `backup.verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupVerifyArgs {
    /// `full_read` (checksum and `pg_restore -f /dev/null` of every kept backup) or `restore`
    /// (the newest backup into a scratch database).
    pub mode: crate::backup::VerifyMode,
    /// The `[[backups.databases]]` name; absent: every configured database.
    #[serde(default)]
    pub database: Option<String>,
}

impl BackupVerifyArgs {
    /// Decodes `backup.verify` arguments.
    ///
    /// # Errors
    /// A message naming the missing, unexpected or wrongly typed field.
    pub fn from_value(args: &serde_json::Value) -> Result<Self, JobError> {
        if !args.is_object() {
            return Err(JobError::Invalid(
                "bad args for backup.verify: args must be a JSON object with \"mode\"".to_owned(),
            ));
        }
        serde_json::from_value(args.clone())
            .map_err(|e| JobError::Invalid(format!("bad args for backup.verify: {e}")))
    }
}

/// Severity of a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// All is well.
    Ok,
    /// Someone should look.
    Warn,
    /// Someone must act.
    Critical,
}

/// One observation a job made, with a stable code such as `disk.used_pct`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    /// Stable machine-readable code.
    pub code: String,
    /// How bad it is.
    pub severity: Severity,
    /// Human-readable explanation.
    pub message: String,
    /// Optional structured detail.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub detail: serde_json::Value,
    /// What the finding is about, when a code can apply to several things (a database, a
    /// path, an index: `app`, `/var/lib/upkeep`, `app.public.orders_idx`). `(code, subject)` is
    /// the identity of a condition: a later `ok` finding with the same pair resolves it (see
    /// [`resolutions`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
}

impl Finding {
    /// A finding with no detail and no subject.
    pub fn new(code: impl Into<String>, severity: Severity, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            severity,
            message: message.into(),
            detail: serde_json::Value::Null,
            subject: None,
        }
    }

    /// The same finding about `subject`.
    #[must_use]
    pub fn with_subject(mut self, subject: impl Into<String>) -> Self {
        self.subject = Some(subject.into());
        self
    }

    /// The same finding with structured `detail`.
    #[must_use]
    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = detail;
        self
    }
}

/// The `ok` findings that close conditions a check no longer reports: one for each of `open`
/// (the `(code, subject)` pairs still open from earlier runs of the same check, as
/// `store::findings::open` returns them) that `current` has no warn or critical finding for.
/// A check appends them to its outcome, so a condition that went away is resolved once instead
/// of silently dropped, and is not reported again.
#[must_use]
pub fn resolutions(open: &[(String, Option<String>)], current: &[Finding]) -> Vec<Finding> {
    open.iter()
        .filter(|(code, subject)| {
            !current.iter().any(|finding| {
                finding.severity != Severity::Ok
                    && &finding.code == code
                    && &finding.subject == subject
            })
        })
        .map(|(code, subject)| Finding {
            code: code.clone(),
            severity: Severity::Ok,
            message: "resolved: no longer observed".to_owned(),
            detail: serde_json::Value::Null,
            subject: subject.clone(),
        })
        .collect()
}

/// What a successful attempt produced.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// One line for humans.
    pub summary: String,
    /// Numbers worth graphing.
    #[serde(default)]
    pub metrics: serde_json::Map<String, serde_json::Value>,
    /// Observations, ok to critical.
    #[serde(default)]
    pub findings: Vec<Finding>,
    /// The handler did nothing because the work belongs to someone else right now (another
    /// worker holds the database's backup lock): the attempt is recorded as `skipped`, not
    /// `succeeded`, so it never counts as evidence that the work was done.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub skipped: bool,
}

/// How a handler failed, saying what should happen next. The worker turns this into a state
/// change and a ledger row; handlers never touch the queue themselves.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JobError {
    /// Try again after the queue's backoff (or `retry_after` if given), up to max attempts.
    #[error("{message}")]
    Retryable {
        /// Why it failed.
        message: String,
        /// Overrides the computed backoff.
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help: dead-letter the job now.
    #[error("{0}")]
    Permanent(String),
    /// Input was rejected before any work was done.
    #[error("{0}")]
    Invalid(String),
    /// Failed permanently after observing something worth recording: the attempt's row keeps
    /// `outcome` (its findings, such as `backup.failed` with the tool's stderr) beside the error.
    #[error("{message}")]
    Reported {
        /// Why it failed.
        message: String,
        /// What the attempt observed before failing.
        outcome: Box<Outcome>,
    },
}

impl JobError {
    /// A retryable failure with the default backoff.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self::Retryable {
            message: message.into(),
            retry_after: None,
        }
    }

    /// A permanent failure that keeps `outcome` (findings) in the attempt's row.
    pub fn reported(message: impl Into<String>, outcome: Outcome) -> Self {
        Self::Reported {
            message: message.into(),
            outcome: Box::new(outcome),
        }
    }

    /// The outcome a failed attempt still records, if the handler gave one.
    #[must_use]
    pub fn outcome(&self) -> Option<&Outcome> {
        match self {
            Self::Reported { outcome, .. } => Some(outcome),
            _ => None,
        }
    }

    /// Whether the queue should retry the job.
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable { .. })
    }
}

/// A job as a worker receives it from the queue: its identity, its attempt and its raw payload.
///
/// `args` stays a JSON value here; the handler for `kind` decodes it, so a payload that does not
/// decode becomes a dead letter with its reason instead of a worker error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// The job's id.
    pub id: JobId,
    /// The kind string as stored; may be unknown if someone pushed garbage.
    pub kind: String,
    /// The queue it was fetched from.
    pub queue: QueueName,
    /// The JSON arguments; `Value::Null` when the stored payload was not valid JSON.
    pub args: serde_json::Value,
    /// Set when the stored payload could not be decoded, with the reason.
    pub payload_error: Option<String>,
    /// 1 for the first delivery, counting deliveries whose lease expired.
    pub attempt: u32,
    /// Attempts allowed before the job is dead.
    pub max_attempts: u32,
    /// Enqueue time in unix milliseconds.
    pub enqueued_at_ms: i64,
    /// The schedule that produced it, if any.
    pub schedule: Option<String>,
    /// The tick (fire time, unix milliseconds) that produced it, if any.
    pub tick_ms: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_no_longer_reported_is_resolved_once_and_a_persisting_one_is_not() {
        let open = vec![
            ("disk.used_pct".to_owned(), Some("/data".to_owned())),
            ("disk.used_pct".to_owned(), Some("/logs".to_owned())),
            ("backup.stale".to_owned(), None),
        ];
        let current = vec![
            Finding::new("disk.used_pct", Severity::Critical, "93% used").with_subject("/data"),
            // An ok finding for /logs does not keep the condition open.
            Finding::new("disk.used_pct", Severity::Ok, "40% used").with_subject("/logs"),
        ];
        let resolved = resolutions(&open, &current);
        let pairs: Vec<(&str, Option<&str>, Severity)> = resolved
            .iter()
            .map(|f| (f.code.as_str(), f.subject.as_deref(), f.severity))
            .collect();
        assert_eq!(
            pairs,
            vec![
                ("disk.used_pct", Some("/logs"), Severity::Ok),
                ("backup.stale", None, Severity::Ok),
            ]
        );
    }

    #[test]
    fn report_kinds_take_an_optional_database_and_name_a_bad_field() {
        let kind = JobKind::parse_runnable("db.bloat").expect("db.bloat has a handler");
        assert!(kind.validate_args(&serde_json::json!({})).is_ok());
        assert!(
            kind.validate_args(&serde_json::json!({"database": "app"}))
                .is_ok()
        );
        let error = kind
            .validate_args(&serde_json::json!({"db": "app"}))
            .expect_err("unknown field");
        assert!(
            error
                .to_string()
                .starts_with("bad args for db.bloat: unknown field `db`"),
            "{error}"
        );
        let error = kind
            .validate_args(&serde_json::json!({"database": 5}))
            .expect_err("wrong type");
        assert!(error.to_string().contains("invalid type"), "{error}");
    }

    #[test]
    fn a_finding_without_subject_serializes_as_before() {
        let finding = Finding::new("backup.stale", Severity::Warn, "old");
        let json = serde_json::to_value(&finding).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({"code": "backup.stale", "severity": "warn", "message": "old"})
        );
    }
}
