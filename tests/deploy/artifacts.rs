//! The deployment files checked by the tools that read them: `systemd-analyze verify` on every
//! unit, `node` loading the PM2 file, the compose file against the compose specification's
//! schema (or `docker compose config` where the plugin exists), `hadolint` on the Dockerfile,
//! and the operations guide listing every finding code the source emits.
//!
//! A tool that is missing fails its test with the command that installs it
//! (`scripts/deploy-tools.sh`, which `scripts/test.sh` runs); nothing passes silently.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use upkeep_shared::config::Settings;

use crate::support::{Unit, repo_root};

const UNITS: [&str; 6] = [
    "upkeep-scheduler@.service",
    "upkeep-worker-backup.service",
    "upkeep-worker-logs.service",
    "upkeep-worker-tokens.service",
    "upkeep-worker-reports.service",
    "upkeep-api.service",
];

/// `tool` from PATH or from the tools `scripts/deploy-tools.sh` installs under `.dev/`.
fn tool(name: &str) -> PathBuf {
    let local = repo_root().join(".dev/deploy-tools/bin").join(name);
    if local.is_file() {
        return local;
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|path| path.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "{name} is not installed, so this check cannot run: run scripts/deploy-tools.sh \
                 (scripts/test.sh does), which installs it from the package registries"
            )
        })
}

fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn every_systemd_unit_passes_systemd_analyze_verify_and_keeps_the_contract() {
    let analyze = tool("systemd-analyze");
    // Verify needs the ExecStart= binaries to exist: point the copies at the built ones.
    let bin_dir = upkeep_tests::cargo_bin("upkeep-api")
        .parent()
        .expect("a directory")
        .to_owned();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let source = repo_root().join("deploy/systemd");
    for entry in std::fs::read_dir(&source).expect("deploy/systemd exists") {
        let path = entry.expect("an entry").path();
        let name = path.file_name().expect("a name").to_owned();
        let text = std::fs::read_to_string(&path).expect("reading a unit");
        let text = text.replace("/usr/local/bin/", &format!("{}/", bin_dir.display()));
        std::fs::write(dir.path().join(name), text).expect("writing the copy");
    }
    let mut checked: Vec<PathBuf> = UNITS
        .iter()
        .map(|unit| dir.path().join(unit.replace("@.service", "@1.service")))
        .collect();
    checked.push(dir.path().join("upkeep.target"));
    let verified = run(Command::new(&analyze)
        .args(["verify", "--man=no"])
        .args(&checked)
        .current_dir(dir.path()));
    // systemd-analyze exits 0 on unknown keys and bad values (it ignores them with a
    // warning), so any output is a failure too.
    assert!(
        verified.status.success() && text(&verified).trim().is_empty(),
        "systemd-analyze verify: {}",
        text(&verified)
    );

    let grace = Settings::default().worker.grace_period;
    for unit in UNITS {
        let body = std::fs::read_to_string(source.join(unit)).expect("reading a unit");
        for directive in [
            "Type=notify",
            "Restart=on-failure",
            "KillMode=mixed",
            "NoNewPrivileges=yes",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "PrivateTmp=yes",
            "CapabilityBoundingSet=\n",
            "Environment=UPKEEP_CONFIG=/etc/upkeep/upkeep.toml UPKEEP_LOG_FORMAT=json",
        ] {
            assert!(body.contains(directive), "{unit} lacks {directive:?}");
        }
        let parsed = Unit::read(unit);
        assert!(
            parsed.watchdog >= std::time::Duration::from_secs(10),
            "{unit}"
        );
        if unit.starts_with("upkeep-worker") {
            assert!(
                parsed.timeout_stop > grace + std::time::Duration::from_secs(5),
                "{unit}: TimeoutStopSec {:?} must exceed the grace period {grace:?} + 5s",
                parsed.timeout_stop
            );
        }
        // Least privilege: only the token worker gets the secret key, only the API its token.
        assert_eq!(
            body.contains("LoadCredential=secret_key:"),
            unit == "upkeep-worker-tokens.service",
            "{unit}"
        );
        assert_eq!(
            body.contains("LoadCredential=api_token:"),
            unit == "upkeep-api.service",
            "{unit}"
        );
    }
    let backup = std::fs::read_to_string(source.join("upkeep-worker-backup.service"))
        .expect("reading the backup unit");
    assert!(backup.contains("ReadWritePaths=-/var/lib/upkeep/backups"));
}

