-- The dashboard's "recent failures" reads failed and abandoned attempts newest first, a page
-- at a time (`id < $before`). Failures are rare among millions of runs, so without this
-- partial index the page would walk job_runs_finished_at_idx past every success.
CREATE INDEX job_runs_failures_id_idx ON job_runs (id DESC)
    WHERE status IN ('failed', 'abandoned');
