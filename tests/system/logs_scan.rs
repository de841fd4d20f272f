//! `logs.scan_errors` through a real worker: rotation between scans, truncation, signature
//! folding, quiet reruns, and a worker killed -9 mid-scan that resumes without counting a line
//! twice.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use sqlx::PgConnection;
use uuid::Uuid;

use crate::support::{Deployment, eventually, runs_of, wait_for_status, wait_for_worker};

/// `n` JSON lines; every `error_every`-th is an error naming a number and a uuid.
fn json_lines(first: usize, n: usize, error_every: usize) -> (String, usize) {
    let mut text = String::new();
    let mut n_errors = 0;
    for idx in first..first + n {
        if error_every > 0 && idx % error_every == 0 {
            n_errors += 1;
            let _ = writeln!(
                text,
                r#"{{"timestamp":"2026-11-29T06:00:00.{idx:06}Z","level":"ERROR","message":"order {idx} failed for customer {}","target":"app"}}"#,
                Uuid::new_v4()
            );
        } else {
            let _ = writeln!(
                text,
                r#"{{"timestamp":"2026-11-29T06:00:00.{idx:06}Z","level":"INFO","message":"order {idx} shipped","target":"app"}}"#
            );
        }
    }
    (text, n_errors)
}

fn append(path: &Path, text: &str) {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("opening the log");
    file.write_all(text.as_bytes()).expect("appending");
}

fn config(dir: &Path, extra: &str) -> String {
    format!(
        "{extra}\n[[logs.sources]]\nname = \"app\"\npath = \"{}/app.log\"\nformat = \"json\"\n",
        dir.display()
    )
}

/// Enqueues a scan and returns the succeeded attempt's outcome.
async fn scan(deployment: &Deployment, ledger: &mut PgConnection) -> (Uuid, serde_json::Value) {
    let id = deployment.enqueue("logs.scan_errors", "{}", &[])[0];
    wait_for_status(ledger, id, "succeeded", Duration::from_secs(60)).await;
    (id, outcome_of(ledger, id).await)
}

async fn outcome_of(ledger: &mut PgConnection, id: Uuid) -> serde_json::Value {
    sqlx::query_scalar("SELECT outcome FROM job_runs WHERE job_id = $1 AND status = 'succeeded'")
        .bind(id)
        .fetch_one(ledger)
        .await
        .expect("the succeeded run's outcome")
}

fn digest(outcome: &serde_json::Value, source: &str) -> serde_json::Value {
    outcome["findings"]
        .as_array()
        .and_then(|findings| {
            findings
                .iter()
                .find(|f| f["code"] == "logs.digest" && f["subject"] == source)
        })
        .map(|f| f["detail"].clone())
        .unwrap_or_else(|| panic!("no digest of {source} in {outcome:#}"))
}

fn codes(outcome: &serde_json::Value, code: &str) -> usize {
    outcome["findings"]
        .as_array()
        .map_or(0, |f| f.iter().filter(|f| f["code"] == code).count())
}

#[tokio::test]
async fn a_log_rotated_between_scans_is_read_to_its_end_and_the_new_file_from_its_start() {
    // Arrange
    let logs = tempfile::tempdir().expect("a log directory");
    let dir = logs.path();
    let live = dir.join("app.log");
    let deployment = Deployment::new().await;
    deployment.write_config(&config(dir, ""));
    let mut ledger = deployment.ledger().await;
    let mut worker = deployment.start("upkeep-worker-logs", [] as [&str; 0]);
    wait_for_worker(&mut worker, "logs");
    let (first, first_errors) = json_lines(0, 100, 10);
    append(&live, &first);
    let (_, outcome) = scan(&deployment, &mut ledger).await;
    let first_digest = digest(&outcome, "app");
    assert_eq!(first_digest["lines_read"], 100);
    assert_eq!(first_digest["by_severity"]["error"], first_errors);
    // One signature for every "order N failed for customer UUID" line, and it is new.
    let top = &first_digest["top"][0];
    assert_eq!(top["signature"], "order <n> failed for customer <uuid>");
    assert_eq!(top["count"], first_errors);
    assert_eq!(codes(&outcome, "logs.new_signature"), 1, "{outcome:#}");

    // Act: more lines in the old file, a rename, a new file.
    let (more, more_errors) = json_lines(100, 50, 10);
    append(&live, &more);
    std::fs::rename(&live, dir.join("app.log.1")).expect("rotating");
    let (fresh, fresh_errors) = json_lines(150, 30, 10);
    append(&live, &fresh);
    let (_, outcome) = scan(&deployment, &mut ledger).await;

    // Assert: the old file's last 50 lines and the new file's 30, nothing twice.
    let second = digest(&outcome, "app");
    assert_eq!(second["lines_read"], 80, "{second:#}");
    assert_eq!(second["by_severity"]["error"], more_errors + fresh_errors);
    assert_eq!(
        codes(&outcome, "logs.new_signature"),
        0,
        "the signature is known now"
    );
    assert_eq!(codes(&outcome, "logs.scan_gap"), 0, "{outcome:#}");

    // A third run with no new line reports nothing new.
    let (_, outcome) = scan(&deployment, &mut ledger).await;
    let third = digest(&outcome, "app");
    assert_eq!(third["lines_read"], 0);
    assert_eq!(third["top"], serde_json::json!([]));
    assert_eq!(codes(&outcome, "logs.new_signature"), 0);
    assert_eq!(codes(&outcome, "logs.fatal"), 0);
}

