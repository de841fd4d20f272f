//! Cron expressions in a time zone: fire times, jitter, catch-up plans and the clock (pure, no IO).
//!
//! The scheduler asks this module *when* a schedule fires and *what* to do about ticks it missed;
//! it then claims ticks in the ledger (`store`) and enqueues them (`queue`). Nothing here touches
//! Postgres, Redis, files or the network, and nothing reads the current time except
//! [`SystemClock`]: every function takes the instants it needs, so tests can ask "what fires
//! between 09:59 and 10:01?" for any date.
//!
//! # Fire times
//! A [`ScheduleSpec`] is a [`CronExpr`] (crontab(5) syntax: five fields, or six with leading
//! seconds, optionally a year; see its documentation) evaluated in an IANA zone
//! ([`chrono_tz::Tz`], default UTC in configuration). Fire times are computed by walking the
//! cron fields over *local wall-clock* times and mapping each match to an instant; they are
//! returned in UTC. A tick's identity is its nominal fire time (`schedule_ticks.fire_at`).
//! [`preview_fires`] lists them for operators, marking the ones a DST transition decided.
//!
//! # Daylight saving time (DESIGN decision 5, refined for cadences)
//! A naive evaluation in a zone skips local times that fall in a spring-forward gap and fires
//! twice on local times repeated by a fall-back. So upkeep maps local times itself, with one
//! rule per kind of schedule ([`DstRule`], chosen by the hour field):
//!
//! - **Wall-clock schedules** (the hour field names hours: `0 30 2 * * *`, `0 0 1-5 * * *`,
//!   `0 0 */6 * * *`, `@daily`) follow decision 5 exactly. A local time that does not exist fires
//!   once, at the first instant after the gap (the transition instant): `0 30 2 * * *` in
//!   Europe/Berlin on 2026-03-29 fires at 03:00 CEST = 01:00 UTC. Several skipped times collapse
//!   into that one fire. A repeated local time fires once, at its first occurrence: on
//!   2026-10-25 it fires at 02:30 CEST = 00:30 UTC and not again at 02:30 CET = 01:30 UTC.
//!   Consequence: a wall-clock schedule with sub-hourly fields inside the named hours
//!   (`0 */10 2 * * *`) fires through the first pass of a repeated hour and not at all during the
//!   second pass, and fires once for the whole of a skipped hour. For a job that is about a time
//!   of day ("the 2 a.m. backup") that is the point: it runs once per local day.
//! - **Cadence schedules** (the hour field is `*`: `*/10 * * * * *`, `0 */15 * * * *`,
//!   `0 0 * * * *`) follow real elapsed time. They fire at every instant at which the local wall
//!   clock shows a matching time: a skipped time is never shown and does not fire, a repeated time
//!   is shown twice and fires twice, once per pass. So `*/10 * * * * *` fires every 10 real
//!   seconds straight through both transitions, and hourly `0 0 * * * *` fires every real hour
//!   (23 times on the spring day, 25 on the autumn day). Applying the wall-clock rule to them
//!   instead would silence an every-minute token refresh for a whole hour each autumn, and fire
//!   an hourly `0 7 * * * *` job at 03:00 and again at 03:07 each spring. Every fire time is still
//!   a distinct UTC instant, so tick identities stay unique.
//!
//! # Jitter
//! Each schedule has a fixed offset in `[0, jitter)` derived from a stable hash of its name
//! ([`ScheduleSpec::jitter_offset`]); a tick is due at its fire time plus that offset. Every
//! replica computes the same due time, and schedules sharing an expression are spread apart.
//!
//! # Catch-up
//! [`plan_catch_up`] lists the ticks that fell due while no scheduler ran and decides, per
//! [`CatchUp`] policy, window and cap, which run late (`caught_up`) and which are only recorded
//! (`missed`). The list is bounded; see its documentation for how a long outage is summarised.

mod catch_up;
mod clock;
mod cron_expr;
mod policy;
mod preview;
mod spec;
mod zone;

pub use catch_up::{CatchUpPlan, MAX_LISTED_MISSED, OmittedTicks, PlannedTick, plan_catch_up};
pub use clock::{Clock, ManualClock, SystemClock};
pub use cron_expr::{CronExpr, DstRule};
pub use policy::{CatchUp, Overlap, TickDecision};
pub use preview::{DstEvent, PreviewedFire, describe_dst_rule, preview_fires};
pub use spec::{ScheduleSpec, Tick};
pub use zone::parse_time_zone;

/// Why a schedule's configuration was rejected. Every message names the offending input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The cron expression has the wrong number of fields, a malformed field, a field out of
    /// range, or can never fire.
    #[error("invalid cron expression {expr:?}: {reason}")]
    InvalidCron {
        /// The expression as given.
        expr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The time zone is not in the tz database.
    #[error(
        "unknown time zone {name:?} (expected an IANA name such as \"Europe/Berlin\" or \"UTC\")"
    )]
    UnknownTimeZone {
        /// The zone name as given.
        name: String,
    },
    /// The catch-up policy is not one of `skip`, `latest`, `all`.
    #[error("unknown catch-up policy {value:?} (expected \"skip\", \"latest\" or \"all\")")]
    UnknownCatchUp {
        /// The policy as given.
        value: String,
    },
    /// The overlap policy is not one of `allow`, `skip`, `queue_one`.
    #[error("unknown overlap policy {value:?} (expected \"allow\", \"skip\" or \"queue_one\")")]
    UnknownOverlap {
        /// The policy as given.
        value: String,
    },
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_file_of_the_module_starts_with_a_module_doc() {
        let files = [
            ("mod.rs", include_str!("mod.rs")),
            ("catch_up.rs", include_str!("catch_up.rs")),
            ("clock.rs", include_str!("clock.rs")),
            ("cron_expr.rs", include_str!("cron_expr.rs")),
            ("cron_expr/field.rs", include_str!("cron_expr/field.rs")),
            ("policy.rs", include_str!("policy.rs")),
            ("preview.rs", include_str!("preview.rs")),
            ("spec.rs", include_str!("spec.rs")),
            ("zone.rs", include_str!("zone.rs")),
        ];
        for (name, text) in files {
            assert!(text.starts_with("//! "), "{name} must start with a //! doc");
        }
    }
}
