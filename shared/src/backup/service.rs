//! What `backup.run`, `backup.verify` and `upkeepctl backups` call: one runner per database
//! across all workers, the catalog, findings, and retention after a committed backup.
//!
//! Findings are conditions about a database (`Finding::with_subject(name)`); each operation
//! reports the ones it observes and the caller resolves the rest with `job::resolutions`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::Error;
use super::dump::{self, DumpRequest, Target, Tools};
use super::retention::{self, Candidate, Plan, Policy};
use super::settings::{BackupSettings, DatabaseTarget, DumpFormat};
use crate::job::{Finding, Severity};
use crate::store::backups::{self as catalog, BackupRow, NewBackup};

/// Every finding code of the backup family.
pub const FINDING_CODES: &[&str] = &[
    "backup.failed",
    "backup.stale",
    "backup.too_small",
    "backup.checksum_mismatch",
    "backup.restore_failed",
    "backup.disk_low",
];

/// The codes `backup.run` observes (and resolves when they are gone).
pub const RUN_CODES: &[&str] = &[
    "backup.failed",
    "backup.too_small",
    "backup.disk_low",
    "backup.stale",
];
/// The codes `backup.verify full_read` observes.
pub const FULL_READ_CODES: &[&str] = &["backup.checksum_mismatch", "backup.stale"];
/// The codes `backup.verify restore` observes.
pub const RESTORE_CODES: &[&str] = &["backup.restore_failed"];

/// Reports the free bytes of the filesystem holding a path (injectable for tests).
pub type FreeSpace = Arc<dyn Fn(&Path) -> std::io::Result<u64> + Send + Sync>;

/// `backup.verify`'s mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyMode {
    /// Re-read every kept backup: checksum and `pg_restore -f /dev/null`.
    FullRead,
    /// Restore the newest backup into a scratch database and compare counts.
    Restore,
}

/// What happened to one database in a run or a verification.
#[derive(Debug, Serialize)]
pub struct DatabaseReport {
    /// The configured name.
    pub database: String,
    /// `committed`, `skipped`, `failed`, `verified`.
    pub status: &'static str,
    /// The catalog id committed or checked.
    pub backup_id: Option<i64>,
    /// Bytes of the dump.
    pub size_bytes: Option<u64>,
    /// Seconds spent.
    pub seconds: f64,
    /// Catalog ids retention deleted.
    pub deleted: Vec<i64>,
    /// The error, with the tool's stderr.
    pub error: Option<String>,
    /// What was observed (warn/critical, or ok for a backup verified).
    pub findings: Vec<Finding>,
}

impl DatabaseReport {
    fn new(database: &str, status: &'static str) -> Self {
        Self {
            database: database.to_owned(),
            status,
            backup_id: None,
            size_bytes: None,
            seconds: 0.0,
            deleted: Vec::new(),
            error: None,
            findings: Vec::new(),
        }
    }
}

/// A backup as `backups list` shows it: the catalog row and what the disk says.
#[derive(Debug, Serialize)]
pub struct ListEntry {
    /// The configured database.
    pub database: String,
    /// The catalog row, if any.
    pub row: Option<BackupRow>,
    /// The stem on disk (`<db>-<time>`), if any.
    pub stem: Option<String>,
    /// `ok`, `file_without_row`, `row_without_file`, `uncommitted` (data without manifest).
    pub agreement: &'static str,
}

/// The backup operations over one configuration and upkeep's database.
#[derive(Clone)]
pub struct BackupService {
    settings: BackupSettings,
    db: PgPool,
    free_space: FreeSpace,
}

impl std::fmt::Debug for BackupService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupService").finish_non_exhaustive()
    }
}

impl BackupService {
    /// A service over `settings`, with its catalog in `db` (upkeep's database).
    #[must_use]
    pub fn new(settings: BackupSettings, db: PgPool) -> Self {
        Self {
            settings,
            db,
            free_space: Arc::new(dump::free_space),
        }
    }

