//! What a worker logs at the daemons' default level (`info`): no line per successful attempt,
//! a `queue summary` line per interval whose counts add up to what ran and was leased, and a
//! line with the job id for every failure and every slow attempt.

use std::time::Duration;

use serde_json::Value;

use crate::support::{Deployment, all_runs, eventually, wait_for_worker};

/// The JSON entries of a process log.
fn entries(log: &str) -> Vec<Value> {
    log.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .collect()
}

/// The sum of `field` over the `queue summary` lines for `queue`.
fn summed(entries: &[Value], queue: &str, field: &str) -> u64 {
    entries
        .iter()
        .filter(|entry| entry["message"] == "queue summary" && entry["queue"] == queue)
        .map(|entry| {
            entry[field]
                .as_u64()
                .unwrap_or_else(|| panic!("a queue summary without {field}: {entry}"))
        })
        .sum()
}

#[tokio::test]
async fn a_worker_at_info_logs_no_line_per_success_but_summaries_with_the_counts_and_each_failure_and_slow_attempt_by_job_id()
 {
    let deployment = Deployment::new().await;
    deployment.write_config(
        r#"
[queues.reports]
summary_interval = "1s"
slow_attempt = "300ms"

[kinds."system.ping"]
max_attempts = 1
"#,
    );
    let mut worker = deployment.start("upkeep-worker-reports", [] as [&str; 0]);
    wait_for_worker(&mut worker, "reports");

    let n_ok = 20;
    let ok_ids = deployment.enqueue("system.ping", "{}", &["--count", &n_ok.to_string()]);
    let failing = deployment.enqueue("system.ping", r#"{"fail":true}"#, &[])[0];
    let slow = deployment.enqueue("system.ping", r#"{"sleep_ms":600}"#, &[])[0];
    let n_jobs = ok_ids.len() + 2;

    let mut ledger = deployment.ledger().await;
    eventually(
        &format!("{n_jobs} finished attempts in the ledger"),
        Duration::from_secs(30),
        async || {
            let runs = all_runs(&mut ledger).await;
            (runs.iter().filter(|run| run.finished_at.is_some()).count() >= n_jobs).then_some(())
        },
    )
    .await;
    // Summaries come every second while there is work: wait until they account for every job.
    let logged = eventually(
        &format!("queue summary lines adding up to {n_jobs} processed attempts"),
        Duration::from_secs(15),
        async || {
            let logged = entries(&worker.log());
            (summed(&logged, "reports", "processed") >= n_jobs as u64).then_some(logged)
        },
    )
    .await;

    assert_eq!(
        [
            "processed",
            "succeeded",
            "failed",
            "retried",
            "dead",
            "skipped"
        ]
        .map(|field| summed(&logged, "reports", field)),
        [n_jobs as u64, n_ok as u64 + 1, 1, 0, 1, 0],
        "processed, succeeded, failed, retried, dead, skipped over the summary lines"
    );
    let per_success: Vec<&Value> = logged
        .iter()
        .filter(|entry| entry["message"] == "attempt succeeded")
        .collect();
    assert!(
        per_success.is_empty(),
        "no line per successful attempt at info: {per_success:#?}"
    );
    let failure = logged
        .iter()
        .find(|entry| entry["message"] == "attempt failed")
        .unwrap_or_else(|| panic!("no 'attempt failed' line; log:\n{}", worker.log()));
    assert_eq!(
        (
            failure["level"].as_str(),
            failure["job_id"].as_str(),
            failure["next_state"].as_str()
        ),
        (
            Some("WARN"),
            Some(failing.to_string().as_str()),
            Some("dead")
        ),
        "{failure}"
    );
    let slow_line = logged
        .iter()
        .find(|entry| entry["message"] == "slow attempt" && entry["job_id"] == slow.to_string())
        .unwrap_or_else(|| panic!("no 'slow attempt' line for {slow}; log:\n{}", worker.log()));
    assert_eq!(slow_line["level"], "INFO", "{slow_line}");
    assert!(
        slow_line["duration_ms"]
            .as_f64()
            .is_some_and(|ms| ms >= 600.0),
        "{slow_line}"
    );
    let summary = logged
        .iter()
        .find(|entry| entry["message"] == "queue summary")
        .expect("summed above");
    for field in ["p50_ms", "p99_ms", "max_ms", "interval_s", "fetch_wait_s"] {
        assert!(summary[field].is_number(), "{field} in {summary}");
    }
    // Each job was leased once (one attempt each), by one fetch or more.
    assert_eq!(
        summed(&logged, "reports", "leased"),
        n_jobs as u64,
        "jobs leased over the summary lines"
    );
    assert!(summed(&logged, "reports", "fetches") >= 1);
}
