//! Disk space: each path resolved to its filesystem (de-duplicated by device id), used space as
//! `df` computes it, inode use, the warn/critical decision with hysteresis, and the
//! "full within 24 h" trend from recent samples.
//!
//! `df` leaves the blocks reserved for root out of the total: used % is
//! `used / (used + available)` with `used = blocks − free` and `available` the blocks an
//! unprivileged user may still take, rounded up for display. Decisions here are pure functions
//! of a measurement, the open findings and the samples; `statvfs` is the only IO, and samples
//! are stored by `store::disk_samples`.

pub mod settings;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;

pub use settings::DiskSettings;

use crate::job::Severity;

/// One filesystem's usage.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Usage {
    /// The mount point (the highest ancestor of the first path on the same device); the
    /// subject of the filesystem's findings.
    pub mount_point: PathBuf,
    /// The configured or automatic paths that live on it.
    pub paths: Vec<PathBuf>,
    /// Device id.
    pub device: u64,
    /// Size in bytes (what `df` shows: all blocks, reserved ones included).
    pub total_bytes: u64,
    /// Bytes in use (`blocks − free`).
    pub used_bytes: u64,
    /// Bytes an unprivileged user may still write.
    pub avail_bytes: u64,
    /// `used / (used + avail)` in percent, unrounded (`df` rounds it up).
    pub used_pct: f64,
    /// Inodes in use, in percent; `None` when the filesystem reports no inode limit.
    pub inodes_used_pct: Option<f64>,
}

/// Why a path could not be measured.
#[derive(Debug, thiserror::Error)]
#[error("cannot measure {}: {source}", path.display())]
pub struct MeasureError {
    /// The path.
    pub path: PathBuf,
    /// The cause.
    #[source]
    pub source: std::io::Error,
}

/// Measures the filesystems holding `paths`, one [`Usage`] per device, in the order of their
/// first path. A path that does not exist is an error for that path only.
#[must_use]
pub fn measure(paths: &[PathBuf]) -> (Vec<Usage>, Vec<MeasureError>) {
    let mut by_device: BTreeMap<u64, usize> = BTreeMap::new();
    let mut usages: Vec<Usage> = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        match measure_one(path) {
            Ok(usage) => match by_device.get(&usage.device) {
                Some(&idx) => usages[idx].paths.push(path.clone()),
                None => {
                    by_device.insert(usage.device, usages.len());
                    usages.push(usage);
                }
            },
            Err(source) => errors.push(MeasureError {
                path: path.clone(),
                source,
            }),
        }
    }
    (usages, errors)
}

fn measure_one(path: &Path) -> std::io::Result<Usage> {
    let canonical = path.canonicalize()?;
    let device = std::fs::metadata(&canonical)?.dev();
    let stat = nix::sys::statvfs::statvfs(&canonical).map_err(std::io::Error::from)?;
    let fragment = stat.fragment_size();
    let blocks = stat.blocks();
    let free = stat.blocks_free();
    let avail = stat.blocks_available();
    let used = blocks.saturating_sub(free);
    let used_pct = if used + avail == 0 {
        0.0
    } else {
        used as f64 * 100.0 / (used + avail) as f64
    };
    let files = stat.files();
    let files_free = stat.files_free();
    let inodes_used_pct =
        (files > 0).then(|| files.saturating_sub(files_free) as f64 * 100.0 / files as f64);
    Ok(Usage {
        mount_point: mount_point(&canonical, device),
        paths: vec![path.to_owned()],
        device,
        total_bytes: blocks * fragment,
        used_bytes: used * fragment,
        avail_bytes: avail * fragment,
        used_pct,
        inodes_used_pct,
    })
}

