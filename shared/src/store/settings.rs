//! The `[database]` section: where upkeep's Postgres ledger is and how to connect to it.
//!
//! The section is owned here, beside the code that connects; `config` only composes it into
//! `Settings` and layers `DATABASE_URL` over the file.

use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::settings::{Problems, Section, check_min_duration, redact_url};

/// How long a pooled connection may sit idle before it is pinged when handed out again.
const PING_IDLE_AFTER: Duration = Duration::from_secs(1);

/// The `[database]` section.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSettings {
    /// `postgres://` URL. Defaults to `postgres://postgres@127.0.0.1:5432/upkeep`; `DATABASE_URL`
    /// overrides it. Also `url_env = "VAR"` or `url_file = "/run/credentials/…"`.
    #[serde(serialize_with = "crate::settings::redacted_url")]
    pub url: SecretString,
    /// Pool size per process, 1 to 1000. Defaults to 10.
    pub max_connections: u32,
    /// Apply pending migrations when a daemon starts. Defaults to false (run `upkeepctl migrate`).
    pub migrate_on_start: bool,
    /// How long to wait for a connection (also the pool's acquire timeout). Defaults to 5s.
    #[serde(with = "crate::settings::duration")]
    pub connect_timeout: Duration,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: SecretString::from("postgres://postgres@127.0.0.1:5432/upkeep"),
            max_connections: 10,
            migrate_on_start: false,
            connect_timeout: Duration::from_secs(5),
        }
    }
}

impl Section for DatabaseSettings {
    const SECRET_KEYS: &'static [&'static str] = &["url"];

    fn validate(&self, path: &str, problems: &mut Problems) {
        if let Err(message) = check_postgres_url(self.url.expose_secret()) {
            problems.push(format!("{path}.url"), message);
        }
        problems.check_range(
            format!("{path}.max_connections"),
            self.max_connections,
            1,
            1000,
        );
        check_min_duration(
            problems,
            format!("{path}.connect_timeout"),
            self.connect_timeout,
            Duration::from_millis(1),
        );
    }
}

impl DatabaseSettings {
    /// Connection options parsed from `url`.
    ///
    /// # Errors
    /// When `url` is not a valid postgres URL (never the case after `Settings::load`).
    pub fn connect_options(&self) -> Result<PgConnectOptions, sqlx::Error> {
        PgConnectOptions::from_str(self.url.expose_secret())
    }

    /// Pool options: `max_connections`, `connect_timeout` as the acquire timeout, and a
    /// liveness check only for connections idle at least a second.
    ///
    /// sqlx pings every connection it hands out by default: a round trip before every ledger
    /// write, on the path of every job in live mode (`upkeepctl bench --live`). A connection in
    /// steady use is proven alive by its last statement (sqlx pings it again when it comes
    /// back, and closes it when that fails), so only one that sat idle, where a restarted
    /// server or a forgetful firewall may have cut it, is pinged before use.
    ///
    /// Each new connection gets Nagle's algorithm turned off (see `store::nagle`), so that the
    /// ledger may write large batches by `COPY`.
    #[must_use]
    pub fn pool_options(&self) -> PgPoolOptions {
        // None for a Unix-domain socket, else the server's TCP port.
        let server_port = self
            .connect_options()
            .ok()
            .map(|options| options.get_socket().is_none().then(|| options.get_port()));
        PgPoolOptions::new()
            .max_connections(self.max_connections)
            .after_connect(move |_, _| {
                Box::pin(async move {
                    if let Some(server_port) = server_port {
                        super::nagle::after_connect(server_port);
                    }
                    Ok(())
                })
            })
            .acquire_timeout(self.connect_timeout)
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IDLE_AFTER {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
    }

    /// Opens a pool and checks one connection.
    ///
    /// # Errors
    /// When the URL is invalid or the server cannot be reached within `connect_timeout`.
    pub async fn connect(&self) -> Result<PgPool, sqlx::Error> {
        let options = self.connect_options()?;
        match self.pool_options().connect_with(options.clone()).await {
            // The pool retries until its timeout and then says only that; one direct attempt
            // tells why (connection refused, unknown host, authentication, missing database).
            Err(sqlx::Error::PoolTimedOut) => {
                use sqlx::Connection as _;
                match tokio::time::timeout(
                    self.connect_timeout,
                    sqlx::PgConnection::connect_with(&options),
                )
                .await
                {
                    Ok(Err(cause)) => Err(cause),
                    _ => Err(sqlx::Error::PoolTimedOut),
                }
            }
            other => other,
        }
    }

    /// The URL with its password and secret parameters hidden, for messages.
    #[must_use]
    pub fn redacted_url(&self) -> String {
        redact_url(self.url.expose_secret())
    }

    /// A pool that connects on first use.
    ///
    /// # Errors
    /// When the URL is invalid.
    pub fn connect_lazy(&self) -> Result<PgPool, sqlx::Error> {
        Ok(self
            .pool_options()
            .connect_lazy_with(self.connect_options()?))
    }
}

/// Checks that `url` is a usable Postgres URL; the message shows it redacted.
fn check_postgres_url(url: &str) -> Result<(), String> {
    let shown = redact_url(url);
    let parsed = url::Url::parse(url).map_err(|e| format!("not a postgres URL: {shown:?}: {e}"))?;
    if !matches!(parsed.scheme(), "postgres" | "postgresql") {
        return Err(format!(
            "not a postgres URL (expected postgres:// or postgresql://): {shown:?}"
        ));
    }
    // The sqlx parser's messages name parameters, never their values.
    PgConnectOptions::from_str(url).map(|_| ()).map_err(|e| {
        // sqlx nests configuration errors; the innermost one says what is wrong.
        let mut innermost: &dyn std::error::Error = &e;
        while let Some(source) = innermost.source() {
            innermost = source;
        }
        format!("not a usable postgres URL: {shown:?}: {innermost}")
    })
}
