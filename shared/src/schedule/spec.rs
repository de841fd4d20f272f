//! [`ScheduleSpec`]: a cron expression in a time zone with a deterministic jitter; its fire times.
//!
//! This is where upkeep's DST policy (see [`crate::schedule`]) is implemented: the cron fields
//! are walked on local wall-clock times and each match is mapped to an instant with explicit
//! handling of gaps and folds. Pure: the caller supplies every instant, nothing reads the clock.

use std::time::Duration;

use chrono::{DateTime, Datelike, MappedLocalTime, NaiveDateTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

use super::cron_expr::{CronExpr, DstRule};
use super::zone;
use super::{ScheduleError, parse_time_zone};

/// A named schedule: when it fires (a cron expression in an IANA zone) and how far its jobs are
/// spread after each fire time (a deterministic jitter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleSpec {
    name: String,
    cron: CronExpr,
    tz: Tz,
    jitter: Duration,
}

/// One firing of a schedule: its identity and when it is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tick {
    /// The nominal fire time: the tick's identity, stored as `schedule_ticks.fire_at`.
    pub fire_at: DateTime<Utc>,
    /// When the tick should be enqueued: `fire_at` plus the schedule's jitter offset.
    pub due_at: DateTime<Utc>,
}

impl ScheduleSpec {
    /// A schedule from already-validated parts.
    ///
    /// `jitter` is the width of the spread: every tick is due at its fire time plus a fixed
    /// offset in `[0, jitter)` derived from `name` (see [`ScheduleSpec::jitter_offset`]).
    #[must_use]
    pub fn new(name: impl Into<String>, cron: CronExpr, tz: Tz, jitter: Duration) -> Self {
        Self {
            name: name.into(),
            cron,
            tz,
            jitter,
        }
    }

    /// A schedule from configuration text: a cron expression and an IANA zone name.
    ///
    /// # Errors
    /// [`ScheduleError::InvalidCron`] or [`ScheduleError::UnknownTimeZone`], naming the input.
    pub fn parse(
        name: &str,
        cron: &str,
        tz: &str,
        jitter: Duration,
    ) -> Result<Self, ScheduleError> {
        Ok(Self::new(
            name,
            CronExpr::parse(cron)?,
            parse_time_zone(tz)?,
            jitter,
        ))
    }

    /// The schedule's name, its identity in the ledger.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cron expression.
    #[must_use]
    pub fn cron(&self) -> &CronExpr {
        &self.cron
    }

    /// The zone the cron expression is evaluated in.
    #[must_use]
    pub fn tz(&self) -> Tz {
        self.tz
    }

    /// The jitter width.
    #[must_use]
    pub fn jitter(&self) -> Duration {
        self.jitter
    }

    /// The fixed delay between each nominal fire time and its due time, in `[0, jitter)` with
    /// microsecond resolution (zero when the jitter is under a microsecond).
    ///
    /// It is derived from a stable hash of the schedule's name (64-bit FNV-1a followed by the
    /// splitmix64 finaliser), so every replica and every restart computes the same offset, and
    /// schedules with the same cron expression are spread apart. Changing the hash would move
    /// every schedule's due times (never their tick identities).
    #[must_use]
    pub fn jitter_offset(&self) -> Duration {
        let width_micros = self.jitter.as_micros();
        if width_micros == 0 {
            return Duration::ZERO;
        }
        let offset_micros = u128::from(stable_hash(&self.name)) % width_micros;
        // The remainder is at most the hash, which is a u64, so the conversion is lossless.
        Duration::from_micros(u64::try_from(offset_micros).unwrap_or(u64::MAX))
    }

    /// The due time of the tick whose nominal fire time is `fire_at`.
    #[must_use]
    pub fn due_at(&self, fire_at: DateTime<Utc>) -> DateTime<Utc> {
        add_saturating(fire_at, self.jitter_offset())
    }

