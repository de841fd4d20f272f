//! The `[logs]` section: `[[logs.targets]]` (files `logs.rotate` rotates) and `[[logs.sources]]`
//! (files `logs.scan_errors` reads).
//!
//! Validation is strict because these settings decide which files upkeep renames, compresses and
//! deletes: a target's `pattern` is a file name or a glob matched inside `directory` only, so one
//! with `/` or `..` is refused at load, naming the key.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::settings::{ByteSize, Problems, Section};

/// The `[logs]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsSettings {
    /// Files to rotate, compress and prune. Defaults to none.
    pub targets: Vec<TargetSettings>,
    /// Files to scan for errors. Defaults to none.
    pub sources: Vec<SourceSettings>,
    /// Most bytes one `logs.scan_errors` run reads per source; the rest is read by the next run
    /// (the digest says how much is left). Defaults to 256MiB.
    pub scan_budget: ByteSize,
    /// A signature seen more often than this many times per hour (averaged over the time since
    /// the source's previous scan, at least one hour) is reported. Defaults to 100.
    pub rate_threshold_per_hour: u64,
    /// How many signatures the digest lists. Defaults to 10.
    pub digest_size: usize,
}

impl Default for LogsSettings {
    fn default() -> Self {
        Self {
            targets: Vec::new(),
            sources: Vec::new(),
            scan_budget: ByteSize(256 << 20),
            rate_threshold_per_hour: 100,
            digest_size: 10,
        }
    }
}

/// How a target is rotated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RotateMode {
    /// Rename the live file, then tell the writer to reopen (signal or command) and wait for the
    /// new file. Loses nothing: lines written before the reopen land in the renamed file.
    #[default]
    RenameReopen,
    /// Copy the live file, then truncate it in place. Allowed only for a writer that opened
    /// with `O_APPEND` (`writer_uses_append = true`); lines written between the last copy and
    /// the truncation are lost (see README).
    Copytruncate,
    /// PostgreSQL's collector rotates; upkeep only compresses and prunes files that
    /// `pg_current_logfile()` does not name.
    Postgres,
}

/// How rotated generations are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// zstd (`.zst`). The default.
    #[default]
    Zstd,
    /// gzip (`.gz`).
    Gzip,
    /// Generations stay as they are.
    None,
}

impl Compression {
    /// The file name extension, with its dot, or `None` for no compression.
    #[must_use]
    pub fn extension(self) -> Option<&'static str> {
        match self {
            Self::Zstd => Some(".zst"),
            Self::Gzip => Some(".gz"),
            Self::None => None,
        }
    }
}

/// Send a signal to the process whose pid is in a file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReopenSignal {
    /// The file holding the writer's pid.
    pub pid_file: PathBuf,
    /// The signal's name, with or without `SIG` (`HUP`, `USR1`, `USR2`).
    pub signal: String,
}

/// One `[[logs.targets]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TargetSettings {
    /// Unique name, used by `logs.rotate {"target": …}`. Required.
    pub name: String,
    /// The directory holding the files; absolute. Required.
    pub directory: PathBuf,
    /// A file name or a glob (`*`, `?`) matched against names inside `directory` only. Required.
    pub pattern: String,
    /// How to rotate. Defaults to `rename_reopen`.
    pub mode: RotateMode,
    /// For `rename_reopen`: the signal that makes the writer reopen its file.
    pub reopen_signal: Option<ReopenSignal>,
    /// For `rename_reopen`: a command (argv, no shell) that makes the writer reopen.
    pub reopen_command: Option<Vec<String>>,
    /// How long to wait for the writer to create the new file. Defaults to 5s.
    #[serde(with = "humantime_serde")]
    pub reopen_timeout: Duration,
    /// Rotate a file once it is at least this big.
    pub rotate_size: Option<ByteSize>,
    /// Rotate a file once its newest generation (or the file's creation) is this old.
    #[serde(with = "humantime_serde")]
    pub rotate_age: Option<Duration>,
    /// Generations kept (0: no count limit). Defaults to 14.
    pub keep: u32,
    /// Generations older than this are deleted. Defaults to none.
    #[serde(with = "humantime_serde")]
    pub max_age: Option<Duration>,
    /// Compression of every generation but the newest. Defaults to `zstd`.
    pub compress: Compression,
    /// Declares that the writer opened the file with `O_APPEND`, which `copytruncate` needs (a
    /// writer without it keeps its offset and the truncated file regrows as a sparse file).
    /// Defaults to false.
    pub writer_uses_append: bool,
}

