//! `system.disk` on real filesystems: thresholds and hysteresis on a small tmpfs this test
//! mounts (root only), the "full soon" trend from injected samples, and agreement with `df`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sqlx::PgConnection;
use uuid::Uuid;

use crate::support::{Deployment, wait_for_status, wait_for_worker};

/// A tmpfs mounted for one test, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. `4m`), or `None` (with a message) when not root.
    fn mount(size: &str) -> Option<Self> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!(
                "SKIPPED: mounting a tmpfs needs root; run the system tests as root (CI does)"
            );
            return None;
        }
        let dir = tempfile::tempdir().expect("a mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("running mount");
        assert!(status.success(), "mount -t tmpfs failed: {status}");
        Some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Makes `fill` hold `bytes` (written, so the blocks are really used).
    fn fill(&self, bytes: usize) {
        let _ = std::fs::remove_file(self.path().join("fill"));
        std::fs::write(self.path().join("fill"), vec![b'x'; bytes]).expect("filling the tmpfs");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

async fn check(deployment: &Deployment, ledger: &mut PgConnection) -> (Uuid, serde_json::Value) {
    let id = deployment.enqueue("system.disk", "{}", &[])[0];
    wait_for_status(ledger, id, "succeeded", Duration::from_secs(60)).await;
    let outcome = sqlx::query_scalar(
        "SELECT outcome FROM job_runs WHERE job_id = $1 AND status = 'succeeded'",
    )
    .bind(id)
    .fetch_one(ledger)
    .await
    .expect("the outcome");
    (id, outcome)
}

/// The severity of the `code` finding about `subject` in `outcome`, if any.
fn severity_of(outcome: &serde_json::Value, code: &str, subject: &str) -> Option<String> {
    outcome["findings"].as_array()?.iter().find_map(|f| {
        (f["code"] == code && f["subject"] == subject)
            .then(|| f["severity"].as_str().unwrap_or("").to_owned())
    })
}

#[tokio::test]
async fn disk_thresholds_hold_with_hysteresis_on_a_small_tmpfs() {
    let Some(tmpfs) = Tmpfs::mount("4m") else {
        return;
    };
    let mount = tmpfs.path().to_string_lossy().into_owned();
    let deployment = Deployment::new().await;
    deployment.write_config(&format!(
        "[disk]\npaths = [\"{mount}\"]\nwarn_pct = 50\ncritical_pct = 80\nhysteresis_pct = 10\n"
    ));
    let mut ledger = deployment.ledger().await;
    let mut worker = deployment.start("upkeep-worker-reports", [] as [&str; 0]);
    wait_for_worker(&mut worker, "reports");
    let mib = 1 << 20;
    let steps: [(usize, Option<&str>); 7] = [
        (mib, None),                           // 25 %
        (2 * mib + mib / 2, Some("warn")),     // 62.5 %
        (3 * mib + mib / 2, Some("critical")), // 87.5 %
        (3 * mib, Some("critical")),           // 75 %: above 80 − 10, stays critical
        (2 * mib + mib / 2, Some("warn")),     // 62.5 %
        (mib + 3 * mib / 4, Some("warn")),     // 43.75 %: above 50 − 10, stays warn
        (mib, Some("ok")),                     // 25 %: resolved
    ];
    for (bytes, expected) in steps {
        tmpfs.fill(bytes);
        let (_, outcome) = check(&deployment, &mut ledger).await;
        assert_eq!(
            severity_of(&outcome, "disk.used_pct", &mount).as_deref(),
            expected,
            "{bytes} bytes used: {outcome:#}"
        );
    }
    // Once resolved, a quiet disk reports nothing more.
    let (_, outcome) = check(&deployment, &mut ledger).await;
    assert_eq!(severity_of(&outcome, "disk.used_pct", &mount), None);
}

#[tokio::test]
async fn a_disk_filling_at_the_recent_rate_within_a_day_is_reported() {
    // Arrange: a directory, its filesystem's samples of the last three hours injected so that
    // usage grows by a tenth of what is free every hour (full in about ten hours).
    let dir = tempfile::tempdir().expect("a directory");
    let (usages, _) = upkeep_shared::disk::measure(&[dir.path().to_owned()]);
    let usage = &usages[0];
    let subject = usage.mount_point.to_string_lossy().into_owned();
    let deployment = Deployment::new().await;
    deployment.write_config(&format!("[disk]\npaths = [\"{}\"]\n", dir.path().display()));
    let mut ledger = deployment.ledger().await;
    let per_hour = usage.avail_bytes / 10;
    for hours_ago in [3_u64, 2, 1] {
        sqlx::query(
            "INSERT INTO disk_samples (subject, sampled_at, used_bytes, avail_bytes, total_bytes) \
             VALUES ($1, now() - make_interval(hours => $2), $3, $4, $5)",
        )
        .bind(&subject)
        .bind(i32::try_from(hours_ago).expect("small"))
        .bind(i64::try_from(usage.used_bytes.saturating_sub(per_hour * hours_ago)).expect("fits"))
        .bind(i64::try_from(usage.avail_bytes + per_hour * hours_ago).expect("fits"))
        .bind(i64::try_from(usage.total_bytes).expect("fits"))
        .execute(&mut ledger)
        .await
        .expect("a sample");
    }
    let mut worker = deployment.start("upkeep-worker-reports", [] as [&str; 0]);
    wait_for_worker(&mut worker, "reports");

    // Act
    let (_, outcome) = check(&deployment, &mut ledger).await;

    // Assert
    assert_eq!(
        severity_of(&outcome, "disk.full_soon", &subject).as_deref(),
        Some("warn"),
        "{outcome:#}"
    );
}

#[test]
fn upkeepctl_disk_agrees_with_df() {
    let tmpfs = Tmpfs::mount("8m");
    let dir = tempfile::tempdir().expect("a directory");
    let mut paths = vec![dir.path().to_owned()];
    if let Some(tmpfs) = &tmpfs {
        tmpfs.fill(3 << 20);
        paths.push(tmpfs.path().to_owned());
    }
    let deployment = Deployment::with_database_url("postgres://unused@127.0.0.1:1/none".to_owned());
    let list: Vec<String> = paths
        .iter()
        .map(|p| format!("\"{}\"", p.display()))
        .collect();
    deployment.write_config(&format!("[disk]\npaths = [{}]\n", list.join(", ")));

    let stdout = deployment.ctl_ok(["disk", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&stdout).expect("JSON");

    for path in &paths {
        let df = Command::new("df")
            .args(["-B1", "--output=size,used,avail,pcent"])
            .arg(path)
            .output()
            .expect("running df");
        let text = String::from_utf8_lossy(&df.stdout);
        let fields: Vec<u64> = text
            .lines()
            .nth(1)
            .expect("a df row")
            .split_whitespace()
            .map(|f| f.trim_end_matches('%').parse().expect("a number"))
            .collect();
        let fs = json["filesystems"]
            .as_array()
            .expect("filesystems")
            .iter()
            .find(|fs| {
                fs["paths"]
                    .as_array()
                    .is_some_and(|p| p.iter().any(|p| p == &serde_json::json!(path)))
            })
            .unwrap_or_else(|| panic!("{} missing from {json:#}", path.display()));
        assert_eq!(fs["total_bytes"], fields[0], "size of {}", path.display());
        // Other processes write to the real filesystem between the two calls: allow 0.5 %.
        let tolerance = fields[0] / 200;
        let used = fs["used_bytes"].as_u64().expect("used");
        let avail = fs["avail_bytes"].as_u64().expect("avail");
        assert!(
            used.abs_diff(fields[1]) <= tolerance,
            "used {used} vs df {}",
            fields[1]
        );
        assert!(
            avail.abs_diff(fields[2]) <= tolerance,
            "avail {avail} vs df {}",
            fields[2]
        );
        let pct = fs["df_pct"].as_u64().expect("pct");
        assert!(
            pct.abs_diff(fields[3]) <= 1,
            "use% {pct} vs df {}",
            fields[3]
        );
    }
}

#[tokio::test]
async fn a_backup_volume_without_room_for_the_next_backup_is_critical_until_it_has() {
    // Arrange: a backup directory on a real filesystem and a good backup in the catalog bigger
    // than two thirds of what that filesystem has free (no need to fill the disk).
    let backups = tempfile::tempdir().expect("a backup directory");
    let (usages, _) = upkeep_shared::disk::measure(&[backups.path().to_owned()]);
    let avail = usages[0].avail_bytes;
    let subject = backups.path().to_string_lossy().into_owned();
    let deployment = Deployment::new().await;
    deployment.write_config(&format!(
        "[backups]\ndirectory = \"{subject}\"\n[[backups.databases]]\nname = \"app\"\n\
         url = \"postgres://unused@127.0.0.1:1/app\"\n"
    ));
    let mut ledger = deployment.ledger().await;
    let insert = |path: &str, size: u64, verification: &str| {
        sqlx::query(
            "INSERT INTO backups (database, format, path, manifest_path, size_bytes, sha256, \
               server_version, pg_dump_version, started_at, finished_at, verification, table_count) \
             VALUES ('app', 'custom', $1, $1 || '.manifest', $2, 'x', '16', '16', \
               now() - interval '1 minute', now(), $3, 1) RETURNING id",
        )
        .bind(format!("{subject}/{path}"))
        .bind(i64::try_from(size).expect("fits"))
        .bind(verification.to_owned())
    };
    // 0.7 × free: 1.5 × that is more than what is free.
    let big = insert("big.dump", avail / 10 * 7, "full_read")
        .fetch_one(&mut ledger)
        .await
        .expect("a backup row");
    let big_id: i64 = sqlx::Row::get(&big, "id");
    // A newer unverified backup does not count (not "good").
    insert("newer.dump", 1, "toc")
        .execute(&mut ledger)
        .await
        .expect("a backup row");
    let mut worker = deployment.start("upkeep-worker-reports", [] as [&str; 0]);
    wait_for_worker(&mut worker, "reports");

    // Act + assert: critical while the last good backup needs more than is free.
    let (_, outcome) = check(&deployment, &mut ledger).await;
    assert_eq!(
        severity_of(&outcome, "disk.backup_headroom", &subject).as_deref(),
        Some("critical"),
        "{outcome:#}"
    );

    // The backup is replaced by a small good one: the finding resolves.
    sqlx::query("UPDATE backups SET deleted_at = now() WHERE id = $1")
        .bind(big_id)
        .execute(&mut ledger)
        .await
        .expect("deleting the big backup");
    insert("small.dump", 4096, "restored")
        .execute(&mut ledger)
        .await
        .expect("a backup row");
    let (_, outcome) = check(&deployment, &mut ledger).await;
    assert_eq!(
        severity_of(&outcome, "disk.backup_headroom", &subject).as_deref(),
        Some("ok"),
        "{outcome:#}"
    );
}

#[tokio::test]
async fn system_disk_checks_the_directory_a_local_redis_persists_to() {
    // Arrange: a Redis of the test's own, its `dir` a temporary directory; every filesystem
    // is reported (warn at 1 %) so the outcome names the paths it measured.
    let redis = upkeep_tests::PrivateRedis::start().expect("a private Redis");
    let redis_dir = redis.dir().canonicalize().expect("the Redis dir");
    let mut deployment = Deployment::new().await;
    deployment.set_env("REDIS_URL", &redis.url());
    deployment.write_config("[disk]\nwarn_pct = 1\ncritical_pct = 100\n");
    let mut ledger = deployment.ledger().await;
    let mut worker = deployment.start("upkeep-worker-reports", [] as [&str; 0]);
    wait_for_worker(&mut worker, "reports");

    // Act
    let (_, outcome) = check(&deployment, &mut ledger).await;

    // Assert: the Redis dir is among the measured paths (no path was configured).
    let measured: Vec<String> = outcome["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["code"] == "disk.used_pct")
        .flat_map(|f| f["detail"]["paths"].as_array().cloned().unwrap_or_default())
        .filter_map(|p| p.as_str().map(str::to_owned))
        .collect();
    assert!(
        measured
            .iter()
            .any(|p| Path::new(p).canonicalize().ok().as_deref() == Some(redis_dir.as_path())),
        "{} not among {measured:?}: {outcome:#}",
        redis_dir.display()
    );
}
