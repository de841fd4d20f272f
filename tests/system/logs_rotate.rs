//! `logs.rotate` on real files under a live writer process: rename/reopen loses nothing,
//! copytruncate loses at most its documented window, the newest generation stays
//! uncompressed, pruning follows count and age, and nothing outside the pattern (or behind a
//! symlink) is touched.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use chrono::{DateTime, Utc};
use upkeep_shared::logs::rotate;
use upkeep_shared::logs::settings::{Compression, RotateMode, TargetSettings};
use upkeep_shared::settings::ByteSize;
use upkeep_tests::ChildProcess;
use uuid::Uuid;

use crate::support::{Deployment, wait_for_status, wait_for_worker};

/// A bash writer appending `line N` (N = 1, 2, ...) to `dir/app.log`, opened with `>>`
/// (O_APPEND); with `reopen`, SIGHUP makes it reopen the file. It stops when `dir/stop`
/// exists and then prints `wrote N`.
fn start_writer(dir: &Path, reopen: bool) -> ChildProcess {
    let log = dir.join("app.log");
    let trap = if reopen {
        format!("trap 'exec 3>>{}' HUP", log.display())
    } else {
        "trap '' HUP".to_owned()
    };
    let script = format!(
        "echo $$ > {pid}; exec 3>>{log}; {trap}; i=0; \
         while [ ! -e {stop} ]; do \
           for _ in 1 2 3 4 5 6 7 8 9 10; do i=$((i+1)); echo \"line $i\" >&3; done; \
         done; echo \"wrote $i\"",
        pid = dir.join("writer.pid").display(),
        log = log.display(),
        stop = dir.join("stop").display(),
    );
    let mut command = Command::new("bash");
    command.args(["-c", &script]);
    let child = ChildProcess::spawn("writer", command).expect("starting the writer");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !dir.join("writer.pid").exists() || !log.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the writer did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

/// Stops the writer and returns how many lines it wrote.
fn stop_writer(dir: &Path, writer: &mut ChildProcess) -> u64 {
    std::fs::write(dir.join("stop"), "").expect("creating the stop file");
    writer
        .wait_timeout(Duration::from_secs(10))
        .expect("the writer stops");
    let log = writer.log();
    log.lines()
        .find_map(|line| line.strip_prefix("wrote ")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("the writer did not say how much it wrote: {log}"))
}

/// How many times each line number appears in the live file and every generation (compressed
/// ones decompressed), and the files read.
fn count_lines(dir: &Path) -> (BTreeMap<u64, u32>, Vec<PathBuf>) {
    let mut counts = BTreeMap::new();
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("reading the log directory") {
        let path = entry.expect("an entry").path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if !name.starts_with("app.log") {
            continue;
        }
        let mut text = String::new();
        rotate::open_decompressed(&path)
            .and_then(|mut reader| reader.read_to_string(&mut text))
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        assert!(
            !text.contains('\0'),
            "{} holds NUL bytes (a sparse regrowth)",
            path.display()
        );
        for line in text.lines() {
            let number: u64 = line
                .strip_prefix("line ")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unexpected line {line:?} in {}", path.display()));
            *counts.entry(number).or_insert(0) += 1;
        }
        files.push(path);
    }
    files.sort();
    (counts, files)
}

/// Enqueues `n` rotations of target `app`, `every` apart, and waits for all to succeed.
async fn rotate_repeatedly(deployment: &Deployment, n: usize, every: Duration) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.extend(deployment.enqueue("logs.rotate", r#"{"target":"app"}"#, &[]));
        tokio::time::sleep(every).await;
    }
    let mut ledger = deployment.ledger().await;
    for id in &ids {
        wait_for_status(&mut ledger, *id, "succeeded", Duration::from_secs(60)).await;
    }
    ids
}

fn generations(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("reading the log directory")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.starts_with("app.log."))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn rename_reopen_rotations_under_a_live_writer_keep_every_line_in_exactly_one_file() {
    // Arrange: a writer that reopens on SIGHUP, and a worker rotating any non-empty file.
    let logs = tempfile::tempdir().expect("a log directory");
    let dir = logs.path();
    let deployment = Deployment::new().await;
    deployment.write_config(&format!(
        "[[logs.targets]]\nname = \"app\"\ndirectory = \"{dir}\"\npattern = \"app.log\"\n\
         mode = \"rename_reopen\"\nreopen_signal = {{ pid_file = \"{dir}/writer.pid\", signal = \"HUP\" }}\n\
         rotate_size = \"1B\"\nkeep = 1000\ncompress = \"zstd\"\n",
        dir = dir.display()
    ));
    let mut worker = deployment.start("upkeep-worker-logs", [] as [&str; 0]);
    wait_for_worker(&mut worker, "logs");
    let mut writer = start_writer(dir, true);

    // Act: twelve rotations 300 ms apart while the writer appends.
    let ids = rotate_repeatedly(&deployment, 12, Duration::from_millis(300)).await;
    let n_written = stop_writer(dir, &mut writer);

    // Assert: every line written is in exactly one file.
    let (counts, files) = count_lines(dir);
    let duplicated: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).take(5).collect();
    assert!(duplicated.is_empty(), "lines in two files: {duplicated:?}");
    let missing: Vec<u64> = (1..=n_written)
        .filter(|n| !counts.contains_key(n))
        .take(5)
        .collect();
    assert!(
        missing.is_empty(),
        "lines lost: {missing:?} (files {files:?})"
    );
    assert_eq!(counts.len() as u64, n_written);
    assert!(
        n_written > 1000,
        "the writer was too slow to test anything: {n_written}"
    );
    // Every job rotated (the file was never empty), compressing all but the newest generation.
    let names = generations(dir);
    let plain: Vec<&String> = names.iter().filter(|n| !n.ends_with(".zst")).collect();
    assert!(
        names.len() >= ids.len(),
        "{} rotations left {names:?}",
        ids.len()
    );
    assert_eq!(
        plain.len(),
        1,
        "only the newest generation is uncompressed: {names:?}"
    );
    assert_eq!(
        Some(plain[0]),
        names.iter().filter(|n| !n.ends_with(".zst")).max()
    );
    assert!(!names.iter().any(|n| n.ends_with(".partial")), "{names:?}");
}

