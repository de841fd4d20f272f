//! The Redis connection every queue operation goes through: one standalone server (optionally
//! TLS, `rediss://`), a Sentinel-managed master (`redis+sentinel://`, see [`SentinelUrl`]) or a
//! Redis Cluster, behind one type.
//!
//! Connections are lazy and self-healing: building one never fails because Redis is down, and a
//! broken connection is re-established on the next command (through the sentinels, for a
//! sentinel URL, so a failover is followed). Errors still surface per command, so callers decide
//! whether to retry (the worker loops do, with backoff).

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use tokio::sync::OnceCell;

use super::sentinel::{SentinelConn, SentinelUrl};

/// Where Redis is and how patient to be with it.
#[derive(Clone)]
pub struct RedisTarget {
    /// `redis://` or `rediss://` URL of a standalone server, or `redis+sentinel://` URL of a
    /// Sentinel-managed master (ignored in cluster mode).
    pub url: String,
    /// Seed nodes of a Redis Cluster; non-empty selects cluster mode.
    pub cluster_urls: Vec<String>,
    /// How long one command may take before it fails as a timeout.
    pub response_timeout: Duration,
}

impl std::fmt::Debug for RedisTarget {
    // URLs may carry passwords: never print them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTarget")
            .field("cluster", &!self.cluster_urls.is_empty())
            .field("response_timeout", &self.response_timeout)
            .finish_non_exhaustive()
    }
}

impl RedisTarget {
    /// A standalone target with a 5 s response timeout.
    #[must_use]
    pub fn standalone(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            cluster_urls: Vec::new(),
            response_timeout: Duration::from_secs(5),
        }
    }
}

/// A clonable, multiplexed connection to a standalone Redis, a Sentinel-managed master or a
/// Redis Cluster.
#[derive(Clone)]
pub struct RedisConn {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Standalone(Arc<Standalone>),
    // Follows the master the sentinels name; looks it up on first use.
    Sentinel(Arc<SentinelConn>),
    // The cluster client connects on first use, so a worker can start while the cluster is down.
    Cluster(Arc<(ClusterClient, OnceCell<ClusterConnection>)>),
}

impl std::fmt::Debug for RedisConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = match self.inner {
            Inner::Standalone(_) => "standalone",
            Inner::Sentinel(_) => "sentinel",
            Inner::Cluster(_) => "cluster",
        };
        f.debug_struct("RedisConn").field("mode", &mode).finish()
    }
}

impl RedisConn {
    /// A connection for ordinary commands, with the target's response timeout.
    ///
    /// # Errors
    /// When a URL does not parse. Redis being unreachable is not an error here.
    pub fn open(target: &RedisTarget) -> redis::RedisResult<Self> {
        Self::build(target, Some(target.response_timeout))
    }

    /// A connection for blocking waits (BLPOP): it must not share a socket with other
    /// commands, and its timeout must exceed the longest wait, so it gets none of its own.
    ///
    /// # Errors
    /// When a URL does not parse.
    pub fn open_blocking(target: &RedisTarget) -> redis::RedisResult<Self> {
        Self::build(target, None)
    }

