//! Catch-up planning: which ticks fell due while no scheduler ran, and which of them to run late.
//!
//! The scheduler asks this module once it knows the last tick in the ledger, then writes one
//! `schedule_ticks` row per planned tick (DESIGN decision 3). Pure: the ledger's answer and the
//! current instant come in as arguments.

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::policy::{CatchUp, TickDecision};
use super::spec::{ScheduleSpec, sub_saturating};

/// The most missed ticks a plan lists; older ones are summarised in [`CatchUpPlan::omitted`].
pub const MAX_LISTED_MISSED: usize = 1000;

/// What to record for the ticks that fell due since the last one the ledger knows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CatchUpPlan {
    /// The newest late ticks, oldest first, each with its decision: at most the number of
    /// ticks the policy may run plus [`MAX_LISTED_MISSED`].
    pub ticks: Vec<PlannedTick>,
    /// Late ticks older than every listed one, when the downtime produced more than a plan lists.
    /// They are missed; the scheduler should log the range rather than write a row for each.
    pub omitted: Option<OmittedTicks>,
}

/// One late tick and what to do with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedTick {
    /// The tick's nominal fire time (`schedule_ticks.fire_at`).
    pub fire_at: DateTime<Utc>,
    /// Whether to run it now (`caught_up`) or only record it (`missed`).
    pub decision: TickDecision,
}

/// The range of missed ticks a plan does not list. Their number is not computed: for an
/// every-second schedule after a month of downtime that alone would be millions of steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OmittedTicks {
    /// The oldest omitted tick (the first one after the ledger's last tick).
    pub first: DateTime<Utc>,
    /// The oldest listed tick; every omitted tick is before it.
    pub before: DateTime<Utc>,
}

/// Plans what to record for the ticks of `spec` that fell due after `last_seen` (the newest
/// nominal fire time in the ledger) and by `now`.
///
/// - A tick is late once its due time (fire time plus jitter offset) is at or before `now`;
///   ticks not yet due are left to the normal loop. A scheduler that calls this on every loop,
///   not only at start-up, should pass `now` minus its grace period so that a tick due a moment
///   ago is enqueued normally rather than planned.
/// - `last_seen = None` (the ledger has never seen this schedule) plans nothing: a new schedule
///   starts from now and does not fire retroactively (`upkeepctl schedules backfill` does that).
/// - `policy` picks how many ticks run late: [`CatchUp::Skip`] none, [`CatchUp::Latest`] the
///   newest one, [`CatchUp::All`] the newest ones up to `cap`; in every case only ticks whose
///   fire time is within `window` of `now`, and never more than `cap`. All other ticks are
///   `missed`.
/// - The plan is bounded: it lists the newest late ticks only, at most the number the policy
///   may run plus [`MAX_LISTED_MISSED`], and summarises older ones in
///   [`CatchUpPlan::omitted`]. The work is proportional to the listed ticks, not to the downtime.
#[must_use]
pub fn plan_catch_up(
    spec: &ScheduleSpec,
    last_seen: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    policy: CatchUp,
    window: Duration,
    cap: usize,
) -> CatchUpPlan {
    let Some(last_seen) = last_seen else {
        return CatchUpPlan::default();
    };
    let newest_late = sub_saturating(now, spec.jitter_offset());
    if newest_late <= last_seen {
        return CatchUpPlan::default();
    }
    let n_to_run = match policy {
        CatchUp::Skip => 0,
        CatchUp::Latest => cap.min(1),
        CatchUp::All => cap,
    };
    let listed = newest_fires(
        spec,
        last_seen,
        newest_late,
        n_to_run.saturating_add(MAX_LISTED_MISSED),
    );

    let window_start = sub_saturating(now, window);
    let mut n_running = 0;
    let mut ticks: Vec<PlannedTick> = listed
        .iter()
        .rev()
        .map(|&fire_at| {
            let decision = if n_running < n_to_run && fire_at >= window_start {
                n_running += 1;
                TickDecision::CaughtUp
            } else {
                TickDecision::Missed
            };
            PlannedTick { fire_at, decision }
        })
        .collect();
    ticks.reverse();

    let omitted = listed.first().and_then(|&oldest_listed| {
        spec.next_fire_after(last_seen)
            .filter(|&first| first < oldest_listed)
            .map(|first| OmittedTicks {
                first,
                before: oldest_listed,
            })
    });
    CatchUpPlan { ticks, omitted }
}

