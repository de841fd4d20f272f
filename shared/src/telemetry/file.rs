//! upkeep's own log file (`[telemetry] file`): rotated in-process by size and at each UTC
//! period boundary (`rotate_age`, one day by default), reopened on SIGHUP, compressed and pruned
//! by the same code as `logs.rotate` (`logs::rotate::{generation_name, maintain}`).
//!
//! Why not `tracing-appender`'s `RollingFileAppender` or `file-rotate`: the first rotates by
//! time only (no size limit, no compression) and names generations its own way; the second takes
//! one limit (bytes *or* time), compresses with gzip only and in place, and assumes nobody moves
//! its files (no reopen after an external `mv`). Neither follows our rules (dated UTC names,
//! compression through a fsynced partial file, never the newest generation, pruning by count
//! and age), which `logs::rotate` already implements and tests; this file only decides *when*
//! to rotate. `tracing-appender` still provides the non-blocking writer in front of it.
//!
//! Invariants:
//! - A line is written whole to exactly one file: rotation happens between two writes, under
//!   the same lock as the writes (the non-blocking worker hands over one formatted event per
//!   write).
//! - Rotation renames the live file to `<name>.<UTC stamp>[.n]`, fsyncs the directory, then
//!   creates the live file again; compression and pruning run on another thread, so the writer
//!   never waits for them, and never touch the newest generation or the live file.
//! - An empty file is never rotated.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::logs::rotate;
use crate::logs::settings::{RotateMode, TargetSettings};

use super::TelemetrySettings;

/// The log file writer: a cheap handle, shared by the non-blocking worker (writes) and the
/// telemetry task (SIGHUP reopen, idle rotation, periodic pruning).
#[derive(Clone)]
pub struct LogFile {
    state: Arc<Mutex<State>>,
    maintaining: Arc<AtomicBool>,
}

impl std::fmt::Debug for LogFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogFile").finish_non_exhaustive()
    }
}

struct State {
    /// The rules, as a `logs.rotate` target over the file's directory and name.
    target: TargetSettings,
    path: PathBuf,
    file: Option<File>,
    /// Bytes in the live file.
    size: u64,
    /// The UTC period (`rotate_age` slots since the epoch) of the live file's first line;
    /// `None` while it is empty.
    period: Option<i64>,
    rotate_size: u64,
    rotate_age: Duration,
    /// The last error printed to stderr, so a full disk is said once, not per line.
    last_error: Option<String>,
}

