//! upkeep's own log file (`[telemetry] file`) written by a real worker daemon: size rotation
//! that loses and splits no line (every line counted across the generations, compressed ones
//! decompressed), the newest generation left uncompressed, and SIGHUP after an external `mv`
//! making the daemon reopen the path.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use upkeep_shared::logs::rotate;
use upkeep_shared::logs::settings::TargetSettings;
use uuid::Uuid;

use crate::support::{Deployment, eventually};

/// Every line of `path` (decompressed), failing on a line that is not a whole JSON object.
fn json_lines(path: &Path) -> Vec<serde_json::Value> {
    let mut text = String::new();
    rotate::open_decompressed(path)
        .and_then(|mut reader| reader.read_to_string(&mut text))
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "{} ends in the middle of a line",
        path.display()
    );
    text.lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| {
                panic!(
                    "a torn or foreign line in {} ({e}): {line:?}",
                    path.display()
                )
            })
        })
        .collect()
}

/// The log files of the directory: the live file, its generations and `moved.log`.
fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("reading the log directory")
        .map(|entry| entry.expect("an entry").path())
        .filter(|path| {
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            !name.ends_with(".partial") && (name.starts_with("upkeep.log") || name == "moved.log")
        })
        .collect();
    files.sort();
    files
}

/// How many lines of `files` mention each job id.
fn mentions(files: &[PathBuf], ids: &[Uuid]) -> BTreeMap<Uuid, usize> {
    let mut counts: BTreeMap<Uuid, usize> = ids.iter().map(|id| (*id, 0)).collect();
    for file in files {
        for entry in json_lines(file) {
            let line = entry.to_string();
            for (id, count) in &mut counts {
                if line.contains(&id.to_string()) {
                    *count += 1;
                }
            }
        }
    }
    counts
}

async fn wait_succeeded(ledger: &mut sqlx::PgConnection, ids: &[Uuid]) {
    let n_wanted = i64::try_from(ids.len()).expect("a small count");
    eventually(
        &format!("{n_wanted} pings succeeded"),
        Duration::from_secs(120),
        async || {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(DISTINCT job_id) FROM job_runs \
                 WHERE status = 'succeeded' AND job_id = ANY($1)",
            )
            .bind(ids)
            .fetch_one(&mut *ledger)
            .await
            .ok()?;
            (n == n_wanted).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn the_daemon_log_file_rotates_without_losing_a_line_and_reopens_on_sighup() {
    let dir = tempfile::tempdir().expect("a log directory");
    let live = dir.path().join("upkeep.log");
    let mut deployment = Deployment::new().await;
    deployment.write_config(&format!(
        "[telemetry]\nfile = \"{}\"\nrotate_size = \"16KiB\"\nkeep = 1000\ncompress = \"zstd\"\n",
        live.display()
    ));
    // Per-attempt lines (debug) make every job leave lines that name it.
    deployment.set_env("RUST_LOG", "info,upkeep_workers=debug");
    let mut ledger = deployment.ledger().await;
    let mut worker = deployment.start("upkeep-worker-reports", [] as [&str; 0]);
    eventually(
        "the worker's start in its log file",
        Duration::from_secs(30),
        async || {
            // Lenient while the daemon writes: whole-line checks come at the end.
            let started = log_files(dir.path()).iter().any(|file| {
                std::fs::read_to_string(file)
                    .unwrap_or_default()
                    .lines()
                    .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
                    .any(|e| e["message"] == "worker starting" && e["queue"] == "reports")
            });
            started.then_some(())
        },
    )
    .await;
    assert!(
        !worker.log().contains("worker starting"),
        "with a file, nothing goes to stdout: {}",
        worker.log()
    );

    // Act 1: enough jobs to fill the file several times over.
    let first = deployment.enqueue("system.ping", "{}", &["--count", "200"]);
    wait_succeeded(&mut ledger, &first).await;

    // Act 2: an external rotation (mv), then SIGHUP; the daemon writes the path again. The
    // daemon may be rotating the file itself at that moment (renamed, not yet created again):
    // the mv then finds no file, as logrotate would, and is tried again.
    eventually(
        "the live file moved away",
        Duration::from_secs(5),
        async || match std::fs::rename(&live, dir.path().join("moved.log")) {
            Ok(()) => Some(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(error) => panic!("moving the live file: {error}"),
        },
    )
    .await;
    let pid = Pid::from_raw(i32::try_from(worker.pid()).expect("a pid"));
    signal::kill(pid, Signal::SIGHUP).expect("sending SIGHUP");
    eventually(
        "the log file reopened at its path",
        Duration::from_secs(20),
        async || {
            let reopened = std::fs::read_to_string(&live)
                .unwrap_or_default()
                .contains("log file reopened on SIGHUP");
            reopened.then_some(())
        },
    )
    .await;
    let second = deployment.enqueue("system.ping", "{}", &["--count", "50"]);
    wait_succeeded(&mut ledger, &second).await;
    worker.sigterm().expect("stopping the worker");
    worker
        .wait_timeout(Duration::from_secs(30))
        .expect("the worker stops (and flushes its log)");

    // Assert: every job is named by the same number of lines, each line whole JSON.
    let files = log_files(dir.path());
    let all: Vec<Uuid> = first.iter().chain(&second).copied().collect();
    let counts = mentions(&files, &all);
    let per_job = counts[&all[0]];
    assert!(per_job >= 1, "no line names job {}", all[0]);
    let odd: Vec<_> = counts.iter().filter(|(_, n)| **n != per_job).collect();
    assert!(
        odd.is_empty(),
        "lines lost or repeated: {per_job} line(s) per job but {odd:?} (files {files:?})"
    );
    // An attempt's lines name it at the top level of the JSON object.
    let succeeded = files
        .iter()
        .flat_map(|file| json_lines(file))
        .find(|entry| {
            entry["message"] == "attempt succeeded"
                && entry["job_id"] == serde_json::json!(all[0].to_string())
        })
        .expect("the first job's `attempt succeeded` line, naming it");
    assert_eq!(
        (
            &succeeded["job_kind"],
            &succeeded["queue"],
            &succeeded["attempt"]
        ),
        (
            &serde_json::json!("system.ping"),
            &serde_json::json!("reports"),
            &serde_json::json!(1)
        ),
        "{succeeded}"
    );
    // The jobs after the reopen are in the new file, not the moved one.
    let moved = mentions(&[dir.path().join("moved.log")], &second);
    assert!(moved.values().all(|n| *n == 0), "{moved:?}");

    // Generations: several, the older ones compressed, the newest plain.
    let target = TargetSettings {
        name: "upkeep".to_owned(),
        directory: dir.path().to_owned(),
        pattern: "upkeep.log".to_owned(),
        ..TargetSettings::default()
    };
    let listing = rotate::list(&target, &[]).expect("listing the generations");
    let generations = listing
        .generations
        .get("upkeep.log")
        .cloned()
        .unwrap_or_default();
    assert!(generations.len() >= 3, "{generations:?}");
    let newest = generations.last().expect("a generation");
    assert!(
        !newest.compressed,
        "the newest generation is compressed: {newest:?}"
    );
    assert!(
        generations.iter().any(|g| g.compressed),
        "no generation was compressed: {generations:?}"
    );
}
