//! `store::schedules`: reconciliation with the config, pausing, and the audit trail.

use sqlx::PgPool;
use upkeep_shared::store::Error;
use upkeep_shared::store::schedules::{self, ReconcilePlan};

use crate::helpers::{ping_schedule, schedules};

async fn events(pool: &PgPool) -> Vec<(String, String, String)> {
    sqlx::query_as("SELECT schedule, action, actor FROM schedule_events ORDER BY id")
        .fetch_all(pool)
        .await
        .unwrap()
}

fn plan(added: &[&str], changed: &[&str], removed: &[&str]) -> ReconcilePlan {
    let names = |names: &[&str]| names.iter().map(|name| (*name).to_owned()).collect();
    ReconcilePlan {
        added: names(added),
        changed: names(changed),
        removed: names(removed),
    }
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn reconcile_reports_added_changed_and_removed_schedules(pool: PgPool) {
    let first = schedules(&format!(
        "{}{}{}",
        ping_schedule("a", "0 * * * * *"),
        ping_schedule("b", "0 * * * * *"),
        ping_schedule("c", "0 * * * * *"),
    ));
    let second = schedules(&format!(
        "{}{}{}",
        ping_schedule("a", "0 * * * * *"),
        ping_schedule("b", "30 * * * * *"),
        ping_schedule("d", "0 * * * * *"),
    ));

    let initial = schedules::reconcile(&pool, &first).await.unwrap();
    let next = schedules::reconcile(&pool, &second).await.unwrap();

    assert_eq!(initial, plan(&["a", "b", "c"], &[], &[]));
    assert_eq!(next, plan(&["d"], &["b"], &["c"]));
    let rows = schedules::list(&pool).await.unwrap();
    let names: Vec<(&str, bool, bool)> = rows
        .iter()
        .map(|row| (row.name.as_str(), row.enabled, row.in_config))
        .collect();
    assert_eq!(
        names,
        [
            ("a", true, true),
            ("b", true, true),
            ("c", false, false),
            ("d", true, true)
        ],
        "a removed schedule is kept, disabled"
    );
    let b = &rows[1];
    assert_eq!(b.cron, "30 * * * * *");
    assert_eq!(b.timezone, "UTC");
    assert_eq!(b.kind, "system.ping");
    assert_eq!(b.queue, "reports");
    assert_eq!(b.catch_up, "latest");
    assert_eq!(b.overlap, "allow");
    assert_eq!(b.catch_up_window_ms, 3_600_000);
    assert_eq!(b.catch_up_max, 100);
    assert_eq!(b.config_hash, schedules::config_hash(&second[1]));
    let actions: Vec<(String, String)> = events(&pool)
        .await
        .into_iter()
        .map(|(schedule, action, actor)| {
            assert_eq!(actor, "config");
            (schedule, action)
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("a", "added"),
        ("b", "added"),
        ("c", "added"),
        ("b", "changed"),
        ("d", "added"),
        ("c", "removed"),
    ]
    .into_iter()
    .map(|(schedule, action)| (schedule.to_owned(), action.to_owned()))
    .collect();
    assert_eq!(actions, expected);
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn reconciling_an_unchanged_config_changes_nothing(pool: PgPool) {
    let configured = schedules(&ping_schedule("a", "0 * * * * *"));
    schedules::reconcile(&pool, &configured).await.unwrap();

    let again = schedules::reconcile(&pool, &configured).await.unwrap();

    assert_eq!(again, ReconcilePlan::default());
    assert_eq!(events(&pool).await.len(), 1);
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn replicas_reconciling_at_once_apply_each_change_once(pool: PgPool) {
    let configured = schedules(&format!(
        "{}{}",
        ping_schedule("a", "0 * * * * *"),
        ping_schedule("b", "0 * * * * *")
    ));

    let replicas = (0..4).map(|_| schedules::reconcile(&pool, &configured));
    let plans = futures::future::join_all(replicas).await;

    let n_added: usize = plans
        .into_iter()
        .map(|plan| plan.unwrap().added.len())
        .sum();
    assert_eq!(n_added, 2);
    assert_eq!(events(&pool).await.len(), 2);
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn a_removed_schedule_that_comes_back_is_enabled_again(pool: PgPool) {
    let with_a = schedules(&ping_schedule("a", "0 * * * * *"));
    schedules::reconcile(&pool, &with_a).await.unwrap();
    schedules::reconcile(&pool, &[]).await.unwrap();

    let back = schedules::reconcile(&pool, &with_a).await.unwrap();

    assert_eq!(back, plan(&[], &["a"], &[]));
    let row = &schedules::list(&pool).await.unwrap()[0];
    assert!(row.enabled && row.in_config);
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn a_pause_is_recorded_and_survives_reconciliation(pool: PgPool) {
    schedules::reconcile(&pool, &schedules(&ping_schedule("a", "0 * * * * *")))
        .await
        .unwrap();

    let paused = schedules::set_paused(&pool, "a", true, "alice")
        .await
        .unwrap();
    let paused_again = schedules::set_paused(&pool, "a", true, "bob")
        .await
        .unwrap();
    schedules::reconcile(&pool, &schedules(&ping_schedule("a", "30 * * * * *")))
        .await
        .unwrap();
    let row = schedules::list(&pool).await.unwrap().remove(0);

    assert!(paused);
    assert!(!paused_again, "pausing a paused schedule changes nothing");
    assert!(row.paused);
    assert_eq!(row.paused_by.as_deref(), Some("alice"));
    assert!(row.paused_at.is_some());
    assert_eq!(row.cron, "30 * * * * *");

    let resumed = schedules::set_paused(&pool, "a", false, "bob")
        .await
        .unwrap();
    let row = schedules::list(&pool).await.unwrap().remove(0);
    assert!(resumed);
    assert!(!row.paused);
    assert_eq!((row.paused_by, row.paused_at), (None, None));
    let trail: Vec<(String, String)> = events(&pool)
        .await
        .into_iter()
        .map(|(_, action, actor)| (action, actor))
        .collect();
    let expected: Vec<(String, String)> = [
        ("added", "config"),
        ("pause", "alice"),
        ("changed", "config"),
        ("resume", "bob"),
    ]
    .into_iter()
    .map(|(action, actor)| (action.to_owned(), actor.to_owned()))
    .collect();
    assert_eq!(trail, expected);
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn pausing_an_unknown_schedule_is_an_error_naming_it(pool: PgPool) {
    let result = schedules::set_paused(&pool, "nope", true, "alice").await;

    let Err(Error::ScheduleNotFound(name)) = result else {
        panic!("expected ScheduleNotFound, got {result:?}");
    };
    assert_eq!(name, "nope");
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn operator_actions_are_recorded_as_events(pool: PgPool) {
    schedules::record_event(
        &pool,
        "nightly",
        schedules::EventAction::Trigger,
        "alice",
        serde_json::json!({"job_id": "x"}),
    )
    .await
    .unwrap();

    let detail: serde_json::Value =
        sqlx::query_scalar("SELECT detail FROM schedule_events WHERE action = 'trigger'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(detail, serde_json::json!({"job_id": "x"}));
}
