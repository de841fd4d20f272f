//! The `[disk]` section: extra paths for `system.disk` and its thresholds.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::settings::{Problems, Section};

/// The `[disk]` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiskSettings {
    /// Paths checked besides the automatic ones (log target and source directories, the
    /// PostgreSQL data directory when local). Defaults to none.
    pub paths: Vec<PathBuf>,
    /// Used percentage (as `df` shows it) at which a warning is raised. Defaults to 80.
    pub warn_pct: f64,
    /// Used percentage at which the finding is critical. Defaults to 90.
    pub critical_pct: f64,
    /// Points below a threshold the value must fall before its finding resolves, so a value
    /// hovering around the threshold does not flap. Defaults to 5.
    pub hysteresis_pct: f64,
    /// Samples younger than this feed the "full within 24 h" trend. Defaults to 6h.
    #[serde(with = "humantime_serde")]
    pub trend_window: Duration,
    /// A filesystem predicted to fill within this is reported. Defaults to 24h.
    #[serde(with = "humantime_serde")]
    pub full_within: Duration,
    /// Samples older than this are deleted. Defaults to 30d.
    #[serde(with = "humantime_serde")]
    pub sample_retention: Duration,
    /// Not a key: the Redis server's `dir`, which a worker daemon asks for once at start when
    /// Redis runs on this host ([`super::discover_redis_dir`]); `system.disk` checks it too.
    #[serde(skip)]
    pub redis_dir: Option<PathBuf>,
}

impl Default for DiskSettings {
    fn default() -> Self {
        Self {
            paths: Vec::new(),
            warn_pct: 80.0,
            critical_pct: 90.0,
            hysteresis_pct: 5.0,
            trend_window: Duration::from_secs(6 * 3600),
            full_within: Duration::from_secs(24 * 3600),
            sample_retention: Duration::from_secs(30 * 86_400),
            redis_dir: None,
        }
    }
}

impl Section for DiskSettings {
    fn validate(&self, path: &str, problems: &mut Problems) {
        problems.check_range(format!("{path}.warn_pct"), self.warn_pct, 1.0, 100.0);
        problems.check_range(
            format!("{path}.critical_pct"),
            self.critical_pct,
            1.0,
            100.0,
        );
        if self.critical_pct < self.warn_pct {
            problems.push(
                format!("{path}.critical_pct"),
                format!(
                    "must not be below warn_pct ({}), got {}",
                    self.warn_pct, self.critical_pct
                ),
            );
        }
        problems.check_range(
            format!("{path}.hysteresis_pct"),
            self.hysteresis_pct,
            0.0,
            50.0,
        );
        for (idx, disk_path) in self.paths.iter().enumerate() {
            if !disk_path.is_absolute() {
                problems.push(
                    format!("{path}.paths[{idx}]"),
                    format!("must be an absolute path, got {disk_path:?}"),
                );
            }
        }
        if self.trend_window < Duration::from_secs(60) {
            problems.push(format!("{path}.trend_window"), "must be at least 1m");
        }
    }
}
