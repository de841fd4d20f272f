//! One field of a cron expression: crontab(5)'s grammar for a field, parsed into a set of values.
//!
//! A field is a comma-separated list of elements; an element is `*`, a value, or a range `a-b`,
//! each optionally followed by a step `/n`, and a value is a number or (months, days of week) a
//! three-letter English name. [`super::CronExpr`] combines the seven fields and walks the
//! calendar; this module knows nothing about dates. No IO.

/// What one field accepts: its name in messages, its range, and its names if it has any.
#[derive(Debug)]
pub(super) struct FieldSpec {
    /// The field's name in error messages (`day-of-week`).
    pub(super) name: &'static str,
    /// The smallest value.
    pub(super) min: u32,
    /// The largest value (7 for day-of-week, where 7 is another way to write Sunday).
    pub(super) max: u32,
    /// Names and their values (`jan` = 1, `sun` = 0), matched case-insensitively.
    names: &'static [(&'static str, u32)],
    /// Whether `?` (a synonym of `*`, for expressions written for Quartz) is accepted.
    allows_question_mark: bool,
}

/// The set of values one field matches, as a bit set: bit `value - base` for each value.
///
/// Never empty once parsed: every element of a field contributes at least its first value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ValueSet {
    base: u32,
    bits: [u64; 3],
}

pub(super) const SECOND: FieldSpec = FieldSpec::numeric("second", 0, 59);
pub(super) const MINUTE: FieldSpec = FieldSpec::numeric("minute", 0, 59);
pub(super) const HOUR: FieldSpec = FieldSpec::numeric("hour", 0, 23);
pub(super) const DAY_OF_MONTH: FieldSpec = FieldSpec {
    allows_question_mark: true,
    ..FieldSpec::numeric("day-of-month", 1, 31)
};
pub(super) const MONTH: FieldSpec = FieldSpec {
    names: &[
        ("jan", 1),
        ("feb", 2),
        ("mar", 3),
        ("apr", 4),
        ("may", 5),
        ("jun", 6),
        ("jul", 7),
        ("aug", 8),
        ("sep", 9),
        ("oct", 10),
        ("nov", 11),
        ("dec", 12),
    ],
    ..FieldSpec::numeric("month", 1, 12)
};
pub(super) const DAY_OF_WEEK: FieldSpec = FieldSpec {
    names: &[
        ("sun", 0),
        ("mon", 1),
        ("tue", 2),
        ("wed", 3),
        ("thu", 4),
        ("fri", 5),
        ("sat", 6),
    ],
    allows_question_mark: true,
    ..FieldSpec::numeric("day-of-week", 0, 7)
};
/// The years fire times are computed for; the optional seventh field must stay inside them.
pub(super) const YEAR: FieldSpec = FieldSpec::numeric("year", 1970, 2100);

impl FieldSpec {
    const fn numeric(name: &'static str, min: u32, max: u32) -> Self {
        Self {
            name,
            min,
            max,
            names: &[],
            allows_question_mark: false,
        }
    }

    /// Parses `text`, one field of an expression, into the set of values it matches.
    ///
    /// `*` is the whole range and `?` its synonym in the day fields; `a-b` runs from `a` to `b`
    /// inclusive and must not run backwards; `/n` keeps every n-th value of what it follows,
    /// starting with the first (`a/n` runs from `a` to the end of the range, Saturday for the
    /// day of week, as `*` does). In the
    /// day-of-week field 7 is Sunday like 0, and `Sun` at the end of a range means 7, so
    /// `Fri-Sun` is Friday to Sunday.
    ///
    /// # Errors
    /// A one-line message naming this field, the field's text and what is wrong.
    pub(super) fn parse(&self, text: &str) -> Result<ValueSet, String> {
        let mut set = ValueSet::empty(self.base());
        for element in text.split(',') {
            self.parse_element(text, element, &mut set)?;
        }
        Ok(set)
    }

    /// Whether `text` counts as unrestricted for crontab's day-of-month / day-of-week rule:
    /// like Vixie cron and cronie, a field that begins with `*` (or `?`), so `*/2` too.
    pub(super) fn is_star(text: &str) -> bool {
        text.starts_with('*') || text.starts_with('?')
    }

