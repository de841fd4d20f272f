//! Agreement with croniter, a widely used implementation of crontab semantics (issue #20).
//!
//! `croniter_vectors.txt` holds 5,000 random expressions covering every field form, each with
//! a start time in UTC, Europe/Berlin, America/New_York and Australia/Lord_Howe (half of them
//! shortly before a DST transition) and the next 50 fire times croniter computed
//! (`scripts/croniter-vectors.py` made it and regenerates it). Every case is replayed through
//! [`ScheduleSpec`], the code the scheduler uses.
//!
//! Where the two differ, the difference must be one of upkeep's documented DST rules (README,
//! "Cron expressions"); each rule below is checked for exactly the fire times it explains, and
//! anything else fails the test with the case.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, MappedLocalTime, Offset, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use upkeep_shared::schedule::{DstRule, ScheduleSpec};

const VECTORS: &str = include_str!("croniter_vectors.txt");

/// What the generator asked croniter for; a case with fewer was cut at [`CUTOFF`].
const N_FIRES: usize = 50;

/// The generator stops recording fire times here (2099-12-01T00:00:00Z), short of upkeep's
/// last year, 2100.
const CUTOFF: i64 = 4_099_766_400;

/// One line of the vectors file.
struct Case<'a> {
    zone: &'a str,
    start: DateTime<Utc>,
    expr: &'a str,
    /// croniter's fire times, oldest first.
    theirs: Vec<DateTime<Utc>>,
}

/// A deliberate difference: upkeep's DST policy, which croniter does not share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Deliberate {
    /// croniter fires a wall-clock schedule again on the second pass of a repeated hour;
    /// upkeep fires a repeated local time once, at its first occurrence (DESIGN decision 5).
    RepeatedTimeFiresOnce,
    /// upkeep fires a cadence schedule (hour field `*`) on both passes of a repeated hour,
    /// following real elapsed time; croniter fires only one of them.
    CadenceFiresBothPasses,
    /// upkeep fires a wall-clock time that a gap skips at the first instant after the gap
    /// (the transition); croniter moves it forward by whole minutes, keeping its seconds, so
    /// it fires later in the first minute after the gap or not at all (when a later time of
    /// the schedule is reached first).
    SkippedTimeFiresAtTheGapEnd,
    /// croniter fires a skipped time within a minute after the gap at a time the expression
    /// does not match (02:07:01 becomes 03:00:01); upkeep fires it at the transition instant
    /// (wall-clock schedules) or not at all (cadences, which follow real elapsed time).
    CronIterMovesASkippedTimeByWholeMinutes,
}

impl fmt::Display for Deliberate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[test]
fn upkeep_agrees_with_croniter_on_5000_random_expressions_except_for_its_dst_policy() {
    let cases = parse_vectors();
    let expressions: BTreeSet<&str> = cases.iter().map(|case| case.expr).collect();
    assert!(
        expressions.len() >= 5_000,
        "{} expressions",
        expressions.len()
    );
    for zone in [
        "UTC",
        "Europe/Berlin",
        "America/New_York",
        "Australia/Lord_Howe",
    ] {
        let n_cases = cases.iter().filter(|case| case.zone == zone).count();
        assert_eq!(
            n_cases,
            expressions.len(),
            "every expression runs in {zone}"
        );
    }

    let mut n_fires_compared = 0_usize;
    let mut n_deliberate: BTreeMap<(Deliberate, &str), usize> = BTreeMap::new();
    let mut unexplained = Vec::new();
    for case in &cases {
        let spec = ScheduleSpec::parse("agreement", case.expr, case.zone, Duration::ZERO)
            .unwrap_or_else(|e| panic!("{} in {}: croniter accepts it: {e}", case.expr, case.zone));
        let ours = our_fires(&spec, case.start, case.theirs.len() + 10);
        // Compare over the span both lists cover completely.
        let theirs_end = if case.theirs.len() == N_FIRES {
            case.theirs[N_FIRES - 1]
        } else {
            cutoff()
        };
        let ours_end = if ours.len() == case.theirs.len() + 10 {
            ours[ours.len() - 1]
        } else {
            cutoff()
        };
        let end = theirs_end.min(ours_end);
        let ours: BTreeSet<DateTime<Utc>> = ours.into_iter().filter(|&at| at <= end).collect();
        let theirs: BTreeSet<DateTime<Utc>> = case
            .theirs
            .iter()
            .copied()
            .filter(|&at| at <= end)
            .collect();
        n_fires_compared += theirs.len();
        for &only_ours in ours.difference(&theirs) {
            match explain_ours_only(&spec, only_ours) {
                Some(reason) => *n_deliberate.entry((reason, case.zone)).or_default() += 1,
                None => unexplained.push(describe(case, &spec, only_ours, "only upkeep fires")),
            }
        }
        for &only_theirs in theirs.difference(&ours) {
            match explain_theirs_only(&spec, only_theirs) {
                Some(reason) => *n_deliberate.entry((reason, case.zone)).or_default() += 1,
                None => unexplained.push(describe(case, &spec, only_theirs, "only croniter fires")),
            }
        }
    }

    println!("{n_fires_compared} fire times compared; deliberate differences: {n_deliberate:#?}");
    assert!(
        unexplained.is_empty(),
        "{} fire times differ from croniter without a documented reason; the first ones:\n{}",
        unexplained.len(),
        unexplained[..unexplained.len().min(40)].join("\n")
    );
    assert!(n_fires_compared > 900_000, "{n_fires_compared} fire times");
    assert!(
        n_deliberate.keys().all(|(_, zone)| *zone != "UTC"),
        "UTC has no DST, so no deliberate difference: {n_deliberate:?}"
    );
    let n_explained: usize = n_deliberate.values().sum();
    assert!(
        n_explained < n_fires_compared / 1000,
        "DST explains a few fire times, not {n_explained}"
    );
}

