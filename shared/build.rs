//! Records the git commit the build was made from as `UPKEEP_GIT_COMMIT`, for every daemon's
//! `--version`: the variable of the same name when the build environment sets it (container
//! builds without `.git`), else `git rev-parse --short HEAD` in a release build, else `unknown`.
//!
//! A debug build records `dev` instead and does not watch HEAD: every crate depends on `shared`,
//! so watching HEAD made each commit rebuild the whole workspace before the next test run, and a
//! debug binary is never what gets deployed.
//!
//! It also watches `migrations/`: `sqlx::migrate!` embeds that directory, and on stable Rust
//! the macro cannot tell cargo so, so a new migration would otherwise leave `MIGRATOR` as it was
//! until some source file of this crate changed.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
    println!("cargo:rerun-if-env-changed=UPKEEP_GIT_COMMIT");
    let from_env = std::env::var("UPKEEP_GIT_COMMIT")
        .ok()
        .filter(|commit| !commit.trim().is_empty());
    let release = std::env::var("PROFILE").is_ok_and(|profile| profile == "release");
    let commit = from_env.unwrap_or_else(|| {
        if !release {
            println!("cargo:rerun-if-changed=build.rs");
            return "dev".to_owned();
        }
        watch_git_head();
        git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".to_owned())
    });
    println!("cargo:rustc-env=UPKEEP_GIT_COMMIT={commit}");
}

/// Asks cargo to run this again when HEAD moves: the HEAD file (a branch switch) and the
/// branch's ref (a commit), wherever this checkout (possibly a worktree) keeps them.
fn watch_git_head() {
    if let Some(git_dir) = git(&["rev-parse", "--git-dir"]) {
        let head = format!("{git_dir}/HEAD");
        if Path::new(&head).exists() {
            println!("cargo:rerun-if-changed={head}");
        }
    }
    if let (Some(common_dir), Some(branch_ref)) = (
        git(&["rev-parse", "--git-common-dir"]),
        git(&["symbolic-ref", "-q", "HEAD"]),
    ) {
        let ref_path = format!("{common_dir}/{branch_ref}");
        if Path::new(&ref_path).exists() {
            println!("cargo:rerun-if-changed={ref_path}");
        }
        // A path that does not exist would make cargo run this on every build.
        let packed_refs = format!("{common_dir}/packed-refs");
        if Path::new(&packed_refs).exists() {
            println!("cargo:rerun-if-changed={packed_refs}");
        }
    }
}

/// The trimmed output of a successful git command, run in this crate's directory.
fn git(args: &[&str]) -> Option<String> {
    let output = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(output.stdout).ok()?;
    let text = text.trim();
    (output.status.success() && !text.is_empty()).then(|| text.to_owned())
}
