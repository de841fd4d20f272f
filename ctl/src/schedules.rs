//! `upkeepctl schedules [list|next|pause|resume|trigger|backfill|metrics]`: parsing and
//! printing only; the work is `upkeep_scheduler::operator::Operator`'s.

use anyhow::Context as _;
use chrono::{DateTime, NaiveDateTime, Utc};
use upkeep_scheduler::operator::{DEFAULT_BACKFILL_MAX, Operator};
use upkeep_shared::config::Settings;
use upkeep_shared::store::health::{ScheduleHealth, render_metrics};

/// Options of `upkeepctl schedules`.
#[derive(Debug, clap::Args)]
pub(crate) struct SchedulesArgs {
    #[command(subcommand)]
    action: Option<SchedulesAction>,
    /// Print JSON.
    #[arg(long, global = true)]
    json: bool,
    /// Who is acting, recorded with pause, resume, trigger and backfill (default:
    /// $USER@hostname).
    #[arg(long, global = true)]
    actor: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
enum SchedulesAction {
    /// Every schedule with its health: last tick, last success, next fire, lag, missed and
    /// skipped ticks (default).
    List,
    /// Preview the next ticks of a schedule not yet due (with jitter the first fire time may
    /// have passed), in UTC and in its time zone, with their due times.
    Next {
        /// The schedule.
        name: String,
        /// Start after this instant, same forms as backfill's (default: now).
        #[arg(long, value_parser = parse_instant)]
        from: Option<DateTime<Utc>>,
        /// How many fire times.
        #[arg(short = 'n', long = "count", default_value_t = 10)]
        n: usize,
    },
    /// Pause a schedule: its ticks are recorded as skipped_paused until resumed.
    Pause {
        /// The schedule.
        name: String,
    },
    /// Resume a paused schedule.
    Resume {
        /// The schedule.
        name: String,
    },
    /// Enqueue one run now (a `manual` tick), whatever the overlap policy or pause flag.
    Trigger {
        /// The schedule.
        name: String,
    },
    /// Enqueue every tick whose fire time is in [--from, --to] (`backfill` ticks).
    Backfill {
        /// The schedule.
        name: String,
        /// First fire time, RFC 3339 (`2026-11-22T02:00:00Z`) or `YYYY-MM-DD HH:MM:SS` in UTC.
        #[arg(long, value_parser = parse_instant)]
        from: DateTime<Utc>,
        /// Last fire time, same forms; not in the future.
        #[arg(long, value_parser = parse_instant)]
        to: DateTime<Utc>,
        /// Refuse a range holding more ticks than this.
        #[arg(long, default_value_t = DEFAULT_BACKFILL_MAX)]
        max: usize,
    },
    /// Schedule health in the Prometheus text format (what /metrics serves).
    Metrics,
}

/// Runs `upkeepctl schedules`.
///
/// # Errors
/// When the schedule is unknown, the arguments are refused, or a store fails.
pub(crate) async fn run(settings: Settings, args: SchedulesArgs) -> anyhow::Result<()> {
    let json = args.json;
    let actor = args.actor.unwrap_or_else(default_actor);
    let operator = Operator::build(settings)?;
    let now = Utc::now();
    match args.action.unwrap_or(SchedulesAction::List) {
        SchedulesAction::List => {
            let health = operator.health(now, None).await?;
            if json {
                print_json(&health)?;
            } else {
                print_health(&health);
            }
        }
        SchedulesAction::Next { name, from, n } => {
            let rows = operator.preview(&name, from.unwrap_or(now), n)?;
            if json {
                print_json(&rows)?;
            } else {
                println!(
                    "{:<25} {:<32} {:<6} due (UTC, with jitter)",
                    "fire (UTC)", "local", "zone"
                );
                for row in rows {
                    println!(
                        "{:<25} {:<32} {:<6} {}",
                        row.fire_at.to_rfc3339(),
                        row.local,
                        row.zone,
                        row.due_at
                            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                    );
                }
            }
        }
        SchedulesAction::Pause { name } => {
            let changed = operator.pause(&name, &actor).await?;
            report(json, &name, "paused", changed, &actor)?;
        }
        SchedulesAction::Resume { name } => {
            let changed = operator.resume(&name, &actor).await?;
            report(json, &name, "resumed", changed, &actor)?;
        }
        SchedulesAction::Trigger { name } => {
            let triggered = operator.trigger(&name, &actor, now).await?;
            if json {
                print_json(&triggered)?;
            } else {
                println!(
                    "triggered {name}: tick {} job {}",
                    triggered.fire_at.to_rfc3339(),
                    triggered.job_id
                );
            }
        }
        SchedulesAction::Backfill {
            name,
            from,
            to,
            max,
        } => {
            // On stderr, drawn only when it is a terminal (indicatif hides it otherwise).
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} ticks enqueued",
                )
                .expect("valid template"),
            );
            let progress = {
                let bar = bar.clone();
                move |done: usize, total: usize| {
                    bar.set_length(total as u64);
                    bar.set_position(done as u64);
                }
            };
            let backfilled = operator
                .backfill_with_progress(&name, from, to, max, &actor, now, &progress)
                .await;
            bar.finish_and_clear();
            let backfilled = backfilled?;
            if json {
                print_json(&backfilled)?;
            } else {
                for (fire_at, job_id) in &backfilled.enqueued {
                    println!("enqueued {} job {job_id}", fire_at.to_rfc3339());
                }
                for (fire_at, decision) in &backfilled.existing {
                    println!("kept     {} ({decision})", fire_at.to_rfc3339());
                }
                println!(
                    "backfilled {name}: {} enqueued, {} already had a tick",
                    backfilled.enqueued.len(),
                    backfilled.existing.len()
                );
            }
        }
        SchedulesAction::Metrics => {
            print!("{}", render_metrics(&operator.health(now, None).await?));
        }
    }
    Ok(())
}

