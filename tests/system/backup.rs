//! The backup worker end to end: the real `upkeep-worker-backup` and `upkeepctl backups`
//! against real `pg_dump`/`pg_restore` and databases each test creates and drops.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::{Connection as _, PgConnection};
use upkeep_tests::{ChildProcess, fresh_database, shared_database_url};
use uuid::Uuid;

use crate::support::{Deployment, wait_for_status, wait_for_worker};

const JOB_TIMEOUT: Duration = Duration::from_secs(90);

/// `upkeepctl` commands that create or drop databases wait for checkpoints, which take long on
/// a busy machine.
const CTL_TIMEOUT: Duration = Duration::from_secs(120);

/// Retention that keeps only the newest good backup.
const KEEP_ONE: &str = "[backups.retention]\nkeep_last = 1\nkeep_daily = 0\nkeep_weekly = 0\nkeep_monthly = 0\nmin_keep = 1\n";

fn ctl(deployment: &Deployment, args: &[&str]) -> crate::support::Finished {
    deployment.run_command(
        "upkeepctl",
        deployment.command("upkeepctl", args),
        CTL_TIMEOUT,
    )
}

/// A database with known content: `items` (3000 rows with text and numbers) and `notes`.
async fn source_database() -> String {
    let url = fresh_database(&shared_database_url()).await;
    let mut conn = PgConnection::connect(&url)
        .await
        .expect("connecting to the source");
    sqlx::raw_sql(
        "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, price numeric(10,2), tags text[]);
         INSERT INTO items SELECT g, 'item ' || g || repeat('x', g % 50), g * 1.25, ARRAY['a' || (g % 7)]
           FROM generate_series(1, 3000) g;
         CREATE TABLE notes (id bigserial PRIMARY KEY, body text);
         INSERT INTO notes (body) SELECT md5(g::text) FROM generate_series(1, 200) g;",
    )
    .execute(&mut conn)
    .await
    .expect("filling the source");
    let _ = conn.close().await;
    url
}

async fn drop_database(name: &str) {
    let mut admin = PgConnection::connect(&shared_database_url())
        .await
        .expect("admin");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#
    )))
    .execute(&mut admin)
    .await
    .expect("dropping a test database");
}

fn db_name(url: &str) -> String {
    url::Url::parse(url)
        .expect("url")
        .path()
        .trim_start_matches('/')
        .to_owned()
}

/// `(count, md5 of the rows in id order)` of a table.
async fn table_digest(url: &str, table: &str) -> (i64, String) {
    let mut conn = PgConnection::connect(url).await.expect("connecting");
    let sql = format!("SELECT count(*), md5(string_agg(t::text, '|' ORDER BY id)) FROM {table} t");
    let digest: (i64, String) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_one(&mut conn)
        .await
        .expect("digesting a table");
    let _ = conn.close().await;
    digest
}

/// A directory with `pg_dump` wrapped so a test can stall it (`BACKUP_TEST_STALL` seconds
/// after the first 4 KiB of output), and the real `pg_dumpall` and `pg_restore` beside it.
fn slow_pg_bin(dir: &Path) -> PathBuf {
    let real = ["/usr/lib/postgresql/15/bin", "/usr/bin"]
        .iter()
        .map(PathBuf::from)
        .find(|d| d.join("pg_dump").is_file())
        .expect("pg_dump installed");
    let bin = dir.join("pgbin");
    std::fs::create_dir_all(&bin).expect("creating pgbin");
    let script = format!(
        "#!/bin/bash\nset -o pipefail\nif [[ \"$1\" == --version ]]; then exec {real}/pg_dump --version; fi\n\
         {real}/pg_dump \"$@\" | {{ dd bs=4096 count=1 iflag=fullblock status=none; sleep \"${{BACKUP_TEST_STALL:-0}}\"; cat; }}\n",
        real = real.display()
    );
    let wrapper = bin.join("pg_dump");
    std::fs::write(&wrapper, script).expect("writing the wrapper");
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&wrapper)
        .status()
        .expect("chmod");
    for tool in ["pg_dumpall", "pg_restore"] {
        std::os::unix::fs::symlink(real.join(tool), bin.join(tool)).expect("linking a tool");
    }
    bin
}

