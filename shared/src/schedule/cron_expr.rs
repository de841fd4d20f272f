//! [`CronExpr`]: a validated cron expression with crontab(5) semantics, kept with its source text.
//!
//! This module parses the five crontab fields (with an optional leading seconds field and an
//! optional trailing year) and the `@daily`-style shorthands, and finds the local wall-clock
//! times an expression matches by walking the calendar. Turning those into instants in a zone,
//! with upkeep's DST policy, is [`super::spec`]'s job. No IO.
//!
//! The matcher is our own rather than the `cron` crate's: that crate follows Quartz (day of
//! week 1 = Sunday, no 0, day-of-month AND day-of-week, no five-field lines), and translating
//! crontab lines into it would still leave the day-of-month / day-of-week rule to patch up.

mod field;

use std::fmt;
use std::str::FromStr;

use chrono::{Datelike, NaiveDate, NaiveDateTime, TimeDelta, Timelike};
use serde::{Deserialize, Serialize};

use self::field::{
    DAY_OF_MONTH, DAY_OF_WEEK, FieldSpec, HOUR, MINUTE, MONTH, SECOND, ValueSet, YEAR,
};
use super::ScheduleError;

/// A parsed cron expression with crontab(5) semantics.
///
/// Accepted forms:
/// - five fields, as in a crontab: `minute hour day-of-month month day-of-week`
///   (`30 2 * * 1-5`); the seconds are 0;
/// - six fields with a leading seconds field: `second minute hour day-of-month month
///   day-of-week` (`0 30 2 * * 1-5`);
/// - seven fields, the six plus a trailing year 1970–2100 (`0 0 12 1 1 * 2030`);
/// - the shorthands `@yearly` (= `@annually`), `@monthly`, `@weekly`, `@daily` (= `@midnight`)
///   and `@hourly`.
///
/// A field is a list (`1,15`) of `*`, values and ranges (`1-5`), each with an optional step
/// (`*/15`, `1-5/2`, `10/20` = `10-59/20`). Months and days of week also take three-letter names
/// (`Jan`, `Mon-Fri`), in any case. The day of week runs 0–7 where **both 0 and 7 are Sunday**
/// and 1 is Monday. `?` is accepted in the day fields as a synonym of `*`.
///
/// When both day-of-month and day-of-week are restricted, a day matches if **either** matches
/// (`0 0 1 * Mon` fires on the 1st and on every Monday). A day field that begins with `*`
/// (`*`, `*/2`) counts as unrestricted, as in Vixie cron and cronie, and the two then combine
/// with AND (`0 0 */2 * Mon` fires on Mondays with an odd day of month).
///
/// An expression that can never fire (`0 0 30 2 *`: there is no 30 February) is refused.
///
/// Serialises as its source text; deserialising parses and validates.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CronExpr {
    /// The expression as written (trimmed), for display and for the ledger.
    source: String,
    /// The parsed form, evaluated on naive (zone-less) local wall-clock times.
    fields: Fields,
}

/// How a schedule treats daylight-saving transitions; decided by its hour field.
///
/// See the module documentation of [`crate::schedule`] for the full rules and the reasoning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DstRule {
    /// The hour field names hours (`2`, `1-5`, `*/6`): the schedule is about times on the wall
    /// clock. A skipped time fires once at the first instant after the gap; a repeated time fires
    /// once, at its first occurrence.
    WallClock,
    /// The hour field is `*` (every hour): the schedule is a cadence, and follows real elapsed
    /// time. It fires at every instant at which the wall clock shows a matching time: a skipped
    /// time is never shown and does not fire, a repeated time is shown twice and fires twice.
    Cadence,
}

/// The seven fields as value sets, and how the two day fields combine.
#[derive(Debug, Clone)]
struct Fields {
    seconds: ValueSet,
    minutes: ValueSet,
    hours: ValueSet,
    days_of_month: ValueSet,
    months: ValueSet,
    /// Sunday is 0 (a 7 in the expression is stored as 0).
    days_of_week: ValueSet,
    /// Every year 1970–2100 when the expression has no year field.
    years: ValueSet,
    days: DayRule,
}

