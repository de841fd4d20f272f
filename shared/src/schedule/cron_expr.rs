//! [`CronExpr`]: a validated cron expression with seconds, kept with its source text.
//!
//! Parsing and field matching are the `cron` crate's; this module adds clear errors and the list
//! of local wall-clock times an expression matches. Turning those into instants in a zone is
//! [`super::spec`]'s job. No IO.

use std::fmt;
use std::str::FromStr;

use chrono::{NaiveDateTime, TimeDelta};
use cron::{Schedule, TimeUnitSpec};
use serde::{Deserialize, Serialize};

use super::ScheduleError;

/// A parsed cron expression: `sec min hour day-of-month month day-of-week [year]`.
///
/// Six fields, or seven with a trailing year (1970–2100), or one of the shorthands `@yearly`,
/// `@monthly`, `@weekly`, `@daily`, `@hourly`. Fields take `*`, `?` (day fields), lists `1,15`,
/// ranges `1-5`, steps `*/10`, and names (`Jan`, `Mon`).
///
/// Beware the numeric day of week: it counts from **1 = Sunday** to 7 = Saturday (the `cron`
/// crate follows Quartz, not Vixie cron where 1 = Monday and 0 = Sunday). Prefer names:
/// `0 0 5 * * Mon`.
///
/// Serialises as its source text; deserialising parses and validates.
#[derive(Clone, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct CronExpr {
    /// The expression as written (trimmed), for display and for the ledger.
    source: String,
    /// The parsed form, evaluated on naive (zone-less) local wall-clock times.
    schedule: Schedule,
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

impl CronExpr {
    /// Parses and validates a cron expression with seconds.
    ///
    /// # Errors
    /// [`ScheduleError::InvalidCron`], naming the expression, when it has the wrong number of
    /// fields or a field the `cron` crate rejects.
    pub fn parse(expr: &str) -> Result<Self, ScheduleError> {
        let source = expr.trim();
        let invalid = |reason: String| ScheduleError::InvalidCron {
            expr: expr.to_owned(),
            reason,
        };
        if !source.starts_with('@') {
            let n_fields = source.split_whitespace().count();
            if n_fields == 5 {
                return Err(invalid(format!(
                    "expected 6 fields (second minute hour day-of-month month day-of-week) \
                     and an optional year, found 5; add a seconds field, e.g. \"0 {source}\""
                )));
            }
            if !(6..=7).contains(&n_fields) {
                return Err(invalid(format!(
                    "expected 6 fields (second minute hour day-of-month month day-of-week) \
                     and an optional year, found {n_fields}"
                )));
            }
        }
        if !source.starts_with('@') {
            check_ranges(source).map_err(invalid)?;
        }
        let schedule = Schedule::from_str(source).map_err(|error| invalid(reason_of(&error)))?;
        Ok(Self {
            source: source.to_owned(),
            schedule,
        })
    }

    /// The expression as written (without surrounding whitespace).
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// How this expression behaves across daylight-saving transitions.
    #[must_use]
    pub fn dst_rule(&self) -> DstRule {
        if self.schedule.hours().is_all() {
            DstRule::Cadence
        } else {
            DstRule::WallClock
        }
    }

    /// The first local wall-clock time strictly after `local` that the expression matches, or
    /// `None` when there is none before the end of 2100.
    ///
    /// The evaluation is on naive times: the `cron` crate is given UTC, which has neither gaps nor
    /// folds, so it walks the calendar fields and nothing else.
    pub(crate) fn next_local_after(&self, local: NaiveDateTime) -> Option<NaiveDateTime> {
        self.schedule
            .after(&local.and_utc())
            .next()
            .map(|matched| matched.naive_utc())
    }

    /// The first local time at or after `local` (a whole second) that the expression matches.
    pub(crate) fn next_local_at_or_after(&self, local: NaiveDateTime) -> Option<NaiveDateTime> {
        self.next_local_after(local.checked_sub_signed(TimeDelta::seconds(1))?)
    }
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

/// The fields in order, with their ranges as the `cron` crate accepts them.
const FIELDS: [(&str, u32, u32); 7] = [
    ("second", 0, 59),
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 1, 7),
    ("year", 1970, 2100),
];

/// Checks every number of every field against its range, so an out-of-range value is reported
/// by field name and range (the `cron` crate's own message for `60` in the seconds field says
/// "Seconds must be less than 59", which is wrong). Names (`MON`, `JAN`), `*`, `?` and `L`
/// are left to the crate.
fn check_ranges(source: &str) -> Result<(), String> {
    for (text, (name, min, max)) in source.split_whitespace().zip(FIELDS) {
        for part in text.split(',') {
            let (range, step) = match part.split_once('/') {
                Some((range, step)) => (range, Some(step)),
                None => (part, None),
            };
            if let Some(step) = step
                && let Ok(step) = step.parse::<u32>()
                && step == 0
            {
                return Err(format!("{name} field {text:?}: a step of 0 never advances"));
            }
            for value in range.split('-') {
                if let Ok(value) = value.parse::<u32>()
                    && !(min..=max).contains(&value)
                {
                    return Err(format!(
                        "{name} field {text:?}: {value} is out of range {min}-{max}"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The `cron` crate's error text is the expression, a caret line and (sometimes) a sentence.
/// Keep the sentence, or the caret's column when there is none, so messages stay on one line.
fn reason_of(error: &cron::error::Error) -> String {
    let text = error.to_string();
    let lines: Vec<&str> = text.lines().collect();
    if let Some(sentence) = lines.get(2..).and_then(|rest| {
        let joined = rest.join(" ");
        let joined = joined.trim().to_owned();
        (!joined.is_empty()).then_some(joined)
    }) {
        return sentence;
    }
    match lines.get(1).and_then(|caret| caret.find('^')) {
        Some(column) => format!("syntax error at column {}", column + 1),
        None => "syntax error".to_owned(),
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
    fn a_five_field_expression_is_rejected_with_a_hint_to_add_seconds() {
        let reason = reason("30 2 * * *");
        assert!(reason.contains("found 5"), "{reason}");
        assert!(reason.contains("\"0 30 2 * * *\""), "{reason}");
    }

    #[test]
    fn an_expression_with_too_many_fields_is_rejected() {
        assert!(reason("* * * * * * * *").contains("found 8"));
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
                "day-of-week field \"8\": 8 is out of range 1-7",
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
        for expr in ["59 59 23 31 12 7", "*/15 0-59/5 1,2,3 * JAN-DEC MON-FRI"] {
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

    #[test]
    fn numeric_day_of_week_one_is_sunday() {
        let expr = CronExpr::parse("0 0 5 * * 1").expect("valid");
        // 2026-05-31 is a Sunday.
        assert_eq!(
            expr.next_local_after(naive(2026, 5, 30, 0, 0, 0)),
            Some(naive(2026, 5, 31, 5, 0, 0))
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
        let error = serde_json::from_str::<CronExpr>("\"0 0 2 * *\"").expect_err("5 fields");
        assert!(error.to_string().contains("0 0 2 * *"), "{error}");
    }
}