struct Setup {
    deployment: Deployment,
    backups: tempfile::TempDir,
    source_url: String,
}

impl Setup {
    async fn new(extra: &str) -> Self {
        let mut deployment = Deployment::new().await;
        let backups = tempfile::Builder::new()
            .prefix("upkeep-backups-")
            .tempdir()
            .expect("tempdir");
        let source_url = source_database().await;
        deployment.set_env("BACKUP_SOURCE_URL", &source_url);
        let setup = Self {
            deployment,
            backups,
            source_url,
        };
        setup.configure(extra, "BACKUP_SOURCE_URL");
        setup
    }

    fn configure(&self, extra: &str, url_env: &str) {
        self.deployment.write_config(&format!(
            "[backups]\ndirectory = \"{}\"\n{extra}\n[[backups.databases]]\nname = \"app\"\nurl_env = \"{url_env}\"\n",
            self.backups.path().display()
        ));
    }

    /// Starts an `upkeep-worker-backup` and waits until it serves the `backups` queue.
    fn start_worker(&self) -> ChildProcess {
        let mut worker = self
            .deployment
            .start("upkeep-worker-backup", Vec::<&str>::new());
        wait_for_worker(&mut worker, "backups");
        worker
    }

    /// Backs up through a `pg_dump` that stalls for `BACKUP_TEST_STALL` seconds (`seconds`
    /// until the test sets it again) after its first 4 KiB of output ([`slow_pg_bin`]).
    fn stall_pg_dump(&mut self, seconds: u32) {
        let bin = slow_pg_bin(self.backups.path());
        self.configure(
            &format!("pg_bin_dir = \"{}\"", bin.display()),
            "BACKUP_SOURCE_URL",
        );
        self.deployment
            .set_env("BACKUP_TEST_STALL", &seconds.to_string());
    }

    fn app_dir(&self) -> PathBuf {
        self.backups.path().join("app")
    }

