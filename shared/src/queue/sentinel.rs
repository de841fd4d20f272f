//! Sentinel-managed Redis: the `redis+sentinel://` URL and a connection that follows the
//! master through failovers.
//!
//! redis-rs finds a master through sentinels ([`redis::sentinel::Sentinel`]) but has no URL
//! scheme for it and no connection that keeps following the master, so both live here.
//! [`SentinelUrl::parse`] is the one parser of the scheme: `config` validates `redis.url` with it
//! at start, and [`RedisConn`](super::RedisConn) builds its sentinel variant from it.
//!
//! [`SentinelConn`] holds one multiplexed connection to the current master and forgets it when
//! the master may have moved, so that the next command asks the sentinels again:
//! - a command failed in a way that says so: the connection broke or timed out, or the server
//!   answered `READONLY` (a demoted master), `UNBLOCKED` (a blocked BLPOP ended by a role
//!   change), `MASTERDOWN` or `NOREPLICAS` (a master whose replica left to be promoted);
//! - a background check, at most every [`CHECK_INTERVAL`] while the connection is in use, finds
//!   that the sentinels name another master. This is what catches a `SENTINEL FAILOVER`: the
//!   old master keeps accepting writes for about ten seconds after the switch, until the
//!   sentinels demote it, and writes it takes meanwhile are lost when it resynchronises.
//!
//! It never retries a command itself: the error reaches the caller, whose loop retries with
//! backoff (the worker's fetch, settle and renew loops all do), and the retry finds the new
//! master. Commands never wait for a lookup once a master is known; only the first command
//! after a loss does, and one lookup serves everyone waiting.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::sentinel::{Sentinel, SentinelNodeConnectionInfo};
use redis::{
    AsyncConnectionConfig, Client, Cmd, ConnectionAddr, ConnectionInfo, ErrorKind,
    IntoConnectionInfo, Pipeline, RedisConnectionInfo, RedisError, RedisFuture, RedisResult,
    ServerErrorKind, Value,
};

use super::Error;

/// The URL scheme of a Sentinel-managed Redis.
pub const SENTINEL_SCHEME: &str = "redis+sentinel";

/// The port of a sentinel address that names none (Sentinel's default port).
pub const DEFAULT_SENTINEL_PORT: u16 = 26379;

/// How often a connection in use checks that the sentinels still name its master.
pub(crate) const CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// After a failed lookup, callers get its error for this long instead of asking again, so a
/// burst of failing commands does not turn into a burst of lookups.
const LOOKUP_PAUSE: Duration = Duration::from_millis(250);

/// The longest one lookup (sentinels, then the master's `ROLE`) may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

/// How long connecting to a master or a sentinel may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a sentinel may take to answer the background check.
const SENTINEL_RESPONSE_TIMEOUT: Duration = Duration::from_secs(1);

/// A parsed `redis+sentinel://` URL: where the sentinels are, which master they watch, and
/// how to authenticate.
///
/// ```text
/// redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/master-name[/db][?sentinel_username=u&sentinel_password=p]
/// ```
/// - The hosts are sentinels, asked in order; a port defaults to 26379. An IPv6 address goes
///   in brackets (`[::1]:26379`).
/// - `user` and `password` are the master's (and its replicas'): what `requirepass` or an ACL
///   user of the data nodes expects. Percent-encode `:`, `@`, `/`, `?`, `#` and `%` in them.
/// - `master-name` is the name of the sentinels' `sentinel monitor <master-name> …` line.
/// - `db` selects a database on the master. Defaults to 0.
/// - `sentinel_password` (with `sentinel_username` for an ACL user) is sent to the sentinels
///   themselves, for sentinels with `requirepass` set; without it, sentinels are asked
///   without `AUTH`, as most clients do.
///
/// Example: `redis+sentinel://:s3cret@10.0.0.1,10.0.0.2,10.0.0.3:26380/upkeep/0`.
#[derive(Clone, PartialEq, Eq)]
pub struct SentinelUrl {
    sentinels: Vec<(String, u16)>,
    master_name: String,
    db: i64,
    username: Option<String>,
    password: Option<String>,
    sentinel_username: Option<String>,
    sentinel_password: Option<String>,
}

