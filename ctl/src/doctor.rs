//! `upkeepctl doctor`: prints `upkeep_shared::doctor`'s checks, one line each with its fix
//! hint, and fails when one of them failed.

use upkeep_shared::config::Settings;
use upkeep_shared::doctor::{Verdict, any_failed, run_checks};

/// `upkeepctl doctor` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct DoctorArgs {
    /// Print the checks as JSON.
    #[arg(long)]
    json: bool,
}

pub(crate) async fn run(settings: &Settings, args: &DoctorArgs) -> anyhow::Result<()> {
    let checks = run_checks(settings).await;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&checks)?);
    } else {
        let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        for check in &checks {
            let verdict = match check.verdict {
                Verdict::Ok => "ok  ",
                Verdict::Warn => "WARN",
                Verdict::Fail => "FAIL",
                Verdict::Skip => "skip",
            };
            let hint = check
                .hint
                .as_deref()
                .map(|hint| format!("  -> {hint}"))
                .unwrap_or_default();
            println!("{verdict}  {:width$}  {}{hint}", check.name, check.detail);
        }
    }
    let n_failed = checks.iter().filter(|c| c.verdict == Verdict::Fail).count();
    if any_failed(&checks) {
        anyhow::bail!("{n_failed} check(s) failed");
    }
    Ok(())
}
