//! Redis at its memory limit: with `noeviction` an enqueue fails with a clear error instead of
//! Redis deleting jobs; with an evicting policy every binary warns at start.

use upkeep_tests::{PrivateRedis, RedisOptions, cargo_bin};

fn ctl(redis: &PrivateRedis, args: &[&str]) -> std::process::Output {
    let mut command = std::process::Command::new(cargo_bin("upkeepctl"));
    for (key, _) in std::env::vars_os() {
        if key
            .to_str()
            .is_some_and(|key| key.starts_with("UPKEEP") || key == "RUST_LOG")
        {
            command.env_remove(&key);
        }
    }
    command
        .env("REDIS_URL", redis.url())
        .env("UPKEEP_CONFIG", "/dev/null")
        .env("UPKEEP__REDIS__KEY_PREFIX", "memory")
        .args(args)
        .output()
        .expect("running upkeepctl")
}

#[test]
fn enqueue_into_a_full_noeviction_redis_fails_naming_the_memory_limit_and_evicts_nothing() {
    let redis = PrivateRedis::start_with(
        RedisOptions::default()
            .arg("--maxmemory")
            .arg("2mb")
            .arg("--maxmemory-policy")
            .arg("noeviction"),
    )
    .expect("private redis starts");
    let mut failure = None;
    let mut n_enqueued = 0usize;
    // One script call per enqueue (at most ENQUEUE_CHUNK = 200 jobs), so a refused call
    // enqueued nothing at all.
    for _ in 0..500 {
        let output = ctl(
            &redis,
            &[
                "enqueue",
                "system.ping",
                "--args",
                r#"{"sleep_ms":1}"#,
                "--count",
                "200",
            ],
        );
        if output.status.success() {
            n_enqueued += String::from_utf8_lossy(&output.stdout).lines().count();
        } else {
            failure = Some(String::from_utf8_lossy(&output.stderr).into_owned());
            break;
        }
    }

    let stderr =
        failure.unwrap_or_else(|| panic!("{n_enqueued} jobs fit in 2 MB? the limit was never hit"));
    assert!(stderr.contains("redis is out of memory"), "{stderr}");
    assert!(stderr.contains("noeviction"), "{stderr}");
    let mut connection = redis.client().get_connection().expect("connect");
    let evicted: String = redis::cmd("INFO")
        .arg("stats")
        .query(&mut connection)
        .expect("INFO");
    assert!(
        evicted.contains("evicted_keys:0"),
        "nothing was evicted: {evicted}"
    );
    let ready: usize = redis::cmd("LLEN")
        .arg("memory:{reports}:ready")
        .query(&mut connection)
        .expect("LLEN");
    assert_eq!(ready, n_enqueued, "every acknowledged job is still there");
}

#[test]
fn a_binary_warns_loudly_at_start_when_redis_would_evict_jobs() {
    let redis = PrivateRedis::start_with(
        RedisOptions::default()
            .arg("--maxmemory")
            .arg("100mb")
            .arg("--maxmemory-policy")
            .arg("allkeys-lru"),
    )
    .expect("private redis starts");

    let output = ctl(&redis, &["enqueue", "system.ping"]);

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("REDIS WILL EVICT JOBS"), "{stderr}");
    assert!(stderr.contains("allkeys-lru"), "{stderr}");
}

#[test]
fn no_warning_when_redis_refuses_writes_instead_of_evicting() {
    let redis = PrivateRedis::start_with(
        RedisOptions::default()
            .arg("--maxmemory")
            .arg("100mb")
            .arg("--maxmemory-policy")
            .arg("noeviction"),
    )
    .expect("private redis starts");

    let output = ctl(&redis, &["enqueue", "system.ping"]);

    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(!stderr.contains("EVICT"), "{stderr}");
}