/// crontab(5)'s rule for the two day fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DayRule {
    /// At least one of the fields begins with `*`: a day must match both (so, in effect, the
    /// other one).
    Both,
    /// Both fields are restricted: a day matches if either does.
    Either,
}

/// The first and last years fire times are computed for.
pub(crate) const FIRST_YEAR: i32 = 1970;
pub(crate) const LAST_YEAR: i32 = 2100;

impl CronExpr {
    /// Parses and validates a cron expression (five fields, six with seconds, seven with a
    /// year, or a shorthand; see [`CronExpr`]).
    ///
    /// This is also the check that an expression can fire at all: one whose day-of-month,
    /// month, day-of-week and year fields admit no date between 1970 and 2100 is refused.
    ///
    /// # Errors
    /// [`ScheduleError::InvalidCron`], naming the expression, when it has the wrong number of
    /// fields, a field that is malformed or out of range (naming the field and its range), or
    /// when it can never fire (the reason then begins with "can never fire").
    pub fn parse(expr: &str) -> Result<Self, ScheduleError> {
        let source = expr.trim();
        let invalid = |reason: String| ScheduleError::InvalidCron {
            expr: expr.to_owned(),
            reason,
        };
        let expanded = expand_shorthand(source).map_err(invalid)?;
        let texts: Vec<&str> = expanded.split_whitespace().collect();
        let (seconds, rest) = match texts.len() {
            5 => ("0", &texts[..]),
            6 | 7 => (texts[0], &texts[1..]),
            n_fields => {
                return Err(invalid(format!(
                    "expected 5 fields (minute hour day-of-month month day-of-week), 6 with a \
                     leading second, or 7 with a trailing year; found {n_fields}"
                )));
            }
        };
        let fields = Fields::parse(seconds, rest).map_err(invalid)?;
        let cron = Self {
            source: source.to_owned(),
            fields,
        };
        if cron.first_local_match().is_none() {
            return Err(invalid(cron.never_fires_reason(rest)));
        }
        Ok(cron)
    }

    /// The expression as written (without surrounding whitespace).
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// How this expression behaves across daylight-saving transitions.
    #[must_use]
    pub fn dst_rule(&self) -> DstRule {
        if self.fields.hours.holds_all(HOUR.min, HOUR.max) {
            DstRule::Cadence
        } else {
            DstRule::WallClock
        }
    }

    /// Whether the expression matches the local wall-clock time `local` (a whole second).
    #[must_use]
    pub fn matches_local(&self, local: NaiveDateTime) -> bool {
        self.next_local_at_or_after(local) == Some(truncate_to_second(local))
    }

    /// The first local wall-clock time strictly after `local` that the expression matches, or
    /// `None` when there is none before the end of 2100.
    pub(crate) fn next_local_after(&self, local: NaiveDateTime) -> Option<NaiveDateTime> {
        let next_second = truncate_to_second(local).checked_add_signed(TimeDelta::seconds(1))?;
        self.fields.next_at_or_after(next_second)
    }

    /// The first local time at or after `local` (a whole second) that the expression matches.
    pub(crate) fn next_local_at_or_after(&self, local: NaiveDateTime) -> Option<NaiveDateTime> {
        self.fields.next_at_or_after(truncate_to_second(local))
    }

    /// The first local time the expression matches in the years fire times are computed for.
    fn first_local_match(&self) -> Option<NaiveDateTime> {
        let start = NaiveDate::from_ymd_opt(FIRST_YEAR, 1, 1)?.and_hms_opt(0, 0, 0)?;
        self.fields.next_at_or_after(start)
    }

    /// Why no date matches: the day fields (and the year field when there is one) as written.
    fn never_fires_reason(&self, texts: &[&str]) -> String {
        let (day_of_month, month, day_of_week) = (texts[2], texts[3], texts[4]);
        let mut reason =
            format!("can never fire: no date has day-of-month {day_of_month:?} in month {month:?}");
        if !self.fields.days_of_week.holds_all(0, 6) {
            reason.push_str(&format!(" on day-of-week {day_of_week:?}"));
        }
        match texts.get(5) {
            Some(year) => reason.push_str(&format!(" in year {year:?}")),
            None => reason.push_str(&format!(" between {FIRST_YEAR} and {LAST_YEAR}")),
        }
        reason
    }
}

