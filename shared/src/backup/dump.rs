//! The process side of a backup: choosing `pg_dump`, dumping atomically into `.tmp/` with a
//! SHA-256 computed while streaming, reading a backup back (`pg_restore -f /dev/null` fed from
//! the file, with the checksum computed over the same bytes), the manifest commit, and restores.
//!
//! Nothing here touches upkeep's own database; [`super::service`] does the catalog.
//!
//! On-disk layout, per database: `<directory>/<db>/<stem>.dump` (or `<stem>.dir/`),
//! `<stem>.globals.sql`, and `<stem>.manifest.json`, written last as the commit marker. Partial
//! files only ever exist under `<directory>/<db>/.tmp/`, on the same filesystem, so a rename
//! commits them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use sqlx::{Connection as _, PgConnection};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::{Child, Command};

use super::Error;
use super::settings::DumpFormat;

/// How many of the largest tables get exact row counts at dump time.
pub const COUNTED_TABLES: i64 = 20;

/// Bytes per read while streaming a dump or reading it back.
const CHUNK: usize = 1 << 20;

/// Most stderr kept per tool run (its head and tail matter; the middle is dropped).
const STDERR_LIMIT: usize = 64 * 1024;

/// The PostgreSQL client binaries a backup uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tools {
    /// `pg_dump`.
    pub pg_dump: PathBuf,
    /// `pg_dumpall`.
    pub pg_dumpall: PathBuf,
    /// `pg_restore`.
    pub pg_restore: PathBuf,
}

impl Tools {
    /// The binaries in `pg_bin_dir` when it is set; else those of
    /// `/usr/lib/postgresql/<server_major>/bin` when they exist (a pg_dump older than the server
    /// refuses to dump it, a newer one writes archives an older pg_restore cannot read); else
    /// the ones on `PATH`.
    #[must_use]
    pub fn select(pg_bin_dir: &Path, server_major: u32) -> Self {
        let dir = if pg_bin_dir.as_os_str().is_empty() {
            let versioned = PathBuf::from(format!("/usr/lib/postgresql/{server_major}/bin"));
            versioned.join("pg_dump").is_file().then_some(versioned)
        } else {
            Some(pg_bin_dir.to_path_buf())
        };
        let at = |name: &str| {
            dir.as_ref()
                .map_or_else(|| PathBuf::from(name), |dir| dir.join(name))
        };
        Self {
            pg_dump: at("pg_dump"),
            pg_dumpall: at("pg_dumpall"),
            pg_restore: at("pg_restore"),
        }
    }

    /// `pg_dump --version`, e.g. `pg_dump (PostgreSQL) 15.20`.
    ///
    /// # Errors
    /// When the binary cannot be run.
    pub async fn pg_dump_version(&self) -> Result<String, Error> {
        let output = Command::new(&self.pg_dump)
            .arg("--version")
            .output()
            .await
            .map_err(|source| Error::Spawn {
                tool: self.pg_dump.display().to_string(),
                source,
            })?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }
}

/// A connection target for the client tools: the URL without its password, and the password
/// apart (given as `PGPASSWORD`, so it never shows in `ps`).
#[derive(Clone)]
pub struct Target {
    url: String,
    password: Option<SecretString>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// Splits `url` into the password-less URL and the password.
    ///
    /// # Errors
    /// When `url` is not a URL.
    pub fn parse(url: &SecretString) -> Result<Self, Error> {
        let mut parsed = url::Url::parse(url.expose_secret())
            .map_err(|e| Error::BadUrl(format!("database URL does not parse: {e}")))?;
        let password = parsed
            .password()
            .map(|p| {
                url::form_urlencoded::parse(format!("p={p}").as_bytes())
                    .next()
                    .map_or_else(String::new, |(_, v)| v.into_owned())
            })
            .map(SecretString::from);
        let _ = parsed.set_password(None);
        Ok(Self {
            url: parsed.to_string(),
            password,
        })
    }

    /// The same server, another database.
    #[must_use]
    pub fn with_database(&self, database: &str) -> Self {
        let mut parsed = url::Url::parse(&self.url).expect("parsed before");
        parsed.set_path(&format!("/{database}"));
        Self {
            url: parsed.to_string(),
            password: self.password.clone(),
        }
    }

