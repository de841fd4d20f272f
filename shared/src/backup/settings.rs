//! `[backups]`: where dumps go, which databases are dumped and how long dumps are kept.
//!
//! The section is deserialized by `config` (with `databases[].url` resolved from `url_env` or
//! `url_file`) and checked here by [`Section::validate`].

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::settings::{ByteSize, Problems, Section};

/// The `[backups]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupSettings {
    /// Where backups live on the backup worker's host; one subdirectory per database.
    pub directory: PathBuf,
    /// Extra directories each committed backup is copied to (another disk, an NFS mount), each
    /// copy checksummed.
    pub copy_to: Vec<PathBuf>,
    /// Where `pg_dump`, `pg_dumpall` and `pg_restore` are; empty: the binaries whose major
    /// version matches the server (`/usr/lib/postgresql/<major>/bin`), else `PATH`.
    pub pg_bin_dir: PathBuf,
    /// A dump below this size is a failure (`backup.too_small`).
    pub min_size: ByteSize,
    /// `[backups.retention]`.
    pub retention: RetentionSettings,
    /// `[[backups.databases]]`.
    pub databases: Vec<DatabaseTarget>,
}

impl Default for BackupSettings {
    fn default() -> Self {
        Self {
            directory: PathBuf::from("/var/lib/upkeep/backups"),
            copy_to: Vec::new(),
            pg_bin_dir: PathBuf::new(),
            min_size: ByteSize(1024),
            retention: RetentionSettings::default(),
            databases: Vec::new(),
        }
    }
}

impl BackupSettings {
    /// The configured database called `name`.
    #[must_use]
    pub fn database(&self, name: &str) -> Option<&DatabaseTarget> {
        self.databases.iter().find(|db| db.name == name)
    }
}

/// `[backups.retention]`: grandfather-father-son counts over verified backups.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionSettings {
    /// The newest N good backups.
    pub keep_last: u32,
    /// The newest good backup of each of the last N days that have one.
    pub keep_daily: u32,
    /// The newest good backup of each of the last N ISO weeks that have one.
    pub keep_weekly: u32,
    /// The newest good backup of each of the last N months that have one.
    pub keep_monthly: u32,
    /// Never fewer good backups than this, whatever the buckets say.
    pub min_keep: u32,
    /// When the newest good backup is older than this, retention deletes nothing and
    /// `backup.stale` is raised.
    #[serde(with = "humantime_serde")]
    pub max_staleness: Duration,
    /// Also keep every good backup at most this much older than the newest good backup.
    #[serde(with = "humantime_serde")]
    pub keep_within: Option<Duration>,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            keep_last: 7,
            keep_daily: 7,
            keep_weekly: 4,
            keep_monthly: 6,
            min_keep: 3,
            max_staleness: Duration::from_secs(26 * 3600),
            keep_within: None,
        }
    }
}

/// One `[[backups.databases]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseTarget {
    /// What jobs, the CLI and the catalog call it; also its subdirectory's name.
    pub name: String,
    /// `postgres://` URL of the database to dump (secret: give `url_env` or `url_file`).
    pub url: SecretString,
    /// `custom` (`pg_dump -Fc`, one file) or `directory` (`pg_dump -Fd -j jobs`).
    #[serde(default)]
    pub format: DumpFormat,
    /// Parallel dump jobs for the `directory` format.
    #[serde(default = "one")]
    pub jobs: u32,
}

fn one() -> u32 {
    1
}

/// The archive format of a dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DumpFormat {
    /// `pg_dump -Fc`: one compressed file, streamed and checksummed as it is written.
    #[default]
    Custom,
    /// `pg_dump -Fd`: a directory, dumped in parallel with `jobs`.
    Directory,
}

impl DumpFormat {
    /// The name used in config, manifests and the catalog.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Custom => "custom",
            Self::Directory => "directory",
        }
    }
}

