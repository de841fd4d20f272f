//! What operators see of their configuration: `Settings::show` (the effective value of every
//! key with its source, secrets as `***`) and [`check_and_report`] (the `--check-config` of
//! every daemon and `upkeepctl config check`). Neither touches a server.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::ExitCode;

use serde::Serialize;

use super::{Ctx, Error, ScheduleEntry, ScheduleSettings, Settings, Source, normalize_indexes};
use crate::settings::{REDACTED, key_segment, redact_url};

/// One key of the effective configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ShownSetting {
    /// The key path (`queues.reports.concurrency`, `schedules[0].cron`).
    pub key: String,
    /// The value; a secret is `"***"` (a URL keeps its host: `postgres://***@db/app`).
    pub value: serde_json::Value,
    /// Where it came from: `default`, `FILE:LINE` or `env VAR`.
    pub source: String,
}

impl Settings {
    /// The effective configuration loaded from `path` (or the defaults) and `env`: every key
    /// with its value and source, in key order. Secrets (the URL passwords, the API token, the
    /// secret key and every section's `SECRET_KEYS`) are shown as `***`.
    ///
    /// # Errors
    /// As [`Settings::load`]: an invalid configuration is not shown.
    pub fn show(
        path: Option<&Path>,
        env: &HashMap<String, String>,
    ) -> Result<Vec<ShownSetting>, Error> {
        let (text, origin) = match path {
            Some(path) => (
                std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
                    path: path.to_owned(),
                    source,
                })?,
                path.display().to_string(),
            ),
            None => (String::new(), "built-in defaults".to_owned()),
        };
        let (settings, doc, ctx) = Self::resolve(&text, &origin, path.map(Path::to_owned), env)?;
        let mut tree = serde_json::json!({
            "database": settings.database,
            "redis": settings.redis,
            "queues": settings.queues,
            "kinds": settings.kinds,
            "schedules": settings.schedules.iter().map(ScheduleEntry::from).collect::<Vec<_>>(),
            "worker": settings.worker,
            "scheduler": settings.scheduler,
            "maintenance": settings.maintenance,
            "api": settings.api,
            "telemetry": settings.telemetry,
            "secret_key": settings.secret_key.as_ref().map(|_| REDACTED),
            "secret_key_previous": settings.secret_key_previous.as_ref().map(|_| REDACTED),
        });
        // Sections this function does not know by type (the feature sections) are shown as
        // the merged document has them; their secrets are redacted by their SECRET_KEYS below.
        if let (Some(tree), Ok(serde_json::Value::Object(doc))) =
            (tree.as_object_mut(), serde_json::to_value(&doc))
        {
            for (key, value) in doc {
                tree.entry(key).or_insert(value);
            }
        }
        let mut leaves = BTreeMap::new();
        collect_leaves("", &tree, &mut leaves);
        Ok(leaves
            .into_iter()
            .map(|(key, value)| {
                let value = redact(&ctx, &key, value);
                let source = source_of(&ctx, &key).to_string();
                ShownSetting { key, value, source }
            })
            .collect())
    }
}

impl From<&ScheduleSettings> for ScheduleEntry {
    fn from(schedule: &ScheduleSettings) -> Self {
        Self {
            name: schedule.name.clone(),
            cron: schedule.cron.as_str().to_owned(),
            timezone: schedule.timezone.name().to_owned(),
            kind: schedule.kind.as_str().to_owned(),
            args: schedule.args.clone(),
            queue: Some(schedule.queue.as_str().to_owned()),
            catch_up: schedule.catch_up,
            catch_up_window: schedule.catch_up_window,
            catch_up_max: schedule.catch_up_max,
            overlap: Some(schedule.overlap),
            jitter: schedule.jitter,
            enabled: schedule.enabled,
            ping_url: schedule.ping_url.clone(),
        }
    }
}

/// URLs whose path is the credential (Slack webhooks, healthchecks.io pings): never shown,
/// not even without their userinfo.
const OPAQUE_URL_KEYS: &[&str] = &["alerts.sinks[].url", "schedules[].ping_url"];

/// Whether `key` is a secret: a built-in secret or any section's `SECRET_KEYS` entry (or an
/// element of one).
fn is_secret(ctx: &Ctx, key: &str) -> bool {
    let normalized = normalize_indexes(key);
    normalized == "secret_key"
        || normalized == "secret_key_previous"
        || OPAQUE_URL_KEYS.contains(&normalized.as_str())
        || ctx.secret_keys.iter().any(|pattern| {
            normalized == *pattern
                || normalized
                    .strip_prefix(pattern.as_str())
                    .is_some_and(|rest| rest.starts_with(['.', '[']))
        })
}

