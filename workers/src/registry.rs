//! Job kind → handler, and [`dispatch`], the single apalis service every worker runs.
//!
//! A handler is an async function from a [`Job`] to an [`Outcome`] or a [`JobError`]. Handlers
//! never touch the queue or the ledger: the backend's settle layer turns their result into a
//! recorded attempt and a state change.

use std::collections::HashMap;
use std::sync::Arc;

use apalis_core::task::data::Data;
use futures::future::BoxFuture;
use tracing::Instrument;
use upkeep_shared::{Job, JobError, Outcome};

/// A job handler.
pub type Handler = Arc<dyn Fn(Job) -> BoxFuture<'static, Result<Outcome, JobError>> + Send + Sync>;

/// The handlers this build has, by kind string.
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<&'static str, Handler>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut kinds: Vec<&&str> = self.handlers.keys().collect();
        kinds.sort();
        f.debug_struct("Registry").field("kinds", &kinds).finish()
    }
}

impl Registry {
    /// Every handler of this build. Must agree with `job::CATALOG`'s `has_handler` flags
    /// (a unit test checks it).
    #[must_use]
    pub fn standard() -> Self {
        let mut registry = Self::default();
        registry.insert("system.ping", |job| {
            Box::pin(crate::handlers::ping::run(job))
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

/// The apalis service of every worker: one span per attempt, then the kind's handler.
///
/// # Errors
/// Whatever the handler returns.
pub async fn dispatch(job: Job, registry: Data<Arc<Registry>>) -> Result<Outcome, JobError> {
    let span = tracing::info_span!(
        "job",
        job_id = %job.id,
        job_kind = %job.kind,
        queue = %job.queue,
        attempt = job.attempt,
    );
    async move {
        tracing::debug!("attempt started");
        let result = registry.run(job).await;
        if result.is_ok() {
            tracing::info!("attempt succeeded");
        }
        result
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_has_a_handler_for_exactly_the_catalog_kinds_marked_runnable() {
        let registry = Registry::standard();
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
