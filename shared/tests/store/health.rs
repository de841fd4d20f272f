//! `store::health` and the bulk tick statements: what a schedule's health says after a
//! known history of ticks and runs.

use chrono::Duration;
use sqlx::PgPool;
use upkeep_shared::JobId;
use upkeep_shared::store::health::{render_metrics, schedule_health};
use upkeep_shared::store::runs::{self, RunStatus};
use upkeep_shared::store::schedules;
use upkeep_shared::store::ticks::{self, Decision, TickClaim};

use crate::helpers::{ping_schedule, record, schedules as parse_schedules, t0};

fn claim(fire_offset_s: i64, decision: Decision) -> TickClaim {
    TickClaim {
        schedule: "hourly".to_owned(),
        fire_at: t0() + Duration::seconds(fire_offset_s),
        decision,
        note: None,
    }
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn health_reports_last_tick_last_success_lag_and_counts(pool: PgPool) {
    let configured = parse_schedules(&ping_schedule("hourly", "0 0 * * * *"));
    schedules::reconcile(&pool, &configured)
        .await
        .expect("reconcile");
    let claims = [
        claim(0, Decision::Enqueued),
        claim(3600, Decision::Missed),
        claim(7200, Decision::Missed),
        claim(10_800, Decision::SkippedOverlap),
        claim(14_400, Decision::SkippedPaused),
        claim(18_000, Decision::Enqueued),
    ];
    let won = ticks::claim_ticks(&pool, &claims, "replica-a")
        .await
        .expect("claim");
    assert_eq!(won.len(), 6);
    let again = ticks::claim_ticks(&pool, &claims, "replica-b")
        .await
        .expect("claim again");
    assert!(again.is_empty(), "a claimed tick is never won twice");

    // The 00:00 tick ran and succeeded; the 05:00 tick is enqueued, not run yet.
    let first_job = JobId::new();
    let last_job = JobId::new();
    let first = won.iter().find(|r| r.fire_at == t0()).expect("00:00");
    let last = won
        .iter()
        .find(|r| r.fire_at == t0() + Duration::seconds(18_000))
        .expect("05:00");
    let n_confirmed = ticks::confirm_ticks(&pool, &[(first.id, first_job), (last.id, last_job)])
        .await
        .expect("confirm");
    assert_eq!(n_confirmed, 2);
    let mut run = record(first_job, 1, RunStatus::Succeeded);
    run.schedule = Some("hourly".to_owned());
    run.tick_at = Some(t0());
    run.started_at = t0() + Duration::milliseconds(250);
    run.finished_at = Some(t0() + Duration::seconds(2));
    runs::record_runs(&pool, &[run]).await.expect("record run");

    let now = t0() + Duration::seconds(18_100);
    let health = schedule_health(&pool, now, None).await.expect("health");
    assert_eq!(health.len(), 1);
    let hourly = &health[0];
    let last_tick = hourly.last_tick.as_ref().expect("a last tick");
    assert_eq!(last_tick.fire_at, t0() + Duration::seconds(18_000));
    assert_eq!(last_tick.decision, "enqueued");
    assert_eq!(last_tick.job_id, Some(last_job));
    assert_eq!(hourly.last_success_at, Some(t0() + Duration::seconds(2)));
    assert_eq!(hourly.last_success_tick, Some(t0()));
    assert_eq!(hourly.next_fire_at, Some(t0() + Duration::seconds(21_600)));
    assert_eq!(hourly.start_lag_seconds, Some(0.25));
    assert!(
        hourly.enqueue_lag_seconds.is_some(),
        "confirmed ticks have a lag"
    );
    assert_eq!(
        (
            hourly.n_missed,
            hourly.n_skipped_overlap,
            hourly.n_skipped_paused
        ),
        (2, 1, 1)
    );

    let metrics = render_metrics(&health);
    assert!(
        metrics.contains("upkeep_schedule_missed_total{schedule=\"hourly\"} 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("upkeep_schedule_lag_seconds{schedule=\"hourly\",stage=\"start\"} 0.25\n"),
        "{metrics}"
    );
    let only = schedule_health(&pool, now, Some("nope"))
        .await
        .expect("health");
    assert!(only.is_empty());
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn a_missed_tick_can_be_taken_over_by_one_backfill(pool: PgPool) {
    ticks::claim_ticks(
        &pool,
        &[claim(0, Decision::Missed), claim(3600, Decision::Enqueued)],
        "replica-a",
    )
    .await
    .expect("claim");
    let fire_ats = [t0(), t0() + Duration::seconds(3600)];
    let taken = ticks::reclaim_missed_for_backfill(&pool, "hourly", &fire_ats, "alice")
        .await
        .expect("reclaim");
    assert_eq!(taken.len(), 1, "only the missed tick");
    assert_eq!(taken[0].decision, Decision::Backfill);
    assert_eq!(taken[0].claimed_by, "alice");
    let again = ticks::reclaim_missed_for_backfill(&pool, "hourly", &fire_ats, "bob")
        .await
        .expect("reclaim again");
    assert!(again.is_empty(), "a tick is taken over once");
    let last = ticks::last_fire_times(&pool, &["hourly".to_owned(), "other".to_owned()])
        .await
        .expect("last fire times");
    assert_eq!(last.get("hourly"), Some(&(t0() + Duration::seconds(3600))));
    assert_eq!(last.get("other"), None);
}
