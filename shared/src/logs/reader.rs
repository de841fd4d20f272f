//! The resumable, rotation-aware reader behind `logs.scan_errors`: from a source's cursors (one
//! per live file: device, inode, offset, and a hash of the file's first bytes) it reads every
//! complete line written since, exactly once, and returns the new cursors with the counts.
//!
//! Rotation and truncation, decided per live file:
//! - same device and inode, size ≥ offset, same head hash: continue at the offset;
//! - same inode but shorter than the offset, or a different head: the file was truncated or
//!   replaced in place (copytruncate); read it from the start;
//! - another inode: the file was rotated. The old inode is looked up among the directory's
//!   files (rotated generations keep their inode across a rename) and read from the offset to
//!   its end, then the new file from 0. If the old inode is gone (compressed or deleted before
//!   it was finished) the run records a gap.
//!
//! The reader does IO on files only; the cursors are loaded and committed by
//! `store::log_cursors`, in one transaction with the counts, so a run that dies before the
//! commit leaves the cursors where they were and the next run reads the same lines again, once.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::settings::{SourceSettings, glob_matches};
use super::signature::{LineSeverity, classify, normalise};

/// Bytes of a file's head that its cursor hashes.
pub const HEAD_LEN: u64 = 256;
/// A line longer than this is cut (the rest is counted as part of it, not as new lines).
const MAX_LINE: usize = 1 << 20;
/// Characters of an example line kept.
const EXAMPLE_CHARS: usize = 500;

/// Where reading of one live file stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cursor {
    /// The live file's path (the key: one cursor per path of a source).
    pub path: String,
    /// Device id of the file the offset refers to.
    pub device: u64,
    /// Inode of the file the offset refers to (the old one while a rotated file is unfinished).
    pub inode: u64,
    /// Bytes of that file already read (always at a line boundary).
    pub offset: u64,
    /// How many bytes of the head `head_hash` covers.
    pub head_len: u64,
    /// SHA-256 of the file's first `head_len` bytes.
    pub head_hash: Vec<u8>,
}

/// Lines of one severity and signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Count {
    /// How many lines.
    pub count: u64,
    /// The first such line's message.
    pub example: String,
}

/// A stretch of a source that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Gap {
    /// The live file.
    pub path: String,
    /// What happened.
    pub reason: String,
}

/// What one read of a source produced.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Batch {
    /// The cursors to store, one per live file.
    pub cursors: Vec<Cursor>,
    /// Lines by `(severity, signature)`; the signature is empty for the per-severity totals
    /// (every line counts there), and set only for warning and worse.
    pub counts: BTreeMap<(LineSeverity, String), Count>,
    /// Bytes read.
    pub bytes_read: u64,
    /// Complete lines read.
    pub lines_read: u64,
    /// Bytes left for the next run because the budget ran out.
    pub backlog_bytes: u64,
    /// Stretches that could not be read.
    pub gaps: Vec<Gap>,
    /// Lines per severity, folded into `counts` when reading ends (an array in the hot loop,
    /// not a map lookup per line).
    by_severity: [u64; 6],
}

impl Batch {
    /// Whether storing this batch would change anything: lines read, a gap, or a cursor that
    /// moved. A run with nothing new commits nothing.
    #[must_use]
    pub fn changes(&self, previous: &[Cursor]) -> bool {
        let key = |c: &Cursor| (c.path.clone(), c.device, c.inode, c.offset);
        let mut before: Vec<_> = previous.iter().map(key).collect();
        let mut after: Vec<_> = self.cursors.iter().map(key).collect();
        before.sort();
        after.sort();
        self.lines_read > 0 || !self.gaps.is_empty() || before != after
    }

    fn count_line(&mut self, source: &SourceSettings, line: &[u8]) {
        self.lines_read += 1;
        let classified = classify(source.format, line);
        bump(&mut self.counts, classified.severity, String::new(), || {
            String::new()
        });
        if let Some(message) = classified.message {
            let signature = normalise(&message);
            bump(&mut self.counts, classified.severity, signature, || {
                message.chars().take(EXAMPLE_CHARS).collect()
            });
        }
    }
}

fn bump(
    counts: &mut BTreeMap<(LineSeverity, String), Count>,
    severity: LineSeverity,
    signature: String,
    example: impl FnOnce() -> String,
) {
    counts
        .entry((severity, signature))
        .or_insert_with(|| Count {
            count: 0,
            example: example(),
        })
        .count += 1;
}

