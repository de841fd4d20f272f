//! The Postgres ledger.

/// All migrations, embedded once.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");