    /// The database name in the URL.
    #[must_use]
    pub fn database(&self) -> String {
        url::Url::parse(&self.url)
            .ok()
            .map(|u| u.path().trim_start_matches('/').to_owned())
            .unwrap_or_default()
    }

    /// The URL without password, for logs and messages.
    #[must_use]
    pub fn redacted(&self) -> &str {
        &self.url
    }

    /// A connection with sqlx.
    ///
    /// # Errors
    /// When the server cannot be reached or refuses.
    pub async fn connect(&self) -> Result<PgConnection, Error> {
        let mut options: sqlx::postgres::PgConnectOptions = self
            .url
            .parse()
            .map_err(|e: sqlx::Error| Error::BadUrl(e.to_string()))?;
        if let Some(password) = &self.password {
            options = options.password(password.expose_secret());
        }
        PgConnection::connect_with(&options)
            .await
            .map_err(|source| Error::Target {
                url: self.url.clone(),
                source,
            })
    }

    fn command(&self, program: &Path) -> Command {
        let mut command = Command::new(program);
        command.kill_on_drop(true).env("PGCONNECT_TIMEOUT", "10");
        if let Some(password) = &self.password {
            command.env("PGPASSWORD", password.expose_secret());
        }
        command
    }
}

/// One file of a backup, as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSum {
    /// Path relative to the database's backup directory.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// Hex SHA-256.
    pub sha256: String,
}

/// The manifest: the commit marker of a backup, and what a later verification checks against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format version.
    pub version: u32,
    /// The configured database name.
    pub database: String,
    /// `custom` or `directory`.
    pub format: DumpFormat,
    /// The data (relative name): a file or a directory.
    pub data: String,
    /// Every data file with its checksum (one for custom).
    pub files: Vec<FileSum>,
    /// `pg_dumpall --globals-only` output.
    pub globals: Option<FileSum>,
    /// Whether the globals were taken with `--no-role-passwords`.
    pub globals_without_passwords: bool,
    /// Server version at dump time.
    pub server_version: String,
    /// `pg_dump --version`.
    pub pg_dump_version: String,
    /// When the dump started.
    pub started_at: DateTime<Utc>,
    /// When the data was verified and the manifest written.
    pub finished_at: DateTime<Utc>,
    /// User tables at dump time.
    pub table_count: i64,
    /// Exact row counts of the largest tables, in the dump's own snapshot.
    pub row_counts: BTreeMap<String, i64>,
}

impl Manifest {
    /// Total data bytes.
    #[must_use]
    pub fn size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// The checksum the catalog stores: the file's for custom, else a SHA-256 over the sorted
    /// `name sha256` lines.
    #[must_use]
    pub fn sha256(&self) -> String {
        if let [only] = self.files.as_slice() {
            return only.sha256.clone();
        }
        let mut hasher = Sha256::new();
        for file in &self.files {
            hasher.update(format!("{} {}\n", file.name, file.sha256));
        }
        hex::encode(hasher.finalize())
    }
}

/// What a committed backup left on disk.
#[derive(Debug, Clone)]
pub struct Committed {
    /// The manifest as written.
    pub manifest: Manifest,
    /// The data (file or directory).
    pub data_path: PathBuf,
    /// The manifest file.
    pub manifest_path: PathBuf,
    /// The globals file.
    pub globals_path: Option<PathBuf>,
}

/// The server facts a dump records.
#[derive(Debug, Clone)]
pub struct ServerInfo {
    /// `server_version`.
    pub version: String,
    /// Major version (15 for 15.4).
    pub major: u32,
}

/// Reads the server's version.
///
/// # Errors
/// When the server cannot be reached.
pub async fn server_info(target: &Target) -> Result<ServerInfo, Error> {
    let mut conn = target.connect().await?;
    let (version, num): (String, String) = sqlx::query_as(
        "SELECT current_setting('server_version'), current_setting('server_version_num')",
    )
    .fetch_one(&mut conn)
    .await
    .map_err(|source| Error::Target {
        url: target.url.clone(),
        source,
    })?;
    let _ = conn.close().await;
    let major = num.parse::<u32>().unwrap_or(0) / 10_000;
    Ok(ServerInfo { version, major })
}