/// Reads the lines of `source` written since `previous`, at most about `budget` bytes (always
/// ending at a line boundary).
///
/// # Errors
/// When the source's directory cannot be read, or a file read fails.
pub fn read_source(source: &SourceSettings, previous: &[Cursor], budget: u64) -> io::Result<Batch> {
    let (directory, pattern) = source.split();
    let mut live: Vec<PathBuf> = Vec::new();
    for entry in fs::read_dir(&directory)? {
        let entry = entry?;
        let name = entry.file_name();
        if glob_matches(&pattern, &name.to_string_lossy())
            && fs::metadata(entry.path()).is_ok_and(|m| m.is_file())
        {
            live.push(entry.path());
        }
    }
    live.sort();
    let mut batch = Batch::default();
    let mut remaining_budget = budget;
    for path in &live {
        let key = path.to_string_lossy().into_owned();
        let cursor = previous.iter().find(|c| c.path == key);
        let next = read_file(
            source,
            &directory,
            path,
            cursor,
            &mut remaining_budget,
            &mut batch,
        )?;
        batch.cursors.push(next);
    }
    // Cursors of files that vanished without a successor are dropped: nothing left to read.
    for (idx, severity) in LineSeverity::ALL.iter().enumerate() {
        if batch.by_severity[idx] > 0 {
            batch.counts.insert(
                (*severity, String::new()),
                Count {
                    count: batch.by_severity[idx],
                    example: String::new(),
                },
            );
        }
    }
    Ok(batch)
}

fn read_file(
    source: &SourceSettings,
    directory: &Path,
    path: &Path,
    cursor: Option<&Cursor>,
    budget: &mut u64,
    batch: &mut Batch,
) -> io::Result<Cursor> {
    let key = path.to_string_lossy().into_owned();
    let mut file = File::open(path)?;
    let metadata = file.metadata()?;
    let identity = (metadata.dev(), metadata.ino());
    let mut start = 0;
    if let Some(cursor) = cursor {
        if (cursor.device, cursor.inode) == identity {
            if metadata.len() >= cursor.offset && head_matches(&mut file, cursor)? {
                start = cursor.offset;
            } else {
                // Truncated in place (copytruncate) or replaced: the lines written since the
                // last run are in the copy, if one is here (a generation with the cursor's
                // head, at least as long as its offset); finish it first.
                tracing::info!(path = %key, offset = cursor.offset, "log file truncated or replaced, reading it from the start");
                if let Some(copy) = find_copy(directory, path, cursor)? {
                    let mut copy_file = File::open(&copy)?;
                    let (end, finished) =
                        read_lines(source, &mut copy_file, cursor.offset, true, budget, batch)?;
                    if !finished {
                        // Out of budget inside the copy: the copy's unread rest is left out
                        // (a copy has no identity of its own to resume from).
                        batch.gaps.push(Gap {
                            path: key.clone(),
                            reason: format!(
                                "the budget ran out in the copy {} of a truncated file; its bytes after {end} were not read",
                                copy.display()
                            ),
                        });
                    }
                }
            }
        } else {
            match find_inode(directory, cursor.device, cursor.inode)? {
                Some(old_path) => {
                    let mut old = File::open(&old_path)?;
                    if head_matches(&mut old, cursor)? {
                        let (end, finished) =
                            read_lines(source, &mut old, cursor.offset, true, budget, batch)?;
                        if !finished {
                            // The budget ran out inside the rotated file: keep pointing at it.
                            batch.backlog_bytes += old.metadata()?.len().saturating_sub(end)
                                + metadata.len();
                            return Ok(Cursor {
                                offset: end,
                                ..cursor.clone()
                            });
                        }
                    } else {
                        batch.gaps.push(Gap {
                            path: key.clone(),
                            reason: format!(
                                "the rotated file {} holds other data than the cursor's; its unread lines were skipped",
                                old_path.display()
                            ),
                        });
                    }
                }
                None => batch.gaps.push(Gap {
                    path: key.clone(),
                    reason: format!(
                        "the rotated file (inode {}) is gone (compressed or deleted before it was read to its end); lines after byte {} of it were not read",
                        cursor.inode, cursor.offset
                    ),
                }),
            }
        }
    }
    let (end, finished) = read_lines(source, &mut file, start, false, budget, batch)?;
    if !finished {
        batch.backlog_bytes += file.metadata()?.len().saturating_sub(end);
    }
    let (head_len, head_hash) = head_hash(&mut file, HEAD_LEN)?;
    Ok(Cursor {
        path: key,
        device: identity.0,
        inode: identity.1,
        offset: end,
        head_len,
        head_hash,
    })
}

