//! `upkeepctl doctor`: a deployment checked from the operator's seat, one [`Check`] per fact,
//! each with a fix hint when it is not right.
//!
//! It only reads (plus one temporary file in the backup directory, removed at once) and never
//! fails as a whole: every dependency that does not answer is a failed check naming it, and
//! the checks that need it are skipped with a line saying so. SQL goes through `store`.

use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use secrecy::ExposeSecret as _;

use crate::config::Settings;
use crate::queue::{EvictionPolicy, RedisConn, check_eviction_policy};
use crate::settings::redact_url;
use crate::store::schema;

/// How long each probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// The largest clock difference between this host, Redis and Postgres taken as fine: leases,
/// tick times and the ledger's timestamps are compared across machines.
const MAX_SKEW: Duration = Duration::from_secs(1);
/// Below this share of free space the backup directory is a warning.
const MIN_FREE_PCT: f64 = 10.0;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// As it should be.
    Ok,
    /// Works, but deserves a look (does not fail the doctor).
    Warn,
    /// Wrong: the doctor exits non-zero.
    Fail,
    /// Not checked because what it needs failed, or nothing is configured.
    Skip,
}

/// One line of the doctor's report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    /// Stable name, e.g. `redis.eviction_policy` or `backups.target[main]`.
    pub name: String,
    /// The outcome.
    pub verdict: Verdict,
    /// What was found.
    pub detail: String,
    /// What to do about it, when it is not ok.
    pub hint: Option<String>,
}

impl Check {
    fn new(name: impl Into<String>, verdict: Verdict, detail: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            verdict,
            detail: detail.into(),
            hint: None,
        }
    }

    fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// Runs every check against the deployment `settings` describe.
pub async fn run_checks(settings: &Settings) -> Vec<Check> {
    let mut checks = Vec::new();
    let redis_time = check_redis(settings, &mut checks).await;
    let postgres_time = check_postgres(settings, &mut checks).await;
    check_targets(settings, &mut checks).await;
    check_backup_directory(settings, &mut checks);
    check_token_endpoints(settings, &mut checks).await;
    checks.push(clock_skew(redis_time, postgres_time));
    checks
}

/// Whether any check failed.
#[must_use]
pub fn any_failed(checks: &[Check]) -> bool {
    checks.iter().any(|c| c.verdict == Verdict::Fail)
}

/// A time read from a server, corrected to the middle of its round trip and re-based to now:
/// the server's clock minus this host's, at the same instant.
fn offset_from_host(
    server: DateTime<Utc>,
    sent: Instant,
    sent_at: DateTime<Utc>,
) -> chrono::TimeDelta {
    let round_trip = sent.elapsed();
    let host_mid = sent_at + chrono::TimeDelta::from_std(round_trip / 2).unwrap_or_default();
    server - host_mid
}