    /// The same service with another free-space probe (tests inject a figure).
    #[must_use]
    pub fn with_free_space(mut self, free_space: FreeSpace) -> Self {
        self.free_space = free_space;
        self
    }

    /// The settings.
    #[must_use]
    pub fn settings(&self) -> &BackupSettings {
        &self.settings
    }

    /// The configured targets named by `database`, or all of them.
    ///
    /// # Errors
    /// [`Error::NotFound`] for a name that is not configured.
    pub fn targets(&self, database: Option<&str>) -> Result<Vec<&DatabaseTarget>, Error> {
        match database {
            None => Ok(self.settings.databases.iter().collect()),
            Some(name) => self
                .settings
                .database(name)
                .map(|t| vec![t])
                .ok_or_else(|| {
                    let known: Vec<&str> = self
                        .settings
                        .databases
                        .iter()
                        .map(|d| d.name.as_str())
                        .collect();
                    Error::NotFound(format!(
                        "database {name:?} is not in [[backups.databases]] (configured: {})",
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ))
                }),
        }
    }

    fn db_dir(&self, name: &str) -> PathBuf {
        self.settings.directory.join(name)
    }

    /// `backup.run` for one database: lock, sweep, pre-flight, dump, commit, catalog, copies,
    /// retention. A database another runner holds is `skipped` and no file is touched.
    pub async fn run_one(
        &self,
        target: &DatabaseTarget,
        job_id: Option<uuid::Uuid>,
    ) -> DatabaseReport {
        let started = Instant::now();
        let lock = match catalog::try_lock(&self.db, &target.name).await {
            Ok(Some(lock)) => lock,
            Ok(None) => {
                tracing::info!(database = %target.name, "backup skipped: another runner holds this database's lock");
                let mut report = DatabaseReport::new(&target.name, "skipped");
                report.error = Some("another runner is backing up this database".to_owned());
                return report;
            }
            Err(error) => {
                let mut report = DatabaseReport::new(&target.name, "failed");
                report.error = Some(format!("cannot take the backup lock: {error}"));
                return report;
            }
        };
        let mut report = match self.run_locked(target, job_id).await {
            Ok(report) => report,
            Err(error) => {
                tracing::warn!(database = %target.name, error = %error, "backup failed");
                let mut report = DatabaseReport::new(&target.name, "failed");
                report.findings.push(failure_finding(&target.name, &error));
                report.error = Some(error.to_string());
                report
            }
        };
        lock.release().await;
        if let Ok(Some(stale)) = self.stale_finding(&target.name).await {
            report.findings.push(stale);
        }
        report.seconds = started.elapsed().as_secs_f64();
        report
    }

