//! The last hour's throughput as an inline SVG bar chart, drawn on the server (no script).
//!
//! Pure: takes the per-minute counts of every queue (the settle scripts' per-minute rollups,
//! read with the queue stats, so the chart costs no query however busy the queues are) and
//! draws exactly 60 bars, one per minute ending at `now`, succeeded stacked under failed.
//! Colours come from classes in the stylesheet (the CSP allows no inline style).

use chrono::{DateTime, DurationRound as _, TimeDelta, Utc};
use maud::{Markup, html};
use upkeep_shared::queue::QueueStats;

/// Minutes drawn.
pub(crate) const N_MINUTES: usize = 60;

const WIDTH: i64 = 600;
const HEIGHT: i64 = 120;
const BAR_WIDTH: i64 = WIDTH / N_MINUTES as i64;

/// Attempts settled in one minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MinuteCount {
    /// The minute's first instant.
    pub(crate) minute: DateTime<Utc>,
    /// Attempts that succeeded.
    pub(crate) succeeded: i64,
    /// Attempts that failed (retried, dead or lost).
    pub(crate) failed: i64,
}

/// The per-minute counts of every queue in `stats`.
pub(crate) fn minute_counts(stats: &[QueueStats]) -> Vec<MinuteCount> {
    let mut counts = Vec::new();
    for queue in stats {
        let first = queue.minute - i64::try_from(queue.per_minute.len()).unwrap_or(0) + 1;
        for (offset, (succeeded, failed)) in (0..).zip(&queue.per_minute) {
            let Some(minute) = DateTime::from_timestamp((first + offset) * 60, 0) else {
                continue;
            };
            counts.push(MinuteCount {
                minute,
                succeeded: i64::try_from(*succeeded).unwrap_or(i64::MAX),
                failed: i64::try_from(*failed).unwrap_or(i64::MAX),
            });
        }
    }
    counts
}

/// One bar per minute of the hour ending at `now`, oldest first: (succeeded, failed).
#[must_use]
pub(crate) fn buckets(counts: &[MinuteCount], now: DateTime<Utc>) -> Vec<(i64, i64)> {
    let mut bars = vec![(0_i64, 0_i64); N_MINUTES];
    // The current minute is the last bar; it is partial, like every live counter.
    let last = now.duration_trunc(TimeDelta::minutes(1)).unwrap_or(now);
    for count in counts {
        let minutes_ago = (last - count.minute).num_minutes();
        if let Ok(ago) = usize::try_from(minutes_ago)
            && ago < N_MINUTES
        {
            let bar = &mut bars[N_MINUTES - 1 - ago];
            bar.0 = bar.0.saturating_add(count.succeeded);
            bar.1 = bar.1.saturating_add(count.failed);
        }
    }
    bars
}

/// The chart, with a text summary for screen readers.
#[must_use]
pub(crate) fn throughput_svg(bars: &[(i64, i64)]) -> Markup {
    let n_succeeded: i64 = bars.iter().map(|bar| bar.0).sum();
    let n_failed: i64 = bars.iter().map(|bar| bar.1).sum();
    let peak = bars
        .iter()
        .map(|bar| bar.0 + bar.1)
        .max()
        .unwrap_or(0)
        .max(1);
    let label = format!(
        "Attempts finished per minute over the last hour: {n_succeeded} succeeded, \
         {n_failed} failed, at most {peak} in one minute"
    );
    let scale = |n: i64| n * (HEIGHT - 10) / peak;
    html! {
        svg class="chart" viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img"
            aria-label=(label) preserveAspectRatio="none" {
            title { (label) }
            line class="chart-axis" x1="0" y1=(HEIGHT - 1) x2=(WIDTH) y2=(HEIGHT - 1) {}
            @for (idx, (succeeded, failed)) in bars.iter().enumerate() {
                @let x = i64::try_from(idx).unwrap_or(0) * BAR_WIDTH;
                @let ok_height = scale(*succeeded);
                @let failed_height = scale(*failed);
                @if *succeeded > 0 {
                    rect class="bar-ok" x=(x) y=(HEIGHT - 1 - ok_height) width=(BAR_WIDTH - 1)
                        height=(ok_height.max(1)) {}
                }
                @if *failed > 0 {
                    rect class="bar-failed" x=(x)
                        y=(HEIGHT - 1 - ok_height - failed_height.max(1))
                        width=(BAR_WIDTH - 1) height=(failed_height.max(1)) {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;

    use super::*;

    fn at(hour: u32, minute: u32, second: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 29, hour, minute, second)
            .single()
            .expect("a valid instant")
    }

    #[test]
    fn counts_land_in_their_minute_and_older_ones_are_dropped() {
        let now = at(12, 30, 15);
        let counts = [
            MinuteCount {
                minute: at(11, 30, 0),
                succeeded: 9,
                failed: 9,
            },
            MinuteCount {
                minute: at(11, 31, 0),
                succeeded: 1,
                failed: 0,
            },
            MinuteCount {
                minute: at(12, 29, 0),
                succeeded: 5,
                failed: 2,
            },
            MinuteCount {
                minute: at(12, 30, 0),
                succeeded: 3,
                failed: 0,
            },
        ];
        let bars = buckets(&counts, now);
        assert_eq!(bars.len(), 60);
        assert_eq!(bars[0], (1, 0));
        assert_eq!(bars[58], (5, 2));
        assert_eq!(bars[59], (3, 0));
        assert_eq!(bars.iter().map(|b| b.0 + b.1).sum::<i64>(), 11);
    }

    #[test]
    fn each_queue_s_minutes_end_at_its_own_minute_and_add_up() {
        let now = at(12, 30, 15);
        let minute = now.timestamp().div_euclid(60);
        let queue = |per_minute: Vec<(u64, u64)>| QueueStats {
            per_minute,
            minute,
            ..QueueStats::default()
        };
        let mut a = vec![(0, 0); 60];
        a[59] = (3, 1);
        a[0] = (7, 0);
        let mut b = vec![(0, 0); 60];
        b[59] = (2, 0);
        let bars = buckets(&minute_counts(&[queue(a), queue(b)]), now);
        assert_eq!(bars[59], (5, 1), "the current minute of both queues");
        assert_eq!(bars[0], (7, 0), "59 minutes ago");
        assert_eq!(bars.iter().map(|b| b.0 + b.1).sum::<i64>(), 13);
    }

    #[test]
    fn the_chart_draws_one_rect_per_non_empty_series_and_says_the_totals() {
        let mut bars = vec![(0, 0); 60];
        bars[10] = (4, 0);
        bars[20] = (2, 2);
        let svg = throughput_svg(&bars).into_string();
        assert_eq!(svg.matches("<rect class=\"bar-ok\"").count(), 2);
        assert_eq!(svg.matches("<rect class=\"bar-failed\"").count(), 1);
        assert!(
            svg.contains("6 succeeded, 2 failed, at most 4 in one minute"),
            "{svg}"
        );
    }
}
