//! Time zones: parsing IANA names and resolving local wall-clock times to instants across DST.
//!
//! This is where the gap (spring forward) and the fold (fall back) are found; [`super::spec`]
//! decides what a schedule does about them. Pure functions of the `chrono-tz` database: no IO,
//! and never the system's local zone.

use std::str::FromStr;

use chrono::{
    DateTime, MappedLocalTime, NaiveDateTime, Offset, TimeDelta, TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;

use super::ScheduleError;

/// Parses an IANA time zone name such as `Europe/Berlin`, `America/New_York` or `UTC`.
///
/// The name is matched exactly (case-sensitive), as in the tz database.
///
/// # Errors
/// [`ScheduleError::UnknownTimeZone`], naming the input, when the tz database has no such zone.
pub fn parse_time_zone(name: &str) -> Result<Tz, ScheduleError> {
    Tz::from_str(name.trim()).map_err(|_| ScheduleError::UnknownTimeZone {
        name: name.to_owned(),
    })
}

/// The longest gap or fold we search across. Real transitions move the clock by at most a day
/// (Samoa skipped 2011-12-30 entirely), so four days is a comfortable bound.
const MAX_TRANSITION: TimeDelta = TimeDelta::days(4);

/// The first whole-second local time after `naive` that exists in `tz`: the end of the gap
/// `naive` falls in. Its earliest instant is the transition instant itself.
///
/// Returns `None` only if no valid local time follows within [`MAX_TRANSITION`], which no zone in
/// the tz database does.
pub(crate) fn gap_end(tz: Tz, naive: NaiveDateTime) -> Option<NaiveDateTime> {
    first_whole_second_where(truncate_to_second(naive), |candidate| {
        !matches!(tz.from_local_datetime(&candidate), MappedLocalTime::None)
    })
}

/// The local times that occur twice around `naive`, which must itself be repeated:
/// `[start, end)` where the wall clock shows each time once before the transition and once after.
///
/// `first` and `second` are the two instants `naive` maps to, earliest first; the span's length is
/// the difference of their offsets.
pub(crate) fn repeated_span(
    tz: Tz,
    naive: NaiveDateTime,
    first: &DateTime<Tz>,
    second: &DateTime<Tz>,
) -> Option<(NaiveDateTime, NaiveDateTime)> {
    let end = first_whole_second_where(truncate_to_second(naive), |candidate| {
        !matches!(
            tz.from_local_datetime(&candidate),
            MappedLocalTime::Ambiguous(..)
        )
    })?;
    let fold = i64::from(first.offset().fix().local_minus_utc())
        - i64::from(second.offset().fix().local_minus_utc());
    let start = end.checked_sub_signed(TimeDelta::seconds(fold))?;
    Some((start, end))
}

/// The earliest instant at which the wall clock in `tz` shows `naive` or a later time.
///
/// This is upkeep's DST policy in one function: a repeated local time resolves to its first
/// occurrence, and a local time inside a gap resolves to the first instant after the gap (the
/// transition instant, where the wall clock jumps past `naive`).
pub(crate) fn first_instant_at_or_after(tz: Tz, naive: NaiveDateTime) -> Option<DateTime<Utc>> {
    match tz.from_local_datetime(&naive) {
        MappedLocalTime::Single(instant) | MappedLocalTime::Ambiguous(instant, _) => {
            Some(instant.to_utc())
        }
        MappedLocalTime::None => {
            let end = gap_end(tz, naive)?;
            tz.from_local_datetime(&end)
                .earliest()
                .map(|instant| instant.to_utc())
        }
    }
}

fn truncate_to_second(naive: NaiveDateTime) -> NaiveDateTime {
    // Setting the nanoseconds to zero is always valid.
    naive.with_nanosecond(0).unwrap_or(naive)
}

/// The first whole second after `start` for which `holds` is true, where `holds(start)` is false
/// and `holds` turns true once and stays true for a while (the end of a gap or of a fold).
///
/// Exponential probing then bisection: about 2·log2(gap in seconds) zone look-ups, instead of
/// one per second of a gap that may be an hour or a day long.
fn first_whole_second_where(
    start: NaiveDateTime,
    holds: impl Fn(NaiveDateTime) -> bool,
) -> Option<NaiveDateTime> {
    let mut below = start;
    let mut step = TimeDelta::seconds(1);
    let above = loop {
        let probe = start.checked_add_signed(step)?;
        if holds(probe) {
            break probe;
        }
        below = probe;
        step = step * 2;
        if step > MAX_TRANSITION {
            return None;
        }
    };
    let (mut below, mut above) = (below, above);
    while (above - below).num_seconds() > 1 {
        let middle = below + TimeDelta::seconds((above - below).num_seconds() / 2);
        if holds(middle) {
            above = middle;
        } else {
            below = middle;
        }
    }
    Some(above)
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;
    use chrono_tz::{America, Europe};

    use super::*;

    fn naive(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, mo, d)
            .and_then(|date| date.and_hms_opt(h, mi, s))
            .expect("test dates are valid")
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        naive(y, mo, d, h, mi, s).and_utc()
    }

    #[test]
    fn a_known_zone_name_parses() {
        assert_eq!(parse_time_zone("Europe/Berlin"), Ok(Europe::Berlin));
        assert_eq!(parse_time_zone("UTC"), Ok(Tz::UTC));
    }

    #[test]
    fn an_unknown_zone_name_is_an_error_naming_it() {
        let error = parse_time_zone("Europe/Berln").expect_err("not a zone");
        assert_eq!(
            error,
            ScheduleError::UnknownTimeZone {
                name: "Europe/Berln".to_owned()
            }
        );
        assert!(error.to_string().contains("\"Europe/Berln\""), "{error}");
    }

    #[test]
    fn the_end_of_a_gap_is_found_to_the_second() {
        let end = gap_end(Europe::Berlin, naive(2026, 3, 29, 2, 30, 0));
        assert_eq!(end, Some(naive(2026, 3, 29, 3, 0, 0)));
    }

    #[test]
    fn a_time_in_a_gap_resolves_to_the_transition_instant() {
        let instant = first_instant_at_or_after(Europe::Berlin, naive(2026, 3, 29, 2, 0, 0));
        assert_eq!(instant, Some(utc(2026, 3, 29, 1, 0, 0)));
    }

    #[test]
    fn a_repeated_time_resolves_to_its_first_occurrence() {
        let instant = first_instant_at_or_after(America::New_York, naive(2026, 11, 1, 1, 30, 0));
        assert_eq!(instant, Some(utc(2026, 11, 1, 5, 30, 0)));
    }

    #[test]
    fn the_repeated_span_covers_the_whole_fold() {
        let local = naive(2026, 10, 25, 2, 17, 3);
        let MappedLocalTime::Ambiguous(first, second) = Europe::Berlin.from_local_datetime(&local)
        else {
            panic!("02:17 on 2026-10-25 is repeated in Berlin");
        };
        let span = repeated_span(Europe::Berlin, local, &first, &second);
        assert_eq!(
            span,
            Some((naive(2026, 10, 25, 2, 0, 0), naive(2026, 10, 25, 3, 0, 0)))
        );
    }
}