    fn parse_element(&self, text: &str, element: &str, set: &mut ValueSet) -> Result<(), String> {
        let name = self.name;
        let fail = |what: String| Err(format!("{name} field {text:?}: {what}"));
        if element.is_empty() {
            return fail("an element of the list is empty".to_owned());
        }
        let (range, step) = match element.split_once('/') {
            Some((range, step)) => (range, Some(self.parse_step(text, step)?)),
            None => (element, None),
        };
        let (first, last) = match range {
            "*" => (self.min, self.star_max()),
            "?" if self.allows_question_mark => {
                if step.is_some() {
                    return fail("\"?\" takes no step".to_owned());
                }
                (self.min, self.star_max())
            }
            "?" => {
                return fail(
                    "\"?\" is only allowed in the day-of-month and day-of-week fields".to_owned(),
                );
            }
            _ => match range.split_once('-') {
                Some((first, last)) => {
                    let first = self.parse_value(text, first, Bound::Start)?;
                    let last = self.parse_value(text, last, Bound::End)?;
                    if first > last {
                        return fail(format!(
                            "the range {range} runs backwards (write it as a list, such as {})",
                            self.wrapped_hint(first, last)
                        ));
                    }
                    (first, last)
                }
                None => {
                    let value = self.parse_value(text, range, Bound::Start)?;
                    // `a/n` runs to where `*` ends; a lone `a` is just `a`.
                    (
                        value,
                        if step.is_some() {
                            self.star_max()
                        } else {
                            value
                        },
                    )
                }
            },
        };
        let step = step.unwrap_or(1);
        let mut value = first;
        while value <= last {
            set.insert(self.fold(value));
            // A step larger than the range ends the walk instead of overflowing.
            let Some(next) = value.checked_add(step) else {
                break;
            };
            value = next;
        }
        Ok(())
    }

    fn parse_step(&self, text: &str, step: &str) -> Result<u32, String> {
        let name = self.name;
        if step.is_empty() || !step.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(format!(
                "{name} field {text:?}: the step {step:?} is not a positive number"
            ));
        }
        match step.parse::<u32>() {
            Ok(0) => Err(format!("{name} field {text:?}: a step of 0 never advances")),
            Ok(step) => Ok(step),
            // More digits than a u32 holds: larger than any range, so it keeps the first value.
            Err(_) => Ok(u32::MAX),
        }
    }

    fn parse_value(&self, text: &str, token: &str, bound: Bound) -> Result<u32, String> {
        let (name, min, max) = (self.name, self.min, self.max);
        if !token.is_empty() && token.bytes().all(|byte| byte.is_ascii_digit()) {
            return match token.parse::<u32>() {
                Ok(value) if (min..=max).contains(&value) => Ok(value),
                _ => Err(format!(
                    "{name} field {text:?}: {token} is out of range {min}-{max}"
                )),
            };
        }
        let lower = token.to_ascii_lowercase();
        if let Some(&(_, value)) = self.names.iter().find(|(known, _)| *known == lower) {
            // `Sun` ending a range is the 7 of `Fri-7`, so `Fri-Sun` runs forwards.
            let is_sunday_ending_a_range = self.max == 7 && value == 0 && bound == Bound::End;
            return Ok(if is_sunday_ending_a_range { 7 } else { value });
        }
        let expected = match (self.names.first(), self.names.last()) {
            (Some((first, _)), Some((last, _))) => {
                format!("a number {min}-{max} or a name {first}-{last}")
            }
            _ => format!("a number {min}-{max}"),
        };
        let hint = if looks_like_quartz(token) {
            " (L, W and # are Quartz extensions, not crontab syntax)"
        } else {
            ""
        };
        Err(format!(
            "{name} field {text:?}: expected {expected}, found {token:?}{hint}"
        ))
    }

    /// The end of `*`: day-of-week stops at 6 so that `*` does not list Sunday twice.
    fn star_max(&self) -> u32 {
        if self.max == 7 { 6 } else { self.max }
    }

    /// Day-of-week 7 is Sunday, stored as 0.
    fn fold(&self, value: u32) -> u32 {
        if self.max == 7 && value == 7 {
            0
        } else {
            value
        }
    }

    fn base(&self) -> u32 {
        // Years are stored from 1970; every other field from 0 so that values index directly.
        if self.min >= 64 { self.min } else { 0 }
    }

    fn wrapped_hint(&self, first: u32, last: u32) -> String {
        if self.max == 7 {
            // Day of week: 7 and 0 are both Sunday, so the wrapped part starts at Monday.
            let head = if first == 7 {
                "7".to_owned()
            } else {
                format!("{first}-7")
            };
            return match last {
                0 => head,
                1 => format!("{head},1"),
                _ => format!("{head},1-{last}"),
            };
        }
        let head = if first == self.max {
            first.to_string()
        } else {
            format!("{first}-{}", self.max)
        };
        let tail = if last == self.min {
            last.to_string()
        } else {
            format!("{}-{last}", self.min)
        };
        format!("{head},{tail}")
    }
}