impl SentinelUrl {
    /// Whether `url` has the `redis+sentinel` scheme (in any letter case), so that
    /// [`SentinelUrl::parse`] rather than a `redis://` parser should judge it.
    #[must_use]
    pub fn has_scheme(url: &str) -> bool {
        url.split_once("://")
            .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case(SENTINEL_SCHEME))
    }

    /// Parses a `redis+sentinel://` URL (see the type's documentation for the format).
    ///
    /// # Errors
    /// [`Error::Invalid`] saying what is wrong. The message never contains the password, the
    /// user name or the sentinel password.
    pub fn parse(url: &str) -> Result<Self, Error> {
        Self::parse_text(url).map_err(Error::Invalid)
    }

    /// The sentinels' addresses, in the order they are asked.
    #[must_use]
    pub fn sentinels(&self) -> &[(String, u16)] {
        &self.sentinels
    }

    /// The name the sentinels know the master by.
    #[must_use]
    pub fn master_name(&self) -> &str {
        &self.master_name
    }

    /// The database selected on the master.
    #[must_use]
    pub fn db(&self) -> i64 {
        self.db
    }

    /// The user name for the master, if any.
    #[must_use]
    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// Whether a password for the master is set.
    #[must_use]
    pub fn has_password(&self) -> bool {
        self.password.is_some()
    }

    /// Whether a password for the sentinels is set.
    #[must_use]
    pub fn has_sentinel_password(&self) -> bool {
        self.sentinel_password.is_some()
    }

    fn parse_text(url: &str) -> Result<Self, String> {
        let rest = match url.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case(SENTINEL_SCHEME) => rest,
            _ => return Err(format!("expected the scheme {SENTINEL_SCHEME}://")),
        };
        // The host list ends at the first '/', '?' or '#'. An '@' after that point means a user
        // name or password with one of those characters left unencoded.
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        if tail.contains('@') {
            return Err(
                "'@' after the host list: percent-encode '/', '?', '#' and '@' in the user name \
                 and password"
                    .to_owned(),
            );
        }
        let (userinfo, hosts) = match authority.rfind('@') {
            Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(userinfo) => {
                let (user, password) = match userinfo.split_once(':') {
                    Some((user, password)) => (user, Some(password)),
                    None => (userinfo, None),
                };
                let password = match password {
                    Some(password) => non_empty(percent_decode(password, "the password")?),
                    None => None,
                };
                (non_empty(percent_decode(user, "the user name")?), password)
            }
        };
        if hosts.is_empty() {
            return Err("no sentinel address before the master name".to_owned());
        }
        let sentinels = hosts
            .split(',')
            .map(parse_sentinel_address)
            .collect::<Result<Vec<_>, _>>()?;

        if tail.contains('#') {
            return Err("a fragment ('#…') is not supported".to_owned());
        }
        let (path, query) = match tail.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (tail, None),
        };
        let mut segments = path.strip_prefix('/').unwrap_or(path).split('/');
        let master_name = percent_decode(segments.next().unwrap_or(""), "the master name")?;
        if master_name.is_empty() {
            return Err("no master name: the path must be /<master-name>[/<db>]".to_owned());
        }
        if master_name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(format!(
                "bad master name {master_name:?}: spaces and control characters are not allowed"
            ));
        }
        let db = match segments.next() {
            None | Some("") => 0,
            Some(text) => text
                .parse::<i64>()
                .ok()
                .filter(|db| *db >= 0)
                .ok_or_else(|| format!("bad db {text:?}: expected a non-negative integer"))?,
        };
        if let Some(extra) = segments.find(|segment| !segment.is_empty()) {
            return Err(format!(
                "unexpected path segment {extra:?}: the path must be /<master-name>[/<db>]"
            ));
        }

        let mut sentinel_username = None;
        let mut sentinel_password = None;
        for (name, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let slot = match name.as_ref() {
                "sentinel_username" => &mut sentinel_username,
                "sentinel_password" => &mut sentinel_password,
                other => {
                    return Err(format!(
                        "unknown parameter {other:?} (expected sentinel_username or \
                         sentinel_password)"
                    ));
                }
            };
            if slot.is_some() {
                return Err(format!("parameter {name} is given twice"));
            }
            *slot = Some(non_empty(value.into_owned()));
        }
        Ok(Self {
            sentinels,
            master_name,
            db,
            username,
            password,
            sentinel_username: sentinel_username.flatten(),
            sentinel_password: sentinel_password.flatten(),
        })
    }

    /// Where to reach each sentinel, with the sentinel credentials.
    fn sentinel_infos(&self) -> RedisResult<Vec<ConnectionInfo>> {
        let mut auth = RedisConnectionInfo::default();
        if let Some(username) = &self.sentinel_username {
            auth = auth.set_username(username);
        }
        if let Some(password) = &self.sentinel_password {
            auth = auth.set_password(password);
        }
        self.sentinels
            .iter()
            .map(|(host, port)| {
                Ok(ConnectionAddr::Tcp(host.clone(), *port)
                    .into_connection_info()?
                    .set_redis_settings(auth.clone()))
            })
            .collect()
    }

    /// How to talk to the master once found: its credentials and database.
    fn node_info(&self) -> SentinelNodeConnectionInfo {
        let mut redis = RedisConnectionInfo::default().set_db(self.db);
        if let Some(username) = &self.username {
            redis = redis.set_username(username);
        }
        if let Some(password) = &self.password {
            redis = redis.set_password(password);
        }
        SentinelNodeConnectionInfo::default().set_redis_connection_info(redis)
    }
}

