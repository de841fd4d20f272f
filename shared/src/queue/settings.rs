//! The queue's configuration sections, owned here beside the code they configure: `[redis]`
//! (where the queues live), `[queues.NAME]` (each queue's timing policy) and `[kinds."KIND"]`
//! (per-kind overrides of the retry policy), and how they become queue handles.
//!
//! `config` composes these into `Settings` and layers `REDIS_URL` and `UPKEEP__…` variables
//! over the file; nothing here imports `config`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize};

use super::{QueueOptions, RedisTarget, SentinelUrl};
use crate::job::{JobKind, QueueName};
use crate::settings::{Problems, Section, check_min_duration, key_segment, redact_url};

/// The `[redis]` section.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisSettings {
    /// `redis://` or `rediss://` URL of one server, or `redis+sentinel://` URL of a
    /// Sentinel-managed master (format in [`SentinelUrl`]). Defaults to
    /// `redis://127.0.0.1:6379/`; `REDIS_URL` overrides it.
    #[serde(serialize_with = "crate::settings::redacted_url")]
    pub url: SecretString,
    /// Initial nodes of a Redis Cluster. When non-empty, cluster mode is used and `url` is
    /// ignored. Defaults to empty. Written as an array, or (from the environment) as one
    /// comma-separated string.
    #[serde(
        deserialize_with = "url_list",
        serialize_with = "crate::settings::redacted_url"
    )]
    pub cluster_urls: Vec<SecretString>,
    /// Prefix of every Redis key. Defaults to `upkeep`.
    pub key_prefix: KeyPrefix,
    /// How long to wait for a Redis reply before the call fails. Defaults to 5s.
    #[serde(with = "crate::settings::duration")]
    pub response_timeout: Duration,
}

/// A validated Redis key prefix: 1 to 64 characters of `[A-Za-z0-9_.-]`.
///
/// It never contains `{`, `}` or `:`, so it cannot break the hash tags or key separators that
/// `queue` builds around it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct KeyPrefix(String);

/// One queue's policy, the `[queues.NAME]` section.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueSettings {
    /// Jobs a worker process runs at once on this queue, 1 to 10000. Defaults to 16.
    pub concurrency: u32,
    /// How long a claimed job stays leased to its worker without renewal, at least 1s.
    /// Defaults to 30s.
    #[serde(with = "crate::settings::duration")]
    pub lease: Duration,
    /// How long finished jobs stay in Redis. Defaults to 1h.
    #[serde(with = "crate::settings::duration")]
    pub retention: Duration,
    /// How long dead letters stay in Redis. Defaults to 7d.
    #[serde(with = "crate::settings::duration")]
    pub dead_retention: Duration,
    /// Attempts before a job is dead, 1 to 100. Defaults to 3.
    pub max_attempts: u32,
    /// First retry delay; doubles per attempt. Defaults to 1s.
    #[serde(with = "crate::settings::duration")]
    pub backoff_base: Duration,
    /// Upper bound of the retry delay. Defaults to 5m.
    #[serde(with = "crate::settings::duration")]
    pub backoff_max: Duration,
    /// Jobs moved per Redis script call (claims, promotions, expiries), 1 to 1000. A worker of
    /// short jobs (under 10 ms) also leases up to two batches ahead of its free slots. Defaults
    /// to 128.
    pub batch_size: u32,
    /// Per-attempt handler timeout. Defaults to 1h.
    #[serde(with = "crate::settings::duration")]
    pub timeout: Duration,
    /// An attempt that runs at least this long is logged at info with its job id, whatever its
    /// result (a successful attempt is otherwise logged at debug only). At least 1ms.
    /// Defaults to 10s.
    #[serde(with = "crate::settings::duration")]
    pub slow_attempt: Duration,
    /// How often each worker logs its summary of this queue at info (attempts processed,
    /// failed, retried, dead, skipped, and duration quantiles over the interval); nothing is
    /// logged for an interval without attempts. At least 1s. Defaults to 60s.
    #[serde(with = "crate::settings::duration")]
    pub summary_interval: Duration,
}

/// Per-kind overrides of the queue policy, the `[kinds."KIND"]` section. `None` keeps the
/// queue's value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KindSettings {
    /// Overrides [`QueueSettings::max_attempts`] (1 to 100).
    pub max_attempts: Option<u32>,
    /// Overrides [`QueueSettings::timeout`].
    #[serde(with = "crate::settings::duration::option")]
    pub timeout: Option<Duration>,
    /// Overrides [`QueueSettings::backoff_base`].
    #[serde(with = "crate::settings::duration::option")]
    pub backoff_base: Option<Duration>,
    /// Overrides [`QueueSettings::backoff_max`].
    #[serde(with = "crate::settings::duration::option")]
    pub backoff_max: Option<Duration>,
}