#[tokio::test]
async fn copytruncate_under_a_live_append_writer_loses_at_most_the_documented_window() {
    // Arrange: an O_APPEND writer that never reopens.
    let logs = tempfile::tempdir().expect("a log directory");
    let dir = logs.path();
    let deployment = Deployment::new().await;
    deployment.write_config(&format!(
        "[[logs.targets]]\nname = \"app\"\ndirectory = \"{dir}\"\npattern = \"app.log\"\n\
         mode = \"copytruncate\"\nwriter_uses_append = true\nrotate_size = \"1B\"\nkeep = 1000\n\
         compress = \"gzip\"\n",
        dir = dir.display()
    ));
    let mut worker = deployment.start("upkeep-worker-logs", [] as [&str; 0]);
    wait_for_worker(&mut worker, "logs");
    let started = std::time::Instant::now();
    let mut writer = start_writer(dir, false);

    // Act
    let ids = rotate_repeatedly(&deployment, 12, Duration::from_millis(300)).await;
    let n_written = stop_writer(dir, &mut writer);
    let lines_per_ms = n_written as f64 / started.elapsed().as_millis().max(1) as f64;

    // Assert: no line twice, no NUL regrowth (checked while reading), and the lost lines, if
    // any, are the few appended between a rotation's last size check and its truncation.
    let (counts, _) = count_lines(dir);
    assert!(counts.values().all(|n| *n == 1), "a line appears twice");
    let missing: Vec<u64> = (1..=n_written)
        .filter(|n| !counts.contains_key(n))
        .collect();
    let mut stretches: Vec<Vec<u64>> = Vec::new();
    for n in &missing {
        match stretches.last_mut() {
            Some(stretch) if stretch.last() == Some(&(n - 1)) => stretch.push(*n),
            _ => stretches.push(vec![*n]),
        }
    }
    let longest = stretches.iter().map(Vec::len).max().unwrap_or(0);
    eprintln!(
        "copytruncate: {n_written} lines written ({lines_per_ms:.0}/ms), {} lost in {} stretch(es) \
         over {} rotations, the longest {longest} lines ({:.1} ms of writing)",
        missing.len(),
        stretches.len(),
        ids.len(),
        longest as f64 / lines_per_ms
    );
    assert!(
        stretches.len() <= ids.len(),
        "losses outside rotations: {stretches:?}"
    );
    // The documented window: what the writer appends between the last size check and the
    // truncation, microseconds when the rotating thread runs on, up to a scheduler time slice
    // or a few when it is preempted on a busy machine. 50 ms of writing is the bound.
    assert!(
        (longest as f64) <= lines_per_ms * 50.0,
        "a rotation lost more than 50 ms of writing: {longest} lines at {lines_per_ms:.0}/ms"
    );
    let names = generations(dir);
    assert_eq!(
        names.iter().filter(|n| !n.ends_with(".gz")).count(),
        1,
        "only the newest generation is uncompressed: {names:?}"
    );
}