    fn build(target: &RedisTarget, timeout: Option<Duration>) -> redis::RedisResult<Self> {
        if target.cluster_urls.is_empty() && SentinelUrl::has_scheme(&target.url) {
            let url = SentinelUrl::parse(&target.url).map_err(|error| {
                // The parser's messages never contain credentials.
                redis::RedisError::from((
                    redis::ErrorKind::InvalidClientConfig,
                    "invalid redis+sentinel:// URL",
                    error.to_string(),
                ))
            })?;
            Ok(Self {
                inner: Inner::Sentinel(Arc::new(SentinelConn::new(&url, timeout)?)),
            })
        } else if target.cluster_urls.is_empty() {
            let client = redis::Client::open(target.url.as_str())?;
            let config = ConnectionManagerConfig::new()
                .set_response_timeout(timeout)
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_max_delay(Duration::from_secs(2));
            let manager = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())?;
            Ok(Self {
                inner: Inner::Standalone(Arc::new(Standalone {
                    client,
                    config,
                    manager: std::sync::Mutex::new(manager),
                })),
            })
        } else {
            let mut builder = ClusterClient::builder(target.cluster_urls.clone())
                .connection_timeout(Duration::from_secs(2));
            // The blocking connection's waits are bounded by the caller (BLPOP timeout).
            builder = builder.response_timeout(timeout.unwrap_or(Duration::from_secs(60)));
            let client = builder.build()?;
            Ok(Self {
                inner: Inner::Cluster(Arc::new((client, OnceCell::new()))),
            })
        }
    }

    /// Drops the socket under this connection (and every clone of it) and opens a fresh one on
    /// the next command. For a socket that stopped answering without being closed (a NAT or
    /// firewall that forgot the connection): nothing else would ever notice it is dead.
    /// Cluster connections manage their own sockets; this does nothing for them.
    pub fn reset(&self) {
        match &self.inner {
            Inner::Standalone(standalone) => standalone.reset(),
            Inner::Sentinel(sentinel) => sentinel.reset(),
            Inner::Cluster(_) => {}
        }
    }

    /// Whether this connection talks to a Redis Cluster.
    #[must_use]
    pub fn is_cluster(&self) -> bool {
        matches!(self.inner, Inner::Cluster(_))
    }
}

/// A standalone server's connection manager, replaced when a command times out: the manager
/// reconnects by itself after a connection error, but a timeout leaves it on the same socket,
/// and a socket that went silent without being closed would then time out every command
/// until the kernel gives up on it (about 15 minutes).
struct Standalone {
    client: redis::Client,
    config: ConnectionManagerConfig,
    manager: std::sync::Mutex<ConnectionManager>,
}

impl Standalone {
    fn current(&self) -> ConnectionManager {
        self.manager
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn reset(&self) {
        // Building a lazy manager does no IO; it fails only on a bad URL, which `build` has
        // already ruled out.
        if let Ok(fresh) =
            ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone())
        {
            *self
                .manager
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
        }
    }

    fn observe<T>(&self, result: &redis::RedisResult<T>) {
        if let Err(error) = result
            && error.is_timeout()
        {
            tracing::debug!(error = %error, "redis command timed out; reconnecting");
            self.reset();
        }
    }
}

async fn cluster_conn<'a>(
    client: &ClusterClient,
    cell: &'a OnceCell<ClusterConnection>,
) -> redis::RedisResult<&'a ClusterConnection> {
    cell.get_or_try_init(|| client.get_async_connection()).await
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.inner {
            Inner::Standalone(standalone) => Box::pin(async move {
                let result = standalone.current().req_packed_command(cmd).await;
                standalone.observe(&result);
                result
            }),
            Inner::Sentinel(sentinel) => sentinel.req_packed_command(cmd),
            Inner::Cluster(cluster) => Box::pin(async move {
                let mut conn = cluster_conn(&cluster.0, &cluster.1).await?.clone();
                conn.req_packed_command(cmd).await
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.inner {
            Inner::Standalone(standalone) => Box::pin(async move {
                let result = standalone
                    .current()
                    .req_packed_commands(pipeline, offset, count)
                    .await;
                standalone.observe(&result);
                result
            }),
            Inner::Sentinel(sentinel) => sentinel.req_packed_commands(pipeline, offset, count),
            Inner::Cluster(cluster) => Box::pin(async move {
                let mut conn = cluster_conn(&cluster.0, &cluster.1).await?.clone();
                conn.req_packed_commands(pipeline, offset, count).await
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.inner {
            Inner::Standalone(standalone) => standalone.current().get_db(),
            Inner::Sentinel(sentinel) => sentinel.db(),
            Inner::Cluster(_) => 0,
        }
    }
}