impl Fields {
    /// `rest` is minute, hour, day-of-month, month, day-of-week and perhaps year.
    fn parse(seconds: &str, rest: &[&str]) -> Result<Self, String> {
        let days = if FieldSpec::is_star(rest[2]) || FieldSpec::is_star(rest[4]) {
            DayRule::Both
        } else {
            DayRule::Either
        };
        Ok(Self {
            seconds: SECOND.parse(seconds)?,
            minutes: MINUTE.parse(rest[0])?,
            hours: HOUR.parse(rest[1])?,
            days_of_month: DAY_OF_MONTH.parse(rest[2])?,
            months: MONTH.parse(rest[3])?,
            days_of_week: DAY_OF_WEEK.parse(rest[4])?,
            years: match rest.get(5) {
                Some(years) => YEAR.parse(years)?,
                None => ValueSet::full(&YEAR),
            },
            days,
        })
    }

    fn matches_day(&self, date: NaiveDate) -> bool {
        let day_of_month = self.days_of_month.contains(date.day());
        let day_of_week = self
            .days_of_week
            .contains(date.weekday().num_days_from_sunday());
        match self.days {
            DayRule::Both => day_of_month && day_of_week,
            DayRule::Either => day_of_month || day_of_week,
        }
    }

    /// The first whole-second local time at or after `start` (a whole second) that matches.
    ///
    /// Walks years, months and days, skipping whole units that cannot match, then finds the
    /// time of day on the first matching day. A year without a match costs at most 366 cheap
    /// day tests, so even an expression whose next match is decades away is found quickly.
    fn next_at_or_after(&self, start: NaiveDateTime) -> Option<NaiveDateTime> {
        let midnight = |date: NaiveDate| (date, (0, 0, 0));
        let (mut date, mut time) = (start.date(), (start.hour(), start.minute(), start.second()));
        if date.year() < FIRST_YEAR {
            (date, time) = midnight(NaiveDate::from_ymd_opt(FIRST_YEAR, 1, 1)?);
        }
        loop {
            let year = date.year();
            if year > LAST_YEAR {
                return None;
            }
            let year_value = u32::try_from(year).ok()?;
            if !self.years.contains(year_value) {
                let next_year = self.years.next_at_or_after(year_value + 1)?;
                (date, time) = midnight(NaiveDate::from_ymd_opt(
                    i32::try_from(next_year).ok()?,
                    1,
                    1,
                )?);
                continue;
            }
            if !self.months.contains(date.month()) {
                (date, time) = midnight(match self.months.next_at_or_after(date.month() + 1) {
                    Some(month) => NaiveDate::from_ymd_opt(year, month, 1)?,
                    None => NaiveDate::from_ymd_opt(year + 1, 1, 1)?,
                });
                continue;
            }
            if self.matches_day(date)
                && let Some((hour, minute, second)) = self.time_at_or_after(time)
            {
                return date.and_hms_opt(hour, minute, second);
            }
            (date, time) = midnight(date.succ_opt()?);
        }
    }

    /// The first matching time of day at or after `(hour, minute, second)`, on the same day.
    fn time_at_or_after(&self, (hour, minute, second): (u32, u32, u32)) -> Option<(u32, u32, u32)> {
        if self.hours.contains(hour) {
            if self.minutes.contains(minute)
                && let Some(second) = self.seconds.next_at_or_after(second)
                && second <= SECOND.max
            {
                return Some((hour, minute, second));
            }
            if let Some(minute) = self.minutes.next_at_or_after(minute + 1)
                && minute <= MINUTE.max
            {
                return Some((hour, minute, self.seconds.first()));
            }
        }
        let hour = self.hours.next_at_or_after(hour + 1)?;
        (hour <= HOUR.max).then(|| (hour, self.minutes.first(), self.seconds.first()))
    }
}

