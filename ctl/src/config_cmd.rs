//! `upkeepctl config check [FILE]` and `upkeepctl config show [--json]`: validate the
//! configuration, or print the effective value of every key with its source (secrets as
//! `***`). Neither connects to anything.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use upkeep_shared::config::{self, Settings};

/// `upkeepctl config`.
#[derive(Debug, Args)]
pub(crate) struct ConfigArgs {
    #[command(subcommand)]
    action: ConfigAction,
}

#[derive(Debug, Subcommand)]
enum ConfigAction {
    /// Validate a config file (default: UPKEEP_CONFIG, else ./upkeep.toml) with the
    /// environment's overrides; print every problem. Exit 0 when valid, 2 otherwise.
    Check {
        /// The file to check.
        file: Option<PathBuf>,
    },
    /// Print the effective configuration: every key, its value and where it came from
    /// (default, FILE:LINE or env VAR). Secrets are shown as ***.
    Show {
        /// The file to read (default: UPKEEP_CONFIG, else ./upkeep.toml).
        #[arg(long)]
        file: Option<PathBuf>,
        /// Print JSON: an array of {key, value, source}.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `upkeepctl config …`.
pub(crate) fn run(args: ConfigArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        ConfigAction::Check { file } => Ok(config::check_and_report("upkeepctl", file.as_deref())),
        ConfigAction::Show { file, json } => {
            let env = config::process_env()?;
            let path = file.or_else(|| config::config_path(&env));
            let shown = match Settings::show(path.as_deref(), &env) {
                Ok(shown) => shown,
                Err(error) => {
                    eprintln!("upkeepctl: invalid configuration:");
                    for line in error.problem_lines() {
                        eprintln!("  {line}");
                    }
                    return Ok(ExitCode::from(2));
                }
            };
            let text = if json {
                serde_json::to_string_pretty(&shown)? + "\n"
            } else {
                let width = shown.iter().map(|s| s.key.len()).max().unwrap_or(0);
                shown
                    .iter()
                    .map(|s| format!("{:width$} = {}  # {}\n", s.key, s.value, s.source))
                    .collect()
            };
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes());
            Ok(ExitCode::SUCCESS)
        }
    }
}
