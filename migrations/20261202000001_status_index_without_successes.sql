-- Runs pages filtered by a status (`GET /api/v1/runs?status=`) walk `(status, id)` newest
-- first. Nearly every row is `succeeded`, and a page of successes is served as well by
-- `job_runs_id_idx` with a filter (almost every row passes it), so the index keeps only the
-- other statuses: the ledger's hot path, which writes one `succeeded` row per job, no longer
-- pays an insert into it (one index of six per row). A custom plan for `status = 'failed'`
-- (or `running`, `abandoned`, `skipped`) still probes it: the planner proves that predicate
-- implies `status <> 'succeeded'`. The retention check's `status = 'running'` probe, too.
DROP INDEX job_runs_status_id_idx;
CREATE INDEX job_runs_status_id_idx ON job_runs (status, id) WHERE status <> 'succeeded';