/// How long start-up waits for Redis to say its `dir`.
const REDIS_DIR_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Whether a Redis URL names a server on this host: `127.0.0.1` (any of 127/8), `localhost`,
/// `::1`, or a unix socket (`unix://`, `redis+unix://`). Cluster and Sentinel setups are never
/// local here (their data lives on several hosts).
#[must_use]
pub fn redis_is_local(redis: &crate::queue::RedisSettings) -> bool {
    use secrecy::ExposeSecret as _;
    if !redis.cluster_urls.is_empty() {
        return false;
    }
    let Ok(url) = url::Url::parse(redis.url.expose_secret()) else {
        return false;
    };
    match url.scheme() {
        "unix" | "redis+unix" => true,
        "redis" | "rediss" => match url.host() {
            // A non-special scheme keeps an IPv4 address as an opaque host: parse it here.
            Some(url::Host::Domain(domain)) => {
                domain.eq_ignore_ascii_case("localhost")
                    || domain
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback())
            }
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        },
        _ => false,
    }
}

/// Asks a local Redis for `CONFIG GET dir` once (a worker daemon's start-up) and records it in
/// `settings.disk.redis_dir`, so `system.disk` checks the filesystem Redis persists to without
/// handlers ever talking to Redis. A remote Redis, one that does not answer within a few
/// seconds, or one where CONFIG is renamed or denied adds nothing (said at debug/info level).
pub async fn discover_redis_dir(mut settings: crate::config::Settings) -> crate::config::Settings {
    if !redis_is_local(&settings.redis) {
        return settings;
    }
    let asked = async {
        let conn = crate::queue::RedisConn::open(&settings.redis.target())?;
        let pair: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("dir")
            .query_async(&mut conn.clone())
            .await?;
        Ok::<_, redis::RedisError>(pair.get(1).cloned())
    };
    match tokio::time::timeout(REDIS_DIR_TIMEOUT, asked).await {
        Ok(Ok(Some(dir))) if Path::new(&dir).is_absolute() => {
            tracing::debug!(redis_dir = %dir, "system.disk will check the Redis data directory");
            settings.disk.redis_dir = Some(PathBuf::from(dir));
        }
        Ok(Ok(_)) => {}
        Ok(Err(error)) => {
            tracing::info!(%error, "redis did not say its dir: system.disk will not check it");
        }
        Err(_) => tracing::info!(
            "redis did not say its dir within {REDIS_DIR_TIMEOUT:?}: system.disk will not check it"
        ),
    }
    settings
}

/// The highest ancestor of `path` on `device`.
fn mount_point(path: &Path, device: u64) -> PathBuf {
    let mut mount = path.to_owned();
    for ancestor in path.ancestors().skip(1) {
        match std::fs::metadata(ancestor) {
            Ok(metadata) if metadata.dev() == device => mount = ancestor.to_owned(),
            _ => break,
        }
    }
    mount
}

/// `used_pct` rounded up, as `df` prints it.
#[must_use]
pub fn df_pct(used_pct: f64) -> u64 {
    used_pct.ceil() as u64
}

/// The level of a value given the previous level (the open finding), with hysteresis: a level
/// holds until the value falls `hysteresis` points below its threshold.
#[must_use]
pub fn level(
    value: f64,
    previous: Option<Severity>,
    warn: f64,
    critical: f64,
    hysteresis: f64,
) -> Severity {
    let was_critical = previous == Some(Severity::Critical);
    let was_warn = matches!(previous, Some(Severity::Warn | Severity::Critical));
    if value >= critical || (was_critical && value > critical - hysteresis) {
        Severity::Critical
    } else if value >= warn || (was_warn && value > warn - hysteresis) {
        Severity::Warn
    } else {
        Severity::Ok
    }
}

/// One stored measurement of a filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// When it was taken.
    pub sampled_at: DateTime<Utc>,
    /// Bytes used.
    pub used_bytes: u64,
    /// Bytes available.
    pub avail_bytes: u64,
}