async fn check_redis(settings: &Settings, checks: &mut Vec<Check>) -> Option<chrono::TimeDelta> {
    let target = settings.redis.target();
    let shown = if settings.redis.cluster_urls.is_empty() {
        redact_url(settings.redis.url.expose_secret())
    } else {
        format!(
            "cluster of {} seed nodes",
            settings.redis.cluster_urls.len()
        )
    };
    let conn = match RedisConn::open(&target) {
        Ok(conn) => conn,
        Err(error) => {
            checks.push(
                Check::new(
                    "redis.reachable",
                    Verdict::Fail,
                    format!("{shown}: {error}"),
                )
                .hint("fix REDIS_URL / [redis] url"),
            );
            return None;
        }
    };
    let mut probe = conn.clone();
    let ping = redis::cmd("PING");
    let started = Instant::now();
    match tokio::time::timeout(PROBE_TIMEOUT, ping.query_async::<String>(&mut probe)).await {
        Ok(Ok(_)) => checks.push(Check::new(
            "redis.reachable",
            Verdict::Ok,
            format!(
                "{shown} answered PING in {:.1} ms",
                started.elapsed().as_secs_f64() * 1e3
            ),
        )),
        Ok(Err(error)) => {
            checks.push(
                Check::new(
                    "redis.reachable",
                    Verdict::Fail,
                    format!("{shown}: {error}"),
                )
                .hint("start Redis or fix REDIS_URL; every daemon needs it"),
            );
            return None;
        }
        Err(_) => {
            checks.push(
                Check::new(
                    "redis.reachable",
                    Verdict::Fail,
                    format!("{shown} did not answer PING within {PROBE_TIMEOUT:?}"),
                )
                .hint("check the network path and that Redis is not paused or overloaded"),
            );
            return None;
        }
    }
    checks.push(match check_eviction_policy(&conn).await {
        EvictionPolicy::Safe { .. } => {
            Check::new("redis.eviction_policy", Verdict::Ok, "maxmemory-policy is noeviction")
        }
        EvictionPolicy::WouldEvict { policy, maxmemory } => Check::new(
            "redis.eviction_policy",
            Verdict::Fail,
            format!("maxmemory-policy is {policy} with maxmemory {maxmemory}: Redis will delete jobs when full"),
        )
        .hint("CONFIG SET maxmemory-policy noeviction, and in redis.conf"),
        EvictionPolicy::EvictsOnceLimited { policy } => Check::new(
            "redis.eviction_policy",
            Verdict::Fail,
            format!("maxmemory-policy is {policy}: jobs would be evicted once a maxmemory is set"),
        )
        .hint("CONFIG SET maxmemory-policy noeviction, and in redis.conf"),
        EvictionPolicy::Unknown(reason) => Check::new(
            "redis.eviction_policy",
            Verdict::Warn,
            format!("cannot read maxmemory-policy: {reason}"),
        )
        .hint("make sure the provider's policy is noeviction"),
    });
    checks.push(redis_persistence(&conn).await);
    let mut probe = conn.clone();
    let time = redis::cmd("TIME");
    let sent = Instant::now();
    let sent_at = Utc::now();
    match tokio::time::timeout(
        PROBE_TIMEOUT,
        time.query_async::<(String, String)>(&mut probe),
    )
    .await
    {
        Ok(Ok((seconds, micros))) => {
            let seconds: i64 = seconds.parse().unwrap_or_default();
            let micros: u32 = micros.parse().unwrap_or_default();
            DateTime::from_timestamp(seconds, micros * 1000)
                .map(|server| offset_from_host(server, sent, sent_at))
        }
        _ => None,
    }
}

/// AOF on, or RDB snapshots configured: a restart keeps the queues.
async fn redis_persistence(conn: &RedisConn) -> Check {
    let mut probe = conn.clone();
    let mut get = redis::cmd("CONFIG");
    get.arg("GET").arg("appendonly");
    let appendonly =
        tokio::time::timeout(PROBE_TIMEOUT, get.query_async::<Vec<String>>(&mut probe)).await;
    let mut get = redis::cmd("CONFIG");
    get.arg("GET").arg("save");
    let save =
        tokio::time::timeout(PROBE_TIMEOUT, get.query_async::<Vec<String>>(&mut probe)).await;
    match (appendonly, save) {
        (Ok(Ok(appendonly)), Ok(Ok(save))) => {
            let aof = appendonly.get(1).is_some_and(|v| v == "yes");
            let rdb = save.get(1).is_some_and(|v| !v.trim().is_empty());
            match (aof, rdb) {
                (true, _) => Check::new("redis.persistence", Verdict::Ok, "appendonly yes (AOF)"),
                (false, true) => Check::new(
                    "redis.persistence",
                    Verdict::Warn,
                    format!(
                        "RDB snapshots only (save {:?}): a crash loses the jobs since the last one",
                        save[1]
                    ),
                )
                .hint("CONFIG SET appendonly yes (appendfsync everysec), and in redis.conf"),
                (false, false) => Check::new(
                    "redis.persistence",
                    Verdict::Fail,
                    "no AOF and no RDB snapshots: a restart loses every queued job",
                )
                .hint("CONFIG SET appendonly yes (appendfsync everysec), and in redis.conf"),
            }
        }
        _ => Check::new(
            "redis.persistence",
            Verdict::Warn,
            "cannot read appendonly/save (CONFIG denied?)",
        )
        .hint("make sure the provider persists the data (AOF)"),
    }
}