    async fn run_locked(
        &self,
        target: &DatabaseTarget,
        job_id: Option<uuid::Uuid>,
    ) -> Result<DatabaseReport, Error> {
        let started = Instant::now();
        let db_dir = self.db_dir(&target.name);
        tokio::fs::create_dir_all(&db_dir)
            .await
            .map_err(|source| Error::Io {
                what: "creating",
                path: db_dir.clone(),
                source,
            })?;
        let swept = dump::sweep(&db_dir).await?;
        if !swept.is_empty() {
            tracing::info!(database = %target.name, n_swept = swept.len(), swept = ?swept, "swept partial files of earlier runs");
        }
        // Pre-flight: a dump about as big as the last good one must fit half again.
        let last_size = catalog::newest_good(&self.db)
            .await?
            .into_iter()
            .find(|(db, _, _)| *db == target.name)
            .map_or(0, |(_, _, size)| u64::try_from(size).unwrap_or(0));
        let needed = last_size.saturating_add(last_size / 2);
        let free = (self.free_space)(&db_dir).map_err(|source| Error::Io {
            what: "measuring free space of",
            path: db_dir.clone(),
            source,
        })?;
        if free < needed {
            return Err(Error::DiskLow {
                dir: db_dir,
                free,
                needed,
            });
        }
        let url = Target::parse(&target.url)?;
        let server = dump::server_info(&url).await?;
        let tools = Tools::select(&self.settings.pg_bin_dir, server.major);
        let committed = dump::dump(
            &DumpRequest {
                name: &target.name,
                target: &url,
                format: target.format,
                jobs: target.jobs,
                db_dir: &db_dir,
                min_size: self.settings.min_size.bytes(),
            },
            &tools,
            &server,
        )
        .await?;
        let manifest = &committed.manifest;
        let mut copies = Vec::new();
        for copy_dir in &self.settings.copy_to {
            match self.copy(&committed, copy_dir, &target.name).await {
                Ok(paths) => copies.extend(paths),
                Err(error) => {
                    tracing::warn!(database = %target.name, copy_to = %copy_dir.display(), error = %error, "copy failed")
                }
            }
        }
        let id = catalog::insert(
            &self.db,
            &NewBackup {
                database: target.name.clone(),
                format: manifest.format.as_str().to_owned(),
                path: committed.data_path.display().to_string(),
                manifest_path: committed.manifest_path.display().to_string(),
                globals_path: committed
                    .globals_path
                    .as_ref()
                    .map(|p| p.display().to_string()),
                size_bytes: i64::try_from(manifest.size()).unwrap_or(i64::MAX),
                sha256: manifest.sha256(),
                server_version: manifest.server_version.clone(),
                pg_dump_version: manifest.pg_dump_version.clone(),
                started_at: manifest.started_at,
                finished_at: manifest.finished_at,
                // The read-back fed every byte to pg_restore and checked the sum.
                verification: "full_read".to_owned(),
                table_count: i32::try_from(manifest.table_count).unwrap_or(i32::MAX),
                row_counts: serde_json::to_value(&manifest.row_counts).unwrap_or_default(),
                copies: serde_json::to_value(&copies).unwrap_or_default(),
                job_id,
            },
        )
        .await?;
        tracing::info!(database = %target.name, backup_id = id, size_bytes = manifest.size(), sha256 = %manifest.sha256(), path = %committed.data_path.display(), "backup committed");
        let mut report = DatabaseReport::new(&target.name, "committed");
        report.backup_id = Some(id);
        report.size_bytes = Some(manifest.size());
        report.seconds = started.elapsed().as_secs_f64();
        // Retention runs only now that this run committed a good backup.
        let (plan, deleted) = self.prune(&target.name, Utc::now(), false).await?;
        report.deleted = deleted;
        if plan.frozen {
            report.findings.push(
                Finding::new(
                    "backup.stale",
                    Severity::Critical,
                    "retention frozen: no good backup within max_staleness",
                )
                .with_subject(&target.name),
            );
        }
        Ok(report)
    }

