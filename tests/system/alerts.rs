//! Alerts and heartbeat pings end to end: real worker daemons (and the scheduler for pings)
//! against real Postgres and Redis, delivering to an HTTP and an SMTP receiver the test starts
//! on 127.0.0.1 (`upkeep_tests::receivers`).
//!
//! Conditions are seeded the way the checks leave them: a `findings` row per observation
//! (critical, then `ok` when it clears). The alerter reads them like any other finding.

use std::time::Duration;

use sqlx::PgConnection;
use upkeep_tests::ChildProcess;
use upkeep_tests::receivers::{HttpReceiver, SmtpReceiver};

use crate::support::{Deployment, eventually, wait_for_worker};

/// Fast timings so every test stays well under a minute of waiting.
fn alerts_config(hook: &HttpReceiver, smtp_port: u16) -> String {
    format!(
        r#"
[alerts]
evaluate_interval = "300ms"
deliver_interval = "200ms"
delivery_timeout = "6s"
lease = "8s"
retry_base = "300ms"
retry_max = "2s"

[[alerts.sinks]]
name = "hook"
type = "webhook"
url = "{hook_url}"

[[alerts.sinks]]
name = "chat"
type = "slack"
url_env = "TEST_SLACK_URL"

[[alerts.sinks]]
name = "mail"
type = "email"
smtp_host = "127.0.0.1"
smtp_port = {smtp_port}
tls = "none"
from = "upkeep <upkeep@example.test>"
to = ["ops@example.test"]

[[alerts.rules]]
name = "critical-findings"
events = ["finding_critical"]
sinks = ["hook", "mail"]
repeat_interval = "1h"
"#,
        hook_url = hook.url("/hook"),
    )
}

/// A deployment configured by [`alerts_config`] and the receivers of its sinks: `hook` takes
/// the webhook (`/hook`) and the Slack messages (`/slack`), `smtp` the email.
struct Setup {
    hook: HttpReceiver,
    smtp: SmtpReceiver,
    deployment: Deployment,
}

impl Setup {
    async fn new() -> Self {
        let hook = HttpReceiver::start().await;
        let smtp = SmtpReceiver::start().await;
        let mut deployment = Deployment::new().await;
        deployment.set_env("TEST_SLACK_URL", &hook.url("/slack"));
        deployment.write_config(&alerts_config(&hook, smtp.port()));
        Self {
            hook,
            smtp,
            deployment,
        }
    }
}

