//! Overlap policy `skip`: a 3 s job on an every-second schedule never runs twice at once,
//! and the ticks it had to skip are recorded as `skipped_overlap`.

use std::time::Duration;

use crate::schedule_ledger::{assert_each_job_ran_exactly_once, assert_every_second_has_a_row};
use crate::support::{Deployment, wait_for_worker};

const SCHEDULE: &str = "slow-every-second";

#[tokio::test]
async fn a_3s_job_on_a_1s_schedule_with_overlap_skip_never_runs_twice_at_once() {
    let deployment = Deployment::new().await;
    deployment.write_config(&format!(
        r#"
[[schedules]]
name = "{SCHEDULE}"
cron = "* * * * * *"
kind = "system.ping"
args = {{ sleep_ms = 3000 }}
overlap = "skip"
"#
    ));
    // Enough concurrency that only the scheduler can keep runs apart.
    let mut worker = deployment.start("upkeep-worker-reports", [] as [&str; 0]);
    wait_for_worker(&mut worker, "reports");
    let mut scheduler = deployment.start("upkeep-scheduler", [] as [&str; 0]);
    std::thread::sleep(Duration::from_secs(14));
    scheduler.sigterm().expect("SIGTERM");
    assert!(scheduler.wait_timeout(Duration::from_secs(10)).is_some());

    let mut ledger = deployment.ledger().await;
    let (ticks, runs) =
        assert_each_job_ran_exactly_once(&mut ledger, SCHEDULE, Duration::from_secs(20)).await;
    let first = ticks[0].fire_at;
    let last = ticks.last().expect("ticks").fire_at;
    assert_every_second_has_a_row(&ticks, first, last);

    assert!(runs.len() >= 3, "a few runs in 14 s: {runs:#?}");
    for pair in runs.windows(2) {
        let finished = pair[0].finished_at.expect("every run finished");
        assert!(
            pair[1].started_at >= finished,
            "two runs overlapped: {:#?}",
            pair
        );
    }
    let skipped: Vec<_> = ticks
        .iter()
        .filter(|t| t.decision == "skipped_overlap")
        .collect();
    assert!(
        skipped.len() >= 2 * (runs.len() - 1),
        "each 3 s run makes the next two ticks skip: {ticks:#?}"
    );
    assert!(
        skipped
            .iter()
            .all(|t| t.job_id.is_none() && t.note.as_deref().is_some_and(|n| n.contains("job "))),
        "a skipped tick has no job and names the unfinished one: {skipped:#?}"
    );
}