/// The effective retry and timeout policy of one kind on one queue (see
/// `Settings::job_policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobPolicy {
    /// Attempts before the job is dead.
    pub max_attempts: u32,
    /// Per-attempt handler timeout.
    pub timeout: Duration,
    /// First retry delay.
    pub backoff_base: Duration,
    /// Upper bound of the retry delay.
    pub backoff_max: Duration,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: SecretString::from("redis://127.0.0.1:6379/"),
            cluster_urls: Vec::new(),
            key_prefix: KeyPrefix("upkeep".to_owned()),
            response_timeout: Duration::from_secs(5),
        }
    }
}

impl Section for RedisSettings {
    const SECRET_KEYS: &'static [&'static str] = &["url", "cluster_urls"];

    fn validate(&self, path: &str, problems: &mut Problems) {
        if let Err(message) = check_redis_url(self.url.expose_secret(), true) {
            problems.push(format!("{path}.url"), message);
        }
        for (idx, url) in self.cluster_urls.iter().enumerate() {
            if let Err(message) = check_redis_url(url.expose_secret(), false) {
                problems.push(format!("{path}.cluster_urls[{idx}]"), message);
            }
        }
        check_min_duration(
            problems,
            format!("{path}.response_timeout"),
            self.response_timeout,
            Duration::from_millis(1),
        );
    }
}

impl RedisSettings {
    /// Whether Redis Cluster mode is configured (`cluster_urls` is non-empty).
    #[must_use]
    pub fn is_cluster(&self) -> bool {
        !self.cluster_urls.is_empty()
    }

    /// A client for the single server at `url`. Queue code connects through
    /// [`RedisSettings::target`] instead, which also understands `redis+sentinel://`.
    ///
    /// # Errors
    /// When the URL is invalid (never the case after `Settings::load`) or a
    /// `redis+sentinel://` URL.
    pub fn client(&self) -> redis::RedisResult<redis::Client> {
        redis::Client::open(self.url.expose_secret())
    }

    /// A cluster client for `cluster_urls`, with `response_timeout` applied.
    ///
    /// # Errors
    /// When a URL is invalid or the list is empty.
    pub fn cluster_client(&self) -> redis::RedisResult<redis::cluster::ClusterClient> {
        let nodes: Vec<&str> = self
            .cluster_urls
            .iter()
            .map(ExposeSecret::expose_secret)
            .collect();
        redis::cluster::ClusterClient::builder(nodes)
            .response_timeout(self.response_timeout)
            .build()
    }

    /// Async connection options with `response_timeout` applied.
    #[must_use]
    pub fn connection_config(&self) -> redis::AsyncConnectionConfig {
        redis::AsyncConnectionConfig::new().set_response_timeout(Some(self.response_timeout))
    }

    /// The connection target these settings describe.
    #[must_use]
    pub fn target(&self) -> RedisTarget {
        RedisTarget {
            url: self.url.expose_secret().to_owned(),
            cluster_urls: self
                .cluster_urls
                .iter()
                .map(|u| u.expose_secret().to_owned())
                .collect(),
            response_timeout: self.response_timeout,
        }
    }

    /// `url`, or the cluster nodes, with credentials hidden, for logs.
    #[must_use]
    pub fn redacted(&self) -> String {
        if self.cluster_urls.is_empty() {
            redact_url(self.url.expose_secret())
        } else {
            let nodes: Vec<String> = self
                .cluster_urls
                .iter()
                .map(|url| redact_url(url.expose_secret()))
                .collect();
            format!("cluster[{}]", nodes.join(","))
        }
    }
}

/// Reads `cluster_urls` as an array of URLs or as one comma-separated string.
fn url_list<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<SecretString>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        List(Vec<String>),
        Text(String),
    }
    let raw = Raw::deserialize(deserializer).map_err(|_| {
        serde::de::Error::custom("expected an array of URLs or one comma-separated string")
    })?;
    let urls = match raw {
        Raw::List(urls) => urls,
        Raw::Text(text) => text
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(str::to_owned)
            .collect(),
    };
    Ok(urls.into_iter().map(SecretString::from).collect())
}

/// Checks a Redis URL; `redis+sentinel://` is accepted only where `sentinel_allowed` (the
/// `redis.url` key, not cluster seed nodes).
fn check_redis_url(url: &str, sentinel_allowed: bool) -> Result<(), String> {
    let shown = redact_url(url);
    if sentinel_allowed && SentinelUrl::has_scheme(url) {
        // The parser's messages never contain credentials.
        return SentinelUrl::parse(url)
            .map(|_| ())
            .map_err(|e| format!("not a usable redis+sentinel:// URL: {shown:?}: {e}"));
    }
    match url::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "redis" | "rediss") && parsed.has_host() => Ok(()),
        _ if sentinel_allowed => Err(format!(
            "not a redis://, rediss:// or redis+sentinel:// URL: {shown:?}"
        )),
        _ => Err(format!("not a redis:// or rediss:// URL: {shown:?}")),
    }
}

