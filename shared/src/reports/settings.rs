//! `[reports]`: the target databases the health reports read, and the thresholds that turn
//! their rows into findings.
//!
//! ```toml
//! [[reports.databases]]
//! name = "app"
//! url_env = "APP_MONITOR_URL"   # or url = "…" / url_file = "/run/credentials/…"
//! [reports.thresholds]
//! slow_mean_ms = 100
//! ```

use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use crate::settings::{Problems, Section};

/// The `[reports]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportsSettings {
    /// The databases reported on, `[[reports.databases]]`. Defaults to none.
    pub databases: Vec<ReportDatabase>,
    /// When a row becomes a finding.
    pub thresholds: Thresholds,
    /// `statement_timeout` of every report query, 1s to 1h. Defaults to 30s.
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
    /// `lock_timeout` of every report query, 10ms to 1m. Defaults to 1s.
    #[serde(with = "humantime_serde")]
    pub lock_timeout: Duration,
    /// How long to wait for a connection to a target. Defaults to 5s.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Rows kept per report (top N by its ranking column; the total count is kept too), 1 to
    /// 10000. Defaults to 50.
    pub top_n: u32,
}

/// One `[[reports.databases]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportDatabase {
    /// The name used in job args (`{"database": "app"}`), `--db` and finding subjects:
    /// 1 to 63 characters of `[A-Za-z0-9_-]`, unique.
    pub name: String,
    /// `postgres://` URL of a role in `pg_monitor`; a secret (`url`, `url_env` or `url_file`).
    pub url: SecretString,
}

/// `[reports.thresholds]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Thresholds {
    /// A statement is slow at this mean time in milliseconds or more. Defaults to 100.
    pub slow_mean_ms: f64,
    /// ... and with at least this many calls. Defaults to 100.
    pub slow_min_calls: i64,
    /// Dead tuples as a percentage of all tuples that raises `table.dead_tuples_pct`.
    /// Defaults to 10.
    pub dead_tuple_pct: f64,
    /// Estimated bloat percentage that raises `table.bloat_pct` and `index.bloat_pct`.
    /// Defaults to 30.
    pub bloat_pct: f64,
    /// An index with fewer scans than this since the statistics reset is unused. Defaults to
    /// 100.
    pub unused_index_scans: i64,
    /// ... once upkeep has known it, and the statistics have covered, at least this long.
    /// Defaults to 7d.
    #[serde(with = "humantime_serde")]
    pub unused_index_min_age: Duration,
}

impl Default for ReportsSettings {
    fn default() -> Self {
        Self {
            databases: Vec::new(),
            thresholds: Thresholds::default(),
            statement_timeout: Duration::from_secs(30),
            lock_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(5),
            top_n: 50,
        }
    }
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            slow_mean_ms: 100.0,
            slow_min_calls: 100,
            dead_tuple_pct: 10.0,
            bloat_pct: 30.0,
            unused_index_scans: 100,
            unused_index_min_age: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl ReportsSettings {
    /// The database named `name`.
    #[must_use]
    pub fn database(&self, name: &str) -> Option<&ReportDatabase> {
        self.databases.iter().find(|database| database.name == name)
    }
}

impl Section for ReportsSettings {
    const SECRET_KEYS: &'static [&'static str] = &["databases[].url"];

    fn validate(&self, path: &str, problems: &mut Problems) {
        for (idx, database) in self.databases.iter().enumerate() {
            let key = format!("{path}.databases[{idx}].name");
            let valid = !database.name.is_empty()
                && database.name.len() <= 63
                && database
                    .name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !valid {
                problems.push(
                    &key,
                    format!(
                        "must be 1-63 characters of [A-Za-z0-9_-], got {:?}",
                        database.name
                    ),
                );
            } else if self.databases[..idx]
                .iter()
                .any(|other| other.name == database.name)
            {
                problems.push(
                    &key,
                    format!("must be unique, {:?} appears twice", database.name),
                );
            }
            let url = secrecy::ExposeSecret::expose_secret(&database.url);
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                problems.push(
                    format!("{path}.databases[{idx}].url"),
                    "must be a postgres:// or postgresql:// URL",
                );
            }
        }
        let t = &self.thresholds;
        let at = |key: &str| format!("{path}.thresholds.{key}");
        problems.check_range(at("slow_mean_ms"), t.slow_mean_ms, 0.0, 3_600_000.0);
        problems.check_range(at("slow_min_calls"), t.slow_min_calls, 1, i64::MAX);
        problems.check_range(at("dead_tuple_pct"), t.dead_tuple_pct, 0.0, 100.0);
        problems.check_range(at("bloat_pct"), t.bloat_pct, 0.0, 100.0);
        problems.check_range(at("unused_index_scans"), t.unused_index_scans, 1, i64::MAX);
        for (key, value, min, max) in [
            (
                "statement_timeout",
                self.statement_timeout,
                Duration::from_secs(1),
                Duration::from_secs(3600),
            ),
            (
                "lock_timeout",
                self.lock_timeout,
                Duration::from_millis(10),
                Duration::from_secs(60),
            ),
            (
                "connect_timeout",
                self.connect_timeout,
                Duration::from_millis(100),
                Duration::from_secs(300),
            ),
        ] {
            if value < min || value > max {
                problems.push(
                    format!("{path}.{key}"),
                    format!(
                        "must be between {} and {}, got {}",
                        humantime::format_duration(min),
                        humantime::format_duration(max),
                        humantime::format_duration(value)
                    ),
                );
            }
        }
        problems.check_range(format!("{path}.top_n"), self.top_n, 1, 10_000);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(toml_text: &str) -> Vec<String> {
        crate::settings::problems_of::<ReportsSettings>("reports", toml_text)
    }

    #[test]
    fn thresholds_default_to_the_contract_values() {
        let settings: ReportsSettings = toml::from_str("").expect("empty section");
        assert_eq!(settings.thresholds.slow_mean_ms, 100.0);
        assert_eq!(settings.thresholds.slow_min_calls, 100);
        assert_eq!(settings.thresholds.dead_tuple_pct, 10.0);
        assert_eq!(settings.thresholds.bloat_pct, 30.0);
        assert_eq!(settings.thresholds.unused_index_scans, 100);
        assert_eq!(
            settings.thresholds.unused_index_min_age,
            Duration::from_secs(7 * 86_400)
        );
    }

    #[test]
    fn a_duplicate_database_name_and_a_bad_threshold_are_named() {
        let found = problems(
            "[[databases]]\nname = \"app\"\nurl = \"postgres://a/app\"\n\
             [[databases]]\nname = \"app\"\nurl = \"mysql://a/app\"\n\
             [thresholds]\ndead_tuple_pct = 140\n",
        );
        assert_eq!(
            found,
            vec![
                "reports.databases[1].name: must be unique, \"app\" appears twice",
                "reports.databases[1].url: must be a postgres:// or postgresql:// URL",
                "reports.thresholds.dead_tuple_pct: must be between 0 and 100, got 140",
            ]
        );
    }
}