fn report(json: bool, name: &str, what: &str, changed: bool, actor: &str) -> anyhow::Result<()> {
    if json {
        print_json(
            &serde_json::json!({"schedule": name, "action": what, "changed": changed, "actor": actor}),
        )
    } else {
        if changed {
            println!("{name} {what} by {actor}");
        } else {
            println!("{name} was already {what}; nothing changed");
        }
        Ok(())
    }
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!(
        "{}",
        serde_json::to_string_pretty(value).context("encoding JSON")?
    );
    Ok(())
}

fn print_health(health: &[ScheduleHealth]) {
    println!(
        "{:<24} {:<16} {:<16} {:<8} {:<31} {:<20} {:<20} {:>13} {:>6} {:>13}",
        "schedule",
        "cron",
        "timezone",
        "state",
        "last tick",
        "last success",
        "next fire",
        "lag enq/start",
        "missed",
        "skipped o/p"
    );
    for h in health {
        let state = if !h.in_config {
            "removed"
        } else if !h.enabled {
            "disabled"
        } else if h.paused {
            "paused"
        } else {
            "active"
        };
        let last_tick = h.last_tick.as_ref().map_or("-".to_owned(), |tick| {
            format!("{} {}", short(tick.fire_at), tick.decision)
        });
        let lag = |lag: Option<f64>| lag.map_or("-".to_owned(), |s| format!("{s:.3}"));
        println!(
            "{:<24} {:<16} {:<16} {:<8} {:<31} {:<20} {:<20} {:>13} {:>6} {:>13}",
            h.name,
            h.cron,
            h.timezone,
            state,
            last_tick,
            h.last_success_at.map_or("-".to_owned(), short),
            h.next_fire_at.map_or("-".to_owned(), short),
            format!(
                "{}/{}",
                lag(h.enqueue_lag_seconds),
                lag(h.start_lag_seconds)
            ),
            h.n_missed,
            format!("{}/{}", h.n_skipped_overlap, h.n_skipped_paused),
        );
    }
}

fn short(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// `$USER@hostname`, or what of it is known.
pub(crate) fn default_actor() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".to_owned());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned());
    format!("{user}@{host}")
}

/// An instant given on the command line: RFC 3339, or a wall time in UTC.
pub(crate) fn parse_instant(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(instant) = DateTime::parse_from_rfc3339(text) {
        return Ok(instant.to_utc());
    }
    for format in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(naive.and_utc());
        }
    }
    Err(format!(
        "{text:?} is not a time like 2026-11-22T02:00:00Z or \"2026-11-22 02:00:00\" (UTC)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_parse_in_rfc3339_or_as_utc_wall_times() {
        let expected = "2026-11-22T02:00:00Z".parse::<DateTime<Utc>>().ok();
        assert_eq!(parse_instant("2026-11-22T03:00:00+01:00").ok(), expected);
        assert_eq!(parse_instant("2026-11-22 02:00:00").ok(), expected);
        assert!(parse_instant("yesterday").is_err());
    }
}
