//! `upkeepctl cron next "EXPR" [--tz Z] [--from T] [-n N] [--json]`: check a cron line before
//! it is deployed, across a DST change. Parsing and printing only; the fire times and the DST
//! marks come from `upkeep_shared::schedule`, the code the scheduler runs. Needs no
//! configuration, Redis or Postgres.

use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::Serialize;
use upkeep_shared::schedule::{
    DstRule, PreviewedFire, ScheduleSpec, describe_dst_rule, preview_fires,
};

use crate::schedules::parse_instant;

/// Options of `upkeepctl cron`.
#[derive(Debug, clap::Args)]
pub(crate) struct CronArgs {
    #[command(subcommand)]
    action: CronAction,
}

#[derive(Debug, clap::Subcommand)]
enum CronAction {
    /// Preview the next fire times of an expression in a time zone, as the scheduler would
    /// fire them (with its DST policy), without configuring it.
    Next {
        /// The expression: a crontab line ("30 2 * * 1-5"), six fields with leading seconds
        /// ("0 30 2 * * 1-5") or a shorthand ("@daily").
        expr: String,
        /// IANA time zone the expression is read in.
        #[arg(long, default_value = "UTC")]
        tz: String,
        /// Start after this instant: RFC 3339 (`2026-03-28T00:00:00+01:00`) or
        /// `YYYY-MM-DD HH:MM:SS` in UTC (default: now).
        #[arg(long, value_parser = parse_instant)]
        from: Option<DateTime<Utc>>,
        /// How many fire times.
        #[arg(short = 'n', long = "count", default_value_t = 10)]
        n: usize,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// What `upkeepctl cron next --json` prints.
#[derive(Debug, Serialize)]
struct CronPreview<'a> {
    expression: &'a str,
    timezone: &'a str,
    /// `wall_clock` or `cadence`: how the schedule treats DST transitions.
    dst_rule: &'static str,
    from: DateTime<Utc>,
    fires: Vec<PreviewedFire>,
}

/// Runs `upkeepctl cron`.
///
/// # Errors
/// When the expression or the zone is refused; the message names what is wrong.
pub(crate) fn run(args: &CronArgs) -> anyhow::Result<()> {
    match &args.action {
        CronAction::Next {
            expr,
            tz,
            from,
            n,
            json,
        } => {
            let spec = ScheduleSpec::parse("cron-next", expr, tz, Duration::ZERO)?;
            let from = from.unwrap_or_else(Utc::now);
            let preview = CronPreview {
                expression: spec.cron().as_str(),
                timezone: tz.trim(),
                dst_rule: match spec.cron().dst_rule() {
                    DstRule::WallClock => "wall_clock",
                    DstRule::Cadence => "cadence",
                },
                from,
                fires: preview_fires(&spec, from, *n),
            };
            if *json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&preview).context("encoding JSON")?
                );
            } else {
                print_preview(&preview, spec.cron().dst_rule());
            }
            Ok(())
        }
    }
}

fn print_preview(preview: &CronPreview<'_>, rule: DstRule) {
    println!("expression  {}", preview.expression);
    println!("time zone   {}", preview.timezone);
    println!("DST rule    {}", describe_dst_rule(rule));
    println!("from        {}", preview.from.to_rfc3339());
    println!();
    println!("{:<25} {:<25} {:<6} note", "fire (UTC)", "local", "zone");
    for fire in &preview.fires {
        let line = format!(
            "{:<25} {:<25} {:<6} {}",
            fire.fire_at.to_rfc3339(),
            fire.local,
            fire.zone,
            fire.dst.map_or("", |event| event.describe())
        );
        println!("{}", line.trim_end());
    }
    if preview.fires.is_empty() {
        println!(
            "(no fire times after {} before 2101)",
            preview.from.to_rfc3339()
        );
    }
}