impl Default for TargetSettings {
    fn default() -> Self {
        Self {
            name: String::new(),
            directory: PathBuf::new(),
            pattern: String::new(),
            mode: RotateMode::default(),
            reopen_signal: None,
            reopen_command: None,
            reopen_timeout: Duration::from_secs(5),
            rotate_size: None,
            rotate_age: None,
            keep: 14,
            max_age: None,
            compress: Compression::default(),
            writer_uses_append: false,
        }
    }
}

/// How a source's lines are parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceFormat {
    /// One JSON object per line with a `level` (or `severity`) and a `message` (or `msg`), as
    /// our own daemons and most JSON loggers write. The default.
    #[default]
    Json,
    /// PostgreSQL's `stderr` format (`… ERROR:  message`).
    Postgres,
    /// PostgreSQL's `jsonlog` (`error_severity`, `message`).
    PostgresJsonlog,
    /// Redis's log (`pid:role date # message`; `#` is a warning).
    Redis,
    /// Any text: the first of `PANIC`, `FATAL`, `CRITICAL`, `ERROR`, `WARN` in the line.
    Text,
}

/// One `[[logs.sources]]` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourceSettings {
    /// Unique name, used by `logs.scan_errors {"source": …}`. Required.
    pub name: String,
    /// Absolute path; its file name may be a glob (`/var/log/app/error-*.log`). Required.
    pub path: PathBuf,
    /// Line format. Defaults to `json`.
    pub format: SourceFormat,
}

impl SourceSettings {
    /// The directory and the file-name pattern of `path`.
    #[must_use]
    pub fn split(&self) -> (PathBuf, String) {
        let directory = self.path.parent().map(PathBuf::from).unwrap_or_default();
        let pattern = self
            .path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default();
        (directory, pattern)
    }
}

impl LogsSettings {
    /// The target named `name`.
    #[must_use]
    pub fn target(&self, name: &str) -> Option<&TargetSettings> {
        self.targets.iter().find(|target| target.name == name)
    }

    /// The source named `name`.
    #[must_use]
    pub fn source(&self, name: &str) -> Option<&SourceSettings> {
        self.sources.iter().find(|source| source.name == name)
    }
}

impl Section for LogsSettings {
    fn validate(&self, path: &str, problems: &mut Problems) {
        if self.scan_budget.bytes() < 4096 {
            problems.push(
                format!("{path}.scan_budget"),
                format!("must be at least 4KiB, got {}", self.scan_budget),
            );
        }
        problems.check_range(format!("{path}.digest_size"), self.digest_size, 1, 1000);
        for (idx, target) in self.targets.iter().enumerate() {
            let key = format!("{path}.targets[{idx}]");
            validate_target(target, &key, problems);
            if self.targets[..idx].iter().any(|t| t.name == target.name) {
                problems.push(
                    format!("{key}.name"),
                    format!("must be unique, {:?} appears twice", target.name),
                );
            }
        }
        for (idx, source) in self.sources.iter().enumerate() {
            let key = format!("{path}.sources[{idx}]");
            problems.check_not_empty(format!("{key}.name"), &source.name);
            if self.sources[..idx].iter().any(|s| s.name == source.name) {
                problems.push(
                    format!("{key}.name"),
                    format!("must be unique, {:?} appears twice", source.name),
                );
            }
            let (directory, pattern) = source.split();
            if !source.path.is_absolute() {
                problems.push(
                    format!("{key}.path"),
                    format!("must be an absolute path, got {:?}", source.path),
                );
            } else if let Err(message) = check_pattern(&pattern) {
                problems.push(format!("{key}.path"), message);
            } else if directory.to_string_lossy().contains(['*', '?', '[']) {
                problems.push(
                    format!("{key}.path"),
                    "only the file name may be a glob, not the directories",
                );
            }
        }
    }
}