impl KeyPrefix {
    /// Validates a key prefix.
    ///
    /// # Errors
    /// When it is empty, longer than 64 characters, or has a character outside
    /// `[A-Za-z0-9_.-]`; the message names the value.
    pub fn parse(prefix: &str) -> Result<Self, String> {
        let valid = !prefix.is_empty()
            && prefix.len() <= 64
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if valid {
            Ok(Self(prefix.to_owned()))
        } else {
            Err(format!(
                "must be 1-64 characters of [A-Za-z0-9_.-] (no braces or colons), got {prefix:?}"
            ))
        }
    }

    /// The prefix as text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for KeyPrefix {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        Self::parse(&text)
    }
}

impl From<KeyPrefix> for String {
    fn from(prefix: KeyPrefix) -> Self {
        prefix.0
    }
}

impl fmt::Display for KeyPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            concurrency: 16,
            lease: Duration::from_secs(30),
            retention: Duration::from_secs(3600),
            dead_retention: Duration::from_secs(7 * 24 * 3600),
            max_attempts: 3,
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            batch_size: 128,
            timeout: Duration::from_secs(3600),
            slow_attempt: Duration::from_secs(10),
            summary_interval: Duration::from_secs(60),
        }
    }
}

impl QueueSettings {
    /// The queue's timing options.
    #[must_use]
    pub fn queue_options(&self) -> QueueOptions {
        QueueOptions {
            lease: self.lease,
            retention: self.retention,
            dead_retention: self.dead_retention,
            maintenance_limit: (self.batch_size as usize).max(200),
            ..QueueOptions::default()
        }
    }

    fn check(&self, path: &str, problems: &mut Problems) {
        let ms = Duration::from_millis(1);
        problems.check_range(format!("{path}.concurrency"), self.concurrency, 1, 10_000);
        check_min_duration(
            problems,
            format!("{path}.lease"),
            self.lease,
            Duration::from_secs(1),
        );
        problems.check_range(format!("{path}.max_attempts"), self.max_attempts, 1, 100);
        check_min_duration(
            problems,
            format!("{path}.backoff_base"),
            self.backoff_base,
            ms,
        );
        check_min_duration(
            problems,
            format!("{path}.backoff_max"),
            self.backoff_max,
            ms,
        );
        if self.backoff_max < self.backoff_base {
            problems.push(
                format!("{path}.backoff_max"),
                format!(
                    "must be at least backoff_base ({}), got {}",
                    crate::settings::duration::format(self.backoff_base),
                    crate::settings::duration::format(self.backoff_max)
                ),
            );
        }
        problems.check_range(format!("{path}.batch_size"), self.batch_size, 1, 1000);
        check_min_duration(problems, format!("{path}.timeout"), self.timeout, ms);
        check_min_duration(
            problems,
            format!("{path}.slow_attempt"),
            self.slow_attempt,
            ms,
        );
        check_min_duration(
            problems,
            format!("{path}.summary_interval"),
            self.summary_interval,
            Duration::from_secs(1),
        );
    }
}

/// `[queues]`: one policy per queue name, as written. `config` adds the built-in queues of
/// [`crate::job::QUEUES`] the file does not mention, with defaults.
impl Section for BTreeMap<String, QueueSettings> {
    fn validate(&self, path: &str, problems: &mut Problems) {
        for (name, queue) in self {
            let at = format!("{path}.{}", key_segment(name));
            match QueueName::parse(name) {
                Ok(_) => queue.check(&at, problems),
                Err(e) => problems.push(at, e.to_string()),
            }
        }
    }
}

/// `[kinds]`: per-kind overrides, keyed by catalog kind (`system.ping`).
impl Section for BTreeMap<String, KindSettings> {
    fn validate(&self, path: &str, problems: &mut Problems) {
        let ms = Duration::from_millis(1);
        for (name, kind) in self {
            let at = format!("{path}.{}", key_segment(name));
            if let Err(e) = JobKind::parse(name) {
                problems.push(at, e.to_string());
                continue;
            }
            if let Some(max_attempts) = kind.max_attempts {
                problems.check_range(format!("{at}.max_attempts"), max_attempts, 1, 100);
            }
            for (key, value) in [
                ("timeout", kind.timeout),
                ("backoff_base", kind.backoff_base),
                ("backoff_max", kind.backoff_max),
            ] {
                if let Some(value) = value {
                    check_min_duration(problems, format!("{at}.{key}"), value, ms);
                }
            }
        }
    }
}

/// Every queue of [`crate::job::QUEUES`] with defaults, overlaid by the configured ones (whose
/// names [`Section::validate`] checked; invalid names are dropped).
#[must_use]
pub fn with_builtin_queues(
    configured: BTreeMap<String, QueueSettings>,
) -> BTreeMap<QueueName, QueueSettings> {
    let mut queues: BTreeMap<QueueName, QueueSettings> = crate::job::QUEUES
        .iter()
        .filter_map(|name| QueueName::parse(name).ok())
        .map(|name| (name, QueueSettings::default()))
        .collect();
    for (name, queue) in configured {
        if let Ok(name) = QueueName::parse(&name) {
            queues.insert(name, queue);
        }
    }
    queues
}
