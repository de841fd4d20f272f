//! Rotation of one `[[logs.targets]]` entry: rename (or copy and truncate) the live files that are
//! due, compress every generation but the newest, prune by count and age.
//!
//! Everything here is plain file-system work (blocking; handlers run it on a blocking thread).
//! Invariants, each relied on by the tests in `tests/system/logs_rotate.rs`:
//! - Only entries of the target's `directory` whose name matches its `pattern` (live files) or is
//!   a generation of such a name (`<name>.<UTC stamp>[.<n>][.zst|.gz]`) are ever renamed,
//!   compressed or deleted. Symlinks are never followed, renamed or deleted (they are reported).
//! - The newest generation is never compressed (delaycompress): a writer that has not reopened
//!   yet may still be appending to it.
//! - A compressed file appears under its final name only complete: it is written as
//!   `<gen>.zst.partial`, fsynced, renamed, the directory fsynced, and only then is the plain
//!   generation removed. A `.partial` left by a crash is removed by the next run.
//! - Pruning runs on every job, whether or not anything was rotated.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::settings::{Compression, RotateMode, TargetSettings, glob_matches, parse_signal};

/// Why a rotation step failed.
#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    /// A file-system call failed.
    #[error("{what} {}", path.display())]
    Io {
        /// What was being done (`renaming`, `compressing`, ...).
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The writer could not be told to reopen its file.
    #[error("cannot make the writer reopen {}: {message}", path.display())]
    Reopen {
        /// The live file.
        path: PathBuf,
        /// Why.
        message: String,
    },
}

fn io_error<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RotateError + 'a {
    move |source| RotateError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// What one target's rotation did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TargetReport {
    /// The target's name.
    pub target: String,
    /// Live files renamed or copied, as `(live name, generation name)`.
    pub rotated: Vec<(String, String)>,
    /// Generations compressed (their new names).
    pub compressed: Vec<String>,
    /// Generations deleted.
    pub pruned: Vec<String>,
    /// Bytes the deletions freed.
    pub pruned_bytes: u64,
    /// Symlinks in the directory that matched, left alone.
    pub skipped_symlinks: Vec<String>,
    /// Problems that did not stop the run (a writer that did not reopen in time, ...).
    pub warnings: Vec<String>,
}

/// Why a live file is due for rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Due {
    /// It reached `rotate_size`.
    Size,
    /// Its newest generation (or its creation) is `rotate_age` old.
    Age,
}

/// One live file of a target, as `upkeepctl logs targets` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LiveFile {
    /// The file.
    pub path: PathBuf,
    /// Its size in bytes.
    pub size: u64,
    /// Its generations, oldest first.
    pub generations: Vec<Generation>,
    /// Whether it is due now, and why.
    pub due: Option<Due>,
    /// When it becomes due by age, if `rotate_age` is set and that is known.
    pub next_by_age: Option<DateTime<Utc>>,
}

/// One rotated generation.
#[derive(Debug, Clone, Serialize)]
pub struct Generation {
    /// The file.
    pub path: PathBuf,
    /// When it was rotated (the name's stamp; for `postgres` targets the file's mtime).
    pub rotated_at: DateTime<Utc>,
    /// Order among generations with the same stamp.
    pub seq: u32,
    /// Whether it is compressed (`.zst` or `.gz`).
    pub compressed: bool,
    /// Its size in bytes.
    pub size: u64,
}

/// The format of the stamp in generation names: UTC, sortable, no `:` (safe everywhere).
pub const STAMP_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// A target's directory as rotation sees it.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// Live files (regular files whose name matches the pattern), by name.
    pub live: BTreeMap<String, fs::Metadata>,
    /// Generations by the live name they belong to, oldest first.
    pub generations: BTreeMap<String, Vec<Generation>>,
    /// Matching names that are symlinks (never touched).
    pub symlinks: Vec<String>,
    /// `.partial` files a crashed compression left.
    pub partials: Vec<PathBuf>,
}