    async fn copy(
        &self,
        committed: &dump::Committed,
        copy_dir: &Path,
        name: &str,
    ) -> Result<Vec<String>, Error> {
        let dir = copy_dir.join(name);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|source| Error::Io {
                what: "creating",
                path: dir.clone(),
                source,
            })?;
        let manifest = &committed.manifest;
        let base = committed.data_path.parent().unwrap_or(Path::new("."));
        let mut files: Vec<&dump::FileSum> = manifest.files.iter().collect();
        files.extend(manifest.globals.iter());
        let mut copied = Vec::new();
        for file in files {
            let to = dir.join(&file.name);
            if let Some(parent) = to.parent() {
                tokio::fs::create_dir_all(parent)
                    .await
                    .map_err(|source| Error::Io {
                        what: "creating",
                        path: parent.to_path_buf(),
                        source,
                    })?;
            }
            dump::copy_checked(&base.join(&file.name), &to, &file.sha256).await?;
            copied.push(to.display().to_string());
        }
        let manifest_to = dir.join(committed.manifest_path.file_name().unwrap_or_default());
        let (_, sha) = dump::hash_file(&committed.manifest_path).await?;
        dump::copy_checked(&committed.manifest_path, &manifest_to, &sha).await?;
        copied.push(manifest_to.display().to_string());
        Ok(copied)
    }

    /// `backup.stale` (critical) when `database` has no good backup within `max_staleness`.
    ///
    /// # Errors
    /// When the catalog cannot be read.
    pub async fn stale_finding(&self, database: &str) -> Result<Option<Finding>, Error> {
        let newest = catalog::newest_good(&self.db)
            .await?
            .into_iter()
            .find(|(db, _, _)| db == database)
            .map(|(_, at, _)| at);
        let max = self.settings.retention.max_staleness;
        let stale = newest.is_none_or(|at| {
            Utc::now()
                .signed_duration_since(at)
                .to_std()
                .is_ok_and(|age| age > max)
        });
        Ok(stale.then(|| {
            let message = match newest {
                Some(at) => format!(
                    "newest good backup is from {} (older than max_staleness {})",
                    at.to_rfc3339(),
                    humantime::format_duration(max)
                ),
                None => "no good backup at all".to_owned(),
            };
            Finding::new("backup.stale", Severity::Critical, message)
                .with_subject(database)
                .with_detail(serde_json::json!({"newest_good": newest}))
        }))
    }

    /// The retention plan of `database` at `now`, with the catalog rows it covers.
    ///
    /// # Errors
    /// When the catalog cannot be read.
    pub async fn plan(
        &self,
        database: &str,
        now: DateTime<Utc>,
    ) -> Result<(Plan, Vec<BackupRow>), Error> {
        let rows = catalog::list(&self.db, Some(database)).await?;
        let candidates: Vec<Candidate> = rows
            .iter()
            .map(|row| Candidate {
                id: row.id,
                finished_at: row.finished_at,
                good: row.is_good(),
                restore_tested: row.restore_ok == Some(true),
            })
            .collect();
        let plan = retention::plan(&candidates, &Policy::from(&self.settings.retention), now);
        Ok((plan, rows))
    }

    /// Plans retention for `database` and, unless `dry_run`, deletes what the plan deletes:
    /// the manifest first (the backup stops being committed), then data, globals and copies,
    /// then the row is marked deleted. The plan is logged either way.
    ///
    /// # Errors
    /// When the catalog cannot be read or a file cannot be removed.
    pub async fn prune(
        &self,
        database: &str,
        now: DateTime<Utc>,
        dry_run: bool,
    ) -> Result<(Plan, Vec<i64>), Error> {
        let (plan, rows) = self.plan(database, now).await?;
        for decision in &plan.decisions {
            tracing::info!(database, backup_id = decision.id, good = decision.good, delete = decision.delete(), keep = ?decision.keep, dry_run, "retention plan");
        }
        let mut deleted = Vec::new();
        if dry_run || plan.frozen {
            return Ok((plan, deleted));
        }
        for id in plan.deletions() {
            let Some(row) = rows.iter().find(|r| r.id == id) else {
                continue;
            };
            dump::remove_any(Path::new(&row.manifest_path)).await?;
            if let Some(parent) = Path::new(&row.manifest_path).parent() {
                dump::fsync_dir(parent).await.ok();
            }
            dump::remove_any(Path::new(&row.path)).await?;
            if let Some(globals) = &row.globals_path {
                dump::remove_any(Path::new(globals)).await?;
            }
            if let Some(copies) = row.copies.as_array() {
                // Manifests first here too.
                let mut paths: Vec<&str> = copies.iter().filter_map(|c| c.as_str()).collect();
                paths.sort_by_key(|p| !p.ends_with(".manifest.json"));
                for path in paths {
                    dump::remove_any(Path::new(path)).await?;
                }
            }
            catalog::mark_deleted(&self.db, id).await?;
            tracing::info!(database, backup_id = id, path = %row.path, "retention deleted a backup");
            deleted.push(id);
        }
        Ok((plan, deleted))
    }

    /// Re-reads one backup (checksum and `pg_restore -f /dev/null`) and records the result:
    /// `full_read` (unless it is already `restored`) or `corrupt`.
    ///
    /// # Errors
    /// [`Error::Corrupt`] when it is damaged; IO or catalog errors.
    pub async fn full_read(&self, row: &BackupRow) -> Result<(), Error> {
        let manifest_path = Path::new(&row.manifest_path);
        let result = async {
            let manifest = dump::read_manifest(manifest_path).await?;
            let tools = Tools::select(&self.settings.pg_bin_dir, major_of(&row.server_version));
            dump::verify_backup(
                &tools,
                &manifest,
                manifest_path.parent().unwrap_or(Path::new(".")),
            )
            .await
        }
        .await;
        match &result {
            Ok(()) if row.verification != "restored" => {
                catalog::set_verification(&self.db, row.id, "full_read").await?
            }
            Ok(()) => catalog::set_verification(&self.db, row.id, "restored").await?,
            Err(Error::Corrupt { .. } | Error::Manifest { .. }) => {
                catalog::set_verification(&self.db, row.id, "corrupt").await?;
            }
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                catalog::set_verification(&self.db, row.id, "corrupt").await?;
            }
            Err(_) => {}
        }
        result
    }

    /// `backup.verify` for every configured database (or one).
    ///
    /// # Errors
    /// [`Error::NotFound`] for an unknown database name.
    pub async fn verify(
        &self,
        mode: VerifyMode,
        database: Option<&str>,
    ) -> Result<Vec<DatabaseReport>, Error> {
        let mut reports = Vec::new();
        for target in self.targets(database)? {
            let started = Instant::now();
            // The database's lock, so retention cannot delete a backup while it is read.
            let lock = match catalog::try_lock(&self.db, &target.name).await? {
                Some(lock) => lock,
                None => {
                    let mut report = DatabaseReport::new(&target.name, "skipped");
                    report.error = Some("another runner holds this database".to_owned());
                    reports.push(report);
                    continue;
                }
            };
            let mut report = match mode {
                VerifyMode::FullRead => self.verify_full_read(&target.name).await,
                VerifyMode::Restore => self.verify_restore(target).await,
            };
            lock.release().await;
            report.seconds = started.elapsed().as_secs_f64();
            reports.push(report);
        }
        Ok(reports)
    }

    async fn verify_full_read(&self, name: &str) -> DatabaseReport {
        let mut report = DatabaseReport::new(name, "verified");
        let rows = match catalog::list(&self.db, Some(name)).await {
            Ok(rows) => rows,
            Err(error) => {
                report.status = "failed";
                report.error = Some(error.to_string());
                return report;
            }
        };
        let mut damaged = Vec::new();
        for row in rows.iter().filter(|r| r.verification != "corrupt") {
            if let Err(error) = self.full_read(row).await {
                tracing::warn!(database = name, backup_id = row.id, error = %error, "backup failed its full read");
                damaged.push(
                    serde_json::json!({"id": row.id, "path": row.path, "error": error.to_string()}),
                );
            }
        }
        if !damaged.is_empty() {
            report.status = "failed";
            report.error = Some(format!("{} backup(s) damaged", damaged.len()));
            report.findings.push(
                Finding::new(
                    "backup.checksum_mismatch",
                    Severity::Critical,
                    format!(
                        "{} of {} backups failed the full read",
                        damaged.len(),
                        rows.len()
                    ),
                )
                .with_subject(name)
                .with_detail(serde_json::json!({"damaged": damaged})),
            );
        }
        if let Ok(Some(stale)) = self.stale_finding(name).await {
            report.findings.push(stale);
        }
        report
    }

    async fn verify_restore(&self, target: &DatabaseTarget) -> DatabaseReport {
        let mut report = DatabaseReport::new(&target.name, "verified");
        let newest = match catalog::list(&self.db, Some(&target.name)).await {
            Ok(rows) => rows.into_iter().find(|r| r.verification != "corrupt"),
            Err(error) => {
                report.status = "failed";
                report.error = Some(error.to_string());
                return report;
            }
        };
        let Some(row) = newest else {
            report.status = "failed";
            report.error = Some("no backup to restore".to_owned());
            return report;
        };
        report.backup_id = Some(row.id);
        let result = self.restore_test(target, &row).await;
        if let Err(error) = &result {
            report.status = "failed";
            report.error = Some(error.to_string());
            report.findings.push(
                Finding::new(
                    "backup.restore_failed",
                    Severity::Critical,
                    format!("restore test of backup {} failed: {error}", row.id),
                )
                .with_subject(&target.name)
                .with_detail(serde_json::json!({"backup_id": row.id, "path": row.path})),
            );
        }
        report
    }

    /// Restores `row` into a scratch database on the same server, compares the table count and
    /// the recorded row counts, records the result, and drops the scratch database.
    ///
    /// # Errors
    /// When the restore or the comparison fails.
    pub async fn restore_test(
        &self,
        target: &DatabaseTarget,
        row: &BackupRow,
    ) -> Result<(), Error> {
        let source = Target::parse(&target.url)?;
        let scratch = format!("upkeep_restore_test_{}_{}", row.id, std::process::id());
        let into = source.with_database(&scratch);
        let result = async {
            create_database(&source, &scratch, true).await?;
            let tools = Tools::select(&self.settings.pg_bin_dir, major_of(&row.server_version));
            let jobs = if row.format == DumpFormat::Directory.as_str() {
                2
            } else {
                1
            };
            dump::restore(&tools, Path::new(&row.path), &into, jobs, &|_, _| {}).await?;
            check_counts(&into, row).await
        }
        .await;
        let dropped = drop_database(&source, &scratch).await;
        catalog::set_restore_result(
            &self.db,
            row.id,
            result.as_ref().err().map(ToString::to_string).as_deref(),
        )
        .await?;
        result?;
        dropped
    }

    /// Restores backup `id` into database `into` on the server of its configured database:
    /// refused when `into` exists unless `force` (then it is dropped first). Checks the counts.
    ///
    /// # Errors
    /// Unknown id, existing database without `force`, or a failed restore.
    pub async fn restore_into(
        &self,
        id: i64,
        into: &str,
        force: bool,
        progress: &(dyn Fn(u64, u64) + Send + Sync),
    ) -> Result<BackupRow, Error> {
        let row = catalog::get(&self.db, id)
            .await?
            .filter(|r| r.deleted_at.is_none())
            .ok_or_else(|| Error::NotFound(format!("no live backup with id {id}")))?;
        let target = self.targets(Some(&row.database))?[0];
        let source = Target::parse(&target.url)?;
        if into == source.database() {
            return Err(Error::BadUrl(format!(
                "refusing to restore into {into:?}: it is the backed-up database itself; restore elsewhere and swap"
            )));
        }
        if force {
            drop_database(&source, into).await?;
        }
        create_database(&source, into, false).await?;
        let tools = Tools::select(&self.settings.pg_bin_dir, major_of(&row.server_version));
        let target_db = source.with_database(into);
        // A custom archive streamed from a pipe has no data offsets: restore it with one job.
        let jobs = if row.format == DumpFormat::Directory.as_str() {
            2
        } else {
            1
        };
        dump::restore(&tools, Path::new(&row.path), &target_db, jobs, progress).await?;
        check_counts(&target_db, &row).await?;
        Ok(row)
    }

    /// Every backup of the configured databases (or one): catalog rows and disk entries side by
    /// side, disagreements flagged.
    ///
    /// # Errors
    /// When the catalog or a directory cannot be read.
    pub async fn inventory(&self, database: Option<&str>) -> Result<Vec<ListEntry>, Error> {
        let mut entries = Vec::new();
        for target in self.targets(database)? {
            let rows = catalog::list(&self.db, Some(&target.name)).await?;
            let dir = self.db_dir(&target.name);
            let mut disk = dump::stems(&dir).await?;
            for row in rows {
                let stem = Path::new(&row.manifest_path)
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.strip_suffix(".manifest.json"))
                    .map(str::to_owned);
                let on_disk = stem.as_ref().and_then(|s| disk.remove(s));
                let agreement = match on_disk {
                    Some(entry) if entry.manifest && entry.data => "ok",
                    _ => "row_without_file",
                };
                entries.push(ListEntry {
                    database: target.name.clone(),
                    row: Some(row),
                    stem,
                    agreement,
                });
            }
            for (stem, entry) in disk {
                entries.push(ListEntry {
                    database: target.name.clone(),
                    row: None,
                    stem: Some(stem),
                    agreement: if entry.manifest {
                        "file_without_row"
                    } else {
                        "uncommitted"
                    },
                });
            }
        }
        Ok(entries)
    }
}

