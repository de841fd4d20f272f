//! Fire-time previews for operators: the next fire times of a schedule, each in UTC and in its
//! zone, marked where a DST transition decided it.
//!
//! `upkeepctl cron next` (an expression not configured yet) and `upkeepctl schedules next` (a
//! configured one) print these, so a line can be checked before it is deployed, across a DST
//! change. Pure: the caller gives the starting instant.

use chrono::{DateTime, MappedLocalTime, Offset, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use super::cron_expr::DstRule;
use super::spec::ScheduleSpec;

/// One previewed fire time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PreviewedFire {
    /// The nominal fire time in UTC (the tick's identity).
    pub fire_at: DateTime<Utc>,
    /// The same instant in the schedule's zone, RFC 3339 with its offset.
    pub local: String,
    /// The zone's abbreviation at that instant (`CET`, `EDT`, `+1030`).
    pub zone: String,
    /// Set when a DST transition decided this fire time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst: Option<DstEvent>,
}

/// How a DST transition shaped a fire time (upkeep's DST policy, see [`crate::schedule`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DstEvent {
    /// The local times the expression names were skipped by a spring-forward gap; a wall-clock
    /// schedule fires once, here, at the first instant after the gap.
    SkippedTimeFiresAtGapEnd,
    /// A local time that the wall clock shows twice (fall back); this is its first occurrence.
    /// A wall-clock schedule fires only here.
    RepeatedTimeFirstPass,
    /// The second occurrence of a repeated local time: only cadence schedules (hour field `*`)
    /// fire here.
    RepeatedTimeSecondPass,
}

impl DstEvent {
    /// A short phrase for people, as `upkeepctl` prints it.
    #[must_use]
    pub fn describe(self) -> &'static str {
        match self {
            Self::SkippedTimeFiresAtGapEnd => "DST gap: the skipped time fires at the gap's end",
            Self::RepeatedTimeFirstPass => "DST fold: first pass of a repeated time",
            Self::RepeatedTimeSecondPass => "DST fold: second pass (cadence schedules only)",
        }
    }
}

/// The next `n` fire times of `spec` strictly after `after`, marked where DST decided them.
#[must_use]
pub fn preview_fires(spec: &ScheduleSpec, after: DateTime<Utc>, n: usize) -> Vec<PreviewedFire> {
    spec.preview(after, n)
        .into_iter()
        .map(|(fire_at, local)| PreviewedFire {
            fire_at,
            local: local.to_rfc3339(),
            zone: local.format("%Z").to_string(),
            dst: dst_event(spec, fire_at),
        })
        .collect()
}

/// The phrase `upkeepctl` prints for a schedule's DST rule.
#[must_use]
pub fn describe_dst_rule(rule: DstRule) -> &'static str {
    match rule {
        DstRule::WallClock => {
            "wall clock: a time skipped by DST fires once at the end of the gap, a repeated time \
             fires once, at its first occurrence"
        }
        DstRule::Cadence => {
            "cadence (hour field *): follows real elapsed time; skipped times do not fire, \
             repeated times fire on both passes"
        }
    }
}

fn dst_event(spec: &ScheduleSpec, fire_at: DateTime<Utc>) -> Option<DstEvent> {
    let tz = spec.tz();
    let local = fire_at.with_timezone(&tz).naive_local();
    match tz.from_local_datetime(&local) {
        MappedLocalTime::Ambiguous(first, _) if first.to_utc() == fire_at => {
            Some(DstEvent::RepeatedTimeFirstPass)
        }
        MappedLocalTime::Ambiguous(..) => Some(DstEvent::RepeatedTimeSecondPass),
        _ if is_gap_end(tz, fire_at) && !spec.cron().matches_local(local) => {
            Some(DstEvent::SkippedTimeFiresAtGapEnd)
        }
        _ => None,
    }
}

/// Whether the wall clock jumps forward at `at` (a spring-forward transition).
fn is_gap_end(tz: Tz, at: DateTime<Utc>) -> bool {
    let offset = |instant: DateTime<Utc>| {
        tz.offset_from_utc_datetime(&instant.naive_utc())
            .fix()
            .local_minus_utc()
    };
    offset(at - TimeDelta::seconds(1)) < offset(at)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use chrono::NaiveDate;

    use super::*;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        NaiveDate::from_ymd_opt(y, mo, d)
            .and_then(|date| date.and_hms_opt(h, mi, 0))
            .expect("test dates are valid")
            .and_utc()
    }

    fn spec(cron: &str, tz: &str) -> ScheduleSpec {
        ScheduleSpec::parse("preview", cron, tz, Duration::ZERO).expect("valid")
    }

    #[test]
    fn a_preview_across_the_spring_gap_marks_the_moved_fire_time() {
        let fires = preview_fires(
            &spec("30 2 * * *", "Europe/Berlin"),
            utc(2026, 3, 27, 12, 0),
            3,
        );
        let shown: Vec<(&str, Option<DstEvent>)> = fires
            .iter()
            .map(|fire| (fire.local.as_str(), fire.dst))
            .collect();
        assert_eq!(
            shown,
            [
                ("2026-03-28T02:30:00+01:00", None),
                (
                    "2026-03-29T03:00:00+02:00",
                    Some(DstEvent::SkippedTimeFiresAtGapEnd)
                ),
                ("2026-03-30T02:30:00+02:00", None),
            ]
        );
        assert_eq!(fires[1].zone, "CEST");
    }

    #[test]
    fn a_schedule_that_names_the_end_of_the_gap_is_not_marked() {
        let fires = preview_fires(
            &spec("0 3 * * *", "Europe/Berlin"),
            utc(2026, 3, 28, 12, 0),
            1,
        );
        assert_eq!(fires[0].fire_at, utc(2026, 3, 29, 1, 0));
        assert_eq!(fires[0].dst, None);
    }

    #[test]
    fn a_preview_across_the_autumn_fold_marks_both_passes_of_a_cadence() {
        let fires = preview_fires(
            &spec("30 * * * *", "America/New_York"),
            utc(2026, 11, 1, 4, 0),
            4,
        );
        let shown: Vec<(&str, Option<DstEvent>)> = fires
            .iter()
            .map(|fire| (fire.local.as_str(), fire.dst))
            .collect();
        assert_eq!(
            shown,
            [
                ("2026-11-01T00:30:00-04:00", None),
                (
                    "2026-11-01T01:30:00-04:00",
                    Some(DstEvent::RepeatedTimeFirstPass)
                ),
                (
                    "2026-11-01T01:30:00-05:00",
                    Some(DstEvent::RepeatedTimeSecondPass)
                ),
                ("2026-11-01T02:30:00-05:00", None),
            ]
        );
        let json = serde_json::to_value(&fires[2]).expect("serialises");
        assert_eq!(json["dst"], "repeated_time_second_pass");
        assert!(serde_json::to_value(&fires[0]).expect("serialises")["dst"].is_null());
    }
}