fn validate_target(target: &TargetSettings, key: &str, problems: &mut Problems) {
    problems.check_not_empty(format!("{key}.name"), &target.name);
    if !target.directory.is_absolute() {
        problems.push(
            format!("{key}.directory"),
            format!("must be an absolute path, got {:?}", target.directory),
        );
    }
    if target
        .directory
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        problems.push(format!("{key}.directory"), "must not contain \"..\"");
    }
    if let Err(message) = check_pattern(&target.pattern) {
        problems.push(format!("{key}.pattern"), message);
    }
    let has_signal = target.reopen_signal.is_some();
    let has_command = target.reopen_command.is_some();
    match target.mode {
        RotateMode::RenameReopen => {
            if has_signal == has_command {
                problems.push(
                    format!("{key}.mode"),
                    "rename_reopen needs exactly one of reopen_signal and reopen_command",
                );
            }
        }
        RotateMode::Copytruncate => {
            if !target.writer_uses_append {
                problems.push(
                    format!("{key}.mode"),
                    "copytruncate is only allowed when the writer opens the file with O_APPEND: \
                     set writer_uses_append = true if it does (otherwise the truncated file \
                     regrows as a sparse file), or use rename_reopen",
                );
            }
        }
        RotateMode::Postgres => {
            if has_signal || has_command {
                problems.push(
                    format!("{key}.mode"),
                    "postgres mode leaves rotation to PostgreSQL: remove reopen_signal and reopen_command",
                );
            }
        }
    }
    if target.mode != RotateMode::Postgres
        && target.rotate_size.is_none()
        && target.rotate_age.is_none()
    {
        problems.push(
            format!("{key}.rotate_size"),
            "set rotate_size and/or rotate_age",
        );
    }
    if target.rotate_size.is_some_and(|size| size.bytes() == 0) {
        problems.push(format!("{key}.rotate_size"), "must be more than 0");
    }
    if let Some(signal) = &target.reopen_signal {
        if let Err(message) = parse_signal(&signal.signal) {
            problems.push(format!("{key}.reopen_signal.signal"), message);
        }
        if !signal.pid_file.is_absolute() {
            problems.push(
                format!("{key}.reopen_signal.pid_file"),
                "must be an absolute path",
            );
        }
    }
    if let Some(command) = &target.reopen_command
        && command
            .first()
            .is_none_or(|program| program.trim().is_empty())
    {
        problems.push(
            format!("{key}.reopen_command"),
            "must name a program: [\"program\", \"arg\", …]",
        );
    }
    if target.reopen_timeout.is_zero() || target.reopen_timeout > Duration::from_secs(300) {
        problems.push(
            format!("{key}.reopen_timeout"),
            "must be between 1ms and 5m",
        );
    }
    if target.keep == 0 && target.max_age.is_none() {
        problems.push(
            format!("{key}.keep"),
            "keep = 0 (no count limit) needs max_age, or generations pile up forever",
        );
    }
}

/// Parses a signal name (`HUP`, `SIGHUP`, `usr1`).
///
/// # Errors
/// Names the bad value and the allowed ones.
pub fn parse_signal(name: &str) -> Result<nix::sys::signal::Signal, String> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    match full.parse::<nix::sys::signal::Signal>() {
        Ok(signal) if !matches!(full.as_str(), "SIGKILL" | "SIGSTOP") => Ok(signal),
        _ => Err(format!(
            "unknown or unusable signal {name:?} (use HUP, USR1, USR2, ...)"
        )),
    }
}

/// Checks a file-name pattern: not empty, no `/`, no `..`.
fn check_pattern(pattern: &str) -> Result<(), String> {
    if pattern.trim().is_empty() {
        Err("must not be empty".to_owned())
    } else if pattern.contains('/') || pattern.contains('\\') {
        Err(format!(
            "must be a file name or glob inside the directory, without \"/\", got {pattern:?}"
        ))
    } else if pattern.contains("..") {
        Err(format!("must not contain \"..\", got {pattern:?}"))
    } else if pattern.contains('[') {
        Err(format!(
            "only the globs * and ? are supported, got {pattern:?}"
        ))
    } else {
        Ok(())
    }
}