/// Free bytes for unprivileged users on the filesystem holding `path`.
///
/// # Errors
/// When `statvfs` fails.
pub fn free_space(path: &Path) -> std::io::Result<u64> {
    let stat = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    #[allow(
        clippy::useless_conversion,
        reason = "the field widths differ between platforms"
    )]
    Ok(u64::from(stat.blocks_available()).saturating_mul(u64::from(stat.fragment_size())))
}

/// Deletes everything under `<db_dir>/.tmp` (partial files of dumps that never committed), and
/// data files with a final name but no manifest (a crash between the data's rename and the
/// manifest's). Only called while holding the database's lock. Returns the paths removed.
///
/// # Errors
/// When the directory cannot be read or an entry cannot be removed.
pub async fn sweep(db_dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut removed = Vec::new();
    let tmp = db_dir.join(".tmp");
    if let Ok(mut entries) = tokio::fs::read_dir(&tmp).await {
        while let Some(entry) = entries.next_entry().await.map_err(io(&tmp, "reading"))? {
            remove_any(&entry.path()).await?;
            removed.push(entry.path());
        }
    }
    for (stem, entry) in stems(db_dir).await? {
        if !entry.manifest {
            for path in entry.paths(db_dir, &stem) {
                remove_any(&path).await?;
                removed.push(path);
            }
        }
    }
    Ok(removed)
}

/// What the disk holds for one stem.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskEntry {
    /// `<stem>.manifest.json` exists.
    pub manifest: bool,
    /// `<stem>.dump` or `<stem>.dir` exists.
    pub data: bool,
    /// `<stem>.globals.sql` exists.
    pub globals: bool,
}

impl DiskEntry {
    fn paths(&self, dir: &Path, stem: &str) -> Vec<PathBuf> {
        let mut paths = Vec::new();
        if self.data {
            for suffix in [".dump", ".dir"] {
                let path = dir.join(format!("{stem}{suffix}"));
                if path.exists() {
                    paths.push(path);
                }
            }
        }
        if self.globals {
            paths.push(dir.join(format!("{stem}.globals.sql")));
        }
        paths
    }
}

/// The backups on disk in `db_dir`, by stem (`<db>-<UTC time>`).
///
/// # Errors
/// When the directory exists but cannot be read.
pub async fn stems(db_dir: &Path) -> Result<BTreeMap<String, DiskEntry>, Error> {
    let mut found: BTreeMap<String, DiskEntry> = BTreeMap::new();
    let Ok(mut entries) = tokio::fs::read_dir(db_dir).await else {
        return Ok(found);
    };
    while let Some(entry) = entries.next_entry().await.map_err(io(db_dir, "reading"))? {
        let name = entry.file_name().to_string_lossy().into_owned();
        let (stem, kind) = if let Some(stem) = name.strip_suffix(".manifest.json") {
            (stem, 0)
        } else if let Some(stem) = name
            .strip_suffix(".dump")
            .or_else(|| name.strip_suffix(".dir"))
        {
            (stem, 1)
        } else if let Some(stem) = name.strip_suffix(".globals.sql") {
            (stem, 2)
        } else {
            continue;
        };
        let entry = found.entry(stem.to_owned()).or_default();
        match kind {
            0 => entry.manifest = true,
            1 => entry.data = true,
            _ => entry.globals = true,
        }
    }
    Ok(found)
}

/// One dump to take.
#[derive(Debug, Clone)]
pub struct DumpRequest<'a> {
    /// The configured name (the subdirectory and the file stem).
    pub name: &'a str,
    /// Where to connect.
    pub target: &'a Target,
    /// The archive format.
    pub format: DumpFormat,
    /// Parallel jobs (directory format).
    pub jobs: u32,
    /// `<directory>/<name>`.
    pub db_dir: &'a Path,
    /// A dump smaller than this fails.
    pub min_size: u64,
}