/// Reads the target's directory. `protected` names (for `postgres` targets, the files
/// PostgreSQL writes now) are live files; in `postgres` mode every other matching file is a
/// generation.
///
/// # Errors
/// When the directory cannot be read.
pub fn list(target: &TargetSettings, protected: &[String]) -> Result<Listing, RotateError> {
    let mut listing = Listing::default();
    let entries =
        fs::read_dir(&target.directory).map_err(io_error("reading", &target.directory))?;
    for entry in entries {
        let entry = entry.map_err(io_error("reading", &target.directory))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let path = entry.path();
        // symlink_metadata: never follow a link.
        let Ok(metadata) = fs::symlink_metadata(&path) else {
            continue;
        };
        if let Some(base) = name.strip_suffix(".partial")
            && parse_generation(target, base).is_some()
        {
            if metadata.file_type().is_file() {
                listing.partials.push(path);
            }
            continue;
        }
        let generation = parse_generation(target, &name);
        let is_live = generation.is_none() && glob_matches(&target.pattern, &name);
        if generation.is_none() && !is_live {
            continue;
        }
        if metadata.file_type().is_symlink() {
            listing.symlinks.push(name);
            continue;
        }
        if !metadata.file_type().is_file() {
            continue;
        }
        if target.mode == RotateMode::Postgres {
            let plain = strip_compression(&name).0;
            if protected.iter().any(|p| p == &name) {
                listing.live.insert(name, metadata);
            } else if glob_matches(&target.pattern, plain) {
                listing
                    .generations
                    .entry(String::new())
                    .or_default()
                    .push(Generation {
                        path,
                        rotated_at: mtime(&metadata),
                        seq: 0,
                        compressed: plain.len() != name.len(),
                        size: metadata.len(),
                    });
            }
            continue;
        }
        if let Some((base, rotated_at, seq, compressed)) = generation {
            listing
                .generations
                .entry(base)
                .or_default()
                .push(Generation {
                    path,
                    rotated_at,
                    seq,
                    compressed,
                    size: metadata.len(),
                });
        } else {
            listing.live.insert(name, metadata);
        }
    }
    for generations in listing.generations.values_mut() {
        generations
            .sort_by(|a, b| (a.rotated_at, a.seq, &a.path).cmp(&(b.rotated_at, b.seq, &b.path)));
    }
    listing.symlinks.sort();
    Ok(listing)
}

/// The live files of a target with their generations and when they are due.
///
/// # Errors
/// When the directory cannot be read.
pub fn plan(
    target: &TargetSettings,
    protected: &[String],
    now: DateTime<Utc>,
) -> Result<Vec<LiveFile>, RotateError> {
    let listing = list(target, protected)?;
    let mut files = Vec::new();
    for (name, metadata) in &listing.live {
        let key = if target.mode == RotateMode::Postgres {
            ""
        } else {
            name.as_str()
        };
        let generations = listing.generations.get(key).cloned().unwrap_or_default();
        let (due, next_by_age) = due(target, metadata, &generations, now);
        files.push(LiveFile {
            path: target.directory.join(name),
            size: metadata.len(),
            generations,
            due,
            next_by_age,
        });
    }
    Ok(files)
}

/// How a writer is told to reopen, and how long to wait for it.
fn due(
    target: &TargetSettings,
    metadata: &fs::Metadata,
    generations: &[Generation],
    now: DateTime<Utc>,
) -> (Option<Due>, Option<DateTime<Utc>>) {
    if target.mode == RotateMode::Postgres {
        return (None, None);
    }
    // notifempty: an empty file is never rotated.
    let non_empty = metadata.len() > 0;
    let by_size = target
        .rotate_size
        .is_some_and(|size| metadata.len() >= size.bytes());
    let next_by_age = target.rotate_age.and_then(|age| {
        // Without a generation the file's creation time (statx birth) is the reference; a file
        // system that does not report it is rotated by age only after a first size rotation.
        let since = generations
            .last()
            .map(|g| g.rotated_at)
            .or_else(|| metadata.created().ok().map(DateTime::<Utc>::from))?;
        chrono::Duration::from_std(age).ok().map(|age| since + age)
    });
    let by_age = next_by_age.is_some_and(|at| at <= now);
    let due = if !non_empty {
        None
    } else if by_size {
        Some(Due::Size)
    } else if by_age {
        Some(Due::Age)
    } else {
        None
    };
    (due, next_by_age)
}