/// The URL with its credentials replaced by `***`, as logs may show it.
impl std::fmt::Display for SentinelUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{SENTINEL_SCHEME}://")?;
        if self.username.is_some() || self.password.is_some() {
            f.write_str("***@")?;
        }
        for (idx, (host, port)) in self.sentinels.iter().enumerate() {
            let separator = if idx == 0 { "" } else { "," };
            if host.contains(':') {
                write!(f, "{separator}[{host}]:{port}")?;
            } else {
                write!(f, "{separator}{host}:{port}")?;
            }
        }
        write!(f, "/{}/{}", self.master_name, self.db)?;
        match (&self.sentinel_username, &self.sentinel_password) {
            (None, None) => Ok(()),
            (Some(_), None) => f.write_str("?sentinel_username=***"),
            (None, Some(_)) => f.write_str("?sentinel_password=***"),
            (Some(_), Some(_)) => f.write_str("?sentinel_username=***&sentinel_password=***"),
        }
    }
}

impl std::fmt::Debug for SentinelUrl {
    // Credentials must never reach logs: show the redacted form only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SentinelUrl")
            .field(&self.to_string())
            .finish()
    }
}

/// A connection to whichever server the sentinels currently name as the master.
pub(crate) struct SentinelConn {
    master_name: String,
    node: SentinelNodeConnectionInfo,
    db: i64,
    /// How the master connection is opened (response timeout, connection timeout).
    config: AsyncConnectionConfig,
    /// The sentinels for lookups. An async mutex, held for one whole lookup on purpose: a
    /// failover fails every in-flight command at once, and one lookup should answer them all.
    lookup: tokio::sync::Mutex<Lookup>,
    /// The current master's connection. A std mutex: it is held only to clone or replace the
    /// handle, never across an `.await`.
    current: Mutex<Option<Master>>,
    /// Sentinel addresses for the background check, which asks them directly.
    sentinel_infos: Vec<ConnectionInfo>,
    /// The check's cached sentinel connection and which sentinel it goes to. Only the one
    /// running check uses it (see `checking`), so a std mutex taken briefly suffices.
    check_conn: Mutex<Option<(usize, MultiplexedConnection)>>,
    /// When the next background check is due.
    next_check: Mutex<Instant>,
    /// Whether a background check is running; at most one is.
    checking: AtomicBool,
}

struct Lookup {
    sentinel: Sentinel,
    /// Numbers each master connection, so a failure on an old one cannot forget a newer one.
    generation: u64,
    /// When the last lookup failed and with what error.
    failed: Option<(Instant, RedisError)>,
    /// The master last connected to, to log when it changes.
    address: Option<(String, u16)>,
}

#[derive(Clone)]
struct Master {
    generation: u64,
    address: (String, u16),
    conn: MultiplexedConnection,
}