/// Dumps, verifies and commits one backup. On any error nothing with a final name is left:
/// the partial files are removed (and, if the process dies, swept by the next run).
///
/// # Errors
/// [`Error::Tool`] when `pg_dump`/`pg_dumpall`/`pg_restore` fails (with its stderr),
/// [`Error::TooSmall`], [`Error::Corrupt`] when the read-back finds damage, or IO errors.
pub async fn dump(
    request: &DumpRequest<'_>,
    tools: &Tools,
    server: &ServerInfo,
) -> Result<Committed, Error> {
    let started_at = Utc::now();
    let tmp = request.db_dir.join(".tmp");
    tokio::fs::create_dir_all(&tmp)
        .await
        .map_err(io(&tmp, "creating"))?;
    let stem = format!(
        "{}-{}",
        request.name,
        started_at.format("%Y%m%dT%H%M%S%.3fZ")
    );
    let result = dump_into(request, tools, server, &tmp, &stem, started_at).await;
    if result.is_err() {
        // Best effort: what is left is swept by the next run anyway.
        for suffix in [".dump", ".dir", ".globals.sql", ".manifest.json"] {
            let _ = remove_any(&tmp.join(format!("{stem}{suffix}"))).await;
        }
    }
    result
}

async fn dump_into(
    request: &DumpRequest<'_>,
    tools: &Tools,
    server: &ServerInfo,
    tmp: &Path,
    stem: &str,
    started_at: DateTime<Utc>,
) -> Result<Committed, Error> {
    let pg_dump_version = tools.pg_dump_version().await?;
    // The row counts and the dump share one snapshot, so a restore must match them exactly
    // even on a database that is being written to.
    let mut snapshot_conn = request.target.connect().await?;
    let target_err = |source| Error::Target {
        url: request.target.url.clone(),
        source,
    };
    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut snapshot_conn)
        .await
        .map_err(target_err)?;
    let snapshot: String = sqlx::query_scalar("SELECT pg_export_snapshot()")
        .fetch_one(&mut snapshot_conn)
        .await
        .map_err(target_err)?;
    let data_name = match request.format {
        DumpFormat::Custom => format!("{stem}.dump"),
        DumpFormat::Directory => format!("{stem}.dir"),
    };
    let data_tmp = tmp.join(&data_name);
    let mut command = request.target.command(&tools.pg_dump);
    command
        .arg("--no-password")
        .arg(format!("--snapshot={snapshot}"))
        .arg(format!("--dbname={}", request.target.url));
    let dump = async {
        match request.format {
            DumpFormat::Custom => {
                command.arg("--format=custom");
                let (size, sha256) = stream_to_file(command, &tools.pg_dump, &data_tmp).await?;
                Ok(vec![FileSum {
                    name: data_name.clone(),
                    size,
                    sha256,
                }])
            }
            DumpFormat::Directory => {
                command
                    .arg("--format=directory")
                    .arg(format!("--jobs={}", request.jobs))
                    .arg(format!("--file={}", data_tmp.display()));
                run_tool(command, &tools.pg_dump).await?;
                let files = hash_directory(&data_tmp, &data_name).await?;
                fsync_dir(&data_tmp).await?;
                Ok::<_, Error>(files)
            }
        }
    };
    // Counted while pg_dump streams, in the snapshot it dumps; pg_dump's own failure (with its
    // stderr) is reported first when both fail.
    let (files, counts) = tokio::join!(dump, count_rows(&mut snapshot_conn));
    let files = files?;
    let (table_count, row_counts) = counts.map_err(target_err)?;
    // The snapshot may end once pg_dump has finished.
    let _ = snapshot_conn.close().await;
    let size: u64 = files.iter().map(|f| f.size).sum();
    if size < request.min_size {
        return Err(Error::TooSmall {
            size,
            min: request.min_size,
        });
    }
    // Read back what is on disk: the checksum over the same bytes pg_restore decodes.
    verify_data(tools, request.format, &data_tmp, tmp, &files).await?;

    let (globals, globals_without_passwords) =
        dump_globals(request.target, tools, tmp, stem).await?;

    let manifest = Manifest {
        version: 1,
        database: request.name.to_owned(),
        format: request.format,
        data: data_name.clone(),
        files,
        globals: globals.clone(),
        globals_without_passwords,
        server_version: server.version.clone(),
        pg_dump_version,
        started_at,
        finished_at: Utc::now(),
        table_count,
        row_counts,
    };
    let manifest_name = format!("{stem}.manifest.json");
    let manifest_tmp = tmp.join(&manifest_name);
    let text = serde_json::to_vec_pretty(&manifest).map_err(|e| Error::Manifest {
        path: manifest_tmp.clone(),
        message: e.to_string(),
    })?;
    write_synced(&manifest_tmp, &text).await?;
    fsync_dir(tmp).await?;

    // Commit: data and globals first, the manifest last; a crash before the manifest's
    // rename leaves an uncommitted data file that the next sweep removes.
    let db_dir = request.db_dir;
    let data_path = db_dir.join(&data_name);
    rename(&data_tmp, &data_path).await?;
    let globals_path = match &globals {
        Some(g) => {
            let path = db_dir.join(&g.name);
            rename(&tmp.join(&g.name), &path).await?;
            Some(path)
        }
        None => None,
    };
    fsync_dir(db_dir).await?;
    let manifest_path = db_dir.join(&manifest_name);
    rename(&manifest_tmp, &manifest_path).await?;
    fsync_dir(db_dir).await?;
    Ok(Committed {
        manifest,
        data_path,
        manifest_path,
        globals_path,
    })
}