#[test]
fn the_vectors_cover_every_field_form() {
    let cases = parse_vectors();
    let expressions: BTreeSet<&str> = cases.iter().map(|case| case.expr).collect();
    let fields = |expr: &str| -> Vec<String> {
        expr.split_whitespace()
            .map(str::to_ascii_lowercase)
            .collect()
    };
    let count = |what: &str, test: &dyn Fn(&str) -> bool| {
        let n = expressions.iter().filter(|expr| test(expr)).count();
        assert!(n >= 20, "only {n} expressions with {what}");
    };
    count("five fields", &|e| fields(e).len() == 5);
    count("six fields (seconds)", &|e| fields(e).len() == 6);
    let shorthands: BTreeSet<&str> = expressions
        .iter()
        .copied()
        .filter(|e| e.starts_with('@'))
        .collect();
    assert_eq!(
        shorthands.into_iter().collect::<Vec<_>>(),
        [
            "@annually",
            "@daily",
            "@hourly",
            "@midnight",
            "@monthly",
            "@weekly",
            "@yearly"
        ]
    );
    let day_fields = |e: &str| {
        let f = fields(e);
        (f.len() >= 5).then(|| (f[f.len() - 3].clone(), f[f.len() - 1].clone()))
    };
    count("a list", &|e| e.contains(','));
    count("a range", &|e| e.contains('-'));
    count("a range with a step", &|e| {
        e.split([' ', ','])
            .any(|part| part.contains('-') && part.contains('/'))
    });
    count("*/n", &|e| e.contains("*/"));
    count("a/n", &|e| {
        e.split([' ', ',']).any(|part| {
            part.split_once('/')
                .is_some_and(|(start, _)| !start.contains(['-', '*']))
        })
    });
    count("a month name", &|e| {
        e.to_ascii_lowercase().contains("jan") || e.to_ascii_lowercase().contains("oct")
    });
    count("a day name in a range", &|e| {
        let lower = e.to_ascii_lowercase();
        ["mon-", "-fri", "-sun", "sun-"]
            .iter()
            .any(|p| lower.contains(p))
    });
    count("7 as Sunday", &|e| {
        day_fields(e).is_some_and(|(_, dow)| dow.split([',', '-', '/']).any(|v| v == "7"))
    });
    count("0 as Sunday", &|e| {
        day_fields(e).is_some_and(|(_, dow)| dow.split([',', '-', '/']).any(|v| v == "0"))
    });
    count("? in a day field", &|e| e.contains('?'));
    count("both day fields restricted", &|e| {
        day_fields(e)
            .is_some_and(|(dom, dow)| !dom.starts_with(['*', '?']) && !dow.starts_with(['*', '?']))
    });
    count(
        "a starred day field with a step beside a restricted one",
        &|e| {
            day_fields(e).is_some_and(|(dom, dow)| {
                (dom.starts_with("*/") && !dow.starts_with(['*', '?']))
                    || (dow.starts_with("*/") && !dom.starts_with(['*', '?']))
            })
        },
    );
}