fn failure_finding(database: &str, error: &Error) -> Finding {
    let (code, detail) = match error {
        Error::TooSmall { size, min } => (
            "backup.too_small",
            serde_json::json!({"size": size, "min_size": min}),
        ),
        Error::DiskLow { dir, free, needed } => (
            "backup.disk_low",
            serde_json::json!({"directory": dir, "free": free, "needed": needed}),
        ),
        Error::Tool {
            tool,
            status,
            stderr,
        } => (
            "backup.failed",
            serde_json::json!({"tool": tool, "status": status, "stderr": stderr}),
        ),
        other => (
            "backup.failed",
            serde_json::json!({"error": other.to_string()}),
        ),
    };
    Finding::new(code, Severity::Critical, error.to_string())
        .with_subject(database)
        .with_detail(detail)
}

fn major_of(version: &str) -> u32 {
    version
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

async fn create_database(server: &Target, name: &str, drop_first: bool) -> Result<(), Error> {
    if drop_first {
        drop_database(server, name).await?;
    }
    execute_ddl(
        server,
        format!("CREATE DATABASE {}", dump::quote_ident(name)),
    )
    .await
}

async fn drop_database(server: &Target, name: &str) -> Result<(), Error> {
    let statement = format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        dump::quote_ident(name)
    );
    execute_ddl(server, statement).await
}

