-- Indexes for schedule health (store::health::schedule_health), one row per schedule read by
-- `upkeepctl schedules list`, the API and /metrics.
--
-- Counting a schedule's missed and skipped ticks reads only those rows, which are few next to
-- the enqueued ones; the partial index keeps the count proportional to them.
CREATE INDEX schedule_ticks_schedule_unrun_idx ON schedule_ticks (schedule, decision)
    WHERE decision IN ('missed', 'skipped_overlap', 'skipped_paused');
-- A schedule's last success: its newest succeeded run, without scanning its other runs.
CREATE INDEX job_runs_schedule_succeeded_idx ON job_runs (schedule, finished_at DESC)
    WHERE status = 'succeeded' AND schedule IS NOT NULL;
