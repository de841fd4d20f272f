//! Retention as a pure function: which backups of one database to keep and which to delete,
//! with the rule that keeps each (grandfather-father-son over verified backups).
//!
//! Rules, in the order they are reported:
//! - Only *good* backups (committed, verified at least by a full read, not found corrupt)
//!   count toward the buckets. Bad ones (found corrupt, never verified, failed restore tests)
//!   never count; they are deleted once older than [`Policy::bad_grace`].
//! - `newest_good` and `newest_restore_tested` are always kept.
//! - `last`, `daily`, `weekly` (ISO weeks, so week 53 is its own bucket), `monthly`: the newest
//!   good backup of each of the newest N buckets that have one, so gaps never shorten history.
//! - `within`: every good backup at most `keep_within` older than the newest good backup
//!   (never measured from now: a week of failures does not age backups out).
//! - `min_keep`: the newest good backups that no bucket kept, until `min_keep` are kept.
//! - When the newest good backup is older than `max_staleness` (or there is none) the plan is
//!   frozen: nothing is deleted, and the caller raises `backup.stale`.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Datelike, Utc};
use serde::Serialize;

use super::settings::RetentionSettings;

/// A backup as retention sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The catalog id.
    pub id: i64,
    /// When the dump was committed.
    pub finished_at: DateTime<Utc>,
    /// Committed and verified at least by a full read, and never found corrupt.
    pub good: bool,
    /// A restore test of this backup succeeded.
    pub restore_tested: bool,
}

/// The retention policy, from `[backups.retention]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// See [`RetentionSettings`].
    pub keep_last: u32,
    /// See [`RetentionSettings`].
    pub keep_daily: u32,
    /// See [`RetentionSettings`].
    pub keep_weekly: u32,
    /// See [`RetentionSettings`].
    pub keep_monthly: u32,
    /// See [`RetentionSettings`].
    pub min_keep: u32,
    /// See [`RetentionSettings`].
    pub keep_within: Option<Duration>,
    /// See [`RetentionSettings`].
    pub max_staleness: Duration,
    /// How long a bad backup stays for inspection before it is deleted.
    pub bad_grace: Duration,
}

/// How long bad backups (corrupt, unverified, failed restore test) are kept for inspection.
pub const BAD_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);

impl From<&RetentionSettings> for Policy {
    fn from(r: &RetentionSettings) -> Self {
        Self {
            keep_last: r.keep_last,
            keep_daily: r.keep_daily,
            keep_weekly: r.keep_weekly,
            keep_monthly: r.keep_monthly,
            min_keep: r.min_keep,
            keep_within: r.keep_within,
            max_staleness: r.max_staleness,
            bad_grace: BAD_GRACE,
        }
    }
}

/// Why a backup is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// The newest good backup.
    NewestGood,
    /// The newest backup whose restore test succeeded.
    NewestRestoreTested,
    /// One of the newest `keep_last`.
    Last,
    /// The newest of its day.
    Daily,
    /// The newest of its ISO week.
    Weekly,
    /// The newest of its month.
    Monthly,
    /// Within `keep_within` of the newest good backup.
    Within,
    /// Kept to reach `min_keep`.
    MinKeep,
    /// A bad backup still inside its grace period.
    BadGrace,
    /// Retention is frozen: the newest good backup is older than `max_staleness`.
    Frozen,
}

/// The decision about one backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// The catalog id.
    pub id: i64,
    /// When it was committed.
    pub finished_at: DateTime<Utc>,
    /// Whether it counted as good.
    pub good: bool,
    /// The rules that keep it; empty means delete.
    pub keep: Vec<Rule>,
}

impl Decision {
    /// Whether the plan deletes it.
    #[must_use]
    pub fn delete(&self) -> bool {
        self.keep.is_empty()
    }
}

/// The whole plan for one database, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// One decision per candidate, newest first.
    pub decisions: Vec<Decision>,
    /// Nothing is deleted: there is no good backup newer than `max_staleness`.
    pub frozen: bool,
}

impl Plan {
    /// The ids the plan deletes.
    #[must_use]
    pub fn deletions(&self) -> Vec<i64> {
        self.decisions
            .iter()
            .filter(|d| d.delete())
            .map(|d| d.id)
            .collect()
    }
}