impl SentinelConn {
    /// A connection to the master `url` names, looked up on first use. `response_timeout` is
    /// `None` for a blocking connection.
    pub(crate) fn new(url: &SentinelUrl, response_timeout: Option<Duration>) -> RedisResult<Self> {
        let sentinel_infos = url.sentinel_infos()?;
        let sentinel = Sentinel::build(sentinel_infos.clone())?;
        Ok(Self {
            master_name: url.master_name.clone(),
            node: url.node_info(),
            db: url.db,
            config: AsyncConnectionConfig::new()
                .set_response_timeout(response_timeout)
                .set_connection_timeout(Some(CONNECT_TIMEOUT)),
            lookup: tokio::sync::Mutex::new(Lookup {
                sentinel,
                generation: 0,
                failed: None,
                address: None,
            }),
            current: Mutex::new(None),
            sentinel_infos,
            check_conn: Mutex::new(None),
            next_check: Mutex::new(Instant::now() + CHECK_INTERVAL),
            checking: AtomicBool::new(false),
        })
    }

    /// The database selected on the master.
    pub(crate) fn db(&self) -> i64 {
        self.db
    }

    /// Runs one command on the current master.
    pub(crate) fn req_packed_command<'a>(
        self: &'a Arc<Self>,
        cmd: &'a Cmd,
    ) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let mut master = self.master().await?;
            let result = master.conn.req_packed_command(cmd).await;
            self.observe(&master, &result);
            result
        })
    }

    /// Runs a pipeline on the current master.
    pub(crate) fn req_packed_commands<'a>(
        self: &'a Arc<Self>,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let mut master = self.master().await?;
            let result = master
                .conn
                .req_packed_commands(pipeline, offset, count)
                .await;
            self.observe(&master, &result);
            result
        })
    }

    /// The current master's connection, looking it up when there is none.
    async fn master(self: &Arc<Self>) -> RedisResult<Master> {
        if let Some(master) = self.cached() {
            self.check_when_due();
            return Ok(master);
        }
        let mut lookup = self.lookup.lock().await;
        // Another caller may have finished a lookup while this one waited for the lock.
        if let Some(master) = self.cached() {
            return Ok(master);
        }
        if let Some((at, error)) = &lookup.failed
            && at.elapsed() < LOOKUP_PAUSE
        {
            return Err(error.clone());
        }
        let found = tokio::time::timeout(LOOKUP_TIMEOUT, self.connect(&mut lookup.sentinel))
            .await
            .unwrap_or_else(|_| {
                Err(RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "looking up the redis master through the sentinels timed out",
                )))
            });
        let (address, conn) = match found {
            Ok(found) => found,
            Err(error) => {
                lookup.failed = Some((Instant::now(), error.clone()));
                return Err(error);
            }
        };
        lookup.failed = None;
        lookup.generation += 1;
        match &lookup.address {
            Some(previous) if *previous != address => tracing::info!(
                master_name = %self.master_name,
                master = %format_address(&address),
                previous = %format_address(previous),
                "redis master changed"
            ),
            Some(_) => tracing::debug!(
                master_name = %self.master_name,
                master = %format_address(&address),
                "reconnected to the redis master"
            ),
            None => tracing::debug!(
                master_name = %self.master_name,
                master = %format_address(&address),
                "found the redis master through the sentinels"
            ),
        }
        lookup.address = Some(address.clone());
        let master = Master {
            generation: lookup.generation,
            address,
            conn,
        };
        *self.current.lock().expect("current-master lock") = Some(master.clone());
        *self.next_check.lock().expect("next-check lock") = Instant::now() + CHECK_INTERVAL;
        Ok(master)
    }

    /// Asks the sentinels for the master and connects to it.
    async fn connect(
        &self,
        sentinel: &mut Sentinel,
    ) -> RedisResult<((String, u16), MultiplexedConnection)> {
        // The lookup also checks with ROLE that the server it names considers itself master.
        let client: Client = sentinel
            .async_master_for(&self.master_name, Some(&self.node))
            .await?;
        let address = match client.get_connection_info().addr() {
            ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
                (host.clone(), *port)
            }
            other => (other.to_string(), 0),
        };
        let conn = client
            .get_multiplexed_async_connection_with_config(&self.config)
            .await?;
        Ok((address, conn))
    }

    fn cached(&self) -> Option<Master> {
        self.current.lock().expect("current-master lock").clone()
    }

    /// Forgets `master` when `result` says it may no longer be the master, unless a newer
    /// connection already replaced it.
    fn observe<T>(&self, master: &Master, result: &RedisResult<T>) {
        if let Err(error) = result
            && master_may_have_moved(error)
        {
            tracing::debug!(
                master_name = %self.master_name,
                master = %format_address(&master.address),
                error = %error,
                "forgetting the redis master connection"
            );
            self.forget(master.generation);
        }
    }

    /// Forgets the current master connection, whatever it is: the next command looks the
    /// master up again and connects afresh.
    pub(crate) fn reset(&self) {
        *self.current.lock().expect("current-master lock") = None;
    }

    fn forget(&self, generation: u64) {
        let mut current = self.current.lock().expect("current-master lock");
        if current
            .as_ref()
            .is_some_and(|master| master.generation == generation)
        {
            *current = None;
        }
    }

    /// Starts a background check when one is due and none is running.
    fn check_when_due(self: &Arc<Self>) {
        {
            let mut next_check = self.next_check.lock().expect("next-check lock");
            let now = Instant::now();
            if now < *next_check {
                return;
            }
            *next_check = now + CHECK_INTERVAL;
        }
        if self.checking.swap(true, Ordering::AcqRel) {
            return;
        }
        let conn = Arc::clone(self);
        tokio::spawn(async move {
            conn.check().await;
            conn.checking.store(false, Ordering::Release);
        });
    }

    /// Forgets the current master when the sentinels name another one. A sentinel that cannot
    /// be asked changes nothing: failing commands are what report an outage.
    async fn check(&self) {
        let Some(master) = self.cached() else {
            return;
        };
        let Some(named) = self.ask_sentinels().await else {
            return;
        };
        if named != master.address {
            tracing::info!(
                master_name = %self.master_name,
                master = %format_address(&master.address),
                named = %format_address(&named),
                "the sentinels name another redis master; switching"
            );
            self.forget(master.generation);
        }
    }

    /// `SENTINEL GET-MASTER-ADDR-BY-NAME` on the first sentinel that answers, starting with the
    /// one that answered last time.
    async fn ask_sentinels(&self) -> Option<(String, u16)> {
        let cached = self
            .check_conn
            .lock()
            .expect("check-connection lock")
            .take();
        let n_sentinels = self.sentinel_infos.len();
        let first = cached.as_ref().map_or(0, |(idx, _)| *idx);
        let mut cached = cached.map(|(_, conn)| conn);
        for step in 0..n_sentinels {
            let idx = (first + step) % n_sentinels;
            let mut conn = match cached.take() {
                Some(conn) => conn,
                None => match self.sentinel_conn(idx).await {
                    Ok(conn) => conn,
                    Err(_) => continue,
                },
            };
            let reply: RedisResult<Option<(String, u16)>> = redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(&self.master_name)
                .query_async(&mut conn)
                .await;
            if let Ok(named) = reply {
                *self.check_conn.lock().expect("check-connection lock") = Some((idx, conn));
                return named;
            }
        }
        None
    }

    async fn sentinel_conn(&self, idx: usize) -> RedisResult<MultiplexedConnection> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(SENTINEL_RESPONSE_TIMEOUT));
        Client::open(self.sentinel_infos[idx].clone())?
            .get_multiplexed_async_connection_with_config(&config)
            .await
    }
}