/// `@daily` and friends as the five-field lines they stand for; anything else unchanged.
fn expand_shorthand(source: &str) -> Result<&str, String> {
    if !source.starts_with('@') {
        return Ok(source);
    }
    match source.to_ascii_lowercase().as_str() {
        "@yearly" | "@annually" => Ok("0 0 1 1 *"),
        "@monthly" => Ok("0 0 1 * *"),
        "@weekly" => Ok("0 0 * * 0"),
        "@daily" | "@midnight" => Ok("0 0 * * *"),
        "@hourly" => Ok("0 * * * *"),
        _ => Err(format!(
            "unknown shorthand {source:?} (expected @yearly, @annually, @monthly, @weekly, \
             @daily, @midnight or @hourly)"
        )),
    }
}

fn truncate_to_second(local: NaiveDateTime) -> NaiveDateTime {
    // Setting the nanoseconds to zero is always valid.
    local.with_nanosecond(0).unwrap_or(local)
}

impl fmt::Display for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl fmt::Debug for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("CronExpr").field(&self.source).finish()
    }
}

/// Two expressions are equal when they were written the same way.
impl PartialEq for CronExpr {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for CronExpr {}

impl FromStr for CronExpr {
    type Err = ScheduleError;

    fn from_str(expr: &str) -> Result<Self, Self::Err> {
        Self::parse(expr)
    }
}

impl TryFrom<String> for CronExpr {
    type Error = ScheduleError;

    fn try_from(expr: String) -> Result<Self, Self::Error> {
        Self::parse(&expr)
    }
}

impl From<CronExpr> for String {
    fn from(expr: CronExpr) -> Self {
        expr.source
    }
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;