/// Runs one statement built from quoted identifiers on the server's maintenance connection.
async fn execute_ddl(server: &Target, statement: String) -> Result<(), Error> {
    let mut conn = server.connect().await?;
    sqlx::query(sqlx::AssertSqlSafe(statement))
        .execute(&mut conn)
        .await
        .map_err(|source| Error::Target {
            url: server.redacted().to_owned(),
            source,
        })?;
    Ok(())
}

async fn check_counts(restored: &Target, row: &BackupRow) -> Result<(), Error> {
    let mut conn = restored.connect().await?;
    let (table_count, counts) =
        dump::count_rows(&mut conn)
            .await
            .map_err(|source| Error::Target {
                url: restored.redacted().to_owned(),
                source,
            })?;
    if table_count != i64::from(row.table_count) {
        return Err(Error::RestoreCheck(format!(
            "{table_count} tables restored, {} dumped",
            row.table_count
        )));
    }
    let recorded = row.row_counts.as_object().cloned().unwrap_or_default();
    let mut mismatches = Vec::new();
    for (table, expected) in &recorded {
        let (schema, name) = table.split_once('.').unwrap_or(("public", table));
        let actual = match counts.get(table) {
            Some(n) => *n,
            None => {
                let sql = format!(
                    "SELECT count(*) FROM {}.{}",
                    dump::quote_ident(schema),
                    dump::quote_ident(name)
                );
                sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql))
                    .fetch_one(&mut conn)
                    .await
                    .unwrap_or(-1)
            }
        };
        if Some(actual) != expected.as_i64() {
            mismatches.push(format!(
                "{table}: {actual} rows restored, {expected} dumped"
            ));
        }
    }
    if mismatches.is_empty() {
        Ok(())
    } else {
        Err(Error::RestoreCheck(mismatches.join("; ")))
    }
}

/// Seconds as a [`Duration`] for reports.
#[must_use]
pub fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64()
}