/// Whether an error on the master's connection means the master may have moved, so the next
/// command should ask the sentinels again.
fn master_may_have_moved(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_unrecoverable_error()
        || matches!(
            error.kind(),
            ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
        )
        || matches!(error.code(), Some("UNBLOCKED" | "NOREPLICAS"))
}

fn format_address((host, port): &(String, u16)) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn non_empty(text: String) -> Option<String> {
    (!text.is_empty()).then_some(text)
}

/// One `host[:port]` of the sentinel list.
fn parse_sentinel_address(text: &str) -> Result<(String, u16), String> {
    if text.is_empty() {
        return Err("empty entry in the sentinel list".to_owned());
    }
    let (host, port) = if let Some(bracketed) = text.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| format!("unclosed '[' in sentinel address {text:?}"))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("bad IPv6 address in sentinel address {text:?}"));
        }
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or_else(|| {
                format!("expected ':<port>' after ']' in sentinel address {text:?}")
            })?),
        };
        (host, port)
    } else {
        let (host, port) = match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        };
        let valid = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
        if !valid {
            return Err(format!(
                "bad host in sentinel address {text:?} (expected a name, an IPv4 address or a \
                 bracketed IPv6 address)"
            ));
        }
        (host, port)
    };
    let port = match port {
        None => DEFAULT_SENTINEL_PORT,
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|port| *port != 0)
            .ok_or_else(|| {
                format!("bad port {port:?} in sentinel address {text:?} (expected 1-65535)")
            })?,
    };
    Ok((host.to_owned(), port))
}