async fn check_postgres(settings: &Settings, checks: &mut Vec<Check>) -> Option<chrono::TimeDelta> {
    let shown = redact_url(settings.database.url.expose_secret());
    let pool = match settings.database.connect_lazy() {
        Ok(pool) => pool,
        Err(error) => {
            checks.push(
                Check::new(
                    "postgres.reachable",
                    Verdict::Fail,
                    format!("{shown}: {error}"),
                )
                .hint("fix DATABASE_URL / [database] url"),
            );
            return None;
        }
    };
    let sent = Instant::now();
    let sent_at = Utc::now();
    let now = match tokio::time::timeout(PROBE_TIMEOUT, schema::server_now(&pool)).await {
        Ok(Ok(now)) => {
            checks.push(Check::new(
                "postgres.reachable",
                Verdict::Ok,
                format!(
                    "{shown} answered in {:.1} ms",
                    sent.elapsed().as_secs_f64() * 1e3
                ),
            ));
            offset_from_host(now, sent, sent_at)
        }
        Ok(Err(error)) => {
            checks.push(
                Check::new(
                    "postgres.reachable",
                    Verdict::Fail,
                    format!("{shown}: {error}"),
                )
                .hint("start Postgres or fix DATABASE_URL; every daemon needs it"),
            );
            return None;
        }
        Err(_) => {
            checks.push(
                Check::new(
                    "postgres.reachable",
                    Verdict::Fail,
                    format!("{shown} did not answer within {PROBE_TIMEOUT:?}"),
                )
                .hint("check the network path and the server's load"),
            );
            return None;
        }
    };
    checks.push(match schema::schema_state(&pool).await {
        Ok(state) => match state.problem() {
            None if state.unknown.is_empty() => Check::new(
                "postgres.schema",
                Verdict::Ok,
                format!("all {} migrations of this build applied", state.n_applied),
            ),
            None => Check::new(
                "postgres.schema",
                Verdict::Ok,
                format!(
                    "current, plus {} migration(s) of a newer release (compatible by policy)",
                    state.unknown.len()
                ),
            ),
            Some(problem) => {
                Check::new("postgres.schema", Verdict::Fail, problem).hint("upkeepctl migrate")
            }
        },
        Err(error) => Check::new("postgres.schema", Verdict::Fail, error.to_string()),
    });
    pool.close().await;
    Some(now)
}

/// Every backup and report target answers; report targets also have `pg_stat_statements`.
async fn check_targets(settings: &Settings, checks: &mut Vec<Check>) {
    let backups = settings.backups.databases.iter().map(|t| {
        (
            "backups.target",
            t.name.as_str(),
            t.url.expose_secret(),
            false,
        )
    });
    let reports = settings.reports.databases.iter().map(|t| {
        (
            "reports.target",
            t.name.as_str(),
            t.url.expose_secret(),
            true,
        )
    });
    let mut any = false;
    for (kind, name, url, needs_statements) in backups.chain(reports) {
        any = true;
        let check_name = format!("{kind}[{name}]");
        let probed = tokio::time::timeout(PROBE_TIMEOUT, schema::probe_target(url)).await;
        match probed {
            Ok(Ok(has_statements)) => {
                checks.push(Check::new(
                    &check_name,
                    Verdict::Ok,
                    format!("{} answered", redact_url(url)),
                ));
                if needs_statements {
                    checks.push(if has_statements {
                        Check::new(
                            format!("reports.pg_stat_statements[{name}]"),
                            Verdict::Ok,
                            "pg_stat_statements is installed and loaded",
                        )
                    } else {
                        Check::new(
                            format!("reports.pg_stat_statements[{name}]"),
                            Verdict::Fail,
                            "pg_stat_statements is not usable: db.slow_queries cannot report",
                        )
                        .hint("shared_preload_libraries = 'pg_stat_statements', restart, CREATE EXTENSION pg_stat_statements")
                    });
                }
            }
            Ok(Err(error)) => checks.push(
                Check::new(
                    &check_name,
                    Verdict::Fail,
                    format!("{}: {error}", redact_url(url)),
                )
                .hint("check the target's URL, that it is up, and the role's access (pg_hba.conf)"),
            ),
            Err(_) => checks.push(
                Check::new(
                    &check_name,
                    Verdict::Fail,
                    format!(
                        "{} did not answer within {PROBE_TIMEOUT:?}",
                        redact_url(url)
                    ),
                )
                .hint("check the network path to the target"),
            ),
        }
    }
    if !any {
        checks.push(Check::new(
            "targets",
            Verdict::Skip,
            "no [[backups.databases]] or [[reports.databases]] configured",
        ));
    }
}

/// The backup directory exists, takes a file, and has free space.
fn check_backup_directory(settings: &Settings, checks: &mut Vec<Check>) {
    if settings.backups.databases.is_empty() {
        checks.push(Check::new(
            "backups.directory",
            Verdict::Skip,
            "no [[backups.databases]] configured",
        ));
        return;
    }
    let dir = &settings.backups.directory;
    checks.push(match writable_with_space(dir) {
        Ok((free, total)) => {
            let free_pct = if total == 0 { 0.0 } else { free as f64 * 100.0 / total as f64 };
            let detail = format!(
                "{} is writable; {} free of {} ({free_pct:.0} %)",
                dir.display(),
                human_bytes(free),
                human_bytes(total)
            );
            if free_pct < MIN_FREE_PCT {
                Check::new("backups.directory", Verdict::Warn, detail)
                    .hint("free space or lower [backups.retention] before dumps fail")
            } else {
                Check::new("backups.directory", Verdict::Ok, detail)
            }
        }
        Err(error) => Check::new(
            "backups.directory",
            Verdict::Fail,
            format!("{}: {error}", dir.display()),
        )
        .hint("create it, owned by the user the backup worker runs as (and ReadWritePaths= under systemd)"),
    });
}