    /// Final-named files in the database's directory (not under `.tmp`).
    fn final_files(&self) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(self.app_dir())
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n != ".tmp")
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    fn tmp_files(&self) -> Vec<String> {
        std::fs::read_dir(self.app_dir().join(".tmp"))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    async fn backup_now(&self) -> Uuid {
        self.deployment
            .enqueue("backup.run", r#"{"database": "app"}"#, &[])[0]
    }

    async fn catalog(&self) -> Vec<(i64, String, Option<chrono::DateTime<chrono::Utc>>)> {
        let mut ledger = self.deployment.ledger().await;
        sqlx::query_as("SELECT id, verification, deleted_at FROM backups ORDER BY id")
            .fetch_all(&mut ledger)
            .await
            .expect("reading the catalog")
    }

    async fn cleanup(self) {
        drop_database(&db_name(&self.source_url)).await;
    }
}

async fn outcome_of(
    deployment: &Deployment,
    job: Uuid,
) -> (String, serde_json::Value, Option<String>) {
    let mut ledger = deployment.ledger().await;
    sqlx::query_as("SELECT status, coalesce(outcome, 'null'::jsonb), error FROM job_runs WHERE job_id = $1 ORDER BY attempt DESC LIMIT 1")
        .bind(job)
        .fetch_one(&mut ledger)
        .await
        .expect("reading the run")
}

async fn findings_of(deployment: &Deployment, job: Uuid) -> Vec<(String, String, Option<String>)> {
    let mut ledger = deployment.ledger().await;
    sqlx::query_as(
        "SELECT code, severity, subject FROM findings WHERE job_id = $1 ORDER BY ordinal",
    )
    .bind(job)
    .fetch_all(&mut ledger)
    .await
    .expect("reading findings")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_restored_with_upkeepctl_has_the_same_row_counts_and_table_contents() {
    let setup = Setup::new("").await;
    let _worker = setup.start_worker();
    let job = setup.backup_now().await;
    let mut ledger = setup.deployment.ledger().await;
    wait_for_status(&mut ledger, job, "succeeded", JOB_TIMEOUT).await;

    let files = setup.final_files();
    assert_eq!(files.len(), 3, "data, globals and manifest: {files:?}");
    assert!(
        files.iter().any(|f| f.ends_with(".dump"))
            && files.iter().any(|f| f.ends_with(".manifest.json"))
            && files.iter().any(|f| f.ends_with(".globals.sql")),
        "{files:?}"
    );
    assert!(
        setup.tmp_files().is_empty(),
        "nothing left under .tmp: {:?}",
        setup.tmp_files()
    );
    let catalog = setup.catalog().await;
    assert_eq!(catalog.len(), 1);
    assert_eq!(catalog[0].1, "full_read");

    let list: serde_json::Value =
        serde_json::from_str(&setup.deployment.ctl_ok(["backups", "list", "--json"]))
            .expect("list --json");
    assert_eq!(list[0]["agreement"], "ok", "{list:#}");
    assert_eq!(
        list[0]["row"]["row_counts"]["public.items"], 3000,
        "{list:#}"
    );

    let restored = format!("{}_restored", db_name(&setup.source_url));
    let id = catalog[0].0.to_string();
    let out = ctl(
        &setup.deployment,
        &["backups", "restore", &id, "--into", &restored],
    );
    out.assert_success();
    assert!(out.stdout.contains("restored backup"), "{}", out.stdout);
    let mut restored_url = url::Url::parse(&setup.source_url).expect("url");
    restored_url.set_path(&format!("/{restored}"));
    for table in ["items", "notes"] {
        assert_eq!(
            table_digest(restored_url.as_str(), table).await,
            table_digest(&setup.source_url, table).await,
            "{table} differs after the restore"
        );
    }
    // The target exists now: without --force the restore refuses, with it it replaces.
    let again = ctl(
        &setup.deployment,
        &["backups", "restore", &id, "--into", &restored],
    );
    again.assert_failure_naming(&["already exists"]);
    ctl(
        &setup.deployment,
        &["backups", "restore", &id, "--into", &restored, "--force"],
    )
    .assert_success();

    // A file without a row is flagged by list.
    std::fs::write(
        setup
            .app_dir()
            .join("app-20200101T000000.000Z.manifest.json"),
        "{}",
    )
    .expect("writing a stray manifest");
    let list = setup.deployment.ctl_ok(["backups", "list"]);
    assert!(list.contains("!! file_without_row"), "{list}");

    drop_database(&restored).await;
    setup.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn truncated_and_bit_flipped_dumps_fail_the_full_read_and_a_restore_test_of_a_corrupt_dump_fails_with_a_finding()
 {
    let setup = Setup::new("").await;
    let _worker = setup.start_worker();
    let mut ledger = setup.deployment.ledger().await;
    for _ in 0..3 {
        let job = setup.backup_now().await;
        wait_for_status(&mut ledger, job, "succeeded", JOB_TIMEOUT).await;
    }
    let rows: Vec<(i64, String)> = sqlx::query_as("SELECT id, path FROM backups ORDER BY id")
        .fetch_all(&mut ledger)
        .await
        .expect("catalog");
    assert_eq!(rows.len(), 3);
    // Oldest: truncated to half. Middle: one bit flipped in the middle. Newest: truncated too,
    // and restore-tested before any full read marks it.
    for (index, (_, path)) in rows.iter().enumerate() {
        let mut bytes = std::fs::read(path).expect("reading a dump");
        if index == 1 {
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x10;
        } else {
            bytes.truncate(bytes.len() / 2);
        }
        std::fs::write(path, bytes).expect("damaging a dump");
    }
    let restore_job = setup.deployment.enqueue(
        "backup.verify",
        r#"{"mode": "restore", "database": "app"}"#,
        &[],
    )[0];
    wait_for_status(&mut ledger, restore_job, "failed", JOB_TIMEOUT).await;
    let findings = findings_of(&setup.deployment, restore_job).await;
    assert!(
        findings.contains(&(
            "backup.restore_failed".to_owned(),
            "critical".to_owned(),
            Some("app".to_owned())
        )),
        "{findings:?}"
    );
    let (restore_ok,): (Option<bool>,) =
        sqlx::query_as("SELECT restore_ok FROM backups WHERE id = $1")
            .bind(rows[2].0)
            .fetch_one(&mut ledger)
            .await
            .expect("restore result");
    assert_eq!(restore_ok, Some(false));

    for (id, _) in &rows[..2] {
        let verify = ctl(&setup.deployment, &["backups", "verify", &id.to_string()]);
        verify.assert_failure_naming(&["checksum mismatch"]);
    }
    let job = setup
        .deployment
        .enqueue("backup.verify", r#"{"mode": "full_read"}"#, &[])[0];
    wait_for_status(&mut ledger, job, "failed", JOB_TIMEOUT).await;
    let findings = findings_of(&setup.deployment, job).await;
    assert!(
        findings.contains(&(
            "backup.checksum_mismatch".to_owned(),
            "critical".to_owned(),
            Some("app".to_owned())
        )),
        "{findings:?}"
    );
    let levels: Vec<String> = setup.catalog().await.into_iter().map(|r| r.1).collect();
    assert_eq!(levels, vec!["corrupt", "corrupt", "corrupt"]);
    setup.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_pg_dump_fails_the_run_with_its_stderr_leaves_no_final_file_and_retention_deletes_nothing()
 {
    let mut setup = Setup::new("").await;
    // A role that may connect but not read the table.
    let role = format!(
        "upkeep_noperm_{}",
        &Uuid::new_v4().simple().to_string()[..8]
    );
    {
        let mut conn = PgConnection::connect(&setup.source_url)
            .await
            .expect("source");
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "CREATE ROLE {role} LOGIN; GRANT CONNECT ON DATABASE \"{}\" TO {role}; REVOKE ALL ON items FROM PUBLIC;",
            db_name(&setup.source_url)
        )))
        .execute(&mut conn)
        .await
        .expect("creating a role");
    }
    let worker = setup.start_worker();
    let mut ledger = setup.deployment.ledger().await;
    for _ in 0..2 {
        let job = setup.backup_now().await;
        wait_for_status(&mut ledger, job, "succeeded", JOB_TIMEOUT).await;
    }
    let good_files = setup.final_files();
    drop(worker);

    // Retention that would delete one of the two if it ran.
    let mut noperm = url::Url::parse(&setup.source_url).expect("url");
    noperm.set_username(&role).expect("username");
    let mut unreachable = url::Url::parse(&setup.source_url).expect("url");
    unreachable.set_port(Some(1)).expect("port");
    setup
        .deployment
        .set_env("BACKUP_NOPERM_URL", noperm.as_str());
    setup
        .deployment
        .set_env("BACKUP_UNREACHABLE_URL", unreachable.as_str());
    for (url_env, needle) in [
        ("BACKUP_NOPERM_URL", "permission denied"),
        ("BACKUP_UNREACHABLE_URL", "127.0.0.1:1"),
    ] {
        setup.configure(KEEP_ONE, url_env);
        let _worker = setup.start_worker();
        let job = setup.backup_now().await;
        wait_for_status(&mut ledger, job, "failed", JOB_TIMEOUT).await;
        let (_, outcome, error) = outcome_of(&setup.deployment, job).await;
        let error = error.unwrap_or_default();
        assert!(error.contains(needle), "{url_env}: error {error:?}");
        let failed = outcome["findings"]
            .as_array()
            .and_then(|f| f.iter().find(|f| f["code"] == "backup.failed").cloned())
            .unwrap_or_else(|| panic!("{url_env}: no backup.failed finding in {outcome:#}"));
        assert_eq!(failed["subject"], "app");
        if url_env == "BACKUP_NOPERM_URL" {
            assert_eq!(failed["detail"]["tool"], "pg_dump", "{failed:#}");
            assert!(
                failed["detail"]["stderr"]
                    .as_str()
                    .unwrap_or("")
                    .contains("permission denied"),
                "{failed:#}"
            );
        }
        assert_eq!(
            setup.final_files(),
            good_files,
            "{url_env}: no new final-named file, none deleted"
        );
        assert!(
            setup.tmp_files().is_empty(),
            "{url_env}: partial files removed"
        );
        let live = setup
            .catalog()
            .await
            .iter()
            .filter(|r| r.2.is_none())
            .count();
        assert_eq!(live, 2, "{url_env}: retention deleted nothing");
    }
    let mut conn = PgConnection::connect(&setup.source_url)
        .await
        .expect("source");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP OWNED BY {role}")))
        .execute(&mut conn)
        .await
        .ok();
    let _ = conn.close().await;
    setup.cleanup().await;
    let mut admin = PgConnection::connect(&shared_database_url())
        .await
        .expect("admin");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP ROLE IF EXISTS {role}")))
        .execute(&mut admin)
        .await
        .ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn two_backup_runs_of_one_database_on_two_workers_commit_one_backup_and_skip_the_other() {
    let mut setup = Setup::new("").await;
    setup.stall_pg_dump(4);
    let _first = setup.start_worker();
    let _second = setup.start_worker();
    let jobs = [setup.backup_now().await, setup.backup_now().await];
    let mut ledger = setup.deployment.ledger().await;
    let mut summaries = Vec::new();
    for job in jobs {
        // The loser's attempt is `skipped`, not `succeeded`: it did no backup.
        let status = crate::support::eventually("the backup jobs to finish", JOB_TIMEOUT, async || {
            let status: Option<String> = sqlx::query_scalar(
                "SELECT status FROM job_runs WHERE job_id = $1 AND status IN ('succeeded', 'skipped')",
            )
            .bind(job)
            .fetch_optional(&mut ledger)
            .await
            .expect("reading the run");
            status
        })
        .await;
        let (_, outcome, _) = outcome_of(&setup.deployment, job).await;
        summaries.push(format!(
            "{status} {}",
            outcome["summary"].as_str().unwrap_or_default()
        ));
    }
    summaries.sort();
    assert!(
        summaries[0].starts_with("skipped skipped: app: skipped"),
        "{summaries:?}"
    );
    assert!(
        summaries[1].starts_with("succeeded app: committed backup"),
        "{summaries:?}"
    );
    assert_eq!(setup.catalog().await.len(), 1);
    assert_eq!(setup.final_files().len(), 3);
    setup.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_mid_dump_leaves_no_final_file_and_no_row_and_the_next_run_sweeps_the_partial()
 {
    let mut setup = Setup::new("").await;
    setup.stall_pg_dump(20);
    let mut doomed = setup.start_worker();
    setup.backup_now().await;
    crate::support::eventually(
        "a partial dump under .tmp",
        Duration::from_secs(30),
        async || {
            let partial = std::fs::read_dir(setup.app_dir().join(".tmp"))
                .ok()?
                .filter_map(Result::ok)
                .find(|e| e.metadata().map(|m| m.len() >= 4096).unwrap_or(false));
            partial.map(|_| ())
        },
    )
    .await;
    doomed.kill9().expect("kill -9");
    assert!(
        setup.final_files().is_empty(),
        "no final-named file: {:?}",
        setup.final_files()
    );
    assert!(!setup.tmp_files().is_empty());
    assert!(
        setup.catalog().await.is_empty(),
        "no catalog row for the interrupted dump"
    );

    setup.deployment.set_env("BACKUP_TEST_STALL", "0");
    let next = setup.start_worker();
    let job = setup.backup_now().await;
    let mut ledger = setup.deployment.ledger().await;
    wait_for_status(&mut ledger, job, "succeeded", JOB_TIMEOUT).await;
    assert!(
        setup.tmp_files().is_empty(),
        "swept: {:?}",
        setup.tmp_files()
    );
    assert!(
        next.log().contains("swept partial files"),
        "the sweep is logged"
    );
    assert_eq!(setup.catalog().await.len(), 1);
    setup.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_free_space_pre_flight_fails_before_dumping_when_less_than_one_and_a_half_last_dumps_is_free()
 {
    use std::sync::Arc;
    use upkeep_shared::backup::{BackupService, BackupSettings};
    let setup = Setup::new("").await;
    let settings: BackupSettings = serde_json::from_value(serde_json::json!({
        "directory": setup.backups.path(),
        "databases": [{"name": "app", "url": setup.source_url}],
    }))
    .expect("settings");
    let ledger_url = {
        let mut ledger = setup.deployment.ledger().await;
        let name: String = sqlx::query_scalar("SELECT current_database()")
            .fetch_one(&mut ledger)
            .await
            .expect("name");
        let mut url = url::Url::parse(&shared_database_url()).expect("url");
        url.set_path(&format!("/{name}"));
        url.to_string()
    };
    let pool = sqlx::PgPool::connect(&ledger_url).await.expect("pool");
    let service = BackupService::new(settings.clone(), pool.clone());
    let target = &settings.databases[0];
    let first = service.run_one(target, None).await;
    assert_eq!(first.status, "committed", "{first:?}");
    let size = first.size_bytes.expect("size");
    let files_before = setup.final_files();

    let starved =
        BackupService::new(settings.clone(), pool).with_free_space(Arc::new(move |_| Ok(size)));
    let second = starved.run_one(target, None).await;
    assert_eq!(second.status, "failed");
    assert!(
        second.error.as_deref().unwrap_or("").contains("need"),
        "{second:?}"
    );
    assert_eq!(second.findings[0].code, "backup.disk_low", "{second:?}");
    assert_eq!(setup.final_files(), files_before, "nothing was dumped");
    assert!(setup.tmp_files().is_empty());
    setup.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn backup_stale_is_raised_without_any_backup_and_resolved_by_the_next_good_one_whose_retention_deletes_the_old()
 {
    let setup = Setup::new(KEEP_ONE).await;
    let _worker = setup.start_worker();
    let mut ledger = setup.deployment.ledger().await;
    // The daily full read notices that there is no good backup at all, though no backup job ran.
    let check = setup
        .deployment
        .enqueue("backup.verify", r#"{"mode": "full_read"}"#, &[])[0];
    wait_for_status(&mut ledger, check, "succeeded", JOB_TIMEOUT).await;
    assert_eq!(
        findings_of(&setup.deployment, check).await,
        vec![(
            "backup.stale".to_owned(),
            "critical".to_owned(),
            Some("app".to_owned())
        )]
    );
    let first = setup.backup_now().await;
    wait_for_status(&mut ledger, first, "succeeded", JOB_TIMEOUT).await;
    assert_eq!(
        findings_of(&setup.deployment, first).await,
        vec![(
            "backup.stale".to_owned(),
            "ok".to_owned(),
            Some("app".to_owned())
        )],
        "the good backup resolves the stale condition once"
    );
    let first_files = setup.final_files();
    let second = setup.backup_now().await;
    wait_for_status(&mut ledger, second, "succeeded", JOB_TIMEOUT).await;
    assert!(
        findings_of(&setup.deployment, second).await.is_empty(),
        "resolved conditions are not repeated"
    );
    let catalog = setup.catalog().await;
    assert_eq!(catalog.len(), 2);
    assert!(
        catalog[0].2.is_some(),
        "the older backup is marked deleted: {catalog:?}"
    );
    assert!(catalog[1].2.is_none());
    let files = setup.final_files();
    assert_eq!(files.len(), 3);
    assert!(
        files.iter().all(|f| !first_files.contains(f)),
        "the old backup's files are gone: {files:?}"
    );
    let plan: serde_json::Value =
        serde_json::from_str(
            &setup
                .deployment
                .ctl_ok(["backups", "prune", "--dry-run", "--json"]),
        )
        .expect("plan json");
    assert_eq!(
        plan[0]["plan"]["decisions"][0]["keep"][0], "newest_good",
        "{plan:#}"
    );
    setup.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dump_below_min_size_fails_with_backup_too_small_and_leaves_no_final_file() {
    let setup = Setup::new("min_size = \"100MiB\"").await;
    let _worker = setup.start_worker();
    let mut ledger = setup.deployment.ledger().await;
    let job = setup.backup_now().await;
    wait_for_status(&mut ledger, job, "failed", JOB_TIMEOUT).await;
    let findings = findings_of(&setup.deployment, job).await;
    assert!(
        findings.contains(&(
            "backup.too_small".to_owned(),
            "critical".to_owned(),
            Some("app".to_owned())
        )),
        "{findings:?}"
    );
    assert!(setup.final_files().is_empty(), "{:?}", setup.final_files());
    assert!(setup.tmp_files().is_empty());
    assert!(setup.catalog().await.is_empty());
    setup.cleanup().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_directory_format_backup_dumped_with_two_jobs_restores_the_same_contents_and_is_copied() {
    let setup = Setup::new("").await;
    let copies = tempfile::Builder::new()
        .prefix("upkeep-copies-")
        .tempdir()
        .expect("tempdir");
    setup.deployment.write_config(&format!(
        "[backups]\ndirectory = \"{}\"\ncopy_to = [\"{}\"]\n[[backups.databases]]\nname = \"app\"\nurl_env = \"BACKUP_SOURCE_URL\"\nformat = \"directory\"\njobs = 2\n",
        setup.backups.path().display(),
        copies.path().display()
    ));
    let _worker = setup.start_worker();
    let mut ledger = setup.deployment.ledger().await;
    let job = setup.backup_now().await;
    wait_for_status(&mut ledger, job, "succeeded", JOB_TIMEOUT).await;
    let files = setup.final_files();
    assert!(files.iter().any(|f| f.ends_with(".dir")), "{files:?}");
    let (id, format, copied): (i64, String, serde_json::Value) =
        sqlx::query_as("SELECT id, format, copies FROM backups")
            .fetch_one(&mut ledger)
            .await
            .expect("catalog row");
    assert_eq!(format, "directory");
    let copied: Vec<&str> = copied
        .as_array()
        .expect("copies")
        .iter()
        .filter_map(|c| c.as_str())
        .collect();
    assert!(
        copied.iter().any(|c| c.ends_with(".manifest.json")),
        "{copied:?}"
    );
    assert!(copied.iter().all(|c| Path::new(c).exists()), "{copied:?}");

    let restored = format!("{}_dir", db_name(&setup.source_url));
    ctl(
        &setup.deployment,
        &["backups", "restore", &id.to_string(), "--into", &restored],
    )
    .assert_success();
    let mut restored_url = url::Url::parse(&setup.source_url).expect("url");
    restored_url.set_path(&format!("/{restored}"));
    assert_eq!(
        table_digest(restored_url.as_str(), "items").await,
        table_digest(&setup.source_url, "items").await
    );
    ctl(&setup.deployment, &["backups", "verify", &id.to_string()]).assert_success();
    drop_database(&restored).await;
    setup.cleanup().await;
}
