//! `db.index_usage`: unused indexes (but never one backing a constraint) and duplicate pairs.

use serde_json::json;
use upkeep_workers::handlers::reports::Family;

use crate::support::{Harness, execute, target_database, with_code};

#[tokio::test]
async fn an_index_never_used_is_unused_and_one_backing_a_unique_constraint_is_not() {
    let url = target_database().await;
    execute(
        &url,
        "CREATE TABLE orders (id int PRIMARY KEY, code text, note text,
                              CONSTRAINT orders_code_key UNIQUE (code));
         INSERT INTO orders SELECT g, 'c' || g, 'n' || g FROM generate_series(1, 2000) g;
         CREATE INDEX orders_note_idx ON orders (note);",
    )
    .await;
    let harness = Harness::new(
        &[("app", &url)],
        "[reports.thresholds]\nunused_index_min_age = \"0s\"",
    )
    .await;
    let (_, outcome) = harness.run(Family::IndexUsage, json!({})).await;
    let outcome = outcome.expect("db.index_usage succeeds");
    let subjects: Vec<_> = with_code(&outcome, "index.unused")
        .iter()
        .map(|f| f.subject.clone().expect("subject"))
        .collect();
    assert_eq!(
        subjects,
        vec!["app.public.orders_note_idx"],
        "{:#?}",
        outcome.findings
    );

    // With the default minimum age, an index upkeep has only just seen is not judged yet.
    let harness = Harness::new(&[("app", &url)], "").await;
    let (_, outcome) = harness.run(Family::IndexUsage, json!({})).await;
    assert!(with_code(&outcome.expect("succeeds"), "index.unused").is_empty());
}

#[tokio::test]
async fn identical_indexes_and_a_prefix_duplicate_are_found_each_pair_once() {
    let url = target_database().await;
    execute(
        &url,
        "CREATE TABLE events (id int PRIMARY KEY, account int, created date);
         CREATE INDEX events_account_idx ON events (account);
         CREATE INDEX events_account_copy_idx ON events (account);
         CREATE INDEX events_account_created_idx ON events (account, created);
         CREATE INDEX events_created_idx ON events (created);",
    )
    .await;
    let harness = Harness::new(&[("app", &url)], "").await;
    let (_, outcome) = harness.run(Family::IndexUsage, json!({})).await;
    let outcome = outcome.expect("db.index_usage succeeds");
    let mut subjects: Vec<_> = with_code(&outcome, "index.duplicate")
        .iter()
        .map(|f| f.subject.clone().expect("subject"))
        .collect();
    subjects.sort();
    assert_eq!(
        subjects,
        vec![
            "app.public.events_account_copy_idx/events_account_created_idx",
            "app.public.events_account_idx/events_account_copy_idx",
            "app.public.events_account_idx/events_account_created_idx",
        ],
        "{:#?}",
        outcome.findings
    );
}