/// Whether `name` matches the glob `pattern` (`*` any run of characters, `?` one character;
/// a leading `.` is matched only literally, like a shell).
#[must_use]
pub fn glob_matches(pattern: &str, name: &str) -> bool {
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    // Iterative matcher with one backtrack point for the last `*`: linear for typical patterns.
    let (mut p_idx, mut n_idx) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n_idx < name.len() {
        if p_idx < pattern.len() && (pattern[p_idx] == '?' || pattern[p_idx] == name[n_idx]) {
            p_idx += 1;
            n_idx += 1;
        } else if p_idx < pattern.len() && pattern[p_idx] == '*' {
            star = Some((p_idx, n_idx));
            p_idx += 1;
        } else if let Some((star_p, star_n)) = star {
            p_idx = star_p + 1;
            n_idx = star_n + 1;
            star = Some((star_p, star_n + 1));
        } else {
            return false;
        }
    }
    pattern[p_idx..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems_of(toml_text: &str) -> Vec<String> {
        let settings: LogsSettings = toml::from_str(toml_text).expect("valid toml");
        let mut problems = Problems::default();
        settings.validate("logs", &mut problems);
        problems
            .into_vec()
            .into_iter()
            .map(|p| p.to_string())
            .collect()
    }

    /// Asserts that `toml_text` has one problem per prefix, in order, each starting with it.
    #[track_caller]
    fn assert_problems_start_with(toml_text: &str, prefixes: &[&str]) {
        let problems = problems_of(toml_text);
        assert_eq!(problems.len(), prefixes.len(), "{problems:?}");
        for (problem, prefix) in problems.iter().zip(prefixes) {
            assert!(problem.starts_with(prefix), "{problems:?}");
        }
    }

    #[test]
    fn a_pattern_with_a_slash_or_dot_dot_is_refused_naming_the_key() {
        assert_problems_start_with(
            r#"
[[targets]]
name = "a"
directory = "/var/log/a"
pattern = "../etc/passwd"
mode = "copytruncate"
writer_uses_append = true
rotate_size = "1MiB"
[[targets]]
name = "b"
directory = "/var/log/b"
pattern = "sub/app.log"
mode = "copytruncate"
writer_uses_append = true
rotate_size = "1MiB"
"#,
            &["logs.targets[0].pattern: ", "logs.targets[1].pattern: "],
        );
    }

    #[test]
    fn copytruncate_without_an_append_writer_is_refused() {
        assert_problems_start_with(
            r#"
[[targets]]
name = "a"
directory = "/var/log/a"
pattern = "a.log"
mode = "copytruncate"
rotate_size = "1MiB"
"#,
            &["logs.targets[0].mode: copytruncate is only allowed"],
        );
    }

    #[test]
    fn rename_reopen_needs_one_way_to_reopen_and_a_known_signal() {
        let problems = problems_of(
            r#"
[[targets]]
name = "a"
directory = "/var/log/a"
pattern = "a.log"
rotate_age = "1d"
[[targets]]
name = "b"
directory = "/var/log/b"
pattern = "b.log"
rotate_age = "1d"
reopen_signal = { pid_file = "/run/b.pid", signal = "BOGUS" }
"#,
        );
        assert_eq!(
            problems,
            vec![
                "logs.targets[0].mode: rename_reopen needs exactly one of reopen_signal and reopen_command".to_owned(),
                "logs.targets[1].reopen_signal.signal: unknown or unusable signal \"BOGUS\" (use HUP, USR1, USR2, ...)".to_owned(),
            ]
        );
    }

    #[test]
    fn a_source_may_glob_its_file_name_only() {
        assert_problems_start_with(
            r#"
[[sources]]
name = "a"
path = "/var/log/a/error-*.log"
[[sources]]
name = "b"
path = "/var/*/b.log"
"#,
            &["logs.sources[1].path: "],
        );
    }

    #[test]
    fn globs_match_like_a_shell() {
        assert!(glob_matches("app.log", "app.log"));
        assert!(glob_matches("error-*.log", "error-2026.log"));
        assert!(glob_matches("a?c", "abc"));
        assert!(!glob_matches("*.log", "app.log.20261129T000000Z"));
        assert!(!glob_matches("*.log", ".hidden.log"));
        assert!(glob_matches("*a*b*", "xxaxxbxx"));
        assert!(!glob_matches("*a*b", "xxaxxbxxc"));
    }
}