/// The newest `n` fire times in `(from_exclusive, to_inclusive]`, oldest first.
///
/// Fire times can only be walked forwards, so this walks forwards from ever earlier starting
/// points (1 minute, 2, 4, … before `to_inclusive`) until the span holds `n` fire times or
/// reaches `from_exclusive`; the total work is about twice the final span's fire times.
fn newest_fires(
    spec: &ScheduleSpec,
    from_exclusive: DateTime<Utc>,
    to_inclusive: DateTime<Utc>,
    n: usize,
) -> Vec<DateTime<Utc>> {
    if n == 0 {
        return Vec::new();
    }
    let mut span = TimeDelta::minutes(1);
    loop {
        let start = to_inclusive
            .checked_sub_signed(span)
            .filter(|&start| start > from_exclusive)
            .unwrap_or(from_exclusive);
        let mut newest = VecDeque::new();
        let mut cursor = start;
        while let Some(fire_at) = spec.next_fire_after(cursor) {
            if fire_at > to_inclusive {
                break;
            }
            if newest.len() == n {
                newest.pop_front();
            }
            newest.push_back(fire_at);
            cursor = fire_at;
        }
        if newest.len() == n || start == from_exclusive {
            return newest.into();
        }
        span = span.checked_mul(2).unwrap_or(TimeDelta::MAX);
    }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;
    use chrono_tz::Tz;

    use super::*;
    use crate::schedule::CronExpr;

    const HOUR: Duration = Duration::from_secs(3600);

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        NaiveDate::from_ymd_opt(y, mo, d)
            .and_then(|date| date.and_hms_opt(h, mi, s))
            .expect("test dates are valid")
            .and_utc()
    }

    fn hourly() -> ScheduleSpec {
        ScheduleSpec::new(
            "hourly",
            CronExpr::parse("0 0 * * * *").expect("valid"),
            Tz::UTC,
            Duration::ZERO,
        )
    }

    /// The plan as `(hour of the tick, decision)` pairs, for ticks on 2026-06-01.
    fn by_hour(plan: &CatchUpPlan) -> Vec<(u32, &'static str)> {
        use chrono::Timelike;
        plan.ticks
            .iter()
            .map(|tick| (tick.fire_at.hour(), tick.decision.as_str()))
            .collect()
    }

    fn plan(policy: CatchUp, window: Duration, cap: usize) -> CatchUpPlan {
        // The ledger's last tick is 00:00; the scheduler comes back at 05:30.
        plan_catch_up(
            &hourly(),
            Some(utc(2026, 6, 1, 0, 0, 0)),
            utc(2026, 6, 1, 5, 30, 0),
            policy,
            window,
            cap,
        )
    }

    #[test]
    fn a_schedule_the_ledger_has_never_seen_has_nothing_to_catch_up() {
        let plan = plan_catch_up(
            &hourly(),
            None,
            utc(2026, 6, 1, 5, 30, 0),
            CatchUp::All,
            24 * HOUR,
            100,
        );
        assert_eq!(plan, CatchUpPlan::default());
    }

    #[test]
    fn nothing_is_late_when_the_ledger_is_up_to_date() {
        let plan = plan_catch_up(
            &hourly(),
            Some(utc(2026, 6, 1, 5, 0, 0)),
            utc(2026, 6, 1, 5, 30, 0),
            CatchUp::All,
            24 * HOUR,
            100,
        );
        assert!(plan.ticks.is_empty());
        let ledger_ahead_of_the_clock = plan_catch_up(
            &hourly(),
            Some(utc(2026, 6, 1, 7, 0, 0)),
            utc(2026, 6, 1, 5, 30, 0),
            CatchUp::All,
            24 * HOUR,
            100,
        );
        assert!(ledger_ahead_of_the_clock.ticks.is_empty());
    }

    #[test]
    fn skip_records_every_late_tick_as_missed() {
        let plan = plan(CatchUp::Skip, 24 * HOUR, 100);
        assert_eq!(
            by_hour(&plan),
            [
                (1, "missed"),
                (2, "missed"),
                (3, "missed"),
                (4, "missed"),
                (5, "missed")
            ]
        );
        assert_eq!(plan.omitted, None);
    }

    #[test]
    fn latest_runs_only_the_most_recent_late_tick() {
        let plan = plan(CatchUp::Latest, 24 * HOUR, 100);
        assert_eq!(
            by_hour(&plan),
            [
                (1, "missed"),
                (2, "missed"),
                (3, "missed"),
                (4, "missed"),
                (5, "caught_up")
            ]
        );
    }

    #[test]
    fn latest_runs_nothing_when_the_most_recent_tick_is_older_than_the_window() {
        // The 05:00 tick is 30 minutes old at 05:30.
        let plan = plan(CatchUp::Latest, Duration::from_secs(10 * 60), 100);
        assert!(
            plan.ticks
                .iter()
                .all(|tick| tick.decision == TickDecision::Missed)
        );
        assert_eq!(plan.ticks.len(), 5);
    }

    #[test]
    fn latest_runs_nothing_with_a_cap_of_zero() {
        let plan = plan(CatchUp::Latest, 24 * HOUR, 0);
        assert!(
            plan.ticks
                .iter()
                .all(|tick| tick.decision == TickDecision::Missed)
        );
    }

    #[test]
    fn all_runs_every_late_tick_within_the_window_and_records_older_ones_as_missed() {
        // The window reaches back to 02:30.
        let plan = plan(CatchUp::All, 3 * HOUR, 100);
        assert_eq!(
            by_hour(&plan),
            [
                (1, "missed"),
                (2, "missed"),
                (3, "caught_up"),
                (4, "caught_up"),
                (5, "caught_up")
            ]
        );
    }

    #[test]
    fn all_runs_at_most_cap_ticks_the_newest_ones() {
        let plan = plan(CatchUp::All, 24 * HOUR, 2);
        assert_eq!(
            by_hour(&plan),
            [
                (1, "missed"),
                (2, "missed"),
                (3, "missed"),
                (4, "caught_up"),
                (5, "caught_up")
            ]
        );
    }

    #[test]
    fn a_tick_whose_jittered_due_time_has_not_come_is_not_late() {
        let spec =
            ScheduleSpec::parse("backup.run", "0 0 * * * *", "UTC", Duration::from_secs(300))
                .expect("valid");
        let offset = TimeDelta::from_std(spec.jitter_offset()).expect("small");
        assert!(
            offset > TimeDelta::zero(),
            "the pinned offset is about 84 s"
        );
        let last_seen = Some(utc(2026, 6, 1, 0, 0, 0));
        let just_before_due = utc(2026, 6, 1, 5, 0, 0) + offset - TimeDelta::seconds(1);
        let plan = plan_catch_up(&spec, last_seen, just_before_due, CatchUp::All, HOUR, 10);
        assert_eq!(
            plan.ticks.last().map(|tick| tick.fire_at),
            Some(utc(2026, 6, 1, 4, 0, 0))
        );
        let plan = plan_catch_up(
            &spec,
            last_seen,
            just_before_due + TimeDelta::seconds(1),
            CatchUp::All,
            HOUR,
            10,
        );
        assert_eq!(
            plan.ticks.last().map(|tick| tick.fire_at),
            Some(utc(2026, 6, 1, 5, 0, 0))
        );
    }

    #[test]
    fn a_month_of_downtime_for_an_every_second_schedule_is_listed_in_bounded_form() {
        let spec =
            ScheduleSpec::parse("tick", "* * * * * *", "UTC", Duration::ZERO).expect("valid");
        let last_seen = utc(2026, 5, 1, 0, 0, 0);
        let now = utc(2026, 6, 1, 0, 0, 0);
        let plan = plan_catch_up(&spec, Some(last_seen), now, CatchUp::All, HOUR, 5);

        assert_eq!(plan.ticks.len(), 5 + MAX_LISTED_MISSED);
        let caught_up: Vec<_> = plan
            .ticks
            .iter()
            .filter(|tick| tick.decision == TickDecision::CaughtUp)
            .map(|tick| tick.fire_at)
            .collect();
        let newest_five: Vec<_> = (0..5).rev().map(|i| now - TimeDelta::seconds(i)).collect();
        assert_eq!(caught_up, newest_five);
        let oldest_listed = plan.ticks[0].fire_at;
        assert_eq!(oldest_listed, now - TimeDelta::seconds(1004));
        assert_eq!(
            plan.omitted,
            Some(OmittedTicks {
                first: utc(2026, 5, 1, 0, 0, 1),
                before: oldest_listed,
            })
        );
    }

    #[test]
    fn a_long_downtime_for_a_daily_schedule_lists_every_day() {
        let spec =
            ScheduleSpec::parse("daily", "0 0 2 * * *", "UTC", Duration::ZERO).expect("valid");
        let plan = plan_catch_up(
            &spec,
            Some(utc(2025, 6, 1, 2, 0, 0)),
            utc(2026, 6, 1, 12, 0, 0),
            CatchUp::Latest,
            24 * HOUR,
            1,
        );
        assert_eq!(plan.ticks.len(), 365);
        assert_eq!(plan.omitted, None);
        assert_eq!(plan.ticks[0].fire_at, utc(2025, 6, 2, 2, 0, 0));
        assert_eq!(
            plan.ticks.last().copied(),
            Some(PlannedTick {
                fire_at: utc(2026, 6, 1, 2, 0, 0),
                decision: TickDecision::CaughtUp,
            })
        );
    }
}