/// Re-reads a committed backup: every file's checksum against the manifest, and
/// `pg_restore -f /dev/null` over the whole archive.
///
/// # Errors
/// [`Error::Corrupt`] (checksum or archive damage), or IO errors.
pub async fn verify_backup(tools: &Tools, manifest: &Manifest, db_dir: &Path) -> Result<(), Error> {
    let data = db_dir.join(&manifest.data);
    verify_data(tools, manifest.format, &data, db_dir, &manifest.files).await?;
    if let Some(globals) = &manifest.globals {
        let (size, sha) = hash_file(&db_dir.join(&globals.name)).await?;
        if size != globals.size || sha != globals.sha256 {
            return Err(Error::Corrupt {
                path: db_dir.join(&globals.name),
                reason: format!("checksum mismatch (expected {}, got {sha})", globals.sha256),
                checksum: true,
            });
        }
    }
    Ok(())
}

/// Reads a manifest.
///
/// # Errors
/// When it cannot be read or parsed.
pub async fn read_manifest(path: &Path) -> Result<Manifest, Error> {
    let bytes = tokio::fs::read(path).await.map_err(io(path, "reading"))?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Manifest {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Restores `data` into the existing, empty database `into`, calling `progress(done, total)`
/// as archive entries are processed.
///
/// # Errors
/// [`Error::Tool`] with pg_restore's stderr.
pub async fn restore(
    tools: &Tools,
    data: &Path,
    into: &Target,
    jobs: u32,
    progress: &(dyn Fn(u64, u64) + Send + Sync),
) -> Result<(), Error> {
    let list = Command::new(&tools.pg_restore)
        .arg("--list")
        .arg(data)
        .output()
        .await
        .map_err(|source| Error::Spawn {
            tool: tools.pg_restore.display().to_string(),
            source,
        })?;
    let total = String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .count() as u64;
    progress(0, total);
    let mut command = into.command(&tools.pg_restore);
    command
        .arg("--no-password")
        .arg("--verbose")
        .arg("--exit-on-error")
        .arg("--no-owner")
        .arg("--no-privileges")
        .arg(format!("--jobs={}", jobs.max(1)))
        .arg(format!("--dbname={}", into.url))
        .arg(data)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = spawn(command, &tools.pg_restore)?;
    let mut stderr = child.stderr.take().expect("piped");
    let mut kept = Vec::new();
    let mut buf = vec![0u8; 8192];
    let mut done = 0u64;
    let mut line = Vec::new();
    loop {
        let n = stderr
            .read(&mut buf)
            .await
            .map_err(io(data, "reading pg_restore's stderr of"))?;
        if n == 0 {
            break;
        }
        for &byte in &buf[..n] {
            if byte == b'\n' {
                let text = String::from_utf8_lossy(&line);
                if text.contains("processing item")
                    || text.contains("creating ")
                    || text.contains("processing data")
                {
                    done = (done + 1).min(total);
                    progress(done, total);
                }
                if text.contains("error") || text.contains("warning") {
                    keep(&mut kept, &line);
                    kept.push(b'\n');
                }
                line.clear();
            } else {
                line.push(byte);
            }
        }
    }
    let status = child
        .wait()
        .await
        .map_err(io(data, "waiting for pg_restore of"))?;
    progress(total, total);
    if status.success() {
        Ok(())
    } else {
        Err(Error::Tool {
            tool: "pg_restore".to_owned(),
            status: status.to_string(),
            stderr: String::from_utf8_lossy(&kept).into_owned(),
        })
    }
}

/// The user tables of a database and exact row counts of its largest ones (those the role may
/// read: a failed count would abort the transaction whose snapshot pg_dump imports, and hide
/// pg_dump's own error).
///
/// # Errors
/// When a query fails.
pub async fn count_rows(
    conn: &mut PgConnection,
) -> Result<(i64, BTreeMap<String, i64>), sqlx::Error> {
    let table_count: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
           AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'",
    )
    .fetch_one(&mut *conn)
    .await?;
    let largest: Vec<(String, String)> = sqlx::query_as(
        "SELECT n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
           AND has_table_privilege(c.oid, 'SELECT') \
           AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%' \
         ORDER BY pg_total_relation_size(c.oid) DESC, 1, 2 LIMIT $1",
    )
    .bind(COUNTED_TABLES)
    .fetch_all(&mut *conn)
    .await?;
    let mut counts = BTreeMap::new();
    for (schema, table) in largest {
        let sql = format!(
            "SELECT count(*) FROM {}.{}",
            quote_ident(&schema),
            quote_ident(&table)
        );
        let rows: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut *conn)
            .await?;
        counts.insert(format!("{schema}.{table}"), rows);
    }
    Ok((table_count, counts))
}