#[test]
fn the_pm2_file_loads_in_node_and_gives_every_daemon_time_to_stop() {
    let node = tool("node");
    let file = repo_root().join("deploy/pm2/ecosystem.config.js");
    let loaded = run(Command::new(node).arg("-e").arg(format!(
        "process.stdout.write(JSON.stringify(require({:?})))",
        file.display().to_string()
    )));
    assert!(loaded.status.success(), "node: {}", text(&loaded));
    let config: serde_json::Value =
        serde_json::from_slice(&loaded.stdout).expect("the ecosystem exports JSON-able data");
    let apps = config["apps"].as_array().expect("apps");
    let grace_ms = u64::try_from(Settings::default().worker.grace_period.as_millis())
        .expect("a small grace period");
    let mut binaries = BTreeSet::new();
    for app in apps {
        let name = app["name"].as_str().expect("a name");
        let script = app["script"].as_str().expect("a script");
        let binary = Path::new(script)
            .file_name()
            .expect("a file name")
            .to_string_lossy()
            .into_owned();
        assert_eq!(
            app["interpreter"], "none",
            "{name}: started through a shell"
        );
        assert!(app["max_memory_restart"].is_string(), "{name}");
        assert!(
            app["error_file"].is_string() && app["out_file"].is_string(),
            "{name}"
        );
        assert_eq!(app["env_production"]["UPKEEP_LOG_FORMAT"], "json", "{name}");
        let kill_timeout = app["kill_timeout"].as_u64().expect("kill_timeout");
        if binary.starts_with("upkeep-worker") {
            assert!(
                kill_timeout > grace_ms + 5_000,
                "{name}: kill_timeout {kill_timeout}"
            );
        }
        binaries.insert(binary);
    }
    let expected: BTreeSet<String> = UNITS.iter().map(|u| Unit::read(u).binary).collect();
    assert_eq!(binaries, expected);
    assert_eq!(
        apps.iter()
            .filter(|a| a["script"]
                .as_str()
                .is_some_and(|s| s.ends_with("upkeep-scheduler")))
            .count(),
        2,
        "two scheduler replicas"
    );
}

#[test]
fn the_compose_file_is_valid_and_runs_the_stack_the_guide_describes() {
    let file = repo_root().join("docker-compose.yml");
    let docker_compose = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    let checked = if docker_compose {
        run(Command::new("docker")
            .args(["compose", "-f"])
            .arg(&file)
            .args(["config", "--quiet", "--no-interpolate"]))
    } else {
        // No compose plugin here: the compose specification's JSON schema, as vendored by
        // check-jsonschema.
        run(Command::new(tool("check-jsonschema"))
            .args(["--builtin-schema", "vendor.compose-spec"])
            .arg(&file))
    };
    assert!(checked.status.success(), "{}", text(&checked));
    let compose = std::fs::read_to_string(&file).expect("reading docker-compose.yml");
    for needle in [
        "shared_preload_libraries=pg_stat_statements",
        "--appendonly",
        "noeviction",
        "replicas: 2",
        "service_completed_successfully",
        "upkeepctl\", \"migrate",
        "healthcheck:",
        "secrets:",
    ] {
        assert!(
            compose.contains(needle),
            "docker-compose.yml lacks {needle:?}"
        );
    }
    for unit in UNITS {
        let binary = Unit::read(unit).binary;
        assert!(
            compose.contains(&format!("command: [\"{binary}\"]")),
            "docker-compose.yml does not run {binary}"
        );
    }
}

#[test]
fn the_dockerfile_passes_hadolint_and_runs_as_a_non_root_user() {
    let file = repo_root().join("Dockerfile");
    let linted = run(Command::new(tool("hadolint")).arg(&file));
    assert!(linted.status.success(), "hadolint: {}", text(&linted));
    let dockerfile = std::fs::read_to_string(&file).expect("reading the Dockerfile");
    assert!(dockerfile.contains("postgresql-client-${PG_MAJOR}"));
    assert!(
        dockerfile
            .lines()
            .any(|l| l.starts_with("USER ") && !l.contains(" 0")),
        "the image runs as root"
    );
}

/// The finding codes the source emits: string literals shaped like `family.name` in the
/// modules that make findings, less job kinds and file names.
fn emitted_finding_codes() -> BTreeSet<String> {
    let root = repo_root();
    let job_kinds: BTreeSet<&str> = upkeep_shared::job::CATALOG.iter().map(|s| s.name).collect();
    let mut codes = BTreeSet::new();
    let mut files = Vec::new();
    for dir in [
        "shared/src/backup",
        "shared/src/logs",
        "shared/src/disk",
        "shared/src/tokens",
        "shared/src/reports",
        "shared/src/store",
        "workers/src/handlers",
    ] {
        collect_rs(&root.join(dir), &mut files);
    }
    files.push(root.join("shared/src/reconcile.rs"));
    for file in files {
        let source = std::fs::read_to_string(&file).expect("reading a source file");
        // Unit tests at the bottom of a file make findings of their own.
        let source = source.split("#[cfg(test)]").next().unwrap_or_default();
        for literal in source.split('"').skip(1).step_by(2) {
            let Some((family, name)) = literal.split_once('.') else {
                continue;
            };
            let word =
                |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_lowercase() || c == '_');
            if word(family)
                && word(name)
                && !job_kinds.contains(literal)
                && !["log", "sql", "json", "toml", "zst", "gz"].contains(&name)
            {
                codes.insert(literal.to_owned());
            }
        }
    }
    codes
}

fn collect_rs(dir: &Path, files: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a source directory") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            collect_rs(&path, files);
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
}

#[test]
fn the_operations_guide_explains_every_finding_code_the_source_emits() {
    let guide = std::fs::read_to_string(repo_root().join("docs/operations.md"))
        .expect("reading docs/operations.md");
    let catalogue = guide
        .split("## Finding catalogue")
        .nth(1)
        .expect("docs/operations.md has a finding catalogue");
    let codes = emitted_finding_codes();
    // The scan must find the codes it is meant to find, or it proves nothing.
    for known in [
        "backup.stale",
        "disk.used_pct",
        "tokens.needs_reauth",
        "job.lost",
    ] {
        assert!(codes.contains(known), "the scan missed {known}: {codes:?}");
    }
    let missing: Vec<&String> = codes
        .iter()
        .filter(|code| !catalogue.contains(&format!("| `{code}` |")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/operations.md's finding catalogue lacks {missing:?}"
    );
}