    /// The first nominal fire time strictly after `after`, or `None` when the expression has no
    /// more matches (fire times are computed for the years 1970 to 2100).
    ///
    /// Fire times are evaluated in the schedule's zone with upkeep's DST policy (see
    /// [`crate::schedule`]) and returned in UTC. Successive calls, each starting from the
    /// previous result, give strictly increasing instants.
    #[must_use]
    pub fn next_fire_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if after.year() > LAST_CRON_YEAR {
            return None;
        }
        // There are no fire times before the first year matched (1970), and clamping keeps the
        // local-time conversion below away from the ends of chrono's range.
        let after = after.max(before_first_cron_year());
        let local = after.with_timezone(&self.tz).naive_local();
        let next = match self.tz.from_local_datetime(&local) {
            MappedLocalTime::Ambiguous(first, second) => {
                let (fold_start, fold_end) = zone::repeated_span(self.tz, local, &first, &second)?;
                let in_second_pass = after > first.to_utc();
                self.next_around_fold(local, in_second_pass, fold_start, fold_end)
            }
            MappedLocalTime::Single(_) | MappedLocalTime::None => {
                self.instant_of(self.cron.next_local_after(local)?)
            }
        };
        debug_assert!(
            next.is_none_or(|next| next > after),
            "fire times move forward"
        );
        next
    }

    /// The first tick (fire time and due time) whose nominal fire time is strictly after `after`.
    #[must_use]
    pub fn next_tick_after(&self, after: DateTime<Utc>) -> Option<Tick> {
        self.next_fire_after(after).map(|fire_at| Tick {
            fire_at,
            due_at: self.due_at(fire_at),
        })
    }

    /// The nominal fire times in `(from_exclusive, to_inclusive]`, oldest first, at most `limit`.
    #[must_use]
    pub fn fires_between(
        &self,
        from_exclusive: DateTime<Utc>,
        to_inclusive: DateTime<Utc>,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        let mut fires = Vec::new();
        let mut cursor = from_exclusive;
        while fires.len() < limit {
            match self.next_fire_after(cursor) {
                Some(fire_at) if fire_at <= to_inclusive => {
                    fires.push(fire_at);
                    cursor = fire_at;
                }
                _ => break,
            }
        }
        fires
    }

    /// The next `n` nominal fire times after `after`, each in UTC and in the schedule's zone;
    /// what `upkeepctl schedules next NAME -n 10` prints. Due times are these plus
    /// [`ScheduleSpec::jitter_offset`].
    #[must_use]
    pub fn preview(&self, after: DateTime<Utc>, n: usize) -> Vec<(DateTime<Utc>, DateTime<Tz>)> {
        self.fires_between(after, DateTime::<Utc>::MAX_UTC, n)
            .into_iter()
            .map(|fire_at| (fire_at, fire_at.with_timezone(&self.tz)))
            .collect()
    }

    /// The instant a matching local time fires at, when it is not inside a fold we are already in.
    ///
    /// Wall-clock schedules use [`zone::first_instant_at_or_after`] (a gap fires at the
    /// transition instant). Cadence schedules skip a matching time inside a gap and go on to the
    /// first match the wall clock actually shows.
    fn instant_of(&self, mut local: NaiveDateTime) -> Option<DateTime<Utc>> {
        loop {
            match self.tz.from_local_datetime(&local) {
                MappedLocalTime::Single(instant) | MappedLocalTime::Ambiguous(instant, _) => {
                    return Some(instant.to_utc());
                }
                MappedLocalTime::None => match self.cron.dst_rule() {
                    DstRule::WallClock => {
                        return zone::first_instant_at_or_after(self.tz, local);
                    }
                    DstRule::Cadence => {
                        let after_gap = zone::gap_end(self.tz, local)?;
                        local = self.cron.next_local_at_or_after(after_gap)?;
                    }
                },
            }
        }
    }

    /// The next fire time when `after` shows `local`, a repeated time in `[fold_start, fold_end)`.
    fn next_around_fold(
        &self,
        local: NaiveDateTime,
        in_second_pass: bool,
        fold_start: NaiveDateTime,
        fold_end: NaiveDateTime,
    ) -> Option<DateTime<Utc>> {
        let second_occurrence = |matched: NaiveDateTime| {
            self.tz
                .from_local_datetime(&matched)
                .latest()
                .map(|instant| instant.to_utc())
        };
        match (self.cron.dst_rule(), in_second_pass) {
            // First pass: the rest of the first pass comes first; a cadence then also fires on
            // the second pass, from the first match of the repeated span.
            (DstRule::WallClock, false) => self.instant_of(self.cron.next_local_after(local)?),
            (DstRule::Cadence, false) => {
                let next = self.cron.next_local_after(local)?;
                if next < fold_end {
                    return self.instant_of(next);
                }
                match self.cron.next_local_at_or_after(fold_start) {
                    Some(repeated) if repeated < fold_end => second_occurrence(repeated),
                    _ => self.instant_of(next),
                }
            }
            // Second pass: a wall-clock schedule already fired every repeated time on the first
            // pass, so it resumes after the fold; a cadence fires on this pass too.
            (DstRule::WallClock, true) => {
                self.instant_of(self.cron.next_local_at_or_after(fold_end)?)
            }
            (DstRule::Cadence, true) => {
                let next = self.cron.next_local_after(local)?;
                if next < fold_end {
                    second_occurrence(next)
                } else {
                    self.instant_of(next)
                }
            }
        }
    }
}