fn stamp(at: DateTime<Utc>) -> String {
    at.format(rotate::STAMP_FORMAT).to_string()
}

#[test]
fn pruning_keeps_the_newest_by_count_and_age_and_leaves_symlinks_and_other_files_alone() {
    // Arrange: six generations 1..6 days old, a symlink that looks like a generation and
    // points outside, and files outside the pattern.
    let logs = tempfile::tempdir().expect("a log directory");
    let elsewhere = tempfile::tempdir().expect("another directory");
    let dir = logs.path();
    let now = Utc::now();
    for days in 1..=6 {
        let name = format!("app.log.{}", stamp(now - chrono::Duration::days(days)));
        std::fs::write(dir.join(name), format!("generation {days}\n")).expect("a generation");
    }
    std::fs::write(dir.join("app.log"), "live\n").expect("the live file");
    let precious = elsewhere.path().join("precious.log");
    std::fs::write(&precious, "not ours\n").expect("a file elsewhere");
    let link_name = format!("app.log.{}", stamp(now - chrono::Duration::days(30)));
    std::os::unix::fs::symlink(&precious, dir.join(&link_name)).expect("a symlink");
    std::fs::write(dir.join("other.txt"), "other\n").expect("another file");
    std::fs::write(dir.join("app.log.bak"), "backup\n").expect("a lookalike");
    let target = TargetSettings {
        name: "app".to_owned(),
        directory: dir.to_owned(),
        pattern: "app.log".to_owned(),
        mode: RotateMode::Copytruncate,
        writer_uses_append: true,
        rotate_size: Some(ByteSize(1 << 20)),
        keep: 4,
        max_age: Some(Duration::from_secs(5 * 86_400 - 3600)),
        compress: Compression::Zstd,
        ..TargetSettings::default()
    };

    // Act
    let report = rotate::run(&target, &[], now).expect("rotation runs");

    // Assert: days 5 and 6 go (count keeps four, age keeps under five days: day 5 is over it);
    // the newest (day 1) stays plain, days 2..4 are compressed.
    assert!(report.rotated.is_empty(), "nothing was due: {report:?}");
    let mut names = generations(dir);
    names.retain(|n| n != &link_name && n != "app.log.bak");
    let expected: Vec<String> = vec![
        format!("app.log.{}.zst", stamp(now - chrono::Duration::days(4))),
        format!("app.log.{}.zst", stamp(now - chrono::Duration::days(3))),
        format!("app.log.{}.zst", stamp(now - chrono::Duration::days(2))),
        format!("app.log.{}", stamp(now - chrono::Duration::days(1))),
    ];
    let mut expected_sorted = expected.clone();
    expected_sorted.sort();
    assert_eq!(names, expected_sorted);
    assert_eq!(report.pruned.len(), 2, "{report:?}");
    assert_eq!(report.skipped_symlinks, vec![link_name.clone()]);
    assert!(
        dir.join(&link_name).symlink_metadata().is_ok(),
        "the symlink is left alone"
    );
    assert_eq!(
        std::fs::read_to_string(&precious).expect("still there"),
        "not ours\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("other.txt")).expect("kept"),
        "other\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("app.log.bak")).expect("kept"),
        "backup\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("app.log")).expect("kept"),
        "live\n"
    );
    let mut text = String::new();
    rotate::open_decompressed(&dir.join(&expected[0]))
        .and_then(|mut r| r.read_to_string(&mut text))
        .expect("a compressed generation decompresses");
    assert_eq!(text, "generation 4\n");
}