impl LogFile {
    /// Opens (creating) the file of `settings.file` for appending.
    ///
    /// # Errors
    /// When the file cannot be opened, naming it.
    pub fn open(settings: &TelemetrySettings) -> io::Result<Self> {
        let path = settings
            .file
            .clone()
            .ok_or_else(|| io::Error::other("no [telemetry] file configured"))?;
        let (directory, name) = split(&path)?;
        let target = TargetSettings {
            name: "upkeep".to_owned(),
            directory,
            pattern: name,
            mode: RotateMode::RenameReopen,
            keep: settings.keep,
            max_age: settings.max_age,
            compress: settings.compress,
            ..TargetSettings::default()
        };
        let mut state = State {
            target,
            path,
            file: None,
            size: 0,
            period: None,
            rotate_size: settings.rotate_size.bytes().max(1),
            rotate_age: settings.rotate_age.max(Duration::from_secs(1)),
            last_error: None,
        };
        state.reopen()?;
        Ok(Self {
            state: Arc::new(Mutex::new(state)),
            maintaining: Arc::new(AtomicBool::new(false)),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves a usable state (at worst a size off by a line).
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Closes the file and opens its path again (after an external `mv`, on SIGHUP).
    ///
    /// # Errors
    /// When the path cannot be opened; writes then retry it.
    pub fn reopen(&self) -> io::Result<()> {
        self.lock().reopen()
    }

    /// Rotates the file if it is due by its period (a daemon that logs nothing over midnight
    /// still starts a new file for the new day), then compresses and prunes in the background.
    pub fn rotate_if_due(&self) {
        let rotated = {
            let mut state = self.lock();
            let due = state.size > 0 && state.period != Some(state.current_period(Utc::now()));
            due && state.rotate_reporting(Utc::now())
        };
        if rotated {
            self.maintain_in_background();
        }
    }

    /// Compresses every generation but the newest and prunes by `keep` and `max_age`, on a
    /// thread of its own; a second request while one runs is dropped (the running one sees its
    /// files, or the next rotation does).
    pub fn maintain_in_background(&self) {
        if self.maintaining.swap(true, Ordering::AcqRel) {
            return;
        }
        let target = self.lock().target.clone();
        let maintaining = self.maintaining.clone();
        let spawned = std::thread::Builder::new()
            .name("upkeep-log-maintain".to_owned())
            .spawn(move || {
                if let Err(error) = rotate::maintain(&target, &[], Utc::now()) {
                    eprintln!("upkeep: compressing or pruning the log file's generations: {error}");
                }
                maintaining.store(false, Ordering::Release);
            });
        if spawned.is_err() {
            self.maintaining.store(false, Ordering::Release);
        }
    }

    /// Runs the maintenance on this thread (tests, start-up).
    ///
    /// # Errors
    /// As `logs::rotate::maintain`.
    pub fn maintain_now(&self) -> Result<rotate::TargetReport, rotate::RotateError> {
        // One maintenance at a time: two would compress the same generation.
        while self.maintaining.swap(true, Ordering::AcqRel) {
            std::thread::sleep(Duration::from_millis(5));
        }
        let target = self.lock().target.clone();
        let result = rotate::maintain(&target, &[], Utc::now());
        self.maintaining.store(false, Ordering::Release);
        result
    }
}

impl Write for LogFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let rotated = {
            let mut state = self.lock();
            let rotated = state.rotate_before_write(buf.len());
            state.write_all(buf)?;
            rotated
        };
        if rotated {
            self.maintain_in_background();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let mut state = self.lock();
        match state.file.as_mut() {
            Some(file) => file.flush(),
            None => Ok(()),
        }
    }
}

impl State {
    fn current_period(&self, now: DateTime<Utc>) -> i64 {
        let slot = i64::try_from(self.rotate_age.as_secs().max(1)).unwrap_or(i64::MAX);
        now.timestamp().div_euclid(slot)
    }

    fn reopen(&mut self) -> io::Result<()> {
        self.file = None;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("opening the log file {}: {e}", self.path.display()),
                )
            })?;
        let metadata = file.metadata()?;
        self.size = metadata.len();
        // A non-empty file from before a restart belongs to the period of its last write.
        self.period = (self.size > 0).then(|| {
            let modified = metadata
                .modified()
                .map_or_else(|_| Utc::now(), DateTime::<Utc>::from);
            self.current_period(modified)
        });
        self.file = Some(file);
        Ok(())
    }

    /// Rotates when the next `len` bytes would go to a file that is full or from an earlier
    /// period; returns whether it rotated.
    fn rotate_before_write(&mut self, len: usize) -> bool {
        let now = Utc::now();
        let period = self.current_period(now);
        let due = self.size > 0
            && (self.size >= self.rotate_size || self.period.is_some_and(|p| p != period));
        let rotated = due && self.rotate_reporting(now);
        if self.size == 0 && len > 0 {
            self.period = Some(period);
        }
        rotated
    }

    /// Rotates; a failure is printed to stderr and writing goes on to the current file.
    fn rotate_reporting(&mut self, now: DateTime<Utc>) -> bool {
        match self.rotate(now) {
            Ok(()) => {
                self.last_error = None;
                true
            }
            Err(error) => {
                self.report(&format!("rotating {}: {error}", self.path.display()));
                false
            }
        }
    }

    fn rotate(&mut self, now: DateTime<Utc>) -> io::Result<()> {
        if let Some(file) = self.file.as_mut() {
            file.flush()?;
        }
        let directory = self.target.directory.clone();
        let generation = directory.join(rotate::generation_name(
            &directory,
            &self.target.pattern,
            now,
        ));
        match std::fs::rename(&self.path, &generation) {
            Ok(()) => rotate::sync_directory(&directory).map_err(io::Error::other)?,
            // Moved away by someone else: start the file again at its path.
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        self.reopen()
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        if self.file.is_none()
            && let Err(error) = self.reopen()
        {
            self.report(&error.to_string());
            return Err(error);
        }
        let Some(file) = self.file.as_mut() else {
            return Err(io::Error::other("the log file is not open"));
        };
        match file.write_all(buf) {
            Ok(()) => {
                self.size += buf.len() as u64;
                Ok(())
            }
            Err(error) => {
                self.report(&format!("writing {}: {error}", self.path.display()));
                // Reopen on the next line: the file may have been removed or its disk freed.
                self.file = None;
                Err(error)
            }
        }
    }

    fn report(&mut self, message: &str) {
        if self.last_error.as_deref() != Some(message) {
            eprintln!("upkeep: {message}");
            self.last_error = Some(message.to_owned());
        }
    }
}

