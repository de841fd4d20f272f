//! `upkeepctl enqueue`: a good job reaches a worker and the ledger; bad input is refused
//! before anything reaches Redis.

use std::time::Duration;

use crate::support::{Deployment, wait_for_status, wait_for_worker};

#[tokio::test]
async fn an_enqueued_ping_prints_its_job_id_and_that_id_gets_a_succeeded_run() {
    let deployment = Deployment::new().await;
    let mut worker = deployment.start("upkeep-worker-reports", [] as [&str; 0]);
    wait_for_worker(&mut worker, "reports");

    let ids = deployment.enqueue("system.ping", r#"{"sleep_ms":10}"#, &[]);

    assert_eq!(ids.len(), 1, "one job, one id: {ids:?}");
    let mut ledger = deployment.ledger().await;
    let runs = wait_for_status(&mut ledger, ids[0], "succeeded", Duration::from_secs(15)).await;
    assert_eq!(runs.len(), 1, "a single attempt: {runs:#?}");
    let run = &runs[0];
    assert_eq!(
        (run.attempt, run.kind.as_str(), run.queue.as_str()),
        (1, "system.ping", "reports"),
        "{run:#?}"
    );
    assert_eq!(run.next_state.as_deref(), Some("done"), "{run:#?}");
    assert!(run.worker.starts_with("reports@"), "{run:#?}");
}

/// One refused enqueue: its arguments, and a distinctive part of the message that must
/// name the problem.
struct BadEnqueue {
    args: &'static [&'static str],
    names: &'static [&'static str],
}

const BAD_ENQUEUES: &[BadEnqueue] = &[
    BadEnqueue {
        args: &["system.nope"],
        names: &["unknown job kind", "system.nope"],
    },
    BadEnqueue {
        args: &["system.ping", "--args", "{bad"],
        names: &["--args is not valid JSON"],
    },
    BadEnqueue {
        args: &["system.ping", "--args", r#"{"sleep_ms":"x"}"#],
        names: &["bad args for system.ping", "invalid type"],
    },
    BadEnqueue {
        args: &["system.ping", "--args", r#"{"bogus":1}"#],
        names: &["bad args for system.ping", "unknown field `bogus`"],
    },
    BadEnqueue {
        // An array is not an arguments object, even though serde could read a struct
        // from it positionally ([5000] would mean sleep_ms = 5000).
        args: &["system.ping", "--args", "[5000]"],
        names: &["system.ping", "JSON object"],
    },
    BadEnqueue {
        args: &["backup.verify", "--args", r#"{"mode":"sideways"}"#],
        names: &["bad args for backup.verify", "sideways"],
    },
    BadEnqueue {
        args: &["system.ping", "--queue", "Bad Queue!"],
        names: &["--queue", "must be 1-64 characters"],
    },
    BadEnqueue {
        // Well formed, but no such queue is configured: no worker or stats would see it.
        args: &["system.ping", "--queue", "nosuchqueue"],
        names: &["--queue", "\"nosuchqueue\" is not configured"],
    },
];

#[tokio::test]
async fn bad_input_at_enqueue_exits_non_zero_naming_the_problem_and_enqueues_nothing() {
    let deployment = Deployment::new().await;

    let mut problems = Vec::new();
    for bad in BAD_ENQUEUES {
        let mut argv = vec!["enqueue"];
        argv.extend_from_slice(bad.args);
        let finished = deployment.run("upkeepctl", &argv);
        let named_everything = bad.names.iter().all(|name| finished.stderr.contains(name));
        if finished.status.success() || !named_everything {
            problems.push(format!(
                "upkeepctl {argv:?}: {} (stdout {:?}), stderr {:?} should name {:?}",
                finished.status,
                finished.stdout.trim(),
                finished.stderr.trim(),
                bad.names
            ));
        }
    }

    let stats = deployment.stats();
    assert!(
        ["backups", "logs", "reports", "tokens"]
            .iter()
            .all(|queue| stats.contains_key(*queue)),
        "stats lists every queue: {stats:#?}"
    );
    for (name, queue) in &stats {
        let enqueued = queue["totals"]["enqueued"].as_u64().unwrap_or(0);
        if queue["pending"] != 0 || queue["scheduled"] != 0 || enqueued != 0 {
            problems.push(format!("queue {name} is not empty: {queue}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test]
async fn upkeepctl_runs_lists_recent_attempts_from_the_ledger_filtered_by_kind_and_status() {
    let deployment = Deployment::new().await;
    let mut worker = deployment.start("upkeep-worker-reports", [] as [&str; 0]);
    wait_for_worker(&mut worker, "reports");
    let ok = deployment.enqueue("system.ping", r#"{"sleep_ms":1}"#, &[]);
    let failing = deployment.enqueue("system.ping", r#"{"fail":true}"#, &["--count", "1"]);
    let mut ledger = deployment.ledger().await;
    wait_for_status(&mut ledger, ok[0], "succeeded", Duration::from_secs(15)).await;
    wait_for_status(&mut ledger, failing[0], "failed", Duration::from_secs(15)).await;

    let all: serde_json::Value =
        serde_json::from_str(&deployment.ctl_ok(["runs", "--kind", "system.ping", "--json"]))
            .expect("runs --json prints JSON");
    let failed: serde_json::Value = serde_json::from_str(
        &deployment.ctl_ok(["runs", "--status", "failed", "--limit", "1", "--json"]),
    )
    .expect("runs --json prints JSON");
    let table = deployment.ctl_ok(["runs"]);

    let ids = |runs: &serde_json::Value| -> Vec<String> {
        runs.as_array()
            .expect("an array of runs")
            .iter()
            .map(|run| run["job_id"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    assert!(ids(&all).contains(&ok[0].to_string()), "{all:#}");
    assert!(ids(&all).contains(&failing[0].to_string()), "{all:#}");
    assert_eq!(ids(&failed), [failing[0].to_string()], "{failed:#}");
    assert_eq!(failed[0]["status"], "failed", "{failed:#}");
    assert!(
        table.contains(&ok[0].to_string()) && table.contains("succeeded"),
        "{table}"
    );

    let refused = deployment.run("upkeepctl", ["runs", "--status", "sleeping"]);
    refused.assert_failure_naming(&["--status", "sleeping", "succeeded"]);
}