#[test]
fn a_pattern_with_a_slash_is_refused_at_config_load_naming_the_key() {
    let settings = upkeep_shared::config::Settings::from_toml_str(
        "[[logs.targets]]\nname = \"x\"\ndirectory = \"/var/log\"\npattern = \"../etc/*\"\n\
         mode = \"copytruncate\"\nwriter_uses_append = true\nrotate_size = \"1MiB\"\n",
        &std::collections::HashMap::new(),
    );
    let error = settings.expect_err("the pattern is refused").to_string();
    assert!(error.contains("logs.targets[0].pattern"), "{error}");
}

#[test]
fn postgres_mode_compresses_and_prunes_only_files_the_collector_no_longer_writes() {
    // Arrange: four collector files, oldest first, the newest being the one
    // pg_current_logfile() names (the handler asks PostgreSQL for it; a private server cannot
    // run the collector here because the test helper reads its start-up from stderr).
    let logs = tempfile::tempdir().expect("a log directory");
    let dir = logs.path();
    let names: Vec<String> = (0..4)
        .map(|idx| format!("postgresql-20261129-0{idx}0000.log"))
        .collect();
    for (idx, name) in names.iter().enumerate() {
        let path = dir.join(name);
        std::fs::write(&path, format!("file {idx}\n")).expect("a log file");
        let mtime = std::time::SystemTime::now() - Duration::from_secs(3600 * (4 - idx as u64));
        std::fs::File::options()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_modified(mtime))
            .expect("setting the mtime");
    }
    let target = TargetSettings {
        name: "pg".to_owned(),
        directory: dir.to_owned(),
        pattern: "postgresql-*.log".to_owned(),
        mode: RotateMode::Postgres,
        keep: 2,
        compress: Compression::Zstd,
        ..TargetSettings::default()
    };

    // Act
    let report =
        rotate::run(&target, std::slice::from_ref(&names[3]), Utc::now()).expect("rotation runs");

    // Assert: the current file untouched; of the three older ones the oldest is pruned
    // (keep = 2), the middle one compressed, the newest left plain.
    assert!(
        report.rotated.is_empty(),
        "postgres mode never rotates: {report:?}"
    );
    let mut after: Vec<String> = std::fs::read_dir(dir)
        .expect("the log directory")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    after.sort();
    assert_eq!(
        after,
        vec![
            format!("{}.zst", names[1]),
            names[2].clone(),
            names[3].clone()
        ]
    );
}

#[test]
fn upkeepctl_logs_targets_lists_each_file_with_its_size_generations_and_next_rotation() {
    let logs = tempfile::tempdir().expect("a log directory");
    let dir = logs.path();
    std::fs::write(dir.join("app.log"), "0123456789").expect("the live file");
    let generation = format!("app.log.{}", stamp(Utc::now() - chrono::Duration::hours(1)));
    std::fs::write(dir.join(&generation), "old\n").expect("a generation");
    let deployment = Deployment::with_database_url("postgres://unused@127.0.0.1:1/none".to_owned());
    deployment.write_config(&format!(
        "[[logs.targets]]\nname = \"app\"\ndirectory = \"{}\"\npattern = \"app.log\"\n\
         mode = \"copytruncate\"\nwriter_uses_append = true\nrotate_size = \"5B\"\n",
        dir.display()
    ));

    let json: serde_json::Value =
        serde_json::from_str(&deployment.ctl_ok(["logs", "targets", "--json"])).expect("JSON");
    let text = deployment.ctl_ok(["logs", "targets"]);

    let file = &json["targets"][0]["files"][0];
    assert_eq!(file["size"], 10, "{json:#}");
    assert_eq!(file["due"], "size");
    assert_eq!(file["generations"].as_array().map(Vec::len), Some(1));
    assert!(text.contains("due now (Size)"), "{text}");
}

/// What `pg_current_logfile()` names, as a file name.
async fn current_logfile(pg: &mut sqlx::PgConnection) -> String {
    let path: String = sqlx::query_scalar("SELECT pg_current_logfile()")
        .fetch_one(pg)
        .await
        .expect("pg_current_logfile()");
    Path::new(&path)
        .file_name()
        .expect("a file name")
        .to_string_lossy()
        .into_owned()
}