#[tokio::test]
async fn a_truncated_log_is_read_from_its_start_and_fatal_lines_are_critical() {
    // Arrange
    let logs = tempfile::tempdir().expect("a log directory");
    let dir = logs.path();
    let live = dir.join("app.log");
    let deployment = Deployment::new().await;
    deployment.write_config(&config(dir, ""));
    let mut ledger = deployment.ledger().await;
    let mut worker = deployment.start("upkeep-worker-logs", [] as [&str; 0]);
    wait_for_worker(&mut worker, "logs");
    append(&live, &json_lines(0, 200, 0).0);
    scan(&deployment, &mut ledger).await;

    // Act: truncate (as copytruncate does) and write fewer, different lines.
    std::fs::write(
        &live,
        "{\"level\":\"FATAL\",\"message\":\"cannot open /data/17: No space left on device\"}\n\
         {\"level\":\"info\",\"message\":\"restarted\"}\n",
    )
    .expect("truncating");
    let (_, outcome) = scan(&deployment, &mut ledger).await;

    // Assert
    let digest = digest(&outcome, "app");
    assert_eq!(digest["lines_read"], 2, "{digest:#}");
    assert_eq!(digest["by_severity"]["fatal"], 1);
    let fatal: Vec<&serde_json::Value> = outcome["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["code"] == "logs.fatal")
        .collect();
    assert_eq!(fatal.len(), 1, "{outcome:#}");
    assert_eq!(fatal[0]["severity"], "critical");
}

#[tokio::test]
async fn a_worker_killed_mid_scan_resumes_without_counting_a_line_twice() {
    // Arrange: a small source and a big one; the kill lands after the small one's commit,
    // while the big one is being read.
    let logs = tempfile::tempdir().expect("a log directory");
    let dir = logs.path();
    let (small, small_errors) = json_lines(0, 1000, 7);
    append(&dir.join("a.log"), &small);
    let mut big_errors = 0;
    for chunk in 0..30 {
        let (text, n_errors) = json_lines(chunk * 20_000, 20_000, 13);
        big_errors += n_errors;
        append(&dir.join("b.log"), &text);
    }
    let n_big_lines = 30 * 20_000;
    let deployment = Deployment::new().await;
    deployment.write_config(&format!(
        "[queues.logs]\nlease = \"2s\"\n[logs]\nscan_budget = \"1GiB\"\n\
         [[logs.sources]]\nname = \"a\"\npath = \"{dir}/a.log\"\n\
         [[logs.sources]]\nname = \"b\"\npath = \"{dir}/b.log\"\n",
        dir = dir.display()
    ));
    let mut ledger = deployment.ledger().await;
    let mut worker = deployment.start("upkeep-worker-logs", [] as [&str; 0]);
    wait_for_worker(&mut worker, "logs");

    // Act: kill -9 once source a's batch is committed, then start a new worker.
    let id = deployment.enqueue("logs.scan_errors", "{}", &[])[0];
    eventually("source a's batch", Duration::from_secs(60), async || {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM log_scan_batches WHERE job_id = $1 AND source = 'a'",
        )
        .bind(id)
        .fetch_one(&mut ledger)
        .await
        .ok()?;
        (n > 0).then_some(())
    })
    .await;
    worker.kill9().expect("kill -9");
    let n_b_batches_at_kill: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM log_scan_batches WHERE job_id = $1 AND source = 'b'",
    )
    .bind(id)
    .fetch_one(&mut ledger)
    .await
    .expect("counting batches");
    let mut worker = deployment.start("upkeep-worker-logs", [] as [&str; 0]);
    wait_for_worker(&mut worker, "logs");
    wait_for_status(&mut ledger, id, "succeeded", Duration::from_secs(120)).await;

    // Assert: the kill hit mid-scan (the first attempt did not succeed), and the outcome
    // counts every line of both sources exactly once.
    assert_eq!(
        n_b_batches_at_kill, 0,
        "the kill should land while b is being read"
    );
    let runs = runs_of(&mut ledger, id).await;
    assert!(
        runs.len() >= 2,
        "the job ran again after the kill: {runs:#?}"
    );
    assert_ne!(runs[0].status, "succeeded");
    let outcome = outcome_of(&mut ledger, id).await;
    assert_eq!(digest(&outcome, "a")["lines_read"], 1000);
    assert_eq!(digest(&outcome, "a")["by_severity"]["error"], small_errors);
    assert_eq!(digest(&outcome, "b")["lines_read"], n_big_lines);
    assert_eq!(digest(&outcome, "b")["by_severity"]["error"], big_errors);
    assert_eq!(outcome["metrics"]["errors"], small_errors + big_errors);
    // The first attempt's commit of a is reported once: one batch each, one new signature each.
    let n_batches: i64 =
        sqlx::query_scalar("SELECT count(*) FROM log_scan_batches WHERE job_id = $1")
            .bind(id)
            .fetch_one(&mut ledger)
            .await
            .expect("counting batches");
    assert_eq!(n_batches, 2);
    assert_eq!(codes(&outcome, "logs.new_signature"), 2, "{outcome:#}");
}
