//! Whether upkeep's database holds the schema this build expects: the migrations embedded in
//! [`super::MIGRATOR`] compared with the rows of sqlx's `_sqlx_migrations` table.
//!
//! Daemons read it before they say they are ready, and `upkeepctl doctor` reports it. A
//! database may be *ahead* of the build (a rollback to the previous release after an upgrade
//! migrated it): migrations are forward-only and compatible with the previous release, so that
//! is accepted and only reported. It never applies anything itself.

use chrono::{DateTime, Utc};
use sqlx::{Connection as _, PgPool, Row};

use super::{Error, MIGRATOR};

/// How the database's applied migrations compare with the embedded set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SchemaState {
    /// Embedded migrations the database has applied successfully.
    pub n_applied: usize,
    /// Embedded migrations the database lacks, `(version, description)`, oldest first.
    pub pending: Vec<(i64, String)>,
    /// Versions applied in the database that this build does not embed (a newer release's).
    pub unknown: Vec<i64>,
    /// Versions whose recorded checksum differs from the embedded file (an edited migration).
    pub changed: Vec<i64>,
    /// Versions recorded as failed (`success = false`): a migration stopped half-way.
    pub failed: Vec<i64>,
}

impl SchemaState {
    /// Whether a daemon of this build may run on the database: nothing pending, changed or
    /// failed (unknown newer versions are fine).
    #[must_use]
    pub fn is_current(&self) -> bool {
        self.pending.is_empty() && self.changed.is_empty() && self.failed.is_empty()
    }

    /// What is wrong, for logs and `doctor`; `None` when [`SchemaState::is_current`].
    #[must_use]
    pub fn problem(&self) -> Option<String> {
        if !self.failed.is_empty() {
            return Some(format!(
                "migration(s) {:?} are recorded as failed in _sqlx_migrations",
                self.failed
            ));
        }
        if !self.changed.is_empty() {
            return Some(format!(
                "migration(s) {:?} were applied from a different file than this build embeds",
                self.changed
            ));
        }
        let (first_version, first_name) = self.pending.first()?;
        Some(format!(
            "the database lacks {} migration(s) of this build (first: {first_version} {first_name}); \
             run `upkeepctl migrate` or set database.migrate_on_start = true",
            self.pending.len()
        ))
    }
}

/// Reads `_sqlx_migrations` and compares it with the embedded migrations. A database without
/// the table (never migrated) has every migration pending.
///
/// # Errors
/// [`Error::Database`] when Postgres cannot be queried.
pub async fn schema_state(pool: &PgPool) -> Result<SchemaState, Error> {
    let has_table: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(pool)
        .await?;
    let rows = if has_table {
        sqlx::query("SELECT version, checksum, success FROM _sqlx_migrations ORDER BY version")
            .fetch_all(pool)
            .await?
    } else {
        Vec::new()
    };
    let mut recorded = std::collections::BTreeMap::new();
    for row in rows {
        let version: i64 = row.try_get("version")?;
        let checksum: Vec<u8> = row.try_get("checksum")?;
        let success: bool = row.try_get("success")?;
        recorded.insert(version, (checksum, success));
    }
    let mut state = SchemaState::default();
    for migration in MIGRATOR.iter() {
        if migration.migration_type.is_down_migration() {
            continue;
        }
        match recorded.remove(&migration.version) {
            None => state
                .pending
                .push((migration.version, migration.description.to_string())),
            Some((_, false)) => state.failed.push(migration.version),
            Some((checksum, true)) if checksum != *migration.checksum => {
                state.changed.push(migration.version);
            }
            Some(_) => state.n_applied += 1,
        }
    }
    state.unknown = recorded.into_keys().collect();
    Ok(state)
}

/// The server's clock (`now()`), for `upkeepctl doctor`'s skew check.
///
/// # Errors
/// [`Error::Database`] when Postgres cannot be queried.
pub async fn server_now(pool: &PgPool) -> Result<DateTime<Utc>, Error> {
    Ok(sqlx::query_scalar("SELECT now()").fetch_one(pool).await?)
}

/// Connects to a target database (a backup or report target) once, and says whether
/// `pg_stat_statements` is usable there (installed, and its library preloaded so the view
/// answers).
///
/// # Errors
/// When the URL is invalid or the database does not answer.
pub async fn probe_target(url: &str) -> Result<bool, Error> {
    let options: sqlx::postgres::PgConnectOptions =
        url.parse().map_err(|source| Error::Connect {
            url: crate::settings::redact_url(url),
            source,
        })?;
    let mut conn = sqlx::PgConnection::connect_with(&options)
        .await
        .map_err(|source| Error::Connect {
            url: crate::settings::redact_url(url),
            source,
        })?;
    let installed: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements')",
    )
    .fetch_one(&mut conn)
    .await?;
    // Installed but not preloaded, the view raises an error when read.
    let usable = installed
        && sqlx::query("SELECT 1 FROM pg_stat_statements LIMIT 1")
            .fetch_optional(&mut conn)
            .await
            .is_ok();
    let _ = conn.close().await;
    Ok(usable)
}