/// The calendar bucket (year and day, ISO week or month) a commit time falls in.
type BucketOf = fn(&DateTime<Utc>) -> (i32, u32);

/// Plans retention for one database's backups at `now`.
#[must_use]
pub fn plan(candidates: &[Candidate], policy: &Policy, now: DateTime<Utc>) -> Plan {
    let mut sorted: Vec<&Candidate> = candidates.iter().collect();
    // Newest first; ties broken by id so the plan is deterministic.
    sorted.sort_by(|a, b| b.finished_at.cmp(&a.finished_at).then(b.id.cmp(&a.id)));
    let mut keep: Vec<BTreeSet<Rule>> = vec![BTreeSet::new(); sorted.len()];
    let good: Vec<usize> = (0..sorted.len()).filter(|&i| sorted[i].good).collect();

    let newest_good = good.first().copied();
    let frozen = newest_good.is_none_or(|i| {
        now.signed_duration_since(sorted[i].finished_at)
            .to_std()
            .is_ok_and(|age| age > policy.max_staleness)
    });
    if let Some(i) = newest_good {
        keep[i].insert(Rule::NewestGood);
    }
    if let Some(i) = (0..sorted.len()).find(|&i| sorted[i].restore_tested) {
        keep[i].insert(Rule::NewestRestoreTested);
    }
    for &i in good.iter().take(policy.keep_last as usize) {
        keep[i].insert(Rule::Last);
    }
    let buckets: [(Rule, u32, BucketOf); 3] = [
        (Rule::Daily, policy.keep_daily, |t| (t.year(), t.ordinal())),
        (Rule::Weekly, policy.keep_weekly, |t| {
            let week = t.iso_week();
            (week.year(), week.week())
        }),
        (Rule::Monthly, policy.keep_monthly, |t| {
            (t.year(), t.month())
        }),
    ];
    for (rule, count, bucket_of) in buckets {
        let mut seen = BTreeSet::new();
        for &i in &good {
            if seen.len() >= count as usize {
                break;
            }
            // Newest first, so the first backup of a bucket is its newest.
            if seen.insert(bucket_of(&sorted[i].finished_at)) {
                keep[i].insert(rule);
            }
        }
    }
    if let (Some(within), Some(newest)) = (policy.keep_within, newest_good) {
        let newest_at = sorted[newest].finished_at;
        for &i in &good {
            let age = newest_at.signed_duration_since(sorted[i].finished_at);
            if age.to_std().is_ok_and(|age| age <= within) {
                keep[i].insert(Rule::Within);
            }
        }
    }
    let kept_good = good.iter().filter(|&&i| !keep[i].is_empty()).count();
    let missing = (policy.min_keep as usize).saturating_sub(kept_good);
    let unkept: Vec<usize> = good
        .iter()
        .copied()
        .filter(|&i| keep[i].is_empty())
        .take(missing)
        .collect();
    for i in unkept {
        keep[i].insert(Rule::MinKeep);
    }
    for (i, candidate) in sorted.iter().enumerate() {
        if !candidate.good {
            let age = now.signed_duration_since(candidate.finished_at);
            if !age.to_std().is_ok_and(|age| age > policy.bad_grace) {
                keep[i].insert(Rule::BadGrace);
            }
        }
        if frozen {
            keep[i].insert(Rule::Frozen);
        }
    }
    Plan {
        decisions: sorted
            .iter()
            .zip(keep)
            .map(|(candidate, rules)| Decision {
                id: candidate.id,
                finished_at: candidate.finished_at,
                good: candidate.good,
                keep: rules.into_iter().collect(),
            })
            .collect(),
        frozen,
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use proptest::prelude::*;

    use super::*;

    fn at(y: i32, m: u32, d: u32, h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap()
    }

    fn good(id: i64, t: DateTime<Utc>) -> Candidate {
        Candidate {
            id,
            finished_at: t,
            good: true,
            restore_tested: false,
        }
    }

    fn bad(id: i64, t: DateTime<Utc>) -> Candidate {
        Candidate {
            good: false,
            ..good(id, t)
        }
    }

    fn policy(last: u32, daily: u32, weekly: u32, monthly: u32, min_keep: u32) -> Policy {
        Policy {
            keep_last: last,
            keep_daily: daily,
            keep_weekly: weekly,
            keep_monthly: monthly,
            min_keep,
            keep_within: None,
            max_staleness: Duration::from_secs(26 * 3600),
            bad_grace: BAD_GRACE,
        }
    }

    fn kept(plan: &Plan) -> Vec<i64> {
        let mut ids: Vec<i64> = plan
            .decisions
            .iter()
            .filter(|d| !d.delete())
            .map(|d| d.id)
            .collect();
        ids.sort_unstable();
        ids
    }

    #[test]
    fn ten_days_of_failures_then_a_success_deletes_no_good_backup_and_the_old_bad_ones() {
        // Good daily backups on Oct 1..=5, then ten failed days that left bad (corrupt) rows,
        // then one success on Oct 16.
        let mut candidates: Vec<Candidate> = (1..=5)
            .map(|d| good(i64::from(d), at(2026, 10, d, 2)))
            .collect();
        candidates.extend((6..=15).map(|d| bad(i64::from(d), at(2026, 10, d, 2))));
        candidates.push(good(16, at(2026, 10, 16, 2)));
        let plan = plan(&candidates, &policy(3, 3, 0, 0, 3), at(2026, 10, 16, 3));
        assert!(!plan.frozen);
        // The last three good ones (16, 5, 4) are kept: the failures did not age them out.
        // Bad ones younger than the 7-day grace (10..=15) stay for inspection.
        assert_eq!(kept(&plan), vec![4, 5, 10, 11, 12, 13, 14, 15, 16]);
    }

    #[test]
    fn while_every_backup_fails_retention_is_frozen_and_deletes_nothing() {
        let mut candidates: Vec<Candidate> = (1..=5)
            .map(|d| good(i64::from(d), at(2026, 10, d, 2)))
            .collect();
        candidates.extend((6..=15).map(|d| bad(i64::from(d), at(2026, 10, d, 2))));
        let plan = plan(&candidates, &policy(1, 0, 0, 0, 1), at(2026, 10, 16, 3));
        assert!(plan.frozen);
        assert!(plan.deletions().is_empty());
    }

    #[test]
    fn bad_backups_never_count_toward_buckets_or_min_keep() {
        // A 0-byte or partial dump never becomes a catalog row; one found corrupt is bad.
        let candidates = vec![
            bad(3, at(2026, 10, 3, 2)),
            bad(2, at(2026, 10, 2, 2)),
            good(1, at(2026, 10, 1, 2)),
        ];
        let plan = plan(&candidates, &policy(1, 1, 0, 0, 1), at(2026, 10, 2, 3));
        let one = plan.decisions.iter().find(|d| d.id == 1).unwrap();
        assert!(one.keep.contains(&Rule::Last) && one.keep.contains(&Rule::Daily));
        // Older than the grace period at a later date: bad ones go, the good one stays.
        let later = super::plan(&candidates, &policy(1, 1, 0, 0, 1), at(2026, 10, 20, 3));
        assert!(later.frozen, "the newest good backup is 19 days old");
        let mut fresh = candidates.clone();
        fresh.push(good(4, at(2026, 10, 20, 2)));
        let later = super::plan(&fresh, &policy(1, 2, 0, 0, 1), at(2026, 10, 20, 3));
        assert_eq!(kept(&later), vec![1, 4]);
    }

    #[test]
    fn gaps_of_several_days_keep_the_newest_n_days_that_have_a_backup() {
        let candidates = vec![
            good(1, at(2026, 9, 1, 2)),
            good(2, at(2026, 9, 10, 2)),
            good(3, at(2026, 9, 20, 2)),
            good(4, at(2026, 10, 1, 2)),
        ];
        let plan = plan(&candidates, &policy(1, 3, 0, 0, 1), at(2026, 10, 1, 3));
        assert_eq!(kept(&plan), vec![2, 3, 4]);
    }

    #[test]
    fn two_backups_in_one_day_fill_one_daily_bucket_with_the_newer() {
        let candidates = vec![
            good(1, at(2026, 10, 1, 2)),
            good(2, at(2026, 10, 2, 2)),
            good(3, at(2026, 10, 2, 14)),
        ];
        let plan = plan(&candidates, &policy(1, 2, 0, 0, 1), at(2026, 10, 2, 15));
        assert_eq!(kept(&plan), vec![1, 3]);
        let two = plan.decisions.iter().find(|d| d.id == 2).unwrap();
        assert!(two.delete());
    }

    #[test]
    fn iso_week_53_is_a_bucket_of_its_own() {
        // 2026-12-31 (Thursday) is in ISO week 2026-W53; 2027-01-04 (Monday) in 2027-W01;
        // 2026-12-27 (Sunday) in 2026-W52.
        let candidates = vec![
            good(1, at(2026, 12, 27, 2)),
            good(2, at(2026, 12, 29, 2)),
            good(3, at(2026, 12, 31, 2)),
            good(4, at(2027, 1, 4, 2)),
        ];
        assert_eq!(at(2026, 12, 31, 2).iso_week().week(), 53);
        let plan = plan(&candidates, &policy(1, 0, 3, 0, 1), at(2027, 1, 4, 3));
        // W01 → 4, W53 → 3 (its newest; 2 is deleted), W52 → 1.
        assert_eq!(kept(&plan), vec![1, 3, 4]);
    }

    #[test]
    fn min_keep_above_the_bucket_total_keeps_the_newest_extra_good_backups() {
        let candidates: Vec<Candidate> = (1..=6)
            .map(|h| good(i64::from(h), at(2026, 10, 1, h)))
            .collect();
        let plan = plan(&candidates, &policy(1, 1, 1, 1, 4), at(2026, 10, 1, 7));
        assert_eq!(kept(&plan), vec![3, 4, 5, 6]);
        let three = plan.decisions.iter().find(|d| d.id == 3).unwrap();
        assert_eq!(three.keep, vec![Rule::MinKeep]);
    }

    #[test]
    fn the_newest_restore_tested_backup_is_kept_outside_every_bucket() {
        let mut candidates: Vec<Candidate> = (1..=5)
            .map(|d| good(i64::from(d), at(2026, 10, d, 2)))
            .collect();
        candidates[0].restore_tested = true;
        let plan = plan(&candidates, &policy(1, 1, 0, 0, 1), at(2026, 10, 5, 3));
        assert_eq!(kept(&plan), vec![1, 5]);
        assert_eq!(
            plan.decisions.iter().find(|d| d.id == 1).unwrap().keep,
            vec![Rule::NewestRestoreTested]
        );
    }

    #[test]
    fn keep_within_is_measured_from_the_newest_good_backup_not_from_now() {
        let candidates: Vec<Candidate> = (1..=5)
            .map(|d| good(i64::from(d), at(2026, 10, d, 2)))
            .collect();
        let mut p = policy(1, 0, 0, 0, 1);
        p.keep_within = Some(Duration::from_secs(2 * 86_400));
        p.max_staleness = Duration::from_secs(365 * 86_400);
        let plan = plan(&candidates, &p, at(2026, 12, 1, 0));
        assert_eq!(kept(&plan), vec![3, 4, 5]);
    }

    proptest! {
        #[test]
        fn the_newest_good_backup_is_never_deleted(
            backups in proptest::collection::vec((0i64..2_000_000, any::<bool>(), any::<bool>()), 0..40),
            last in 0u32..4, daily in 0u32..4, weekly in 0u32..4, monthly in 0u32..4, min_keep in 1u32..4,
            now_offset in 0i64..3_000_000,
        ) {
            let base = at(2026, 1, 1, 0);
            let candidates: Vec<Candidate> = backups.iter().enumerate().map(|(i, (minutes, is_good, tested))| Candidate {
                id: i as i64,
                finished_at: base + chrono::Duration::minutes(*minutes),
                good: *is_good,
                restore_tested: *tested && *is_good,
            }).collect();
            let p = policy(last, daily, weekly, monthly, min_keep);
            let plan = plan(&candidates, &p, base + chrono::Duration::minutes(now_offset));
            let newest_good = candidates.iter().filter(|c| c.good).max_by(|a, b| a.finished_at.cmp(&b.finished_at).then(a.id.cmp(&b.id)));
            if let Some(newest) = newest_good {
                prop_assert!(!plan.deletions().contains(&newest.id));
            }
            let kept_good = plan.decisions.iter().filter(|d| d.good && !d.delete()).count();
            let total_good = candidates.iter().filter(|c| c.good).count();
            prop_assert!(kept_good >= total_good.min(min_keep as usize));
        }
    }
}
