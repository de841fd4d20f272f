//! Catch-up planning: which ticks fell due while no scheduler ran, and which of them to run late.
//!
//! The scheduler asks this module once it knows the last tick in the ledger, then writes one
//! `schedule_ticks` row per planned tick (DESIGN decision 3). Pure: the ledger's answer and the
//! current instant come in as arguments.
//!
//! # One boundary between catch-up and the live loop
//! Given a *decision instant* `at` (a scheduler's "now" less its grace), every tick of a schedule
//! is on exactly one side of it:
//!
//! - **late**: its due time (fire time plus the jitter offset) is at or before `at`. Only
//!   [`plan_catch_up`] decides late ticks, per the catch-up policy.
//! - **live**: its due time is after `at`, even when its fire time has already passed (a jitter
//!   offset of 3 minutes makes the 02:30 tick due at 02:33; a scheduler started at 02:31 owns it).
//!   The live loop enqueues live ticks when they fall due, starting from [`next_live_tick`].
//!
//! [`live_after`] is that boundary as a fire time, and both sides use it, so there is neither a
//! gap between them (a tick nobody decides and that leaves no row) nor an overlap.

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::policy::{CatchUp, TickDecision};
use super::spec::{ScheduleSpec, Tick, sub_saturating};

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

/// The newest fire time that is late at the decision instant `at`: a tick whose fire time is at
/// or before the result is due at or before `at`. Ticks after it are live.
#[must_use]
pub fn newest_late_fire(spec: &ScheduleSpec, at: DateTime<Utc>) -> DateTime<Utc> {
    sub_saturating(at, spec.jitter_offset())
}

/// Where the live loop of a scheduler takes over from catch-up: it decides every tick whose fire
/// time is strictly after the result.
///
/// `last_seen` is the newest fire time a scheduler already decided (the ledger's), `at` the
/// decision instant. When the ledger is behind `at`, [`plan_catch_up`] decides every tick up to
/// [`newest_late_fire`] and the live loop continues from there; when it is ahead (another replica
/// already decided later ticks), the live loop continues after `last_seen`. A schedule the
/// ledger has never seen (`None`) owes nothing before `at`, but every tick not yet due, whatever
/// its fire time, is live.
#[must_use]
pub fn live_after(
    spec: &ScheduleSpec,
    last_seen: Option<DateTime<Utc>>,
    at: DateTime<Utc>,
) -> DateTime<Utc> {
    let newest_late = newest_late_fire(spec, at);
    last_seen.map_or(newest_late, |last_seen| last_seen.max(newest_late))
}

