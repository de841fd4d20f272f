//! Job kind → handler, and [`dispatch`], the single apalis service every worker runs.
//!
//! A handler is an async function from a [`Job`] to an [`Outcome`] or a [`JobError`]. Handlers
//! never touch the queue or the ledger: the backend's settle layer turns their result into a
//! recorded attempt and a state change.

use std::collections::HashMap;
use std::sync::Arc;

use apalis::prelude::Data;
use futures::future::BoxFuture;
use sqlx::PgPool;
use upkeep_shared::config::Settings;
use upkeep_shared::telemetry::attempt::{AttemptFields, in_attempt};
use upkeep_shared::{Job, JobError, Outcome};

/// A job handler.
pub type Handler = Arc<dyn Fn(Job) -> BoxFuture<'static, Result<Outcome, JobError>> + Send + Sync>;

/// What a handler may use besides its job: the process's settings (its family's section) and
/// a pool to upkeep's own database, for its family's tables through `store` (the backup
/// catalog, token rows, scan cursors). The ledger's `job_runs` rows stay the settle layer's.
#[derive(Clone)]
pub struct HandlerContext {
    /// The settings the process loaded at start.
    pub settings: Arc<Settings>,
    /// A lazy pool to upkeep's database; it connects on first use.
    pub db: PgPool,
}

impl std::fmt::Debug for HandlerContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerContext").finish_non_exhaustive()
    }
}

impl HandlerContext {
    /// A context over `settings` with a lazy pool to its database.
    ///
    /// # Errors
    /// When the database URL is malformed.
    pub fn connect_lazy(settings: Settings) -> Result<Self, sqlx::Error> {
        let db = settings.database.connect_lazy()?;
        Ok(Self {
            settings: Arc::new(settings),
            db,
        })
    }
}

/// The handlers this build has, by kind string.
#[derive(Clone, Default)]
pub struct Registry {
    /// Looked up once per attempt: foldhash, as the queue's per-job maps (see `LeaseBook`).
    handlers: HashMap<&'static str, Handler, foldhash::quality::RandomState>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut kinds: Vec<&&str> = self.handlers.keys().collect();
        kinds.sort();
        f.debug_struct("Registry").field("kinds", &kinds).finish()
    }
}

impl Registry {
    /// Every handler of this build, sharing `ctx`. Must agree with `job::CATALOG`'s
    /// `has_handler` flags (a unit test checks it).
    #[must_use]
    pub fn standard(ctx: &HandlerContext) -> Self {
        use crate::handlers::reports::{self, Family};
        let mut registry = Self::default();
        registry.insert("system.ping", |job| {
            Box::pin(crate::handlers::ping::run(job))
        });
        for family in [Family::SlowQueries, Family::Bloat, Family::IndexUsage] {
            let c = ctx.clone();
            registry.insert(family.kind(), move |job| {
                let c = c.clone();
                Box::pin(async move { reports::run(&c, job, family).await })
            });
        }
        let c = ctx.clone();
        registry.insert("queues.snapshot", move |job| {
            let c = c.clone();
            Box::pin(async move { reports::queues_snapshot(&c, job).await })
        });
        let c = ctx.clone();
        registry.insert("jobs.failed_review", move |job| {
            let c = c.clone();
            Box::pin(async move { reports::failed_review(&c, job).await })
        });
        // One refresher (one pooled HTTP client) per process; a failure to build it is
        // reported by every tokens.refresh job rather than stopping other queues' workers.
        let refresher = crate::handlers::tokens::refresher(ctx)
            .map(Arc::new)
            .map_err(Arc::new);
        let c = ctx.clone();
        registry.insert("tokens.refresh", move |job| {
            let c = c.clone();
            let refresher = refresher.clone();
            Box::pin(async move { crate::handlers::tokens::run(&c, &refresher, job).await })
        });
        let c = ctx.clone();
        registry.insert("logs.rotate", move |job| {
            let c = c.clone();
            Box::pin(async move { crate::handlers::logs::rotate(&c, job).await })
        });
        let c = ctx.clone();
        registry.insert("logs.scan_errors", move |job| {
            let c = c.clone();
            Box::pin(async move { crate::handlers::logs::scan_errors(&c, job).await })
        });
        let c = ctx.clone();
        registry.insert("system.disk", move |job| {
            let c = c.clone();
            Box::pin(async move { crate::handlers::disk::run(&c, job).await })
        });
        let c = ctx.clone();
        registry.insert("backup.run", move |job| {
            let c = c.clone();
            Box::pin(async move { crate::handlers::backup::run(&c, job).await })
        });
        let c = ctx.clone();
        registry.insert("backup.verify", move |job| {
            let c = c.clone();
            Box::pin(async move { crate::handlers::backup::verify(&c, job).await })
        });
        registry
    }

    /// Adds or replaces the handler of `kind`.
    pub fn insert<F>(&mut self, kind: &'static str, handler: F)
    where
        F: Fn(Job) -> BoxFuture<'static, Result<Outcome, JobError>> + Send + Sync + 'static,
    {
        self.handlers.insert(kind, Arc::new(handler));
    }

    /// Whether a handler exists for `kind`.
    #[must_use]
    pub fn contains(&self, kind: &str) -> bool {
        self.handlers.contains_key(kind)
    }

    /// Runs the handler of the job's kind; an unknown kind is a permanent failure.
    ///
    /// # Errors
    /// The handler's error, or `Permanent` for an unknown kind.
    pub async fn run(&self, job: Job) -> Result<Outcome, JobError> {
        match self.handlers.get(job.kind.as_str()) {
            Some(handler) => handler(job).await,
            None => Err(JobError::Permanent(format!(
                "no handler for job kind {:?} in this worker",
                job.kind
            ))),
        }
    }
}

/// The apalis service of every worker: the attempt's fields on every line it logs, then the
/// kind's handler.
///
/// # Errors
/// Whatever the handler returns.
pub async fn dispatch(job: Job, registry: Data<Arc<Registry>>) -> Result<Outcome, JobError> {
    // A task-local, not a span: an info span per attempt cost about 2 us of worker CPU per job
    // for fields that nearly every attempt never logs (see `telemetry::attempt`).
    let fields = AttemptFields {
        job_id: job.id,
        job_kind: job.kind.clone(),
        queue: job.queue.to_string(),
        attempt: job.attempt,
    };
    in_attempt(fields, async move {
        tracing::debug!("attempt started");
        let result = registry.run(job).await;
        // Debug, not info: at full speed one line per job costs a third of the throughput.
        // Failures are logged by the settle layer at warn, slow attempts at info, and every
        // worker logs a `queue summary` line per interval; the ledger has every attempt.
        if result.is_ok() {
            tracing::debug!("attempt succeeded");
        }
        result
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_registry_has_a_handler_for_exactly_the_catalog_kinds_marked_runnable() {
        let ctx = HandlerContext::connect_lazy(Settings::default()).expect("default URL is valid");
        let registry = Registry::standard(&ctx);
        for spec in upkeep_shared::job::CATALOG {
            assert_eq!(
                registry.contains(spec.name),
                spec.has_handler,
                "{}",
                spec.name
            );
        }
    }
}
