//! The configuration's behaviour as operators meet it: defaults, layering, every problem
//! with its key and source, secrets never shown, the example file in step with the types.

use std::time::Duration;

use secrecy::SecretString;

use super::*;
use crate::job::{self, JobKind};
use crate::schedule::{CatchUp, Overlap};
use crate::settings::Section;
use crate::telemetry::LogFormat;

fn env(vars: &[(&str, &str)]) -> HashMap<String, String> {
    vars.iter()
        .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
        .collect()
}

fn load(toml: &str, vars: &[(&str, &str)]) -> Result<Settings, Error> {
    Settings::from_toml_str(toml, &env(vars))
}

/// A section shaped like the feature sections: an array of tables with a secret each.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Targets {
    targets: Vec<Target>,
    #[serde(with = "humantime_serde")]
    every: Duration,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Target {
    name: String,
    url: SecretString,
}

impl Section for Targets {
    const SECRET_KEYS: &'static [&'static str] = &["targets[].url"];

    fn validate(&self, path: &str, problems: &mut Problems) {
        for (idx, target) in self.targets.iter().enumerate() {
            problems.check_not_empty(format!("{path}.targets[{idx}].name"), &target.name);
        }
    }
}

fn section(toml: &str, vars: &[(&str, &str)]) -> Result<Targets, Vec<Problem>> {
    let doc: Table = toml.parse().expect("test TOML parses");
    let mut ctx = Ctx::default();
    let targets = serde_section::<Targets>(&mut ctx, &doc, "t", &env(vars));
    if ctx.problems.is_empty() {
        Ok(targets)
    } else {
        Err(ctx.problems)
    }
}

#[test]
fn a_secret_in_an_array_entry_is_read_from_its_env_variable() {
    let targets = section(
        "[[t.targets]]\nname = \"a\"\nurl_env = \"A_URL\"\n",
        &[("A_URL", "postgres://u:pw@db/a")],
    )
    .expect("valid");
    assert_eq!(
        targets.targets[0].url.expose_secret(),
        "postgres://u:pw@db/a"
    );
}

