//! Start-up: a bad setting stops a process at once, naming the key; secrets in the
//! configuration never reach the output.

use std::time::Duration;

use upkeep_tests::{free_port, fresh_migrated_database, shared_database_url};

use crate::support::{Deployment, wait_for_log_entry, wait_for_status, wait_for_worker};

/// How fast a refused configuration must stop a process.
const QUICKLY: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_bad_concurrency_from_the_environment_stops_every_daemon_at_start_naming_the_key() {
    let mut deployment = Deployment::new().await;
    deployment.set_env("UPKEEP__QUEUES__REPORTS__CONCURRENCY", "0");

    for (binary, args) in [
        ("upkeep-worker-reports", &[][..]),
        ("upkeep-worker-backup", &[][..]),
        ("upkeep-scheduler", &[][..]),
        ("upkeepctl", &["up"][..]),
    ] {
        let finished = deployment.run_command(binary, deployment.command(binary, args), QUICKLY);
        finished.assert_failure_naming(&[
            "queues.reports.concurrency",
            "UPKEEP__QUEUES__REPORTS__CONCURRENCY",
            "got 0",
        ]);
        assert!(finished.elapsed < QUICKLY, "{finished:?}");
    }
}

#[tokio::test]
async fn a_schedule_with_a_bad_cron_stops_the_scheduler_naming_the_schedule_and_its_cron_field() {
    let deployment = Deployment::new().await;
    deployment.write_config(
        r#"
[[schedules]]
name = "nightly-ping"
cron = "0 0 25 * * *"
kind = "system.ping"
"#,
    );

    let finished = deployment.run_command(
        "upkeep-scheduler",
        deployment.command("upkeep-scheduler", [] as [&str; 0]),
        QUICKLY,
    );

    finished.assert_failure_naming(&["\"nightly-ping\"", ".cron", "0 0 25 * * *"]);
}

const SECRET: &str = "s3cr3t-pw";

/// `url` with `SECRET` as the password of its user.
fn with_password(url: &str) -> String {
    let mut url = url::Url::parse(url).expect("a database URL");
    url.set_password(Some(SECRET))
        .expect("URL takes a password");
    url.to_string()
}

fn assert_no_secret(what: &str, output: &str) {
    assert!(
        !output.contains(SECRET),
        "{what} shows the database password:\n{output}"
    );
}

#[tokio::test]
async fn a_database_password_never_appears_in_any_output_working_or_failing() {
    // Working: the shared server uses trust authentication, so the password is ignored but
    // travels through every layer.
    let database_url = with_password(&fresh_migrated_database(&shared_database_url()).await);
    let deployment = Deployment::with_database_url(database_url);
    deployment.write_config(
        r#"
[[schedules]]
name = "ping-every-second"
cron = "* * * * * *"
kind = "system.ping"
"#,
    );
    let mut worker = deployment.start("upkeep-worker-reports", [] as [&str; 0]);
    wait_for_worker(&mut worker, "reports");
    let mut scheduler = deployment.start("upkeep-scheduler", [] as [&str; 0]);
    let migrate = deployment.run("upkeepctl", ["migrate"]);
    migrate.assert_success();
    let ids = deployment.enqueue("system.ping", "{}", &[]);
    let mut ledger = deployment.ledger().await;
    wait_for_status(&mut ledger, ids[0], "succeeded", Duration::from_secs(15)).await;
    wait_for_log_entry(
        &mut scheduler,
        "an enqueued tick",
        Duration::from_secs(15),
        |entry| entry["message"] == "tick enqueued",
    );
    worker.sigterm().expect("SIGTERM");
    scheduler.sigterm().expect("SIGTERM");
    assert!(worker.wait_timeout(Duration::from_secs(35)).is_some());
    assert!(scheduler.wait_timeout(Duration::from_secs(35)).is_some());
    assert_no_secret("the worker's log", &worker.log());
    assert_no_secret("the scheduler's log", &scheduler.log());
    assert_no_secret("upkeepctl migrate", &format!("{migrate:?}"));

    // Failing: Postgres unreachable. The outage is logged, without the URL's password.
    let unreachable = with_password(&format!(
        "postgres://postgres@127.0.0.1:{}/upkeep",
        free_port()
    ));
    let mut down = Deployment::with_database_url(unreachable);
    down.set_env("UPKEEP__DATABASE__CONNECT_TIMEOUT", "1s");
    let mut worker = down.start("upkeep-worker-reports", [] as [&str; 0]);
    wait_for_worker(&mut worker, "reports");
    down.enqueue("system.ping", "{}", &[]);
    wait_for_log_entry(
        &mut worker,
        "the ledger outage",
        Duration::from_secs(15),
        |entry| entry["message"] == "dependency unavailable; retrying with backoff",
    );
    worker.kill9().expect("kill -9");
    assert_no_secret("the log of a worker without its database", &worker.log());
    let migrate = down.run("upkeepctl", ["migrate"]);
    assert!(!migrate.status.success(), "{migrate:?}");
    assert_no_secret(
        "upkeepctl migrate without a database",
        &format!("{migrate:?}"),
    );

    // Failing: a malformed URL is refused at start, naming the variable, not the password.
    let malformed = Deployment::with_database_url(format!(
        "postgres://postgres:{SECRET}@127.0.0.1:notaport/upkeep"
    ));
    let finished = malformed.run_command(
        "upkeep-worker-reports",
        malformed.command("upkeep-worker-reports", [] as [&str; 0]),
        QUICKLY,
    );
    finished.assert_failure_naming(&["DATABASE_URL"]);
    assert_no_secret("a refused database URL", &format!("{finished:?}"));
}

#[tokio::test]
async fn migrate_against_an_unreachable_database_says_where_and_why_without_the_password() {
    let port = free_port();
    let deployment = Deployment::with_database_url(format!(
        "postgres://postgres:{SECRET}@127.0.0.1:{port}/upkeep"
    ));

    let finished = deployment.run_command(
        "upkeepctl",
        deployment.command("upkeepctl", ["migrate"]),
        Duration::from_secs(30),
    );

    // Not just "pool timed out": the address it tried, and the operating system's reason.
    finished.assert_failure_naming(&[
        &format!("connecting to Postgres at postgres://***@127.0.0.1:{port}/upkeep"),
        "Connection refused",
    ]);
    assert_no_secret("upkeepctl migrate", &format!("{finished:?}"));
}