impl Section for BackupSettings {
    const SECRET_KEYS: &'static [&'static str] = &["databases[].url"];

    fn validate(&self, path: &str, problems: &mut Problems) {
        if self.directory.as_os_str().is_empty() || !self.directory.is_absolute() {
            problems.push(
                format!("{path}.directory"),
                format!(
                    "must be an absolute path, got {:?}",
                    self.directory.display().to_string()
                ),
            );
        }
        for (i, copy) in self.copy_to.iter().enumerate() {
            if !copy.is_absolute() {
                problems.push(
                    format!("{path}.copy_to[{i}]"),
                    format!(
                        "must be an absolute path, got {:?}",
                        copy.display().to_string()
                    ),
                );
            } else if *copy == self.directory {
                problems.push(
                    format!("{path}.copy_to[{i}]"),
                    "must differ from backups.directory",
                );
            }
        }
        if self.min_size.bytes() == 0 {
            problems.push(
                format!("{path}.min_size"),
                "must be at least 1B: a 0-byte dump is never a backup",
            );
        }
        let r = &self.retention;
        let at = format!("{path}.retention");
        problems.check_range(format!("{at}.keep_last"), r.keep_last, 1, 10_000);
        problems.check_range(format!("{at}.keep_daily"), r.keep_daily, 0, 10_000);
        problems.check_range(format!("{at}.keep_weekly"), r.keep_weekly, 0, 10_000);
        problems.check_range(format!("{at}.keep_monthly"), r.keep_monthly, 0, 10_000);
        problems.check_range(format!("{at}.min_keep"), r.min_keep, 1, 10_000);
        if r.max_staleness < Duration::from_secs(3600) {
            problems.push(
                format!("{at}.max_staleness"),
                format!(
                    "must be at least 1h, got {}",
                    humantime::format_duration(r.max_staleness)
                ),
            );
        }
        for (i, db) in self.databases.iter().enumerate() {
            let key = format!("{path}.databases[{i}]");
            let valid_name = !db.name.is_empty()
                && db.name.len() <= 63
                && db
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !valid_name {
                problems.push(
                    format!("{key}.name"),
                    format!(
                        "must be 1-63 characters of [A-Za-z0-9_-] (it names a directory), got {:?}",
                        db.name
                    ),
                );
            }
            if self.databases[..i]
                .iter()
                .any(|other| other.name == db.name)
            {
                problems.push(
                    format!("{key}.name"),
                    format!("must be unique, {:?} appears twice", db.name),
                );
            }
            use secrecy::ExposeSecret as _;
            let url = db.url.expose_secret();
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                problems.push(
                    format!("{key}.url"),
                    "must be a postgres:// or postgresql:// URL",
                );
            }
            match db.format {
                DumpFormat::Custom if db.jobs != 1 => problems.push(
                    format!("{key}.jobs"),
                    format!(
                        "only applies to format = \"directory\", got {} with \"custom\"",
                        db.jobs
                    ),
                ),
                _ => problems.check_range(format!("{key}.jobs"), db.jobs, 1, 64),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems_of(toml_text: &str) -> Vec<String> {
        crate::settings::problems_of::<BackupSettings>("backups", toml_text)
    }

    #[test]
    fn the_defaults_are_those_of_the_contract() {
        let settings = BackupSettings::default();
        assert_eq!(settings.min_size, ByteSize(1024));
        assert_eq!(settings.retention.keep_last, 7);
        assert_eq!(
            settings.retention.max_staleness,
            Duration::from_secs(26 * 3600)
        );
        assert!(problems_of("").is_empty());
    }

    #[test]
    fn duplicate_names_relative_directories_and_jobs_with_custom_are_named_by_key() {
        let problems = problems_of(
            r#"
            directory = "backups"
            [[databases]]
            name = "app"
            url = "postgres://a/app"
            jobs = 4
            [[databases]]
            name = "app"
            url = "mysql://b/app"
            format = "directory"
            jobs = 4
            "#,
        );
        assert_eq!(
            problems,
            vec![
                "backups.directory: must be an absolute path, got \"backups\"".to_owned(),
                "backups.databases[0].jobs: only applies to format = \"directory\", got 4 with \"custom\"".to_owned(),
                "backups.databases[1].name: must be unique, \"app\" appears twice".to_owned(),
                "backups.databases[1].url: must be a postgres:// or postgresql:// URL".to_owned(),
            ]
        );
    }
}