async fn seed_finding(ledger: &mut PgConnection, code: &str, subject: &str, severity: &str) {
    sqlx::query(
        "INSERT INTO findings (job_id, attempt, ordinal, kind, code, subject, severity, message) \
         VALUES ($1, 1, 0, 'system.disk', $2, $3, $4, $5)",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(code)
    .bind(subject)
    .bind(severity)
    .bind(format!("{code} on {subject} is {severity}"))
    .execute(ledger)
    .await
    .expect("seeding a finding");
}

fn start_worker(deployment: &Deployment, identity: &str) -> ChildProcess {
    let mut command = deployment.command("upkeep-worker-reports", Vec::<&str>::new());
    command.env("UPKEEP__WORKER__IDENTITY", identity);
    let mut worker = deployment.start_with(identity, command);
    wait_for_worker(&mut worker, "reports");
    worker
}

async fn outbox_states(ledger: &mut PgConnection) -> Vec<(String, String, i32, Option<String>)> {
    sqlx::query_as(
        "SELECT sink, state, attempts, claimed_by FROM alert_outbox WHERE kind = 'alert' \
         ORDER BY id",
    )
    .fetch_all(ledger)
    .await
    .expect("reading the outbox")
}

fn hooks(receiver: &HttpReceiver) -> Vec<serde_json::Value> {
    receiver
        .requests_to("/hook")
        .iter()
        .map(upkeep_tests::receivers::HttpRequest::json)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_send_one_message_per_incident_and_one_resolve_when_it_clears() {
    let Setup {
        hook,
        smtp,
        deployment,
    } = Setup::new().await;
    let mut ledger = deployment.ledger().await;
    let _workers: Vec<ChildProcess> = ["w1", "w2", "w3"]
        .iter()
        .map(|id| start_worker(&deployment, id))
        .collect();

    seed_finding(&mut ledger, "disk.used_pct", "/data", "critical").await;
    eventually(
        "the firing webhook and email",
        Duration::from_secs(20),
        async || (!hooks(&hook).is_empty() && !smtp.messages().is_empty()).then_some(()),
    )
    .await;
    // Many evaluation passes of three workers later, still one message per sink.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let firing = hooks(&hook);
    assert_eq!(firing.len(), 1, "one webhook message: {firing:#?}");
    assert_eq!(smtp.messages().len(), 1, "one email");
    let message = &firing[0];
    assert_eq!(message["event"], "finding_critical");
    assert_eq!(message["status"], "firing");
    assert_eq!(message["rule"], "critical-findings");
    assert_eq!(message["subject"], "disk.used_pct//data");
    assert_eq!(message["severity"], "critical");
    let request = &hook.requests_to("/hook")[0];
    assert_eq!(
        request.header("idempotency-key"),
        message["id"].as_str(),
        "the Idempotency-Key header is the message id"
    );
    let email = &smtp.messages()[0];
    assert_eq!(email.to, ["ops@example.test"]);
    assert!(
        email
            .header("subject")
            .is_some_and(|s| s.contains("FIRING") && s.contains("disk.used_pct")),
        "subject: {:?}",
        email.header("subject")
    );
    let incidents: i64 = sqlx::query_scalar("SELECT count(*) FROM alert_incidents")
        .fetch_one(&mut ledger)
        .await
        .expect("count incidents");
    assert_eq!(incidents, 1);

    // A second, unrelated condition opens its own incident.
    seed_finding(&mut ledger, "backup.stale", "app", "critical").await;
    eventually(
        "the second incident's webhook",
        Duration::from_secs(20),
        async || (hooks(&hook).len() == 2).then_some(()),
    )
    .await;

    // The first clears: one resolve message per sink, for the same incident.
    seed_finding(&mut ledger, "disk.used_pct", "/data", "ok").await;
    eventually(
        "the resolve webhook and email",
        Duration::from_secs(20),
        async || (hooks(&hook).len() == 3 && smtp.messages().len() == 3).then_some(()),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let all = hooks(&hook);
    assert_eq!(all.len(), 3, "{all:#?}");
    let resolved: Vec<_> = all.iter().filter(|m| m["status"] == "resolved").collect();
    assert_eq!(resolved.len(), 1);
    assert_eq!(resolved[0]["subject"], "disk.used_pct//data");
    assert_eq!(resolved[0]["incident_id"], message["incident_id"]);
    assert!(resolved[0]["resolved_at"].is_string());
    let ids: std::collections::HashSet<_> = all.iter().map(|m| m["id"].clone()).collect();
    assert_eq!(ids.len(), 3, "every message has its own id");
    assert_eq!(smtp.messages().len(), 3);
    let open = deployment.ctl_ok(["alerts", "list", "--json"]);
    let open: serde_json::Value = serde_json::from_str(&open).expect("alerts list --json");
    let open = open["incidents"].as_array().expect("incidents").clone();
    assert_eq!(open.len(), 1, "{open:#?}");
    assert_eq!(open[0]["subject"], "backup.stale/app");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_is_delivered_after_the_receiver_was_down_for_30_seconds() {
    let Setup {
        mut hook,
        smtp,
        deployment,
    } = Setup::new().await;
    let mut ledger = deployment.ledger().await;
    let _worker = start_worker(&deployment, "w1");
    hook.stop();

    seed_finding(&mut ledger, "disk.used_pct", "/", "critical").await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    let states = outbox_states(&mut ledger).await;
    let webhook = states
        .iter()
        .find(|(sink, ..)| sink == "hook")
        .expect("a webhook message is queued");
    // Waiting for its next try, or in the middle of one when sampled.
    assert!(
        webhook.1 == "pending" || webhook.1 == "sending",
        "still waiting: {states:?}"
    );
    assert!(
        webhook.2 >= 5,
        "retried with a backoff capped at 2s, attempts: {}",
        webhook.2
    );
    // Capped at retry_max (2s, jittered down to half): not hundreds of attempts either.
    assert!(webhook.2 <= 40, "attempts: {}", webhook.2);
    let error: String = sqlx::query_scalar(
        "SELECT last_error FROM alert_outbox WHERE sink = 'hook' AND kind = 'alert'",
    )
    .fetch_one(&mut ledger)
    .await
    .expect("last_error");
    assert!(error.contains("sink hook"), "last_error: {error}");
    assert!(!error.contains("127.0.0.1"), "no URL in errors: {error}");

    hook.restart().await;
    eventually("the delayed webhook", Duration::from_secs(10), async || {
        (hooks(&hook).len() == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(hooks(&hook).len(), 1, "sent once");
    assert_eq!(smtp.messages().len(), 1, "the email was never held up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_delivery_leaves_the_message_in_doubt_and_nothing_is_sent_twice() {
    let Setup {
        hook,
        smtp,
        deployment,
    } = Setup::new().await;
    let mut ledger = deployment.ledger().await;
    let mut workers: Vec<(String, ChildProcess)> = ["w1", "w2", "w3"]
        .iter()
        .map(|id| ((*id).to_owned(), start_worker(&deployment, id)))
        .collect();
    // Slow enough that the kill lands while the request is in flight, fast enough that a
    // re-send by a survivor would complete within the test.
    hook.set_delay(Duration::from_secs(4));

    seed_finding(&mut ledger, "disk.used_pct", "/srv", "critical").await;
    let request = eventually(
        "the webhook request to arrive",
        Duration::from_secs(20),
        async || hook.requests_to("/hook").into_iter().next(),
    )
    .await;
    let id = request.json()["id"].as_str().expect("id").to_owned();
    let claimed_by: String = sqlx::query_scalar(
        "SELECT claimed_by FROM alert_outbox WHERE message_id = $1::uuid AND state = 'sending'",
    )
    .bind(&id)
    .fetch_one(&mut ledger)
    .await
    .expect("the message is being sent");
    let sender = workers
        .iter_mut()
        .find(|(identity, _)| claimed_by.ends_with(identity.as_str()) || claimed_by == *identity)
        .unwrap_or_else(|| panic!("no worker is {claimed_by}"));
    sender.1.kill9().expect("kill -9 the sending worker");

    // The lease (8s) expires; a survivor finds the message in doubt and does not send it.
    let state = eventually(
        "the message to be marked in doubt",
        Duration::from_secs(20),
        async || {
            let state: String =
                sqlx::query_scalar("SELECT state FROM alert_outbox WHERE message_id = $1::uuid")
                    .bind(&id)
                    .fetch_one(&mut ledger)
                    .await
                    .expect("state");
            (state != "sending").then_some(state)
        },
    )
    .await;
    assert_eq!(state, "in_doubt");
    tokio::time::sleep(Duration::from_secs(6)).await;
    let sent: Vec<_> = hooks(&hook)
        .into_iter()
        .filter(|m| m["id"] == id.as_str())
        .collect();
    assert_eq!(sent.len(), 1, "the message reached the receiver once");
    assert_eq!(hooks(&hook).len(), 1, "and nothing else was sent for it");
    // The email of the same incident was in flight too (several SMTP round trips) or already
    // sent: either way it reached the receiver at most once.
    assert!(
        smtp.messages().len() <= 1,
        "email sent {} times",
        smtp.messages().len()
    );
    let open = deployment.ctl_ok(["alerts", "list"]);
    assert!(open.contains(" in doubt"), "{open}");
    assert!(!open.contains(" 0 in doubt"), "{open}");

    // The survivors still deliver new incidents, once.
    hook.set_delay(Duration::ZERO);
    seed_finding(&mut ledger, "disk.used_pct", "/var", "critical").await;
    eventually(
        "the next incident's webhook",
        Duration::from_secs(20),
        async || (hooks(&hook).len() == 2).then_some(()),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(hooks(&hook).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upkeepctl_alerts_test_sends_through_each_sink_and_fails_loudly() {
    let Setup {
        mut hook,
        smtp,
        deployment,
    } = Setup::new().await;

    let run = |args: &[&str]| {
        let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        tokio::task::block_in_place(|| deployment.run("upkeepctl", &args))
    };
    run(&["alerts", "test", "hook"]).assert_success();
    let webhook = hooks(&hook);
    assert_eq!(webhook.len(), 1);
    assert_eq!(webhook[0]["event"], "test");
    assert_eq!(webhook[0]["subject"], "hook");

    run(&["alerts", "test", "chat"]).assert_success();
    let slack = hook.requests_to("/slack");
    assert_eq!(slack.len(), 1);
    let body = slack[0].json();
    assert!(
        body["text"]
            .as_str()
            .is_some_and(|t| t.contains("test message")),
        "{body}"
    );
    assert!(body["blocks"].is_array());

    run(&["alerts", "test", "mail"]).assert_success();
    let mails = smtp.messages();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].from, "upkeep@example.test");
    assert!(mails[0].data.contains("test message"));
    assert!(
        mails[0]
            .header("message-id")
            .is_some_and(|id| id.ends_with("@upkeep>"))
    );

    run(&["alerts", "test", "nope"]).assert_failure_naming(&["nope"]);
    hook.set_status(500);
    run(&["alerts", "test", "hook"]).assert_failure_naming(&["sink hook", "HTTP 500"]);
    hook.stop();
    run(&["alerts", "test", "hook"]).assert_failure_naming(&["sink hook", "request failed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_url_gets_a_get_after_each_success_and_fail_when_the_job_goes_dead() {
    let pings = HttpReceiver::start().await;
    let deployment = Deployment::new().await;
    deployment.write_config(&format!(
        r#"
[alerts]
evaluate_interval = "300ms"
deliver_interval = "200ms"

[kinds."system.ping"]
max_attempts = 1

[[schedules]]
name = "heartbeat-ok"
cron = "*/2 * * * * *"
kind = "system.ping"
ping_url = "{ok}"

[[schedules]]
name = "heartbeat-bad"
cron = "*/2 * * * * *"
kind = "system.ping"
args = {{ fail = true }}
ping_url = "{bad}/"
"#,
        ok = pings.url("/ping/ok"),
        bad = pings.url("/ping/bad"),
    ));
    let _scheduler = deployment.start("upkeep-scheduler", Vec::<&str>::new());
    let _worker = start_worker(&deployment, "w1");

    eventually(
        "a success ping and a fail ping",
        Duration::from_secs(30),
        async || {
            (pings.requests_to("/ping/ok").len() >= 2
                && !pings.requests_to("/ping/bad/fail").is_empty())
            .then_some(())
        },
    )
    .await;
    let requests = pings.requests();
    assert!(requests.iter().all(|r| r.method == "GET"), "{requests:?}");
    assert!(
        requests
            .iter()
            .all(|r| r.path == "/ping/ok" || r.path == "/ping/bad/fail"),
        "no success ping for the failing schedule, no fail ping for the good one: {:?}",
        requests.iter().map(|r| &r.path).collect::<Vec<_>>()
    );
    // One ping per run: as many success pings as succeeded runs (those already pinged).
    let mut ledger = deployment.ledger().await;
    let n_succeeded: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM job_runs WHERE schedule = 'heartbeat-ok' AND status = 'succeeded'",
    )
    .fetch_one(&mut ledger)
    .await
    .expect("count runs");
    let n_ok = pings.requests_to("/ping/ok").len();
    assert!(
        i64::try_from(n_ok).expect("small") <= n_succeeded,
        "{n_ok} pings for {n_succeeded} successful runs"
    );
    let keys: std::collections::HashSet<_> = requests
        .iter()
        .map(|r| r.header("idempotency-key").map(str::to_owned))
        .collect();
    assert_eq!(keys.len(), requests.len(), "each ping is its own message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_ticks_a_stale_backup_and_a_silent_schedule_fire_and_resolve_on_success() {
    let hook = HttpReceiver::start().await;
    let deployment = Deployment::new().await;
    deployment.write_config(&format!(
        r#"
[alerts]
evaluate_interval = "300ms"
deliver_interval = "200ms"
grace = "1s"

[[alerts.sinks]]
name = "hook"
type = "webhook"
url = "{url}"

[[alerts.rules]]
name = "schedules"
events = ["missed_tick", "stale_backup", "schedule_silent"]
sinks = ["hook"]

[[schedules]]
name = "nightly-backup"
cron = "0 2 * * *"
kind = "backup.run"
args = {{ database = "app" }}
"#,
        url = hook.url("/hook"),
    ));
    let mut ledger = deployment.ledger().await;
    // Two days ago the 02:00 tick was missed (no scheduler ran), and the newest verified
    // backup is as old: the schedule is silent, its tick missed, its backup stale.
    sqlx::query(
        "INSERT INTO schedule_ticks (schedule, fire_at, decision, claimed_by) \
         VALUES ('nightly-backup', now() - interval '2 days', 'missed', 'test')",
    )
    .execute(&mut ledger)
    .await
    .expect("seeding a missed tick");
    seed_backup(&mut ledger, "2 days").await;
    let _worker = start_worker(&deployment, "w1");

    eventually(
        "three firing messages",
        Duration::from_secs(20),
        async || (hooks(&hook).len() == 3).then_some(()),
    )
    .await;
    let mut events: Vec<String> = hooks(&hook)
        .iter()
        .map(|m| format!("{} {} {}", m["event"], m["status"], m["subject"]))
        .collect();
    events.sort();
    assert_eq!(
        events,
        [
            "\"missed_tick\" \"firing\" \"nightly-backup\"",
            "\"schedule_silent\" \"firing\" \"nightly-backup\"",
            "\"stale_backup\" \"firing\" \"app\"",
        ]
    );

    // A run of the schedule succeeds and leaves a fresh verified backup: all three resolve.
    sqlx::query(
        "INSERT INTO job_runs (job_id, attempt, kind, queue, status, schedule, tick_at, \
                               enqueued_at, started_at, finished_at, worker, next_state) \
         VALUES ($1, 1, 'backup.run', 'backups', 'succeeded', 'nightly-backup', now(), \
                 now(), now(), now(), 'test', 'done')",
    )
    .bind(uuid::Uuid::now_v7())
    .execute(&mut ledger)
    .await
    .expect("seeding a successful run");
    seed_backup(&mut ledger, "0 seconds").await;
    eventually(
        "three resolve messages",
        Duration::from_secs(20),
        async || (hooks(&hook).len() == 6).then_some(()),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let resolved = hooks(&hook)
        .iter()
        .filter(|m| m["status"] == "resolved")
        .count();
    assert_eq!(resolved, 3);
    assert_eq!(hooks(&hook).len(), 6);
}

async fn seed_backup(ledger: &mut PgConnection, age: &str) {
    sqlx::query(
        "INSERT INTO backups (database, format, path, manifest_path, size_bytes, sha256, \
                              server_version, pg_dump_version, started_at, finished_at, \
                              verification, table_count) \
         VALUES ('app', 'custom', $1, $1 || '.manifest', 1000, 'x', '17', '17', \
                 now() - $2::interval, now() - $2::interval, 'full_read', 1)",
    )
    .bind(format!("/backups/app/{}", uuid::Uuid::now_v7()))
    .bind(age)
    .execute(ledger)
    .await
    .expect("seeding a backup");
}