/// The first tick the live loop decides (see [`live_after`]): with `last_seen = None`, the
/// earliest tick whose due time is after `at`. `upkeepctl schedules next` starts its preview
/// here, and the scheduler seeds its due heap here.
#[must_use]
pub fn next_live_tick(
    spec: &ScheduleSpec,
    last_seen: Option<DateTime<Utc>>,
    at: DateTime<Utc>,
) -> Option<Tick> {
    spec.next_tick_after(live_after(spec, last_seen, at))
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
    let newest_late = newest_late_fire(spec, now);
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

    /// The start instants of the property below: every second of two minutes around `around`.
    fn starts_around(around: DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> {
        (-60..60).map(move |s| around + TimeDelta::seconds(s))
    }

    /// Checks, for one schedule and one start, that catch-up and the live loop split the ticks
    /// between them with no gap and no overlap, on the due-time boundary.
    fn assert_one_boundary(
        spec: &ScheduleSpec,
        period: TimeDelta,
        last_seen: Option<DateTime<Utc>>,
        start: DateTime<Utc>,
    ) {
        let grace = TimeDelta::seconds(2);
        let at = start - grace;
        let horizon = start + period * 3;
        let plan = plan_catch_up(spec, last_seen, at, CatchUp::All, 48 * HOUR, 100_000);
        assert_eq!(plan.omitted, None);
        let mut live = Vec::new();
        let mut tick = next_live_tick(spec, last_seen, at);
        while let Some(next) = tick.filter(|t| t.fire_at <= horizon) {
            live.push(next);
            tick = spec.next_tick_after(next.fire_at);
        }
        let context = || {
            format!(
                "{} jitter {:?} last_seen {last_seen:?} start {start}",
                spec.name(),
                spec.jitter()
            )
        };
        for planned in &plan.ticks {
            assert!(
                spec.due_at(planned.fire_at) <= at,
                "planned tick not yet due: {planned:?}, {}",
                context()
            );
        }
        for tick in &live {
            assert!(
                tick.due_at > at,
                "live tick already late: {tick:?}, {}",
                context()
            );
        }
        // Every tick owed: after the ledger's newest, or (new schedule) every tick not yet due.
        let from = last_seen.unwrap_or(start - period * 3);
        let expected: Vec<DateTime<Utc>> = spec
            .fires_between(from, horizon, 100_000)
            .into_iter()
            .filter(|&fire_at| last_seen.is_some() || spec.due_at(fire_at) > at)
            .collect();
        let decided: Vec<DateTime<Utc>> = plan
            .ticks
            .iter()
            .map(|t| t.fire_at)
            .chain(live.iter().map(|t| t.fire_at))
            .collect();
        assert_eq!(decided, expected, "gap or duplicate: {}", context());
    }

    #[test]
    fn catch_up_and_the_live_loop_decide_every_tick_once_whatever_the_start_second() {
        let berlin: Tz = "Europe/Berlin".parse().expect("zone");
        // Mid-hour, an hour boundary, a day boundary, and both DST transitions of Berlin
        // (01:00 UTC on 2026-03-29 and 2026-10-25).
        let arounds = [
            utc(2026, 6, 1, 10, 17, 0),
            utc(2026, 6, 1, 11, 0, 0),
            utc(2026, 6, 2, 0, 0, 0),
            utc(2026, 3, 29, 1, 0, 0),
            utc(2026, 10, 25, 1, 0, 0),
        ];
        // (cron, its period): jitter goes up to the period.
        let crons = [
            ("0 * * * * *", 60),
            ("*/20 * * * * *", 20),
            ("0 0 * * * *", 3600),
        ];
        for tz in [Tz::UTC, berlin] {
            for (cron, period) in crons {
                for jitter in [0, 1, period - 1, period] {
                    for name in ["backup.run", "bench-00042"] {
                        let spec = ScheduleSpec::new(
                            name,
                            CronExpr::parse(cron).expect("valid"),
                            tz,
                            Duration::from_secs(jitter),
                        );
                        for around in arounds {
                            for start in starts_around(around) {
                                let period = TimeDelta::from_std(Duration::from_secs(period))
                                    .expect("small");
                                let before = spec.next_fire_after(start - period * 3);
                                assert_one_boundary(&spec, period, None, start);
                                assert_one_boundary(&spec, period, before, start);
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_tick_whose_fire_time_passed_but_due_time_has_not_is_live() {
        // The example: 02:30 backup, jitter 5 min, restarted at 02:31.
        let spec = ScheduleSpec::parse(
            "backup.run",
            "0 30 2 * * *",
            "UTC",
            Duration::from_secs(300),
        )
        .expect("valid");
        let offset = TimeDelta::from_std(spec.jitter_offset()).expect("small");
        let fire_at = utc(2026, 6, 1, 2, 30, 0);
        let start = fire_at + offset - TimeDelta::seconds(1);
        assert_eq!(
            next_live_tick(&spec, None, start).map(|t| t.fire_at),
            Some(fire_at)
        );
        let yesterday = Some(fire_at - TimeDelta::days(1));
        assert_eq!(
            next_live_tick(&spec, yesterday, start).map(|t| t.fire_at),
            Some(fire_at)
        );
        assert!(
            plan_catch_up(&spec, yesterday, start, CatchUp::All, HOUR, 10)
                .ticks
                .is_empty()
        );
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