/// Why upkeep fires at `at` and croniter does not, when upkeep's DST policy says so.
fn explain_ours_only(spec: &ScheduleSpec, at: DateTime<Utc>) -> Option<Deliberate> {
    let tz = spec.tz();
    match spec.cron().dst_rule() {
        DstRule::Cadence if is_second_occurrence(tz, at) => {
            Some(Deliberate::CadenceFiresBothPasses)
        }
        DstRule::WallClock if is_gap_end(tz, at) => Some(Deliberate::SkippedTimeFiresAtTheGapEnd),
        _ => None,
    }
}

/// Why croniter fires at `at` and upkeep does not, when upkeep's DST policy says so.
fn explain_theirs_only(spec: &ScheduleSpec, at: DateTime<Utc>) -> Option<Deliberate> {
    let tz = spec.tz();
    let local = at.with_timezone(&tz).naive_local();
    if spec.cron().dst_rule() == DstRule::WallClock && is_second_occurrence(tz, at) {
        return Some(Deliberate::RepeatedTimeFiresOnce);
    }
    let just_after_a_gap = (0..60).any(|seconds| is_gap_end(tz, at - TimeDelta::seconds(seconds)));
    if just_after_a_gap && !spec.cron().matches_local(local) {
        return Some(Deliberate::CronIterMovesASkippedTimeByWholeMinutes);
    }
    None
}

/// Whether the wall clock shows the same time earlier, before a fall-back transition.
fn is_second_occurrence(tz: Tz, at: DateTime<Utc>) -> bool {
    let local = at.with_timezone(&tz).naive_local();
    matches!(
        tz.from_local_datetime(&local),
        MappedLocalTime::Ambiguous(first, second) if second.to_utc() == at && first.to_utc() != at
    )
}

/// Whether `at` is a spring-forward transition: the wall clock jumps forward at this instant.
fn is_gap_end(tz: Tz, at: DateTime<Utc>) -> bool {
    let offset = |instant: DateTime<Utc>| {
        tz.offset_from_utc_datetime(&instant.naive_utc())
            .fix()
            .local_minus_utc()
    };
    offset(at - TimeDelta::seconds(1)) < offset(at)
}

fn our_fires(spec: &ScheduleSpec, start: DateTime<Utc>, limit: usize) -> Vec<DateTime<Utc>> {
    spec.fires_between(start, cutoff() - TimeDelta::seconds(1), limit)
}

fn cutoff() -> DateTime<Utc> {
    DateTime::from_timestamp(CUTOFF, 0).expect("a valid instant")
}

fn describe(case: &Case<'_>, spec: &ScheduleSpec, at: DateTime<Utc>, what: &str) -> String {
    format!(
        "{:?} in {} from {}: {what} at {} ({})",
        case.expr,
        case.zone,
        case.start.to_rfc3339(),
        at.to_rfc3339(),
        at.with_timezone(&spec.tz()).format("%F %T %Z")
    )
}

fn parse_vectors() -> Vec<Case<'static>> {
    VECTORS
        .lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            let [zone, start, expr, fires] = fields[..] else {
                panic!("a vectors line has four tab-separated fields: {line:?}");
            };
            let start: i64 = start.parse().expect("start is Unix seconds");
            let mut at = start;
            let mut theirs = Vec::new();
            for run in fires.split(',').filter(|run| !run.is_empty()) {
                let (delta, n) = match run.split_once('*') {
                    Some((delta, n)) => (delta, n.parse::<usize>().expect("a run length")),
                    None => (run, 1),
                };
                let delta: i64 = delta.parse().expect("a delta in seconds");
                for _ in 0..n {
                    at += delta;
                    theirs.push(DateTime::from_timestamp(at, 0).expect("a valid instant"));
                }
            }
            Case {
                zone,
                start: DateTime::from_timestamp(start, 0).expect("a valid instant"),
                expr,
                theirs,
            }
        })
        .collect()
}