/// The last year matched; there are no fire times after it.
const LAST_CRON_YEAR: i32 = super::cron_expr::LAST_YEAR;

/// An instant before the first local time an expression can match (1970-01-01 in any zone).
fn before_first_cron_year() -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH - TimeDelta::days(2)
}

/// 64-bit FNV-1a of the UTF-8 bytes, then the splitmix64 finaliser so that names differing only
/// in their last characters still land far apart. Stable across processes, builds and platforms,
/// unlike `std`'s randomly seeded hasher.
fn stable_hash(name: &str) -> u64 {
    let mut hash = fnv1a_64(name.as_bytes());
    hash ^= hash >> 30;
    hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash ^= hash >> 27;
    hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

fn fnv1a_64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(PRIME)
    })
}

/// `instant + duration`, clamped to the largest representable instant.
pub(crate) fn add_saturating(instant: DateTime<Utc>, duration: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(duration)
        .ok()
        .and_then(|delta| instant.checked_add_signed(delta))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `instant - duration`, clamped to the smallest representable instant.
pub(crate) fn sub_saturating(instant: DateTime<Utc>, duration: Duration) -> DateTime<Utc> {
    TimeDelta::from_std(duration)
        .ok()
        .and_then(|delta| instant.checked_sub_signed(delta))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveDate, Timelike};
    use chrono_tz::{America, Asia, Europe};

    use super::*;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        NaiveDate::from_ymd_opt(y, mo, d)
            .and_then(|date| date.and_hms_opt(h, mi, s))
            .expect("test dates are valid")
            .and_utc()
    }

    fn spec(cron: &str, tz: Tz) -> ScheduleSpec {
        ScheduleSpec::new(
            "test",
            CronExpr::parse(cron).expect("valid cron"),
            tz,
            Duration::ZERO,
        )
    }

    fn all_fires(
        spec: &ScheduleSpec,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Vec<DateTime<Utc>> {
        spec.fires_between(from, to, usize::MAX)
    }

    fn gaps_in_seconds(fires: &[DateTime<Utc>]) -> Vec<i64> {
        fires
            .windows(2)
            .map(|pair| (pair[1] - pair[0]).num_seconds())
            .collect()
    }

    #[test]
    fn a_daily_time_in_the_berlin_spring_gap_fires_once_at_the_first_instant_after_it() {
        let spec = spec("0 30 2 * * *", Europe::Berlin);
        let fires = all_fires(&spec, utc(2026, 3, 28, 0, 0, 0), utc(2026, 3, 30, 12, 0, 0));
        assert_eq!(
            fires,
            [
                utc(2026, 3, 28, 1, 30, 0), // 02:30 CET
                utc(2026, 3, 29, 1, 0, 0),  // 02:30 does not exist: 03:00 CEST
                utc(2026, 3, 30, 0, 30, 0), // 02:30 CEST
            ]
        );
    }

    #[test]
    fn a_daily_time_in_the_berlin_autumn_fold_fires_once_at_its_first_occurrence() {
        let spec = spec("0 30 2 * * *", Europe::Berlin);
        let fires = all_fires(
            &spec,
            utc(2026, 10, 24, 0, 0, 0),
            utc(2026, 10, 26, 12, 0, 0),
        );
        assert_eq!(
            fires,
            [
                utc(2026, 10, 24, 0, 30, 0), // 02:30 CEST
                utc(2026, 10, 25, 0, 30, 0), // 02:30 CEST, first of two; not 01:30 UTC (CET)
                utc(2026, 10, 26, 1, 30, 0), // 02:30 CET
            ]
        );
    }

    #[test]
    fn a_daily_time_in_the_new_york_spring_gap_fires_once_at_the_first_instant_after_it() {
        let spec = spec("0 30 2 * * *", America::New_York);
        let fires = all_fires(&spec, utc(2026, 3, 7, 0, 0, 0), utc(2026, 3, 9, 12, 0, 0));
        assert_eq!(
            fires,
            [
                utc(2026, 3, 7, 7, 30, 0), // 02:30 EST
                utc(2026, 3, 8, 7, 0, 0),  // 02:30 does not exist: 03:00 EDT
                utc(2026, 3, 9, 6, 30, 0), // 02:30 EDT
            ]
        );
    }

    #[test]
    fn a_daily_time_in_the_new_york_autumn_fold_fires_once_at_its_first_occurrence() {
        // New York repeats 01:00-02:00, so 01:30 is the repeated time; 02:30 happens once.
        let repeated = spec("0 30 1 * * *", America::New_York);
        let fires = all_fires(
            &repeated,
            utc(2026, 10, 31, 12, 0, 0),
            utc(2026, 11, 2, 12, 0, 0),
        );
        assert_eq!(
            fires,
            [
                utc(2026, 11, 1, 5, 30, 0), // 01:30 EDT, first of two; not 06:30 UTC (EST)
                utc(2026, 11, 2, 6, 30, 0), // 01:30 EST
            ]
        );
        let after_the_fold = spec("0 30 2 * * *", America::New_York);
        let fires = all_fires(
            &after_the_fold,
            utc(2026, 10, 31, 12, 0, 0),
            utc(2026, 11, 2, 12, 0, 0),
        );
        assert_eq!(
            fires,
            [utc(2026, 11, 1, 7, 30, 0), utc(2026, 11, 2, 7, 30, 0)]
        );
    }

    #[test]
    fn a_wall_clock_schedule_asked_during_the_second_pass_does_not_go_back_to_the_first() {
        // 01:10 UTC is 02:10 CET, in the second pass; 02:30 already fired at 00:30 UTC.
        let spec = spec("0 30 2 * * *", Europe::Berlin);
        assert_eq!(
            spec.next_fire_after(utc(2026, 10, 25, 1, 10, 0)),
            Some(utc(2026, 10, 26, 1, 30, 0))
        );
    }

    #[test]
    fn a_daily_wall_clock_schedule_fires_once_per_local_day_for_a_whole_year() {
        for tz in [Europe::Berlin, America::New_York] {
            let spec = spec("0 30 2 * * *", tz);
            let start = tz
                .with_ymd_and_hms(2026, 1, 1, 0, 0, 0)
                .single()
                .expect("midnight exists")
                .to_utc();
            let end = tz
                .with_ymd_and_hms(2027, 1, 1, 0, 0, 0)
                .single()
                .expect("midnight exists")
                .to_utc();
            let fires = all_fires(&spec, start, end);
            assert_eq!(fires.len(), 365, "{tz}");
            let mut local_dates: Vec<NaiveDate> = fires
                .iter()
                .map(|fire_at| fire_at.with_timezone(&tz).date_naive())
                .collect();
            local_dates.dedup();
            assert_eq!(local_dates.len(), 365, "one fire per local date in {tz}");
        }
    }

    #[test]
    fn an_hourly_schedule_fires_every_real_hour_across_both_berlin_transitions() {
        let spec = spec("0 0 * * * *", Europe::Berlin);
        // The local day of 2026-03-29 runs from 23:00 UTC the day before to 22:00 UTC.
        let spring = all_fires(
            &spec,
            utc(2026, 3, 28, 22, 59, 59),
            utc(2026, 3, 29, 21, 59, 59),
        );
        assert_eq!(spring.len(), 23);
        assert!(gaps_in_seconds(&spring).iter().all(|&gap| gap == 3600));
        assert!(spring.contains(&utc(2026, 3, 29, 1, 0, 0)), "03:00 CEST");
        // The local day of 2026-10-25 runs from 22:00 UTC the day before to 23:00 UTC.
        let autumn = all_fires(
            &spec,
            utc(2026, 10, 24, 21, 59, 59),
            utc(2026, 10, 25, 22, 59, 59),
        );
        assert_eq!(autumn.len(), 25);
        assert!(gaps_in_seconds(&autumn).iter().all(|&gap| gap == 3600));
        assert!(autumn.contains(&utc(2026, 10, 25, 0, 0, 0)), "02:00 CEST");
        assert!(autumn.contains(&utc(2026, 10, 25, 1, 0, 0)), "02:00 CET");
    }

    #[test]
    fn an_hourly_schedule_fires_every_real_hour_across_both_new_york_transitions() {
        let spec = spec("0 0 * * * *", America::New_York);
        let spring = all_fires(
            &spec,
            utc(2026, 3, 8, 4, 59, 59),
            utc(2026, 3, 9, 3, 59, 59),
        );
        assert_eq!(spring.len(), 23);
        assert!(gaps_in_seconds(&spring).iter().all(|&gap| gap == 3600));
        let autumn = all_fires(
            &spec,
            utc(2026, 11, 1, 3, 59, 59),
            utc(2026, 11, 2, 4, 59, 59),
        );
        assert_eq!(autumn.len(), 25);
        assert!(gaps_in_seconds(&autumn).iter().all(|&gap| gap == 3600));
    }

    #[test]
    fn a_wall_clock_hourly_range_fires_each_named_hour_once_across_both_transitions() {
        let spec = spec("0 0 1-5 * * *", Europe::Berlin);
        let spring = all_fires(
            &spec,
            utc(2026, 3, 28, 12, 0, 0),
            utc(2026, 3, 29, 12, 0, 0),
        );
        assert_eq!(
            spring,
            [
                utc(2026, 3, 29, 0, 0, 0), // 01:00 CET
                utc(2026, 3, 29, 1, 0, 0), // 02:00 skipped, fires at 03:00 CEST, and 03:00 too
                utc(2026, 3, 29, 2, 0, 0), // 04:00 CEST
                utc(2026, 3, 29, 3, 0, 0), // 05:00 CEST
            ]
        );
        let autumn = all_fires(
            &spec,
            utc(2026, 10, 24, 12, 0, 0),
            utc(2026, 10, 25, 12, 0, 0),
        );
        assert_eq!(
            autumn,
            [
                utc(2026, 10, 24, 23, 0, 0), // 01:00 CEST
                utc(2026, 10, 25, 0, 0, 0),  // 02:00 CEST; not again at 02:00 CET
                utc(2026, 10, 25, 2, 0, 0),  // 03:00 CET
                utc(2026, 10, 25, 3, 0, 0),  // 04:00 CET
                utc(2026, 10, 25, 4, 0, 0),  // 05:00 CET
            ]
        );
    }

    #[test]
    fn an_every_ten_seconds_schedule_fires_every_ten_real_seconds_through_the_repeated_hour() {
        let spec = spec("*/10 * * * * *", Europe::Berlin);
        let fires = all_fires(
            &spec,
            utc(2026, 10, 24, 23, 50, 0),
            utc(2026, 10, 25, 2, 10, 0),
        );
        assert_eq!(fires.len(), 140 * 6);
        assert!(gaps_in_seconds(&fires).iter().all(|&gap| gap == 10));
        assert!(fires.contains(&utc(2026, 10, 25, 0, 30, 0)), "02:30 CEST");
        assert!(fires.contains(&utc(2026, 10, 25, 1, 30, 0)), "02:30 CET");
    }

    #[test]
    fn an_every_ten_seconds_schedule_fires_every_ten_real_seconds_through_the_gap() {
        let spec = spec("*/10 * * * * *", Europe::Berlin);
        let fires = all_fires(
            &spec,
            utc(2026, 3, 29, 0, 50, 0),
            utc(2026, 3, 29, 1, 10, 0),
        );
        assert_eq!(fires.len(), 20 * 6);
        assert!(gaps_in_seconds(&fires).iter().all(|&gap| gap == 10));
    }

    #[test]
    fn a_cadence_asked_during_either_pass_of_the_repeated_hour_continues_in_real_time() {
        let spec = spec("*/10 * * * * *", Europe::Berlin);
        // 00:59:55 UTC is 02:59:55 CEST, the end of the first pass.
        assert_eq!(
            spec.next_fire_after(utc(2026, 10, 25, 0, 59, 55)),
            Some(utc(2026, 10, 25, 1, 0, 0))
        );
        // 01:00:05 UTC is 02:00:05 CET, in the second pass.
        assert_eq!(
            spec.next_fire_after(utc(2026, 10, 25, 1, 0, 5)),
            Some(utc(2026, 10, 25, 1, 0, 10))
        );
        // 01:59:55 UTC is 02:59:55 CET, the end of the second pass.
        assert_eq!(
            spec.next_fire_after(utc(2026, 10, 25, 1, 59, 55)),
            Some(utc(2026, 10, 25, 2, 0, 0))
        );
    }

    #[test]
    fn a_sub_hourly_wall_clock_schedule_is_silent_during_the_second_pass_of_its_hour() {
        let spec = spec("0 */10 2 * * *", Europe::Berlin);
        let autumn = all_fires(
            &spec,
            utc(2026, 10, 24, 12, 0, 0),
            utc(2026, 10, 25, 12, 0, 0),
        );
        let first_pass: Vec<_> = (0..6).map(|i| utc(2026, 10, 25, 0, i * 10, 0)).collect();
        assert_eq!(
            autumn, first_pass,
            "02:00-02:50 CEST only, nothing at 02:xx CET"
        );
        let spring = all_fires(
            &spec,
            utc(2026, 3, 28, 12, 0, 0),
            utc(2026, 3, 29, 12, 0, 0),
        );
        assert_eq!(
            spring,
            [utc(2026, 3, 29, 1, 0, 0)],
            "the skipped hour fires once"
        );
    }

    #[test]
    fn a_cadence_does_not_fire_for_a_skipped_time_at_the_end_of_the_gap() {
        // 02:07 does not exist on 2026-03-29; the next 07 past the hour is 03:07 CEST.
        let spec = spec("0 7 * * * *", Europe::Berlin);
        let fires = all_fires(&spec, utc(2026, 3, 29, 0, 0, 0), utc(2026, 3, 29, 2, 0, 0));
        assert_eq!(
            fires,
            [utc(2026, 3, 29, 0, 7, 0), utc(2026, 3, 29, 1, 7, 0)]
        );
    }

    #[test]
    fn a_quarter_hourly_schedule_fires_every_real_quarter_hour_for_a_whole_year() {
        let spec = spec("0 */15 * * * *", Europe::Berlin);
        let fires = all_fires(
            &spec,
            utc(2025, 12, 31, 23, 59, 59),
            utc(2026, 12, 31, 23, 59, 59),
        );
        assert_eq!(fires.len(), 365 * 96);
        assert!(gaps_in_seconds(&fires).iter().all(|&gap| gap == 900));
    }

    #[test]
    fn a_quarter_hourly_schedule_keeps_its_real_cadence_in_zones_with_odd_transitions() {
        // Lord Howe moves by 30 minutes, Dublin's DST is "negative" in the tz database,
        // St John's and Adelaide have half-hour offsets, Kathmandu a 45-minute one.
        let zones = [
            chrono_tz::Australia::Lord_Howe,
            chrono_tz::Europe::Dublin,
            chrono_tz::America::St_Johns,
            chrono_tz::Australia::Adelaide,
            chrono_tz::Asia::Kathmandu,
        ];
        for tz in zones {
            let spec = spec("0 */15 * * * *", tz);
            let fires = all_fires(
                &spec,
                utc(2025, 12, 31, 23, 59, 59),
                utc(2026, 12, 31, 23, 59, 59),
            );
            assert_eq!(fires.len(), 365 * 96, "{tz}");
            assert!(
                gaps_in_seconds(&fires).iter().all(|&gap| gap == 900),
                "{tz}"
            );
        }
    }

    #[test]
    fn a_daily_time_in_a_skipped_day_fires_once_at_the_end_of_the_gap() {
        // Samoa skipped 2011-12-30: 23:59:59 on the 29th (UTC-10) was followed by 00:00 on the
        // 31st (UTC+14), at 10:00 UTC on the 30th.
        let spec = spec("0 30 2 * * *", chrono_tz::Pacific::Apia);
        let fires = all_fires(
            &spec,
            utc(2011, 12, 29, 0, 0, 0),
            utc(2011, 12, 31, 0, 0, 0),
        );
        assert_eq!(
            fires,
            [
                utc(2011, 12, 29, 12, 30, 0), // 02:30 on the 29th, UTC-10
                utc(2011, 12, 30, 10, 0, 0),  // the 30th's 02:30 never happened: 00:00 on the 31st
                utc(2011, 12, 30, 12, 30, 0), // 02:30 on the 31st, UTC+14
            ]
        );
    }

    #[test]
    fn a_midnight_schedule_fires_at_the_end_of_a_gap_that_starts_at_midnight() {
        // In 2018 Sao Paulo went from 00:00 (UTC-3) straight to 01:00 (UTC-2) on 4 November.
        let spec = spec("@daily", chrono_tz::America::Sao_Paulo);
        let fires = all_fires(&spec, utc(2018, 11, 3, 0, 0, 0), utc(2018, 11, 5, 12, 0, 0));
        assert_eq!(
            fires,
            [
                utc(2018, 11, 3, 3, 0, 0), // 00:00 UTC-3
                utc(2018, 11, 4, 3, 0, 0), // no midnight: 01:00 UTC-2
                utc(2018, 11, 5, 2, 0, 0), // 00:00 UTC-2
            ]
        );
    }

    #[test]
    fn a_schedule_in_a_zone_without_dst_keeps_its_utc_time_all_year() {
        let spec = spec("0 30 2 * * *", Asia::Tokyo);
        let fires = all_fires(
            &spec,
            utc(2026, 3, 27, 12, 0, 0),
            utc(2026, 3, 30, 12, 0, 0),
        );
        assert_eq!(
            fires,
            [
                utc(2026, 3, 27, 17, 30, 0), // 02:30 JST on the 28th
                utc(2026, 3, 28, 17, 30, 0),
                utc(2026, 3, 29, 17, 30, 0),
            ]
        );
        let year = all_fires(&spec, utc(2026, 1, 1, 0, 0, 0), utc(2027, 1, 1, 0, 0, 0));
        assert_eq!(year.len(), 365);
        assert!(
            year.iter()
                .all(|fire_at| (fire_at.hour(), fire_at.minute()) == (17, 30))
        );
    }

    #[test]
    fn fires_between_covers_a_day_excluding_its_start_and_including_its_end() {
        let spec = spec("0 0 */6 * * *", Tz::UTC);
        let day = all_fires(&spec, utc(2026, 6, 1, 0, 0, 0), utc(2026, 6, 2, 0, 0, 0));
        assert_eq!(
            day,
            [
                utc(2026, 6, 1, 6, 0, 0),
                utc(2026, 6, 1, 12, 0, 0),
                utc(2026, 6, 1, 18, 0, 0),
                utc(2026, 6, 2, 0, 0, 0),
            ]
        );
        let limited = spec.fires_between(utc(2026, 6, 1, 0, 0, 0), utc(2026, 6, 2, 0, 0, 0), 2);
        assert_eq!(limited, day[..2]);
        assert!(
            spec.fires_between(utc(2026, 6, 1, 0, 0, 1), utc(2026, 6, 1, 5, 59, 59), 10)
                .is_empty()
        );
    }

    #[test]
    fn the_next_fire_after_a_fractional_second_is_the_next_whole_match() {
        let spec = spec("* * * * * *", Tz::UTC);
        let after = utc(2026, 6, 1, 10, 0, 0) + TimeDelta::milliseconds(500);
        assert_eq!(spec.next_fire_after(after), Some(utc(2026, 6, 1, 10, 0, 1)));
    }

    #[test]
    fn fire_times_stay_within_the_years_1970_to_2100() {
        let daily = spec("0 0 0 * * *", Tz::UTC);
        assert_eq!(daily.next_fire_after(utc(2100, 12, 31, 0, 0, 0)), None);
        assert_eq!(daily.next_fire_after(utc(2500, 1, 1, 0, 0, 0)), None);
        assert_eq!(daily.next_fire_after(DateTime::<Utc>::MAX_UTC), None);
        assert_eq!(
            spec("0 0 0 * * *", Asia::Tokyo).next_fire_after(DateTime::<Utc>::MIN_UTC),
            Some(utc(1969, 12, 31, 15, 0, 0)),
            "midnight on 1970-01-01 in Tokyo, the first year matched"
        );
        let once = spec("0 0 12 1 1 * 2027", Tz::UTC);
        assert_eq!(once.next_fire_after(utc(2027, 6, 1, 0, 0, 0)), None);
    }

    #[test]
    fn the_jitter_offset_is_deterministic_and_within_range() {
        let jitter = Duration::from_secs(300);
        let cron = CronExpr::parse("0 0 2 * * *").expect("valid");
        let offset_of =
            |name: &str| ScheduleSpec::new(name, cron.clone(), Tz::UTC, jitter).jitter_offset();
        assert_eq!(offset_of("backup.run"), offset_of("backup.run"));
        let offsets: Vec<Duration> = (0..200).map(|i| offset_of(&format!("s{i}"))).collect();
        assert!(offsets.iter().all(|&offset| offset < jitter));
        let mut distinct = offsets.clone();
        distinct.sort();
        distinct.dedup();
        assert!(
            distinct.len() > 190,
            "names spread: {} distinct",
            distinct.len()
        );
        assert!(offsets.iter().any(|&offset| offset < jitter / 4));
        assert!(offsets.iter().any(|&offset| offset > jitter * 3 / 4));
    }

    #[test]
    fn the_jitter_offset_is_pinned_across_releases() {
        // Changing the hash moves every schedule's due time; this pins it.
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        let spec =
            ScheduleSpec::parse("backup.run", "0 0 2 * * *", "UTC", Duration::from_secs(300))
                .expect("valid");
        assert_eq!(spec.jitter_offset(), Duration::from_micros(83_586_974));
    }

    #[test]
    fn no_jitter_means_ticks_are_due_at_their_fire_time() {
        let spec = spec("0 0 2 * * *", Tz::UTC);
        assert_eq!(spec.jitter_offset(), Duration::ZERO);
        let tick = spec
            .next_tick_after(utc(2026, 6, 1, 0, 0, 0))
            .expect("fires");
        assert_eq!(tick.due_at, tick.fire_at);
    }

    #[test]
    fn a_tick_is_due_at_its_fire_time_plus_the_jitter_offset() {
        let spec =
            ScheduleSpec::parse("logs.rotate", "0 5 0 * * *", "UTC", Duration::from_secs(60))
                .expect("valid");
        let tick = spec
            .next_tick_after(utc(2026, 6, 1, 0, 0, 0))
            .expect("fires");
        assert_eq!(tick.fire_at, utc(2026, 6, 1, 0, 5, 0));
        assert_eq!(
            tick.due_at - tick.fire_at,
            TimeDelta::from_std(spec.jitter_offset()).expect("small")
        );
    }

    #[test]
    fn preview_lists_fire_times_in_utc_and_in_the_schedule_s_zone() {
        let spec = spec("0 30 2 * * *", Europe::Berlin);
        let rows = spec.preview(utc(2026, 3, 27, 12, 0, 0), 3);
        let printed: Vec<(String, String)> = rows
            .iter()
            .map(|(fire_at, local)| (fire_at.to_rfc3339(), local.to_string()))
            .collect();
        assert_eq!(
            printed,
            [
                (
                    "2026-03-28T01:30:00+00:00".to_owned(),
                    "2026-03-28 02:30:00 CET".to_owned()
                ),
                (
                    "2026-03-29T01:00:00+00:00".to_owned(),
                    "2026-03-29 03:00:00 CEST".to_owned()
                ),
                (
                    "2026-03-30T00:30:00+00:00".to_owned(),
                    "2026-03-30 02:30:00 CEST".to_owned()
                ),
            ]
        );
        assert!(spec.preview(utc(2026, 3, 27, 12, 0, 0), 0).is_empty());
    }

    #[test]
    fn parsing_a_spec_reports_the_bad_cron_or_zone_by_name() {
        let bad_cron =
            ScheduleSpec::parse("x", "0 0 25 * * *", "UTC", Duration::ZERO).expect_err("hour 25");
        assert!(
            bad_cron.to_string().contains("\"0 0 25 * * *\""),
            "{bad_cron}"
        );
        let bad_zone = ScheduleSpec::parse("x", "0 0 2 * * *", "Mars/Olympus", Duration::ZERO)
            .expect_err("no such zone");
        assert_eq!(
            bad_zone,
            ScheduleError::UnknownTimeZone {
                name: "Mars/Olympus".to_owned()
            }
        );
    }
}