/// Quotes an SQL identifier.
#[must_use]
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

async fn dump_globals(
    target: &Target,
    tools: &Tools,
    tmp: &Path,
    stem: &str,
) -> Result<(Option<FileSum>, bool), Error> {
    let name = format!("{stem}.globals.sql");
    let path = tmp.join(&name);
    let mut without_passwords = false;
    let mut last_error = None;
    // Role passwords need superuser (pg_authid); a managed or least-privilege role may read
    // only pg_roles, so a second try leaves the passwords out.
    for no_passwords in [false, true] {
        let mut command = target.command(&tools.pg_dumpall);
        command
            .arg("--no-password")
            .arg("--globals-only")
            .arg(format!("--dbname={}", target.url))
            .arg(format!("--file={}", path.display()));
        if no_passwords {
            command.arg("--no-role-passwords");
        }
        match run_tool(command, &tools.pg_dumpall).await {
            Ok(()) => {
                without_passwords = no_passwords;
                last_error = None;
                break;
            }
            Err(error) => last_error = Some(error),
        }
    }
    if let Some(error) = last_error {
        return Err(error);
    }
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(io(&path, "opening"))?;
    file.sync_all().await.map_err(io(&path, "syncing"))?;
    let (size, sha256) = hash_file(&path).await?;
    Ok((Some(FileSum { name, size, sha256 }), without_passwords))
}

/// Runs `command` with stdout into `path`: hashed while streaming, then fsynced.
async fn stream_to_file(
    mut command: Command,
    tool: &Path,
    path: &Path,
) -> Result<(u64, String), Error> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawn(command, tool)?;
    let stderr_task = collect_stderr(&mut child);
    let mut stdout = child.stdout.take().expect("piped");
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(io(path, "creating"))?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = stdout
            .read(&mut buf)
            .await
            .map_err(io(path, "reading pg_dump's output for"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])
            .await
            .map_err(io(path, "writing"))?;
        size += n as u64;
    }
    file.sync_all().await.map_err(io(path, "syncing"))?;
    let status = child
        .wait()
        .await
        .map_err(io(path, "waiting for pg_dump writing"))?;
    let stderr = stderr_task.await.unwrap_or_default();
    check_status(tool, &status, &stderr)?;
    Ok((size, hex::encode(hasher.finalize())))
}

async fn run_tool(mut command: Command, tool: &Path) -> Result<(), Error> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = spawn(command, tool)?;
    let stderr_task = collect_stderr(&mut child);
    let status = child.wait().await.map_err(io(tool, "waiting for"))?;
    let stderr = stderr_task.await.unwrap_or_default();
    check_status(tool, &status, &stderr)
}