/// The directory and file name of an absolute log file path.
fn split(path: &Path) -> io::Result<(PathBuf, String)> {
    let name = path
        .file_name()
        .and_then(|name| name.to_str())
        .filter(|name| !name.is_empty())
        .ok_or_else(|| io::Error::other(format!("{} has no file name", path.display())))?;
    let directory = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .ok_or_else(|| io::Error::other(format!("{} has no directory", path.display())))?;
    Ok((directory.to_owned(), name.to_owned()))
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;
    use crate::logs::settings::Compression;
    use crate::settings::ByteSize;

    fn settings(dir: &Path, rotate_size: u64) -> TelemetrySettings {
        TelemetrySettings {
            file: Some(dir.join("upkeep.log")),
            rotate_size: ByteSize(rotate_size),
            keep: 100,
            compress: Compression::Zstd,
            ..TelemetrySettings::default()
        }
    }

    fn all_lines(dir: &Path) -> Vec<String> {
        let mut lines = Vec::new();
        for entry in std::fs::read_dir(dir).expect("the directory") {
            let path = entry.expect("an entry").path();
            let mut text = String::new();
            rotate::open_decompressed(&path)
                .expect("opening")
                .read_to_string(&mut text)
                .expect("reading");
            lines.extend(text.lines().map(str::to_owned));
        }
        lines.sort();
        lines
    }

    #[test]
    fn lines_go_whole_to_one_file_each_across_size_rotations() {
        let dir = tempfile::tempdir().expect("a directory");
        let mut log = LogFile::open(&settings(dir.path(), 200)).expect("opening");
        let mut expected = Vec::new();
        for idx in 0..100 {
            let line = format!("line {idx:04} {}\n", "x".repeat(40));
            log.write_all(line.as_bytes()).expect("writing");
            expected.push(line.trim_end().to_owned());
        }
        log.maintain_now().expect("maintaining");
        expected.sort();
        assert_eq!(all_lines(dir.path()), expected);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .expect("the directory")
            .map(|e| {
                e.expect("an entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        // 100 lines of 51 bytes, a new file once 200 bytes are reached: 4 lines a file.
        assert_eq!(names.len(), 25, "{names:?}");
        let plain: Vec<&String> = names
            .iter()
            .filter(|n| n.as_str() != "upkeep.log" && !n.ends_with(".zst"))
            .collect();
        assert_eq!(
            plain.len(),
            1,
            "only the newest generation stays plain: {names:?}"
        );
    }

    #[test]
    fn a_file_from_an_earlier_period_is_rotated_before_the_next_line() {
        let dir = tempfile::tempdir().expect("a directory");
        let path = dir.path().join("upkeep.log");
        std::fs::write(&path, "yesterday\n").expect("seeding");
        let yesterday = std::time::SystemTime::now() - Duration::from_secs(86_400);
        File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(yesterday))
            .expect("backdating");
        let mut log = LogFile::open(&settings(dir.path(), 1 << 20)).expect("opening");
        log.write_all(b"today\n").expect("writing");
        assert_eq!(std::fs::read_to_string(&path).expect("reading"), "today\n");
        assert_eq!(all_lines(dir.path()), ["today", "yesterday"]);
    }

    #[test]
    fn reopen_follows_the_path_after_an_external_move() {
        let dir = tempfile::tempdir().expect("a directory");
        let path = dir.path().join("upkeep.log");
        let mut log = LogFile::open(&settings(dir.path(), 1 << 20)).expect("opening");
        log.write_all(b"before\n").expect("writing");
        std::fs::rename(&path, dir.path().join("moved")).expect("moving");
        log.write_all(b"still old\n").expect("writing");
        log.reopen().expect("reopening");
        log.write_all(b"after\n").expect("writing");
        assert_eq!(std::fs::read_to_string(&path).expect("reading"), "after\n");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("moved")).expect("reading"),
            "before\nstill old\n"
        );
    }
}