/// Logs `marker` through the server (RAISE LOG goes to the server log at the default
/// log_min_messages) and waits until the collector's current file holds it.
async fn log_marker(pg: &mut sqlx::PgConnection, log_dir: &Path, marker: &str) {
    // The marker is a literal of this file, not input.
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DO $$ BEGIN RAISE LOG '{marker}'; END $$"
    )))
    .execute(&mut *pg)
    .await
    .expect("RAISE LOG");
    let file = log_dir.join(current_logfile(pg).await);
    crate::support::eventually(
        &format!("{marker} in {}", file.display()),
        Duration::from_secs(20),
        async || {
            std::fs::read_to_string(&file)
                .ok()
                .filter(|text| text.contains(marker))
                .map(|_| ())
        },
    )
    .await;
}

#[tokio::test]
async fn postgres_mode_with_a_real_collector_leaves_the_file_the_server_writes_alone() {
    // Arrange: a private server with the logging collector on, rotated three times (one
    // second apart: the file names carry the second), a marker line in each file.
    let pg = upkeep_tests::PrivatePostgres::start_with_settings(&[
        ("logging_collector", "on"),
        ("log_directory", "pglog"),
        ("log_filename", "postgresql-%Y%m%d_%H%M%S.log"),
        ("log_rotation_age", "0"),
        ("log_rotation_size", "0"),
    ])
    .expect("a private postgres with the collector on");
    let mut admin = upkeep_tests::connect_ledger(&pg.url()).await;
    let data_directory: String = sqlx::query_scalar("SELECT current_setting('data_directory')")
        .fetch_one(&mut admin)
        .await
        .expect("the data directory");
    let log_dir = PathBuf::from(data_directory).join("pglog");
    let mut files = Vec::new();
    for idx in 0..3 {
        log_marker(&mut admin, &log_dir, &format!("upkeep-marker-{idx}")).await;
        let before = current_logfile(&mut admin).await;
        files.push(before.clone());
        tokio::time::sleep(Duration::from_millis(1100)).await;
        sqlx::query("SELECT pg_rotate_logfile()")
            .execute(&mut admin)
            .await
            .expect("pg_rotate_logfile()");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while current_logfile(&mut admin).await == before {
            assert!(
                std::time::Instant::now() < deadline,
                "the collector did not switch files after pg_rotate_logfile()"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    log_marker(&mut admin, &log_dir, "upkeep-marker-3").await;
    let current = current_logfile(&mut admin).await;
    let database_url = upkeep_tests::fresh_migrated_database(&pg.url()).await;
    let deployment = Deployment::with_database_url(database_url);
    deployment.write_config(&format!(
        "[[logs.targets]]\nname = \"pg\"\ndirectory = \"{}\"\npattern = \"postgresql-*.log\"\n\
         mode = \"postgres\"\nkeep = 2\ncompress = \"zstd\"\n",
        log_dir.display()
    ));
    let mut worker = deployment.start("upkeep-worker-logs", [] as [&str; 0]);
    wait_for_worker(&mut worker, "logs");

    // Act
    let id = deployment.enqueue("logs.rotate", r#"{"target":"pg"}"#, &[])[0];
    let mut ledger = deployment.ledger().await;
    wait_for_status(&mut ledger, id, "succeeded", Duration::from_secs(60)).await;

    // Assert: of the three files the server no longer writes, the oldest is pruned (keep = 2),
    // the middle one compressed (and decompresses to its marker), the newest left plain; the
    // current file is untouched and the server still writes it.
    let mut after: Vec<String> = std::fs::read_dir(&log_dir)
        .expect("the log directory")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    after.sort();
    assert_eq!(
        after,
        vec![
            format!("{}.zst", files[1]),
            files[2].clone(),
            current.clone()
        ],
        "the collector's directory after logs.rotate"
    );
    let mut text = String::new();
    rotate::open_decompressed(&log_dir.join(format!("{}.zst", files[1])))
        .and_then(|mut reader| reader.read_to_string(&mut text))
        .expect("the compressed generation decompresses");
    assert!(text.contains("upkeep-marker-1"), "{text}");
    log_marker(&mut admin, &log_dir, "upkeep-marker-after").await;
    assert_eq!(current_logfile(&mut admin).await, current);
}
