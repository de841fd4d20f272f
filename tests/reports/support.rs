//! Helpers: a report target and an upkeep database, settings pointing at them, and running a
//! report job the way a worker does (handler, then the ledger write that makes its findings
//! open conditions for the next run).

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use sqlx::{Connection, PgConnection, PgPool};
use upkeep_shared::config::Settings;
use upkeep_shared::store::runs::{RunRecord, RunStatus};
use upkeep_shared::{Finding, Job, JobError, JobId, Outcome, QueueName};
use upkeep_tests::{
    fresh_database, fresh_migrated_database, shared_database_url, shared_redis_url, unique_prefix,
};
use upkeep_workers::HandlerContext;
use upkeep_workers::handlers::reports::{self, Family};

/// upkeep's own database and the settings of a test.
pub(crate) struct Harness {
    pub(crate) ctx: HandlerContext,
}

impl Harness {
    /// A fresh migrated upkeep database and `[reports]` settings with `databases` (name, url)
    /// and the extra TOML lines `extra` (under `[reports]`).
    pub(crate) async fn new(databases: &[(&str, &str)], extra: &str) -> Self {
        let upkeep_url = fresh_migrated_database(&shared_database_url()).await;
        let mut toml = format!(
            "[database]\nurl = {upkeep_url:?}\n[redis]\nurl = {:?}\nkey_prefix = {:?}\n\
             [reports]\n{extra}\n",
            shared_redis_url(),
            unique_prefix()
        );
        for (name, url) in databases {
            toml.push_str(&format!(
                "[[reports.databases]]\nname = {name:?}\nurl = {url:?}\n"
            ));
        }
        let settings = Settings::from_toml_str(&toml, &HashMap::new())
            .unwrap_or_else(|error| panic!("test settings are valid: {error}\n{toml}"));
        let db = PgPool::connect(&upkeep_url).await.expect("upkeep database");
        Self {
            ctx: HandlerContext {
                settings: Arc::new(settings),
                db,
            },
        }
    }

    /// Runs the report `family` with `args` and, when it succeeds, records the attempt in the
    /// ledger.
    pub(crate) async fn run(
        &self,
        family: Family,
        args: serde_json::Value,
    ) -> (JobId, Result<Outcome, JobError>) {
        let job = job(family.kind(), args);
        let id = job.id;
        let result = reports::run(&self.ctx, job.clone(), family).await;
        if let Ok(outcome) = &result {
            self.record(&job, RunStatus::Succeeded, Some(outcome.clone()), None)
                .await;
        }
        (id, result)
    }

    /// Records an attempt of `job` in the ledger, as the worker's settle layer does.
    pub(crate) async fn record(
        &self,
        job: &Job,
        status: RunStatus,
        outcome: Option<Outcome>,
        error: Option<&str>,
    ) {
        let now = Utc::now();
        upkeep_shared::store::runs::record_runs(
            &self.ctx.db,
            &[RunRecord {
                job_id: job.id,
                attempt: 1,
                kind: job.kind.clone(),
                queue: "reports".to_owned(),
                status,
                schedule: None,
                tick_at: None,
                enqueued_at: now,
                started_at: now,
                finished_at: Some(now),
                worker: "test".to_owned(),
                args: job.args.clone(),
                outcome,
                error: error.map(str::to_owned),
                next_state: Some(
                    if status == RunStatus::Failed {
                        "dead"
                    } else {
                        "done"
                    }
                    .to_owned(),
                ),
            }],
        )
        .await
        .expect("recording the run");
    }
}

/// A job of `kind` as a worker receives it.
pub(crate) fn job(kind: &str, args: serde_json::Value) -> Job {
    Job {
        id: JobId::new(),
        kind: kind.to_owned(),
        queue: QueueName::parse("reports").expect("valid"),
        args,
        payload_error: None,
        attempt: 1,
        max_attempts: 3,
        enqueued_at_ms: Utc::now().timestamp_millis(),
        schedule: None,
        tick_ms: None,
    }
}

/// A fresh, empty target database on the shared Postgres.
pub(crate) async fn target_database() -> String {
    fresh_database(&shared_database_url()).await
}

/// Runs `sql` (several statements allowed) on a new connection to `url`, then closes it, which
/// flushes the session's table statistics.
pub(crate) async fn execute(url: &str, sql: &str) {
    let mut connection = PgConnection::connect(url).await.expect("connect to target");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
        .execute(&mut connection)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"));
    connection.close().await.expect("close");
}

/// The findings of `outcome` with `code`, as (subject, severity, message).
pub(crate) fn with_code<'a>(outcome: &'a Outcome, code: &str) -> Vec<&'a Finding> {
    outcome.findings.iter().filter(|f| f.code == code).collect()
}