/// `L`, `15W`, `5L`, `5#3`: the Quartz extensions people paste from other schedulers.
fn looks_like_quartz(token: &str) -> bool {
    let trimmed = token
        .trim_start_matches(['L', 'l'])
        .trim_end_matches(['L', 'l', 'W', 'w']);
    token.contains('#')
        || (trimmed.len() < token.len() && trimmed.bytes().all(|byte| byte.is_ascii_digit()))
}

/// Which end of a range a value is; only `Sun` cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    Start,
    End,
}

impl ValueSet {
    fn empty(base: u32) -> Self {
        Self { base, bits: [0; 3] }
    }

    /// Every value of `spec`'s range (`*`), for the year field when it is left out.
    pub(super) fn full(spec: &FieldSpec) -> Self {
        let mut set = Self::empty(spec.base());
        for value in spec.min..=spec.star_max() {
            set.insert(value);
        }
        set
    }

    fn insert(&mut self, value: u32) {
        let index = (value - self.base) as usize;
        self.bits[index / 64] |= 1 << (index % 64);
    }

    /// Whether the field matches `value`.
    pub(super) fn contains(&self, value: u32) -> bool {
        let Some(index) = value.checked_sub(self.base).map(|index| index as usize) else {
            return false;
        };
        index < 192 && self.bits[index / 64] & (1 << (index % 64)) != 0
    }

    /// The smallest value of the set that is `value` or larger.
    pub(super) fn next_at_or_after(&self, value: u32) -> Option<u32> {
        let mut index = value.saturating_sub(self.base) as usize;
        while index < 192 {
            let word = self.bits[index / 64] >> (index % 64);
            if word != 0 {
                let found = index + word.trailing_zeros() as usize;
                // `found` is below 192, so it fits a u32.
                return u32::try_from(found).ok().map(|found| found + self.base);
            }
            index = (index / 64 + 1) * 64;
        }
        None
    }

    /// The smallest value of the set.
    pub(super) fn first(&self) -> u32 {
        // A parsed set is never empty; the base is a safe answer for an empty one all the same.
        self.next_at_or_after(self.base).unwrap_or(self.base)
    }