/// Rotates, compresses and prunes one target. `protected` lists the file names PostgreSQL
/// writes now (`postgres` mode only).
///
/// # Errors
/// When the directory cannot be read or a rename, copy, compression or deletion fails; what was
/// done before the failure stays done (every step leaves the directory consistent).
pub fn run(
    target: &TargetSettings,
    protected: &[String],
    now: DateTime<Utc>,
) -> Result<TargetReport, RotateError> {
    let mut report = TargetReport {
        target: target.name.clone(),
        ..TargetReport::default()
    };
    let listing = list(target, protected)?;
    for partial in &listing.partials {
        remove_regular_file(partial)?;
    }
    report.skipped_symlinks = listing.symlinks.clone();
    if target.mode != RotateMode::Postgres {
        for (name, metadata) in &listing.live {
            let generations = listing.generations.get(name).cloned().unwrap_or_default();
            if due(target, metadata, &generations, now).0.is_none() {
                continue;
            }
            let generation = rotate_one(target, name, now, &mut report)?;
            report.rotated.push((name.clone(), generation));
        }
    }
    // Re-read: the rotations above added generations.
    maintain_into(target, protected, now, &mut report)?;
    Ok(report)
}

/// The part of [`run`] that follows the renames: removes `.partial` files a crash left,
/// prunes generations by count and age, and compresses every generation but the newest. It
/// never renames a live file. upkeep's own log file (`telemetry::file`) rotates in-process and
/// calls this for the rest, so both follow the same rules.
///
/// # Errors
/// As [`run`].
pub fn maintain(
    target: &TargetSettings,
    protected: &[String],
    now: DateTime<Utc>,
) -> Result<TargetReport, RotateError> {
    let mut report = TargetReport {
        target: target.name.clone(),
        ..TargetReport::default()
    };
    let listing = list(target, protected)?;
    for partial in &listing.partials {
        remove_regular_file(partial)?;
    }
    maintain_into(target, protected, now, &mut report)?;
    Ok(report)
}

fn maintain_into(
    target: &TargetSettings,
    protected: &[String],
    now: DateTime<Utc>,
    report: &mut TargetReport,
) -> Result<(), RotateError> {
    let listing = list(target, protected)?;
    for generations in listing.generations.values() {
        let kept = prune(target, generations, now, report)?;
        compress_all_but_newest(target, &kept, report)?;
    }
    Ok(())
}

/// Renames (or copies and truncates) one live file to a new generation; returns its name.
fn rotate_one(
    target: &TargetSettings,
    name: &str,
    now: DateTime<Utc>,
    report: &mut TargetReport,
) -> Result<String, RotateError> {
    let live = target.directory.join(name);
    let generation = generation_name(&target.directory, name, now);
    let generation_path = target.directory.join(&generation);
    match target.mode {
        RotateMode::RenameReopen => {
            // rename(2) does not follow a symlink at the source and the listing only holds
            // regular files; the destination name is new, so nothing is overwritten.
            fs::rename(&live, &generation_path).map_err(io_error("renaming", &live))?;
            sync_directory(&target.directory)?;
            if let Err(warning) = reopen(target, &live) {
                report.warnings.push(warning);
            }
        }
        RotateMode::Copytruncate => copy_truncate(&live, &generation_path, &target.directory)?,
        RotateMode::Postgres => {}
    }
    tracing::info!(log_target = %target.name, file = %name, generation = %generation, "log rotated");
    Ok(generation)
}