/// A non-zero exit or `error:` on stderr is a failure (pg_dump has exited 0 after printing an
/// error in some versions' corner cases; we never trust the exit code alone).
fn check_status(tool: &Path, status: &std::process::ExitStatus, stderr: &str) -> Result<(), Error> {
    if status.success() && !stderr.contains("error:") {
        Ok(())
    } else {
        Err(Error::Tool {
            tool: tool.file_name().map_or_else(
                || tool.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            ),
            status: status.to_string(),
            stderr: stderr.to_owned(),
        })
    }
}

fn spawn(mut command: Command, tool: &Path) -> Result<Child, Error> {
    command.spawn().map_err(|source| Error::Spawn {
        tool: tool.display().to_string(),
        source,
    })
}

fn collect_stderr(child: &mut Child) -> tokio::task::JoinHandle<String> {
    let mut stderr = child.stderr.take().expect("stderr piped");
    tokio::spawn(async move {
        let mut kept = Vec::new();
        let mut buf = vec![0u8; 8192];
        while let Ok(n) = stderr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            keep(&mut kept, &buf[..n]);
        }
        String::from_utf8_lossy(&kept).into_owned()
    })
}

fn keep(kept: &mut Vec<u8>, bytes: &[u8]) {
    let room = STDERR_LIMIT.saturating_sub(kept.len());
    kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
}

/// Checks the files' sums and feeds the archive to `pg_restore -f /dev/null`. A custom archive
/// is piped from our own read of the file, so the checksum and the decode see the same bytes in
/// one pass; `pg_restore --list` would only read the table of contents and misses truncation
/// and corruption.
async fn verify_data(
    tools: &Tools,
    format: DumpFormat,
    data: &Path,
    base: &Path,
    files: &[FileSum],
) -> Result<(), Error> {
    match format {
        DumpFormat::Custom => {
            let expected = files.first().ok_or_else(|| Error::Manifest {
                path: data.to_path_buf(),
                message: "lists no data file".to_owned(),
            })?;
            let mut command = Command::new(&tools.pg_restore);
            command
                .kill_on_drop(true)
                .arg("--file=/dev/null")
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            let mut child = spawn(command, &tools.pg_restore)?;
            let stderr_task = collect_stderr(&mut child);
            let mut stdin = child.stdin.take().expect("piped");
            let mut file = tokio::fs::File::open(data)
                .await
                .map_err(io(data, "opening"))?;
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            let mut buf = vec![0u8; CHUNK];
            let mut pipe_open = true;
            loop {
                let n = file.read(&mut buf).await.map_err(io(data, "reading"))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                size += n as u64;
                // pg_restore stops reading at a damaged entry; keep hashing the rest.
                if pipe_open && stdin.write_all(&buf[..n]).await.is_err() {
                    pipe_open = false;
                }
            }
            drop(stdin);
            let status = child
                .wait()
                .await
                .map_err(io(data, "waiting for pg_restore reading"))?;
            let stderr = stderr_task.await.unwrap_or_default();
            let sha = hex::encode(hasher.finalize());
            if size != expected.size || sha != expected.sha256 {
                return Err(Error::Corrupt {
                    path: data.to_path_buf(),
                    reason: format!(
                        "checksum mismatch: expected {} bytes with sha256 {}, read {size} bytes with sha256 {sha}",
                        expected.size, expected.sha256
                    ),
                    checksum: true,
                });
            }
            check_status(&tools.pg_restore, &status, &stderr).map_err(|e| Error::Corrupt {
                path: data.to_path_buf(),
                reason: format!("pg_restore cannot read it: {e}"),
                checksum: false,
            })
        }
        DumpFormat::Directory => {
            for file in files {
                let path = base.join(&file.name);
                let (size, sha) = hash_file(&path).await?;
                if size != file.size || sha != file.sha256 {
                    return Err(Error::Corrupt {
                        path,
                        reason: format!(
                            "checksum mismatch (expected sha256 {}, got {sha})",
                            file.sha256
                        ),
                        checksum: true,
                    });
                }
            }
            let mut command = Command::new(&tools.pg_restore);
            command.kill_on_drop(true).arg("--file=/dev/null").arg(data);
            run_tool(command, &tools.pg_restore)
                .await
                .map_err(|e| Error::Corrupt {
                    path: data.to_path_buf(),
                    reason: format!("pg_restore cannot read it: {e}"),
                    checksum: false,
                })
        }
    }
}