#[test]
fn a_secret_in_an_array_entry_is_read_from_its_file_without_the_newline() {
    let dir = std::env::temp_dir().join(format!("upkeep-cfg-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("url");
    std::fs::write(&file, "postgres://u:pw@db/b\n").expect("write credential");
    let toml = format!(
        "[[t.targets]]\nname = \"b\"\nurl_file = {:?}\n",
        file.display().to_string()
    );
    let targets = section(&toml, &[]).expect("valid");
    assert_eq!(
        targets.targets[0].url.expose_secret(),
        "postgres://u:pw@db/b"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn indirect_secret_problems_name_the_key_and_never_the_secret() {
    let problems = section(
        "[[t.targets]]\nname = \"\"\nurl_env = \"MISSING_VAR\"\n\
         [[t.targets]]\nname = \"c\"\nurl = \"postgres://u:hunter2@db/c\"\nurl_env = \"X\"\n\
         [[t.targets]]\nname = \"d\"\nurl_file = \"/nonexistent/upkeep-cred\"\n",
        &[],
    )
    .expect_err("invalid");
    let text: Vec<String> = problems.iter().map(Problem::to_string).collect();
    assert!(
        text[0].starts_with("t.targets[0].url_env: environment variable MISSING_VAR is not set"),
        "{text:?}"
    );
    assert!(
        text[1].starts_with("t.targets[1].url: give only one of url, url_env and url_file"),
        "{text:?}"
    );
    assert!(
        text[2].starts_with("t.targets[2].url_file: cannot read /nonexistent/upkeep-cred"),
        "{text:?}"
    );
    assert!(!text.join(" ").contains("hunter2"), "{text:?}");
}

#[test]
fn a_section_type_error_names_the_nested_key() {
    let problems = section(
        "[t]\nevery = \"soon\"\n[[t.targets]]\nname = \"e\"\nurl = \"x\"\n",
        &[],
    )
    .expect_err("invalid");
    assert_eq!(problems[0].key, "t.every", "{problems:?}");
    let problems = section(
        "[[t.targets]]\nname = \"e\"\nurl = \"x\"\ncolour = 1\n",
        &[],
    )
    .expect_err("invalid");
    assert_eq!(problems[0].key, "t.targets[0].colour", "{problems:?}");
    assert!(
        problems[0].message.contains("unknown field"),
        "{problems:?}"
    );
}

fn error_text(toml: &str, vars: &[(&str, &str)]) -> String {
    match load(toml, vars) {
        Ok(_) => panic!("expected an error for {toml:?} with {vars:?}"),
        Err(e) => e.to_string(),
    }
}

fn queue(name: &str) -> QueueName {
    QueueName::parse(name).expect("test queue names are valid")
}

const PING: &str = r#"
    [[schedules]]
    name = "ping"
    cron = "*/5 * * * * *"
    kind = "system.ping"
"#;

#[test]
fn an_empty_file_gives_the_documented_defaults() {
    let settings = load("", &[]).expect("defaults are valid");

    assert_eq!(
        settings.database.url.expose_secret(),
        "postgres://postgres@127.0.0.1:5432/upkeep"
    );
    assert_eq!(settings.database.max_connections, 10);
    assert!(!settings.database.migrate_on_start);
    assert_eq!(
        settings.redis.url.expose_secret(),
        "redis://127.0.0.1:6379/"
    );
    assert!(!settings.redis.is_cluster());
    assert_eq!(settings.redis.key_prefix.as_str(), "upkeep");
    assert_eq!(settings.redis.response_timeout, Duration::from_secs(5));
    assert_eq!(settings.worker.grace_period, Duration::from_secs(30));
    assert_eq!(settings.worker.identity, None);
    assert_eq!(settings.scheduler.tick_interval, Duration::from_millis(250));
    assert_eq!(settings.scheduler.confirm_timeout, Duration::from_secs(10));
    assert_eq!(settings.api.addr, "127.0.0.1:8080".parse().unwrap());
    assert!(settings.api.token.is_none());
    assert_eq!(settings.telemetry.format, LogFormat::Auto);
    assert_eq!(settings.telemetry.filter, "info");
    assert!(settings.secret_key.is_none());
    assert!(settings.schedules.is_empty());
}

#[test]
fn maintenance_defaults_to_requeueing_lost_jobs_every_5m_after_a_10m_grace() {
    let settings = load("", &[]).expect("defaults are valid");

    assert_eq!(
        settings.maintenance,
        MaintenanceSettings {
            reconcile_action: ReconcileAction::Requeue,
            reconcile_interval: Duration::from_secs(300),
            reconcile_grace: Duration::from_secs(600),
            ledger_retention: Duration::from_secs(90 * 24 * 3600),
            ledger_prune_interval: Duration::from_secs(3600),
        }
    );
}

#[test]
fn a_ledger_retention_under_an_hour_or_within_the_reconcile_grace_is_named() {
    let text = error_text("[maintenance]\nledger_retention = \"10m\"\n", &[]);
    assert!(
        text.contains("maintenance.ledger_retention: must be at least 1h"),
        "{text}"
    );

    let text = error_text(
        "[maintenance]\nledger_retention = \"2h\"\nreconcile_grace = \"3h\"\n",
        &[],
    );
    assert!(
        text.contains("maintenance.ledger_retention: must be longer than maintenance.reconcile_grace (3h), got 2h"),
        "{text}"
    );

    let settings = load("", &[("UPKEEP__MAINTENANCE__LEDGER_RETENTION", "30d")]).expect("valid");
    assert_eq!(
        settings.maintenance.ledger_retention,
        Duration::from_secs(30 * 24 * 3600)
    );
}

#[test]
fn maintenance_settings_come_from_the_file_and_the_environment() {
    let settings = load(
        "[maintenance]\nreconcile_action = \"record\"\nreconcile_grace = \"30s\"\n",
        &[("UPKEEP__MAINTENANCE__RECONCILE_INTERVAL", "1m")],
    )
    .expect("valid");

    assert_eq!(
        settings.maintenance.reconcile_action,
        ReconcileAction::Record
    );
    assert_eq!(
        settings.maintenance.reconcile_grace,
        Duration::from_secs(30)
    );
    assert_eq!(
        settings.maintenance.reconcile_interval,
        Duration::from_secs(60)
    );
}

#[test]
fn a_bad_reconcile_action_or_a_grace_under_a_second_is_named() {
    // A bad choice is a type error, which stops its section; the range check is separate.
    let text = error_text("[maintenance]\nreconcile_action = \"delete\"\n", &[]);
    assert!(
        text.contains("maintenance.reconcile_action: unknown variant `delete`, expected one of `requeue`, `record`, `off`"),
        "{text}"
    );

    let text = error_text("[maintenance]\nreconcile_grace = \"10ms\"\n", &[]);
    assert!(
        text.contains("maintenance.reconcile_grace: must be at least 1s"),
        "{text}"
    );
}

#[test]
fn every_builtin_queue_exists_with_defaults_even_when_the_file_names_none() {
    let settings = load("", &[]).unwrap();

    for name in job::QUEUES {
        let queue_settings = settings.queues.get(&queue(name)).expect("queue present");
        assert_eq!(queue_settings, &QueueSettings::default(), "queue {name}");
    }
    let defaults = QueueSettings::default();
    assert_eq!(defaults.concurrency, 16);
    assert_eq!(defaults.lease, Duration::from_secs(30));
    assert_eq!(defaults.retention, Duration::from_secs(3600));
    assert_eq!(defaults.dead_retention, Duration::from_secs(7 * 86_400));
    assert_eq!(defaults.max_attempts, 3);
    assert_eq!(defaults.backoff_base, Duration::from_secs(1));
    assert_eq!(defaults.backoff_max, Duration::from_secs(300));
    assert_eq!(defaults.batch_size, 128);
    assert_eq!(defaults.timeout, Duration::from_secs(3600));
}

#[test]
fn a_queue_section_changes_only_the_keys_it_names() {
    let settings = load(
        "[queues.reports]\nconcurrency = 4\nlease = \"1m\"\n[queues.bench]\nbatch_size = 500\n",
        &[],
    )
    .unwrap();

    let reports = &settings.queues[&queue("reports")];
    assert_eq!(reports.concurrency, 4);
    assert_eq!(reports.lease, Duration::from_secs(60));
    assert_eq!(reports.max_attempts, 3);
    assert_eq!(settings.queues[&queue("bench")].batch_size, 500);
    assert_eq!(settings.queues[&queue("logs")], QueueSettings::default());
}

#[test]
fn a_kind_override_wins_over_its_queue_policy() {
    let settings = load(
        "[queues.reports]\nmax_attempts = 7\n[kinds.\"system.ping\"]\ntimeout = \"2s\"\n",
        &[],
    )
    .unwrap();

    let policy = settings.job_policy(&queue("reports"), "system.ping");
    assert_eq!(policy.timeout, Duration::from_secs(2));
    assert_eq!(policy.max_attempts, 7);
    let other = settings.job_policy(&queue("reports"), "db.bloat");
    assert_eq!(other.timeout, Duration::from_secs(3600));
}

#[test]
fn a_schedule_gets_its_documented_defaults() {
    let settings = load(PING, &[]).unwrap();

    let schedule = &settings.schedules[0];
    assert_eq!(schedule.name, "ping");
    assert_eq!(schedule.timezone, chrono_tz::Tz::UTC);
    assert_eq!(schedule.kind.as_str(), "system.ping");
    assert_eq!(schedule.args, serde_json::json!({}));
    assert_eq!(schedule.queue, queue("reports"));
    assert_eq!(schedule.catch_up, CatchUp::Latest);
    assert_eq!(schedule.catch_up_window, Duration::from_secs(3600));
    assert_eq!(schedule.catch_up_max, 100);
    assert_eq!(schedule.overlap, Overlap::Allow);
    assert_eq!(schedule.jitter, Duration::ZERO);
    assert!(schedule.enabled);
}

#[test]
fn backup_kinds_default_to_skipping_overlaps() {
    let backup = JobKind::parse("backup.run").unwrap();
    let ping = JobKind::parse("system.ping").unwrap();

    assert_eq!(default_overlap(backup), Overlap::Skip);
    assert_eq!(default_overlap(ping), Overlap::Allow);
}

#[test]
fn schedule_args_become_json() {
    let settings = load(
        r#"
        [[schedules]]
        name = "ping"
        cron = "0 * * * * *"
        timezone = "Europe/Paris"
        kind = "system.ping"
        args = { sleep_ms = 10, fail = false }
        queue = "logs"
        catch_up = "all"
        overlap = "queue_one"
        jitter = "3s"
        enabled = false
        "#,
        &[],
    )
    .unwrap();

    let schedule = &settings.schedules[0];
    assert_eq!(
        schedule.args,
        serde_json::json!({"sleep_ms": 10, "fail": false})
    );
    assert_eq!(schedule.timezone, chrono_tz::Tz::Europe__Paris);
    assert_eq!(schedule.queue, queue("logs"));
    assert_eq!(schedule.catch_up, CatchUp::All);
    assert_eq!(schedule.overlap, Overlap::QueueOne);
    assert_eq!(schedule.jitter, Duration::from_secs(3));
    assert!(!schedule.enabled);
}

#[test]
fn each_validation_error_names_its_key_and_the_bad_value() {
    let schedule = |extra: &str| {
        format!(
            "[[schedules]]\nname = \"a\"\ncron = \"0 * * * * *\"\nkind = \"system.ping\"\n\
             [[schedules]]\nname = \"b\"\ncron = \"0 * * * * *\"\nkind = \"system.ping\"\n\
             [[schedules]]\nname = \"nightly\"\ncron = \"0 0 2 * * *\"\nkind = \"system.ping\"\n{extra}\n"
        )
    };
    let cases: Vec<(String, &str)> = vec![
        (
            "[queues.reports]\nconcurrency = 0".into(),
            "queues.reports.concurrency: must be between 1 and 10000, got 0",
        ),
        (
            "[queues.reports]\nconcurrency = \"many\"".into(),
            "queues.reports.concurrency: invalid type: string \"many\", expected u32",
        ),
        (
            "[queues.reports]\nmax_attempts = 101".into(),
            "queues.reports.max_attempts: must be between 1 and 100, got 101",
        ),
        (
            "[queues.logs]\nbatch_size = 1001".into(),
            "queues.logs.batch_size: must be between 1 and 1000, got 1001",
        ),
        (
            "[queues.logs]\nsummary_interval = \"500ms\"".into(),
            "queues.logs.summary_interval: must be at least 1s, got 500ms",
        ),
        (
            "[queues.logs]\nlease = \"500ms\"".into(),
            "queues.logs.lease: must be at least 1s, got 500ms",
        ),
        (
            "[queues.logs]\ntimeout = \"soon\"".into(),
            "queues.logs.timeout: expected a duration such as",
        ),
        (
            "[queues.logs]\nbackoff_base = \"10m\"".into(),
            "queues.logs.backoff_max: must be at least backoff_base (10m), got 5m",
        ),
        (
            "[queues.\"Bad Queue\"]\nconcurrency = 1".into(),
            "queues.\"Bad Queue\": queue name \"Bad Queue\"",
        ),
        (
            "[kinds.\"nope.kind\"]\ntimeout = \"1s\"".into(),
            "kinds.\"nope.kind\": unknown job kind \"nope.kind\"",
        ),
        (
            "[redis]\nurl = \"http://x\"".into(),
            "redis.url: not a redis://, rediss:// or redis+sentinel:// URL: \"http://x\"",
        ),
        (
            "[redis]\nkey_prefix = \"test:{1}\"".into(),
            "redis.key_prefix: must be 1-64 characters of [A-Za-z0-9_.-] (no braces or colons), got \"test:{1}\"",
        ),
        (
            "[redis]\ncluster_urls = [\"redis://a:7000\", \"tcp://b\"]".into(),
            "redis.cluster_urls[1]: not a redis:// or rediss:// URL: \"tcp://b\"",
        ),
        (
            "[database]\nurl = \"mysql://x/db\"".into(),
            "database.url: not a postgres URL (expected postgres:// or postgresql://): \"mysql://x/db\"",
        ),
        (
            "[database]\nmax_conections = 3".into(),
            "database.max_conections: unknown field `max_conections`, expected one of `url`, `max_connections`",
        ),
        (
            "[database]\nmigrate_on_start = \"yes\"".into(),
            "database.migrate_on_start: invalid type: string \"yes\", expected a boolean",
        ),
        ("[databse]\nurl = \"x\"".into(), "databse: unknown key"),
        (
            "[api]\naddr = \"localhost\"".into(),
            "api.addr: not a socket address such as 127.0.0.1:8080: \"localhost\"",
        ),
        (
            "[telemetry]\nformat = \"xml\"".into(),
            "telemetry.format: unknown variant `xml`, expected one of `auto`, `json`, `pretty`",
        ),
        (
            "[telemetry]\nfilter = \"info,[[[\"".into(),
            "telemetry.filter: invalid tracing filter \"info,[[[\"",
        ),
        (
            "[worker]\ngrace_period = 30".into(),
            "worker.grace_period: expected a duration such as \"250ms\", \"30s\", \"5m\" or \"7d\", got 30",
        ),
        (
            "[scheduler]\ntick_interval = \"1ms\"".into(),
            "scheduler.tick_interval: must be at least 10ms, got 1ms",
        ),
        ("database = 5".into(), "database: expected a table, got 5"),
        (
            schedule("cron = \"61 * * * * *\"").replace("cron = \"0 0 2 * * *\"\n", ""),
            "schedules[2] (\"nightly\").cron: invalid cron expression \"61 * * * * *\": second field \"61\": 61 is out of range 0-59",
        ),
        (
            schedule("").replace("cron = \"0 0 2 * * *\"", "cron = \"2 * * *\""),
            "schedules[2] (\"nightly\").cron: invalid cron expression \"2 * * *\": expected 5 fields",
        ),
        (
            schedule("timezone = \"Mars/Olympus\""),
            "schedules[2] (\"nightly\").timezone: unknown time zone \"Mars/Olympus\"",
        ),
        (
            schedule("").replace(
                "kind = \"system.ping\"\n\n",
                "kind = \"backup.verify\"\nargs = { mode = \"sideways\" }\n",
            ),
            "schedules[2] (\"nightly\").args: bad args for backup.verify: unknown variant `sideways`",
        ),
        (
            schedule("").replace("kind = \"system.ping\"\n\n", "kind = \"backup.nope\"\n"),
            "schedules[2] (\"nightly\").kind: unknown job kind \"backup.nope\"",
        ),
        (
            schedule("args = { sleep = 5 }"),
            "schedules[2] (\"nightly\").args: bad args for system.ping: unknown field `sleep`",
        ),
        (
            schedule("queue = \"nowhere\""),
            "schedules[2] (\"nightly\").queue: queue \"nowhere\" is not configured",
        ),
        (
            schedule("catch_up = \"sometimes\""),
            "schedules[2] (\"nightly\").catch_up: unknown variant `sometimes`, expected one of `skip`, `latest`, `all`",
        ),
        (
            schedule("overlap = \"never\""),
            "schedules[2] (\"nightly\").overlap: unknown variant `never`, expected one of `allow`, `skip`, `queue_one`",
        ),
        (
            schedule("jitter = \"2h\""),
            "schedules[2] (\"nightly\").jitter: must be at most 1h, got 2h",
        ),
        (
            schedule("catch_up_max = 0"),
            "schedules[2] (\"nightly\").catch_up_max: must be between 1 and 10000, got 0",
        ),
        (
            schedule("retries = 3"),
            "schedules[2] (\"nightly\").retries: unknown field `retries`, expected one of `name`",
        ),
        (
            schedule("").replace("name = \"nightly\"", "name = \"Nightly Backup\""),
            "schedules[2] (\"Nightly Backup\").name: must be 1-64 characters of [a-z0-9_.-], got \"Nightly Backup\"",
        ),
        (
            schedule("").replace("name = \"nightly\"", "name = \"a\""),
            "schedules[2] (\"a\").name: duplicate schedule name \"a\" (also schedules[0])",
        ),
        (
            schedule("").replace("name = \"nightly\"\n", ""),
            "schedules[2]: missing field `name`",
        ),
    ];
    for (toml, expected) in cases {
        let text = error_text(&toml, &[]);
        assert!(
            text.contains(expected),
            "error for\n{toml}\nwas\n  {text}\nexpected it to contain\n  {expected}"
        );
    }
}

#[test]
fn every_problem_is_reported_at_once() {
    let result = load(
        "[queues.reports]\nconcurrency = 0\nbatch_size = 0\n[redis]\nurl = \"http://x\"\n",
        &[],
    );

    let Err(Error::Invalid { problems, .. }) = result else {
        panic!("expected Error::Invalid, got {result:?}");
    };
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "redis.url",
            "queues.reports.concurrency",
            "queues.reports.batch_size"
        ]
    );
}

#[test]
fn a_syntax_error_names_the_line_without_echoing_it() {
    let text = error_text(
        "[database]\nurl = \"postgres://u:hunter2@h/db\"\nmax_connections = = 3\n",
        &[],
    );

    assert!(text.starts_with("<string>: line 3, column"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn named_environment_variables_override_the_file() {
    let toml = "[redis]\nurl = \"redis://file:6379/\"\n[api]\naddr = \"127.0.0.1:1\"\n\
                [telemetry]\nformat = \"pretty\"\n[database]\nurl = \"postgres://file/db\"\n";
    let settings = load(
        toml,
        &[
            ("DATABASE_URL", "postgres://env/db"),
            ("REDIS_URL", "redis://env:6379/"),
            ("UPKEEP_API_ADDR", "0.0.0.0:9000"),
            ("UPKEEP_LOG_FORMAT", "json"),
            ("UPKEEP_API_TOKEN", "t0ken"),
        ],
    )
    .unwrap();

    assert_eq!(settings.database.url.expose_secret(), "postgres://env/db");
    assert_eq!(settings.redis.url.expose_secret(), "redis://env:6379/");
    assert_eq!(settings.api.addr, "0.0.0.0:9000".parse().unwrap());
    assert_eq!(settings.telemetry.format, LogFormat::Json);
    assert_eq!(
        settings.api.token.as_ref().map(|t| t.expose_secret()),
        Some("t0ken")
    );
}

#[test]
fn named_variables_win_over_generic_ones_which_win_over_the_file() {
    let toml = "[redis]\nurl = \"redis://file:6379/\"\nkey_prefix = \"file\"\n";

    let generic_only = load(
        toml,
        &[
            ("UPKEEP__REDIS__URL", "redis://generic:6379/"),
            ("UPKEEP__REDIS__KEY_PREFIX", "generic"),
        ],
    )
    .unwrap();
    let both = load(
        toml,
        &[
            ("UPKEEP__REDIS__URL", "redis://generic:6379/"),
            ("REDIS_URL", "redis://named:6379/"),
        ],
    )
    .unwrap();

    assert_eq!(
        generic_only.redis.url.expose_secret(),
        "redis://generic:6379/"
    );
    assert_eq!(generic_only.redis.key_prefix.as_str(), "generic");
    assert_eq!(both.redis.url.expose_secret(), "redis://named:6379/");
}

#[test]
fn an_empty_named_variable_counts_as_unset() {
    let settings = load(
        "[api]\naddr = \"127.0.0.1:7000\"\n",
        &[("UPKEEP_API_ADDR", ""), ("UPKEEP_API_TOKEN", "")],
    )
    .unwrap();

    assert_eq!(settings.api.addr, "127.0.0.1:7000".parse().unwrap());
    assert!(settings.api.token.is_none());
}

#[test]
fn generic_variables_set_scalar_fields_of_any_section() {
    let settings = load(
        "",
        &[
            ("UPKEEP__QUEUES__REPORTS__CONCURRENCY", "32"),
            ("UPKEEP__QUEUES__BENCH__LEASE", "2m"),
            ("UPKEEP__WORKER__GRACE_PERIOD", "10s"),
            ("UPKEEP__WORKER__IDENTITY", "worker-a"),
            ("UPKEEP__DATABASE__MIGRATE_ON_START", "true"),
            ("UPKEEP__DATABASE__MAX_CONNECTIONS", "3"),
            ("UPKEEP__KINDS__SYSTEM_PING__MAX_ATTEMPTS", "5"),
            (
                "UPKEEP__REDIS__CLUSTER_URLS",
                "redis://a:7000, redis://b:7000",
            ),
            ("UPKEEP__TELEMETRY__FILTER", "debug"),
        ],
    )
    .unwrap();

    assert_eq!(settings.queues[&queue("reports")].concurrency, 32);
    assert_eq!(
        settings.queues[&queue("reports")].lease,
        Duration::from_secs(30)
    );
    assert_eq!(
        settings.queues[&queue("bench")].lease,
        Duration::from_secs(120)
    );
    assert_eq!(settings.worker.grace_period, Duration::from_secs(10));
    assert_eq!(settings.worker.identity.as_deref(), Some("worker-a"));
    assert!(settings.database.migrate_on_start);
    assert_eq!(settings.database.max_connections, 3);
    assert_eq!(settings.kinds["system.ping"].max_attempts, Some(5));
    assert!(settings.redis.is_cluster());
    assert_eq!(settings.redis.cluster_urls.len(), 2);
    assert_eq!(settings.telemetry.filter, "debug");
}

#[test]
fn a_bad_environment_value_names_the_variable() {
    let cases = [
        (
            ("UPKEEP__QUEUES__REPORTS__CONCURRENCY", "0"),
            "queues.reports.concurrency (from UPKEEP__QUEUES__REPORTS__CONCURRENCY): must be between 1 and 10000, got 0",
        ),
        (
            ("UPKEEP__WORKER__GRACE_PERIOD", "ten"),
            "worker.grace_period (from UPKEEP__WORKER__GRACE_PERIOD): expected a duration",
        ),
        (
            ("UPKEEP__QUEUES__REPORTS__CONCURENCY", "3"),
            "queues.reports.concurency (from UPKEEP__QUEUES__REPORTS__CONCURENCY): unknown field `concurency`, expected one of `concurrency`",
        ),
        (
            ("UPKEEP__DATABASE__PORT", "5433"),
            "database.port (from UPKEEP__DATABASE__PORT): unknown field `port`",
        ),
        (
            ("UPKEEP__KINDS__NOPE__TIMEOUT", "1s"),
            "kinds.nope (from UPKEEP__KINDS__NOPE__TIMEOUT): unknown job kind \"nope\"",
        ),
        (
            ("UPKEEP__SCHEDULES__0__CRON", "x"),
            "UPKEEP__SCHEDULES__0__CRON: schedules[0] does not exist in the file (0 entries)",
        ),
        (("UPKEEP__NOPE", "x"), "UPKEEP__NOPE: unknown setting"),
        (
            ("UPKEEP_API_ADDR", "nope"),
            "UPKEEP_API_ADDR: not a socket address such as 127.0.0.1:8080: \"nope\"",
        ),
        (
            ("UPKEEP_LOG_FORMAT", "xml"),
            "UPKEEP_LOG_FORMAT: unknown variant `xml`, expected one of `auto`, `json`, `pretty`",
        ),
        (
            ("REDIS_URL", "http://x"),
            "REDIS_URL: not a redis://, rediss:// or redis+sentinel:// URL: \"http://x\"",
        ),
        (
            ("DATABASE_URL", "mysql://root@db/app"),
            "DATABASE_URL: not a postgres URL",
        ),
        (
            ("UPKEEP_SECRET_KEY", "AAAAAAAAAAAAAAAAAAAAAA=="),
            "UPKEEP_SECRET_KEY: must be base64 of exactly 32 bytes, got 16 bytes",
        ),
        (
            ("UPKEEP_SECRET_KEY", "not base64!"),
            "UPKEEP_SECRET_KEY: not valid base64",
        ),
    ];
    for ((var, value), expected) in cases {
        let text = error_text("", &[(var, value)]);
        assert!(
            text.contains(expected),
            "error for {var}={value:?} was\n  {text}\nexpected it to contain\n  {expected}"
        );
    }
}

#[test]
fn an_array_entry_is_reached_by_its_index_from_the_environment() {
    let settings = load(PING, &[("UPKEEP__SCHEDULES__0__ENABLED", "false")]).unwrap();
    assert!(!settings.schedules[0].enabled);

    let text = error_text(PING, &[("UPKEEP__SCHEDULES__0__CRON", "61 * * * * *")]);
    assert!(
        text.contains(
            "schedules[0] (\"ping\").cron (from UPKEEP__SCHEDULES__0__CRON): invalid cron expression"
        ),
        "{text}"
    );
    let text = error_text(PING, &[("UPKEEP__SCHEDULES__3__ENABLED", "false")]);
    assert!(
        text.contains(
            "UPKEEP__SCHEDULES__3__ENABLED: schedules[3] does not exist in the file (1 entries)"
        ),
        "{text}"
    );
    let text = error_text(PING, &[("UPKEEP__SCHEDULES__ENABLED", "false")]);
    assert!(
        text.contains("schedules (from UPKEEP__SCHEDULES__ENABLED): expected an array of tables ([[schedules]])"),
        "{text}"
    );
}

#[test]
fn an_unknown_key_is_refused_with_its_path() {
    let text = error_text("[queues.reports]\nconcurrency = 2\ncolour = \"red\"\n", &[]);
    assert!(
        text.contains(
            "queues.reports.colour: unknown field `colour`, expected one of `concurrency`"
        ),
        "{text}"
    );
    let text = error_text(&format!("{PING}retries = 3\n"), &[]);
    assert!(
        text.contains("schedules[0] (\"ping\").retries: unknown field `retries`"),
        "{text}"
    );
    let text = error_text("[kinds.\"system.ping\"]\nretries = 3\n", &[]);
    assert!(
        text.contains("kinds.\"system.ping\".retries: unknown field `retries`"),
        "{text}"
    );
}

#[test]
fn a_problem_in_the_file_names_its_line_and_one_from_a_variable_names_the_variable() {
    let text = error_text(
        "[database]\nmax_connections = 5\n\n[queues.reports]\nconcurrency = 0\n",
        &[("UPKEEP__QUEUES__LOGS__MAX_ATTEMPTS", "0")],
    );

    assert!(
        text.contains(
            "queues.reports.concurrency: must be between 1 and 10000, got 0 (at <string>:5)"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "queues.logs.max_attempts (from UPKEEP__QUEUES__LOGS__MAX_ATTEMPTS): must be between 1 and 100, got 0;"
        ) || text.ends_with("must be between 1 and 100, got 0"),
        "{text}"
    );
}

#[test]
fn config_show_redacts_every_secret_and_names_each_source() {
    let dir = std::env::temp_dir().join(format!("upkeep-show-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("upkeep.toml");
    std::fs::write(
        &path,
        "[database]\nurl = \"postgres://app:hunter2-db@db:5432/app\"\n\n\
         [redis]\ncluster_urls = [\"redis://:hunter2-cluster@c:7000\"]\n\
         [api]\ntoken_env = \"MY_TOKEN\"\n",
    )
    .unwrap();
    let key = base64::engine::general_purpose::STANDARD.encode([9u8; 32]);

    let shown = Settings::show(
        Some(&path),
        &env(&[
            ("MY_TOKEN", "hunter2-token"),
            ("UPKEEP_SECRET_KEY", &key),
            ("UPKEEP__QUEUES__REPORTS__CONCURRENCY", "7"),
        ]),
    )
    .expect("valid");
    std::fs::remove_dir_all(dir).ok();

    let text = serde_json::to_string(&shown).unwrap();
    assert!(!text.contains("hunter2"), "secret shown: {text}");
    assert!(!text.contains(&key), "secret key shown: {text}");
    let get = |key: &str| {
        shown
            .iter()
            .find(|s| s.key == key)
            .unwrap_or_else(|| panic!("{key} not shown in {text}"))
    };
    let file = path.display().to_string();
    assert_eq!(get("database.url").value, "postgres://***@db:5432/app");
    assert_eq!(get("database.url").source, format!("{file}:2"));
    assert_eq!(
        get("redis.cluster_urls").value,
        serde_json::json!(["redis://***@c:7000"])
    );
    assert_eq!(get("api.token").value, "***");
    assert_eq!(get("secret_key").value, "***");
    assert_eq!(get("secret_key").source, "env UPKEEP_SECRET_KEY");
    assert_eq!(get("queues.reports.concurrency").value, 7);
    assert_eq!(
        get("queues.reports.concurrency").source,
        "env UPKEEP__QUEUES__REPORTS__CONCURRENCY"
    );
    assert_eq!(get("queues.logs.lease").value, "30s");
    assert_eq!(get("queues.logs.lease").source, "default");
    assert_eq!(get("redis.url").value, "redis://127.0.0.1:6379/");
}

#[test]
fn the_accepted_keys_come_from_the_types() {
    let keys = accepted_keys();

    for key in [
        "database.url",
        "redis.cluster_urls",
        "queues.*.lease",
        "kinds.*.backoff_max",
        "schedules[].cron",
        "schedules[].args",
        "api.token",
        "secret_key",
    ] {
        assert!(keys.contains(key), "{key} missing from {keys:?}");
    }
    assert!(!keys.contains("queues.*"), "{keys:?}");
    assert!(
        !keys.iter().any(|k| k.starts_with("schedules[].args.")),
        "{keys:?}"
    );
    assert_eq!(
        map_keys(&keys),
        ["kinds", "queues"].map(str::to_owned).into_iter().collect()
    );
}

#[test]
fn the_example_config_documents_exactly_the_keys_the_settings_accept() {
    let accepted = accepted_keys();
    let documented = documented_keys(
        include_str!("../../../upkeep.example.toml"),
        &map_keys(&accepted),
        &accepted,
    )
    .expect("the example parses");

    // A secret may be documented in its indirect form (`url_env`, `url_file`) instead.
    let plain = |key: &String| {
        if accepted.contains(key) {
            return key.clone();
        }
        key.strip_suffix("_env")
            .or_else(|| key.strip_suffix("_file"))
            .filter(|plain| accepted.contains(*plain))
            .map_or_else(|| key.clone(), str::to_owned)
    };
    let documented: std::collections::BTreeSet<String> = documented.iter().map(plain).collect();
    let undocumented: Vec<&String> = accepted.difference(&documented).collect();
    let unknown: Vec<&String> = documented.difference(&accepted).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "upkeep.example.toml lacks {undocumented:?} and documents keys the settings do not \
         accept: {unknown:?}"
    );
}

#[test]
fn a_valid_secret_key_decodes_to_32_bytes() {
    let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);

    let settings = load("", &[("UPKEEP_SECRET_KEY", &key)]).unwrap();

    let secret_key = settings.secret_key.expect("key set");
    assert_eq!(secret_key.expose_bytes(), &[7u8; 32]);
}

#[test]
fn secrets_never_appear_in_debug_output_or_the_summary() {
    let key = base64::engine::general_purpose::STANDARD.encode([42u8; 32]);
    let settings = load(
        "[redis]\ncluster_urls = [\"redis://:hunter2-cluster@c:7000\"]\n",
        &[
            ("DATABASE_URL", "postgres://app:hunter2-db@db:5432/app"),
            ("REDIS_URL", "rediss://:hunter2-redis@cache:6380/0"),
            ("UPKEEP_API_TOKEN", "hunter2-token"),
            ("UPKEEP_SECRET_KEY", &key),
        ],
    )
    .unwrap();

    let debug = format!("{settings:?}");
    let pretty = format!("{settings:#?}");
    let summary = settings.redacted_summary();
    for text in [&debug, &pretty, &summary] {
        assert!(!text.contains("hunter2"), "secret leaked: {text}");
        assert!(!text.contains(&key), "secret key leaked: {text}");
    }
    assert!(
        summary.contains("database=postgres://***@db:5432/app"),
        "{summary}"
    );
    assert!(summary.contains("api_token=set"), "{summary}");
    assert!(summary.contains("secret_key=set"), "{summary}");
    assert!(summary.contains("cluster[redis://***@c:7000]"), "{summary}");
}

#[test]
fn a_bad_url_error_never_echoes_its_password() {
    let cases = [
        ("DATABASE_URL", "mysql://root:hunter2@db/app"),
        (
            "DATABASE_URL",
            "postgres://app:hunter2@db/app?sslmode=sometimes",
        ),
        ("DATABASE_URL", "postgres://app:hunter2@db:notaport/app"),
        ("DATABASE_URL", "app:hunter2@db/app"),
        (
            "DATABASE_URL",
            "postgres://db/app?password=hunter2&sslmode=bogus",
        ),
        ("REDIS_URL", "http://:hunter2@cache:6379"),
        ("REDIS_URL", "redis//:hunter2@cache"),
        ("REDIS_URL", "redis+sentinel://:hunter2@s1,s2:x/m"),
        (
            "REDIS_URL",
            "redis+sentinel://:hunter2@s1/m?sentinel_password=hunter2&x=1",
        ),
        ("REDIS_URL", "redis+sentinel://:hunter2/x@s1/m"),
        ("REDIS_URL", "redis+sentinel://u:hunter2@s1"),
    ];
    for (var, value) in cases {
        let error = load("", &[(var, value)]).expect_err(value);

        let text = error.to_string();
        let debug = format!("{error:?}");
        assert!(text.starts_with("invalid configuration"), "{text}");
        assert!(text.contains(var), "{text}");
        assert!(!text.contains("hunter2"), "password leaked: {text}");
        assert!(!debug.contains("hunter2"), "password leaked: {debug}");
    }
}

#[test]
fn a_wrongly_typed_secret_is_not_echoed() {
    let text = error_text("[api]\ntoken = 123456789\n", &[]);

    assert!(
        text.contains("api.token: expected a string, got an integer (not shown)"),
        "{text}"
    );
    assert!(!text.contains("123456789"), "{text}");
}

#[test]
fn redact_url_hides_userinfo_and_secret_parameters_only() {
    assert_eq!(redact_url("http://x"), "http://x");
    assert_eq!(
        redact_url("postgres://postgres@127.0.0.1:5432/upkeep"),
        "postgres://***@127.0.0.1:5432/upkeep"
    );
    assert_eq!(
        redact_url("redis://:pw@cache:6379/0"),
        "redis://***@cache:6379/0"
    );
    assert_eq!(
        redact_url("postgres://db/app?password=pw&sslmode=require"),
        "postgres://db/app?password=***&sslmode=require"
    );
    assert_eq!(redact_url("user:pw@db/app"), "<14 characters, not shown>");
}

#[test]
fn redact_url_hides_the_credentials_of_a_url_with_a_host_list() {
    assert_eq!(
        redact_url("redis+sentinel://u:p%40w@s1:26379,s2/m/1?sentinel_password=pw#x"),
        "redis+sentinel://***@s1:26379,s2/m/1?sentinel_password=***"
    );
    assert_eq!(
        redact_url("redis+sentinel://s1,s2:26380/m"),
        "redis+sentinel://s1,s2:26380/m"
    );
    assert_eq!(
        redact_url("postgres://app:pw@db:notaport/app"),
        "postgres://***@db:notaport/app"
    );
    // Where the userinfo ends is unclear: nothing of it is shown.
    assert_eq!(
        redact_url("redis+sentinel://:p/w@s1,s2/m"),
        "<29 characters, not shown>"
    );
}

#[test]
fn a_sentinel_url_is_accepted_as_the_redis_url_and_redacted_in_the_summary() {
    let url = "redis+sentinel://:hunter2@s1:26379,s2/upkeep/2?sentinel_password=hunter3";

    let from_env = load("", &[("REDIS_URL", url)]).expect("a valid sentinel URL");
    let from_file =
        load(&format!("[redis]\nurl = \"{url}\"\n"), &[]).expect("a valid sentinel URL");

    for settings in [&from_env, &from_file] {
        assert_eq!(settings.redis.url.expose_secret(), url);
        assert!(!settings.redis.is_cluster());
        let summary = settings.redacted_summary();
        let debug = format!("{settings:?}");
        assert!(
            summary
                .contains("redis=redis+sentinel://***@s1:26379,s2/upkeep/2?sentinel_password=***"),
            "{summary}"
        );
        for text in [&summary, &debug] {
            assert!(!text.contains("hunter"), "secret leaked: {text}");
        }
    }
}

#[test]
fn a_bad_sentinel_url_stops_start_up_naming_the_key_and_what_is_wrong() {
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case<'_>; 4] = [
        (
            "",
            &[("REDIS_URL", "redis+sentinel://:pw@s1,s2:x/m")],
            "REDIS_URL: not a usable redis+sentinel:// URL: \"redis+sentinel://***@s1,s2:x/m\": \
             bad port \"x\" in sentinel address \"s2:x\" (expected 1-65535)",
        ),
        (
            "[redis]\nurl = \"redis+sentinel://s1:26379\"\n",
            &[],
            "redis.url: not a usable redis+sentinel:// URL: \"redis+sentinel://s1:26379\": \
             no master name: the path must be /<master-name>[/<db>]",
        ),
        (
            "[redis]\nurl = \"redis+sentinel://s1/m?sentinel_passwd=pw\"\n",
            &[],
            "redis.url: not a usable redis+sentinel:// URL: \
             \"redis+sentinel://s1/m?sentinel_passwd=***\": unknown parameter \
             \"sentinel_passwd\" (expected sentinel_username or sentinel_password)",
        ),
        (
            "[redis]\ncluster_urls = [\"redis+sentinel://s1/m\"]\n",
            &[],
            "redis.cluster_urls[0]: not a redis:// or rediss:// URL: \"redis+sentinel://s1/m\"",
        ),
    ];
    for (toml, vars, expected) in cases {
        let text = error_text(toml, vars);

        assert!(text.contains(expected), "{text}\nlacks\n{expected}");
        assert!(!text.contains(":pw@"), "password leaked: {text}");
    }
}

#[test]
fn the_config_file_named_by_upkeep_config_is_read() {
    let path = std::env::temp_dir().join(format!("upkeep-config-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(&path, "[worker]\ngrace_period = \"3s\"\n").unwrap();

    let settings =
        Settings::load_with_env(&env(&[("UPKEEP_CONFIG", path.to_str().unwrap())])).unwrap();
    std::fs::remove_file(&path).unwrap();

    assert_eq!(settings.worker.grace_period, Duration::from_secs(3));
    assert_eq!(settings.loaded_from.as_deref(), Some(path.as_path()));
}

#[test]
fn a_missing_config_file_named_by_upkeep_config_is_an_error() {
    let result = Settings::load_with_env(&env(&[("UPKEEP_CONFIG", "/nonexistent/upkeep.toml")]));

    let Err(Error::ReadFile { path, .. }) = result else {
        panic!("expected ReadFile, got {result:?}");
    };
    assert_eq!(path, Path::new("/nonexistent/upkeep.toml"));
}

#[test]
fn the_example_and_demo_configs_are_valid() {
    let example = load(include_str!("../../../upkeep.example.toml"), &[])
        .unwrap_or_else(|e| panic!("upkeep.example.toml: {e}"));
    // The demo reads its own database's URL for the reports from DATABASE_URL.
    let demo = load(
        include_str!("../../../deploy/demo.toml"),
        &[("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/upkeep")],
    )
    .unwrap_or_else(|e| panic!("deploy/demo.toml: {e}"));

    assert_eq!(example.schedules.len(), 1);
    // The ping, the report schedules, the token refresh, the log and disk schedules, and the
    // backup schedules.
    assert_eq!(demo.schedules.len(), 13);
    assert_eq!(demo.backups.databases[0].name, "upkeep");
    assert_eq!(demo.reports.databases[0].name, "upkeep");
    assert!(
        demo.schedules
            .iter()
            .any(|s| s.kind.as_str() == "tokens.refresh")
    );
    let ping = &demo.schedules[0];
    assert_eq!(ping.name, "ping-every-5s");
    assert_eq!(ping.cron.as_str(), "*/5 * * * * *");
    assert_eq!(ping.kind.as_str(), "system.ping");
    assert_eq!(ping.timezone, chrono_tz::Tz::UTC);
}

#[test]
fn key_prefixes_refuse_hash_tag_and_separator_characters() {
    assert!(KeyPrefix::parse("upkeep-test_1.a").is_ok());
    for bad in ["", "a:b", "{a}", "a b", &"x".repeat(65)] {
        assert!(KeyPrefix::parse(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn a_built_in_secret_is_read_from_its_file_or_variable_and_a_named_variable_still_wins() {
    let dir = std::env::temp_dir().join(format!("upkeep-cred-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("db-url");
    std::fs::write(&file, "postgres://app:pw@db:5432/app\n").unwrap();
    let toml = format!(
        "[database]\nurl_file = {:?}\n[api]\ntoken_env = \"API_TOKEN_VAR\"\n",
        file.display().to_string()
    );

    let settings = load(&toml, &[("API_TOKEN_VAR", "t0ken")]).expect("valid");
    let overridden = load(
        &toml,
        &[
            ("API_TOKEN_VAR", "t0ken"),
            ("DATABASE_URL", "postgres://env@db/other"),
        ],
    );
    std::fs::remove_dir_all(dir).ok();

    assert_eq!(
        settings.database.url.expose_secret(),
        "postgres://app:pw@db:5432/app"
    );
    assert_eq!(
        settings.api.token.as_ref().map(ExposeSecret::expose_secret),
        Some("t0ken")
    );
    // The named variable wins over the file's indirect form, as over an inline value.
    assert_eq!(
        overridden.expect("valid").database.url.expose_secret(),
        "postgres://env@db/other"
    );
    // Within the file, two forms of one secret are refused rather than one silently chosen.
    let text = error_text(
        "[database]\nurl = \"postgres://a@db/x\"\nurl_env = \"X\"\n",
        &[("X", "postgres://b@db/y")],
    );
    assert!(
        text.contains("database.url: give only one of url, url_env and url_file"),
        "{text}"
    );
}