/// When the filesystem fills up at the recent rate: a least-squares line through `samples`
/// (used bytes over time); `None` when usage is not growing or there are fewer than three
/// samples over at least ten minutes.
#[must_use]
pub fn predicted_full_at(samples: &[Sample]) -> Option<DateTime<Utc>> {
    let first = samples.iter().map(|s| s.sampled_at).min()?;
    let last = samples.iter().max_by_key(|s| s.sampled_at)?;
    if samples.len() < 3 || (last.sampled_at - first).num_seconds() < 600 {
        return None;
    }
    let points: Vec<(f64, f64)> = samples
        .iter()
        .map(|s| {
            (
                (s.sampled_at - first).num_milliseconds() as f64 / 1000.0,
                s.used_bytes as f64,
            )
        })
        .collect();
    let n = points.len() as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let covariance: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    let variance: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    if variance <= 0.0 {
        return None;
    }
    let bytes_per_second = covariance / variance;
    if bytes_per_second <= 0.0 {
        return None;
    }
    let seconds_left = last.avail_bytes as f64 / bytes_per_second;
    let seconds_left = seconds_left.min(3.2e8) as i64;
    Some(last.sampled_at + chrono::Duration::seconds(seconds_left))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_level_holds_until_the_value_is_hysteresis_points_below_its_threshold() {
        assert_eq!(level(79.0, None, 80.0, 90.0, 5.0), Severity::Ok);
        assert_eq!(level(80.0, None, 80.0, 90.0, 5.0), Severity::Warn);
        assert_eq!(
            level(77.0, Some(Severity::Warn), 80.0, 90.0, 5.0),
            Severity::Warn
        );
        assert_eq!(
            level(75.0, Some(Severity::Warn), 80.0, 90.0, 5.0),
            Severity::Ok
        );
        assert_eq!(
            level(88.0, Some(Severity::Critical), 80.0, 90.0, 5.0),
            Severity::Critical
        );
        assert_eq!(
            level(85.0, Some(Severity::Critical), 80.0, 90.0, 5.0),
            Severity::Warn
        );
    }

    #[test]
    fn only_a_redis_on_this_host_is_local() {
        let redis = |url: &str| crate::queue::RedisSettings {
            url: secrecy::SecretString::from(url.to_owned()),
            ..crate::queue::RedisSettings::default()
        };
        for url in [
            "redis://127.0.0.1:6379/",
            "redis://localhost/0",
            "rediss://[::1]:6380",
            "redis+unix:///run/redis.sock",
            "unix:///run/redis.sock",
        ] {
            assert!(redis_is_local(&redis(url)), "{url}");
        }
        for url in [
            "redis://10.0.0.5:6379/",
            "redis://cache.example:6379",
            "redis+sentinel://127.0.0.1:26379/mymaster",
            "not a url",
        ] {
            assert!(!redis_is_local(&redis(url)), "{url}");
        }
        let cluster = crate::queue::RedisSettings {
            cluster_urls: vec![secrecy::SecretString::from(
                "redis://127.0.0.1:7000".to_owned(),
            )],
            ..redis("redis://127.0.0.1:6379")
        };
        assert!(!redis_is_local(&cluster));
    }

    #[test]
    fn a_steady_growth_predicts_when_the_disk_is_full() {
        let start = DateTime::parse_from_rfc3339("2026-11-29T00:00:00Z")
            .expect("a date")
            .to_utc();
        // 1 GiB per hour used, 10 GiB left at the last sample: full 10 h later.
        let samples: Vec<Sample> = (0..7)
            .map(|hour| Sample {
                sampled_at: start + chrono::Duration::hours(hour),
                used_bytes: (hour as u64) << 30,
                avail_bytes: (16 - hour as u64) << 30,
            })
            .collect();
        let full = predicted_full_at(&samples).expect("a prediction");
        assert_eq!(full, start + chrono::Duration::hours(16));
        let flat: Vec<Sample> = samples
            .iter()
            .map(|s| Sample {
                used_bytes: 5,
                ..*s
            })
            .collect();
        assert_eq!(predicted_full_at(&flat), None);
    }
}
