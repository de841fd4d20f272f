//! Keyset pages of runs and findings: walking `next` while new rows arrive neither repeats
//! nor skips a row.

use std::collections::HashSet;

use serde_json::Value;
use sqlx::PgPool;
use upkeep_shared::store::runs::{self, RunStatus};
use upkeep_shared::{Finding, Severity};

use crate::Api;
use crate::routes::attempt;

/// Seeds one attempt with one warn finding.
async fn seed(pool: &PgPool, n: usize) {
    let records: Vec<_> = (0..n)
        .map(|i| {
            attempt(
                "system.disk",
                if i % 3 == 0 {
                    RunStatus::Failed
                } else {
                    RunStatus::Succeeded
                },
                1,
                vec![
                    Finding::new("disk.used_pct", Severity::Warn, "usage")
                        .with_subject(format!("/p{i}")),
                ],
            )
        })
        .collect();
    runs::record_runs(pool, &records).await.expect("seeded");
}

/// Walks every page of `path` (which holds `limit`), seeding `n_arriving` new rows after
/// each page; returns the ids in the order read.
async fn walk(api: &Api, pool: &PgPool, path: &str, key: &str, n_arriving: usize) -> Vec<i64> {
    let mut ids = Vec::new();
    let mut before: Option<i64> = None;
    for _ in 0..1000 {
        let url = match before {
            Some(id) => format!("{path}&before={id}"),
            None => path.to_owned(),
        };
        let page = api.get_ok(&url).await;
        ids.extend(
            page[key]
                .as_array()
                .expect("rows")
                .iter()
                .map(|row| row["id"].as_i64().expect("id")),
        );
        seed(pool, n_arriving).await;
        match &page["next"] {
            Value::Null => return ids,
            next => before = Some(next.as_i64().expect("a cursor")),
        }
    }
    panic!("more than 1000 pages");
}

async fn check(pool: &PgPool, table: &str, ids: &[i64]) {
    assert!(
        ids.windows(2).all(|w| w[0] > w[1]),
        "strictly newest first: {ids:?}"
    );
    let unique: HashSet<i64> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "no row twice");
    let first = ids[0];
    let existing: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT id FROM {table} WHERE id <= $1 ORDER BY id DESC"
    )))
    .bind(first)
    .fetch_all(pool)
    .await
    .expect("ids");
    assert_eq!(
        ids,
        existing.as_slice(),
        "every row up to the first page, none skipped"
    );
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn run_pages_neither_repeat_nor_skip_while_rows_arrive(pool: PgPool) {
    seed(&pool, 53).await;
    let api = Api::start(pool.clone(), "").await;
    let ids = walk(&api, &pool, "/api/v1/runs?limit=7", "runs", 3).await;
    assert_eq!(ids.len(), 53);
    check(&pool, "job_runs", &ids).await;

    // A filtered walk: only the failed ones, in pages of 4.
    let failed = walk(&api, &pool, "/api/v1/runs?status=failed&limit=4", "runs", 2).await;
    let expected: Vec<i64> = sqlx::query_scalar(
        "SELECT id FROM job_runs WHERE status = 'failed' AND id <= $1 ORDER BY id DESC",
    )
    .bind(failed[0])
    .fetch_all(&pool)
    .await
    .expect("ids");
    assert_eq!(failed, expected);
}

#[sqlx::test(migrator = "upkeep_shared::MIGRATOR")]
async fn finding_pages_neither_repeat_nor_skip_while_rows_arrive(pool: PgPool) {
    seed(&pool, 41).await;
    let api = Api::start(pool.clone(), "").await;
    let ids = walk(&api, &pool, "/api/v1/findings?limit=6", "findings", 5).await;
    assert_eq!(ids.len(), 41);
    check(&pool, "findings", &ids).await;
}
