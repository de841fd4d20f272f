//! Backups that can be trusted: atomic `pg_dump` runs, the catalog, verification, restores and
//! grandfather-father-son retention that never deletes the last good backup.
//!
//! - [`settings`]: the `[backups]` section.
//! - [`retention`]: the pure retention planner (unit- and property-tested).
//! - [`dump`]: the processes and files: dump into `.tmp/`, read back, commit with a manifest,
//!   restore.
//! - [`service`]: what jobs and the CLI call: one runner per database, the catalog
//!   (`store::backups`), findings, retention.

pub mod dump;
pub mod retention;
pub mod service;
pub mod settings;

use std::path::PathBuf;

pub use service::{BackupService, DatabaseReport, FINDING_CODES, VerifyMode};
pub use settings::{BackupSettings, DatabaseTarget, DumpFormat, RetentionSettings};

/// Why a backup step failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A client tool could not be started (missing binary, wrong `pg_bin_dir`).
    #[error("cannot run {tool}: {source}")]
    Spawn {
        /// The binary.
        tool: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A client tool exited non-zero or printed `error:`.
    #[error("{tool} failed ({status}): {}", stderr.trim())]
    Tool {
        /// `pg_dump`, `pg_dumpall`, `pg_restore`.
        tool: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr (bounded).
        stderr: String,
    },
    /// The dump is smaller than `backups.min_size`.
    #[error("dump is {size} bytes, below backups.min_size ({min} bytes)")]
    TooSmall {
        /// Bytes written.
        size: u64,
        /// The minimum.
        min: u64,
    },
    /// The free-space pre-flight failed; nothing was dumped.
    #[error("{free} bytes free in {}, need {needed} (1.5 × the last good dump)", dir.display())]
    DiskLow {
        /// The directory checked.
        dir: PathBuf,
        /// Bytes available.
        free: u64,
        /// Bytes needed.
        needed: u64,
    },
    /// A backup's bytes differ from its checksum, or pg_restore cannot read it.
    #[error("{} is damaged: {reason}", path.display())]
    Corrupt {
        /// The damaged file or directory.
        path: PathBuf,
        /// What was found.
        reason: String,
        /// The checksum differed (bit rot, truncation) rather than only the decode failing.
        checksum: bool,
    },
    /// A restore test found a different database than was dumped.
    #[error("restore check failed: {0}")]
    RestoreCheck(String),
    /// A manifest is missing, unreadable or inconsistent.
    #[error("manifest {}: {message}", path.display())]
    Manifest {
        /// Its path.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A file operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// On what.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The database being backed up (or restored into) refused or is unreachable.
    #[error("database {url}: {source}")]
    Target {
        /// The URL without password.
        url: String,
        /// Why.
        #[source]
        source: sqlx::Error,
    },
    /// A database URL does not parse.
    #[error("{0}")]
    BadUrl(String),
    /// No such configured database, or no such backup.
    #[error("{0}")]
    NotFound(String),
    /// upkeep's own database failed.
    #[error("backup catalog: {0}")]
    Store(#[from] crate::store::Error),
}