async fn hash_directory(dir: &Path, dir_name: &str) -> Result<Vec<FileSum>, Error> {
    let mut names = Vec::new();
    let mut entries = tokio::fs::read_dir(dir).await.map_err(io(dir, "reading"))?;
    while let Some(entry) = entries.next_entry().await.map_err(io(dir, "reading"))? {
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    let mut sums = Vec::with_capacity(names.len());
    for name in names {
        let path = dir.join(&name);
        let file = tokio::fs::File::open(&path)
            .await
            .map_err(io(&path, "opening"))?;
        file.sync_all().await.map_err(io(&path, "syncing"))?;
        let (size, sha256) = hash_file(&path).await?;
        sums.push(FileSum {
            name: format!("{dir_name}/{name}"),
            size,
            sha256,
        });
    }
    Ok(sums)
}

/// Size and hex SHA-256 of a file.
///
/// # Errors
/// When it cannot be read.
pub async fn hash_file(path: &Path) -> Result<(u64, String), Error> {
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(io(path, "opening"))?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = file.read(&mut buf).await.map_err(io(path, "reading"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((size, hex::encode(hasher.finalize())))
}

/// Copies a file, checksumming the copy as it is written, and fsyncs it.
///
/// # Errors
/// When reading or writing fails, or the copy's sum differs.
pub async fn copy_checked(from: &Path, to: &Path, expected_sha256: &str) -> Result<(), Error> {
    let tmp = to.with_extension("partial");
    let mut src = tokio::fs::File::open(from)
        .await
        .map_err(io(from, "opening"))?;
    let mut dst = tokio::fs::File::create(&tmp)
        .await
        .map_err(io(&tmp, "creating"))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = src.read(&mut buf).await.map_err(io(from, "reading"))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        dst.write_all(&buf[..n])
            .await
            .map_err(io(&tmp, "writing"))?;
    }
    dst.sync_all().await.map_err(io(&tmp, "syncing"))?;
    drop(dst);
    let (_, written) = hash_file(&tmp).await?;
    let read = hex::encode(hasher.finalize());
    if written != expected_sha256 || read != expected_sha256 {
        let _ = tokio::fs::remove_file(&tmp).await;
        return Err(Error::Corrupt {
            path: to.to_path_buf(),
            reason: format!("copy checksum {written} differs from {expected_sha256}"),
            checksum: true,
        });
    }
    rename(&tmp, to).await?;
    if let Some(parent) = to.parent() {
        fsync_dir(parent).await?;
    }
    Ok(())
}

async fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut file = tokio::fs::File::create(path)
        .await
        .map_err(io(path, "creating"))?;
    file.write_all(bytes).await.map_err(io(path, "writing"))?;
    file.sync_all().await.map_err(io(path, "syncing"))
}

async fn rename(from: &Path, to: &Path) -> Result<(), Error> {
    tokio::fs::rename(from, to)
        .await
        .map_err(io(to, "renaming into place"))
}

/// fsyncs a directory, so the renames in it survive a crash.
///
/// # Errors
/// When the directory cannot be opened or synced.
pub async fn fsync_dir(dir: &Path) -> Result<(), Error> {
    let file = tokio::fs::File::open(dir)
        .await
        .map_err(io(dir, "opening"))?;
    file.sync_all().await.map_err(io(dir, "syncing"))
}

/// Removes a file or a directory tree; a missing path is fine.
///
/// # Errors
/// When it exists and cannot be removed.
pub async fn remove_any(path: &Path) -> Result<(), Error> {
    let result = match tokio::fs::symlink_metadata(path).await {
        Err(_) => return Ok(()),
        Ok(meta) if meta.is_dir() => tokio::fs::remove_dir_all(path).await,
        Ok(_) => tokio::fs::remove_file(path).await,
    };
    match result {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Io {
            what: "removing",
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

fn io<'a>(path: &'a Path, what: &'static str) -> impl Fn(std::io::Error) -> Error + 'a {
    move |source| Error::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}