/// The value of `key` as shown: a secret string becomes `***`, or its URL without credentials.
fn redact(ctx: &Ctx, key: &str, value: serde_json::Value) -> serde_json::Value {
    if !is_secret(ctx, key) {
        return value;
    }
    let opaque = OPAQUE_URL_KEYS.contains(&normalize_indexes(key).as_str());
    let hide = |text: &str| {
        if text.contains("://") && !opaque {
            redact_url(text)
        } else {
            REDACTED.to_owned()
        }
    };
    match value {
        serde_json::Value::Null => serde_json::Value::Null,
        serde_json::Value::String(text) => serde_json::Value::String(hide(&text)),
        serde_json::Value::Array(items) => serde_json::Value::Array(
            items
                .into_iter()
                .map(|item| match item {
                    serde_json::Value::String(text) => serde_json::Value::String(hide(&text)),
                    _ => serde_json::Value::String(REDACTED.to_owned()),
                })
                .collect(),
        ),
        _ => serde_json::Value::String(REDACTED.to_owned()),
    }
}

/// Where the value at `key` came from: the variable that set it, the file line that wrote it,
/// or the section's default.
fn source_of(ctx: &Ctx, key: &str) -> Source {
    if let Some(source) = ctx.origins.get(key) {
        return source.clone();
    }
    // A secret given indirectly (`token_env = "VAR"`) comes from the line that names it.
    let indirect = [String::new(), "_env".to_owned(), "_file".to_owned()];
    for suffix in indirect {
        if let Some(line) = ctx.lines.get(&format!("{key}{suffix}")) {
            return Source::File {
                file: ctx.file.clone(),
                line: *line,
            };
        }
    }
    Source::Default
}

/// Every leaf of `value` by key path. Arrays of tables are walked entry by entry; other arrays
/// are one value.
fn collect_leaves(
    prefix: &str,
    value: &serde_json::Value,
    out: &mut BTreeMap<String, serde_json::Value>,
) {
    match value {
        serde_json::Value::Object(map) if !map.is_empty() => {
            for (key, inner) in map {
                let segment = key_segment(key);
                let path = if prefix.is_empty() {
                    segment
                } else {
                    format!("{prefix}.{segment}")
                };
                collect_leaves(&path, inner, out);
            }
        }
        serde_json::Value::Array(items)
            if !items.is_empty() && items.iter().all(serde_json::Value::is_object) =>
        {
            for (idx, item) in items.iter().enumerate() {
                collect_leaves(&format!("{prefix}[{idx}]"), item, out);
            }
        }
        other => {
            out.insert(prefix.to_owned(), other.clone());
        }
    }
}

impl Error {
    /// One line per problem, for printing a failed check.
    #[must_use]
    pub fn problem_lines(&self) -> Vec<String> {
        match self {
            Self::Invalid { problems, .. } => problems.iter().map(ToString::to_string).collect(),
            other => vec![other.to_string()],
        }
    }
}

/// Validates the configuration `path` (or, when `None`, the one the environment selects:
/// `UPKEEP_CONFIG`, else `./upkeep.toml`) with the process environment's overrides, prints
/// the verdict, and returns the exit code: 0 when valid, 2 with every problem on stderr
/// otherwise. Connects to nothing. `service` prefixes the messages.
#[must_use]
pub fn check_and_report(service: &str, path: Option<&Path>) -> ExitCode {
    let env = match super::process_env() {
        Ok(env) => env,
        Err(error) => return report_failure(service, "environment", &error),
    };
    let path = path
        .map(Path::to_owned)
        .or_else(|| super::config_path(&env));
    let shown = path.as_ref().map_or_else(
        || "built-in defaults".to_owned(),
        |p| p.display().to_string(),
    );
    match Settings::load_file(path.as_deref(), &env) {
        Ok(settings) => {
            println!(
                "{service}: configuration OK ({shown}): {} schedules, {} queues",
                settings.schedules.len(),
                settings.queues.len()
            );
            ExitCode::SUCCESS
        }
        Err(error) => report_failure(service, &shown, &error),
    }
}

fn report_failure(service: &str, origin: &str, error: &Error) -> ExitCode {
    let lines = error.problem_lines();
    eprintln!(
        "{service}: invalid configuration ({origin}), {} problem{}:",
        lines.len(),
        if lines.len() == 1 { "" } else { "s" }
    );
    for line in lines {
        eprintln!("  {line}");
    }
    ExitCode::from(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sections_secret_keys_are_redacted_including_array_entries() {
        let ctx = Ctx {
            secret_keys: vec![
                "backups.databases[].url".to_owned(),
                "tokens.credentials[].client_secret".to_owned(),
            ],
            ..Ctx::default()
        };
        let shown = |key: &str, value: serde_json::Value| redact(&ctx, key, value);

        assert_eq!(
            shown(
                "backups.databases[3].url",
                serde_json::json!("postgres://app:hunter2@db/app")
            ),
            serde_json::json!("postgres://***@db/app")
        );
        assert_eq!(
            shown(
                "tokens.credentials[0].client_secret",
                serde_json::json!("hunter2")
            ),
            serde_json::json!("***")
        );
        assert_eq!(
            shown("secret_key", serde_json::json!("AAAA")),
            serde_json::json!("***")
        );
        // The indirect form names a variable or a file, not the secret: shown as written.
        assert_eq!(
            shown(
                "backups.databases[0].url_env",
                serde_json::json!("APP_DB_URL")
            ),
            serde_json::json!("APP_DB_URL")
        );
        assert_eq!(
            shown("backups.databases[0].name", serde_json::json!("app")),
            serde_json::json!("app")
        );
    }
}