    /// Whether the set holds every value from `min` to `max`.
    pub(super) fn holds_all(&self, min: u32, max: u32) -> bool {
        (min..=max).all(|value| self.contains(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(spec: &FieldSpec, text: &str) -> Vec<u32> {
        let set = spec.parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        (spec.min..=spec.max).filter(|&v| set.contains(v)).collect()
    }

    #[test]
    fn elements_expand_as_crontab_defines_them() {
        assert_eq!(values(&MINUTE, "*/15"), [0, 15, 30, 45]);
        assert_eq!(values(&HOUR, "1-5/2"), [1, 3, 5]);
        assert_eq!(values(&MINUTE, "50/4"), [50, 54, 58]);
        assert_eq!(values(&DAY_OF_MONTH, "*/10"), [1, 11, 21, 31]);
        assert_eq!(values(&MONTH, "*/5"), [1, 6, 11]);
        assert_eq!(values(&MINUTE, "1,5-7,59"), [1, 5, 6, 7, 59]);
        assert_eq!(values(&MINUTE, "7-7"), [7]);
        assert_eq!(values(&HOUR, "3/100"), [3]);
        assert_eq!(values(&MINUTE, "*/4294967295"), [0]);
        assert_eq!(values(&MINUTE, "5/99999999999999"), [5]);
    }

    #[test]
    fn day_of_week_takes_zero_to_seven_with_both_ends_sunday_and_names() {
        assert_eq!(values(&DAY_OF_WEEK, "0"), [0]);
        assert_eq!(values(&DAY_OF_WEEK, "7"), [0]);
        assert_eq!(values(&DAY_OF_WEEK, "1-5"), [1, 2, 3, 4, 5]);
        assert_eq!(values(&DAY_OF_WEEK, "Mon-Fri"), [1, 2, 3, 4, 5]);
        assert_eq!(values(&DAY_OF_WEEK, "fri-SUN"), [0, 5, 6]);
        assert_eq!(values(&DAY_OF_WEEK, "5-7"), [0, 5, 6]);
        assert_eq!(values(&DAY_OF_WEEK, "1-7/2"), [0, 1, 3, 5]);
        assert_eq!(values(&DAY_OF_WEEK, "*"), [0, 1, 2, 3, 4, 5, 6]);
        assert_eq!(values(&DAY_OF_WEEK, "1/2"), [1, 3, 5]);
        assert_eq!(values(&DAY_OF_WEEK, "*/2"), [0, 2, 4, 6]);
        assert_eq!(values(&DAY_OF_WEEK, "sun,sat"), [0, 6]);
        assert_eq!(values(&MONTH, "Jan-Mar,dec"), [1, 2, 3, 12]);
    }

    #[test]
    fn bad_elements_are_refused_naming_the_field_and_the_problem() {
        for (spec, text, expected) in [
            (
                &MINUTE,
                "60",
                "minute field \"60\": 60 is out of range 0-59",
            ),
            (
                &DAY_OF_WEEK,
                "8",
                "day-of-week field \"8\": 8 is out of range 0-7",
            ),
            (&HOUR, "99999999999", "99999999999 is out of range 0-23"),
            (
                &HOUR,
                "22-2",
                "the range 22-2 runs backwards (write it as a list, such as 22-23,0-2)",
            ),
            (
                &DAY_OF_WEEK,
                "Sat-Mon",
                "the range Sat-Mon runs backwards (write it as a list, such as 6-7,1)",
            ),
            (
                &MINUTE,
                "*/0",
                "minute field \"*/0\": a step of 0 never advances",
            ),
            (&MINUTE, "*/x", "the step \"x\" is not a positive number"),
            (&MINUTE, "1,,2", "an element of the list is empty"),
            (&MINUTE, "", "an element of the list is empty"),
            (
                &MINUTE,
                "?",
                "\"?\" is only allowed in the day-of-month and day-of-week fields",
            ),
            (&DAY_OF_MONTH, "?/2", "\"?\" takes no step"),
            (
                &MONTH,
                "Janu",
                "expected a number 1-12 or a name jan-dec, found \"Janu\"",
            ),
            (
                &HOUR,
                "Mon",
                "hour field \"Mon\": expected a number 0-23, found \"Mon\"",
            ),
            (
                &DAY_OF_MONTH,
                "L",
                "(L, W and # are Quartz extensions, not crontab syntax)",
            ),
            (
                &DAY_OF_WEEK,
                "5#3",
                "(L, W and # are Quartz extensions, not crontab syntax)",
            ),
            (&MINUTE, "-5", "expected a number 0-59, found \"\""),
        ] {
            let error = spec.parse(text).expect_err(text);
            assert!(error.contains(expected), "{text}: {error}");
        }
    }

    #[test]
    fn a_field_beginning_with_a_star_counts_as_unrestricted_for_the_day_rule() {
        assert!(FieldSpec::is_star("*"));
        assert!(FieldSpec::is_star("*/2"));
        assert!(FieldSpec::is_star("?"));
        assert!(!FieldSpec::is_star("1-31"));
        assert!(!FieldSpec::is_star("Mon"));
    }

    #[test]
    fn a_value_set_finds_the_next_value_across_words() {
        let years = YEAR.parse("1971,2040,2100").expect("valid");
        assert_eq!(years.next_at_or_after(1900), Some(1971));
        assert_eq!(years.next_at_or_after(1972), Some(2040));
        assert_eq!(years.next_at_or_after(2041), Some(2100));
        assert_eq!(years.next_at_or_after(2101), None);
        assert!(!years.contains(1969));
        assert!(ValueSet::full(&YEAR).holds_all(1970, 2100));
        assert_eq!(SECOND.parse("59").expect("valid").first(), 59);
    }
}