/// Decodes `%XX` escapes. Errors name `what`, never the text, which may be a secret.
fn percent_decode(text: &str, what: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut idx = 0;
    while idx < bytes.len() {
        if bytes[idx] == b'%' {
            let escape = bytes
                .get(idx + 1..idx + 3)
                .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit))
                .ok_or_else(|| format!("bad percent-encoding in {what}"))?;
            let hex = std::str::from_utf8(escape).map_err(|_| format!("bad escape in {what}"))?;
            decoded.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad escape in {what}"))?);
            idx += 3;
        } else {
            decoded.push(bytes[idx]);
            idx += 1;
        }
    }
    String::from_utf8(decoded).map_err(|_| format!("{what} is not UTF-8 once percent-decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> SentinelUrl {
        SentinelUrl::parse(url).unwrap_or_else(|error| panic!("{url}: {error}"))
    }

    fn error(url: &str) -> String {
        match SentinelUrl::parse(url) {
            Ok(parsed) => panic!("{url} parsed as {parsed:?}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn a_single_sentinel_without_port_or_db_gets_the_defaults() {
        let url = parse("redis+sentinel://sentinel.internal/upkeep");

        assert_eq!(url.sentinels(), [("sentinel.internal".to_owned(), 26379)]);
        assert_eq!(url.master_name(), "upkeep");
        assert_eq!(url.db(), 0);
        assert_eq!(url.username(), None);
        assert!(!url.has_password());
        assert!(!url.has_sentinel_password());
    }

    #[test]
    fn several_sentinels_credentials_db_and_sentinel_credentials_are_read() {
        let url = parse(
            "redis+sentinel://app:p%40ss%3Aw%2Frd@10.0.0.1,10.0.0.2:26380,[::1]:26381/my-master/3\
             ?sentinel_username=watcher&sentinel_password=s%26cret",
        );

        assert_eq!(
            url.sentinels(),
            [
                ("10.0.0.1".to_owned(), 26379),
                ("10.0.0.2".to_owned(), 26380),
                ("::1".to_owned(), 26381),
            ]
        );
        assert_eq!(url.master_name(), "my-master");
        assert_eq!(url.db(), 3);
        assert_eq!(url.username(), Some("app"));
        assert_eq!(url.password.as_deref(), Some("p@ss:w/rd"));
        assert_eq!(url.sentinel_username.as_deref(), Some("watcher"));
        assert_eq!(url.sentinel_password.as_deref(), Some("s&cret"));
    }

    #[test]
    fn a_password_without_user_and_a_trailing_slash_are_accepted() {
        let url = parse("REDIS+SENTINEL://:pw@h:1/m/");

        assert_eq!(url.username(), None);
        assert_eq!(url.password.as_deref(), Some("pw"));
        assert_eq!(url.db(), 0);
        assert_eq!(parse("redis+sentinel://h/m/7/").db(), 7);
    }

    #[test]
    fn only_the_sentinel_scheme_is_recognised() {
        assert!(SentinelUrl::has_scheme("redis+sentinel://h/m"));
        assert!(SentinelUrl::has_scheme("Redis+Sentinel://h/m"));
        assert!(!SentinelUrl::has_scheme("redis://h/0"));
        assert!(!SentinelUrl::has_scheme("redis+sentinel:h/m"));
    }

    #[test]
    fn bad_urls_are_refused_with_a_message_saying_what_is_wrong() {
        let cases = [
            ("redis://h/m", "expected the scheme redis+sentinel://"),
            (
                "redis+sentinel:///m",
                "no sentinel address before the master name",
            ),
            (
                "redis+sentinel://:pw@/m",
                "no sentinel address before the master name",
            ),
            (
                "redis+sentinel://h",
                "no master name: the path must be /<master-name>[/<db>]",
            ),
            ("redis+sentinel://h/", "no master name"),
            ("redis+sentinel://h?sentinel_password=x", "no master name"),
            (
                "redis+sentinel://a,,b/m",
                "empty entry in the sentinel list",
            ),
            ("redis+sentinel://a,/m", "empty entry in the sentinel list"),
            (
                "redis+sentinel://h:0/m",
                "bad port \"0\" in sentinel address \"h:0\" (expected 1-65535)",
            ),
            (
                "redis+sentinel://h:99999/m",
                "bad port \"99999\" in sentinel address \"h:99999\"",
            ),
            ("redis+sentinel://h:port/m", "bad port \"port\""),
            ("redis+sentinel://h:/m", "bad port \"\""),
            (
                "redis+sentinel://a b/m",
                "bad host in sentinel address \"a b\"",
            ),
            ("redis+sentinel://[::1/m", "unclosed '['"),
            ("redis+sentinel://[nope]:1/m", "bad IPv6 address"),
            ("redis+sentinel://[::1]x/m", "expected ':<port>' after ']'"),
            (
                "redis+sentinel://h/m/x",
                "bad db \"x\": expected a non-negative integer",
            ),
            ("redis+sentinel://h/m/-1", "bad db \"-1\""),
            (
                "redis+sentinel://h/m/0/extra",
                "unexpected path segment \"extra\"",
            ),
            (
                "redis+sentinel://h/my%20master",
                "bad master name \"my master\"",
            ),
            (
                "redis+sentinel://h/m?password=x",
                "unknown parameter \"password\" (expected sentinel_username or sentinel_password)",
            ),
            (
                "redis+sentinel://h/m?sentinel_password=a&sentinel_password=b",
                "parameter sentinel_password is given twice",
            ),
            (
                "redis+sentinel://h/m#frag",
                "a fragment ('#…') is not supported",
            ),
        ];
        for (url, expected) in cases {
            let message = error(url);
            assert!(
                message.contains(expected),
                "{url}: {message:?} lacks {expected:?}"
            );
        }
    }

    #[test]
    fn a_bad_url_error_never_shows_a_password() {
        let cases = [
            "redis+sentinel://:hunter2@h/m/notadb",
            "redis+sentinel://:hunter2%zz@h/m",
            "redis+sentinel://user:hunter2@h/m?bogus=1",
            "redis+sentinel://:hun/ter2@h/m",
            "redis+sentinel://:hun?ter2@h/m",
            "redis+sentinel://h/m?sentinel_password=hunter2&sentinel_password=hunter2",
            "redis+sentinel://hunter2user:hunter2@h:bad/m",
        ];
        for url in cases {
            let message = error(url);
            assert!(!message.contains("hunter2"), "{url}: {message}");
        }
        assert!(error("redis+sentinel://:hun/ter2@h/m").contains("percent-encode"));
    }

    #[test]
    fn display_and_debug_redact_every_credential() {
        let url = parse(
            "redis+sentinel://app:hunter2@a:1,[::1]:2/m/1?sentinel_username=u&sentinel_password=hunter3",
        );

        let shown = url.to_string();
        let debug = format!("{url:?}");

        assert_eq!(
            shown,
            "redis+sentinel://***@a:1,[::1]:2/m/1?sentinel_username=***&sentinel_password=***"
        );
        for text in [&shown, &debug] {
            assert!(!text.contains("hunter"), "{text}");
            assert!(!text.contains("app"), "{text}");
        }
        assert_eq!(
            parse("redis+sentinel://h/m").to_string(),
            "redis+sentinel://h:26379/m/0"
        );
    }

    #[test]
    fn connection_errors_and_demotion_replies_mean_the_master_may_have_moved() {
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        let timeout = RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut));
        let readonly = RedisError::from((
            ErrorKind::Server(ServerErrorKind::ReadOnly),
            "You can't write against a read only replica.",
        ));
        let script = RedisError::from((
            ErrorKind::Server(ServerErrorKind::ResponseError),
            "user script failed",
        ));

        assert!(master_may_have_moved(&io));
        assert!(master_may_have_moved(&timeout));
        assert!(master_may_have_moved(&readonly));
        assert!(!master_may_have_moved(&script));
    }
}