    fn naive(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> NaiveDateTime {
        NaiveDate::from_ymd_opt(y, mo, d)
            .and_then(|date| date.and_hms_opt(h, mi, s))
            .expect("test dates are valid")
    }

    fn reason(expr: &str) -> String {
        match CronExpr::parse(expr) {
            Err(ScheduleError::InvalidCron {
                expr: named,
                reason,
            }) => {
                assert_eq!(named, expr, "the error names the input");
                reason
            }
            other => panic!("{expr:?} should be invalid, got {other:?}"),
        }
    }

    #[test]
    fn a_six_field_expression_parses_and_keeps_its_source() {
        let expr = CronExpr::parse("  0 30 2 * * *  ").expect("valid");
        assert_eq!(expr.as_str(), "0 30 2 * * *");
        assert_eq!(expr.to_string(), "0 30 2 * * *");
    }

    #[test]
    fn a_seven_field_expression_with_a_year_parses() {
        let expr = CronExpr::parse("0 0 12 1 1 * 2030").expect("valid");
        assert_eq!(
            expr.next_local_after(naive(2026, 6, 1, 0, 0, 0)),
            Some(naive(2030, 1, 1, 12, 0, 0))
        );
    }

    #[test]
    fn a_shorthand_parses() {
        let expr = CronExpr::parse("@daily").expect("valid");
        assert_eq!(
            expr.next_local_after(naive(2026, 6, 1, 10, 0, 0)),
            Some(naive(2026, 6, 2, 0, 0, 0))
        );
    }

    #[test]
    fn an_expression_with_too_few_or_too_many_fields_is_rejected() {
        assert!(reason("* * * * * * * *").contains("found 8"), "8 fields");
        let four = reason("2 * * *");
        assert!(four.contains("expected 5 fields"), "{four}");
        assert!(four.contains("found 4"), "{four}");
    }

    #[test]
    fn an_out_of_range_field_is_rejected_naming_the_expression() {
        let error = CronExpr::parse("61 * * * * *").expect_err("61 is not a second");
        let message = error.to_string();
        assert!(
            message.starts_with("invalid cron expression \"61 * * * * *\": "),
            "{message}"
        );
        assert!(
            message.contains("second field \"61\": 61 is out of range 0-59"),
            "{message}"
        );
        assert!(!message.contains('\n'), "one line: {message}");
    }

    #[test]
    fn out_of_range_values_name_their_field_and_range() {
        for (expr, expected) in [
            (
                "60 * * * * *",
                "second field \"60\": 60 is out of range 0-59",
            ),
            (
                "0 0-60 * * * *",
                "minute field \"0-60\": 60 is out of range 0-59",
            ),
            (
                "0 0 1,24 * * *",
                "hour field \"1,24\": 24 is out of range 0-23",
            ),
            (
                "0 0 0 0 * *",
                "day-of-month field \"0\": 0 is out of range 1-31",
            ),
            (
                "0 0 0 1 13 *",
                "month field \"13\": 13 is out of range 1-12",
            ),
            (
                "0 0 0 * * 8",
                "day-of-week field \"8\": 8 is out of range 0-7",
            ),
            (
                "0 0 * * 8",
                "day-of-week field \"8\": 8 is out of range 0-7",
            ),
            ("60 * * * *", "minute field \"60\": 60 is out of range 0-59"),
            (
                "0 0 0 1 1 * 2101",
                "year field \"2101\": 2101 is out of range 1970-2100",
            ),
            (
                "*/0 * * * * *",
                "second field \"*/0\": a step of 0 never advances",
            ),
        ] {
            let message = reason(expr);
            assert!(message.contains(expected), "{expr}: {message}");
        }
        // In range, with steps, lists and names: accepted.
        for expr in [
            "59 59 23 31 12 7",
            "*/15 0-59/5 1,2,3 * JAN-DEC MON-FRI",
            "0 0 * * 0-7",
        ] {
            CronExpr::parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
        }
    }

    #[test]
    fn an_empty_expression_is_rejected() {
        assert!(reason("").contains("found 0"));
    }

    #[test]
    fn day_of_week_names_are_the_safe_way_to_say_monday() {
        let expr = CronExpr::parse("0 0 5 * * Mon").expect("valid");
        // 2026-06-01 is a Monday.
        assert_eq!(
            expr.next_local_after(naive(2026, 5, 30, 0, 0, 0)),
            Some(naive(2026, 6, 1, 5, 0, 0))
        );
    }

    /// The weekdays (Monday = 1 … Sunday = 7) of the next `n` matches after `from`.
    fn weekdays(expr: &str, from: NaiveDateTime, n: usize) -> Vec<u32> {
        let expr = CronExpr::parse(expr).unwrap_or_else(|e| panic!("{e}"));
        std::iter::successors(expr.next_local_after(from), |&at| expr.next_local_after(at))
            .take(n)
            .map(|at| at.weekday().number_from_monday())
            .collect()
    }

    #[test]
    fn one_to_five_in_the_day_of_week_field_is_monday_to_friday() {
        // Issue #20: under the Quartz numbering this fired on Sundays and never on Fridays.
        // 2026-11-29 is a Sunday.
        let from = naive(2026, 11, 29, 0, 0, 0);
        assert_eq!(
            weekdays("0 30 2 * * 1-5", from, 10),
            [1, 2, 3, 4, 5, 1, 2, 3, 4, 5]
        );
        assert_eq!(weekdays("30 2 * * Mon-Fri", from, 5), [1, 2, 3, 4, 5]);
        let expr = CronExpr::parse("0 30 2 * * 1-5").expect("valid");
        assert_eq!(
            expr.next_local_after(from),
            Some(naive(2026, 11, 30, 2, 30, 0)),
            "the first fire is Monday 30 November, not Sunday 29 November"
        );
    }

    #[test]
    fn seven_and_zero_in_the_day_of_week_field_are_both_sunday() {
        // Issue #20: `7` fired on Saturdays and `0` was refused.
        let from = naive(2026, 11, 24, 0, 0, 0);
        for expr in ["0 0 4 * * 7", "0 0 4 * * 0", "0 4 * * Sun", "0 4 * * 7"] {
            assert_eq!(weekdays(expr, from, 4), [7, 7, 7, 7], "{expr}");
            let cron = CronExpr::parse(expr).expect("valid");
            assert_eq!(
                cron.next_local_after(from),
                Some(naive(2026, 11, 29, 4, 0, 0)),
                "{expr}: Sunday 29 November"
            );
        }
        assert_eq!(weekdays("0 0 * * 6-7", from, 4), [6, 7, 6, 7]);
    }

    #[test]
    fn a_restricted_day_of_month_and_day_of_week_fire_when_either_matches() {
        // Issue #20: this fired only when the 1st was a Monday. 2026-12-01 is a Tuesday.
        let expr = CronExpr::parse("0 0 0 1 * Mon").expect("valid");
        let fires: Vec<NaiveDateTime> =
            std::iter::successors(expr.next_local_after(naive(2026, 11, 29, 0, 0, 0)), |&at| {
                expr.next_local_after(at)
            })
            .take(6)
            .collect();
        assert_eq!(
            fires,
            [
                naive(2026, 11, 30, 0, 0, 0), // Monday
                naive(2026, 12, 1, 0, 0, 0),  // the 1st, a Tuesday
                naive(2026, 12, 7, 0, 0, 0),  // Monday
                naive(2026, 12, 14, 0, 0, 0),
                naive(2026, 12, 21, 0, 0, 0),
                naive(2026, 12, 28, 0, 0, 0),
            ]
        );
    }

    #[test]
    fn a_day_field_beginning_with_a_star_combines_with_the_other_by_and() {
        // As in Vixie cron and cronie: `*/2` counts as unrestricted, so the day must also be a
        // Monday. Mondays with an odd day of month after 2026-11-29: 7, 21 December, 11 January.
        let expr = CronExpr::parse("0 0 */2 * Mon").expect("valid");
        let fires: Vec<NaiveDateTime> =
            std::iter::successors(expr.next_local_after(naive(2026, 11, 29, 0, 0, 0)), |&at| {
                expr.next_local_after(at)
            })
            .take(3)
            .collect();
        assert_eq!(
            fires,
            [
                naive(2026, 12, 7, 0, 0, 0),
                naive(2026, 12, 21, 0, 0, 0),
                naive(2027, 1, 11, 0, 0, 0),
            ]
        );
        // Only Mondays: `*` and `?` in the day-of-month field change nothing.
        for expr in ["0 0 * * Mon", "0 0 0 ? * Mon"] {
            assert_eq!(weekdays(expr, naive(2026, 11, 29, 0, 0, 0), 3), [1, 1, 1]);
        }
    }

    #[test]
    fn a_five_field_crontab_line_is_accepted_with_seconds_zero() {
        // Issue #20: the checklist's own form was refused.
        let five = CronExpr::parse("0 2 * * *").expect("a crontab line");
        assert_eq!(five.as_str(), "0 2 * * *");
        assert_eq!(
            five.next_local_after(naive(2026, 11, 29, 10, 0, 0)),
            Some(naive(2026, 11, 30, 2, 0, 0))
        );
        let six = CronExpr::parse("0 0 2 * * *").expect("the same line with seconds");
        let mut at = naive(2026, 11, 1, 0, 0, 0);
        for _ in 0..40 {
            let next = five.next_local_after(at);
            assert_eq!(next, six.next_local_after(at));
            at = next.expect("daily");
        }
        assert_eq!(five.dst_rule(), DstRule::WallClock);
        assert_eq!(
            CronExpr::parse("*/5 * * * *").expect("valid").dst_rule(),
            DstRule::Cadence
        );
    }

    #[test]
    fn every_shorthand_means_its_crontab_line() {
        let from = naive(2026, 11, 29, 10, 11, 12);
        for (shorthand, line) in [
            ("@yearly", "0 0 1 1 *"),
            ("@annually", "0 0 1 1 *"),
            ("@monthly", "0 0 1 * *"),
            ("@weekly", "0 0 * * 0"),
            ("@daily", "0 0 * * *"),
            ("@midnight", "0 0 * * *"),
            ("@hourly", "0 * * * *"),
            ("@HOURLY", "0 * * * *"),
        ] {
            let shorthand_expr = CronExpr::parse(shorthand).expect("valid");
            let line_expr = CronExpr::parse(line).expect("valid");
            assert_eq!(shorthand_expr.as_str(), shorthand);
            let mut at = from;
            for _ in 0..5 {
                let next = shorthand_expr.next_local_after(at);
                assert_eq!(next, line_expr.next_local_after(at), "{shorthand}");
                at = next.expect("fires");
            }
        }
        let weekly = CronExpr::parse("@weekly").expect("valid");
        assert_eq!(
            weekly.next_local_after(from),
            Some(naive(2026, 12, 6, 0, 0, 0)),
            "Sunday midnight"
        );
        assert!(reason("@reboot").contains("unknown shorthand \"@reboot\""));
    }

    #[test]
    fn an_expression_that_can_never_fire_is_refused() {
        for (expr, expected) in [
            (
                "0 0 30 2 *",
                "can never fire: no date has day-of-month \"30\" in month \"2\" between 1970 and 2100",
            ),
            (
                "0 0 0 31 4,6,9,11 *",
                "can never fire: no date has day-of-month \"31\" in month \"4,6,9,11\"",
            ),
            (
                "0 0 0 29 Feb * 2027",
                "can never fire: no date has day-of-month \"29\" in month \"Feb\" in year \"2027\"",
            ),
            (
                "0 0 0 */40 2 Mon 2028",
                "no date has day-of-month \"*/40\" in month \"2\" on day-of-week \"Mon\" in year \"2028\"",
            ),
        ] {
            let message = reason(expr);
            assert!(message.contains(expected), "{expr}: {message}");
        }
        // Rare but possible: 29 February (leap years), the 31st (some months), and a restricted
        // day of week, which makes any day of month possible.
        for expr in [
            "0 0 29 2 *",
            "0 0 31 * *",
            "0 0 30 2 Mon",
            "0 0 0 29 2 * 2028",
        ] {
            CronExpr::parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
        }
        let leap = CronExpr::parse("0 0 29 2 *").expect("valid");
        assert_eq!(
            leap.next_local_after(naive(2026, 11, 29, 0, 0, 0)),
            Some(naive(2028, 2, 29, 0, 0, 0))
        );
    }

    #[test]
    fn matches_are_found_decades_ahead_and_end_with_2100() {
        // `*/40` is the 1st only, and ANDed with Monday: 1 February 2027, then 2038.
        let expr = CronExpr::parse("0 0 */40 2 Mon").expect("valid");
        assert_eq!(
            expr.next_local_after(naive(2026, 11, 29, 0, 0, 0)),
            Some(naive(2027, 2, 1, 0, 0, 0))
        );
        assert_eq!(
            expr.next_local_after(naive(2027, 2, 1, 0, 0, 0)),
            Some(naive(2038, 2, 1, 0, 0, 0))
        );
        let daily = CronExpr::parse("@daily").expect("valid");
        assert_eq!(daily.next_local_after(naive(2100, 12, 31, 0, 0, 0)), None);
        assert_eq!(
            daily.next_local_after(naive(1900, 6, 1, 0, 0, 0)),
            Some(naive(1970, 1, 1, 0, 0, 0))
        );
    }

    #[test]
    fn a_fractional_start_moves_to_the_next_whole_second() {
        let every_second = CronExpr::parse("* * * * * *").expect("valid");
        let start = naive(2026, 6, 1, 23, 59, 59) + TimeDelta::milliseconds(300);
        assert_eq!(
            every_second.next_local_after(start),
            Some(naive(2026, 6, 2, 0, 0, 0))
        );
        assert_eq!(
            every_second.next_local_at_or_after(naive(2026, 6, 1, 23, 59, 59)),
            Some(naive(2026, 6, 1, 23, 59, 59))
        );
    }

    #[test]
    fn the_hour_field_decides_the_dst_rule() {
        let rule = |expr: &str| CronExpr::parse(expr).expect("valid").dst_rule();
        assert_eq!(rule("*/10 * * * * *"), DstRule::Cadence);
        assert_eq!(rule("0 0 * * * *"), DstRule::Cadence);
        assert_eq!(rule("0 30 2 * * *"), DstRule::WallClock);
        assert_eq!(rule("0 0 */2 * * *"), DstRule::WallClock);
        assert_eq!(rule("@daily"), DstRule::WallClock);
    }

    #[test]
    fn serde_round_trips_through_the_source_text() {
        let expr = CronExpr::parse("0 */15 * * * *").expect("valid");
        let json = serde_json::to_string(&expr).expect("serialises");
        assert_eq!(json, "\"0 */15 * * * *\"");
        let back: CronExpr = serde_json::from_str(&json).expect("deserialises");
        assert_eq!(back, expr);
        let error = serde_json::from_str::<CronExpr>("\"0 2 * *\"").expect_err("4 fields");
        assert!(error.to_string().contains("0 2 * *"), "{error}");
    }
}