/// Reads lines from `start`; returns the offset after the last line consumed and whether the
/// file was read to its end (false when the budget ran out). A final line without a newline is
/// consumed only from a rotated file (`at_eof_is_line`): the live file's writer may be halfway
/// through it.
fn read_lines(
    source: &SourceSettings,
    file: &mut File,
    start: u64,
    at_eof_is_line: bool,
    budget: &mut u64,
    batch: &mut Batch,
) -> io::Result<(u64, bool)> {
    file.seek(SeekFrom::Start(start))?;
    let mut offset = start;
    let mut buffer = vec![0_u8; 1 << 20];
    let mut filled = 0;
    loop {
        if *budget == 0 {
            return Ok((offset, false));
        }
        let n_read = file.read(&mut buffer[filled..])?;
        let eof = n_read == 0;
        filled += n_read;
        let mut consumed = 0;
        while let Some(newline) = memchr::memchr(b'\n', &buffer[consumed..filled]) {
            let line = &buffer[consumed..consumed + newline];
            batch.count_line(source, line);
            let len = newline as u64 + 1;
            consumed += newline + 1;
            offset += len;
            batch.bytes_read += len;
            *budget = budget.saturating_sub(len);
            if *budget == 0 {
                return Ok((offset, false));
            }
        }
        if eof {
            if at_eof_is_line && consumed < filled {
                batch.count_line(source, &buffer[consumed..filled]);
                let len = (filled - consumed) as u64;
                offset += len;
                batch.bytes_read += len;
                *budget = budget.saturating_sub(len);
            }
            return Ok((offset, true));
        }
        if consumed == 0 && filled == buffer.len() {
            if buffer.len() >= MAX_LINE * 4 {
                // A monster line: count it as one and move on.
                batch.count_line(source, &buffer[..MAX_LINE]);
                offset += filled as u64;
                batch.bytes_read += filled as u64;
                *budget = budget.saturating_sub(filled as u64);
                filled = 0;
                continue;
            }
            buffer.resize(buffer.len() * 2, 0);
            continue;
        }
        buffer.copy_within(consumed..filled, 0);
        filled -= consumed;
    }
}

/// Whether the file's first `cursor.head_len` bytes still hash to `cursor.head_hash`.
fn head_matches(file: &mut File, cursor: &Cursor) -> io::Result<bool> {
    let (len, hash) = head_hash(file, cursor.head_len)?;
    Ok(len == cursor.head_len && hash == cursor.head_hash)
}

/// SHA-256 of the first `up_to` bytes (fewer if the file is shorter), with the length hashed.
fn head_hash(file: &mut File, up_to: u64) -> io::Result<(u64, Vec<u8>)> {
    file.seek(SeekFrom::Start(0))?;
    let mut head = Vec::with_capacity(usize::try_from(up_to).unwrap_or(256));
    file.take(up_to).read_to_end(&mut head)?;
    Ok((head.len() as u64, Sha256::digest(&head).to_vec()))
}

/// A plain generation of `live` (`<name>.<anything>`, not compressed) whose head is the
/// cursor's and which holds at least the cursor's offset: the copy copytruncate made.
fn find_copy(directory: &Path, live: &Path, cursor: &Cursor) -> io::Result<Option<PathBuf>> {
    let Some(live_name) = live.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Ok(None);
    };
    let prefix = format!("{live_name}.");
    let mut candidates: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
    for entry in fs::read_dir(directory)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(&prefix)
            || name.ends_with(".zst")
            || name.ends_with(".gz")
            || name.ends_with(".partial")
        {
            continue;
        }
        if let Ok(metadata) = fs::symlink_metadata(entry.path())
            && metadata.is_file()
            && metadata.len() >= cursor.offset
        {
            candidates.push((metadata.modified()?, entry.path()));
        }
    }
    // Newest first: the latest copy is the one made after the last run.
    candidates.sort_by(|a, b| b.cmp(a));
    for (_, candidate) in candidates {
        if head_matches(&mut File::open(&candidate)?, cursor)? {
            return Ok(Some(candidate));
        }
    }
    Ok(None)
}

/// The regular file of `directory` with this device and inode (a rotated generation).
fn find_inode(directory: &Path, device: u64, inode: u64) -> io::Result<Option<PathBuf>> {
    for entry in fs::read_dir(directory)? {
        let entry = entry?;
        if let Ok(metadata) = fs::symlink_metadata(entry.path())
            && metadata.is_file()
            && metadata.dev() == device
            && metadata.ino() == inode
        {
            return Ok(Some(entry.path()));
        }
    }
    Ok(None)
}
