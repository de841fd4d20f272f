-- The task lists' evidence (store::tasks) asks, per checklist item, for the newest succeeded
-- and the newest failed run of a kind inside a window. With the kind a lateral parameter, the
-- planner estimated the window on the plain `finished_at` index as cheaper than the
-- `(kind, status, finished_at DESC)` one, and walked every run of the window for a kind with
-- none in it (48 ms per daily checklist at 5,000,000 rows, over a second for a monthly one).
-- Keyed on the UTC wall-clock expression instead, this index is the only one that can answer
-- the query's range and order, so the choice no longer depends on statistics: 0.4 ms for the
-- same checklists. No other query used the old index (their kind and status filters are
-- optional, `($1 IS NULL OR kind = $1)`, which no index condition can use).
DROP INDEX job_runs_kind_status_finished_at_idx;
CREATE INDEX job_runs_task_evidence_idx
    ON job_runs (kind, status, (finished_at AT TIME ZONE 'UTC') DESC);
