//! Ledger queries the schedule tests share: a schedule's ticks and runs, and the checks
//! that every tick of a span has a row and every job ran exactly once.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use sqlx::PgConnection;
use uuid::Uuid;

use crate::support::eventually;

/// One row of `schedule_ticks`, times in Unix seconds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TickRow {
    pub(crate) fire_at: f64,
    pub(crate) decision: String,
    pub(crate) job_id: Option<Uuid>,
    pub(crate) claimed_by: String,
    pub(crate) note: Option<String>,
}

/// One attempt of a schedule's job, times in Unix seconds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ScheduledRun {
    pub(crate) job_id: Uuid,
    pub(crate) tick_at: Option<f64>,
    pub(crate) status: String,
    pub(crate) started_at: f64,
    pub(crate) finished_at: Option<f64>,
}

type TickColumns = (f64, String, Option<Uuid>, String, Option<String>);
type RunColumns = (Uuid, Option<f64>, String, f64, Option<f64>);

/// Every tick of `schedule`, oldest first.
pub(crate) async fn ticks_of(ledger: &mut PgConnection, schedule: &str) -> Vec<TickRow> {
    let rows: Vec<TickColumns> = sqlx::query_as(
        "SELECT extract(epoch FROM fire_at)::float8, decision, job_id, claimed_by, note
           FROM schedule_ticks WHERE schedule = $1 ORDER BY fire_at",
    )
    .bind(schedule)
    .fetch_all(ledger)
    .await
    .expect("reading schedule_ticks");
    rows.into_iter()
        .map(|(fire_at, decision, job_id, claimed_by, note)| TickRow {
            fire_at,
            decision,
            job_id,
            claimed_by,
            note,
        })
        .collect()
}

/// Every attempt of `schedule`'s jobs, by start.
pub(crate) async fn runs_of_schedule(
    ledger: &mut PgConnection,
    schedule: &str,
) -> Vec<ScheduledRun> {
    let rows: Vec<RunColumns> = sqlx::query_as(
        "SELECT job_id, extract(epoch FROM tick_at)::float8, status,
                extract(epoch FROM started_at)::float8, extract(epoch FROM finished_at)::float8
           FROM job_runs WHERE schedule = $1 ORDER BY started_at, job_id",
    )
    .bind(schedule)
    .fetch_all(ledger)
    .await
    .expect("reading job_runs");
    rows.into_iter()
        .map(
            |(job_id, tick_at, status, started_at, finished_at)| ScheduledRun {
                job_id,
                tick_at,
                status,
                started_at,
                finished_at,
            },
        )
        .collect()
}

/// Fails unless the ticks with `from <= fire_at <= to` are exactly one per whole second
/// (an every-second schedule left no second without a row). Returns them.
pub(crate) fn assert_every_second_has_a_row(ticks: &[TickRow], from: f64, to: f64) -> Vec<TickRow> {
    let span: Vec<TickRow> = ticks
        .iter()
        .filter(|t| t.fire_at >= from && t.fire_at <= to)
        .cloned()
        .collect();
    let expected: Vec<i64> = (from.ceil() as i64..=to.floor() as i64).collect();
    let seen: Vec<i64> = span.iter().map(|t| t.fire_at as i64).collect();
    assert_eq!(
        seen, expected,
        "every second from {from} to {to} has exactly one tick row"
    );
    span
}

/// Waits until every tick of `schedule` with a job has a succeeded run of that job, then
/// checks the one-to-one link: each job ran once (one succeeded attempt, the run's
/// `tick_at` is the tick's fire time) and no run belongs to a job no tick names.
pub(crate) async fn assert_each_job_ran_exactly_once(
    ledger: &mut PgConnection,
    schedule: &str,
    timeout: Duration,
) -> (Vec<TickRow>, Vec<ScheduledRun>) {
    let (ticks, runs) = eventually(
        &format!("a succeeded run for every job of {schedule}"),
        timeout,
        async || {
            let ticks = ticks_of(ledger, schedule).await;
            let runs = runs_of_schedule(ledger, schedule).await;
            let succeeded: Vec<Uuid> = runs
                .iter()
                .filter(|r| r.status == "succeeded")
                .map(|r| r.job_id)
                .collect();
            let all_ran = ticks
                .iter()
                .filter_map(|t| t.job_id)
                .all(|job_id| succeeded.contains(&job_id));
            let unconfirmed = ticks.iter().any(|t| {
                t.job_id.is_none()
                    && matches!(
                        t.decision.as_str(),
                        "enqueued" | "caught_up" | "manual" | "backfill"
                    )
            });
            (all_ran && !unconfirmed).then_some((ticks, runs))
        },
    )
    .await;
    let tick_of_job: HashMap<Uuid, f64> = ticks
        .iter()
        .filter_map(|t| t.job_id.map(|job_id| (job_id, t.fire_at)))
        .collect();
    assert_eq!(
        tick_of_job.len(),
        ticks.iter().filter(|t| t.job_id.is_some()).count(),
        "no two ticks share a job"
    );
    let mut succeeded_per_job: BTreeMap<Uuid, usize> = BTreeMap::new();
    for run in &runs {
        let tick = tick_of_job
            .get(&run.job_id)
            .unwrap_or_else(|| panic!("run {run:?} belongs to a job no tick of {schedule} names"));
        let tick_at = run.tick_at.expect("a scheduled run carries its tick");
        assert!(
            (tick_at - tick).abs() < 0.001,
            "run {run:?} names tick {tick_at}, its tick row says {tick}"
        );
        if run.status == "succeeded" {
            *succeeded_per_job.entry(run.job_id).or_default() += 1;
        }
    }
    for (job_id, n) in &succeeded_per_job {
        assert_eq!(*n, 1, "job {job_id} succeeded {n} times");
    }
    assert_eq!(
        succeeded_per_job.len(),
        tick_of_job.len(),
        "every job of a tick ran"
    );
    (ticks, runs)
}
