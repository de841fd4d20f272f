//! `upkeepctl alerts`: the open incidents and the outbox (`list`, default), and a test message
//! through one sink (`test SINK`), sent at once so its error is shown here.

use std::fmt::Write as _;

use clap::{Args, Subcommand};
use upkeep_shared::alerts;
use upkeep_shared::config::Settings;

/// Arguments of `upkeepctl alerts`.
#[derive(Debug, Args)]
pub(crate) struct AlertsArgs {
    #[command(subcommand)]
    action: Option<AlertsAction>,
    /// Print JSON.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum AlertsAction {
    /// The open incidents and how many outbox messages are in each state (default).
    List,
    /// Send a test message through SINK now; exits non-zero with the error if it fails.
    Test {
        /// A `[[alerts.sinks]]` name.
        sink: String,
    },
}

/// Runs `upkeepctl alerts …`.
pub(crate) async fn run(settings: &Settings, args: AlertsArgs) -> anyhow::Result<()> {
    match args.action.unwrap_or(AlertsAction::List) {
        AlertsAction::Test { sink } => {
            let payload = alerts::send_test(settings, &sink).await?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&payload)?);
            } else {
                println!("sent a test message through {sink} (id {})", payload.id);
            }
            Ok(())
        }
        AlertsAction::List => {
            let pool = upkeep_shared::store::connect(&settings.database).await?;
            let incidents = alerts::open_incidents(&pool).await?;
            let counts = alerts::outbox_counts(&pool).await?;
            if args.json {
                let value = serde_json::json!({ "incidents": incidents, "outbox": counts });
                println!("{}", serde_json::to_string_pretty(&value)?);
                return Ok(());
            }
            let mut out = String::new();
            if incidents.is_empty() {
                out.push_str("no open incidents\n");
            }
            for incident in &incidents {
                let _ = writeln!(
                    out,
                    "#{} {} {} rule={} subject={} since {} (notified {}x): {}",
                    incident.id,
                    incident.severity,
                    incident.event,
                    incident.rule,
                    incident.subject,
                    incident.first_seen.format("%Y-%m-%d %H:%M:%SZ"),
                    incident.n_notified,
                    incident.summary,
                );
            }
            let _ = writeln!(
                out,
                "outbox: {} pending, {} sending, {} sent, {} failed, {} in doubt",
                counts.pending, counts.sending, counts.sent, counts.failed, counts.in_doubt
            );
            print!("{out}");
            Ok(())
        }
    }
}