/// Tells the writer to reopen and waits for the live file to reappear. Returns a warning when
/// the writer could not be told or did not reopen in time; the rotation itself stands (lines
/// still go to the newest generation, which is never compressed).
fn reopen(target: &TargetSettings, live: &Path) -> Result<(), String> {
    let deadline = Instant::now() + target.reopen_timeout;
    if let Some(signal) = &target.reopen_signal {
        let text = fs::read_to_string(&signal.pid_file)
            .map_err(|e| format!("cannot read pid file {}: {e}", signal.pid_file.display()))?;
        let pid: i32 = text.trim().parse().map_err(|_| {
            format!(
                "pid file {} does not hold a pid: {:?}",
                signal.pid_file.display(),
                text.trim()
            )
        })?;
        if pid <= 0 {
            return Err(format!(
                "pid file {} holds {pid}",
                signal.pid_file.display()
            ));
        }
        let signo = parse_signal(&signal.signal)?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signo)
            .map_err(|e| format!("kill -{} {pid}: {e}", signal.signal))?;
    } else if let Some(command) = &target.reopen_command {
        let Some((program, args)) = command.split_first() else {
            return Err("empty reopen_command".to_owned());
        };
        let mut child = std::process::Command::new(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => break,
                Ok(Some(status)) => return Err(format!("{program} exited with {status}")),
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!(
                        "{program} did not finish within {:?}",
                        target.reopen_timeout
                    ));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(e) => return Err(format!("waiting for {program}: {e}")),
            }
        }
    }
    while fs::symlink_metadata(live).is_err() {
        if Instant::now() >= deadline {
            return Err(format!(
                "the writer did not create {} within {:?} of the reopen request",
                live.display(),
                target.reopen_timeout
            ));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// copytruncate: copies `live` to `generation`, catching up with appends until the size holds,
/// then truncates `live` to zero. Lines appended between the last size check and the
/// truncation are lost: that is the window README documents (microseconds; a test measures it).
fn copy_truncate(live: &Path, generation: &Path, directory: &Path) -> Result<(), RotateError> {
    let mut source = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(live)
        .map_err(io_error("opening", live))?;
    let mut copy = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(generation)
        .map_err(io_error("creating", generation))?;
    let mut copied: u64 = 0;
    let mut buffer = vec![0_u8; 1 << 16];
    loop {
        let len = source.metadata().map_err(io_error("reading", live))?.len();
        if len <= copied {
            break;
        }
        source
            .seek(SeekFrom::Start(copied))
            .map_err(io_error("reading", live))?;
        let mut remaining = len - copied;
        while remaining > 0 {
            let want = usize::try_from(remaining.min(buffer.len() as u64)).unwrap_or(buffer.len());
            let n_read = source
                .read(&mut buffer[..want])
                .map_err(io_error("reading", live))?;
            if n_read == 0 {
                break;
            }
            copy.write_all(&buffer[..n_read])
                .map_err(io_error("writing", generation))?;
            remaining -= n_read as u64;
            copied += n_read as u64;
        }
    }
    source.set_len(0).map_err(io_error("truncating", live))?;
    copy.sync_all().map_err(io_error("syncing", generation))?;
    sync_directory(directory)
}

/// Deletes generations beyond `keep` and older than `max_age`; returns the ones kept.
fn prune(
    target: &TargetSettings,
    generations: &[Generation],
    now: DateTime<Utc>,
    report: &mut TargetReport,
) -> Result<Vec<Generation>, RotateError> {
    let max_age = target
        .max_age
        .and_then(|age| chrono::Duration::from_std(age).ok());
    let mut kept = Vec::new();
    for (idx_from_newest, generation) in generations.iter().rev().enumerate() {
        let over_count = target.keep > 0 && idx_from_newest >= target.keep as usize;
        let too_old = max_age.is_some_and(|age| now - generation.rotated_at > age);
        if over_count || too_old {
            remove_regular_file(&generation.path)?;
            report.pruned_bytes += generation.size;
            report.pruned.push(file_name(&generation.path));
        } else {
            kept.push(generation.clone());
        }
    }
    kept.reverse();
    Ok(kept)
}

/// Compresses every uncompressed generation except the newest (delaycompress).
fn compress_all_but_newest(
    target: &TargetSettings,
    generations: &[Generation],
    report: &mut TargetReport,
) -> Result<(), RotateError> {
    let Some(extension) = target.compress.extension() else {
        return Ok(());
    };
    let Some((_newest, older)) = generations.split_last() else {
        return Ok(());
    };
    for generation in older.iter().filter(|g| !g.compressed) {
        let mut name = generation.path.as_os_str().to_owned();
        name.push(extension);
        let compressed = PathBuf::from(name);
        compress_file(&generation.path, &compressed, target.compress)?;
        sync_directory(&target.directory)?;
        remove_regular_file(&generation.path)?;
        report.compressed.push(file_name(&compressed));
    }
    Ok(())
}

/// Compresses `source` into `destination` through `destination.partial`: write, fsync,
/// rename, fsync the directory. The destination keeps the source's mtime (age pruning of
/// `postgres` targets reads it).
///
/// # Errors
/// When reading, writing or renaming fails; the partial file is removed then.
pub fn compress_file(
    source: &Path,
    destination: &Path,
    compression: Compression,
) -> Result<(), RotateError> {
    let mut partial_name = destination.as_os_str().to_owned();
    partial_name.push(".partial");
    let partial = PathBuf::from(partial_name);
    let result = (|| {
        let mut input = OpenOptions::new()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
            .open(source)
            .map_err(io_error("opening", source))?;
        let modified = input
            .metadata()
            .and_then(|m| m.modified())
            .map_err(io_error("reading", source))?;
        let output = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&partial)
            .map_err(io_error("creating", &partial))?;
        let output = match compression {
            Compression::Zstd => {
                let mut encoder = zstd::stream::Encoder::new(output, 3)
                    .map_err(io_error("compressing", source))?;
                io::copy(&mut input, &mut encoder).map_err(io_error("compressing", source))?;
                encoder.finish().map_err(io_error("compressing", source))?
            }
            Compression::Gzip => {
                let mut encoder =
                    flate2::write::GzEncoder::new(output, flate2::Compression::default());
                io::copy(&mut input, &mut encoder).map_err(io_error("compressing", source))?;
                encoder.finish().map_err(io_error("compressing", source))?
            }
            Compression::None => {
                let mut output = output;
                io::copy(&mut input, &mut output).map_err(io_error("copying", source))?;
                output
            }
        };
        output.sync_all().map_err(io_error("syncing", &partial))?;
        output
            .set_modified(modified)
            .map_err(io_error("setting the mtime of", &partial))?;
        drop(output);
        fs::rename(&partial, destination).map_err(io_error("renaming", &partial))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&partial);
    }
    result
}

/// Opens a generation for reading, decompressing `.zst` and `.gz` (for tests and the scanner).
///
/// # Errors
/// When the file cannot be opened.
pub fn open_decompressed(path: &Path) -> io::Result<Box<dyn Read>> {
    let file = File::open(path)?;
    let name = path.to_string_lossy();
    Ok(if name.ends_with(".zst") {
        Box::new(zstd::stream::Decoder::new(file)?)
    } else if name.ends_with(".gz") {
        Box::new(flate2::read::GzDecoder::new(file))
    } else {
        Box::new(file)
    })
}

/// `<name>.<stamp>`, or `<name>.<stamp>.<n>` with the first free `n`: several rotations in one
/// second get increasing numbers, so names sort in rotation order.
#[must_use]
pub fn generation_name(directory: &Path, name: &str, now: DateTime<Utc>) -> String {
    let stamp = now.format(STAMP_FORMAT);
    let base = format!("{name}.{stamp}");
    let taken = |candidate: &str| {
        ["", ".zst", ".gz", ".zst.partial", ".gz.partial"]
            .iter()
            .any(|ext| fs::symlink_metadata(directory.join(format!("{candidate}{ext}"))).is_ok())
    };
    if !taken(&base) {
        return base;
    }
    (1_u32..)
        .map(|seq| format!("{base}.{seq}"))
        .find(|candidate| !taken(candidate))
        .unwrap_or(base)
}

/// Parses `<base>.<stamp>[.<n>][.zst|.gz]` where `base` matches the target's pattern.
fn parse_generation(
    target: &TargetSettings,
    name: &str,
) -> Option<(String, DateTime<Utc>, u32, bool)> {
    if target.mode == RotateMode::Postgres {
        return None;
    }
    let (plain, compressed) = strip_compression(name);
    let (rest, seq) = match plain.rsplit_once('.') {
        Some((rest, digits))
            if !digits.is_empty()
                && digits.len() <= 6
                && digits.bytes().all(|b| b.is_ascii_digit()) =>
        {
            (rest, digits.parse().ok()?)
        }
        _ => (plain, 0),
    };
    let (base, stamp) = rest.rsplit_once('.')?;
    let rotated_at = chrono::NaiveDateTime::parse_from_str(stamp, STAMP_FORMAT)
        .ok()?
        .and_utc();
    if stamp.len() != 16 || !glob_matches(&target.pattern, base) {
        return None;
    }
    Some((base.to_owned(), rotated_at, seq, compressed))
}

fn strip_compression(name: &str) -> (&str, bool) {
    name.strip_suffix(".zst")
        .or_else(|| name.strip_suffix(".gz"))
        .map_or((name, false), |plain| (plain, true))
}

/// Deletes `path` only if it is a regular file (never a symlink or directory).
fn remove_regular_file(path: &Path) -> Result<(), RotateError> {
    match fs::symlink_metadata(path) {
        Ok(metadata) if metadata.file_type().is_file() => {
            fs::remove_file(path).map_err(io_error("deleting", path))
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error("reading", path)(e)),
    }
}

/// fsyncs a directory so renames and deletions in it are durable.
///
/// # Errors
/// When the directory cannot be opened or synced.
pub fn sync_directory(directory: &Path) -> Result<(), RotateError> {
    File::open(directory)
        .and_then(|dir| dir.sync_all())
        .map_err(io_error("syncing", directory))
}

fn mtime(metadata: &fs::Metadata) -> DateTime<Utc> {
    metadata
        .modified()
        .map(DateTime::<Utc>::from)
        .unwrap_or_else(|_| DateTime::<Utc>::from(SystemTime::UNIX_EPOCH))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The device and inode of a file, not following a symlink (used by the scanner too).
///
/// # Errors
/// When the file cannot be read.
pub fn identity(path: &Path) -> io::Result<(u64, u64)> {
    let metadata = fs::symlink_metadata(path)?;
    Ok((metadata.dev(), metadata.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::ByteSize;

    fn target(pattern: &str) -> TargetSettings {
        TargetSettings {
            name: "t".to_owned(),
            directory: PathBuf::from("/nonexistent"),
            pattern: pattern.to_owned(),
            rotate_size: Some(ByteSize(1)),
            ..TargetSettings::default()
        }
    }

    #[test]
    fn generation_names_parse_with_stamp_sequence_and_compression() {
        let t = target("*.log");
        let (base, at, seq, compressed) =
            parse_generation(&t, "app.log.20261129T000500Z.3.zst").expect("a generation");
        assert_eq!(base, "app.log");
        assert_eq!(at.to_rfc3339(), "2026-11-29T00:05:00+00:00");
        assert_eq!(seq, 3);
        assert!(compressed);
        assert!(parse_generation(&t, "app.log").is_none());
        assert!(parse_generation(&t, "other.txt.20261129T000500Z").is_none());
        assert!(parse_generation(&t, "app.log.2026-11-29").is_none());
    }
}
