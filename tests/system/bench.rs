//! `upkeepctl bench`: its one output line (the peers' format, which `scripts/bench-window.sh`
//! and `scripts/bench-ab.sh` read) after draining real jobs through Redis and the ledger.

use std::collections::HashMap;

use crate::support::Deployment;

/// The `key=value` fields of a bench line (the quoted `cfg` is kept whole).
fn fields(line: &str) -> HashMap<String, String> {
    let (head, tail) = line
        .split_once("\" ")
        .unwrap_or_else(|| panic!("no quoted cfg in {line}"));
    let mut fields: HashMap<String, String> = tail
        .split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect();
    let cfg = head
        .split_once("cfg=\"")
        .unwrap_or_else(|| panic!("no cfg in {line}"))
        .1;
    fields.insert("cfg".to_owned(), cfg.to_owned());
    fields
}

/// upkeep's line among a bench run's output.
fn bench_line(stdout: &str) -> &str {
    stdout
        .lines()
        .find(|line| line.starts_with("peer=upkeep "))
        .unwrap_or_else(|| panic!("no bench line in {stdout}"))
}

/// The ledger's succeeded `system.ping` rows (the jobs every bench run enqueues).
async fn succeeded_pings(deployment: &Deployment) -> i64 {
    let mut ledger = deployment.ledger().await;
    sqlx::query_scalar(
        "SELECT count(*) FROM job_runs WHERE kind = 'system.ping' AND status = 'succeeded'",
    )
    .fetch_one(&mut ledger)
    .await
    .expect("counted")
}

#[tokio::test]
async fn a_bench_run_drains_its_jobs_through_the_ledger_and_says_where_the_cpu_went() {
    let deployment = Deployment::new().await;

    let stdout = deployment.ctl_ok(["bench", "--jobs", "400", "--no-logs"]);

    let line = bench_line(&stdout);
    let fields = fields(line);
    assert_eq!(fields["n"], "400", "{line}");
    assert!(
        fields["cfg"].contains("ledger=postgres") && fields["cfg"].contains("logging=off"),
        "{line}"
    );
    let rate: f64 = fields["process_per_s"].parse().expect("a rate");
    assert!(rate > 0.0, "{line}");
    // Worker, Redis and Postgres all run on this host in the tests.
    let cpu: Vec<&str> = fields["cpu_us_per_job"]
        .split(',')
        .map(|part| part.split(':').next().unwrap_or_default())
        .collect();
    assert_eq!(cpu, ["worker", "redis", "postgres"], "{line}");
    let waited = fields["redis_runq_wait"]
        .strip_suffix('%')
        .unwrap_or_else(|| panic!("a percentage for the local Redis: {line}"));
    let waited: f64 = waited.parse().expect("a number");
    assert!((0.0..=100.0).contains(&waited), "{line}");

    // Every job has its succeeded row.
    let succeeded = succeeded_pings(&deployment).await;
    assert_eq!(succeeded, 400, "{line}");
}

#[tokio::test]
async fn a_live_run_says_whether_its_jobs_went_through_the_ledger() {
    let deployment = Deployment::new().await;

    for (args, ledger) in [
        (&["--no-logs"][..], "postgres"),
        (&["--no-logs", "--no-ledger"][..], "off"),
    ] {
        let mut command = vec!["bench", "--live", "20", "--live-rate", "200"];
        command.extend_from_slice(args);
        let stdout = deployment.ctl_ok(command);
        let line = bench_line(&stdout);
        let fields = fields(line);
        assert!(
            fields["cfg"].starts_with(&format!("live ledger={ledger} n=20 ")),
            "{line}"
        );
        assert_eq!(fields["n"], "20", "{line}");
    }

    // The run with the ledger wrote its 20 jobs and its warm-up job; the other wrote none.
    let succeeded = succeeded_pings(&deployment).await;
    assert_eq!(succeeded, 21);
}