fn writable_with_space(dir: &Path) -> std::io::Result<(u64, u64)> {
    let probe = dir.join(format!(".upkeep-doctor-{}", std::process::id()));
    std::fs::write(&probe, b"doctor")?;
    std::fs::remove_file(&probe)?;
    let stats = nix::sys::statvfs::statvfs(dir).map_err(std::io::Error::from)?;
    let block = stats.fragment_size() as u64;
    Ok((
        stats.blocks_available() as u64 * block,
        stats.blocks() as u64 * block,
    ))
}

fn human_bytes(bytes: u64) -> String {
    const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
    format!("{:.1} GiB", bytes as f64 / GIB)
}

/// Every token provider's endpoint resolves and accepts a TCP connection.
async fn check_token_endpoints(settings: &Settings, checks: &mut Vec<Check>) {
    if settings.tokens.providers.is_empty() {
        checks.push(Check::new(
            "tokens.endpoints",
            Verdict::Skip,
            "no [[tokens.providers]] configured",
        ));
        return;
    }
    for provider in &settings.tokens.providers {
        let name = format!("tokens.endpoint[{}]", provider.name);
        let Some((host, port)) = url::Url::parse(&provider.token_url)
            .ok()
            .and_then(|url| Some((url.host_str()?.to_owned(), url.port_or_known_default()?)))
        else {
            checks.push(Check::new(
                &name,
                Verdict::Fail,
                format!("{:?} is not a URL with a host", provider.token_url),
            ));
            continue;
        };
        let connected = tokio::time::timeout(
            PROBE_TIMEOUT,
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await;
        checks.push(match connected {
            Ok(Ok(_)) => Check::new(
                &name,
                Verdict::Ok,
                format!("{host}:{port} accepts connections"),
            ),
            Ok(Err(error)) => Check::new(&name, Verdict::Fail, format!("{host}:{port}: {error}"))
                .hint("check DNS, the firewall and any egress proxy for the token endpoint"),
            Err(_) => Check::new(
                &name,
                Verdict::Fail,
                format!("{host}:{port} did not accept a connection within {PROBE_TIMEOUT:?}"),
            )
            .hint("check the firewall and any egress proxy for the token endpoint"),
        });
    }
}

/// This host's clock against Redis's and Postgres's (offsets already measured).
fn clock_skew(redis: Option<chrono::TimeDelta>, postgres: Option<chrono::TimeDelta>) -> Check {
    let mut parts = Vec::new();
    let mut worst = chrono::TimeDelta::zero();
    for (what, offset) in [("redis", redis), ("postgres", postgres)] {
        if let Some(offset) = offset {
            parts.push(format!("{what} {:+.3}s", offset.as_seconds_f64()));
            worst = worst.max(offset.abs());
        }
    }
    if let (Some(r), Some(p)) = (redis, postgres) {
        worst = worst.max((r - p).abs());
    }
    if parts.is_empty() {
        return Check::new(
            "clock.skew",
            Verdict::Skip,
            "neither Redis nor Postgres answered",
        );
    }
    let detail = format!("offsets from this host: {}", parts.join(", "));
    if worst.to_std().unwrap_or(Duration::MAX) > MAX_SKEW {
        Check::new("clock.skew", Verdict::Fail, detail)
            .hint("run NTP (chrony, systemd-timesyncd) on every host")
    } else {
        Check::new("clock.skew", Verdict::Ok, detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skew_above_a_second_fails_and_names_the_offsets() {
        let small = chrono::TimeDelta::milliseconds(20);
        let check = clock_skew(Some(small), Some(-small));
        assert_eq!(check.verdict, Verdict::Ok, "{check:?}");
        let check = clock_skew(Some(chrono::TimeDelta::seconds(3)), Some(small));
        assert_eq!(check.verdict, Verdict::Fail);
        assert!(check.detail.contains("redis +3.000s"), "{}", check.detail);
        assert_eq!(clock_skew(None, None).verdict, Verdict::Skip);
    }
}
